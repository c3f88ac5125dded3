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
//! Outcomes that nobody waits for are not worth a bus message of their
//! own, nor a wake-up of this task. A `delivered` outcome of a message
//! whose sender asked for no receipt only lets the sender's node stop
//! tracking it: it is put aside ([`Courier::linger`], no wake-up but the
//! first) and waits up to [`LINGER`] for something else going to the same
//! node (a message, an urgent outcome) to travel with, or for a thousand
//! more like it. `offline` outcomes and receipts someone asked for go at
//! once. So a cross-node message costs one bus message, not two, and one
//! wake-up of this task, not two, at any rate; the price is that the
//! sender's node tracks it up to [`LINGER`] longer.
//!
//! Messages themselves never wait unless the operator asks: with
//! `--bus-linger-ms`, a round that would send one message alone holds it
//! up to that long for one more parcel to share the round (Nagle). At a
//! few hundred messages a second per node that cuts the bus messages per
//! routed message by a third or more, and nats-server's CPU with them, at
//! the price of the linger in latency; traffic that already comes in
//! batches never waits. Off by default: BENCHMARKS.md, "The bus at low
//! rates", has what it buys and costs.
//!
//! Changes to records that other nodes may have cached (a device came or
//! went) are broadcast the same way: put aside, woken once, and sent as one
//! envelope to every node after the ready tasks have added theirs.
//!
//! The task holds no sender of its own queue: it runs until the router
//! (which holds the sender) is dropped and everything queued is sent, so
//! that a node shutting down sends its last outcomes before it leaves.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::Outcomes;
use crate::bus::{Bounce, BounceTag, Bus, BusError};
use crate::lock::Locked;
use crate::protocol::envelope::{ENVELOPE_OVERHEAD, encode_envelope, encode_hop};
use crate::protocol::{Changed, ClientId, Envelope, GroupId, Hop, NodeId, Outcome};

/// Parcels waiting to be sent, at most.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Most parcels taken off the queue for one round of sending.
const BATCH: usize = 4096;
/// Longest a lazy outcome waits for company (see the module comment).
pub const LINGER: Duration = Duration::from_millis(50);
/// Lazy outcomes for one node that are sent together without waiting
/// longer (about 70 KB of envelope).
const LINGER_MAX: usize = 1024;

/// Something for another node.
#[derive(Debug)]
pub enum Parcel {
    /// An encoded message hop; `seq` is its in-flight sequence number when
    /// this node tracks its outcome.
    Hop { json: Vec<u8>, seq: Option<u64> },
    /// The outcome of a message the other node sent, whose sender is
    /// waiting to hear it (`offline`, or a receipt it asked for).
    Outcome(Outcome),
    /// A v3 hop (a signal, presence changes): untracked, and packed in an
    /// envelope of its own, apart from messages and outcomes, so that a
    /// node of version 2, which cannot read it, drops only the note.
    Note(Vec<u8>),
}

/// Quiet outcomes put aside for company, per node.
#[derive(Default)]
struct Quiet {
    by_node: Mutex<HashMap<NodeId, Vec<Outcome>>>,
    /// Woken for the first quiet outcome after none (the task then starts
    /// its linger timer), and when one node has [`LINGER_MAX`].
    wake: Notify,
}

impl Quiet {
    fn by_node(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Vec<Outcome>>> {
        self.by_node.locked()
    }
}

/// What changed since the last broadcast.
#[derive(Default)]
struct Pending {
    clients: HashSet<ClientId>,
    groups: HashSet<GroupId>,
    /// v3: clients whose contacts changed.
    contacts: HashSet<ClientId>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.groups.is_empty() && self.contacts.is_empty()
    }
}

/// Changes put aside for the next broadcast.
#[derive(Default)]
struct Changes {
    pending: Mutex<Pending>,
    wake: Notify,
}

/// Receipts owed to sender sessions that moved to other nodes (acks mode),
/// put here by [`Outcomes`], which holds this and not the queue's sender
/// (see the module comment): the task sends them as notes.
#[derive(Default)]
pub struct Forwards {
    pending: Mutex<Vec<(NodeId, Vec<u8>)>>,
    wake: Notify,
}

