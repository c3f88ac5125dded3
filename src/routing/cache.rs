//! The route cache: where this node last found a remote recipient.
//!
//! Looking both parties up in the presence store for every message (as the
//! patent describes) costs a store round trip per message. Most messages
//! go to someone who was messaged a moment ago and has not moved, so the
//! router remembers `client -> node` for recipients on other nodes.
//!
//! A cached route may be stale (the recipient moved or left), and that is
//! safe by construction: the message goes to the node the recipient was
//! on, which re-routes it once or answers `offline` (see
//! [`Router::accept_hop`](super::Router::accept_hop)), and that answer
//! corrects the cache — a forward replaces the entry, an `offline` outcome
//! or a bounce removes it. Entries of nodes that die or restart are
//! dropped by the liveness check on every hit. Nothing is ever pushed to
//! other nodes to keep caches fresh, so the upkeep does not grow with
//! cluster size times churn; it is paid only by the next message to a
//! client that moved.
//!
//! Only remote routes are cached. Local recipients are found in the
//! session registry without any lookup, and "no record" is never cached
//! (a client coming online must be reachable at once).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::{ClientId, NodeId};

const SHARDS: usize = 16;

/// A remote recipient's last known node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRoute {
    pub node: NodeId,
    /// The record's `since`, for the liveness check.
    pub since: u64,
    /// The node's liveness epoch when the record was read.
    pub epoch: u64,
}

struct Entry {
    route: CachedRoute,
    expires: Instant,
}

pub struct RouteCache {
    shards: Vec<Mutex<HashMap<ClientId, Entry>>>,
    hasher: RandomState,
    per_shard: usize,
    ttl: Duration,
}

impl RouteCache {
    /// `capacity` entries at most (0 disables the cache), each trusted for
    /// at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS),
            ttl,
        }
    }

    fn shard(&self, client: &ClientId) -> std::sync::MutexGuard<'_, HashMap<ClientId, Entry>> {
        let i = self.hasher.hash_one(client) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, client: &ClientId) -> Option<CachedRoute> {
        if self.per_shard == 0 {
            return None;
        }
        let mut shard = self.shard(client);
        match shard.get(client) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.route.clone()),
            Some(_) => {
                shard.remove(client);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, client: ClientId, route: CachedRoute) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(&client);
        if shard.len() >= self.per_shard && !shard.contains_key(&client) {
            // Full: make room by dropping expired entries, or else an
            // eighth of the shard (arbitrary ones: cheap, and a dropped
            // entry only costs one lookup).
            let now = Instant::now();
            shard.retain(|_, e| e.expires > now);
            if shard.len() >= self.per_shard {
                let drop: Vec<ClientId> =
                    shard.keys().take(self.per_shard / 8 + 1).cloned().collect();
                for key in drop {
                    shard.remove(&key);
                }
            }
        }
        let expires = Instant::now() + self.ttl;
        shard.insert(client, Entry { route, expires });
    }

    pub fn remove(&self, client: &ClientId) {
        self.shard(client).remove(client);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(node: &str) -> CachedRoute {
        CachedRoute {
            node: NodeId::parse(node).unwrap(),
            since: 1,
            epoch: 0,
        }
    }

    fn client(i: usize) -> ClientId {
        ClientId::parse(&format!("c{i}")).unwrap()
    }

    #[test]
    fn entries_are_found_replaced_and_removed() {
        let cache = RouteCache::new(100, Duration::from_secs(60));
        cache.insert(client(1), route("b"));
        assert_eq!(cache.get(&client(1)), Some(route("b")));
        cache.insert(client(1), route("c"));
        assert_eq!(cache.get(&client(1)), Some(route("c")));
        cache.remove(&client(1));
        assert_eq!(cache.get(&client(1)), None);
    }

    #[test]
    fn entries_expire() {
        let cache = RouteCache::new(100, Duration::ZERO);
        cache.insert(client(1), route("b"));
        assert_eq!(cache.get(&client(1)), None);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = RouteCache::new(160, Duration::from_secs(60));
        for i in 0..10_000 {
            cache.insert(client(i), route("b"));
        }
        assert!(cache.len() <= 160, "{}", cache.len());
        let disabled = RouteCache::new(0, Duration::from_secs(60));
        disabled.insert(client(1), route("b"));
        assert_eq!(disabled.get(&client(1)), None);
    }
}
