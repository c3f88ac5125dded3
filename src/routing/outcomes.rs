//! What became of messages sent from here, and telling their senders.
//!
//! Every cross-node message with a sender session is tracked per target
//! from publish until its nodes report ([`InFlight`]). A target that can
//! no longer get an outcome is answered `offline` to its sender: when the
//! bus bounces its hop (nobody listening), when the liveness view sees its
//! node die or restart, or, as a last resort, when it is older than the
//! hop timeout. This is what turns "published into a subject nobody reads"
//! and "recipient node died with the message" into `offline` receipts
//! instead of silence.
//!
//! Receipts are per session (v2): each names the recipient client and
//! device it is about. `offline` is always told; `delivered` only to a
//! sender that asked for receipts.
//!
//! A sender whose session moved to another node (acks mode: resumed
//! there, or passed on by a draining node) still hears every outcome of
//! what it sent from here: the outcome comes back here, and the receipt
//! follows the session ([`Moved`] says where) as an `owed` hop. A draining
//! node waits for those outcomes before it leaves
//! ([`Outcomes::moved_senders_answered`]).
//!
//! [`Outcomes`] holds no sender of the courier's queue, so that the
//! courier task, which reports lost envelopes here, can drain and end once
//! the routing services are gone; receipts for moved sessions go through
//! [`Forwards`], which the courier task empties.

use std::sync::Arc;

use smallvec::SmallVec;
use tokio::time::Instant;
use uuid::Uuid;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::cache::RouteCache;
use super::courier::Forwards;
use super::inflight::{Final, Full, InFlight, Leg, Told, Who};
use super::liveness::{Liveness, Lost};
use super::moved::Moved;
use super::offline::announce::Announcer;
use crate::bus::BounceTag;
use crate::hub::{Hub, Sender};
use crate::metrics::{HopRejection, Metrics};
use crate::protocol::envelope::{encode_hop, raw_frame};
use crate::protocol::frames::encode_receipt;
use crate::protocol::{
    ClientId, DeviceId, Fate, Hop, NodeId, OfflineReason, Outcome, OwedHop, Receipt, ReceiptStatus,
    Settled,
};

/// Nodes a receipt may be passed on through after the one that had the
/// outcome: a session that moved twice while it travelled is followed; a
/// stale note pointing back is not followed for ever.
const MAX_OWED_HOPS: u8 = 3;

pub struct Outcomes {
    node: NodeId,
    hub: Arc<Hub>,
    inflight: InFlight,
    /// Corrected by outcomes: a recipient that was not where the cache
    /// said is looked up next time.
    cache: Arc<RouteCache>,
    liveness: Arc<Liveness>,
    metrics: Arc<Metrics>,
    /// Every `offline` told here is an `offline` event too.
    announce: Announcer,
    /// Where sessions handed over from here went (acks mode).
    moved: Arc<Moved>,
    /// Receipts for them, for the courier to send.
    forwards: Arc<Forwards>,
    /// A draining node waiting for its moved senders' outcomes.
    drain: DrainWait,
}

/// Woken whenever tracked targets are settled or given up on, once
/// `awaited` (a draining node waits for its moved senders' outcomes;
/// otherwise nobody waits, and the per-message path skips the wake-up).
#[derive(Default)]
struct DrainWait {
    settled: Notify,
    awaited: std::sync::atomic::AtomicBool,
}

/// What [`Outcomes`] works with.
pub struct OutcomesParts {
    pub node: NodeId,
    pub hub: Arc<Hub>,
    pub inflight: InFlight,
    pub cache: Arc<RouteCache>,
    pub liveness: Arc<Liveness>,
    pub metrics: Arc<Metrics>,
    pub announce: Announcer,
    pub moved: Arc<Moved>,
}

impl Outcomes {
    pub fn new(parts: OutcomesParts) -> Self {
        let OutcomesParts {
            node,
            hub,
            inflight,
            cache,
            liveness,
            metrics,
            announce,
            moved,
        } = parts;
        Self {
            node,
            hub,
            inflight,
            cache,
            liveness,
            metrics,
            announce,
            moved,
            forwards: Arc::default(),
            drain: DrainWait::default(),
        }
    }

    /// Receipts on their way to sessions that moved (the courier sends
    /// them).
    pub fn forwards(&self) -> &Forwards {
        &self.forwards
    }

