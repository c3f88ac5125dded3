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
//! [`Outcomes`] holds no sender of the courier's queue, so that the
//! courier task, which reports lost envelopes here, can drain and end once
//! the routing services are gone.

use std::sync::Arc;

use smallvec::SmallVec;
use tokio::time::Instant;
use uuid::Uuid;

use super::cache::RouteCache;
use super::inflight::{Final, Full, InFlight, Leg, Told, Who};
use super::liveness::{Liveness, Lost};
use super::offline::announce::Announcer;
use crate::bus::BounceTag;
use crate::hub::{Hub, Sender};
use crate::metrics::{HopRejection, Metrics};
use crate::protocol::frames::encode_receipt;
use crate::protocol::{
    ClientId, DeviceId, Fate, NodeId, OfflineReason, Outcome, Receipt, ReceiptStatus, Settled,
};

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
}

impl Outcomes {
    pub fn new(
        node: NodeId,
        hub: Arc<Hub>,
        inflight: InFlight,
        cache: Arc<RouteCache>,
        liveness: Arc<Liveness>,
        metrics: Arc<Metrics>,
        announce: Announcer,
    ) -> Self {
        Self {
            node,
            hub,
            inflight,
            cache,
            liveness,
            metrics,
            announce,
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

    /// Answers `offline` for targets whose outcome is overdue.
    pub fn expire(&self) {
        for told in self.inflight.expired(Instant::now()) {
            self.tell(&told);
        }
    }

    fn tell(&self, told: &Told) {
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
        let frame = encode_receipt(&Receipt {
            id: sender.id.as_deref(),
            msg_id,
            status,
            to: Some(to),
            device: Some(device),
            reason,
        });
        let told = self
            .hub
            .get_session(&sender.client, sender.session)
            .is_some_and(|s| s.outbox.owe(frame.into()).is_ok());
        if !told {
            self.metrics.receipt_undeliverable();
        }
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
