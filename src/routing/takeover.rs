//! A detached session moving to the node its client resumed on (acks
//! mode, v2).
//!
//! The protocol, and why nothing is lost or written twice:
//!
//! 1. The new node (B) finds, in the device's presence field, the node (A)
//!    that holds session S. It puts S in its hub first, with an empty
//!    outbox, so that anything forwarded to it from now on waits there.
//! 2. B asks A over the bus's request/reply (`TakeOver`). A claims S from
//!    its detached sessions (so its expiry stands down), takes it out of
//!    its hub, leaves a *moved* note (S's device -> B), closes S's outbox
//!    and answers with everything it kept, in order, with the `seq` of
//!    what was written (`Handed`). From then on, a message reaching A for
//!    that device finds no session, sees the note and is forwarded to B at
//!    once, in arrival order: it lands in S's outbox on B, behind nothing
//!    A kept, since A's outbox was closed in the same step.
//! 3. A tells each kept message's sender that it was forwarded to B (the
//!    sender's node moves its in-flight entry to B, as for any forward),
//!    so that B's outcome settles it and A's exit does not answer it
//!    `offline`.
//! 4. B puts A's messages in front of S's queue (numbering continues from
//!    A's), writes S's presence field naming B (same session id: no
//!    eviction) and broadcasts the change, so that senders route to B.
//!    The client then gets every message after its `upto`, then the rest.
//!
//! Each kept message is moved exactly once (A took it from the outbox it
//! closed), and delivered by B only. Not promised: a sender whose cache
//! still named A may have a later message reach B directly before an
//! earlier one A forwards; and if A cannot answer (it crashed), S cannot be
//! resumed: the client gets a fresh session, and A's messages were lost
//! with A (their senders hear `offline` from the liveness check).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use super::Router;
use super::inflight::Who;
use crate::hub::{Handover, Outbound, Report, Sender, SessionHandle};
use crate::presence::{PresenceRecord, Registered};
use crate::protocol::takeover::{Handed, KeptMessage, TakeOver, VERSION};
use crate::protocol::{ClientId, DeviceId, Fate, NodeId, Recipient};

/// How long B waits for A's answer.
pub const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long A forwards what arrives for a session it handed over: until
/// every sender's cache has followed the presence change.
const MOVED_FOR: Duration = Duration::from_secs(30);

/// A device whose session this node handed over: where, which session,
/// since when.
type MovedTo = HashMap<(ClientId, DeviceId), (NodeId, Uuid, Instant)>;

/// Devices whose session this node handed to another node, recently.
#[derive(Default)]
pub struct Moved {
    to: Mutex<MovedTo>,
}

impl Moved {
    fn to(&self) -> std::sync::MutexGuard<'_, MovedTo> {
        self.to.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a resume on this node did not take the session over.
#[derive(Debug, thiserror::Error)]
pub enum TakeOverError {
    #[error("no presence field names that session on another node")]
    Unknown,
    #[error("the session's node did not hand it over: {0}")]
    Refused(String),
}

impl Router {
    /// Where the session of `who` went, if this node handed it over
    /// recently.
    pub(super) fn moved_to(&self, who: &Who) -> Option<(NodeId, Uuid)> {
        let mut to = self.moved.to();
        let key = (who.to.clone(), who.device.clone());
        match to.get(&key) {
            Some((node, session, at)) if at.elapsed() < MOVED_FOR => Some((node.clone(), *session)),
            Some(_) => {
                to.remove(&key);
                None
            }
            None => None,
        }
    }

    /// On the node the client resumed on: takes `handle` (a new handle with
    /// the detached session's id, client and device) over from the node
    /// that holds it. See the module comment.
    pub async fn take_over(
        &self,
        handle: Arc<SessionHandle>,
        max_devices: usize,
    ) -> Result<(), TakeOverError> {
        let started = Instant::now();
        let records = self
            .ports
            .presence
            .lookup(&handle.client)
            .await
            .map_err(|e| TakeOverError::Refused(e.to_string()))?;
        let Some(field) = records
            .into_iter()
            .find(|r| r.session == handle.id && r.device == handle.device && r.node != self.node)
        else {
            return Err(TakeOverError::Unknown);
        };
        if let Some(older) = self.hub.insert(handle.clone()) {
            older.outbox.close(crate::protocol::Disconnect::Replaced);
        }
        let request = TakeOver {
            v: VERSION,
            client: handle.client.clone(),
            device: handle.device.clone(),
            session: handle.id,
            node: self.node.clone(),
        };
        let payload = Bytes::from(serde_json::to_vec(&request).expect("serializable"));
        let handed = match self
            .ports
            .bus
            .request(&field.node, payload, TAKEOVER_TIMEOUT)
            .await
            .map_err(|e| e.to_string())
            .and_then(|answer| serde_json::from_slice::<Handed>(&answer).map_err(|e| e.to_string()))
        {
            Ok(handed) if handed.found => handed,
            Ok(_) => {
                self.hub.remove(&handle.client, handle.id);
                return Err(TakeOverError::Refused(
                    "it no longer has the session".into(),
                ));
            }
            Err(e) => {
                self.hub.remove(&handle.client, handle.id);
                return Err(TakeOverError::Refused(e));
            }
        };
        let kept = handed
            .kept
            .into_iter()
            .map(|k| (k.seq, self.kept_to_outbound(&handle, k)))
            .collect();
        handle.outbox.restore(handed.next_seq, kept);

        let record = PresenceRecord {
            device: handle.device.clone(),
            node: self.node.clone(),
            session: handle.id,
            since: handle.since,
        };
        match self
            .ports
            .presence
            .register(&handle.client, &record, max_devices)
            .await
        {
            Ok(Registered::Done { .. }) => {}
            Ok(Registered::TooManyDevices { .. }) => {
                // Cannot happen for a device already in the record; the
                // periodic refresh writes it back all the same.
                tracing::warn!(client = %handle.client, "resumed session's field not written");
            }
            Err(e) => {
                tracing::warn!(client = %handle.client, error = %e,
                    "resumed session's field not written yet; the refresh will");
            }
        }
        self.cache.invalidate(&handle.client);
        self.courier.changed_client(handle.client.clone());
        self.metrics.observe_handover(started.elapsed());
        Ok(())
    }

