//! A node's status, as `switchboard status`, the admin page and
//! `/api/v1/cluster` show it: asked of each node over the bus
//! ([`Request::Status`](super::requests::Request::Status)) and answered
//! as this JSON.

use serde::{Deserialize, Serialize};
use switchboard_protocol::NodeId;

/// A node's answer to a status request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    /// When this run started, ms since the epoch.
    pub started_ms: u64,
    pub sessions: u64,
    /// Acks-mode sessions detached here, kept for a resume.
    pub detached: u64,
    /// Cross-node messages awaiting their outcome.
    pub in_flight: u64,
    /// Sends routed since the run started, by branch (`local`, `remote`,
    /// `offline`, `fanout`).
    pub sends: std::collections::BTreeMap<String, u64>,
    /// Offline receipts sent since the run started.
    pub offline_receipts: u64,
    pub presence: String,
    pub bus: String,
    /// The presence store answered a ping just now (within 500 ms).
    pub presence_ok: bool,
    /// The bus connection is up (it carried this answer, too).
    pub bus_ok: bool,
}
