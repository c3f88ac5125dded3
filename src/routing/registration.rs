//! A session's device field in presence: written when it opens (after it
//! is reachable here; refused beyond `--max-devices`), compare-and-deleted
//! when it closes, and written back when the store lost it. Every change
//! is told to the other nodes, whose cached records it makes stale.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::Router;
use crate::hub::SessionHandle;
use crate::lock::Locked;
use crate::presence::{PresenceError, PresenceRecord, Registered};
use crate::protocol::{ClientId, DeviceId, Disconnect, SessionEnd};

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
pub(super) struct Deferred {
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

impl Router {
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
        self: &Arc<Self>,
        handle: &Arc<SessionHandle>,
        max_devices: usize,
    ) -> Result<usize, RegisterError> {
        let client = &handle.client;
        let _registering = self.hub.registration(client).lock().await;
        let predecessor = self.hub.insert(handle.clone());
        let record = PresenceRecord {
            device: handle.device.clone(),
            node: self.node.clone(),
            session: handle.id,
            since: handle.since,
        };
        self.cache.invalidate(client);
        let seen = self.cache.generation(client);
        let registered = self
            .ports
            .presence
            .register(client, &record, max_devices)
            .await;
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
                    .ports
                    .presence
                    .remove(client, &handle.device, &self.node, handle.id)
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
            && previous.node != self.node
        {
            self.evict(client, &previous).await;
        }
        self.metrics.devices_per_client(devices.len());
        let count = devices.len();
        // The client's own record, for carbons of its sends.
        let route = self.believe(client, devices);
        self.cache.insert(client.clone(), route, seen);
        self.courier.changed_client(client.clone());
        self.announce_online(handle);
        Ok(count)
    }

    /// Takes back a session whose registration failed: unreachable here,
    /// the device's previous session (if any) reachable again, and what
    /// was queued meanwhile re-routed to it or answered.
    async fn undo_register(
        self: &Arc<Self>,
        handle: &Arc<SessionHandle>,
        predecessor: Option<Arc<SessionHandle>>,
    ) {
        self.hub.remove(&handle.client, handle.id);
        if let Some(older) = predecessor
            && older.outbox.closing().is_none()
        {
            self.hub.insert(older);
        }
        handle.outbox.close(Disconnect::Internal);
        let rest = handle.outbox.take_all();
        self.undelivered(
            &handle.client,
            &handle.device,
            rest.messages,
            Disconnect::Replaced,
        )
        .await;
    }

    /// Makes a session that ended (`end`) unreachable: gone from here,
    /// and its field deleted if it still names it (or the delete kept for
    /// when the store is back). Its end is announced, and written as its
    /// client's last-seen when it was the client's last device.
    pub async fn unregister(&self, handle: &SessionHandle, end: SessionEnd) {
        self.hub.remove(&handle.client, handle.id);
        let removed = self
            .ports
            .presence
            .remove(&handle.client, &handle.device, &self.node, handle.id)
            .await;
        self.announce_ended(handle, end, matches!(removed, Ok(true)));
        match removed {
            Ok(true) => {
                self.cache.invalidate(&handle.client);
                self.courier.changed_client(handle.client.clone());
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
                .ports
                .presence
                .remove(&client, &device, &self.node, session)
                .await
            {
                self.deferred.defer((client, device, session));
                return Err(e);
            }
        }

        let sessions = self.hub.all();
        let entries: Vec<_> = sessions
            .iter()
            .map(|s| {
                let record = PresenceRecord {
                    device: s.device.clone(),
                    node: self.node.clone(),
                    session: s.id,
                    since: s.since,
                };
                (s.client.clone(), record)
            })
            .collect();
        let others =
            tokio::time::timeout(RESTORE_TIMEOUT, self.ports.presence.reregister(&entries))
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
}
