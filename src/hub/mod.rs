//! The hub: the sessions open on this node, as the rest of the node sees
//! them. Below both the session loop (which owns a session's socket) and
//! the router (which hands messages to sessions), so that neither needs
//! the other to meet:
//!
//! - [`Hub`]: the local sessions by client id, and the lock two sessions
//!   of one client take while they register;
//! - [`SessionHandle`]: what others hold of a session: its identity and
//!   its [`Outbox`], where they queue frames and ask it to close;
//! - [`ReceiptTo`]: whom to tell the outcome of a message;
//! - [`Slots`]: the `--max-sessions` cap.

mod outbox;
mod registry;
mod slots;

use uuid::Uuid;

use crate::protocol::ClientId;

pub use self::outbox::{
    Batch, OUTCOMES_PER_TURN, Outbound, Outbox, QueueLimits, ReceiptTo, Refused,
};
pub use self::registry::Hub;
pub use self::slots::{Slot, Slots};

/// What other tasks hold of a session: its identity and its outbox.
pub struct SessionHandle {
    pub id: Uuid,
    pub client: ClientId,
    /// When the session opened (ms since the epoch): its record's `since`.
    pub since: u64,
    pub outbox: Outbox,
}
