//! The receiving half of routing: messages arriving from other nodes, the
//! outcomes that travel back to senders, and session takeovers.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Message, Origin, Parcel, Route, Router};
use crate::bus::BounceTag;
use crate::presence::PresenceRecord;
use crate::protocol::frames::encode_receipt;
use crate::protocol::{
    ClientId, Envelope, ForwardedHop, Hop, MessageHop, NodeId, Outcome, ReceiptStatus, ReplacedHop,
    close,
};
use crate::session::Outbound;

impl Router {
    /// A message arrived from another node for a client believed to be
    /// here. `frame` is the message frame, cut from the bus message.
    pub async fn accept_hop(self: &Arc<Self>, hop: MessageHop<'_>, frame: Utf8Bytes) {
        if let Some(session) = self.sessions.get(&hop.to) {
            let item = Outbound {
                frame,
                origin: origin_of(&hop).map(Box::new),
            };
            match session.outbox.push(item) {
                Ok(()) => return,
                Err(refused) => {
                    let frame = refused.into_inner().frame;
                    return self.reroute(Message::from_hop(&hop, frame)).await;
                }
            }
        }
        self.metrics.hop_recipient_absent();
        self.reroute(Message::from_hop(&hop, frame)).await;
    }

    /// A message hop this node will not deliver (see `hop::run`): its
    /// sender is told `offline`.
    pub async fn refuse_hop(&self, hop: &MessageHop<'_>) {
        if let Some(origin) = origin_of(hop) {
            self.answer(&origin, ReceiptStatus::Offline).await;
        }
    }