    /// Returns once no message sent from a session that moved away from
    /// here awaits its outcome (a draining node then has told every such
    /// sender everything; bound the wait by the caller's deadline).
    pub async fn moved_senders_answered(&self) {
        self.drain
            .awaited
            .store(true, std::sync::atomic::Ordering::SeqCst);
        loop {
            let settled = self.drain.settled.notified();
            tokio::pin!(settled);
            // Registered before the check, so that a settle between the
            // check and the wait is not missed.
            settled.as_mut().enable();
            let waiting = self
                .inflight
                .any_sender(|sender| self.moved.node_of(sender.session).is_some());
            if !waiting {
                return;
            }
            settled.await;
        }
    }

    /// Messages published to other nodes whose outcomes are still awaited.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Starts tracking a message published in `legs`; returns each leg's
    /// in-flight sequence number.
    pub fn track(
        &self,
        msg_id: Uuid,
        sender: Sender,
        legs: impl IntoIterator<Item = Leg>,
    ) -> Result<SmallVec<[u64; 2]>, Full> {
        self.inflight.insert(msg_id, sender, legs)
    }

    /// Stops tracking a leg that never left.
    pub fn untrack_leg(&self, msg_id: Uuid, node: &NodeId) {
        self.inflight.remove_leg(msg_id, node);
    }

    /// Tracks a target forwarded from here to `node` on behalf of a sender
    /// here.
    pub fn track_forwarded(
        &self,
        msg_id: Uuid,
        sender: Sender,
        who: Who,
        node: &NodeId,
    ) -> Result<(), Full> {
        let epoch = self.liveness.epoch(node);
        self.inflight
            .insert_forwarded(msg_id, sender, who, node, epoch)
    }

    /// An outcome of a message sent from here, back from wherever it went.
    pub fn settle(&self, outcome: &Outcome) {
        let Some(settled) = outcome.settled() else {
            self.metrics.hop_rejected(HopRejection::Malformed);
            return;
        };
        match settled {
            Settled::Target { to, device, fate } => {
                let who = Who {
                    to: to.clone(),
                    device: device.clone(),
                };
                let fate = match fate {
                    Fate::Forwarded(node) => {
                        // Moved: its outcome now depends on `node`, and the
                        // recipient is looked up next time.
                        self.cache.invalidate(to);
                        let epoch = self.liveness.epoch(node);
                        if !self.inflight.forwarded(outcome.msg_id, &who, node, epoch) {
                            self.metrics.late_outcome();
                        }
                        return;
                    }
                    Fate::Delivered => Final::Delivered,
                    Fate::Offline(reason) => {
                        // Not where we thought: look it up next time.
                        self.cache.invalidate(to);
                        Final::Offline(reason)
                    }
                };
                match self.inflight.settle(outcome.msg_id, &who, fate) {
                    Some(told) => self.tell(&told),
                    // Already answered offline (overdue, or its node was
                    // declared dead): the sender has its answer.
                    None => self.metrics.late_outcome(),
                }
            }
            Settled::Done { node, part } => {
                for told in self.inflight.done(outcome.msg_id, node, part) {
                    self.tell(&told);
                }
            }
        }
    }

    /// The bus found nobody listening for messages sent from here.
    pub fn bounced(&self, tag: BounceTag) {
        let lost = match tag {
            BounceTag::Message(msg_id) => self.inflight.forward_bounced(msg_id),
            BounceTag::Batch { to, first, last } => self.inflight.lost_batch(&to, first, last),
        };
        self.answer_lost(lost);
    }

    /// The tracked messages of an envelope to `node` (in-flight sequence
    /// numbers `first..=last`) will never arrive.
    pub fn lost_batch(&self, node: &NodeId, first: u64, last: u64) {
        self.answer_lost(self.inflight.lost_batch(node, first, last));
    }

    fn answer_lost(&self, lost: Vec<Told>) {
        for told in lost {
            self.cache.invalidate(&told.who.to);
            self.metrics.hop_bounced();
            self.tell(&told);
        }
    }

