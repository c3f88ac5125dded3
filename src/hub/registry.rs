//! The sessions open on this node, by client id.
//!
//! The protocol allows one session per client, so the map holds at most
//! one handle per client id. Removal compares the session id: a session
//! that was replaced must not remove its successor on the way out.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::SessionHandle;
use crate::protocol::ClientId;

/// Number of registration locks; see [`Hub::registration`].
const REGISTRATION_STRIPES: usize = 256;

/// The sessions open on this node.
pub struct Hub {
    sessions: Mutex<HashMap<ClientId, Arc<SessionHandle>>>,
    registration: Box<[tokio::sync::Mutex<()>]>,
    stripe_hasher: RandomState,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            sessions: Mutex::default(),
            registration: (0..REGISTRATION_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            stripe_hasher: RandomState::new(),
        }
    }
}

impl Hub {
    /// The lock two sessions of one client opening on this node at once
    /// must take around "register here, then register in presence". Without
    /// it, the later local session could be written to presence first and
    /// then be overwritten by the earlier one, which is closing: the client
    /// would be connected but unreachable. Locks are striped so that their
    /// number does not grow with the number of clients.
    pub fn registration(&self, client: &ClientId) -> &tokio::sync::Mutex<()> {
        let stripe = self.stripe_hasher.hash_one(client) as usize % REGISTRATION_STRIPES;
        &self.registration[stripe]
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Arc<SessionHandle>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session and returns the one it replaces, if any.
    pub fn insert(&self, handle: Arc<SessionHandle>) -> Option<Arc<SessionHandle>> {
        self.map().insert(handle.client.clone(), handle)
    }

    pub fn get(&self, client: &ClientId) -> Option<Arc<SessionHandle>> {
        self.map().get(client).cloned()
    }

    /// The session of `client`, but only if it is `session`.
    pub fn get_session(&self, client: &ClientId, session: Uuid) -> Option<Arc<SessionHandle>> {
        self.get(client).filter(|h| h.id == session)
    }

    /// Removes `client`'s entry if it is still `session`.
    pub fn remove(&self, client: &ClientId, session: Uuid) -> bool {
        let mut map = self.map();
        if map.get(client).is_some_and(|h| h.id == session) {
            map.remove(client);
            true
        } else {
            false
        }
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<SessionHandle>> {
        self.map().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Outbox, QueueLimits};

    fn handle(client: &str) -> Arc<SessionHandle> {
        Arc::new(SessionHandle {
            id: Uuid::new_v4(),
            client: ClientId::parse(client).unwrap(),
            since: 0,
            outbox: Outbox::new(QueueLimits {
                frames: 4,
                bytes: 1024,
            }),
        })
    }

    #[test]
    fn a_replaced_session_cannot_remove_its_successor() {
        let registry = Hub::default();
        let (old, new) = (handle("alice"), handle("alice"));
        assert!(registry.insert(old.clone()).is_none());
        assert_eq!(registry.insert(new.clone()).unwrap().id, old.id);
        assert!(!registry.remove(&old.client, old.id));
        assert_eq!(registry.get(&old.client).unwrap().id, new.id);
        assert!(registry.remove(&new.client, new.id));
        assert!(registry.is_empty());
    }
}
