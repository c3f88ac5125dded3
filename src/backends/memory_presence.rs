//! In-process presence: the embedded default when no Redis is configured.
//!
//! It gives one node (or several nodes in one process) the same semantics
//! as the Redis store (a record per client with a field per device, the
//! same atomic steps), so the branches behave identically with or without
//! a cluster.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::memory_clock::StoreClock;
use crate::lock::Locked;
use crate::presence::{
    ContactAdded, ContactStore, GroupStore, HeartbeatReport, Heartbeats, LastSeen, LastSeenStore,
    MemberAdded, PresenceError, PresenceRecord, PresenceStore, Registered, SessionRecords,
    WatchStore,
};
use crate::protocol::{ClientId, DeviceId, GroupId, NodeId};

#[derive(Default)]
pub struct MemoryPresence {
    /// Expiries are judged by it, as the Redis store's by Redis's clock.
    clock: StoreClock,
    // Plain mutexes: every critical section is a few map operations.
    records: Mutex<HashMap<ClientId, Vec<PresenceRecord>>>,
    /// Heartbeat entries: member -> expiry (ms since the epoch).
    heartbeats: Mutex<HashMap<String, u64>>,
    groups: Mutex<HashMap<GroupId, HashSet<ClientId>>>,
    /// Last-seen records and when each expires (ms since the epoch).
    seen: Mutex<HashMap<ClientId, (LastSeen, u64)>>,
    /// Contacts, watchers and visibility (v3).
    social: Mutex<Social>,
}

/// The v3 sets, under one lock: each operation is a few map steps.
#[derive(Default)]
struct Social {
    contacts: HashMap<ClientId, HashSet<ClientId>>,
    /// The groups each client is a member of (the index of `groups`).
    member_of: HashMap<ClientId, HashSet<GroupId>>,
    watchers: HashMap<ClientId, HashSet<NodeId>>,
    /// Since when, and until when the flag is kept (ms).
    invisible: HashMap<ClientId, (u64, u64)>,
}

impl MemoryPresence {
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Vec<PresenceRecord>>> {
        // A panic while holding the lock cannot leave a half-written map
        // entry, so a poisoned lock is still safe to use.
        self.records.locked()
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, HashSet<ClientId>>> {
        self.groups.locked()
    }

    fn social(&self) -> std::sync::MutexGuard<'_, Social> {
        self.social.locked()
    }
}

#[async_trait]
impl SessionRecords for MemoryPresence {
    async fn register(
        &self,
        client: &ClientId,
        record: &PresenceRecord,
        max_devices: usize,
    ) -> Result<Registered, PresenceError> {
        let mut records = self.records();
        let devices = records.entry(client.clone()).or_default();
        let replaced = match devices.iter().position(|r| r.device == record.device) {
            Some(i) => Some(std::mem::replace(&mut devices[i], record.clone())),
            None if devices.len() >= max_devices => {
                let devices = devices.clone();
                if devices.is_empty() {
                    records.remove(client);
                }
                return Ok(Registered::TooManyDevices { devices });
            }
            None => {
                devices.push(record.clone());
                None
            }
        };
        Ok(Registered::Done {
            replaced,
            devices: devices.clone(),
        })
    }

    async fn lookup(&self, client: &ClientId) -> Result<Vec<PresenceRecord>, PresenceError> {
        Ok(self.records().get(client).cloned().unwrap_or_default())
    }

    async fn remove(
        &self,
        client: &ClientId,
        device: &DeviceId,
        _node: &NodeId,
        session: Uuid,
    ) -> Result<bool, PresenceError> {
        let mut records = self.records();
        let Some(devices) = records.get_mut(client) else {
            return Ok(false);
        };
        let before = devices.len();
        devices.retain(|r| !(r.device == *device && r.session == session));
        let removed = devices.len() < before;
        if devices.is_empty() {
            records.remove(client);
        }
        Ok(removed)
    }