impl Forwards {
    /// Puts an encoded hop for `node` aside; refused beyond
    /// [`QUEUE_CAPACITY`] waiting (a bus away for long).
    pub fn put(&self, node: NodeId, hop: Vec<u8>) -> bool {
        let mut pending = self.pending.locked();
        if pending.len() >= QUEUE_CAPACITY {
            return false;
        }
        let first = pending.is_empty();
        pending.push((node, hop));
        drop(pending);
        if first {
            self.wake.notify_one();
        }
        true
    }

    fn take(&self) -> Vec<(NodeId, Vec<u8>)> {
        std::mem::take(&mut *self.pending.locked())
    }
}

/// Ids per broadcast, at most (about 70 KB of envelope).
const CHANGES_PER_BROADCAST: usize = 512;

/// The way to other nodes, as the routing core sees it: the queue's
/// sending side, and the bus itself for what does not go through the
/// queue (forwards, evictions, requests). Cheap to clone.
#[derive(Clone)]
pub struct Courier {
    tx: mpsc::Sender<(NodeId, Parcel)>,
    quiet: Arc<Quiet>,
    changes: Arc<Changes>,
    bus: Arc<dyn Bus>,
}

/// The courier's task: packs and publishes what the router queued.
pub struct CourierTask {
    node: NodeId,
    /// How long a lone message waits for company (`--bus-linger-ms`).
    linger: Duration,
    bus: Arc<dyn Bus>,
    outcomes: Arc<Outcomes>,
    parcels: mpsc::Receiver<(NodeId, Parcel)>,
    quiet: Arc<Quiet>,
    changes: Arc<Changes>,
}

/// The courier task has ended: the node is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the courier has stopped: the node is shutting down")]
pub struct Stopped;

pub fn courier(
    node: NodeId,
    bus: Arc<dyn Bus>,
    outcomes: Arc<Outcomes>,
    linger: Duration,
) -> (Courier, CourierTask) {
    let (tx, parcels) = mpsc::channel(QUEUE_CAPACITY);
    let quiet = Arc::new(Quiet::default());
    let changes = Arc::new(Changes::default());
    let task = CourierTask {
        node,
        linger,
        bus,
        outcomes,
        parcels,
        quiet: quiet.clone(),
        changes: changes.clone(),
    };
    let courier = Courier {
        tx,
        quiet,
        changes,
        bus: task.bus.clone(),
    };
    (courier, task)
}

impl Courier {
    /// Whether a publish would be taken now (see [`Bus::connected`]).
    pub fn connected(&self) -> bool {
        self.bus.connected()
    }

    /// The bus connection's generation (see [`Bus::generation`]): caches
    /// of what other nodes broadcast follow it.
    pub fn bus_generation(&self) -> u64 {
        self.bus.generation()
    }

    /// The largest envelope the bus takes.
    pub fn max_envelope(&self) -> usize {
        self.bus.max_envelope()
    }

    /// Publishes one envelope now, outside the queue: a forward or an
    /// eviction, which must not wait behind the batch being packed.
    pub async fn publish(
        &self,
        node: &NodeId,
        envelope: Bytes,
        bounce: Option<Bounce<'_>>,
    ) -> Result<(), BusError> {
        self.bus.publish(node, envelope, bounce).await
    }

    /// Asks `node` and waits up to `timeout` for its answer.
    pub async fn request(
        &self,
        node: &NodeId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        self.bus.request(node, payload, timeout).await
    }

    /// Queues a parcel for `node`; when the queue is full, waits for room
    /// (the caller is a session loop or the inbox, and slowing them is the
    /// right backpressure).
    pub async fn send(&self, node: NodeId, parcel: Parcel) -> Result<(), Stopped> {
        self.tx.send((node, parcel)).await.map_err(|_| Stopped)
    }

    /// `client`'s record changed: every other node is told, with the next
    /// broadcast.
    pub fn changed_client(&self, client: ClientId) {
        self.changed(|pending| pending.clients.insert(client));
    }

    /// `group`'s members changed: every other node is told, with the next
    /// broadcast.
    pub fn changed_group(&self, group: GroupId) {
        self.changed(|pending| pending.groups.insert(group));
    }

