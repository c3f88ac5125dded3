//! Hops that arrive from other nodes: messages for the sessions here
//! (re-routed once when the recipient moved), and takeovers.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Message, Route, Router};
use crate::hub::{Outbound, ReceiptTo};
use crate::presence::PresenceRecord;
use crate::protocol::{
    ClientId, Disconnect, Envelope, ForwardedHop, Hop, MessageHop, NodeId, ReceiptStatus,
    ReplacedHop,
};

impl Router {
    /// A message arrived from another node for a client believed to be
    /// here. `frame` is the message frame, cut from the bus message.
    pub async fn accept_hop(self: &Arc<Self>, hop: MessageHop<'_>, frame: Utf8Bytes) {
        if let Some(session) = self.hub.get(&hop.to) {
            let item = Outbound {
                frame,
                receipt_to: receipt_to_of(&hop).map(Box::new),
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

    /// A message hop this node will not deliver (see [`super::inbox`]): its
    /// sender is told `offline`.
    pub async fn refuse_hop(&self, hop: &MessageHop<'_>) {
        if let Some(to) = receipt_to_of(hop) {
            self.report_outcome(&to, ReceiptStatus::Offline).await;
        }
    }

    /// The recipient is not (or no longer) here. Look it up again and
    /// forward once if it moved; otherwise tell the sender `offline`.
    async fn reroute(self: &Arc<Self>, msg: Message) {
        if msg.forwarded {
            return self.report_offline(msg).await;
        }
        // The lookup may take a while: it must not hold up the inbox, and
        // the number of them in flight is bounded.
        let Some(permit) = self.background_permit() else {
            return self.report_offline(msg).await;
        };
        let router = self.clone();
        self.in_background(permit, async move { router.forward_or_refuse(msg).await });
    }

    async fn forward_or_refuse(&self, msg: Message) {
        match self.lookup(&msg.to).await {
            Ok(Route::Remote { node, epoch }) => {
                let msg = Message {
                    forwarded: true,
                    ..msg
                };
                match self.publish_tracked(&msg, &node, epoch).await {
                    Ok(()) => {
                        self.metrics.hop_forwarded();
                        self.tell_sender_forwarded(&msg, node, epoch).await;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "could not forward a message");
                        self.report_offline(msg).await;
                    }
                }
            }
            // The record may name this node because the recipient just
            // reconnected here; one more look at the local sessions.
            Ok(Route::Local { session }) => {
                let local = self.hub.get(&msg.to);
                let item = Outbound {
                    frame: msg.frame.clone(),
                    receipt_to: msg.receipt_to.clone().map(Box::new),
                };
                if local.is_none_or(|s| s.outbox.push(item).is_err()) {
                    let node = self.node.clone();
                    self.forget_stale_record(msg.to.clone(), node, session);
                    self.report_offline(msg).await;
                }
            }
            Ok(Route::Offline) | Err(_) => self.report_offline(msg).await,
        }
    }

    /// The sender's node tracks where a message went; after a forward, the
    /// new node's fate decides its outcome.
    async fn tell_sender_forwarded(&self, msg: &Message, node: NodeId, epoch: u64) {
        let Some(to) = &msg.receipt_to else { return };
        if to.node == self.node {
            return self.outcomes.moved(msg.msg_id, node, epoch);
        }
        let hop = Envelope::new(Hop::Forwarded(ForwardedHop {
            msg_id: msg.msg_id,
            node,
        }));
        if let Err(e) = self
            .ports
            .bus
            .publish(&to.node, hop.encode().into(), None)
            .await
        {
            tracing::debug!(node = %to.node, error = %e, "could not report a forward");
        }
    }

    async fn report_offline(&self, msg: Message) {
        if let Some(to) = msg.receipt_to {
            self.report_outcome(&to, ReceiptStatus::Offline).await;
        }
    }

    /// A newer session of a client registered; `previous` is the record it
    /// replaced. Closes the older session with 4001, on whichever node.
    pub async fn evict(&self, client: &ClientId, previous: &PresenceRecord) {
        if previous.node == self.node {
            if let Some(old) = self.hub.get_session(client, previous.session) {
                old.outbox.close(Disconnect::Replaced);
            }
            return;
        }
        let hop = Envelope::new(Hop::Replaced(ReplacedHop {
            client: client.clone(),
            session: previous.session,
        }));
        if let Err(e) = self
            .ports
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
        if let Some(old) = self.hub.get_session(&hop.client, hop.session) {
            old.outbox.close(Disconnect::Replaced);
        }
    }
}

/// The sender of a message that came over the bus, for its outcome.
pub(super) fn receipt_to_of(hop: &MessageHop<'_>) -> Option<ReceiptTo> {
    hop.reply.as_ref().map(|reply| ReceiptTo {
        node: reply.node.clone(),
        client: hop.from.clone(),
        session: reply.session,
        msg_id: hop.msg_id,
        id: None,
        receipt: reply.receipt,
        tracked: true,
    })
}
