//! Presence in memcached: one item per client, `<prefix>presence:<client
//! id>`, holding one line per device, `<device> <node> <session> <since>
//! <expires>`, on one of several servers chosen by consistent hashing
//! ([`ring`]).
//!
//! memcached has no scripts, so the atomic steps Redis does in Lua are done
//! here with CAS, its compare-and-swap: read the item with its CAS value,
//! change its lines, then write it (or delete it, with its last line) only
//! if that value still holds, and start over when another node got there
//! first ([`MemcachedPresence::change`]). A new item is written with "add",
//! which fails if the item appeared in between. So every write to a
//! client's devices is one atomic step, as on Redis: the device cap is
//! checked against the very lines the write replaces.
//!
//! memcached may also *evict* items when it runs out of memory, and forgets
//! everything when it restarts. A lost record makes its client look
//! offline: senders are told `offline`, nothing is lost silently, but
//! messages are refused that could have been delivered. The node limits
//! that in three ways (docs/operations.md):
//!
//! - records carry a TTL (`--memcached-ttl-secs`, 180 s), and each node
//!   writes its live sessions' records back well within it
//!   ([`PresenceStore::refresh_interval`]): an evicted record is back
//!   within one refresh, and a crashed node's records are gone within one
//!   TTL (they are disbelieved at once by the heartbeat logic anyway). The
//!   TTL holds per line, too: each line carries its own expiry, renewed
//!   only by its own node, so a crashed node's line in the item of a
//!   client still online elsewhere (whose writes keep the item alive) is
//!   dropped by the first read or write after it expires. Expiries are in
//!   the writing node's clock, as the heartbeats' are;
//! - the heartbeat item lives like any other: when it is missing (server
//!   restarted, or evicted), every node re-registers at once;
//! - memcached evicts least recently used items first, and records of
//!   active clients are read on every send to them.
//!
//! There is no index of a node's records (memcached cannot list keys), so
//! [`sweep`](PresenceStore::sweep) leaves ghosts to the TTL.
//!
//! A group (v2) is one item too, `<prefix>group:<group id>`, a member's
//! client id per line, changed by CAS like a record ([`edit_lines`]) and
//! written without a TTL. memcached may still evict it under memory
//! pressure: size memcached so that it never evicts (docs/operations.md),
//! or keep groups in Redis.

mod conn;
mod ring;
mod social;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use uuid::Uuid;

use self::conn::{Meta, Reply, Server, SetMode};
use self::ring::Ring;
use crate::config::MemcachedTarget;
use crate::presence::{
    GroupStore, HeartbeatReport, Heartbeats, LastSeen, LastSeenStore, MemberAdded, PresenceError,
    PresenceRecord, PresenceStore, Registered, SessionRecords,
};
use crate::protocol::{ClientId, DeviceId, GroupId, NodeId, now_ms};

/// Attempts at one compare-and-swap before the caller hears
/// `unavailable`. Between attempts a contender backs off for a random,
/// growing while (see [`back_off`]), so that many nodes writing one client
/// at once take turns instead of failing each other forever.
const CAS_ATTEMPTS: u32 = 32;
/// Records read or written in one pipelined exchange.
const BATCH: usize = 256;

pub struct MemcachedPresence {
    servers: Vec<Server>,
    ring: Ring,
    key_prefix: String,
    record_ttl: Duration,
}

impl MemcachedPresence {
    /// Connects to every server of `target`: each must answer, so that a
    /// typo in the list stops the node at startup instead of making some
    /// clients unreachable.
    pub async fn connect(
        target: &MemcachedTarget,
        key_prefix: &str,
    ) -> Result<Self, PresenceError> {
        let store = Self {
            servers: target.servers.iter().cloned().map(Server::new).collect(),
            ring: Ring::new(&target.servers),
            key_prefix: key_prefix.to_owned(),
            record_ttl: target.record_ttl.max(Duration::from_secs(3)),
        };
        store.ping().await?;
        Ok(store)
    }

    pub fn record_ttl(&self) -> Duration {
        self.record_ttl
    }

    fn ttl_secs(&self) -> u32 {
        self.record_ttl.as_secs() as u32
    }

    fn key(&self, client: &ClientId) -> String {
        format!("{}presence:{}", self.key_prefix, client)
    }