    /// The liveness view saw a node die or restart: its in-flight targets
    /// will never get an outcome.
    pub fn node_lost(&self, lost: &Lost) {
        // A restart (not a death) loses only what went to the old run.
        let new_run_ms = (lost.before_epoch != u64::MAX)
            .then(|| lost.sweep.as_ref().map(|s| s.ghosts_before))
            .flatten();
        let told = self
            .inflight
            .lost(&lost.node, lost.before_epoch, new_run_ms);
        if !told.is_empty() {
            tracing::info!(node = %lost.node, sessions = told.len(),
                "node died or restarted with messages in flight; answering offline");
        }
        for told in told {
            self.tell(&told);
        }
    }

    /// A draining node that can wait no longer: what sessions that moved
    /// away sent from here and still awaits an outcome is answered
    /// `offline` (`shutting_down`), and the receipts follow the sessions.
    pub fn give_up_on_moved_senders(&self) {
        let told = self.inflight.give_up_senders(
            |sender| self.moved.node_of(sender.session).is_some(),
            OfflineReason::ShuttingDown,
        );
        for told in told {
            self.tell(&told);
        }
    }

    /// Answers `offline` for targets whose outcome is overdue.
    pub fn expire(&self) {
        for told in self.inflight.expired(Instant::now()) {
            self.tell(&told);
        }
    }

    fn tell(&self, told: &Told) {
        if self.drain.awaited.load(std::sync::atomic::Ordering::SeqCst) {
            self.drain.settled.notify_waiters();
        }
        let fate = match told.fate {
            Final::Delivered => Fate::Delivered,
            Final::Offline(reason) => Fate::Offline(reason),
        };
        self.tell_sender(
            &told.sender,
            told.msg_id,
            &told.who.to,
            &told.who.device,
            fate,
        );
    }

    /// Tells a sender session on this node what became of its message at
    /// `to`'s `device`: always when `offline`, and `delivered` when it
    /// asked for receipts.
    pub fn tell_sender(
        &self,
        sender: &Sender,
        msg_id: Uuid,
        to: &ClientId,
        device: &DeviceId,
        fate: Fate<'_>,
    ) {
        debug_assert_eq!(sender.node, self.node);
        let (status, reason) = match fate {
            Fate::Offline(reason) => {
                self.metrics.receipt_offline();
                let group = sender.group.as_ref();
                (self.announce).offline(msg_id, &sender.client, to, group, false, reason);
                (ReceiptStatus::Offline, Some(reason))
            }
            Fate::Delivered if sender.receipt => (ReceiptStatus::Delivered, None),
            Fate::Delivered | Fate::Forwarded(_) => return,
        };
        let frame = Utf8Bytes::from(encode_receipt(&Receipt {
            id: sender.id.as_deref(),
            msg_id,
            status,
            to: Some(to),
            device: Some(device),
            reason,
        }));
        self.owe(&sender.client, sender.session, frame, 0);
    }

    /// Queues a receipt for `client`'s session `session`: here, or where
    /// the session went if it moved (at most [`MAX_OWED_HOPS`] nodes on).
    fn owe(&self, client: &ClientId, session: uuid::Uuid, frame: Utf8Bytes, hops: u8) {
        let refused = match self.hub.get_session(client, session) {
            Some(s) => s.outbox.owe(frame).err(),
            None => Some(frame),
        };
        let Some(frame) = refused else {
            return;
        };
        // Gone from here: moved (acks mode), or ended.
        let moved = self.moved.node_of(session).filter(|_| hops < MAX_OWED_HOPS);
        let passed = moved.is_some_and(|node| {
            let hop = OwedHop {
                client: client.clone(),
                session,
                hops: hops + 1,
                frame: raw_frame(&frame),
            };
            self.forwards.put(node, encode_hop(&Hop::Owed(hop)))
        });
        if !passed {
            self.metrics.receipt_undeliverable();
        }
    }

    /// A receipt for a session that moved here from the node that sent
    /// it (see the module comment).
    pub fn accept_owed(&self, hop: &OwedHop<'_>, frame: Utf8Bytes) {
        self.owe(&hop.client, hop.session, frame, hop.hops);
    }
}

/// The reason a message for a session is offline when that session ends
/// with it still queued.
pub fn offline_reason(why: crate::protocol::Disconnect) -> OfflineReason {
    use crate::protocol::Disconnect;
    match why {
        Disconnect::SlowConsumer => OfflineReason::SlowConsumer,
        Disconnect::GoingAway => OfflineReason::ShuttingDown,
        _ => OfflineReason::Disconnected,
    }
}
