//! The hub: the sessions open on this node, as the rest of the node sees
//! them. Below both the session loop (which owns a session's socket) and
//! the router (which hands messages to sessions), so that neither needs
//! the other to meet:
//!
//! - [`Hub`]: the local sessions by client id (one per device), and the
//!   lock two sessions of one client take while they register;
//! - [`SessionHandle`]: what others hold of a session: its identity and
//!   its [`Outbox`], where they queue frames and ask it to close;
//! - [`Handover`]: what travels with a message handed to sessions here,
//!   so that its outcomes reach its [`Sender`];
//! - [`Slots`]: the `--max-sessions` cap.

mod handover;
mod outbox;
mod registry;
mod slots;

use uuid::Uuid;

use crate::protocol::{ClientId, DeviceId};

pub use self::handover::{DoneNow, Handover, Report, Sender};
pub use self::outbox::{Batch, Kept, OUTCOMES_PER_TURN, Outbound, Outbox, QueueLimits, Refused};
pub use self::registry::{Hub, Sessions};
pub use self::slots::{Slot, Slots};

/// What other tasks hold of a session: its identity and its outbox.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: Uuid,
    pub client: ClientId,
    /// The client's label for the device this session is on (v2).
    pub device: DeviceId,
    /// When the session opened (ms since the epoch): its record's `since`.
    pub since: u64,
    pub outbox: Outbox,
}
