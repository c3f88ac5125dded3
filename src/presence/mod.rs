//! The presence registry: client id -> {node, session, since}.
//!
//! Every node of a cluster shares one registry; it is how a node finds out
//! where a recipient is. The router and the session loop see only the
//! [`PresenceStore`] trait; each backend lives in its own module: memory
//! (one node on its own), Redis (one server or a cluster), memcached.

mod memcached;
mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::config::PresenceTarget;
use crate::liveness::HeartbeatReport;
use crate::protocol::{ClientId, NodeId};

pub use self::memcached::MemcachedPresence;
pub use self::memory::MemoryPresence;
pub use self::redis::RedisPresence;

/// Connects the shared store `target` names, with every key under
/// `key_prefix`. Errors say which flag to check.
pub async fn connect(
    target: &PresenceTarget,
    key_prefix: &str,
) -> Result<Arc<dyn PresenceStore>, PresenceError> {
    let checked = |e: PresenceError| match e {
        PresenceError::Unavailable(why) => {
            PresenceError::Unavailable(format!("{why} (check {})", target.flag()))
        }
        other => other,
    };
    Ok(match target {
        PresenceTarget::Redis(redis) => Arc::new(
            RedisPresence::connect(redis, key_prefix)
                .await
                .map_err(checked)?,
        ),
        PresenceTarget::Memcached(memcached) => Arc::new(
            MemcachedPresence::connect(memcached, key_prefix)
                .await
                .map_err(checked)?,
        ),
    })
}

/// Where a client's current session lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub node: NodeId,
    pub session: Uuid,
    /// When the session opened, in ms since the Unix epoch.
    pub since: u64,
}

impl PresenceRecord {
    /// A record from its three fields as a store holds them in text;
    /// anything unreadable is [`PresenceError::Corrupt`].
    pub fn from_fields(
        client: &ClientId,
        node: &str,
        session: &str,
        since: &str,
    ) -> Result<Self, PresenceError> {
        let corrupt = |why: String| PresenceError::Corrupt {
            client: client.to_string(),
            why,
        };
        Ok(Self {
            node: NodeId::parse(node).map_err(|e| corrupt(e.to_string()))?,
            session: session
                .parse()
                .map_err(|e| corrupt(format!("session {session:?}: {e}")))?,
            since: since
                .parse()
                .map_err(|e| corrupt(format!("since {since:?}: {e}")))?,
        })
    }
}

/// A presence operation that did not complete. Callers answer the client
/// with `unavailable` (the store could not be reached) or `internal` (the
/// store answered with something that is not a presence record).
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
    #[error("presence record for {client} is corrupt: {why}")]
    Corrupt { client: String, why: String },
}

#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Writes `record` for `client`: inserts it if absent, updates it if
    /// present, atomically, and returns the record it replaced (if any) so
    /// the caller can close the older session.
    async fn register(
        &self,
        client: &ClientId,
        record: &PresenceRecord,
    ) -> Result<Option<PresenceRecord>, PresenceError>;

    async fn lookup(&self, client: &ClientId) -> Result<Option<PresenceRecord>, PresenceError>;

    /// Deletes the record of `client` only if it still names `session`
    /// (registered by `node`); answers whether it did. A late disconnect
    /// must never delete a newer session's record.
    async fn remove(
        &self,
        client: &ClientId,
        node: &NodeId,
        session: Uuid,
    ) -> Result<bool, PresenceError>;

    /// Writes this node's heartbeat entry `member`, expiring `ttl` from
    /// now by the store's clock, drops entries expired longer than
    /// `retention`, and returns every entry (see [`crate::liveness`]).
    async fn heartbeat(
        &self,
        member: &str,
        ttl: Duration,
        retention: Duration,
    ) -> Result<HeartbeatReport, PresenceError>;

    /// Writes each record back if its client has no record, or a record of
    /// the same session: what a node does for its live sessions after the
    /// store lost data. Never overwrites another session's record; for
    /// each entry, returns that other record when there is one (a newer
    /// session elsewhere won, and this one must close).
    async fn reregister(
        &self,
        entries: &[(ClientId, PresenceRecord)],
    ) -> Result<Vec<Option<PresenceRecord>>, PresenceError>;

    /// Deletes the records naming `node` that were written before
    /// `before_since`: the ghosts a crashed or restarted run of `node` left.
    /// `lost_run` (that run's start, in ms) is given when every node of a
    /// cluster may notice the same loss: then only one of them sweeps.
    /// Returns how many records were deleted.
    async fn sweep(
        &self,
        node: &NodeId,
        lost_run: Option<u64>,
        before_since: u64,
    ) -> Result<usize, PresenceError>;

    /// A real round trip to the backend, for `/readyz`.
    async fn ping(&self) -> Result<(), PresenceError>;

    /// How often a node writes its live sessions' records back
    /// ([`reregister`](Self::reregister)), given the operator's
    /// `--presence-refresh-ms`: so that a record that vanished while its
    /// session lives (evicted, lost in a failover, deleted by mistake)
    /// comes back within that time. Stores whose records expire may need
    /// it sooner. `None`: records cannot vanish (one process's memory).
    fn refresh_interval(&self, configured: Duration) -> Option<Duration> {
        Some(configured)
    }

    /// Short name for logs and `/readyz` ("memory", "redis").
    fn backend(&self) -> &'static str;
}
