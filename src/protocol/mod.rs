//! The wire contract (`docs/protocol.md`) as types: identifiers, client and
//! server frames, and the envelope nodes exchange. Nothing else in the crate
//! builds or parses JSON that crosses a process boundary.

pub mod envelope;
pub mod frames;
pub mod ids;

pub use envelope::{
    Envelope, EnvelopeError, ForwardedHop, Hop, MessageHop, Outcome, ReplacedHop, ReplyTo,
};
pub use frames::{
    AckStatus, ClientFrame, ErrorCode, FrameError, ReceiptStatus, SendRequest, ServerFrame, close,
    parse_client_frame,
};
pub use ids::{ClientId, InvalidId, NodeId};

/// Milliseconds since the Unix epoch, as the protocol stamps `ts` and `since`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
