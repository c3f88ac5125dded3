//! The receiving half of routing: messages arriving from other nodes, the
//! outcomes that travel back to senders, and session takeovers.

use std::borrow::Cow;
use std::sync::Arc;

use uuid::Uuid;

use super::{Message, Origin, Route, Router};
use crate::presence::PresenceRecord;
use crate::protocol::frames::{encode_message, encode_receipt};
use crate::protocol::{
    ClientId, Envelope, ForwardedHop, Hop, MessageHop, ReceiptHop, ReceiptStatus, ReplacedHop,
    close,
};
use crate::session::Outbound;

impl Router {
    /// A message arrived from another node for a client believed to be here.
    pub async fn accept_hop(self: &Arc<Self>, hop: MessageHop<'_>) {
        if let Some(session) = self.sessions.get(&hop.to) {
            let item = Outbound::Message {
                frame: encode_message(hop.msg_id, &hop.from, &hop.to, hop.body, hop.ts).into(),
                origin: origin_of(&hop).map(Box::new),
            };
            if session.outbox.push(item).is_ok() {
                return;
            }
        }
        self.reroute(Message::from_hop(hop)).await;
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
            match router.locate(&msg.to).await {
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
                    let item = Outbound::Message {
                        frame: msg.frame().into(),
                        origin: msg.origin.clone().map(Box::new),
                    };
                    if local.is_none_or(|s| s.outbox.push(item).is_err()) {
                        router.forget_stale_record(msg.to.clone(), session);
                        router.answer_offline(msg).await;
                    }
                }
                Ok(Route::Offline) | Err(_) => router.answer_offline(msg).await,
            }
        });
    }

    /// The origin node tracks where a message went; after a forward, the
    /// new node's fate decides its outcome.
    async fn tell_origin_forwarded(
        &self,
        msg: &Message,
        node: crate::protocol::NodeId,
        epoch: u64,
    ) {
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
    /// wherever the sender is. For remote senders this always goes out
    /// (their node is waiting for it); the sender's node decides what the
    /// client is told.
    pub async fn answer(&self, origin: &Origin, status: ReceiptStatus) {
        if origin.node == self.node {
            // It may have been out to another node and come back.
            if let Some((_, recipient)) = self.inflight.complete(origin.msg_id)
                && status == ReceiptStatus::Offline
            {
                self.cache.remove(&recipient);
            }
            self.report_to_sender(origin, status);
            return;
        }
        let hop = Envelope::new(Hop::Receipt(ReceiptHop {
            msg_id: origin.msg_id,
            to: origin.client.clone(),
            session: origin.session,
            id: origin.id.as_deref().map(Cow::Borrowed),
            status,
        }));
        if let Err(e) = self
            .bus
            .publish(&origin.node, hop.encode().into(), None)
            .await
        {
            // The sender's node cannot be reached, so neither can the
            // sender; its in-flight entry will time out there.
            tracing::debug!(node = %origin.node, error = %e, "could not send a receipt");
            self.metrics.receipt_undeliverable();
        }
    }

    /// An outcome arrived from another node for a message sent from here.
    pub fn accept_receipt(&self, hop: ReceiptHop<'_>) {
        match self.inflight.complete(hop.msg_id) {
            Some((origin, recipient)) => {
                if hop.status == ReceiptStatus::Offline {
                    // Not where we thought: look it up next time.
                    self.cache.remove(&recipient);
                }
                self.report_to_sender(&origin, hop.status)
            }
            // Already answered offline (overdue, or its node was declared
            // dead): the sender has its answer.
            None => self.metrics.late_outcome(),
        }
    }

    /// The bus found nobody listening for a message sent from here.
    pub fn bounced(&self, msg_id: Uuid) {
        if let Some((origin, recipient)) = self.inflight.complete(msg_id) {
            self.cache.remove(&recipient);
            self.metrics.hop_bounced();
            self.report_to_sender(&origin, ReceiptStatus::Offline);
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
            .is_some_and(|s| s.outbox.push(Outbound::Frame(frame.into())).is_ok());
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

pub(super) fn origin_of(hop: &MessageHop<'_>) -> Option<Origin> {
    hop.reply.as_ref().map(|reply| Origin {
        node: reply.node.clone(),
        client: hop.from.clone(),
        session: reply.session,
        msg_id: hop.msg_id,
        id: reply.id.as_deref().map(Into::into),
        receipt: reply.receipt,
    })
}
