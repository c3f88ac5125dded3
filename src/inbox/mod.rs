//! The inbox (v2): opt-in store-and-forward for a client that is away.
//!
//! The offline branch stays what the design says: the message goes no
//! further than the sender's node. When the node runs with `--inbox` and a
//! send asks for it (`"store": true`), the sender's node also appends the
//! message frame to the recipient's inbox. The recipient's next session
//! claims the inbox, is told how many messages wait (`inbox: n` in its
//! welcome), gets them in order before any live message, and each leaves
//! the inbox once delivered (in acks mode: once confirmed).
//!
//! One device drains at a time: [`InboxStore::claim`] takes a lease for
//! the claiming session. A second device connecting meanwhile is welcomed
//! with `inbox: 0` and gets nothing from the inbox (a newer session of the
//! same device takes the lease over); the lease ends with the draining
//! session (or expires, if its node died, and the next session drains
//! what is left). A message is only ever deleted after its
//! delivery, so a drain cut short loses nothing: what was not delivered is
//! there for the next session.
//!
//! This is a port: the router sees the [`InboxStore`] trait; memory and
//! Redis Streams implement it in [`crate::backends`].

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::cause::Cause;
use crate::protocol::{ClientId, DeviceId};

/// One stored message: the store's id for it (to delete it once
/// delivered) and its frame, as the recipient will get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub entry: String,
    pub frame: String,
}

/// How many messages wait for a client, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxSummary {
    pub count: u64,
    /// When the oldest was stored, in ms since the Unix epoch.
    pub oldest: Option<u64>,
}

/// The per-client limits every store enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    pub max_messages: usize,
    /// Messages older than this are dropped (and not counted).
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The client's inbox holds `--inbox-max-messages` already.
    #[error("the inbox is full")]
    Full,
    #[error("inbox store unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl InboxError {
    pub fn caused(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Unavailable {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    /// `store_error` of the ack.
    pub fn code(&self) -> &'static str {
        match self {
            InboxError::Full => "inbox_full",
            InboxError::Unavailable { .. } => "unavailable",
        }
    }
}

#[async_trait]
pub trait InboxStore: Send + Sync + 'static {
    /// Appends `frame` to `client`'s inbox, unless it holds the most
    /// messages allowed ([`InboxError::Full`]). Atomic: a message is
    /// stored whole or not at all.
    async fn append(&self, client: &ClientId, frame: &str) -> Result<(), InboxError>;

    /// Claims `client`'s inbox for `session` (of `device`) for `lease`, and
    /// returns every message in it, oldest first; `None` when a session of
    /// another device holds the claim (a newer session of the same device
    /// takes it over). An empty inbox is not claimed.
    async fn claim(
        &self,
        client: &ClientId,
        device: &DeviceId,
        session: Uuid,
        lease: Duration,
    ) -> Result<Option<Vec<StoredMessage>>, InboxError>;

    /// Lets go of `session`'s claim (a no-op if it holds none).
    async fn release(&self, client: &ClientId, session: Uuid) -> Result<(), InboxError>;

    /// Deletes delivered messages.
    async fn remove(&self, client: &ClientId, entries: &[String]) -> Result<(), InboxError>;

    async fn summary(&self, client: &ClientId) -> Result<InboxSummary, InboxError>;

    /// Deletes `client`'s inbox; answers whether it held anything.
    async fn clear(&self, client: &ClientId) -> Result<bool, InboxError>;

    /// A real round trip, for `/readyz`.
    async fn ping(&self) -> Result<(), InboxError>;

    fn backend(&self) -> &'static str;
}
