//! Detached sessions (acks mode, v2): a session whose connection ended
//! without a close from its client, or whose node is draining, is kept for
//! `--resume-window-ms`: it stays in the hub and in presence, so messages
//! keep being routed to it and wait in its (bounded) outbox, with those
//! written but not confirmed.
//!
//! This is only the parking lot; what happens to a parked session (its
//! expiry, a resume here or elsewhere, a pass-on) is the
//! [`Resumption`](super::Resumption) service's. Exactly one taker gets a
//! parked session: every way out removes it from the map under its lock,
//! and only the one that found it there acts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::hub::{SessionHandle, Slot};
use crate::lock::Locked;
use crate::metrics::Metrics;
use crate::protocol::ClientId;

/// A session in the lot.
pub struct Parked {
    pub handle: Arc<SessionHandle>,
    /// Cancelled when the session leaves the lot any other way than by
    /// its window ending: its expiry stands down.
    claimed: CancellationToken,
    /// When its window ends.
    until: Instant,
    /// Its session slot, kept while detached (see `session::run`).
    _slot: Option<Slot>,
}

impl Parked {
    /// What is left of its window.
    pub fn left(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }
}

/// The sessions detached on this node, by session id.
pub struct Detached {
    parked: Mutex<HashMap<Uuid, Parked>>,
    /// Woken whenever the lot becomes empty (a draining node waits on it).
    emptied: Notify,
    metrics: Arc<Metrics>,
}

impl Detached {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            parked: Mutex::default(),
            emptied: Notify::new(),
            metrics,
        }
    }

    /// Parks `handle` for `window`; returns the token cancelled when it is
    /// taken out by anything but its expiry.
    pub fn park(
        &self,
        handle: Arc<SessionHandle>,
        window: Duration,
        slot: Option<Slot>,
    ) -> CancellationToken {
        let claimed = CancellationToken::new();
        self.metrics.session_detached();
        self.parked.locked().insert(
            handle.id,
            Parked {
                handle,
                claimed: claimed.clone(),
                until: Instant::now() + window,
                _slot: slot,
            },
        );
        claimed
    }

    /// Takes `session` out, if it is parked (its window ended, or a newer
    /// session of its device replaced it).
    pub fn take(&self, session: Uuid) -> Option<Parked> {
        let parked = self.parked.locked().remove(&session);
        self.left_the_lot(parked.as_slice());
        parked
    }

    /// Takes back the detached session `session` of `client`, if it is
    /// here (a resume).
    pub fn claim(&self, client: &ClientId, session: Uuid) -> Option<Arc<SessionHandle>> {
        let parked = {
            let mut lot = self.parked.locked();
            if lot.get(&session)?.handle.client != *client {
                return None;
            }
            lot.remove(&session)
        };
        self.left_the_lot(parked.as_slice());
        parked.map(|p| p.handle)
    }

    /// Takes every parked session out (a draining node passing them on).
    pub fn claim_all(&self) -> Vec<Parked> {
        let all: Vec<Parked> = self.parked.locked().drain().map(|(_, p)| p).collect();
        self.left_the_lot(&all);
        all
    }

    fn left_the_lot(&self, gone: &[Parked]) {
        for parked in gone {
            parked.claimed.cancel();
            self.metrics.detach_ended();
        }
        if !gone.is_empty() && self.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Sessions detached here now.
    pub fn len(&self) -> usize {
        self.parked.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages kept for the sessions detached here (written and not
    /// confirmed, or not written yet).
    pub fn kept_messages(&self) -> usize {
        self.parked
            .locked()
            .values()
            .map(|p| p.handle.outbox.kept())
            .sum()
    }

    /// Returns once no session is detached here.
    pub async fn emptied(&self) {
        loop {
            let woken = self.emptied.notified();
            tokio::pin!(woken);
            // Registered before the check, so that an emptying between the
            // check and the wait is not missed.
            woken.as_mut().enable();
            if self.is_empty() {
                return;
            }
            woken.await;
        }
    }
}