    async fn reregister(
        &self,
        entries: &[(ClientId, PresenceRecord)],
    ) -> Result<Vec<Option<PresenceRecord>>, PresenceError> {
        let mut records = self.records();
        Ok(entries
            .iter()
            .map(|(client, record)| {
                let devices = records.entry(client.clone()).or_default();
                match devices.iter_mut().find(|r| r.device == record.device) {
                    Some(current) if current.session != record.session => Some(current.clone()),
                    Some(current) => {
                        *current = record.clone();
                        None
                    }
                    None => {
                        devices.push(record.clone());
                        None
                    }
                }
            })
            .collect())
    }

    /// Nothing but the nodes' own deletes removes a record here.
    fn refresh_interval(&self, _configured: Duration) -> Option<Duration> {
        None
    }
}

#[async_trait]
impl Heartbeats for MemoryPresence {
    async fn heartbeat(
        &self,
        member: &str,
        ttl: Duration,
        retention: Duration,
    ) -> Result<HeartbeatReport, PresenceError> {
        let now = self.clock.now_ms();
        let mut beats = self.heartbeats.locked();
        let own_was_missing = beats
            .insert(member.to_owned(), now + ttl.as_millis() as u64)
            .is_none();
        let oldest = now.saturating_sub(retention.as_millis() as u64);
        beats.retain(|_, expires| *expires >= oldest);
        Ok(HeartbeatReport {
            server_now_ms: now,
            members: beats.iter().map(|(m, e)| (m.clone(), *e)).collect(),
            own_was_missing,
        })
    }

    async fn sweep(
        &self,
        node: &NodeId,
        _lost_run: Option<u64>,
        before_since: u64,
    ) -> Result<Vec<(ClientId, PresenceRecord)>, PresenceError> {
        let mut records = self.records();
        let mut swept = Vec::new();
        records.retain(|client, devices| {
            devices.retain(|r| {
                let ghost = r.node == *node && r.since < before_since;
                if ghost {
                    swept.push((client.clone(), r.clone()));
                }
                !ghost
            });
            !devices.is_empty()
        });
        Ok(swept)
    }
}

#[async_trait]
impl GroupStore for MemoryPresence {
    async fn add_member(
        &self,
        group: &GroupId,
        client: &ClientId,
        max_members: usize,
    ) -> Result<MemberAdded, PresenceError> {
        let mut groups = self.groups();
        let members = groups.entry(group.clone()).or_default();
        Ok(if members.contains(client) {
            MemberAdded::Already
        } else if members.len() >= max_members {
            if members.is_empty() {
                groups.remove(group);
            }
            MemberAdded::Full
        } else {
            members.insert(client.clone());
            let mut social = self.social();
            let of = social.member_of.entry(client.clone()).or_default();
            of.insert(group.clone());
            MemberAdded::Added
        })
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        client: &ClientId,
    ) -> Result<bool, PresenceError> {
        let mut groups = self.groups();
        let Some(members) = groups.get_mut(group) else {
            return Ok(false);
        };
        let removed = members.remove(client);
        if members.is_empty() {
            groups.remove(group);
        }
        let mut social = self.social();
        if let Some(of) = social.member_of.get_mut(client) {
            of.remove(group);
            if of.is_empty() {
                social.member_of.remove(client);
            }
        }
        Ok(removed)
    }

