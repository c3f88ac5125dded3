//! What became of a message handed to a session here, told to its sender.
//!
//! Each session reports its own target's fate: `delivered` once its socket
//! took the message, `offline` when it could not (and, when the device had
//! moved, `forwarded`). The [`Handover`] the message came with says where
//! that goes:
//!
//! - a sender on this node whose message never left it hears it directly;
//! - a sender on this node whose message came back over the bus settles
//!   its in-flight entry;
//! - a sender on another node is told over the bus. What someone waits
//!   for (an `offline`, a receipt asked for, anything about a forwarded
//!   hop) goes at once, on its own. Quiet deliveries are only counted: when
//!   the hop's last target has settled, one `done` covers them all. A group
//!   message handed to a thousand sessions here so costs the sender's
//!   node one outcome, not a thousand. The `done` travels through the same
//!   queue as the outcomes that went on their own, after them, so the
//!   sender's node has always settled those first.

use std::sync::Arc;

use super::Router;
use super::courier::Parcel;
use super::inflight::Who;
use super::outcomes::offline_reason;
use crate::hub::{Handover, Outbound, Report};
use crate::protocol::{ClientId, DeviceId, Disconnect, Fate, NodeId, OfflineReason, Outcome};

impl Router {
    /// `to`'s `device` session here took (or could not take) a message it
    /// was handed: its sender hears it as the handover says.
    pub async fn settle(
        &self,
        handover: &Handover,
        to: &ClientId,
        device: &DeviceId,
        fate: Fate<'_>,
    ) {
        if handover.report == Report::Stored {
            // Not delivered: it stays in the inbox for the next session.
            if let Fate::Delivered = fate {
                self.offline().stored_delivered(to, handover);
            }
            return;
        }
        let Some(sender) = &handover.sender else {
            // A server-side send: nobody to tell but the backend.
            if let Fate::Offline(reason) = fate {
                self.offline().announce().offline(
                    handover.msg_id,
                    &handover.from,
                    to,
                    handover.to.group(),
                    false,
                    reason,
                );
            }
            return;
        };
        match handover.report {
            Report::Stored => unreachable!("settled above"),
            Report::Sender => {
                self.outcomes()
                    .tell_sender(sender, handover.msg_id, to, device, fate)
            }
            Report::InFlight => self.outcomes().settle(&Outcome::target(
                handover.msg_id,
                to.clone(),
                device.clone(),
                fate,
            )),
            Report::Node { per_target } => {
                let urgent = !matches!(fate, Fate::Delivered) || sender.receipt;
                let own = per_target || urgent;
                if own {
                    let outcome =
                        Outcome::target(handover.msg_id, to.clone(), device.clone(), fate);
                    self.report_to(&sender.node, outcome, urgent).await;
                }
                if let Some(done) = handover.settle_one(own) {
                    let outcome =
                        Outcome::done(handover.msg_id, self.node().clone(), handover.part);
                    self.report_to(&sender.node, outcome, done.urgent).await;
                }
            }
        }
    }

    /// Sends an outcome to the sender's `node`: at once when `urgent`;
    /// otherwise put aside to travel with later traffic (see
    /// [`super::courier`]).
    pub async fn report_to(&self, node: &NodeId, outcome: Outcome, urgent: bool) {
        if !urgent {
            self.courier().linger(node.clone(), outcome);
        } else if self
            .courier()
            .send(node.clone(), Parcel::Outcome(outcome))
            .await
            .is_err()
        {
            self.metrics().receipt_undeliverable();
        }
    }

    /// Everything still queued for `handle`, a session going away while
    /// its device lives on (replaced, or never made reachable): routed
    /// again to the device's session, here or elsewhere, or answered.
    pub async fn reroute_queued(self: &Arc<Self>, handle: &crate::hub::SessionHandle) {
        let rest = handle.outbox.take_all();
        self.undelivered(
            &handle.client,
            &handle.device,
            rest.messages,
            Disconnect::Replaced,
        )
        .await;
    }

    /// Messages still queued for `to`'s `device` session, which is ending
    /// with `why`. A session replaced by a newer one of its device has a
    /// successor to re-route them to; otherwise they are answered
    /// `offline`.
    pub async fn undelivered(
        self: &Arc<Self>,
        to: &ClientId,
        device: &DeviceId,
        items: impl IntoIterator<Item = Outbound>,
        why: Disconnect,
    ) {
        for item in items {
            let Some(handover) = item.handover else {
                continue;
            };
            let who = Who {
                to: to.clone(),
                device: device.clone(),
            };
            if why == Disconnect::Replaced {
                self.reroute(handover, item.frame, who, OfflineReason::Disconnected)
                    .await;
            } else {
                let reason = offline_reason(why);
                self.settle(&handover, to, device, Fate::Offline(reason))
                    .await;
            }
        }
    }
}