    fn server(&self, key: &str) -> &Server {
        &self.servers[self.ring.server_for(key)]
    }

    /// One request, to the server that holds its key.
    async fn one(&self, request: Meta) -> Result<Reply, PresenceError> {
        let server = self.server(request.key().unwrap_or_default());
        let mut replies = server
            .exchange(std::slice::from_ref(&request))
            .await
            .map_err(PresenceError::unavailable)?;
        replies
            .pop()
            .ok_or_else(|| PresenceError::unavailable("memcached sent no reply"))
    }

    /// The client's item as it is: its devices (with the reason, if some
    /// line is not a record) and its CAS value (`None`: no item).
    async fn read_item(&self, client: &ClientId) -> Result<Item, PresenceError> {
        let key = self.key(client);
        Item::from_reply(client, self.one(Meta::Get { key }).await?)
    }

    /// The request that makes the client's item hold `devices`, if it is
    /// still as `read` (its CAS, or absent); `None` when there is nothing
    /// to do (no devices, no item). The line of `fresh` (the session being
    /// written) expires a record TTL from now; the others keep the expiry
    /// they were read with.
    fn commit_request(
        &self,
        client: &ClientId,
        devices: &[PresenceRecord],
        read: &Item,
        fresh: Option<Uuid>,
    ) -> Option<Meta> {
        let key = self.key(client);
        let renewed = now_ms() + self.record_ttl.as_millis() as u64;
        let expiry = |r: &PresenceRecord| match read.expiries.get(&r.session) {
            Some(kept) if Some(r.session) != fresh => *kept,
            _ => renewed,
        };
        match (devices.is_empty(), read.cas) {
            (true, None) => None,
            (true, Some(cas)) => Some(Meta::Delete { key, cas }),
            (false, cas) => Some(Meta::Set {
                key,
                value: render(devices, expiry),
                ttl_secs: self.ttl_secs(),
                mode: cas.map_or(SetMode::Add, SetMode::Cas),
            }),
        }
    }

    /// Whether a commit landed (false: the item changed meanwhile).
    fn committed(reply: &Reply) -> Result<bool, PresenceError> {
        match reply {
            Reply::Done => Ok(true),
            Reply::NotStored | Reply::Exists | Reply::NotFound => Ok(false),
            other => Err(unexpected(other)),
        }
    }

    /// Changes the client's devices in one atomic step: `edit` sees the
    /// lines as read and says whether to write what it left, and what to
    /// answer; when another node wrote in between, it runs again on the
    /// new lines.
    async fn change<T>(
        &self,
        client: &ClientId,
        fresh: Option<Uuid>,
        mut edit: impl FnMut(&mut Vec<PresenceRecord>) -> (bool, T),
    ) -> Result<T, PresenceError> {
        for attempt in 0..CAS_ATTEMPTS {
            back_off(attempt).await;
            let item = self.read_item(client).await?;
            if let Some(e) = &item.corrupt {
                tracing::warn!(%client, error = %e, "replacing a corrupt presence line");
            }
            let mut devices = item.devices.clone();
            let (write, answer) = edit(&mut devices);
            if !write {
                return Ok(answer);
            }
            let Some(request) = self.commit_request(client, &devices, &item, fresh) else {
                return Ok(answer);
            };
            if Self::committed(&self.one(request).await?)? {
                return Ok(answer);
            }
        }
        Err(contended(client))
    }