    async fn members(&self, group: &GroupId) -> Result<Vec<ClientId>, PresenceError> {
        Ok(self
            .groups()
            .get(group)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn groups_of(&self, client: &ClientId) -> Result<Vec<GroupId>, PresenceError> {
        Ok(self
            .social()
            .member_of
            .get(client)
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default())
    }
}

#[async_trait]
impl LastSeenStore for MemoryPresence {
    async fn set_last_seen(
        &self,
        client: &ClientId,
        seen: LastSeen,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        let now = self.clock.now_ms();
        let mut all = self.seen.locked();
        // Expired records go when the map has doubled since the last
        // pruning, so that it holds about the clients seen within the TTL.
        if all.len() >= 1024 && all.len().is_power_of_two() {
            all.retain(|_, (_, expires)| *expires > now);
        }
        all.insert(client.clone(), (seen, now + ttl.as_millis() as u64));
        Ok(())
    }

    async fn last_seen_many(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Option<LastSeen>>, PresenceError> {
        let now = self.clock.now_ms();
        let all = self.seen.locked();
        Ok(clients
            .iter()
            .map(|c| all.get(c).filter(|(_, exp)| *exp > now).map(|(s, _)| *s))
            .collect())
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn ping(&self) -> Result<(), PresenceError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[async_trait]
impl ContactStore for MemoryPresence {
    async fn add_contact(
        &self,
        client: &ClientId,
        contact: &ClientId,
        max_contacts: usize,
    ) -> Result<ContactAdded, PresenceError> {
        let mut social = self.social();
        let contacts = social.contacts.entry(client.clone()).or_default();
        Ok(if contacts.contains(contact) {
            ContactAdded::Already
        } else if contacts.len() >= max_contacts {
            if contacts.is_empty() {
                social.contacts.remove(client);
            }
            ContactAdded::Full
        } else {
            contacts.insert(contact.clone());
            ContactAdded::Added
        })
    }

    async fn remove_contact(
        &self,
        client: &ClientId,
        contact: &ClientId,
    ) -> Result<bool, PresenceError> {
        let mut social = self.social();
        let Some(contacts) = social.contacts.get_mut(client) else {
            return Ok(false);
        };
        let removed = contacts.remove(contact);
        if contacts.is_empty() {
            social.contacts.remove(client);
        }
        Ok(removed)
    }

    async fn contacts(&self, client: &ClientId) -> Result<Vec<ClientId>, PresenceError> {
        Ok(self
            .social()
            .contacts
            .get(client)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default())
    }
}

#[async_trait]
impl WatchStore for MemoryPresence {
    async fn add_watcher(&self, node: &NodeId, clients: &[ClientId]) -> Result<(), PresenceError> {
        let mut social = self.social();
        for client in clients {
            let nodes = social.watchers.entry(client.clone()).or_default();
            nodes.insert(node.clone());
        }
        Ok(())
    }

    async fn remove_watcher(
        &self,
        node: &NodeId,
        clients: &[ClientId],
    ) -> Result<(), PresenceError> {
        let mut social = self.social();
        for client in clients {
            if let Some(nodes) = social.watchers.get_mut(client) {
                nodes.remove(node);
                if nodes.is_empty() {
                    social.watchers.remove(client);
                }
            }
        }
        Ok(())
    }

    async fn watchers(&self, clients: &[ClientId]) -> Result<Vec<Vec<NodeId>>, PresenceError> {
        let social = self.social();
        Ok(clients
            .iter()
            .map(|c| {
                let nodes = social.watchers.get(c);
                nodes
                    .map(|n| n.iter().cloned().collect())
                    .unwrap_or_default()
            })
            .collect())
    }

    async fn forget_watcher(&self, node: &NodeId) -> Result<(), PresenceError> {
        self.social().watchers.retain(|_, nodes| {
            nodes.remove(node);
            !nodes.is_empty()
        });
        Ok(())
    }

    async fn set_invisible(
        &self,
        client: &ClientId,
        since: Option<u64>,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        let mut social = self.social();
        match since {
            Some(since) => {
                let expires = self.clock.now_ms() + ttl.as_millis() as u64;
                social.invisible.insert(client.clone(), (since, expires));
            }
            None => {
                social.invisible.remove(client);
            }
        }
        Ok(())
    }

    async fn invisible(&self, clients: &[ClientId]) -> Result<Vec<Option<u64>>, PresenceError> {
        let now = self.clock.now_ms();
        let social = self.social();
        Ok(clients
            .iter()
            .map(|c| {
                let flag = social.invisible.get(c);
                flag.filter(|(_, expires)| *expires > now)
                    .map(|(since, _)| *since)
            })
            .collect())
    }
}
