//! The route cache: the presence records this node last read, so that a
//! send need not read the store again.
//!
//! Reading the recipient's record for every message (as the patent
//! describes) costs a store round trip per message. Most messages go to
//! someone who was messaged a moment ago, so the router remembers each
//! client's record: every device, the node it is on, and that node's
//! liveness epoch when it was read. A cached record is used only while
//! every node it names is alive in the same run.
//!
//! With devices, a cached record can be stale in two ways. A device that
//! *moved or left* is safe by construction: the message goes to the node
//! the device was on, which forwards it once or answers `offline` (see
//! [`Router::accept_hop`](super::Router::accept_hop)), and that answer
//! removes the entry. A device that *arrived* would be missed silently,
//! so every change of a record is told to every node: the node that wrote
//! it broadcasts the client's id ([`Hop::Changed`](crate::protocol::Hop)),
//! before it welcomes the new session, and each node drops its entry. A
//! lookup that was under way while an entry was dropped does not put its
//! (possibly older) answer back: each shard counts its invalidations, and
//! an insert names the count it started from. A node whose bus connection
//! dropped may have missed broadcasts, so it forgets everything.
//!
//! What is cached: every record read, including a client's own and, for
//! group sends, records with no device at all (a send to a client never
//! trusts an empty entry: a client coming online must be reachable at
//! once, so it is looked up again). Local sessions are never taken from
//! the cache: the hub is the truth for this node.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::lock::Locked;
use crate::presence::PresenceRecord;
use crate::protocol::ClientId;

const SHARDS: usize = 64;

/// One device of a cached record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedDevice {
    pub record: PresenceRecord,
    /// Its node's liveness epoch when the record was read.
    pub epoch: u64,
}

/// A client's record as cached: every device believed when it was read.
pub type CachedRoute = Arc<[CachedDevice]>;

struct Entry {
    route: CachedRoute,
    expires: Instant,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<ClientId, Entry>,
    /// Invalidations so far; see the module comment.
    generation: u64,
}

pub struct RouteCache {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    per_shard: usize,
    ttl: Duration,
    /// The bus generation the entries were read under.
    bus_generation: AtomicU64,
}

impl RouteCache {
    /// `capacity` entries at most (0 disables the cache), each trusted for
    /// at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS),
            ttl,
            bus_generation: AtomicU64::new(0),
        }
    }

    fn shard(&self, client: &ClientId) -> std::sync::MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(client) as usize % SHARDS;
        self.shards[i].locked()
    }

    /// The count an insert of `client` must start from (take it before
    /// reading the store).
    pub fn generation(&self, client: &ClientId) -> u64 {
        self.shard(client).generation
    }

    pub fn get(&self, client: &ClientId) -> Option<CachedRoute> {
        if self.per_shard == 0 {
            return None;
        }
        let mut shard = self.shard(client);
        match shard.entries.get(client) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.route.clone()),
            Some(_) => {
                shard.entries.remove(client);
                None
            }
            None => None,
        }
    }

    /// Caches `route`, read after [`generation`](Self::generation) gave
    /// `seen`; refused (false) if the shard was invalidated since.
    pub fn insert(&self, client: ClientId, route: CachedRoute, seen: u64) -> bool {
        if self.per_shard == 0 {
            return false;
        }
        let mut shard = self.shard(&client);
        if shard.generation != seen {
            return false;
        }
        if shard.entries.len() >= self.per_shard && !shard.entries.contains_key(&client) {
            // Full: make room by dropping expired entries, or else an
            // eighth of the shard (arbitrary ones: cheap, and a dropped
            // entry only costs one lookup).
            let now = Instant::now();
            shard.entries.retain(|_, e| e.expires > now);
            if shard.entries.len() >= self.per_shard {
                let drop: Vec<ClientId> = shard
                    .entries
                    .keys()
                    .take(self.per_shard / 8 + 1)
                    .cloned()
                    .collect();
                for key in drop {
                    shard.entries.remove(&key);
                }
            }
        }
        let expires = Instant::now() + self.ttl;
        shard.entries.insert(client, Entry { route, expires });
        true
    }

    /// `client`'s record changed, or an entry proved wrong: drop it, and
    /// keep lookups already under way from putting theirs back.
    pub fn invalidate(&self, client: &ClientId) {
        let mut shard = self.shard(client);
        shard.entries.remove(client);
        shard.generation += 1;
    }

    /// Forgets everything if the bus reconnected since the entries were
    /// read (broadcasts may have been missed meanwhile).
    pub fn follow_bus(&self, generation: u64) {
        if self.bus_generation.load(Ordering::Relaxed) == generation {
            return;
        }
        self.bus_generation.store(generation, Ordering::Relaxed);
        for shard in &self.shards {
            let mut shard = shard.locked();
            shard.entries.clear();
            shard.generation += 1;
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.locked().entries.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{DeviceId, NodeId};

    fn route(node: &str) -> CachedRoute {
        Arc::new([CachedDevice {
            record: PresenceRecord {
                device: DeviceId::default_device(),
                node: NodeId::parse(node).unwrap(),
                session: uuid::Uuid::nil(),
                since: 1,
            },
            epoch: 0,
        }])
    }

    fn client(i: usize) -> ClientId {
        ClientId::parse(&format!("c{i}")).unwrap()
    }

    fn put(cache: &RouteCache, c: ClientId, r: CachedRoute) -> bool {
        let seen = cache.generation(&c);
        cache.insert(c, r, seen)
    }

    #[test]
    fn entries_are_found_replaced_and_invalidated() {
        let cache = RouteCache::new(100, Duration::from_secs(60));
        assert!(put(&cache, client(1), route("b")));
        assert_eq!(cache.get(&client(1)), Some(route("b")));
        assert!(put(&cache, client(1), route("c")));
        assert_eq!(cache.get(&client(1)), Some(route("c")));
        cache.invalidate(&client(1));
        assert_eq!(cache.get(&client(1)), None);
    }

    #[test]
    fn a_lookup_under_way_during_an_invalidation_is_not_cached() {
        let cache = RouteCache::new(100, Duration::from_secs(60));
        let seen = cache.generation(&client(1));
        // The record changes while the lookup is out...
        cache.invalidate(&client(1));
        // ...so what it read may be older than the change.
        assert!(!cache.insert(client(1), route("b"), seen));
        assert_eq!(cache.get(&client(1)), None);
        assert!(put(&cache, client(1), route("b")));
    }

    #[test]
    fn a_bus_reconnect_forgets_everything() {
        let cache = RouteCache::new(100, Duration::from_secs(60));
        cache.follow_bus(1);
        assert!(put(&cache, client(1), route("b")));
        cache.follow_bus(1);
        assert!(cache.get(&client(1)).is_some());
        let seen = cache.generation(&client(2));
        cache.follow_bus(2);
        assert_eq!(cache.get(&client(1)), None);
        assert!(!cache.insert(client(2), route("b"), seen));
    }

    #[test]
    fn entries_expire() {
        let cache = RouteCache::new(100, Duration::ZERO);
        put(&cache, client(1), route("b"));
        assert_eq!(cache.get(&client(1)), None);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = RouteCache::new(640, Duration::from_secs(60));
        for i in 0..10_000 {
            put(&cache, client(i), route("b"));
        }
        assert!(cache.len() <= 640, "{}", cache.len());
        let disabled = RouteCache::new(0, Duration::from_secs(60));
        put(&disabled, client(1), route("b"));
        assert_eq!(disabled.get(&client(1)), None);
    }
}