    /// Re-registers a batch whose keys all live on `server`: reads all in
    /// one exchange, writes all in another, and falls back to the one-by-one
    /// CAS loop for the few that changed in between.
    async fn reregister_batch(
        &self,
        server: &Server,
        entries: &[&(ClientId, PresenceRecord)],
    ) -> Result<Vec<Option<PresenceRecord>>, PresenceError> {
        let reads: Vec<Meta> = entries
            .iter()
            .map(|(client, _)| Meta::Get {
                key: self.key(client),
            })
            .collect();
        let current = server
            .exchange(&reads)
            .await
            .map_err(PresenceError::unavailable)?;
        let mut results: Vec<Option<PresenceRecord>> = vec![None; entries.len()];
        let mut writes = Vec::new();
        let mut written = Vec::new();
        for (i, ((client, record), reply)) in entries.iter().zip(current).enumerate() {
            let item = Item::from_reply(client, reply)?;
            let mut devices = item.devices.clone();
            let (write, other) = reregister_edit(&mut devices, record);
            results[i] = other;
            if let Some(request) = write
                .then(|| self.commit_request(client, &devices, &item, Some(record.session)))
                .flatten()
            {
                writes.push(request);
                written.push(i);
            }
        }
        if writes.is_empty() {
            return Ok(results);
        }
        let stored = server
            .exchange(&writes)
            .await
            .map_err(PresenceError::unavailable)?;
        for (i, reply) in written.into_iter().zip(stored) {
            if !Self::committed(&reply)? {
                // Changed in between (another node, or another device of
                // the same client in this very batch): one by one.
                let (client, record) = entries[i];
                results[i] = self
                    .change(client, Some(record.session), |devices| {
                        reregister_edit(devices, record)
                    })
                    .await?;
            }
        }
        Ok(results)
    }

    /// Changes the lines of the item `key` (no TTL) in one atomic step:
    /// reads them with the item's CAS, lets `edit` change them, and writes
    /// them back (deletes the item with its last line) only if no one
    /// wrote in between; otherwise starts over. `edit` answers whether to
    /// write at all, and what to return.
    async fn edit_lines<T>(
        &self,
        key: &str,
        what: &str,
        mut edit: impl FnMut(&mut Vec<String>) -> (bool, T),
    ) -> Result<T, PresenceError> {
        for attempt in 0..CAS_ATTEMPTS {
            back_off(attempt).await;
            let get = Meta::Get {
                key: key.to_owned(),
            };
            let (mut lines, cas) = match self.one(get).await? {
                Reply::Value { value, cas } => {
                    (value.lines().map(str::to_owned).collect(), Some(cas))
                }
                Reply::Miss => (Vec::new(), None),
                other => return Err(unexpected(&other)),
            };
            let (write, answer) = edit(&mut lines);
            let request = match (write, lines.is_empty(), cas) {
                (false, _, _) | (true, true, None) => return Ok(answer),
                (true, true, Some(cas)) => Meta::Delete {
                    key: key.to_owned(),
                    cas,
                },
                (true, false, cas) => Meta::Set {
                    key: key.to_owned(),
                    value: lines.iter().map(|l| format!("{l}\n")).collect(),
                    ttl_secs: 0,
                    mode: cas.map_or(SetMode::Add, SetMode::Cas),
                },
            };
            match self.one(request).await? {
                Reply::Done => return Ok(answer),
                Reply::NotStored | Reply::Exists | Reply::NotFound => continue,
                other => return Err(unexpected(&other)),
            }
        }
        Err(PresenceError::unavailable(format!(
            "{what} kept changing ({CAS_ATTEMPTS} CAS attempts)"
        )))
    }

    /// Reads `keys` with one multi-get per server, the servers at once;
    /// the replies in the order of `keys`.
    async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Reply>, PresenceError> {
        let mut by_server: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            by_server
                .entry(self.ring.server_for(key))
                .or_default()
                .push(i);
        }
        let read = try_join_all(by_server.iter().map(|(server, indexes)| {
            let reads: Vec<Meta> = indexes
                .iter()
                .map(|i| Meta::Get {
                    key: keys[*i].clone(),
                })
                .collect();
            async move {
                self.servers[*server]
                    .exchange(&reads)
                    .await
                    .map_err(PresenceError::unavailable)
            }
        }))
        .await?;
        let mut replies = vec![Reply::Miss; keys.len()];
        for ((_, indexes), answers) in by_server.iter().zip(read) {
            for (i, reply) in indexes.iter().zip(answers) {
                replies[*i] = reply;
            }
        }
        Ok(replies)
    }

    fn seen_key(&self, client: &ClientId) -> String {
        format!("{}seen:{}", self.key_prefix, client)
    }

    fn group_key(&self, group: &GroupId) -> String {
        format!("{}group:{}", self.key_prefix, group)
    }
}

