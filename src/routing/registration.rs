//! A session's presence record: written when it opens (after it is
//! reachable here), compare-and-deleted when it closes, and written back
//! when the store lost it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::Router;
use crate::hub::SessionHandle;
use crate::presence::{PresenceError, PresenceRecord};
use crate::protocol::{ClientId, Disconnect};

/// Most presence deletes kept for retry while the store is unreachable.
pub const MAX_DEFERRED_REMOVALS: usize = 1 << 16;
/// Longest a write-back of every session's record may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);

/// Records of sessions that closed while the store was unreachable, to
/// delete (compared on their session) once it is back. Bounded: past the
/// limit a record is left for lazy clean-up (a send that finds it deletes
/// it).
#[derive(Default)]
pub(super) struct Deferred {
    removals: Mutex<VecDeque<(ClientId, Uuid)>>,
}

impl Deferred {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<(ClientId, Uuid)>> {
        self.removals.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn defer(&self, client: ClientId, session: Uuid) {
        let mut queue = self.queue();
        if queue.len() < MAX_DEFERRED_REMOVALS {
            queue.push_back((client, session));
        }
    }

    fn next(&self) -> Option<(ClientId, Uuid)> {
        self.queue().pop_front()
    }
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
    /// Makes a session reachable: registered here, then in presence. The
    /// local entry comes first so that once the record names this node,
    /// the session is already here to receive. An older session of the
    /// client, on whichever node, is closed with 4001.
    pub async fn register(&self, handle: &Arc<SessionHandle>) -> Result<(), PresenceError> {
        let _registering = self.hub.registration(&handle.client).lock().await;
        if let Some(older) = self.hub.insert(handle.clone()) {
            older.outbox.close(Disconnect::Replaced);
        }
        let record = PresenceRecord {
            node: self.node.clone(),
            session: handle.id,
            since: handle.since,
        };
        if let Some(previous) = self
            .ports
            .presence
            .register(&handle.client, &record)
            .await?
            && previous.session != handle.id
        {
            self.evict(&handle.client, &previous).await;
        }
        Ok(())
    }

    /// Makes a closing session unreachable: gone from here, and its record
    /// deleted if it still names it (or the delete kept for when the store
    /// is back).
    pub async fn unregister(&self, handle: &SessionHandle) {
        self.hub.remove(&handle.client, handle.id);
        if let Err(e) = self
            .ports
            .presence
            .remove(&handle.client, &self.node, handle.id)
            .await
        {
            tracing::debug!(client = %handle.client, error = %e,
                "presence record of a closed session not deleted yet; will retry");
            self.deferred.defer(handle.client.clone(), handle.id);
        }
    }

    /// Brings the store back in line with this node: deferred deletes
    /// first, then every live session's record, never overwriting a newer
    /// session's (that session wins, and the one here closes with 4001).
    pub async fn restore(&self) -> Result<Restored, PresenceError> {
        let started = Instant::now();
        while let Some((client, session)) = self.deferred.next() {
            if let Err(e) = self
                .ports
                .presence
                .remove(&client, &self.node, session)
                .await
            {
                self.deferred.defer(client, session);
                return Err(e);
            }
        }

        let sessions = self.hub.all();
        let entries: Vec<_> = sessions
            .iter()
            .map(|s| {
                let record = PresenceRecord {
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
            // A newer session of the client registered elsewhere meanwhile.
            if other.is_some() {
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
