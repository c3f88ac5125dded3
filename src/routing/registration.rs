//! The [`Registrar`]: a session's device field in presence, written when
//! it opens (after it is reachable here; refused beyond `--max-devices`),
//! compare-and-deleted when it closes, and written back when the store
//! lost it. Every change is told to the other nodes, whose cached records
//! it makes stale. A newer session of a device replaces the older one
//! wherever it is (4001), here or by a `replaced` hop to its node.
//!
//! Its own state is the deletes it could not make while the store was
//! away ([`Deferred`]), made once the store is back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::Router;
use super::detached::Detached;
use super::watches::Watches;
use crate::hub::SessionHandle;
use crate::lock::Locked;
use crate::presence::{PresenceError, PresenceRecord, Registered, SessionRecords};
use crate::protocol::{ClientId, DeviceId, Disconnect, Envelope, Hop, ReplacedHop, SessionEnd};

/// Most presence deletes kept for retry while the store is unreachable.
pub const MAX_DEFERRED_REMOVALS: usize = 1 << 16;
/// Longest a write-back of every session's record may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);

/// A field to delete once the store is back.
type Removal = (ClientId, DeviceId, Uuid);

/// Fields of sessions that closed while the store was unreachable, to
/// delete (compared on their session) once it is back. Bounded: past the
/// limit a field is left for lazy clean-up (a send that finds it deletes
/// it).
#[derive(Default)]
struct Deferred {
    removals: Mutex<VecDeque<Removal>>,
}

impl Deferred {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Removal>> {
        self.removals.locked()
    }

    fn defer(&self, removal: Removal) {
        let mut queue = self.queue();
        if queue.len() < MAX_DEFERRED_REMOVALS {
            queue.push_back(removal);
        }
    }

    fn next(&self) -> Option<Removal> {
        self.queue().pop_front()
    }
}

/// Why a session could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The client already has the most devices allowed, and this session's
    /// device is not one of them.
    #[error(
        "{client} already has {max} devices online ({}); close one of them, or reconnect one of them with its device id",
        list(.devices)
    )]
    TooManyDevices {
        client: ClientId,
        max: usize,
        devices: Vec<DeviceId>,
    },
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