    /// A kept message from the old node, as an item of this node's outbox
    /// whose outcome goes straight to its sender's node.
    fn kept_to_outbound(&self, handle: &SessionHandle, kept: KeptMessage) -> Outbound {
        let to = match (kept.to, kept.group) {
            (_, Some(group)) => Recipient::Group(group),
            (Some(to), None) => Recipient::Client(to),
            (None, None) => Recipient::Client(handle.client.clone()),
        };
        let handover = match (kept.msg_id, kept.from) {
            (Some(msg_id), Some(from)) => {
                let report = match &kept.reply {
                    Some(reply) if reply.node == self.node => Report::InFlight,
                    Some(_) => Report::Node { per_target: true },
                    None => Report::Sender,
                };
                let sender = kept.reply.map(|reply| Sender {
                    node: reply.node,
                    client: from.clone(),
                    session: reply.session,
                    id: None,
                    receipt: reply.receipt,
                });
                Some(Arc::new(Handover::new(
                    msg_id, from, to, sender, report, true, 1,
                )))
            }
            _ => None,
        };
        Outbound {
            frame: Utf8Bytes::from(kept.frame),
            handover,
        }
    }

    /// On the node holding a detached session: answers a `TakeOver` (see
    /// the module comment), then tells the kept messages' senders where
    /// they went.
    pub async fn hand_over(&self, request: &[u8]) -> Bytes {
        let not_found = || {
            Bytes::from(
                serde_json::to_vec(&Handed {
                    v: VERSION,
                    ..Handed::default()
                })
                .expect("serializable"),
            )
        };
        let Ok(request) = serde_json::from_slice::<TakeOver>(request) else {
            return not_found();
        };
        let Some(handle) = self.claim_detached(&request.client, request.session) else {
            return not_found();
        };
        if handle.device != request.device {
            return not_found();
        }
        self.moved.to().insert(
            (handle.client.clone(), handle.device.clone()),
            (request.node.clone(), handle.id, Instant::now()),
        );
        self.hub.remove(&handle.client, handle.id);
        let (next_seq, items) = handle.outbox.take_kept();
        let mut kept = Vec::with_capacity(items.len());
        let mut handovers = Vec::new();
        for (seq, item) in items {
            let h = item.handover.as_deref();
            let (to, group) = match h.map(|h| &h.to) {
                Some(Recipient::Client(to)) => (Some(to.clone()), None),
                Some(Recipient::Group(group)) => (None, Some(group.clone())),
                None => (None, None),
            };
            kept.push(KeptMessage {
                seq,
                msg_id: h.map(|h| h.msg_id),
                from: h.map(|h| h.from.clone()),
                to,
                group,
                reply: h.and_then(|h| h.sender.as_ref()).map(Sender::reply),
                frame: item.frame.to_string(),
            });
            handovers.extend(item.handover);
        }
        self.metrics.session_closed();
        tracing::debug!(client = %handle.client, session = %handle.id, to = %request.node,
            kept = kept.len(), "detached session handed over");
        let answer = Handed {
            v: VERSION,
            found: true,
            next_seq,
            kept,
        };
        let bytes = Bytes::from(serde_json::to_vec(&answer).expect("serializable"));
        self.pending_forwards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((handle, request.node, handovers));
        bytes
    }

    /// After answering a `TakeOver`: each kept message's sender hears it
    /// was forwarded (a sender here starts tracking it).
    pub async fn after_hand_over(&self) {
        let done = std::mem::take(
            &mut *self
                .pending_forwards
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for (handle, node, handovers) in done {
            for handover in handovers {
                let who = Who {
                    to: handle.client.clone(),
                    device: handle.device.clone(),
                };
                if let (Report::Sender, Some(sender)) = (handover.report, &handover.sender)
                    && self
                        .outcomes
                        .track_forwarded(handover.msg_id, sender.clone(), who, &node)
                        .is_err()
                {
                    tracing::warn!(msg_id = %handover.msg_id, "in-flight map full; a moved message is not tracked");
                }
                self.settle(
                    &handover,
                    &handle.client,
                    &handle.device,
                    Fate::Forwarded(&node),
                )
                .await;
            }
        }
    }
}
