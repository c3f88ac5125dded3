//! Resume in acks mode (v2): the [`Resumption`] service.
//!
//! A session whose connection was lost (or whose node is draining) is
//! detached ([`Resumption::detach`]): kept in the lot
//! ([`Detached`](super::detached::Detached)) for `--resume-window-ms`, in
//! the hub and in presence, collecting what comes for it. Then exactly one
//! of these happens:
//!
//! - its client resumes it here ([`Resumption::claim`]);
//! - its client resumes it on another node, which takes it over
//!   ([`takeover`]: the session and everything kept for it move there);
//! - its node drains and passes it on to another node ([`pass_on`]);
//! - its window ends, or a draining node gives up on it: it ends, and
//!   what it kept is answered `offline` ([`Resumption::end_detached`]).

mod pass_on;
mod takeover;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Router;
use super::detached::Detached;
use super::registration::Registrar;
use super::watches::Watches;
use crate::hub::{QueueLimits, SessionHandle, Slot};
use crate::protocol::{ClientId, Disconnect, Fate, OfflineReason, SessionEnd};

pub use self::takeover::{Forwarded, TAKEOVER_TIMEOUT, TakeOverError, not_found};

pub struct Resumption {
    router: Arc<Router>,
    registrar: Arc<Registrar>,
    detached: Arc<Detached>,
    /// A session's watches move with it (v3).
    watches: Arc<Watches>,
    /// Cancelled when a draining node stops keeping detached sessions.
    drain_over: CancellationToken,
    /// The bounds of an adopted session's queue.
    queue: QueueLimits,
    /// Hand-over answers given lately, for a repeated request.
    handed: takeover::RecentlyHanded,
}

impl Resumption {
    pub fn new(
        router: Arc<Router>,
        registrar: Arc<Registrar>,
        detached: Arc<Detached>,
        watches: Arc<Watches>,
        queue: QueueLimits,
    ) -> Self {
        Self {
            router,
            registrar,
            detached,
            watches,
            drain_over: CancellationToken::new(),
            queue,
            handed: takeover::RecentlyHanded::default(),
        }
    }

    /// Cancelled when this node, draining, gives up keeping detached
    /// sessions.
    pub fn drain_over(&self) -> &CancellationToken {
        &self.drain_over
    }

    /// Keeps `handle` for a resume for `window` (or until `give_up` is
    /// cancelled: the node's drain deadline), then finishes it.
    pub fn detach(
        self: &Arc<Self>,
        handle: Arc<SessionHandle>,
        window: Duration,
        give_up: CancellationToken,
        slot: Option<Slot>,
    ) {
        tracing::debug!(client = %handle.client, device = %handle.device,
            session = %handle.id, kept = handle.outbox.kept(), "session detached");
        let claimed = self.detached.park(handle.clone(), window, slot);
        let resumption = self.clone();
        self.router.background().spawn(async move {
            let reason = tokio::select! {
                () = claimed.cancelled() => return,
                () = tokio::time::sleep(window) => OfflineReason::ResumeExpired,
                () = give_up.cancelled() => OfflineReason::ShuttingDown,
            };
            if let Some(parked) = resumption.detached.take(handle.id) {
                resumption.router.metrics().resume_expired();
                resumption.end_detached(&parked.handle, reason).await;
            }
        });
    }

    /// Takes back the detached session `session` of `client`, if it is
    /// here and still detached.
    pub fn claim(&self, client: &ClientId, session: uuid::Uuid) -> Option<Arc<SessionHandle>> {
        self.detached.claim(client, session)
    }

    /// A session taken back (here, or from another node): it gets the
    /// current state of every client it watches, which no frame kept while
    /// it was away.
    pub async fn rewatch(&self, handle: &Arc<SessionHandle>) {
        self.watches.resend(handle).await;
    }

    /// Watches moved here with a session (taken over or adopted): held
    /// here from now on, if still allowed, their current state queued.
    async fn move_watches(&self, handle: &Arc<SessionHandle>, watching: Vec<ClientId>) {
        if watching.is_empty() {
            return;
        }
        match self.watches.watch(handle, watching).await {
            Ok(answer) => {
                for (client, frame) in answer.clients.iter().zip(answer.frames) {
                    handle.outbox.put_presence(client, frame.into());
                }
            }
            Err(e) => tracing::warn!(client = %handle.client, error = %crate::cause::chain(&e),
                "watches of a moved session not taken over; its client watches again"),
        }
    }

    /// Messages kept for the sessions detached here.
    pub fn kept_messages(&self) -> usize {
        self.detached.kept_messages()
    }

    /// Sessions detached here now.
    pub fn detached_sessions(&self) -> usize {
        self.detached.len()
    }

    /// A draining node waits, until `until` at the latest, for its
    /// detached sessions to be resumed (here or elsewhere). Answers whether
    /// none is left.
    pub async fn resumed_by(&self, until: Instant) -> bool {
        tokio::time::timeout_at(until, self.detached.emptied())
            .await
            .is_ok()
    }

    /// Finishes a detached session nobody took back: unreachable first,
    /// then what it kept is answered `offline` (`reason`).
    async fn end_detached(&self, handle: &SessionHandle, reason: OfflineReason) {
        handle.outbox.close(Disconnect::Normal);
        let end = match reason {
            OfflineReason::ShuttingDown => SessionEnd::ShuttingDown,
            _ => SessionEnd::ResumeExpired,
        };
        self.registrar.unregister(handle, end).await;
        let rest = handle.outbox.take_all();
        for item in rest.messages {
            if let Some(handover) = item.handover {
                let fate = Fate::Offline(reason);
                self.router
                    .settle(&handover, &handle.client, &handle.device, fate)
                    .await;
            }
        }
        self.router.metrics().session_closed();
        tracing::debug!(client = %handle.client, device = %handle.device,
            session = %handle.id, ?reason, "detached session ended");
    }
}
