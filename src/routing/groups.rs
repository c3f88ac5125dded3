//! Groups (v2): who is in one, as this node last read it (the [`Groups`]
//! service).
//!
//! Members live in the group store beside the records. A send reads them
//! from the [`MemberCache`] (the store on a miss), then every member's
//! record the way a send to a client does (see `Router::locate_group`):
//! the route it builds is an ordinary route, one hop per node.
//!
//! A membership change is in effect at once on the node that made it, and
//! on every other node as soon as its broadcast arrives (`Changed.groups`,
//! milliseconds): each node drops its cached members. Should a broadcast
//! be lost, no cached member list is older than [`MEMBERS_TTL`], the
//! bound docs/protocol.md promises. Members whose record is cached as
//! empty count as offline without a lookup; a member who comes online is
//! reached as soon as the registration's broadcast arrives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::Message;
use super::courier::Courier;
use crate::lock::Locked;
use crate::presence::{GroupStore, MemberAdded, PresenceError};
use crate::protocol::{ClientId, GroupId};

/// The longest a node uses a group's members without reading them again,
/// in case a change's broadcast was lost.
pub const MEMBERS_TTL: Duration = Duration::from_secs(1);
/// Most member ids cached, over all groups: past it, groups are dropped
/// and read again when next sent to.
const MAX_CACHED_MEMBERS: usize = 1_000_000;

/// A group's members, sorted (so that "is the sender a member?" is a
/// binary search, not a scan of 10,000 ids per send).
pub type Members = Arc<[ClientId]>;

struct Entry {
    members: Members,
    expires: Instant,
}

#[derive(Default)]
struct State {
    entries: HashMap<GroupId, Entry>,
    /// Member ids in `entries`.
    size: usize,
    /// Invalidations so far: a read under way during one does not put its
    /// (possibly older) answer back (as in the route cache).
    generation: u64,
}

#[derive(Default)]
pub struct MemberCache {
    state: Mutex<State>,
    bus_generation: AtomicU64,
}

impl MemberCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.locked()
    }

    fn get(&self, group: &GroupId) -> Option<Members> {
        let state = self.state();
        let entry = state.entries.get(group)?;
        (entry.expires > Instant::now()).then(|| entry.members.clone())
    }

    fn generation(&self) -> u64 {
        self.state().generation
    }

    fn insert(&self, group: GroupId, members: Members, seen: u64) {
        let mut state = self.state();
        if state.generation != seen {
            return;
        }
        if state.size + members.len() > MAX_CACHED_MEMBERS {
            let now = Instant::now();
            state.entries.retain(|_, e| e.expires > now);
            if state.size + members.len() > MAX_CACHED_MEMBERS {
                state.entries.clear();
            }
            state.size = state.entries.values().map(|e| e.members.len()).sum();
        }
        state.size += members.len();
        let entry = Entry {
            members,
            expires: Instant::now() + MEMBERS_TTL,
        };
        if let Some(old) = state.entries.insert(group, entry) {
            state.size -= old.members.len();
        }
    }

    pub fn invalidate(&self, group: &GroupId) {
        let mut state = self.state();
        if let Some(old) = state.entries.remove(group) {
            state.size -= old.members.len();
        }
        state.generation += 1;
    }

    /// Forgets everything if the bus reconnected since the entries were
    /// read (broadcasts may have been missed meanwhile).
    fn follow_bus(&self, generation: u64) {
        if self.bus_generation.swap(generation, Ordering::Relaxed) != generation {
            let mut state = self.state();
            state.entries.clear();
            state.size = 0;
            state.generation += 1;
        }
    }
}

/// The group service: membership as this node last read it, and changes
/// told to every node. Sends read members here; the API changes them here.
pub struct Groups {
    store: Arc<dyn GroupStore>,
    cache: MemberCache,
    courier: Courier,
}

impl Groups {
    pub fn new(store: Arc<dyn GroupStore>, courier: Courier) -> Self {
        Self {
            store,
            cache: MemberCache::default(),
            courier,
        }
    }

    /// `group`'s members if cached (and not older than [`MEMBERS_TTL`]).
    pub fn cached(&self, group: &GroupId) -> Option<Members> {
        self.cache.follow_bus(self.courier.bus_generation());
        self.cache.get(group)
    }

    /// `group`'s members, sorted: cached, or read from the store.
    pub async fn members(&self, group: &GroupId) -> Result<Members, PresenceError> {
        if let Some(members) = self.cached(group) {
            return Ok(members);
        }
        let seen = self.cache.generation();
        let mut members = self.store.members(group).await?;
        members.sort_unstable();
        let members: Members = members.into();
        self.cache.insert(group.clone(), members.clone(), seen);
        Ok(members)
    }

