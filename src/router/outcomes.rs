//! Outcomes on their way back to the nodes that sent the messages.
//!
//! Every cross-node message's outcome goes back to its origin node (which
//! tracks it in flight). Sending each in its own bus message would double
//! the bus traffic of a busy cluster, so outcomes are queued and a single
//! task sends whatever has accumulated, grouped by origin node, one
//! envelope per node. Under light load that is one outcome per envelope,
//! sent at once; under heavy load, hundreds. No timer is involved.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bus::Bus;
use crate::protocol::{Envelope, Hop, NodeId, Outcome};

/// Outcomes waiting to be sent, at most.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Most outcomes taken off the queue for one round of sending.
const BATCH: usize = 4096;

/// The sending side, held by the router.
#[derive(Clone)]
pub struct OutcomeQueue {
    tx: mpsc::Sender<(NodeId, Outcome)>,
}

pub fn queue() -> (OutcomeQueue, mpsc::Receiver<(NodeId, Outcome)>) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    (OutcomeQueue { tx }, rx)
}

impl OutcomeQueue {
    /// Queues an outcome for `node`; when the queue is full, waits for room
    /// (the sender of the outcome is a session loop or the inbox, and
    /// slowing them is the right backpressure).
    pub async fn send(&self, node: NodeId, outcome: Outcome) -> Result<(), ()> {
        self.tx.send((node, outcome)).await.map_err(drop)
    }
}

/// Sends queued outcomes until the queue closes.
pub async fn run(bus: Arc<dyn Bus>, mut rx: mpsc::Receiver<(NodeId, Outcome)>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut by_node: HashMap<NodeId, Vec<Outcome>> = HashMap::new();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        for (node, outcome) in batch.drain(..) {
            by_node.entry(node).or_default().push(outcome);
        }
        for (node, outcomes) in by_node.drain() {
            let count = outcomes.len();
            let envelope = Bytes::from(Envelope::new(Hop::Outcomes(outcomes)).encode());
            if let Err(e) = bus.publish(&node, envelope, None).await {
                // The origin node cannot be reached; its in-flight entries
                // time out there and its senders hear offline.
                tracing::debug!(%node, count, error = %e, "could not send outcomes");
            }
        }
    }
}
