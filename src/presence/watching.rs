//! What watching presence needs beside the records (v3): which nodes have
//! sessions watching a client (so that a change of that client is told to
//! those nodes, one bus message each, and to no other), and who is
//! invisible.
//!
//! A node adds itself as a watcher of a client when its first local
//! session starts watching it, and removes itself when its last stops; a
//! node forgets every watch of its own earlier run when it starts, and a
//! dead node's are forgotten by the node that sweeps its records.

use std::time::Duration;

use async_trait::async_trait;

use super::PresenceError;
use crate::protocol::{ClientId, NodeId};

/// Watchers and visibility, as the watch service sees them.
#[async_trait]
pub trait WatchStore: Send + Sync + 'static {
    /// `node` has sessions watching each of `clients`.
    async fn add_watcher(&self, node: &NodeId, clients: &[ClientId]) -> Result<(), PresenceError>;

    /// `node` no longer has a session watching any of `clients`.
    async fn remove_watcher(
        &self,
        node: &NodeId,
        clients: &[ClientId],
    ) -> Result<(), PresenceError>;

    /// The nodes watching each of `clients`, in one round trip where the
    /// store allows.
    async fn watchers(&self, clients: &[ClientId]) -> Result<Vec<Vec<NodeId>>, PresenceError>;

    /// Forgets every watch of `node`: a dead node's, or (at startup) its
    /// own earlier run's.
    async fn forget_watcher(&self, node: &NodeId) -> Result<(), PresenceError>;

    /// `client` is invisible since `since` (ms since the epoch), kept for
    /// `ttl`; `None` makes it visible again.
    async fn set_invisible(
        &self,
        client: &ClientId,
        since: Option<u64>,
        ttl: Duration,
    ) -> Result<(), PresenceError>;

    /// For each of `clients`, since when it is invisible (`None`: visible).
    async fn invisible(&self, clients: &[ClientId]) -> Result<Vec<Option<u64>>, PresenceError>;
}