/// An item's expiry as memcached takes it: seconds from now, or (beyond 30
/// days, which memcached reads as a Unix time) the Unix time.
fn ttl_secs(ttl: Duration) -> u32 {
    const RELATIVE_MAX: u64 = 30 * 24 * 3600;
    let secs = ttl.as_secs().max(1);
    let secs = if secs > RELATIVE_MAX {
        now_ms() / 1000 + secs
    } else {
        secs
    };
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Waits a random time below 0.2 ms × 2^attempt (at most 12.8 ms) after
/// the `attempt`th lost compare-and-swap.
async fn back_off(attempt: u32) {
    if attempt == 0 {
        return;
    }
    let ceiling_us = 200u64 << attempt.min(6);
    let jitter = (Uuid::new_v4().as_u128() as u64) % ceiling_us;
    tokio::time::sleep(Duration::from_micros(jitter)).await;
}

/// A client's item, read: its lines that have not expired.
struct Item {
    devices: Vec<PresenceRecord>,
    /// When each session's line expires (ms since the epoch).
    expiries: HashMap<Uuid, u64>,
    /// Why a line was skipped, if one was not a record.
    corrupt: Option<PresenceError>,
    /// `None`: there is no item.
    cas: Option<u64>,
}

impl Item {
    fn from_reply(client: &ClientId, reply: Reply) -> Result<Self, PresenceError> {
        match reply {
            Reply::Value { value, cas } => {
                let (lines, corrupt) = parse(client, &value);
                let now = now_ms();
                let live: Vec<_> = lines.into_iter().filter(|(_, exp)| *exp > now).collect();
                Ok(Self {
                    expiries: live.iter().map(|(r, exp)| (r.session, *exp)).collect(),
                    devices: live.into_iter().map(|(r, _)| r).collect(),
                    corrupt,
                    cas: Some(cas),
                })
            }
            Reply::Miss => Ok(Self {
                devices: Vec::new(),
                expiries: HashMap::new(),
                corrupt: None,
                cas: None,
            }),
            other => Err(unexpected(&other)),
        }
    }
}

/// What [`PresenceStore::reregister`] does to one client's lines: writes
/// the session's line back unless another session of its device holds it
/// (then answers that session, and writes nothing).
fn reregister_edit(
    devices: &mut Vec<PresenceRecord>,
    record: &PresenceRecord,
) -> (bool, Option<PresenceRecord>) {
    match devices.iter_mut().find(|d| d.device == record.device) {
        Some(other) if other.session != record.session => (false, Some(other.clone())),
        // The same session: written again all the same, which renews the
        // item's TTL.
        Some(same) => {
            *same = record.clone();
            (true, None)
        }
        None => {
            devices.push(record.clone());
            (true, None)
        }
    }
}

fn render(devices: &[PresenceRecord], expiry: impl Fn(&PresenceRecord) -> u64) -> String {
    devices
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {}\n",
                r.device,
                r.node,
                r.session,
                r.since,
                expiry(r)
            )
        })
        .collect()
}

/// A client's lines with their expiries, and why some line was not a
/// record (it is left out).
fn parse(client: &ClientId, value: &str) -> (Vec<(PresenceRecord, u64)>, Option<PresenceError>) {
    let mut lines = Vec::new();
    let mut corrupt = None;
    let not_a_line = |line: &str| PresenceError::Corrupt {
        client: client.to_string(),
        why: format!("not \"<device> <node> <session> <since> <expires>\": {line:?}"),
    };
    for line in value.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        let read = match fields.as_slice() {
            [device, node, session, since, expires] => match expires.parse::<u64>() {
                Ok(expires) => {
                    let value =
                        format!(r#"{{"node":"{node}","session":"{session}","since":{since}}}"#);
                    PresenceRecord::from_field(client, device, &value).map(|r| (r, expires))
                }
                Err(_) => Err(not_a_line(line)),
            },
            _ => Err(not_a_line(line)),
        };
        match read {
            Ok(line) => lines.push(line),
            Err(e) => corrupt = Some(e),
        }
    }
    (lines, corrupt)
}

fn unexpected(reply: &Reply) -> PresenceError {
    PresenceError::unavailable(format!("memcached answered {reply:?} out of turn"))
}

fn contended(client: &ClientId) -> PresenceError {
    PresenceError::unavailable(format!(
        "the presence record of {client} kept changing ({CAS_ATTEMPTS} CAS attempts)"
    ))
}

