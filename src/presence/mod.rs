//! The presence registry, as the rest of the node sees it: narrow ports,
//! one per concern, all kept in the one cache database the nodes share
//! (Redis, Redis Cluster, memcached, or memory for a lone node):
//!
//! | port | what | who uses it |
//! | --- | --- | --- |
//! | [`SessionRecords`] | client id -> one field per device: `{node, session, since}` | the router (lookups), session registration |
//! | [`Heartbeats`] | every node's heartbeat, and sweeps of the records a dead node left | the node's upkeep |
//! | [`GroupStore`] (v2) | each group's members | the group service, the API |
//! | [`LastSeenStore`] (v2) | when a client's last session ended, and why | the offline branch's explanation |
//! | [`ContactStore`] (v3) | whom each client may watch | the watch service, the API |
//! | [`WatchStore`] (v3) | which nodes watch a client; who is invisible | the watch service |
//!
//! Every node of a cluster shares one registry; it is how a node finds out
//! where a recipient is. A backend serves every port at once
//! ([`PresenceStore`], which adds what `/readyz` and shutdown need); each
//! part of the node holds only the port it uses. The backends live in
//! [`crate::backends`], and a contract suite (tests/it/presence_contract.rs)
//! runs the same cases on each of them, port by port.

mod contacts;
mod groups;
mod heartbeats;
mod last_seen;
mod records;
mod watching;

use async_trait::async_trait;

use crate::cause::Cause;

pub use self::contacts::{ContactAdded, ContactStore};
pub use self::groups::{GroupStore, MemberAdded};
pub use self::heartbeats::{HeartbeatReport, Heartbeats};
pub use self::last_seen::{LastSeen, LastSeenStore};
pub use self::records::{PresenceRecord, Registered, SessionRecords};
pub use self::watching::WatchStore;

/// A presence operation that did not complete. Callers answer the client
/// with `unavailable` (the store could not be reached) or `internal` (the
/// store answered with something that is not a presence record).
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("presence store unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    #[error("presence record for {client} is corrupt: {why}")]
    Corrupt { client: String, why: String },
}

impl PresenceError {
    /// The store could not be reached, or did not answer in time.
    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::Unavailable {
            what: what.into(),
            cause: None,
        }
    }

    /// The same, keeping the error that said so.
    pub fn caused(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Unavailable {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    /// The same error with a hint for the operator appended (which flag to
    /// check).
    pub fn hint(self, hint: &str) -> Self {
        match self {
            Self::Unavailable { what, cause } => Self::Unavailable {
                what: format!("{what} ({hint})"),
                cause,
            },
            other => other,
        }
    }
}

/// A presence backend: one store serving every presence port, plus what
/// the node itself needs of it (a readiness check, a clean close).
#[async_trait]
pub trait PresenceStore:
    SessionRecords + Heartbeats + GroupStore + LastSeenStore + ContactStore + WatchStore
{
    /// A real round trip to the backend, for `/readyz`.
    async fn ping(&self) -> Result<(), PresenceError>;

    /// Lets go of the store's connections, at the end of a node's
    /// shutdown. Nothing is called after it.
    async fn close(&self) {}

    /// Short name for logs and `/readyz` ("memory", "redis").
    fn backend(&self) -> &'static str;
}