    /// The recipient is not (or no longer) here. Look it up again and
    /// forward once if it moved; otherwise tell the sender `offline`.
    async fn reroute(self: &Arc<Self>, msg: Message) {
        if msg.forwarded {
            return self.answer_offline(msg).await;
        }
        // The lookup may take a while; it must not hold up the inbox, and
        // the number of them in flight is bounded.
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            return self.answer_offline(msg).await;
        };
        let router = self.clone();
        self.tasks.spawn(async move {
            let _permit = permit;
            match router.lookup(&msg.to).await {
                Ok(Route::Remote { node, epoch }) => {
                    let msg = Message {
                        forwarded: true,
                        ..msg
                    };
                    match router.publish_tracked(&msg, &node, epoch).await {
                        Ok(()) => {
                            router.metrics.hop_forwarded();
                            router.tell_origin_forwarded(&msg, node, epoch).await;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "could not forward a message");
                            router.answer_offline(msg).await;
                        }
                    }
                }
                // The record may name this node because the recipient just
                // reconnected here; one more look at the local sessions.
                Ok(Route::Local { session }) => {
                    let local = router.sessions.get(&msg.to);
                    let item = Outbound {
                        frame: msg.frame.clone(),
                        origin: msg.origin.clone().map(Box::new),
                    };
                    if local.is_none_or(|s| s.outbox.push(item).is_err()) {
                        let node = router.node.clone();
                        router.forget_stale_record(msg.to.clone(), node, session);
                        router.answer_offline(msg).await;
                    }
                }
                Ok(Route::Offline) | Err(_) => router.answer_offline(msg).await,
            }
        });
    }

    /// The origin node tracks where a message went; after a forward, the
    /// new node's fate decides its outcome.
    async fn tell_origin_forwarded(&self, msg: &Message, node: NodeId, epoch: u64) {
        let Some(origin) = &msg.origin else { return };
        if origin.node == self.node {
            if let Some(recipient) = self.inflight.moved(msg.msg_id, node, epoch) {
                self.cache.remove(&recipient);
            }
            return;
        }
        let hop = Envelope::new(Hop::Forwarded(ForwardedHop {
            msg_id: msg.msg_id,
            node,
        }));
        if let Err(e) = self
            .bus
            .publish(&origin.node, hop.encode().into(), None)
            .await
        {
            tracing::debug!(node = %origin.node, error = %e, "could not report a forward");
        }
    }

    async fn answer_offline(&self, msg: Message) {
        if let Some(origin) = msg.origin {
            self.answer(&origin, ReceiptStatus::Offline).await;
        }
    }

    /// Reports the outcome of a message this node handled to its sender,
    /// wherever the sender is. A sender on another node is always told
    /// (its node is waiting for the outcome and decides what the client
    /// hears).
    pub async fn answer(&self, origin: &Origin, status: ReceiptStatus) {
        if origin.node != self.node {
            let outcome = Outcome {
                msg_id: origin.msg_id,
                status,
            };
            let parcel = Parcel::Outcome(outcome);
            if self
                .courier
                .send(origin.node.clone(), parcel)
                .await
                .is_err()
            {
                self.metrics.receipt_undeliverable();
            }
            return;
        }
        if !origin.tracked {
            // Never left this node: no one else is tracking it.
            return self.report_to_sender(origin, status);
        }
        // It went out over the bus and came back here.
        self.accept_outcome(Outcome {
            msg_id: origin.msg_id,
            status,
        });
    }

    /// An outcome of a message sent from here, back from wherever it went.
    pub fn accept_outcome(&self, outcome: Outcome) {
        match self.inflight.complete(outcome.msg_id) {
            Some((origin, recipient)) => {
                if outcome.status == ReceiptStatus::Offline {
                    // Not where we thought: look it up next time.
                    self.cache.remove(&recipient);
                }
                self.report_to_sender(&origin, outcome.status)
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
                if let Some((origin, recipient)) = self.inflight.complete(msg_id) {
                    self.cache.remove(&recipient);
                    self.metrics.hop_bounced();
                    self.report_to_sender(&origin, ReceiptStatus::Offline);
                }
            }
            BounceTag::Batch { to, first, last } => self.lost_batch(&to, first, last),
        }
    }

    /// A message sent from here was forwarded by the node it went to.
    pub fn accept_forwarded(&self, hop: ForwardedHop) {
        let epoch = self.liveness.epoch(&hop.node);
        if let Some(recipient) = self.inflight.moved(hop.msg_id, hop.node, epoch) {
            // It moved: the next message looks it up again.
            self.cache.remove(&recipient);
        }
    }

    /// Tells a sender session on this node the outcome of its message:
    /// always `offline`, and `delivered` when it asked for receipts.
    pub(super) fn report_to_sender(&self, origin: &Origin, status: ReceiptStatus) {
        if status == ReceiptStatus::Offline {
            self.metrics.receipt_offline();
        } else if !origin.receipt {
            return;
        }
        let frame = encode_receipt(origin.id.as_deref(), origin.msg_id, status);
        let told = self
            .sessions
            .get_session(&origin.client, origin.session)
            .is_some_and(|s| s.outbox.owe(frame.into()).is_ok());
        if !told {
            self.metrics.receipt_undeliverable();
        }
    }

    /// A newer session of a client registered; `previous` is the record it
    /// replaced. Closes the older session with 4001, on whichever node.
    pub async fn evict(&self, client: &ClientId, previous: &PresenceRecord) {
        if previous.node == self.node {
            if let Some(old) = self.sessions.get_session(client, previous.session) {
                old.outbox.close(close::REPLACED);
            }
            return;
        }
        let hop = Envelope::new(Hop::Replaced(ReplacedHop {
            client: client.clone(),
            session: previous.session,
        }));
        if let Err(e) = self
            .bus
            .publish(&previous.node, hop.encode().into(), None)
            .await
        {
            tracing::warn!(%client, node = %previous.node, error = %e,
                "could not tell the node of a replaced session to close it");
        }
    }

    /// Another node registered a newer session of `hop.client`.
    pub fn accept_replaced(&self, hop: ReplacedHop) {
        if let Some(old) = self.sessions.get_session(&hop.client, hop.session) {
            old.outbox.close(close::REPLACED);
        }
    }
}

/// The sender of a message that came over the bus, for its outcome.
pub(super) fn origin_of(hop: &MessageHop<'_>) -> Option<Origin> {
    hop.reply.as_ref().map(|reply| Origin {
        node: reply.node.clone(),
        client: hop.from.clone(),
        session: reply.session,
        msg_id: hop.msg_id,
        id: None,
        receipt: false,
        tracked: true,
    })
}
