//! Hops that arrive from other nodes: messages for the sessions here
//! (re-routed once when a device moved), and changes that make cached
//! records and members stale.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Router;
use super::inflight::Who;
use crate::bus::{Bounce, BounceTag};
use crate::hub::{Handover, Outbound, Refused, Report, Sender};
use crate::metrics::SignalFate;
use crate::protocol::envelope::{MessageHopOut, encode_envelope, encode_message_hop};
use crate::protocol::frames::with_field;
use crate::protocol::{
    Addressee, Changed, Fate, MessageHop, NodeId, OfflineReason, Outcome, ReadHop, Recipient,
    SignalHop, Target,
};

impl Router {
    /// A message arrived from another node for sessions believed to be
    /// here. `frame` is the message frame, cut from the bus message.
    pub async fn accept_hop(self: &Arc<Self>, hop: MessageHop<'_>, frame: Utf8Bytes) {
        let Some(handover) = self.handover_from(&hop) else {
            return self.refuse_hop(&hop).await;
        };
        let handover = Arc::new(handover);
        for target in &hop.targets {
            // The session named, or a newer one of the same device here.
            let session = self.hub().get_device(&target.to, &target.device);
            let item = Outbound {
                frame: frame.clone(),
                handover: Some(handover.clone()),
            };
            let who = Who {
                to: target.to.clone(),
                device: target.device.clone(),
            };
            match session.map(|s| s.outbox.push(item)) {
                Some(Ok(())) => {}
                Some(Err(Refused::Full(_))) => {
                    let fate = Fate::Offline(OfflineReason::SlowConsumer);
                    self.settle(&handover, &who.to, &who.device, fate).await;
                }
                Some(Err(Refused::Closing(_))) | None => {
                    self.metrics().hop_recipient_absent();
                    self.reroute(
                        handover.clone(),
                        frame.clone(),
                        who,
                        OfflineReason::Disconnected,
                    )
                    .await;
                }
            }
        }
        if !hop.carbons.is_empty() {
            let carbon = Utf8Bytes::from(with_field(&frame, "carbon", "true"));
            for c in &hop.carbons {
                if let Some(session) = self.hub().get_device(&hop.from, &c.device) {
                    let _ = session.outbox.push(Outbound {
                        frame: carbon.clone(),
                        handover: None,
                    });
                }
            }
        }
    }

    /// The handover of a message that came over the bus; `None` for a hop
    /// that names both a client and a group, or neither.
    fn handover_from(&self, hop: &MessageHop<'_>) -> Option<Handover> {
        let to = match hop.addressee()? {
            Addressee::Client(to) => Recipient::Client(to.clone()),
            Addressee::Group(group) => Recipient::Group(group.clone()),
        };
        let report = match &hop.reply {
            Some(reply) if reply.node == *self.node() => Report::InFlight,
            Some(_) => Report::Node {
                per_target: hop.forwarded,
            },
            None => Report::Sender,
        };
        let sender = hop.reply.as_ref().map(|reply| Sender {
            node: reply.node.clone(),
            client: hop.from.clone(),
            session: reply.session,
            id: None,
            receipt: reply.receipt,
            group: None,
        });
        let mut handover = Handover::new(
            hop.msg_id,
            hop.from.clone(),
            to,
            sender,
            report,
            hop.forwarded,
            hop.targets.len() as u32,
        );
        handover.part = hop.part;
        Some(handover)
    }

    /// A message hop this node will not deliver (see [`super::inbox`]):
    /// every target's sender is told `offline`.
    pub async fn refuse_hop(&self, hop: &MessageHop<'_>) {
        let Some(reply) = &hop.reply else { return };
        for target in &hop.targets {
            let outcome = Outcome::target(
                hop.msg_id,
                target.to.clone(),
                target.device.clone(),
                Fate::Offline(OfflineReason::Disconnected),
            );
            if reply.node == *self.node() {
                self.outcomes().settle(&outcome);
            } else {
                self.report_to(&reply.node, outcome, true).await;
            }
        }
    }

    /// `who`'s session here did not take a message of `handover`. Look
    /// the device up again and forward once if it moved; otherwise tell
    /// the sender `offline` (`why`).
    pub async fn reroute(
        self: &Arc<Self>,
        handover: Arc<Handover>,
        frame: Utf8Bytes,
        who: Who,
        why: OfflineReason,
    ) {
        // A message from the inbox stays there, for the device's next
        // session (which claims it).
        if handover.report == Report::Stored {
            return self
                .settle(&handover, &who.to, &who.device, Fate::Offline(why))
                .await;
        }
        // The device may have another session here already (a registration
        // that failed gave the device back to its previous session).
        if let Some(session) = self.hub().get_device(&who.to, &who.device) {
            let item = Outbound {
                frame: frame.clone(),
                handover: Some(handover.clone()),
            };
            if session.outbox.push(item).is_ok() {
                return;
            }
        }
        // The device's detached session was handed to another node just
        // now: forward there, in arrival order, before presence says so.
        if let Some((node, session)) = self.moved().get(&who.to, &who.device) {
            return self
                .forward_to(handover, frame, who, why, node, session)
                .await;
        }
        if handover.forwarded {
            return self
                .settle(&handover, &who.to, &who.device, Fate::Offline(why))
                .await;
        }
        // The lookup may take a while: it must not hold up the inbox, and
        // the number of them in flight is bounded.
        let (router, answer) = (self.clone(), (handover.clone(), who.clone()));
        let forward = async move { router.forward_or_refuse(handover, frame, who, why).await };
        if self.background().try_spawn(forward).is_err() {
            // Too much is being re-routed: answered at once, not queued.
            let (handover, who) = answer;
            self.settle(&handover, &who.to, &who.device, Fate::Offline(why))
                .await;
        }
    }

