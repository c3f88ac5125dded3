//! Node liveness, as the store keeps it: every node's heartbeat entry, with
//! an expiry by the store's own clock, and the sweep of the records a dead
//! (or restarted) node left behind. The view built from it, and the rules
//! of whose records to believe, are [`crate::routing::liveness`]'s.

use std::time::Duration;

use async_trait::async_trait;

use super::{PresenceError, PresenceRecord};
use crate::protocol::{ClientId, NodeId};

/// What one heartbeat returned from the presence store (see
/// [`crate::routing::liveness`]).
#[derive(Debug, Clone, Default)]
pub struct HeartbeatReport {
    /// The store's clock when it took the heartbeat, ms since the epoch.
    pub server_now_ms: u64,
    /// Every heartbeat entry (member, expiry in the store's ms).
    pub members: Vec<(String, u64)>,
    /// This node's entry was not there before this heartbeat: the store
    /// lost its data (restart, flush, failover) or this is the first beat.
    pub own_was_missing: bool,
}

/// Heartbeats and sweeps, as the node's upkeep sees them.
#[async_trait]
pub trait Heartbeats: Send + Sync + 'static {
    /// Writes this node's heartbeat entry `member`, expiring `ttl` from
    /// now by the store's clock, drops entries expired longer than
    /// `retention`, and returns every entry (see
    /// [`crate::routing::liveness`]).
    async fn heartbeat(
        &self,
        member: &str,
        ttl: Duration,
        retention: Duration,
    ) -> Result<HeartbeatReport, PresenceError>;

    /// Deletes the fields naming `node` that were written before
    /// `before_since`: the ghosts a crashed or restarted run of `node`
    /// left. `lost_run` (that run's start, in ms) is given when every node
    /// of a cluster may notice the same loss: then only one of them
    /// sweeps. Returns the fields deleted (whose sessions ended with their
    /// node).
    async fn sweep(
        &self,
        node: &NodeId,
        lost_run: Option<u64>,
        before_since: u64,
    ) -> Result<Vec<(ClientId, PresenceRecord)>, PresenceError>;
}