fn list(devices: &[DeviceId]) -> String {
    devices
        .iter()
        .map(DeviceId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a write-back of every live session's record did.
#[derive(Debug, Clone, Copy)]
pub struct Restored {
    pub sessions: usize,
    /// Sessions closed because a newer session of their client had
    /// registered elsewhere meanwhile.
    pub replaced: usize,
    pub took: Duration,
}

/// Makes sessions reachable and unreachable: the hub and the session
/// records, kept in step.
pub struct Registrar {
    router: Arc<Router>,
    records: Arc<dyn SessionRecords>,
    /// The detached sessions (a replaced one ends at once).
    detached: Arc<Detached>,
    /// Watchers of a client hear of its sessions coming and going (v3).
    watches: Arc<Watches>,
    deferred: Deferred,
}

impl Registrar {
    pub fn new(
        router: Arc<Router>,
        records: Arc<dyn SessionRecords>,
        detached: Arc<Detached>,
        watches: Arc<Watches>,
    ) -> Self {
        Self {
            router,
            records,
            detached,
            watches,
            deferred: Deferred::default(),
        }
    }

    /// Makes a session reachable: registered here, then its device field
    /// in presence, at most `max_devices` per client. The local entry
    /// comes first so that once the field names this node, the session is
    /// already here to receive. An older session of the same device, on
    /// whichever node, is closed with 4001. Returns the client's devices.
    ///
    /// When it fails, the session is unreachable again, and anything
    /// queued for it meanwhile has gone to the device's previous session
    /// or been answered.
    pub async fn register(
        &self,
        handle: &Arc<SessionHandle>,
        max_devices: usize,
    ) -> Result<usize, RegisterError> {
        let (router, client) = (&self.router, &handle.client);
        let (hub, cache) = (router.hub(), router.locator().cache());
        let _registering = hub.registration(client).lock().await;
        let predecessor = hub.insert(handle.clone());
        let record = self.field_of(handle);
        cache.invalidate(client);
        let seen = cache.generation(client);
        let registered = self.records.register(client, &record, max_devices).await;
        let (replaced, devices) = match registered {
            Ok(Registered::Done { replaced, devices }) => (replaced, devices),
            Ok(Registered::TooManyDevices { devices }) => {
                self.undo_register(handle, predecessor).await;
                return Err(RegisterError::TooManyDevices {
                    client: client.clone(),
                    max: max_devices,
                    devices: devices.into_iter().map(|d| d.device).collect(),
                });
            }
            Err(e) => {
                self.undo_register(handle, predecessor).await;
                // The write may have landed before the error: delete it,
                // compared on this session, so it cannot linger.
                let _ = self
                    .records
                    .remove(client, &handle.device, router.node(), handle.id)
                    .await;
                return Err(e.into());
            }
        };
        if let Some(older) = predecessor {
            older.outbox.close(Disconnect::Replaced);
            self.end_replaced_detached(&older).await;
        }
        if let Some(previous) = replaced
            && previous.session != handle.id
            && previous.node != *router.node()
        {
            self.evict(client, &previous).await;
        }
        router.metrics().devices_per_client(devices.len());
        let count = devices.len();
        // The client's own record, for carbons of its sends.
        let route = router.locator().believe(client, devices);
        cache.insert(client.clone(), route, seen);
        router.courier().changed_client(client.clone());
        router.offline().session_opened(handle);
        self.watches.changed(client.clone());
        Ok(count)
    }

    /// Takes back a session whose registration failed: unreachable here,
    /// the device's previous session (if any) reachable again, and what
    /// was queued meanwhile re-routed to it or answered.
    async fn undo_register(
        &self,
        handle: &Arc<SessionHandle>,
        predecessor: Option<Arc<SessionHandle>>,
    ) {
        let hub = self.router.hub();
        hub.remove(&handle.client, handle.id);
        if let Some(older) = predecessor
            && older.outbox.closing().is_none()
        {
            hub.insert(older);
        }
        handle.outbox.close(Disconnect::Internal);
        self.router.reroute_queued(handle).await;
    }

    /// Makes a session that ended (`end`) unreachable: gone from here,
    /// and its field deleted if it still names it (or the delete kept for
    /// when the store is back). Its end is announced, and written as its
    /// client's last-seen when it was the client's last device.
    pub async fn unregister(&self, handle: &SessionHandle, end: SessionEnd) {
        let router = &self.router;
        router.hub().remove(&handle.client, handle.id);
        let removed = self
            .records
            .remove(&handle.client, &handle.device, router.node(), handle.id)
            .await;
        let last_here = router.hub().sessions(&handle.client).is_none();
        let last_seen_follows =
            router
                .offline()
                .session_ended(handle, end, matches!(removed, Ok(true)), last_here);
        self.watches.session_ended(handle.id);
        match removed {
            Ok(true) => {
                router.locator().cache().invalidate(&handle.client);
                router.courier().changed_client(handle.client.clone());
                // A client that may have gone offline is shown to its
                // watchers once its last-seen is written (milliseconds
                // later), so that its `offline` frame carries it.
                if !last_seen_follows {
                    self.watches.changed(handle.client.clone());
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(client = %handle.client, error = %e,
                    "presence field of a closed session not deleted yet; will retry");
                self.deferred
                    .defer((handle.client.clone(), handle.device.clone(), handle.id));
            }
        }
    }

    /// Brings the store back in line with this node: deferred deletes
    /// first, then every live session's field, never overwriting a newer
    /// session's (that session wins, and the one here closes with 4001).
    pub async fn restore(&self) -> Result<Restored, PresenceError> {
        let started = Instant::now();
        while let Some((client, device, session)) = self.deferred.next() {
            if let Err(e) = self
                .records
                .remove(&client, &device, self.router.node(), session)
                .await
            {
                self.deferred.defer((client, device, session));
                return Err(e);
            }
        }

        let sessions = self.router.hub().all();
        let entries: Vec<_> = sessions
            .iter()
            .map(|s| (s.client.clone(), self.field_of(s)))
            .collect();
        let others = tokio::time::timeout(RESTORE_TIMEOUT, self.records.reregister(&entries))
            .await
            .unwrap_or_else(|_| Err(PresenceError::unavailable("re-registration timed out")))?;
        let mut replaced = 0;
        for (session, other) in sessions.iter().zip(others) {
            // A newer session of the device registered elsewhere meanwhile.
            if other.is_some_and(|o| o.session != session.id) {
                session.outbox.close(Disconnect::Replaced);
                replaced += 1;
            }
        }
        Ok(Restored {
            sessions: entries.len(),
            replaced,
            took: started.elapsed(),
        })
    }

    /// A newer session of a device registered; `previous` is the field it
    /// replaced. Closes the older session with 4001, on whichever node.
    async fn evict(&self, client: &ClientId, previous: &PresenceRecord) {
        if previous.node == *self.router.node() {
            if let Some(old) = self.router.hub().get_session(client, previous.session) {
                old.outbox.close(Disconnect::Replaced);
            }
            return;
        }
        let hop = Envelope::new(Hop::Replaced(ReplacedHop {
            client: client.clone(),
            device: previous.device.clone(),
            session: previous.session,
        }));
        if let Err(e) = self
            .router
            .courier()
            .publish(&previous.node, hop.encode().into(), None)
            .await
        {
            tracing::warn!(%client, node = %previous.node, error = %e,
                "could not tell the node of a replaced session to close it");
        }
    }

    /// Another node registered a newer session of `hop.client`'s device.
    pub async fn accept_replaced(&self, hop: ReplacedHop) {
        let hub = self.router.hub();
        if let Some(old) = hub.get_session(&hop.client, hop.session) {
            old.outbox.close(Disconnect::Replaced);
            hub.remove(&hop.client, hop.session);
            self.end_replaced_detached(&old).await;
        }
    }

    /// A newer session of its device replaced `handle`: if it was
    /// detached here, it ends now, and what it kept goes to the newer
    /// session (re-routed), not to the window's end.
    async fn end_replaced_detached(&self, handle: &SessionHandle) {
        if self.detached.take(handle.id).is_none() {
            return;
        }
        let router = &self.router;
        router.metrics().session_closed();
        let last_here = router.hub().sessions(&handle.client).is_none();
        // No field deleted: no last-seen write follows.
        router
            .offline()
            .session_ended(handle, SessionEnd::Replaced, false, last_here);
        self.watches.session_ended(handle.id);
        router.reroute_queued(handle).await;
    }

    /// Writes the field of a session that moved here (a resume taken over
    /// from another node, a detached session adopted from a draining one):
    /// the same session id, so nothing is evicted; every node is told.
    pub async fn write_moved(&self, handle: &SessionHandle, max_devices: usize) {
        let record = self.field_of(handle);
        match self
            .records
            .register(&handle.client, &record, max_devices)
            .await
        {
            Ok(Registered::Done { .. }) => {}
            Ok(Registered::TooManyDevices { .. }) => {
                // Cannot happen for a device already in the record; the
                // periodic refresh writes it back all the same.
                tracing::warn!(client = %handle.client, "moved session's field not written");
            }
            Err(e) => {
                tracing::warn!(client = %handle.client, error = %e,
                    "moved session's field not written yet; the refresh will");
            }
        }
        self.router.locator().cache().invalidate(&handle.client);
        self.router.courier().changed_client(handle.client.clone());
    }

    /// Makes a detached session adopted from a draining node reachable
    /// here, unless its device has moved on: a newer session of the
    /// device here, or a field naming another session (its client gave up
    /// resuming and connected afresh, somewhere). Answers whether it took
    /// it; when not, nothing here changed and the draining node answers
    /// what the session kept. Put what it kept back in its outbox only
    /// once it is taken: whatever else is in the outbox of a session
    /// refused is routed again.
    ///
    /// Written unconditionally, a late adoption would overwrite the newer
    /// session's field, and that session would be closed with 4001 by the
    /// next refresh (or at once, on this node) in favour of one nobody
    /// will resume.
    pub async fn adopt(&self, handle: &Arc<SessionHandle>) -> bool {
        let (router, client) = (&self.router, &handle.client);
        let hub = router.hub();
        // Under the lock a connect here takes around "register here, then
        // in presence": no session of this client opens here meanwhile.
        let _registering = hub.registration(client).lock().await;
        // Another live session of the device here is newer (an older one
        // would have been closed when this one registered); a handle of
        // this same session is a resume asking its holder for it, and is
        // replaced below.
        if hub
            .get_device(client, &handle.device)
            .is_some_and(|here| here.id != handle.id && here.outbox.closing().is_none())
        {
            return false;
        }
        // In the hub before the field names this node, as for a connect.
        let predecessor = hub.insert(handle.clone());
        let record = self.field_of(handle);
        match self
            .records
            .reregister(&[(client.clone(), record)])
            .await
            .map(|mut others| others.pop().flatten())
        {
            Ok(Some(other)) if other.session != handle.id => {
                hub.remove_exact(handle);
                if let Some(older) = predecessor
                    && older.outbox.closing().is_none()
                {
                    hub.insert(older);
                }
                // A send on this node may have found it in the hub
                // meanwhile: routed again, not dropped with it.
                handle.outbox.close(Disconnect::Internal);
                router.reroute_queued(handle).await;
                return false;
            }
            Ok(_) => {}
            Err(e) => {
                // Taken all the same: the periodic refresh writes the
                // field back the same way, and closes this session then
                // if a newer one of the device won meanwhile.
                tracing::warn!(client = %client, error = %e,
                    "adopted session's field not written yet; the refresh will");
            }
        }
        if let Some(older) = predecessor {
            older.outbox.close(Disconnect::Replaced);
            self.end_replaced_detached(&older).await;
        }
        router.locator().cache().invalidate(client);
        router.courier().changed_client(client.clone());
        true
    }

    /// Deletes `handle`'s field if it still names it (a session passed on
    /// that no node took).
    pub async fn forget_field(&self, handle: &SessionHandle) {
        let node = self.router.node();
        let _ = self
            .records
            .remove(&handle.client, &handle.device, node, handle.id)
            .await;
    }

    /// The device field of a session on this node.
    fn field_of(&self, handle: &SessionHandle) -> PresenceRecord {
        PresenceRecord {
            device: handle.device.clone(),
            node: self.router.node().clone(),
            session: handle.id,
            since: handle.since,
        }
    }
}
