//! A detached session moving to the node its client resumed on (acks
//! mode, v2).
//!
//! The protocol, and why nothing is lost or written twice:
//!
//! 1. The new node (B) finds, in the device's presence field, the node (A)
//!    that holds session S. It puts S in its hub first, with an empty
//!    outbox, so that anything forwarded to it from now on waits there
//!    (and sends on B itself: they see S here, `local`). If the take-over
//!    then fails, what waited there is routed again from S's presence
//!    field, or answered `offline`; it is never dropped with S.
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
//! Not promised: a sender whose cache still named A may have a later
//! message reach B directly before an earlier one A forwards; and if A
//! cannot answer (it crashed), S cannot be resumed: the client gets a
//! fresh session, and A's messages were lost with A (their senders hear
//! `offline` from the liveness check).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Resumption;
use crate::bus::BusError;
use crate::hub::{Handover, Kept, Outbound, Report, Sender, SessionHandle};
use crate::protocol::requests::{Handed, KeptMessage, Request, TakeOver, VERSION};
use crate::protocol::{ClientId, Fate, NodeId, Recipient};
use crate::routing::inflight::Who;

/// How long B waits for A's answer.
pub const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long B waits for A's answer before it checks that A still listens.
const HOLDER_CHECK_AFTER: Duration = Duration::from_millis(250);

/// Why a resume on this node did not take the session over.
#[derive(Debug, thiserror::Error)]
pub enum TakeOverError {
    #[error("no presence field names that session on another node")]
    Unknown,
    #[error("the session's node did not hand it over: {0}")]
    Refused(String),
    /// Not now (the presence store or the holder did not answer, or the
    /// session is on its way to this node): it may well be kept, so the
    /// client should try again rather than start afresh (which would
    /// forfeit what was kept for it).
    #[error("not now: {0}")]
    Unavailable(String),
}

/// The kept messages of a session handed to `node`, whose senders are
/// still to be told where they went (step 3 of the module comment): done
/// by [`Resumption::tell_forwarded`] once the answer is on its way.
pub struct Forwarded {
    handle: Arc<SessionHandle>,
    node: NodeId,
    handovers: Vec<Arc<Handover>>,
}

/// A detached session packed to leave this node ([`Resumption::pack`]).
pub(super) struct Packed {
    pub next_seq: u64,
    /// What was kept, in the wire form.
    pub kept: Vec<KeptMessage>,
    /// The kept messages' handovers, for their senders.
    pub handovers: Vec<Arc<Handover>>,
    /// Receipt frames owed to the client as a sender.
    pub owed: Vec<String>,
}

/// Hand-over answers given lately, by session, for a repeat of the same
/// request by the same node (see [`Resumption::hand_over`]). Bounded by
/// time: entries older than [`HANDED_KEPT_FOR`] are dropped whenever one is
/// added.
#[derive(Default)]
pub struct RecentlyHanded {
    answers: std::sync::Mutex<Answers>,
}

#[derive(Default)]
struct Answers {
    by_session: std::collections::HashMap<uuid::Uuid, (NodeId, Bytes, Instant)>,
    /// Their bytes, in all.
    bytes: usize,
}

/// How long a hand-over answer is kept for a repeat: the asking node waits
/// [`TAKEOVER_TIMEOUT`], and its client comes back within its backoff.
const HANDED_KEPT_FOR: Duration = Duration::from_secs(10);
/// Most bytes of answers kept for repeats.
const HANDED_BYTES: usize = 64 << 20;

impl RecentlyHanded {
    fn remember(&self, session: uuid::Uuid, node: &NodeId, answer: &Bytes) {
        let mut answers = crate::lock::Locked::locked(&self.answers);
        let Answers { by_session, bytes } = &mut *answers;
        by_session.retain(|_, (_, a, at)| {
            let keep = at.elapsed() < HANDED_KEPT_FOR;
            if !keep {
                *bytes -= a.len();
            }
            keep
        });
        // Bounded in bytes too: a storm of hand-overs with large queues
        // keeps only HANDED_BYTES of answers for a repeat.
        if *bytes + answer.len() <= HANDED_BYTES {
            *bytes += answer.len();
            let old = by_session.insert(session, (node.clone(), answer.clone(), Instant::now()));
            *bytes -= old.map_or(0, |(_, a, _)| a.len());
        }
    }

