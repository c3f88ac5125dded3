//! The sessions open on this node, by client id.
//!
//! A client may have one session per device (v2), so each client id maps
//! to the handles of its sessions here, at most one per device. The list
//! is shared copy-on-write: a send takes it with one reference count, and
//! only connects and disconnects copy it. Removal compares the session
//! id: a session that was replaced must not remove its successor on the
//! way out.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::SessionHandle;
use crate::lock::Locked;
use crate::protocol::{ClientId, DeviceId};

/// Number of registration locks; see [`Hub::registration`].
const REGISTRATION_STRIPES: usize = 256;

/// One client's sessions on this node, one per device.
pub type Sessions = Arc<[Arc<SessionHandle>]>;

#[derive(Default)]
struct Map {
    by_client: HashMap<ClientId, Sessions>,
    /// Sessions in all lists.
    sessions: usize,
}

/// The sessions open on this node.
pub struct Hub {
    map: Mutex<Map>,
    registration: Box<[tokio::sync::Mutex<()>]>,
    stripe_hasher: RandomState,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
            registration: (0..REGISTRATION_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            stripe_hasher: RandomState::new(),
        }
    }
}

impl Hub {
    /// The lock two sessions of one client opening on this node at once
    /// must take around "register here, then register in presence".
    /// Without it, the later session of a device could be written to
    /// presence first and then be overwritten by the earlier one, which is
    /// closing: the device would be connected but unreachable. Locks are
    /// striped so that their number does not grow with the number of
    /// clients.
    pub fn registration(&self, client: &ClientId) -> &tokio::sync::Mutex<()> {
        let stripe = self.stripe_hasher.hash_one(client) as usize % REGISTRATION_STRIPES;
        &self.registration[stripe]
    }

    fn map(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.locked()
    }

    /// Adds a session and returns the one of the same device it replaces,
    /// if any.
    pub fn insert(&self, handle: Arc<SessionHandle>) -> Option<Arc<SessionHandle>> {
        let mut map = self.map();
        let list = map
            .by_client
            .get(&handle.client)
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let (same, mut others): (Vec<_>, Vec<_>) =
            list.into_iter().partition(|s| s.device == handle.device);
        let replaced = same.into_iter().next();
        others.push(handle.clone());
        map.by_client.insert(handle.client.clone(), others.into());
        if replaced.is_none() {
            map.sessions += 1;
        }
        replaced
    }

    /// Every session of `client` here.
    pub fn sessions(&self, client: &ClientId) -> Option<Sessions> {
        self.map().by_client.get(client).cloned()
    }

    /// The session of `client` here, but only if it is `session`.
    pub fn get_session(&self, client: &ClientId, session: Uuid) -> Option<Arc<SessionHandle>> {
        let map = self.map();
        map.by_client
            .get(client)?
            .iter()
            .find(|h| h.id == session)
            .cloned()
    }

    /// The session of `client`'s `device` here, whichever it is.
    pub fn get_device(&self, client: &ClientId, device: &DeviceId) -> Option<Arc<SessionHandle>> {
        let map = self.map();
        map.by_client
            .get(client)?
            .iter()
            .find(|h| h.device == *device)
            .cloned()
    }

    /// Removes `client`'s `session` if it is still here.
    pub fn remove(&self, client: &ClientId, session: Uuid) -> bool {
        self.remove_where(client, |h| h.id == session)
    }

    /// Removes exactly `handle`, not another handle of the same session
    /// (the same session adopted here meanwhile, say); answers whether it
    /// was here.
    pub fn remove_exact(&self, handle: &Arc<SessionHandle>) -> bool {
        self.remove_where(&handle.client, |h| Arc::ptr_eq(h, handle))
    }

    /// Removes the one session of `client` that `this` picks, if any.
    fn remove_where(&self, client: &ClientId, this: impl Fn(&Arc<SessionHandle>) -> bool) -> bool {
        let mut map = self.map();
        let Some(list) = map.by_client.get(client) else {
            return false;
        };
        if !list.iter().any(&this) {
            return false;
        }
        let rest: Vec<_> = list.iter().filter(|h| !this(h)).cloned().collect();
        if rest.is_empty() {
            map.by_client.remove(client);
        } else {
            map.by_client.insert(client.clone(), rest.into());
        }
        map.sessions -= 1;
        true
    }

    /// Sessions open here.
    pub fn len(&self) -> usize {
        self.map().sessions
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Clients with at least one session here.
    pub fn clients(&self) -> usize {
        self.map().by_client.len()
    }

    pub fn all(&self) -> Vec<Arc<SessionHandle>> {
        self.map()
            .by_client
            .values()
            .flat_map(|s| s.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Outbox, QueueLimits};

    fn handle(client: &str, device: &str) -> Arc<SessionHandle> {
        Arc::new(SessionHandle {
            id: Uuid::new_v4(),
            client: ClientId::parse(client).unwrap(),
            device: DeviceId::parse(device).unwrap(),
            since: 0,
            outbox: Outbox::new(QueueLimits {
                frames: 4,
                bytes: 1024,
            }),
        })
    }

    #[test]
    fn a_replaced_session_cannot_remove_its_successor() {
        let hub = Hub::default();
        let (old, new) = (handle("alice", "phone"), handle("alice", "phone"));
        assert!(hub.insert(old.clone()).is_none());
        assert_eq!(hub.insert(new.clone()).unwrap().id, old.id);
        assert!(!hub.remove(&old.client, old.id));
        assert_eq!(hub.get_device(&old.client, &old.device).unwrap().id, new.id);
        assert!(hub.remove(&new.client, new.id));
        assert!(hub.is_empty());
    }

    #[test]
    fn devices_of_one_client_coexist() {
        let hub = Hub::default();
        let (phone, laptop) = (handle("alice", "phone"), handle("alice", "laptop"));
        assert!(hub.insert(phone.clone()).is_none());
        assert!(hub.insert(laptop.clone()).is_none());
        assert_eq!((hub.len(), hub.clients()), (2, 1));
        assert_eq!(hub.sessions(&phone.client).unwrap().len(), 2);
        assert_eq!(
            hub.get_session(&phone.client, laptop.id).unwrap().device,
            laptop.device
        );
        assert!(hub.remove(&phone.client, phone.id));
        assert_eq!(hub.sessions(&phone.client).unwrap().len(), 1);
        assert!(hub.get_session(&phone.client, phone.id).is_none());
        assert_eq!(hub.len(), 1);
    }
}
