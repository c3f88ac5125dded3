//! Routing: where does a message go?
//!
//! The routing core knows the three branches of the design and nothing
//! about Redis or NATS wire details (it sees the narrow presence ports and
//! the [`Bus`](crate::bus::Bus)). A client may be online on several
//! devices (v2), so a recipient's record holds one session per device, and
//! the branch is taken per session:
//!
//! - `local`: a session on this node; the message is handed to it here.
//! - `remote`: a session on another node; the message is published to
//!   that node's subject, **one** hop per node carrying every recipient
//!   session there.
//! - `offline`: no session at all; the message goes no further.
//!
//! It is a few services, each owning its state behind a small API, and
//! three that compose them:
//!
//! | service | owns | module |
//! | --- | --- | --- |
//! | [`Router`] | nothing but its node's name: it composes the rest and knows the branches | [`router`] (a send's way out), [`inbound`] (hops from other nodes), [`delivery`] (outcomes of what was handed over here) |
//! | [`Locator`] | the route cache; beliefs about records (with [`Liveness`]) | [`locator`], [`cache`] |
//! | [`Groups`] | groups' members as last read | [`groups`] |
//! | [`Outcomes`] | messages in flight to other nodes, until their outcomes come back | [`outcomes`], [`inflight`] |
//! | [`Offline`] | the last-seen writer, inbox deletes; events | [`offline`] |
//! | [`Courier`] | what goes to other nodes, packed per node | [`courier`] |
//! | [`Registrar`] | deletes deferred while the store was away | [`registration`] |
//! | [`Resumption`] | detached sessions ([`Detached`]), the drain | [`resumption`], [`detached`], [`moved`] |
//!
//! The patent looks up both the sender's and the recipient's records. The
//! sender's session is on this node by construction (that is where its
//! send was read); its record is read (with the recipient's, in the same
//! round trip, when neither is cached) only for its other devices, which
//! get a carbon copy. A record is only believed if its node is alive
//! ([`liveness`]): records of crashed nodes, and ghosts of a node's
//! earlier run, route `offline`.

pub mod background;
mod cache;
pub mod courier;
mod delivery;
pub mod detached;
pub mod gate;
pub mod groups;
pub mod history;
mod hops;
mod inbound;
mod inflight;
pub mod liveness;
pub mod locator;
pub mod moved;
pub mod offline;
pub mod outcomes;
pub mod registration;
pub mod resumption;
pub mod route;
pub mod router;
pub mod watches;

use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use crate::bus::BusError;
use crate::cause::chain;
use crate::hub::Sender;
use crate::presence::PresenceError;
use crate::protocol::frames::encode_message;
use crate::protocol::{ClientId, ErrorCode, Recipient, now_ms};

pub use self::background::Background;
pub use self::cache::{CachedDevice, CachedRoute};
pub use self::courier::{Courier, CourierTask};
pub use self::detached::Detached;
pub use self::gate::{Admission, Checked, Gate, GateSettings, OnFailure};
pub use self::groups::{Groups, MEMBERS_TTL, Members};
pub use self::history::{History, Kept, Refused};
pub use self::liveness::Liveness;
pub use self::locator::Locator;
pub use self::offline::{INBOX_LEASE, Offline, Stored, Why};
pub use self::outcomes::Outcomes;
pub use self::registration::{RegisterError, Registrar, Restored};
pub use self::resumption::{Forwarded, Resumption, TakeOverError};
pub use self::route::{Route, Sent};
pub use self::router::{MAX_IN_FLIGHT_HOPS, Ports, ROUTE_CACHE_TTL, Router, Settings};
pub use self::watches::{Scope, WatchError, WatchPorts, WatchSettings, Watches, Watching};

/// A message on its way, owned.
#[derive(Debug)]
pub struct Message {
    pub msg_id: Uuid,
    pub from: ClientId,
    pub to: Recipient,
    /// The `message` frame for the recipients, rendered once by the
    /// sender's node and passed along as it is.
    pub frame: Utf8Bytes,
    /// The sending session. `None` for server-side sends (HTTP API):
    /// nobody to tell, and no carbons.
    pub sender: Option<Sender>,
    /// The send asked for the inbox (`"store": true`) should the
    /// recipient be offline.
    pub store: bool,
    /// A signal (v3), not a message: no ack, no carbons, no tracking.
    pub signal: bool,
    /// Its history (v3): kept as `cseq`, not kept, or the store failed.
    pub kept: Kept,
}

impl Message {
    /// A new message, stamped now, its frame rendered.
    pub fn new(
        msg_id: Uuid,
        from: ClientId,
        to: Recipient,
        body: &RawValue,
        sender: Option<Sender>,
    ) -> Self {
        let frame = encode_message(msg_id, &from, to.addressee(), body, now_ms()).into();
        Self {
            msg_id,
            from,
            to,
            frame,
            sender,
            store: false,
            signal: false,
            kept: Kept::No,
        }
    }

    /// A signal (v3) from a session here: its frame rendered, no id.
    pub fn signal(from: ClientId, to: Recipient, body: &RawValue, sender: Sender) -> Self {
        let frame = crate::protocol::watch::encode_signal(&from, to.addressee(), body).into();
        Self {
            msg_id: Uuid::nil(),
            from,
            to,
            frame,
            sender: Some(sender),
            store: false,
            signal: true,
            kept: Kept::No,
        }
    }

    /// A note from the node about `from` (v3: a read receipt) for `to`'s
    /// sessions: routed like a signal, from no session.
    pub fn note(from: ClientId, to: Recipient, frame: String) -> Self {
        Self {
            msg_id: Uuid::nil(),
            from,
            to,
            frame: frame.into(),
            sender: None,
            store: false,
            signal: true,
            kept: Kept::No,
        }
    }

    /// The same message with another body (a hook's rewrite, v3): its
    /// frame rendered again, its id and stamp kept.
    pub fn rebody(&mut self, body: &RawValue) {
        let ts = crate::protocol::frames::message_body_and_ts(&self.frame)
            .map_or_else(now_ms, |(_, ts)| ts);
        self.frame = encode_message(self.msg_id, &self.from, self.to.addressee(), body, ts).into();
    }

    /// The recipient client, for a message to a client.
    pub fn client(&self) -> Option<&ClientId> {
        match &self.to {
            Recipient::Client(client) => Some(client),
            Recipient::Group(_) => None,
        }
    }
}

/// A send that could not be routed; nothing was delivered or published.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{}", chain(.0))]
    Presence(#[source] PresenceError),
    #[error("{}", chain(.0))]
    Bus(#[source] BusError),
    #[error("too many messages in flight on this node")]
    TooManyInFlight,
    #[error("this node is shutting down")]
    ShuttingDown,
    /// Only a member may send to a group.
    #[error("only members may send to this group")]
    NotMember,
}

impl RouteError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RouteError::Presence(PresenceError::Corrupt { .. }) => ErrorCode::Internal,
            RouteError::Bus(BusError::TooLarge { .. }) => ErrorCode::TooLarge,
            RouteError::Presence(_)
            | RouteError::Bus(_)
            | RouteError::TooManyInFlight
            | RouteError::ShuttingDown => ErrorCode::Unavailable,
            RouteError::NotMember => ErrorCode::NotMember,
        }
    }
}

impl From<PresenceError> for RouteError {
    fn from(e: PresenceError) -> Self {
        RouteError::Presence(e)
    }
}

impl From<BusError> for RouteError {
    fn from(e: BusError) -> Self {
        RouteError::Bus(e)
    }
}