    /// The answer given to `node` for `session`, if it asked lately; else
    /// "not found". Given once more at most.
    fn again(&self, session: uuid::Uuid, node: &NodeId, moved_to: Option<NodeId>) -> Bytes {
        let mut answers = crate::lock::Locked::locked(&self.answers);
        match answers.by_session.get(&session) {
            Some((to, _, at)) if to == node && at.elapsed() < HANDED_KEPT_FOR => {
                let (_, answer, _) = answers.by_session.remove(&session).expect("just seen");
                answers.bytes -= answer.len();
                answer
            }
            _ => handed(Handed {
                v: VERSION,
                found: false,
                moved_to,
                ..Handed::default()
            }),
        }
    }
}

/// The answer to a request that found nothing (`found: false`).
pub fn not_found() -> Bytes {
    handed(Handed {
        v: VERSION,
        found: false,
        ..Handed::default()
    })
}

pub(super) fn handed(answer: Handed) -> Bytes {
    Bytes::from(serde_json::to_vec(&answer).expect("serializable"))
}

impl Resumption {
    /// On the node the client resumed on: takes `handle` (a new handle with
    /// the detached session's id, client and device) over from the node
    /// that holds it. See the module comment.
    pub async fn take_over(
        &self,
        handle: Arc<SessionHandle>,
        max_devices: usize,
    ) -> Result<(), TakeOverError> {
        let started = Instant::now();
        let router = &self.router;
        let records = router
            .locator()
            .records()
            .lookup(&handle.client)
            .await
            .map_err(|e| TakeOverError::Unavailable(e.to_string()))?;
        let ours = |r: &&crate::presence::PresenceRecord| {
            r.session == handle.id && r.device == handle.device
        };
        let Some(field) = records
            .iter()
            .find(|r| ours(r) && r.node != *router.node())
            .cloned()
        else {
            if records.iter().any(|r| ours(&r)) {
                // Its field names this node: it is being passed on to this
                // node right now (written before it is parked).
                return Err(TakeOverError::Unavailable(
                    "the session is being passed on to this node".into(),
                ));
            }
            return Err(TakeOverError::Unknown);
        };
        if let Some(older) = router.hub().insert(handle.clone()) {
            older.outbox.close(crate::protocol::Disconnect::Replaced);
        }
        let watching = match self.ask_holder(&handle, &field.node).await {
            Ok(watching) => watching,
            Err(e) => {
                self.withdraw(&handle).await;
                return Err(e);
            }
        };
        self.registrar.write_moved(&handle, max_devices).await;
        self.move_watches(&handle, watching).await;
        router.metrics().observe_handover(started.elapsed());
        Ok(())
    }

    /// Asks `holder` for the session (step 2), following it once to the
    /// node it was passed on to, and puts what it kept in front of
    /// `handle`'s queue. Answers the clients the session watched (v3).
    async fn ask_holder(
        &self,
        handle: &Arc<SessionHandle>,
        holder: &NodeId,
    ) -> Result<Vec<ClientId>, TakeOverError> {
        let router = &self.router;
        let request = Request::TakeOver(TakeOver {
            v: VERSION,
            client: handle.client.clone(),
            device: handle.device.clone(),
            session: handle.id,
            node: router.node().clone(),
        });
        let payload = Bytes::from(serde_json::to_vec(&request).expect("serializable"));
        let mut asked = holder.clone();
        let mut answer = self.ask(holder, payload.clone()).await;
        // Passed on by its (draining) node before the presence field said
        // so: ask the node it went to, once.
        let moved_to = answer
            .as_ref()
            .ok()
            .and_then(|a| serde_json::from_slice::<Handed>(a).ok())
            .filter(|h| !h.found)
            .and_then(|h| h.moved_to);
        if let Some(to) = moved_to {
            if to == *router.node() {
                // Being adopted here right now: it is parked in a moment.
                return Err(TakeOverError::Unavailable(
                    "the session is being passed on to this node".into(),
                ));
            }
            answer = self.ask(&to, payload).await;
            asked = to.clone();
            if answer
                .as_ref()
                .ok()
                .and_then(|a| serde_json::from_slice::<Handed>(a).ok())
                .is_some_and(|h| !h.found)
            {
                // Its new node is still adopting it: ask again shortly.
                return Err(TakeOverError::Unavailable(format!(
                    "the session is being passed on to node {to}"
                )));
            }
        }
        if let Err(BusError::NoListener { .. }) = &answer
            && self.passed_on(handle, &asked).await
        {
            // The node asked is gone, but not with the session: it passed
            // it on (a drained node, exited) before this node's request
            // reached it. The client asks again and finds it there.
            return Err(TakeOverError::Unavailable(format!(
                "node {asked} is gone; the session was passed on"
            )));
        }
        if let Err(e @ BusError::NoAnswer { .. }) = &answer {
            // The holder may have handed it over and be slow to say so
            // (a draining node under a storm): not a fresh session, which
            // would lose what it kept; the client asks this node again,
            // and the holder answers the same again (`RecentlyHanded`).
            return Err(TakeOverError::Unavailable(e.to_string()));
        }
        let answer = answer.map_err(|e| e.to_string()).and_then(|answer| {
            serde_json::from_slice::<Handed>(&answer).map_err(|e| e.to_string())
        });
        let handed = match answer {
            Ok(handed) if handed.found => handed,
            Ok(_) => {
                return Err(TakeOverError::Refused(
                    "it no longer has the session".into(),
                ));
            }
            Err(e) => return Err(TakeOverError::Refused(e)),
        };
        let kept = self.unpack(handle, handed.next_seq, handed.kept, handed.owed);
        handle.outbox.restore(kept);
        Ok(handed.watching)
    }

