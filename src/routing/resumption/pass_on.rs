//! A draining node's detached sessions, passed on.
//!
//! A draining node waits a moment for its detached sessions to be resumed
//! (taken over by the nodes their clients come back to); those whose
//! clients have not come back it passes on (`Adopt`) to the other live
//! nodes, each of which keeps one detached for the rest of its window,
//! names itself in its presence field, and is where the next resume takes
//! it from: a client that can only reach the node that restarted (a page
//! served by it) resumes there, from the node that adopted its session.
//!
//! A node adopts a session only while its device has nothing newer: a
//! client that gave up resuming and connected afresh (anywhere) keeps its
//! fresh session, and the draining node answers what the old one kept
//! `offline`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::Resumption;
use super::takeover::{Forwarded, TAKEOVER_TIMEOUT, handed};
use crate::hub::{Outbox, SessionHandle};
use crate::protocol::requests::{Adopt, Handed, Request, VERSION};
use crate::protocol::{Fate, NodeId, OfflineReason};

/// Sessions passed on at once by a draining node.
const PASS_ON_AT_ONCE: usize = 64;

impl Resumption {
    /// A draining node passes a detached session on: this node keeps it,
    /// detached, for what is left of its window, names itself in its
    /// presence field, and hands it to whichever node its client resumes
    /// on. Answers whether it took it.
    pub async fn adopt(self: &Arc<Self>, adopt: Adopt) -> Bytes {
        let handle = Arc::new(SessionHandle {
            id: adopt.session,
            client: adopt.client,
            device: adopt.device,
            since: adopt.since,
            outbox: Outbox::acks(self.queue),
        });
        // Unpacked before, restored after it is taken: a refused session's
        // kept messages are the draining node's to answer.
        let kept = self.unpack(&handle, adopt.next_seq, adopt.kept, adopt.owed);
        if !self.registrar.adopt(&handle).await {
            // Its client connected afresh meanwhile: nobody will resume
            // it, and the draining node answers what it kept.
            tracing::debug!(client = %handle.client, session = %handle.id,
                "not adopted: a newer session of its device is registered");
            return handed(Handed {
                v: VERSION,
                found: false,
                ..Handed::default()
            });
        }
        handle.outbox.restore(kept);
        self.move_watches(&handle, adopt.watching).await;
        self.router.metrics().session_opened();
        tracing::debug!(client = %handle.client, session = %handle.id,
            "adopted a detached session from a draining node");
        let window = Duration::from_millis(adopt.window_ms);
        self.detach(handle, window, self.drain_over.clone(), None);
        handed(Handed {
            v: VERSION,
            found: true,
            ..Handed::default()
        })
    }

    /// A draining node: passes every session still detached here on to
    /// the other live nodes in turn (see [`adopt`](Self::adopt)), many at
    /// once; what no node takes, or what is not on its way by `until`, is
    /// answered `offline` (`shutting_down`).
    pub async fn pass_on_detached(self: &Arc<Self>, until: Instant) {
        let me = self.router.node();
        let peers: Vec<NodeId> = self
            .router
            .liveness()
            .alive_nodes()
            .into_iter()
            .filter(|n| n != me)
            .collect();
        // Many at once: one at a time, a drained node of thousands of
        // sessions spent seconds here, and those still waiting at the
        // deadline were neither passed on nor answered.
        let parked = self.detached.claim_all();
        let peers = &peers;
        futures_util::stream::iter(parked.into_iter().enumerate())
            .for_each_concurrent(PASS_ON_AT_ONCE, |(i, parked)| async move {
                let (handle, left) = (parked.handle.clone(), parked.left());
                match (!peers.is_empty()).then(|| peers[i % peers.len()].clone()) {
                    Some(peer) if Instant::now() < until => {
                        self.pass_on(handle, left, peer).await;
                    }
                    _ => {
                        self.end_detached(&handle, OfflineReason::ShuttingDown)
                            .await;
                    }
                }
            })
            .await;
    }

    /// Passes `handle` (with `left` of its window) on to `peer`.
    async fn pass_on(&self, handle: Arc<SessionHandle>, left: Duration, peer: NodeId) {
        let packed = self.pack(&handle, &peer);
        let adopt = Request::Adopt(Adopt {
            v: VERSION,
            client: handle.client.clone(),
            device: handle.device.clone(),
            session: handle.id,
            since: handle.since,
            window_ms: left.as_millis() as u64,
            next_seq: packed.next_seq,
            kept: packed.kept,
            watching: self.watches.watched_by(handle.id),
            owed: packed.owed,
        });
        let handovers = packed.handovers;
        self.watches.session_ended(handle.id);
        let payload = Bytes::from(serde_json::to_vec(&adopt).expect("serializable"));
        let answer = self
            .router
            .courier()
            .request(&peer, payload, TAKEOVER_TIMEOUT)
            .await
            .map(|answer| serde_json::from_slice::<Handed>(&answer).is_ok_and(|h| h.found));
        match answer {
            Ok(true) => {
                tracing::debug!(client = %handle.client, session = %handle.id, to = %peer,
                    "detached session passed on");
                self.tell_forwarded(Forwarded::new(handle, peer, handovers))
                    .await;
            }
            Ok(false) => {
                // Refused: what was kept is answered here.
                self.router.moved().forget(&handle.client, &handle.device);
                for handover in handovers {
                    let fate = Fate::Offline(OfflineReason::ShuttingDown);
                    self.router
                        .settle(&handover, &handle.client, &handle.device, fate)
                        .await;
                }
                self.registrar.forget_field(&handle).await;
            }
            Err(e) => {
                // No answer in time: the peer may have adopted it (a busy
                // node), so neither its field nor its messages are touched
                // here. If it did not, the senders elsewhere hear `offline`
                // when this run is seen gone, and the field, naming this
                // run, is swept as a ghost.
                tracing::warn!(client = %handle.client, session = %handle.id, to = %peer,
                    error = %e, "no answer to passing a detached session on");
            }
        }
    }
}