    /// `client`'s contacts changed (v3): every other node is told, with
    /// the next broadcast, so that watches they hold for it are checked.
    pub fn changed_contacts(&self, client: ClientId) {
        self.changed(|pending| pending.contacts.insert(client));
    }

    fn changed(&self, note: impl FnOnce(&mut Pending) -> bool) {
        let first = {
            let mut pending = self.changes.pending.locked();
            let first = pending.is_empty();
            note(&mut pending);
            first
        };
        if first {
            self.changes.wake.notify_one();
        }
    }

    /// Puts a quiet outcome aside for `node` (see the module comment).
    pub fn linger(&self, node: NodeId, outcome: Outcome) {
        let mut by_node = self.quiet.by_node();
        let first = by_node.is_empty();
        let waiting = by_node.entry(node).or_default();
        waiting.push(outcome);
        let full = waiting.len() == LINGER_MAX;
        drop(by_node);
        if first || full {
            self.quiet.wake.notify_one();
        }
    }
}

/// What one envelope for one node holds while it is packed.
#[derive(Default)]
struct Packing {
    hops: Vec<Vec<u8>>,
    size: usize,
    /// v3 notes, for an envelope of their own.
    notes: Vec<Vec<u8>>,
    notes_size: usize,
    outcomes: Vec<Outcome>,
    first: Option<u64>,
    last: u64,
}

