//! The Switchboard wire contract (`docs/protocol.md`) as types: the
//! identifiers and the WebSocket frames that cross between a node and its
//! clients. The server and every Rust client share this crate, so that
//! both sides read and write exactly the same frames; nothing here knows
//! about sockets, Redis or NATS.

pub mod events;
pub mod frames;
pub mod history;
pub mod ids;
pub mod watch;

pub use events::{OfflineEvent, PresenceEvent, PresenceState, SessionEnd};
pub use frames::{
    Ack, AckFrame, AckStatus, Addressee, ClientFrame, Disconnect, ErrorCode, FrameError,
    MessageFrame, OfflineReason, Receipt, ReceiptStatus, Recipient, SendRequest, ServerFrame,
    WelcomeExtras, parse_client_frame,
};
pub use history::{
    ConversationItem, ConversationsFrame, HistoryFrame, PageRange, ReadFrame, Thread,
};
pub use ids::{ClientId, DeviceId, GroupId, InvalidId, NodeId};
pub use watch::{PresenceFrame, Shown, SignalFrame, SignalRequest, WatchingFrame};

/// Milliseconds since the Unix epoch, as the protocol stamps `ts` and `since`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A uniform random fraction in [0, 1), for jitter: the spread of a
/// draining node's reconnect hints and of a busy node's `Retry-After`, and
/// the clients' backoff. Drawn from a v4 UUID (no RNG dependency): its low
/// 64 bits start with two fixed variant bits (0b10), so only the 62 below
/// them are used.
pub fn jitter() -> f64 {
    let random = uuid::Uuid::new_v4().as_u128() as u64 & (u64::MAX >> 2);
    (random >> 9) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn jitter_is_uniform_over_zero_to_one() {
        let samples: Vec<f64> = (0..20_000).map(|_| super::jitter()).collect();
        assert!(samples.iter().all(|x| (0.0..1.0).contains(x)));
        for (low, high) in [(0.0, 0.1), (0.45, 0.55), (0.9, 1.0)] {
            let share = samples.iter().filter(|x| (low..high).contains(*x)).count() as f64
                / samples.len() as f64;
            assert!((0.08..0.12).contains(&share), "{share} in [{low}, {high})");
        }
    }
}
