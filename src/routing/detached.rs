//! Detached sessions (acks mode, v2): a session whose connection ended
//! without a close from its client, or whose node is draining, is kept for
//! `--resume-window-ms`: it stays in the hub and in presence, so messages
//! keep being routed to it and wait in its (bounded) outbox, with those
//! written but not confirmed. A client that comes back with its resume
//! token claims it ([`Router::claim_detached`]); otherwise the window ends
//! and the session is finished: unreachable, and everything kept is
//! answered `offline` with the reason `resume_expired`.
//!
//! Exactly one of the two happens: both take the session out of the map
//! under its lock, and only the one that found it there acts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Router;
use crate::hub::{SessionHandle, Slot};
use crate::lock::Locked;
use crate::protocol::{ClientId, Disconnect, Fate, OfflineReason, SessionEnd};

struct Parked {
    handle: Arc<SessionHandle>,
    /// Cancelled when the session is claimed: its expiry stands down.
    claimed: CancellationToken,
    /// When its window ends.
    until: tokio::time::Instant,
    /// Its session slot, kept while detached (see `session::run`).
    _slot: Option<Slot>,
}

/// The sessions detached on this node, by session id.
#[derive(Default)]
pub struct Detached {
    parked: Mutex<HashMap<Uuid, Parked>>,
}

impl Detached {
    fn parked(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Parked>> {
        self.parked.locked()
    }

    fn len(&self) -> usize {
        self.parked().len()
    }

    fn take(&self, session: Uuid) -> Option<Parked> {
        self.parked().remove(&session)
    }
}

impl Router {
    /// Keeps `handle` for a resume for `window` (or until `give_up` is
    /// cancelled: the node's drain deadline), then finishes it.
    pub fn detach(
        self: &Arc<Self>,
        handle: Arc<SessionHandle>,
        window: Duration,
        give_up: CancellationToken,
        slot: Option<Slot>,
    ) {
        let claimed = CancellationToken::new();
        self.detached.parked().insert(
            handle.id,
            Parked {
                handle: handle.clone(),
                claimed: claimed.clone(),
                until: tokio::time::Instant::now() + window,
                _slot: slot,
            },
        );
        self.metrics.session_detached();
        tracing::debug!(client = %handle.client, device = %handle.device,
            session = %handle.id, kept = handle.outbox.kept(), "session detached");
        let router = self.clone();
        self.tasks.spawn(async move {
            let reason = tokio::select! {
                () = claimed.cancelled() => return,
                () = tokio::time::sleep(window) => OfflineReason::ResumeExpired,
                () = give_up.cancelled() => OfflineReason::ShuttingDown,
            };
            if let Some(parked) = router.detached.take(handle.id) {
                router.metrics.detach_ended();
                router.metrics.resume_expired();
                router.end_detached(&parked.handle, reason).await;
            }
        });
    }

    /// Takes back the detached session `session` of `client`, if it is
    /// here and still detached.
    pub fn claim_detached(&self, client: &ClientId, session: Uuid) -> Option<Arc<SessionHandle>> {
        let mut parked = self.detached.parked();
        if parked.get(&session)?.handle.client != *client {
            return None;
        }
        let parked = parked.remove(&session)?;
        parked.claimed.cancel();
        self.metrics.detach_ended();
        Some(parked.handle)
    }

    /// A newer session of its device replaced `handle`: if it was
    /// detached here, it ends now, and what it kept goes to the newer
    /// session (re-routed), not to the window's end.
    pub(super) async fn end_replaced_detached(self: &Arc<Self>, handle: &SessionHandle) {
        let Some(parked) = self.detached.take(handle.id) else {
            return;
        };
        parked.claimed.cancel();
        self.metrics.detach_ended();
        self.metrics.session_closed();
        self.announce_ended(handle, SessionEnd::Replaced, false);
        let rest = handle.outbox.take_all();
        self.undelivered(
            &handle.client,
            &handle.device,
            rest.messages,
            Disconnect::Replaced,
        )
        .await;
    }

    /// Claims every session detached here (a draining node passing them
    /// on), with what is left of each one's window.
    pub(super) fn claim_every_detached(&self) -> Vec<(Arc<SessionHandle>, Duration)> {
        let parked: Vec<Parked> = self.detached.parked().drain().map(|(_, p)| p).collect();
        parked
            .into_iter()
            .map(|p| {
                p.claimed.cancel();
                self.metrics.detach_ended();
                let left = p
                    .until
                    .saturating_duration_since(tokio::time::Instant::now());
                (p.handle, left)
            })
            .collect()
    }

    /// Messages kept for the sessions detached here (written and not
    /// confirmed, or not written yet).
    pub fn kept_messages(&self) -> usize {
        self.detached
            .parked()
            .values()
            .map(|p| p.handle.outbox.kept())
            .sum()
    }

    /// Sessions detached here now.
    pub fn detached_sessions(&self) -> usize {
        self.detached.len()
    }

    /// Finishes a detached session nobody took back: unreachable first,
    /// then what it kept is answered `offline` (`reason`).
    pub(super) async fn end_detached(&self, handle: &SessionHandle, reason: OfflineReason) {
        handle.outbox.close(Disconnect::Normal);
        let end = match reason {
            OfflineReason::ShuttingDown => SessionEnd::ShuttingDown,
            _ => SessionEnd::ResumeExpired,
        };
        self.unregister(handle, end).await;
        let rest = handle.outbox.take_all();
        for item in rest.messages {
            if let Some(handover) = item.handover {
                self.settle(
                    &handover,
                    &handle.client,
                    &handle.device,
                    Fate::Offline(reason),
                )
                .await;
            }
        }
        self.metrics.session_closed();
        tracing::debug!(client = %handle.client, device = %handle.device,
            session = %handle.id, ?reason, "detached session ended");
    }
}