    /// `group`'s members as the store has them now (not this node's
    /// cache), sorted: what the API lists.
    pub async fn read(&self, group: &GroupId) -> Result<Vec<ClientId>, PresenceError> {
        let mut members = self.store.members(group).await?;
        members.sort_unstable();
        Ok(members)
    }

    /// Adds `client` to `group` (at most `max_members`), and tells every
    /// node when that changed anything.
    pub async fn add_member(
        &self,
        group: &GroupId,
        client: &ClientId,
        max_members: usize,
    ) -> Result<MemberAdded, PresenceError> {
        let added = self.store.add_member(group, client, max_members).await?;
        if added == MemberAdded::Added {
            self.changed(group);
        }
        Ok(added)
    }

    /// Removes `client` from `group`, and tells every node when it was a
    /// member.
    pub async fn remove_member(
        &self,
        group: &GroupId,
        client: &ClientId,
    ) -> Result<bool, PresenceError> {
        let removed = self.store.remove_member(group, client).await?;
        if removed {
            self.changed(group);
        }
        Ok(removed)
    }

    /// Another node changed `group`'s members: read them again next time.
    pub fn invalidate(&self, group: &GroupId) {
        self.cache.invalidate(group);
    }

    /// In effect here at once (the next send reads the members again), and
    /// on the other nodes once the broadcast arrives.
    fn changed(&self, group: &GroupId) {
        self.cache.invalidate(group);
        self.courier.changed_group(group.clone());
    }
}

/// Only a member may send to a group; a server-side send (HTTP API) may
/// name any sender.
pub(super) fn may_send(msg: &Message, members: &[ClientId]) -> bool {
    msg.sender.is_none() || members.binary_search(&msg.from).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> GroupId {
        GroupId::parse(name).unwrap()
    }

    fn members(names: &[&str]) -> Members {
        names.iter().map(|n| ClientId::parse(n).unwrap()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn members_are_cached_for_at_most_the_ttl() {
        let cache = MemberCache::default();
        cache.insert(group("team"), members(&["a", "b"]), cache.generation());
        assert_eq!(cache.get(&group("team")), Some(members(&["a", "b"])));
        tokio::time::advance(MEMBERS_TTL).await;
        assert_eq!(cache.get(&group("team")), None);
    }

    #[test]
    fn a_read_under_way_during_a_change_is_not_cached() {
        let cache = MemberCache::default();
        let seen = cache.generation();
        cache.invalidate(&group("team"));
        cache.insert(group("team"), members(&["a"]), seen);
        assert_eq!(cache.get(&group("team")), None);
    }

    #[test]
    fn a_bus_reconnect_forgets_every_group() {
        let cache = MemberCache::default();
        cache.follow_bus(1);
        cache.insert(group("team"), members(&["a"]), cache.generation());
        cache.follow_bus(1);
        assert!(cache.get(&group("team")).is_some());
        cache.follow_bus(2);
        assert_eq!(cache.get(&group("team")), None);
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let cache = MemberCache::default();
        let big: Members = (0..MAX_CACHED_MEMBERS / 2 + 1)
            .map(|i| ClientId::parse(&format!("m{i}")).unwrap())
            .collect();
        cache.insert(group("one"), big.clone(), cache.generation());
        cache.insert(group("two"), big.clone(), cache.generation());
        let state = cache.state();
        assert!(state.size <= MAX_CACHED_MEMBERS);
        assert_eq!(
            state.size,
            state
                .entries
                .values()
                .map(|e| e.members.len())
                .sum::<usize>()
        );
    }

    #[test]
    fn only_members_send_except_from_the_api() {
        let team = members(&["alice", "bob"]);
        let msg = |from: &str, session: bool| Message {
            msg_id: uuid::Uuid::nil(),
            from: ClientId::parse(from).unwrap(),
            to: crate::protocol::Recipient::Group(group("team")),
            frame: "{}".into(),
            sender: session.then(|| crate::hub::Sender {
                node: crate::protocol::NodeId::parse("a").unwrap(),
                client: ClientId::parse(from).unwrap(),
                session: uuid::Uuid::nil(),
                id: None,
                receipt: false,
                group: None,
            }),
            store: false,
            signal: false,
            kept: crate::routing::Kept::No,
        };
        assert!(may_send(&msg("bob", true), &team));
        assert!(!may_send(&msg("carol", true), &team));
        assert!(may_send(&msg("system", false), &team));
    }
}
