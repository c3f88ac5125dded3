//! The courier: everything this node sends to other nodes' inboxes in the
//! normal course of routing (messages and outcomes) goes through one
//! queue and one task, which packs what has accumulated for each node into
//! a single envelope.
//!
//! Each bus message costs the bus server and both nodes a few system calls
//! whatever its size, so a busy node sending one envelope per message
//! spends most of its bus CPU on envelopes. The courier takes the first
//! parcel, yields once so that other ready tasks can add theirs, then takes
//! everything queued: under light load that is one parcel per envelope,
//! sent at once (no timer, no added delay); under heavy load, hundreds.
//!
//! An envelope holding tracked messages carries a bounce tag naming their
//! in-flight sequence numbers, so that if nobody listens on the recipient
//! node's subject, they are answered `offline` at once.
//!
//! The task holds no sender of its own queue: it runs until the router
//! (which holds the sender) is dropped and everything queued is sent, so
//! that a node shutting down sends its last outcomes before it leaves.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Outcomes;
use crate::bus::{Bounce, BounceTag, Bus};
use crate::protocol::envelope::{ENVELOPE_OVERHEAD, encode_envelope, encode_hop};
use crate::protocol::{Hop, NodeId, Outcome};

/// Parcels waiting to be sent, at most.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Most parcels taken off the queue for one round of sending.
const BATCH: usize = 4096;

/// Something for another node.
#[derive(Debug)]
pub enum Parcel {
    /// An encoded message hop; `seq` is its in-flight sequence number when
    /// this node tracks its outcome.
    Hop { json: Vec<u8>, seq: Option<u64> },
    /// The outcome of a message the other node sent.
    Outcome(Outcome),
}

/// The queue's sending side, held by the router.
pub(super) struct Courier {
    tx: mpsc::Sender<(NodeId, Parcel)>,
}

/// The courier's task: packs and publishes what the router queued.
pub struct CourierTask {
    node: NodeId,
    bus: Arc<dyn Bus>,
    outcomes: Arc<Outcomes>,
    parcels: mpsc::Receiver<(NodeId, Parcel)>,
}

/// The courier task has ended: the node is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the courier has stopped: the node is shutting down")]
pub(super) struct Stopped;

pub(super) fn courier(
    node: NodeId,
    bus: Arc<dyn Bus>,
    outcomes: Arc<Outcomes>,
) -> (Courier, CourierTask) {
    let (tx, parcels) = mpsc::channel(QUEUE_CAPACITY);
    let task = CourierTask {
        node,
        bus,
        outcomes,
        parcels,
    };
    (Courier { tx }, task)
}

impl Courier {
    /// Queues a parcel for `node`; when the queue is full, waits for room
    /// (the caller is a session loop or the inbox, and slowing them is the
    /// right backpressure).
    pub(super) async fn send(&self, node: NodeId, parcel: Parcel) -> Result<(), Stopped> {
        self.tx.send((node, parcel)).await.map_err(|_| Stopped)
    }
}

/// What one envelope for one node holds while it is packed.
#[derive(Default)]
struct Packing {
    hops: Vec<Vec<u8>>,
    size: usize,
    outcomes: Vec<Outcome>,
    first: Option<u64>,
    last: u64,
}

impl CourierTask {
    /// Sends queued parcels until the router is gone and the queue empty.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(first) = self.parcels.recv().await {
            batch.push(first);
            // Let the tasks that are ready add their parcels first.
            tokio::task::yield_now().await;
            while batch.len() < BATCH {
                match self.parcels.try_recv() {
                    Ok(parcel) => batch.push(parcel),
                    Err(_) => break,
                }
            }
            self.send_batch(&mut batch).await;
        }
    }

    async fn send_batch(&self, batch: &mut Vec<(NodeId, Parcel)>) {
        let limit = self.bus.max_envelope().saturating_sub(ENVELOPE_OVERHEAD);
        let mut by_node: HashMap<NodeId, Packing> = HashMap::new();
        for (node, parcel) in batch.drain(..) {
            let packing = by_node.entry(node.clone()).or_default();
            match parcel {
                Parcel::Outcome(outcome) => packing.outcomes.push(outcome),
                Parcel::Hop { json, seq } => {
                    // Full: send what is packed, start a new envelope.
                    if packing.size + json.len() + 1 > limit && !packing.hops.is_empty() {
                        let full = std::mem::take(packing);
                        self.ship(&node, full).await;
                    }
                    let packing = by_node.entry(node).or_default();
                    packing.size += json.len() + 1;
                    packing.hops.push(json);
                    if let Some(seq) = seq {
                        packing.first.get_or_insert(seq);
                        packing.last = packing.last.max(seq);
                    }
                }
            }
        }
        for (node, packing) in by_node.drain() {
            self.ship(&node, packing).await;
        }
    }

    /// Publishes one envelope. If it cannot go, its tracked messages will
    /// never arrive: their senders are told `offline`.
    async fn ship(&self, node: &NodeId, mut packing: Packing) {
        if !packing.outcomes.is_empty() {
            let outcomes = std::mem::take(&mut packing.outcomes);
            packing.hops.push(encode_hop(&Hop::Outcomes(outcomes)));
        }
        if packing.hops.is_empty() {
            return;
        }
        let envelope = Bytes::from(encode_envelope(packing.hops.iter().map(Vec::as_slice)));
        let bounce = packing.first.map(|first| Bounce {
            node: &self.node,
            tag: BounceTag::Batch {
                to: node.clone(),
                first,
                last: packing.last,
            },
        });
        if let Err(e) = self.bus.publish(node, envelope, bounce).await {
            tracing::debug!(%node, error = %e, "could not send an envelope");
            if let Some(first) = packing.first {
                self.outcomes.lost_batch(node, first, packing.last);
            }
        }
    }
}