impl CourierTask {
    /// Sends queued parcels until the router is gone and the queue empty.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        // Since when quiet outcomes have been waiting, if they are.
        let mut lingering: Option<Instant> = None;
        loop {
            let mut flush_quiet = false;
            tokio::select! {
                parcel = self.parcels.recv() => match parcel {
                    Some(parcel) => batch.push(parcel),
                    None => break,
                },
                () = self.quiet.wake.notified() => {
                    lingering.get_or_insert_with(Instant::now);
                }
                () = self.changes.wake.notified() => {}
                () = self.outcomes.forwards().wake.notified() => {}
                () = tokio::time::sleep_until(lingering.unwrap_or_else(Instant::now) + LINGER),
                    if lingering.is_some() => flush_quiet = true,
            }
            // Let the tasks that are ready add their parcels first.
            self.gather(&mut batch).await;
            // Nagle: a message that would go alone waits (a while at most)
            // for one more parcel to share the round; at low rates that
            // halves the bus messages, and busy traffic never waits.
            if !self.linger.is_zero()
                && batch.len() == 1
                && matches!(batch[0].1, Parcel::Hop { .. })
                && let Ok(Some(parcel)) =
                    tokio::time::timeout(self.linger, self.parcels.recv()).await
            {
                batch.push(parcel);
                self.gather(&mut batch).await;
            }
            batch.extend(
                self.outcomes
                    .forwards()
                    .take()
                    .into_iter()
                    .map(|(node, hop)| (node, Parcel::Note(hop))),
            );
            let mut packing = self.pack(&mut batch).await;
            // Quiet outcomes travel with whatever goes to their node now;
            // all of them go once they have waited long enough, and a
            // node's go when it has many.
            let quiet = {
                let mut by_node = self.quiet.by_node();
                if flush_quiet {
                    std::mem::take(&mut *by_node)
                } else {
                    let ready: Vec<NodeId> = by_node
                        .iter()
                        .filter(|(node, waiting)| {
                            packing.contains_key(*node) || waiting.len() >= LINGER_MAX
                        })
                        .map(|(node, _)| node.clone())
                        .collect();
                    ready
                        .into_iter()
                        .filter_map(|node| by_node.remove_entry(&node))
                        .collect()
                }
            };
            if flush_quiet {
                lingering = None;
            }
            for (node, outcomes) in quiet {
                packing.entry(node).or_default().outcomes.extend(outcomes);
            }
            for (node, full) in packing {
                self.ship(&node, full).await;
            }
            self.broadcast_changes().await;
        }
        self.broadcast_changes().await;
        // The router is gone: what is still put aside goes now.
        let mut owed: Vec<(NodeId, Parcel)> = self
            .outcomes
            .forwards()
            .take()
            .into_iter()
            .map(|(node, hop)| (node, Parcel::Note(hop)))
            .collect();
        for (node, packing) in self.pack(&mut owed).await {
            self.ship(&node, packing).await;
        }
        let rest = std::mem::take(&mut *self.quiet.by_node());
        for (node, outcomes) in rest {
            let packing = Packing {
                outcomes,
                ..Packing::default()
            };
            self.ship(&node, packing).await;
        }
    }

    /// Yields once, so that the tasks that are ready add their parcels,
    /// then takes what is queued (up to a batch).
    async fn gather(&mut self, batch: &mut Vec<(NodeId, Parcel)>) {
        tokio::task::yield_now().await;
        while batch.len() < BATCH {
            match self.parcels.try_recv() {
                Ok(parcel) => batch.push(parcel),
                Err(_) => break,
            }
        }
    }

    /// Tells every node the changes put aside, if any.
    async fn broadcast_changes(&self) {
        let pending = std::mem::take(&mut *self.changes.pending.locked());
        if pending.is_empty() {
            return;
        }
        let of = |c: HashSet<ClientId>| c.into_iter().collect::<Vec<_>>();
        let (clients, contacts) = (of(pending.clients), of(pending.contacts));
        let groups: Vec<GroupId> = pending.groups.into_iter().collect();
        let empty = || Changed {
            node: self.node.clone(),
            clients: Vec::new(),
            groups: Vec::new(),
            contacts: Vec::new(),
        };
        let chunks = clients
            .chunks(CHANGES_PER_BROADCAST)
            .map(|c| Changed {
                clients: c.to_vec(),
                ..empty()
            })
            .chain(groups.chunks(CHANGES_PER_BROADCAST).map(|g| Changed {
                groups: g.to_vec(),
                ..empty()
            }))
            .chain(contacts.chunks(CHANGES_PER_BROADCAST).map(|c| Changed {
                contacts: c.to_vec(),
                ..empty()
            }));
        for changed in chunks {
            let hop = Envelope::new(Hop::Changed(changed));
            // Best effort: a node that missed it forgets its cache when its
            // bus connection comes back, and entries expire.
            if let Err(e) = self.bus.broadcast(hop.encode().into()).await {
                tracing::debug!(error = %e, "could not broadcast a change");
            }
        }
    }

    /// Packs a batch of parcels into one envelope (or more, when large)
    /// per node; full envelopes are sent on the way.
    async fn pack(&self, batch: &mut Vec<(NodeId, Parcel)>) -> HashMap<NodeId, Packing> {
        let limit = self.bus.max_envelope().saturating_sub(ENVELOPE_OVERHEAD);
        let mut by_node: HashMap<NodeId, Packing> = HashMap::new();
        for (node, parcel) in batch.drain(..) {
            let packing = by_node.entry(node.clone()).or_default();
            match parcel {
                Parcel::Outcome(outcome) => packing.outcomes.push(outcome),
                Parcel::Note(json) => {
                    if packing.notes_size + json.len() + 1 > limit && !packing.notes.is_empty() {
                        let notes = std::mem::take(&mut packing.notes);
                        packing.notes_size = 0;
                        self.ship_notes(&node, notes).await;
                    }
                    let packing = by_node.entry(node).or_default();
                    packing.notes_size += json.len() + 1;
                    packing.notes.push(json);
                }
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
        by_node
    }

    /// Publishes the notes of one node, in an envelope of their own. Best
    /// effort: a note that cannot go is dropped (signals may be; a lost
    /// presence change is healed when the bus reconnects).
    async fn ship_notes(&self, node: &NodeId, notes: Vec<Vec<u8>>) {
        if notes.is_empty() {
            return;
        }
        let envelope = Bytes::from(encode_envelope(notes.iter().map(Vec::as_slice)));
        if let Err(e) = self.bus.publish(node, envelope, None).await {
            tracing::debug!(%node, error = %e, "could not send notes");
        }
    }

    /// Publishes one envelope (and, apart, its notes). If it cannot go, its
    /// tracked messages will never arrive: their senders are told
    /// `offline`.
    async fn ship(&self, node: &NodeId, mut packing: Packing) {
        let notes = std::mem::take(&mut packing.notes);
        self.ship_notes(node, notes).await;
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
