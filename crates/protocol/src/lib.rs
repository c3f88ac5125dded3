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