#[async_trait]
impl SessionRecords for MemcachedPresence {
    async fn register(
        &self,
        client: &ClientId,
        record: &PresenceRecord,
        max_devices: usize,
    ) -> Result<Registered, PresenceError> {
        self.change(client, Some(record.session), |devices| {
            let same = devices.iter().position(|d| d.device == record.device);
            if same.is_none() && devices.len() >= max_devices {
                return (
                    false,
                    Registered::TooManyDevices {
                        devices: devices.clone(),
                    },
                );
            }
            let replaced = match same {
                Some(i) => Some(std::mem::replace(&mut devices[i], record.clone())),
                None => {
                    devices.push(record.clone());
                    None
                }
            };
            (
                true,
                Registered::Done {
                    replaced,
                    devices: devices.clone(),
                },
            )
        })
        .await
    }

    async fn lookup(&self, client: &ClientId) -> Result<Vec<PresenceRecord>, PresenceError> {
        let item = self.read_item(client).await?;
        match item.corrupt {
            Some(e) => Err(e),
            None => Ok(item.devices),
        }
    }

    /// One multi-get per server.
    async fn lookup_many(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Vec<PresenceRecord>>, PresenceError> {
        let keys = clients.iter().map(|c| self.key(c)).collect();
        let replies = self.get_many(keys).await?;
        clients
            .iter()
            .zip(replies)
            .map(|(client, reply)| {
                let item = Item::from_reply(client, reply)?;
                match item.corrupt {
                    Some(e) => Err(e),
                    None => Ok(item.devices),
                }
            })
            .collect()
    }

    async fn remove(
        &self,
        client: &ClientId,
        device: &DeviceId,
        _node: &NodeId,
        session: Uuid,
    ) -> Result<bool, PresenceError> {
        self.change(client, None, |devices| {
            let before = devices.len();
            devices.retain(|d| !(d.device == *device && d.session == session));
            let removed = devices.len() != before;
            (removed, removed)
        })
        .await
    }

    async fn reregister(
        &self,
        entries: &[(ClientId, PresenceRecord)],
    ) -> Result<Vec<Option<PresenceRecord>>, PresenceError> {
        // Per server, in batches; servers and batches run concurrently
        // (each batch takes one pooled connection).
        let mut by_server: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, (client, _)) in entries.iter().enumerate() {
            by_server
                .entry(self.ring.server_for(&self.key(client)))
                .or_default()
                .push(i);
        }
        let batches: Vec<(usize, Vec<usize>)> = by_server
            .into_iter()
            .flat_map(|(server, indexes)| {
                indexes
                    .chunks(BATCH)
                    .map(|chunk| (server, chunk.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let done = try_join_all(batches.iter().map(|(server, indexes)| async move {
            let batch: Vec<&(ClientId, PresenceRecord)> =
                indexes.iter().map(|i| &entries[*i]).collect();
            self.reregister_batch(&self.servers[*server], &batch).await
        }))
        .await?;
        let mut results = vec![None; entries.len()];
        for ((_, indexes), outcomes) in batches.iter().zip(done) {
            for (i, outcome) in indexes.iter().zip(outcomes) {
                results[*i] = outcome;
            }
        }
        Ok(results)
    }

    /// Records expire: written back at least every third of their TTL.
    fn refresh_interval(&self, configured: Duration) -> Option<Duration> {
        Some(configured.min(self.record_ttl / 3))
    }
}

#[async_trait]
impl Heartbeats for MemcachedPresence {
    /// The heartbeat list is one item, changed by CAS. memcached has no
    /// clock to share, so expiries are in this node's clock: node clocks
    /// must agree to well within the node TTL (NTP does).
    async fn heartbeat(
        &self,
        member: &str,
        ttl: Duration,
        retention: Duration,
    ) -> Result<HeartbeatReport, PresenceError> {
        let key = format!("{}nodes", self.key_prefix);
        // Lines `<member> <expiry ms>`.
        let (now, members, own_was_missing) = self
            .edit_lines(&key, "the heartbeat list", |lines| {
                let now = now_ms();
                let mut beats: Vec<(String, u64)> = lines
                    .iter()
                    .filter_map(|line| {
                        let (member, expiry) = line.split_once(' ')?;
                        Some((member.to_owned(), expiry.parse().ok()?))
                    })
                    .collect();
                let own_was_missing = !beats.iter().any(|(m, _)| m == member);
                let retention_ms = retention.as_millis() as u64;
                beats.retain(|(m, expiry)| m != member && expiry + retention_ms > now);
                beats.push((member.to_owned(), now + ttl.as_millis() as u64));
                *lines = beats.iter().map(|(m, e)| format!("{m} {e}")).collect();
                (true, (now, beats, own_was_missing))
            })
            .await?;
        Ok(HeartbeatReport {
            server_now_ms: now,
            members,
            own_was_missing,
        })
    }

    /// Nothing to sweep by: records of lost runs expire within the record
    /// TTL, and are disbelieved until then.
    async fn sweep(
        &self,
        _node: &NodeId,
        _lost_run: Option<u64>,
        _before_since: u64,
    ) -> Result<Vec<(ClientId, PresenceRecord)>, PresenceError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl GroupStore for MemcachedPresence {
    async fn add_member(
        &self,
        group: &GroupId,
        client: &ClientId,
        max_members: usize,
    ) -> Result<MemberAdded, PresenceError> {
        let what = format!("group {group}");
        let added = self
            .edit_lines(&self.group_key(group), &what, |members| {
                if members.iter().any(|m| m == client.as_str()) {
                    (false, MemberAdded::Already)
                } else if members.len() >= max_members {
                    (false, MemberAdded::Full)
                } else {
                    members.push(client.to_string());
                    (true, MemberAdded::Added)
                }
            })
            .await?;
        if added != MemberAdded::Full {
            // The index after the set (a member already may predate it).
            self.index_group(client, group, true).await?;
        }
        Ok(added)
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        client: &ClientId,
    ) -> Result<bool, PresenceError> {
        let what = format!("group {group}");
        let removed = self
            .edit_lines(&self.group_key(group), &what, |members| {
                let before = members.len();
                members.retain(|m| m != client.as_str());
                let removed = members.len() != before;
                (removed, removed)
            })
            .await?;
        self.index_group(client, group, false).await?;
        Ok(removed)
    }

    async fn members(&self, group: &GroupId) -> Result<Vec<ClientId>, PresenceError> {
        let get = Meta::Get {
            key: self.group_key(group),
        };
        match self.one(get).await? {
            Reply::Value { value, .. } => value
                .lines()
                .map(|m| {
                    ClientId::parse(m).map_err(|e| PresenceError::Corrupt {
                        client: format!("group {group}"),
                        why: format!("member {m:?}: {e}"),
                    })
                })
                .collect(),
            Reply::Miss => Ok(Vec::new()),
            other => Err(unexpected(&other)),
        }
    }

    async fn groups_of(&self, client: &ClientId) -> Result<Vec<GroupId>, PresenceError> {
        self.indexed_groups(client).await
    }
}

#[async_trait]
impl LastSeenStore for MemcachedPresence {
    async fn set_last_seen(
        &self,
        client: &ClientId,
        seen: LastSeen,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        let set = Meta::Set {
            key: self.seen_key(client),
            value: seen.value(),
            ttl_secs: ttl_secs(ttl),
            mode: SetMode::Always,
        };
        match self.one(set).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// One multi-get per server.
    async fn last_seen_many(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Option<LastSeen>>, PresenceError> {
        let keys = clients.iter().map(|c| self.seen_key(c)).collect();
        let replies = self.get_many(keys).await?;
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                Reply::Value { value, .. } => LastSeen::parse(&value),
                _ => None,
            })
            .collect())
    }
}

#[async_trait]
impl PresenceStore for MemcachedPresence {
    async fn ping(&self) -> Result<(), PresenceError> {
        try_join_all(self.servers.iter().map(|server| async move {
            match server.exchange(&[Meta::Noop]).await {
                Ok(replies) if replies == [Reply::Noop] => Ok(()),
                Ok(replies) => Err(format!("memcached at {} answered {replies:?}", server.addr)),
                Err(e) => Err(e),
            }
        }))
        .await
        .map(drop)
        .map_err(PresenceError::unavailable)
    }

    fn backend(&self) -> &'static str {
        "memcached"
    }
}
