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
//! closed), and delivered by B only.
//!
//! A draining node waits a moment for its detached sessions to be resumed
//! that way; those whose clients have not come back it passes on
//! (`Adopt`, [`Router::pass_on_detached`]) to the other live nodes, each
//! of which keeps one detached for the rest of its window, names itself in
//! its presence field, and is where the next resume takes it from: a
//! client that can only reach the node that restarted (a page served by
//! it) resumes there, from the node that adopted its session. Not promised: a sender whose cache
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
use crate::lock::Locked;
use crate::presence::{PresenceRecord, Registered};
use crate::protocol::takeover::{
    Adopt, Handed, KeptMessage, NodeStatus, Request, TakeOver, VERSION,
};
use crate::protocol::{ClientId, DeviceId, Fate, NodeId, OfflineReason, Recipient};

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
        self.to.locked()
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
    /// Whether this node handed a session over lately (and forwards what
    /// still arrives for it).
    pub fn forwarding(&self) -> bool {
        !self.moved.to().is_empty()
    }

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
        let request = Request::TakeOver(TakeOver {
            v: VERSION,
            client: handle.client.clone(),
            device: handle.device.clone(),
            session: handle.id,
            node: self.node.clone(),
        });
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
            (Some(msg_id), Some(from)) if kept.stored.is_some() => {
                let entry = kept.stored.unwrap_or_default();
                Some(Arc::new(Handover::stored(
                    msg_id,
                    from,
                    handle.client.clone(),
                    entry,
                )))
            }
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
                    group: None,
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

    /// On this node's request subject: answers a `TakeOver` (see the
    /// module comment; the kept messages' senders are told afterwards, by
    /// [`after_hand_over`](Self::after_hand_over)) or an `Adopt`.
    pub async fn hand_over(self: &Arc<Self>, request: &[u8]) -> Bytes {
        let answer = |found| {
            Bytes::from(
                serde_json::to_vec(&Handed {
                    v: VERSION,
                    found,
                    ..Handed::default()
                })
                .expect("serializable"),
            )
        };
        let request = match serde_json::from_slice::<Request>(request) {
            Ok(Request::TakeOver(request)) => request,
            Ok(Request::Adopt(adopt)) => return answer(self.adopt(adopt).await),
            Ok(Request::Status) => {
                let status = self.status().await;
                return Bytes::from(serde_json::to_vec(&status).expect("serializable"));
            }
            Err(e) => {
                tracing::debug!(error = %e, "unreadable request from another node");
                return answer(false);
            }
        };
        let Some(handle) = self.claim_detached(&request.client, request.session) else {
            return answer(false);
        };
        if handle.device != request.device {
            return answer(false);
        }
        let (next_seq, kept, handovers) = self.pack(&handle, &request.node);
        tracing::debug!(client = %handle.client, session = %handle.id, to = %request.node,
            kept = kept.len(), "detached session handed over");
        let bytes = Bytes::from(
            serde_json::to_vec(&Handed {
                v: VERSION,
                found: true,
                next_seq,
                kept,
            })
            .expect("serializable"),
        );
        self.pending_forwards
            .locked()
            .push((handle, request.node, handovers));
        bytes
    }

    /// Whether `payload` is a status request (answered off the inbox).
    pub(super) fn is_status_request(payload: &[u8]) -> bool {
        matches!(
            serde_json::from_slice::<Request>(payload),
            Ok(Request::Status)
        )
    }

    /// Every live node's status, this one's included (for the admin
    /// page): the others asked over the bus at once; a node that does not
    /// answer within a second is left out.
    pub async fn cluster_status(&self) -> Vec<NodeStatus> {
        let payload = Bytes::from(serde_json::to_vec(&Request::Status).expect("serializable"));
        let peers: Vec<NodeId> = self
            .liveness
            .alive_nodes()
            .into_iter()
            .filter(|n| *n != self.node)
            .collect();
        let asks = peers.iter().map(|peer| {
            let payload = payload.clone();
            async move {
                let answer = self
                    .ports
                    .bus
                    .request(peer, payload, Duration::from_secs(1))
                    .await
                    .ok()?;
                serde_json::from_slice::<NodeStatus>(&answer).ok()
            }
        });
        let mut all = vec![self.status().await];
        all.extend(
            futures_util::future::join_all(asks)
                .await
                .into_iter()
                .flatten(),
        );
        all.sort_by(|a, b| a.node.cmp(&b.node));
        all
    }

    /// This node as `switchboard status` and the admin page show it.
    pub async fn status(&self) -> NodeStatus {
        let ping = tokio::time::timeout(Duration::from_millis(500), self.ports.presence.ping());
        let presence_ok = matches!(ping.await, Ok(Ok(())));
        NodeStatus {
            presence_ok,
            bus_ok: self.ports.bus.connected(),
            node: self.node.clone(),
            started_ms: self.liveness.me().started_ms,
            sessions: self.hub.len() as u64,
            detached: self.detached_sessions() as u64,
            in_flight: self.outcomes.in_flight() as u64,
            sends: self
                .metrics
                .sends_by_branch()
                .into_iter()
                .map(|(branch, n)| (branch.to_owned(), n))
                .collect(),
            offline_receipts: self.metrics.offline_receipts(),
            presence: self.ports.presence.backend().to_owned(),
            bus: self.ports.bus.backend().to_owned(),
        }
    }

    /// Takes a claimed detached session out of this node for `to`: the
    /// moved note, out of the hub, its outbox closed and emptied into the
    /// wire form. Returns the next `seq`, what was kept, and the kept
    /// messages' handovers (for their senders).
    fn pack(
        &self,
        handle: &SessionHandle,
        to: &NodeId,
    ) -> (u64, Vec<KeptMessage>, Vec<Arc<Handover>>) {
        {
            let mut moved = self.moved.to();
            // Notes older than their use are dropped here, so that the map
            // holds at most the hand-overs of the last MOVED_FOR.
            moved.retain(|_, (_, _, at)| at.elapsed() < MOVED_FOR);
            moved.insert(
                (handle.client.clone(), handle.device.clone()),
                (to.clone(), handle.id, Instant::now()),
            );
        }
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
                stored: h.and_then(|h| h.entry.as_deref()).map(str::to_owned),
                frame: item.frame.to_string(),
            });
            handovers.extend(item.handover);
        }
        self.metrics.session_closed();
        (next_seq, kept, handovers)
    }

    /// A draining node passes a detached session on: this node keeps it,
    /// detached, for what is left of its window, names itself in its
    /// presence field, and hands it to whichever node its client resumes
    /// on. Answers whether it took it.
    async fn adopt(self: &Arc<Self>, adopt: Adopt) -> bool {
        let handle = Arc::new(SessionHandle {
            id: adopt.session,
            client: adopt.client,
            device: adopt.device,
            since: adopt.since,
            outbox: crate::hub::Outbox::acks(self.settings.session_queue),
        });
        let kept = adopt
            .kept
            .into_iter()
            .map(|k| (k.seq, self.kept_to_outbound(&handle, k)))
            .collect();
        handle.outbox.restore(adopt.next_seq, kept);
        if let Some(older) = self.hub.insert(handle.clone()) {
            older.outbox.close(crate::protocol::Disconnect::Replaced);
        }
        let record = PresenceRecord {
            device: handle.device.clone(),
            node: self.node.clone(),
            session: handle.id,
            since: handle.since,
        };
        if let Err(e) = self
            .ports
            .presence
            .register(&handle.client, &record, usize::MAX)
            .await
        {
            tracing::warn!(client = %handle.client, error = %e,
                "adopted session's field not written yet; the refresh will");
        }
        self.cache.invalidate(&handle.client);
        self.courier.changed_client(handle.client.clone());
        self.metrics.session_opened();
        tracing::debug!(client = %handle.client, session = %handle.id,
            "adopted a detached session from a draining node");
        let window = Duration::from_millis(adopt.window_ms);
        self.detach(handle, window, self.drain_over.clone(), None);
        true
    }

    /// A draining node: passes every session still detached here on to
    /// the other live nodes in turn (see [`adopt`](Self::adopt)); what no
    /// node takes is answered `offline` (`shutting_down`).
    pub async fn pass_on_detached(self: &Arc<Self>) {
        let peers: Vec<NodeId> = self
            .liveness
            .alive_nodes()
            .into_iter()
            .filter(|n| *n != self.node)
            .collect();
        for (i, (handle, left)) in self.claim_every_detached().into_iter().enumerate() {
            let Some(peer) = (!peers.is_empty()).then(|| peers[i % peers.len()].clone()) else {
                self.end_detached(&handle, OfflineReason::ShuttingDown)
                    .await;
                continue;
            };
            let (next_seq, kept, handovers) = self.pack(&handle, &peer);
            let adopt = Request::Adopt(Adopt {
                v: VERSION,
                client: handle.client.clone(),
                device: handle.device.clone(),
                session: handle.id,
                since: handle.since,
                window_ms: left.as_millis() as u64,
                next_seq,
                kept,
            });
            let payload = Bytes::from(serde_json::to_vec(&adopt).expect("serializable"));
            let answer = self
                .ports
                .bus
                .request(&peer, payload, TAKEOVER_TIMEOUT)
                .await
                .map(|answer| serde_json::from_slice::<Handed>(&answer).is_ok_and(|h| h.found));
            match answer {
                Ok(true) => {
                    tracing::debug!(client = %handle.client, session = %handle.id, to = %peer,
                        "detached session passed on");
                    self.tell_forwarded(&handle, &peer, handovers).await;
                }
                Ok(false) => {
                    // Refused: what was kept is answered here.
                    self.moved
                        .to()
                        .remove(&(handle.client.clone(), handle.device.clone()));
                    for handover in handovers {
                        let fate = Fate::Offline(OfflineReason::ShuttingDown);
                        self.settle(&handover, &handle.client, &handle.device, fate)
                            .await;
                    }
                    let _ = self
                        .ports
                        .presence
                        .remove(&handle.client, &handle.device, &self.node, handle.id)
                        .await;
                }
                Err(e) => {
                    // No answer in time: the peer may have adopted it (a
                    // busy node), so neither its field nor its messages are
                    // touched here. If it did not, the senders elsewhere
                    // hear `offline` when this run is seen gone, and the
                    // field, naming this run, is swept as a ghost.
                    tracing::warn!(client = %handle.client, session = %handle.id, to = %peer,
                        error = %e, "no answer to passing a detached session on");
                }
            }
        }
    }

    /// After answering a `TakeOver`: each kept message's sender hears it
    /// was forwarded (a sender here starts tracking it).
    pub async fn after_hand_over(&self) {
        let done = std::mem::take(&mut *self.pending_forwards.locked());
        for (handle, node, handovers) in done {
            self.tell_forwarded(&handle, &node, handovers).await;
        }
    }

    /// Each of `handovers` (messages kept for `handle`) went to `node`:
    /// its sender's node moves its entry there (a sender here starts
    /// tracking it).
    async fn tell_forwarded(
        &self,
        handle: &SessionHandle,
        node: &NodeId,
        handovers: Vec<Arc<Handover>>,
    ) {
        for handover in handovers {
            let who = Who {
                to: handle.client.clone(),
                device: handle.device.clone(),
            };
            if let (Report::Sender, Some(sender)) = (handover.report, &handover.sender)
                && self
                    .outcomes
                    .track_forwarded(handover.msg_id, sender.clone(), who, node)
                    .is_err()
            {
                tracing::warn!(msg_id = %handover.msg_id, "in-flight map full; a moved message is not tracked");
            }
            self.settle(
                &handover,
                &handle.client,
                &handle.device,
                Fate::Forwarded(node),
            )
            .await;
        }
    }
}
