//! Presence in memcached: one item per client, `<prefix>presence:<client
//! id>`, holding `<node> <session> <since>`, on one of several servers
//! chosen by consistent hashing ([`ring`]).
//!
//! memcached has no scripts, so the atomic steps Redis does in Lua are done
//! here with CAS, its compare-and-swap: read the item with its CAS value,
//! then write or delete it only if that value still holds, and start over
//! when another node got there first. A new record is written with "add",
//! which fails if the item appeared in between.
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
//!   TTL (they are disbelieved at once by the heartbeat logic anyway);
//! - the heartbeat item lives like any other: when it is missing (server
//!   restarted, or evicted), every node re-registers at once;
//! - memcached evicts least recently used items first, and records of
//!   active clients are read on every send to them.
//!
//! There is no index of a node's records (memcached cannot list keys), so
//! [`sweep`](PresenceStore::sweep) leaves ghosts to the TTL.

mod conn;
mod ring;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use uuid::Uuid;

use self::conn::{Meta, Reply, Server, SetMode};
use self::ring::Ring;
use crate::config::MemcachedTarget;
use crate::presence::{HeartbeatReport, PresenceError, PresenceRecord, PresenceStore};
use crate::protocol::{ClientId, NodeId, now_ms};

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

    /// Reads a record and the CAS value to change it with.
    async fn read(
        &self,
        client: &ClientId,
    ) -> Result<Option<(PresenceRecord, u64)>, PresenceError> {
        match self.read_item(client).await? {
            Some((record, cas)) => Ok(Some((record?, cas))),
            None => Ok(None),
        }
    }

    /// The item as it is: its record (or why it is not one) and its CAS
    /// value, so that writers can replace even a corrupt record, as Redis'
    /// scripts do.
    async fn read_item(
        &self,
        client: &ClientId,
    ) -> Result<Option<(Result<PresenceRecord, PresenceError>, u64)>, PresenceError> {
        let key = self.key(client);
        match self.one(Meta::Get { key }).await? {
            Reply::Value { value, cas } => Ok(Some((parse(client, &value), cas))),
            Reply::Miss => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    /// Writes `record` if the item is still as read (`cas`, or absent).
    async fn write_if_unchanged(
        &self,
        client: &ClientId,
        record: &PresenceRecord,
        cas: Option<u64>,
    ) -> Result<bool, PresenceError> {
        let request = Meta::Set {
            key: self.key(client),
            value: render(record),
            ttl_secs: self.ttl_secs(),
            mode: cas.map_or(SetMode::Add, SetMode::Cas),
        };
        match self.one(request).await? {
            Reply::Done => Ok(true),
            Reply::NotStored | Reply::Exists | Reply::NotFound => Ok(false),
            other => Err(unexpected(&other)),
        }
    }

    /// Re-registers one client, CAS-looped: see [`PresenceStore::reregister`].
    async fn reregister_one(
        &self,
        client: &ClientId,
        record: &PresenceRecord,
    ) -> Result<Option<PresenceRecord>, PresenceError> {
        for attempt in 0..CAS_ATTEMPTS {
            back_off(attempt).await;
            let cas = match self.read_item(client).await? {
                Some((Ok(other), _)) if other.session != record.session => {
                    return Ok(Some(other));
                }
                // The same session, or a corrupt record: overwritten.
                Some((_, cas)) => Some(cas),
                None => None,
            };
            if self.write_if_unchanged(client, record, cas).await? {
                return Ok(None);
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
            let cas = match reply {
                Reply::Value { value, cas } => match parse(client, &value) {
                    Ok(other) if other.session != record.session => {
                        results[i] = Some(other);
                        continue;
                    }
                    Ok(_) => Some(cas),
                    // Overwrite a corrupt record, as Redis' script does.
                    Err(_) => Some(cas),
                },
                Reply::Miss => None,
                other => return Err(unexpected(&other)),
            };
            writes.push(Meta::Set {
                key: self.key(client),
                value: render(record),
                ttl_secs: self.ttl_secs(),
                mode: cas.map_or(SetMode::Add, SetMode::Cas),
            });
            written.push(i);
        }
        if writes.is_empty() {
            return Ok(results);
        }
        let stored = server
            .exchange(&writes)
            .await
            .map_err(PresenceError::unavailable)?;
        for (i, reply) in written.into_iter().zip(stored) {
            match reply {
                Reply::Done => {}
                Reply::NotStored | Reply::Exists | Reply::NotFound => {
                    let (client, record) = entries[i];
                    results[i] = self.reregister_one(client, record).await?;
                }
                other => return Err(unexpected(&other)),
            }
        }
        Ok(results)
    }

    /// The heartbeat list, `<member> <expiry ms>` per line, with its CAS.
    async fn read_beats(
        &self,
        key: &str,
    ) -> Result<(Vec<(String, u64)>, Option<u64>), PresenceError> {
        match self
            .one(Meta::Get {
                key: key.to_owned(),
            })
            .await?
        {
            Reply::Value { value, cas } => {
                let beats = value
                    .lines()
                    .filter_map(|line| {
                        let (member, expiry) = line.split_once(' ')?;
                        Some((member.to_owned(), expiry.parse().ok()?))
                    })
                    .collect();
                Ok((beats, Some(cas)))
            }
            Reply::Miss => Ok((Vec::new(), None)),
            other => Err(unexpected(&other)),
        }
    }
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

fn render(record: &PresenceRecord) -> String {
    format!("{} {} {}", record.node, record.session, record.since)
}

fn parse(client: &ClientId, value: &str) -> Result<PresenceRecord, PresenceError> {
    let mut fields = value.split(' ');
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(node), Some(session), Some(since), None) => {
            PresenceRecord::from_fields(client, node, session, since)
        }
        _ => Err(PresenceError::Corrupt {
            client: client.to_string(),
            why: format!("not \"<node> <session> <since>\": {value:?}"),
        }),
    }
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
impl PresenceStore for MemcachedPresence {
    async fn register(
        &self,
        client: &ClientId,
        record: &PresenceRecord,
    ) -> Result<Option<PresenceRecord>, PresenceError> {
        for attempt in 0..CAS_ATTEMPTS {
            back_off(attempt).await;
            let (previous, cas) = match self.read_item(client).await? {
                Some((Ok(previous), cas)) => (Some(previous), Some(cas)),
                // Overwritten either way; there is no older session to
                // close.
                Some((Err(e), cas)) => {
                    tracing::warn!(%client, error = %e, "replacing a corrupt presence record");
                    (None, Some(cas))
                }
                None => (None, None),
            };
            if self.write_if_unchanged(client, record, cas).await? {
                return Ok(previous);
            }
        }
        Err(contended(client))
    }

    async fn lookup(&self, client: &ClientId) -> Result<Option<PresenceRecord>, PresenceError> {
        Ok(self.read(client).await?.map(|(record, _)| record))
    }

    async fn remove(
        &self,
        client: &ClientId,
        _node: &NodeId,
        session: Uuid,
    ) -> Result<bool, PresenceError> {
        let key = self.key(client);
        for attempt in 0..CAS_ATTEMPTS {
            back_off(attempt).await;
            let cas = match self.read(client).await? {
                Some((current, cas)) if current.session == session => cas,
                _ => return Ok(false),
            };
            let delete = Meta::Delete {
                key: key.clone(),
                cas,
            };
            match self.one(delete).await? {
                Reply::Done => return Ok(true),
                // Gone meanwhile: not ours to report as deleted.
                Reply::NotFound => return Ok(false),
                // Rewritten meanwhile (a refresh of the same session, or a
                // newer session): look again.
                Reply::Exists => continue,
                other => return Err(unexpected(&other)),
            }
        }
        Err(contended(client))
    }

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
        for attempt in 0..CAS_ATTEMPTS {
            back_off(attempt).await;
            let (mut beats, cas) = self.read_beats(&key).await?;
            let now = now_ms();
            let own_was_missing = !beats.iter().any(|(m, _)| m == member);
            let retention_ms = retention.as_millis() as u64;
            beats.retain(|(m, expiry)| m != member && expiry + retention_ms > now);
            beats.push((member.to_owned(), now + ttl.as_millis() as u64));
            let value: String = beats.iter().map(|(m, e)| format!("{m} {e}\n")).collect();
            let write = Meta::Set {
                key: key.clone(),
                value,
                ttl_secs: 0,
                mode: cas.map_or(SetMode::Add, SetMode::Cas),
            };
            match self.one(write).await? {
                Reply::Done => {
                    return Ok(HeartbeatReport {
                        server_now_ms: now,
                        members: beats,
                        own_was_missing,
                    });
                }
                Reply::NotStored | Reply::Exists | Reply::NotFound => continue,
                other => return Err(unexpected(&other)),
            }
        }
        Err(PresenceError::unavailable(
            "the heartbeat list kept changing",
        ))
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

    /// Nothing to sweep by: records of lost runs expire within the record
    /// TTL, and are disbelieved until then.
    async fn sweep(
        &self,
        _node: &NodeId,
        _lost_run: Option<u64>,
        _before_since: u64,
    ) -> Result<usize, PresenceError> {
        Ok(0)
    }

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

    /// Records expire: written back at least every third of their TTL.
    fn refresh_interval(&self, configured: Duration) -> Option<Duration> {
        Some(configured.min(self.record_ttl / 3))
    }

    fn backend(&self) -> &'static str {
        "memcached"
    }
}