    /// Whether `handle`'s presence field names a node other than `gone`
    /// (or cannot be read: then it may, and the client should retry rather
    /// than forfeit what is kept).
    async fn passed_on(&self, handle: &SessionHandle, gone: &NodeId) -> bool {
        match self.router.locator().records().lookup(&handle.client).await {
            Ok(records) => records
                .iter()
                .any(|r| r.session == handle.id && r.device == handle.device && r.node != *gone),
            Err(_) => true,
        }
    }

    /// Sends `holder` a take-over request and waits up to
    /// [`TAKEOVER_TIMEOUT`] for its answer. A request published in the
    /// moment its holder is killed goes to the dead node's subscription
    /// before the bus has noticed the death, and nobody will ever answer
    /// it. So after [`HOLDER_CHECK_AFTER`] without an answer, B pings A:
    /// when the bus says nobody listens for A any more, the wait ends at
    /// once (the session died with A, unless A passed it on first: see
    /// [`Self::passed_on`]).
    /// A holder that answers the ping, or is too busy to, is waited for as
    /// before: a slow holder is not a dead one.
    async fn ask(&self, holder: &NodeId, payload: Bytes) -> Result<Bytes, BusError> {
        let courier = self.router.courier();
        let asked = courier.request(holder, payload, TAKEOVER_TIMEOUT);
        let gone = async {
            tokio::time::sleep(HOLDER_CHECK_AFTER).await;
            let ping = Bytes::from(serde_json::to_vec(&Request::Ping).expect("serializable"));
            match courier.request(holder, ping, TAKEOVER_TIMEOUT).await {
                Err(e @ BusError::NoListener { .. }) => e,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            answer = asked => answer,
            gone = gone => Err(gone),
        }
    }

    /// Takes `handle` back out of the hub after a take-over that did not
    /// happen. What reached it meanwhile (a send on this node, a message
    /// the holder forwarded) is routed again from the device's presence
    /// field, or answered `offline`: a send here is told to its sender by
    /// nobody else, so dropping it with the handle would be silent loss.
    async fn withdraw(&self, handle: &Arc<SessionHandle>) {
        let router = &self.router;
        // This handle only: the same session may be here by now under
        // another (adopted from its draining node while this asked it).
        router.hub().remove_exact(handle);
        handle.outbox.close(crate::protocol::Disconnect::Internal);
        router.reroute_queued(handle).await;
    }

    /// What the old node kept for a session, as this node's outbox takes it.
    pub(super) fn unpack(
        &self,
        handle: &SessionHandle,
        next_seq: u64,
        kept: Vec<KeptMessage>,
        owed: Vec<String>,
    ) -> Kept {
        Kept {
            next_seq,
            messages: kept
                .into_iter()
                .map(|k| (k.seq, self.kept_to_outbound(handle, k)))
                .collect(),
            owed: owed.into_iter().map(Utf8Bytes::from).collect(),
        }
    }

    /// A kept message from the old node, as an item of this node's outbox
    /// whose outcome goes straight to its sender's node.
    pub(super) fn kept_to_outbound(&self, handle: &SessionHandle, kept: KeptMessage) -> Outbound {
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
                    Some(reply) if reply.node == *self.router.node() => Report::InFlight,
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

    /// On the node that holds the session: answers a `TakeOver` (see the
    /// module comment). The kept messages' senders are to be told
    /// afterwards, with [`tell_forwarded`](Self::tell_forwarded), once the
    /// answer is on its way.
    pub fn hand_over(&self, request: TakeOver) -> (Bytes, Option<Forwarded>) {
        let Some(handle) = self.claim(&request.client, request.session) else {
            // Asked again by the node it went to: that node gave up
            // waiting for the first answer (under load), so it never used
            // it; the same answer again, or what was kept would be lost.
            // Passed on to another node (a drain): say where.
            let moved_to = self.router.moved().node_of(request.session);
            return (
                self.handed.again(request.session, &request.node, moved_to),
                None,
            );
        };
        if handle.device != request.device {
            return (not_found(), None);
        }
        let packed = self.pack(&handle, &request.node);
        tracing::debug!(client = %handle.client, session = %handle.id, to = %request.node,
            kept = packed.kept.len(), owed = packed.owed.len(), "detached session handed over");
        let answer = handed(Handed {
            v: VERSION,
            found: true,
            next_seq: packed.next_seq,
            kept: packed.kept,
            watching: self.watches.watched_by(handle.id),
            owed: packed.owed,
            moved_to: None,
        });
        let handovers = packed.handovers;
        self.watches.session_ended(handle.id);
        self.handed.remember(handle.id, &request.node, &answer);
        let forwarded = Forwarded {
            handle,
            node: request.node,
            handovers,
        };
        (answer, Some(forwarded))
    }

    /// Takes a claimed detached session out of this node for `to`: the
    /// moved note, out of the hub, its outbox closed and emptied into the
    /// wire form.
    pub(super) fn pack(&self, handle: &SessionHandle, to: &NodeId) -> Packed {
        let router = &self.router;
        router
            .moved()
            .note(&handle.client, &handle.device, to, handle.id);
        router.hub().remove(&handle.client, handle.id);
        let taken = handle.outbox.take_kept();
        let mut kept = Vec::with_capacity(taken.messages.len());
        let mut handovers = Vec::new();
        for (seq, item) in taken.messages {
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
        router.metrics().session_closed();
        Packed {
            next_seq: taken.next_seq,
            kept,
            handovers,
            owed: taken.owed.iter().map(|r| r.as_str().to_owned()).collect(),
        }
    }

    /// Each kept message of a session handed over went to its new node:
    /// its sender's node moves its entry there (a sender here starts
    /// tracking it).
    pub async fn tell_forwarded(&self, forwarded: Forwarded) {
        let Forwarded {
            handle,
            node,
            handovers,
        } = forwarded;
        let router = &self.router;
        for handover in handovers {
            let who = Who {
                to: handle.client.clone(),
                device: handle.device.clone(),
            };
            if let (Report::Sender, Some(sender)) = (handover.report, &handover.sender)
                && router
                    .outcomes()
                    .track_forwarded(handover.msg_id, sender.clone(), who, &node)
                    .is_err()
            {
                tracing::warn!(msg_id = %handover.msg_id, "in-flight map full; a moved message is not tracked");
            }
            router
                .settle(
                    &handover,
                    &handle.client,
                    &handle.device,
                    Fate::Forwarded(&node),
                )
                .await;
        }
    }
}

impl Forwarded {
    /// A pass-on's forwarded messages (see [`super::pass_on`]).
    pub(super) fn new(
        handle: Arc<SessionHandle>,
        node: NodeId,
        handovers: Vec<Arc<Handover>>,
    ) -> Self {
        Self {
            handle,
            node,
            handovers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::parse(id).unwrap()
    }

    fn found(answer: &Bytes) -> Handed {
        serde_json::from_slice(answer).unwrap()
    }

    #[test]
    fn a_repeated_request_from_the_same_node_gets_the_same_answer_once() {
        let recent = RecentlyHanded::default();
        let session = uuid::Uuid::new_v4();
        let answer = handed(Handed {
            v: VERSION,
            found: true,
            next_seq: 7,
            ..Handed::default()
        });
        recent.remember(session, &node("b"), &answer);
        // Another node never gets it (it would be delivered twice).
        let other = found(&recent.again(session, &node("c"), Some(node("b"))));
        assert!(!other.found);
        assert_eq!(other.moved_to, Some(node("b")), "told where it went");
        assert_eq!(recent.again(session, &node("b"), None), answer);
        assert!(
            !found(&recent.again(session, &node("b"), None)).found,
            "once"
        );
        assert_eq!(crate::lock::Locked::locked(&recent.answers).bytes, 0);
    }
}