    async fn forward_or_refuse(
        &self,
        handover: Arc<Handover>,
        frame: Utf8Bytes,
        who: Who,
        why: OfflineReason,
    ) {
        self.locator().cache().invalidate(&who.to);
        let offline = |reason| Fate::Offline(reason);
        let record = match self
            .locator()
            .lookup_many(std::slice::from_ref(&who.to))
            .await
        {
            Ok(records) => records
                .first()
                .and_then(|r| r.iter().find(|d| d.record.device == who.device).cloned()),
            Err(e) => {
                tracing::debug!(error = %e, "could not look a moved device up");
                return self
                    .settle(&handover, &who.to, &who.device, offline(why))
                    .await;
            }
        };
        let Some(found) = record else {
            return self
                .settle(&handover, &who.to, &who.device, offline(why))
                .await;
        };
        let node = found.record.node;
        if node == *self.node() {
            // It reconnected here meanwhile: one more look at the sessions.
            let item = Outbound {
                frame,
                handover: Some(handover.clone()),
            };
            let pushed = self
                .hub()
                .get_device(&who.to, &who.device)
                .is_some_and(|s| s.outbox.push(item).is_ok());
            if !pushed {
                self.settle(&handover, &who.to, &who.device, offline(why))
                    .await;
            }
            return;
        }
        self.forward_to(handover, frame, who, why, node, found.record.session)
            .await;
    }

    /// Forwards a message of `handover` for `who` to `node`, where its
    /// device's session is now `session`; tracked from here when its
    /// sender is here. Once only: a forwarded hop is never forwarded again
    /// (except to follow a hand-over, see `moved_to`).
    pub async fn forward_to(
        &self,
        handover: Arc<Handover>,
        frame: Utf8Bytes,
        who: Who,
        why: OfflineReason,
        node: NodeId,
        session: uuid::Uuid,
    ) {
        let offline = |reason| Fate::Offline(reason);
        // A sender here whose message had never left this node: from now
        // on, it is tracked like any cross-node message.
        if let (Report::Sender, Some(sender)) = (handover.report, &handover.sender)
            && self
                .outcomes()
                .track_forwarded(handover.msg_id, sender.clone(), who.clone(), &node)
                .is_err()
        {
            return self
                .settle(&handover, &who.to, &who.device, offline(why))
                .await;
        }
        let target = Target {
            to: who.to.clone(),
            device: who.device.clone(),
            session,
        };
        let reply = handover.sender.as_ref().map(Sender::reply);
        let hop = encode_message_hop(&MessageHopOut {
            msg_id: handover.msg_id,
            from: &handover.from,
            to: handover.to.addressee(),
            forwarded: true,
            reply: reply.as_ref(),
            targets: std::slice::from_ref(&target),
            carbons: &[],
            part: 0,
            frame: &frame,
        });
        let envelope = encode_envelope([hop.as_slice()]).into();
        // If nobody listens there, the sender's node hears it at once.
        let bounce = handover.sender.as_ref().map(|s| Bounce {
            node: &s.node,
            tag: BounceTag::Message(handover.msg_id),
        });
        match self.courier().publish(&node, envelope, bounce).await {
            Ok(()) => {
                self.metrics().hop_forwarded();
                self.settle(&handover, &who.to, &who.device, Fate::Forwarded(&node))
                    .await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not forward a message");
                if handover.report == Report::Sender {
                    // Tracked just above: settled (and told) from there.
                    let outcome = Outcome::target(
                        handover.msg_id,
                        who.to.clone(),
                        who.device.clone(),
                        offline(why),
                    );
                    self.outcomes().settle(&outcome);
                } else {
                    self.settle(&handover, &who.to, &who.device, offline(why))
                        .await;
                }
            }
        }
    }

    /// A signal (v3) arrived from another node for sessions believed to be
    /// here: handed to each that is (by device) and has room; the others
    /// simply do not get it.
    pub fn accept_signal(&self, hop: SignalHop<'_>, frame: Utf8Bytes) {
        for target in &hop.targets {
            let fate = match self.hub().get_device(&target.to, &target.device) {
                Some(s) if s.outbox.put_signal(frame.clone()) => SignalFate::Sent,
                Some(_) => SignalFate::QueueFull,
                None => SignalFate::Gone,
            };
            self.metrics().signal(fate);
        }
    }

    /// A read receipt (v3) arrived for sessions believed to be here: each
    /// that is keeps the latest per conversation and reader.
    pub fn accept_read(&self, hop: ReadHop<'_>, frame: Utf8Bytes) {
        let key = Utf8Bytes::from(ReadHop::key(&frame).to_owned());
        for target in &hop.targets {
            if let Some(session) = self.hub().get_device(&target.to, &target.device) {
                session.outbox.put_read(key.clone(), frame.clone());
            }
        }
    }

    /// Another node changed records this node may have cached.
    pub fn accept_changed(&self, changed: Changed) {
        if changed.node == *self.node() {
            return;
        }
        for client in &changed.clients {
            self.locator().cache().invalidate(client);
        }
        for group in &changed.groups {
            self.groups().invalidate(group);
        }
    }
}
