//! What became of messages, and telling their senders.
//!
//! Every cross-node message with a sender session is tracked from publish
//! until its recipient's node reports the outcome ([`InFlight`]). One
//! that can no longer get an outcome is answered `offline` to its sender:
//! when the bus bounces its hop (nobody listening), when the liveness
//! view sees the recipient node die or restart, or, as a last resort,
//! when it is older than the hop timeout. This is what turns "published
//! into a subject nobody reads" and "recipient node died with the
//! message" into `offline` receipts instead of silence.
//!
//! [`Outcomes`] holds no sender of the courier's queue, so that the
//! courier task, which reports lost envelopes here, can drain and end once
//! the router is gone. Reporting an outcome *to another node* goes through
//! the courier, so it is the router's ([`Router::report_outcome`]).

use std::sync::Arc;

use tokio::time::Instant;
use uuid::Uuid;

use super::Router;
use super::cache::RouteCache;
use super::courier::Parcel;
use super::inflight::{Full, InFlight};
use super::liveness::{Liveness, Lost};
use crate::bus::BounceTag;
use crate::hub::{Hub, ReceiptTo};
use crate::metrics::Metrics;
use crate::protocol::frames::encode_receipt;
use crate::protocol::{ClientId, ForwardedHop, NodeId, Outcome, ReceiptStatus};

pub struct Outcomes {
    node: NodeId,
    hub: Arc<Hub>,
    inflight: InFlight,
    /// Corrected by outcomes: a recipient that was not where the cache
    /// said is looked up next time.
    cache: Arc<RouteCache>,
    liveness: Arc<Liveness>,
    metrics: Arc<Metrics>,
}

impl Outcomes {
    pub(super) fn new(
        node: NodeId,
        hub: Arc<Hub>,
        inflight: InFlight,
        cache: Arc<RouteCache>,
        liveness: Arc<Liveness>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            node,
            hub,
            inflight,
            cache,
            liveness,
            metrics,
        }
    }

    /// Messages published to other nodes whose outcome is still awaited.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Starts tracking a message for `recipient` published to `node` in
    /// liveness `epoch`; returns its in-flight sequence number.
    pub(super) fn track(
        &self,
        to: ReceiptTo,
        recipient: ClientId,
        node: NodeId,
        epoch: u64,
    ) -> Result<u64, Full> {
        self.inflight.insert(to, recipient, node, epoch)
    }

    /// Stops tracking a message that never left.
    pub(super) fn untrack(&self, msg_id: Uuid) {
        self.inflight.complete(msg_id);
    }

    /// An outcome of a message sent from here, back from wherever it went.
    pub fn settle(&self, outcome: Outcome) {
        match self.inflight.complete(outcome.msg_id) {
            Some((to, recipient)) => {
                if outcome.status == ReceiptStatus::Offline {
                    // Not where we thought: look it up next time.
                    self.cache.remove(&recipient);
                }
                self.tell_sender(&to, outcome.status)
            }
            // Already answered offline (overdue, or its node was declared
            // dead): the sender has its answer.
            None => self.metrics.late_outcome(),
        }
    }

    /// The bus found nobody listening for messages sent from here.
    pub fn bounced(&self, tag: BounceTag) {
        match tag {
            BounceTag::Message(msg_id) => {
                if let Some((to, recipient)) = self.inflight.complete(msg_id) {
                    self.cache.remove(&recipient);
                    self.metrics.hop_bounced();
                    self.tell_sender(&to, ReceiptStatus::Offline);
                }
            }
            BounceTag::Batch { to, first, last } => self.lost_batch(&to, first, last),
        }
    }

    /// The tracked messages of an envelope to `node` (in-flight sequence
    /// numbers `first..=last`) will never arrive.
    pub(super) fn lost_batch(&self, node: &NodeId, first: u64, last: u64) {
        for (to, recipient) in self.inflight.lost_batch(node, first, last) {
            self.cache.remove(&recipient);
            self.metrics.hop_bounced();
            self.tell_sender(&to, ReceiptStatus::Offline);
        }
    }

    /// A message sent from here was forwarded by the node it went to: its
    /// outcome now depends on `hop.node`.
    pub fn forwarded(&self, hop: ForwardedHop) {
        let epoch = self.liveness.epoch(&hop.node);
        self.moved(hop.msg_id, hop.node, epoch);
    }

    /// A message tracked here now depends on `node`; its recipient, who
    /// moved, is looked up next time.
    pub(super) fn moved(&self, msg_id: Uuid, node: NodeId, epoch: u64) {
        if let Some(recipient) = self.inflight.moved(msg_id, node, epoch) {
            self.cache.remove(&recipient);
        }
    }

    /// The liveness view saw a node die or restart: its in-flight messages
    /// will never get an outcome.
    pub fn node_lost(&self, lost: &Lost) {
        let senders = self.inflight.lost(&lost.node, lost.before_epoch);
        if !senders.is_empty() {
            tracing::info!(node = %lost.node, messages = senders.len(),
                "node died or restarted with messages in flight; answering offline");
        }
        for to in senders {
            self.tell_sender(&to, ReceiptStatus::Offline);
        }
    }

    /// Answers `offline` for messages whose outcome is overdue.
    pub fn expire(&self) {
        for to in self.inflight.expired(Instant::now()) {
            self.tell_sender(&to, ReceiptStatus::Offline);
        }
    }

    /// Tells a sender session on this node the outcome of its message:
    /// always `offline`, and `delivered` when it asked for receipts.
    pub(super) fn tell_sender(&self, to: &ReceiptTo, status: ReceiptStatus) {
        debug_assert_eq!(to.node, self.node);
        if status == ReceiptStatus::Offline {
            self.metrics.receipt_offline();
        } else if !to.receipt {
            return;
        }
        let frame = encode_receipt(to.id.as_deref(), to.msg_id, status);
        let told = self
            .hub
            .get_session(&to.client, to.session)
            .is_some_and(|s| s.outbox.owe(frame.into()).is_ok());
        if !told {
            self.metrics.receipt_undeliverable();
        }
    }
}

impl Router {
    /// Reports the outcome of a message this node handled to its sender,
    /// wherever the sender is. A sender on another node is always told
    /// (its node is waiting for the outcome and decides what the client
    /// hears).
    pub async fn report_outcome(&self, to: &ReceiptTo, status: ReceiptStatus) {
        if to.node != self.node {
            let outcome = Outcome {
                msg_id: to.msg_id,
                status,
            };
            // The sender's node only needs a quiet `delivered` to stop
            // tracking: it may travel later, with other traffic.
            if status == ReceiptStatus::Delivered && !to.receipt {
                self.courier.linger(to.node.clone(), outcome);
            } else if self
                .courier
                .send(to.node.clone(), Parcel::Outcome(outcome))
                .await
                .is_err()
            {
                self.metrics.receipt_undeliverable();
            }
        } else if to.tracked {
            // It went out over the bus and came back here.
            self.outcomes.settle(Outcome {
                msg_id: to.msg_id,
                status,
            });
        } else {
            // Never left this node: no one else is tracking it.
            self.outcomes.tell_sender(to, status);
        }
    }

    /// [`report_outcome`](Self::report_outcome) `offline` for every message
    /// that will not reach its recipient (a closing session's queue).
    pub async fn report_undelivered(&self, senders: impl IntoIterator<Item = Box<ReceiptTo>>) {
        for to in senders {
            self.report_outcome(&to, ReceiptStatus::Offline).await;
        }
    }
}
