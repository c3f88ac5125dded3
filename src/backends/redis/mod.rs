//! Presence in Redis, on one server or a Redis Cluster: one hash per
//! client, `<prefix>presence:<client id>`, with a field per device whose
//! value is `{"node":…,"session":…,"since":…}` (docs/protocol.md).
//!
//! Every write is a Lua script ([`scripts`]) so that each is one atomic
//! step on the server: `register` reads the device's previous field (and
//! counts the devices) and writes the new one without a window for
//! another node in between, and `remove` deletes a field only while it
//! still names the closing session (Redis removes the key with its last
//! field). Every script and command touches a single key, so on a cluster
//! each goes to the master owning that key's slot ([`connect`]).
//!
//! Beside the records, each node has an index set
//! `<prefix>node:<node id>:clients` of the sessions it registered (members
//! `<client id>|<device>|<session id>`), so that the fields a crashed node
//! leaves behind can be found and swept without scanning every key. The
//! index is kept next to, not inside, the atomic steps (it lives in
//! another slot), with two rules that keep it from ever missing a live
//! field: a member is added only after its field is written, and a member
//! names one session, so removing one session's member can never unindex
//! another session. A member whose field is gone or names another session
//! is simply dropped by the next sweep. Registrations that arrive
//! together go together: a batch of scripts, then one `SADD` per index
//! ([`registrations`]).
//!
//! Groups (v2) are sets, `<prefix>group:<group id>`, one member per client
//! id; adding checks the size cap and adds in one script (`ADD_MEMBER`),
//! removing is `SREM` (Redis drops the key with its last member). The v3
//! sets (contacts, the index of each client's groups, watchers, who is
//! invisible) are in [`social`].

mod connect;
mod history;
mod inbox;
mod registrations;
mod scripts;
mod social;

pub use self::history::RedisHistory;
pub use self::inbox::RedisInbox;

use std::time::Duration;

use async_trait::async_trait;
use redis::{Script, Value};
use uuid::Uuid;

use self::connect::Conn;
use self::registrations::{Registration, Registrations};
use crate::config::RedisTarget;
use crate::presence::{
    GroupStore, HeartbeatReport, Heartbeats, LastSeen, LastSeenStore, MemberAdded, PresenceError,
    PresenceRecord, PresenceStore, Registered, SessionRecords,
};
use crate::protocol::{ClientId, DeviceId, GroupId, NodeId};

/// How many re-registrations go to Redis in one batch.
const REREGISTER_BATCH: usize = 512;
/// Index members examined per round of a sweep.
const SWEEP_BATCH: usize = 512;
/// How long one node holds the right to sweep a lost run.
const SWEEP_LOCK_MS: u64 = 60_000;

pub struct RedisPresence {
    conn: Conn,
    key_prefix: String,
    register: Script,
    reregister: Script,
    remove: Script,
    heartbeat: Script,
    sweep_one: Script,
    add_member: Script,
    /// Registrations go to Redis in batches ([`registrations`]).
    registrations: Registrations,
}

impl RedisPresence {
    /// Connects to the target: `redis://[user:password@]host:port/db`, or
    /// `rediss://` for TLS (verified against the system's roots, or the
    /// target's CA file); on a cluster, any of its masters or replicas as
    /// seeds. Fails with a message that names the URL, password redacted,
    /// when Redis cannot be reached within
    /// [`STARTUP_TIMEOUT`](connect::STARTUP_TIMEOUT) or refuses
    /// the scripts.
    pub async fn connect(target: &RedisTarget, key_prefix: &str) -> Result<Self, PresenceError> {
        let url = target.shown();
        let conn = Conn::open(target).await?;
        let register = Script::new(scripts::REGISTER);
        let presence = Self {
            registrations: Registrations::start(conn.clone(), register.clone()),
            conn,
            key_prefix: key_prefix.to_owned(),
            register,
            reregister: Script::new(&scripts::reregister()),
            remove: Script::new(&scripts::remove()),
            heartbeat: Script::new(scripts::HEARTBEAT),
            sweep_one: Script::new(&scripts::sweep_one()),
            add_member: Script::new(scripts::ADD_MEMBER),
        };
        // Loaded up front so that pipelines rarely meet NOSCRIPT (only after
        // Redis restarts, when they load them again).
        let mut conn = presence.conn.clone();
        for script in presence.scripts() {
            script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(|e| {
                    let hint = match e.code() {
                        Some("NOAUTH" | "WRONGPASS") => {
                            " (give the password in the URL: redis://[user]:password@host)"
                        }
                        _ => "",
                    };
                    PresenceError::unavailable(format!(
                        "Redis at {url} refused the presence scripts: {e}{hint}"
                    ))
                })?;
        }
        Ok(presence)
    }

    fn scripts(&self) -> [&Script; 6] {
        [
            &self.register,
            &self.reregister,
            &self.remove,
            &self.heartbeat,
            &self.sweep_one,
            &self.add_member,
        ]
    }

    fn key(&self, client: &ClientId) -> String {
        format!("{}presence:{}", self.key_prefix, client)
    }

    fn group_key(&self, group: &GroupId) -> String {
        format!("{}group:{}", self.key_prefix, group)
    }

    fn seen_key(&self, client: &ClientId) -> String {
        format!("{}seen:{}", self.key_prefix, client)
    }

    fn index_key(&self, node: &str) -> String {
        format!("{}node:{}:clients", self.key_prefix, node)
    }

    /// Loads a script (on every master of a cluster), for batches that
    /// call it by hash: a restarted or failed-over Redis has none.
    async fn load(&self, script: &Script) -> redis::RedisResult<()> {
        script
            .prepare_invoke()
            .load_async(&mut self.conn.clone())
            .await
            .map(drop)
    }
}

/// An index member: one session of one device of one client.
fn member(client: &ClientId, record: &PresenceRecord) -> String {
    format!("{client}|{}|{}", record.device, record.session)
}

/// The field an index member named, once swept (`None` for a member that
/// is not one a node writes).
fn swept_field(member: &str, node: &NodeId, since: u64) -> Option<(ClientId, PresenceRecord)> {
    let mut parts = member.splitn(3, '|');
    let client = ClientId::parse(parts.next()?).ok()?;
    let device = DeviceId::parse(parts.next()?).ok()?;
    let session = parts.next()?.parse().ok()?;
    let record = PresenceRecord {
        device,
        node: node.clone(),
        session,
        // Written before the lost run's end: no closer time is known.
        since,
    };
    Some((client, record))
}

fn store_error(client: &ClientId, e: redis::RedisError) -> PresenceError {
    // WRONGTYPE means the key exists but is not a hash: someone else wrote
    // it. That is a data problem, not an outage.
    if e.code() == Some("WRONGTYPE") {
        PresenceError::Corrupt {
            client: client.to_string(),
            why: e.to_string(),
        }
    } else {
        PresenceError::caused("Redis", e)
    }
}

fn group_error(group: &GroupId, e: redis::RedisError) -> PresenceError {
    if e.code() == Some("WRONGTYPE") {
        PresenceError::Corrupt {
            client: format!("group {group}"),
            why: e.to_string(),
        }
    } else {
        PresenceError::caused("Redis", e)
    }
}

/// A client's record from HGETALL's field/value pairs.
fn parse_all(
    client: &ClientId,
    fields: Vec<(String, String)>,
) -> Result<Vec<PresenceRecord>, PresenceError> {
    fields
        .iter()
        .map(|(device, value)| PresenceRecord::from_field(client, device, value))
        .collect()
}

/// The same, skipping fields that are not records (after a write that
/// replaced a corrupt one, the rest still count).
fn parse_readable(client: &ClientId, fields: Vec<(String, String)>) -> Vec<PresenceRecord> {
    fields
        .iter()
        .filter_map(|(device, value)| PresenceRecord::from_field(client, device, value).ok())
        .collect()
}

#[async_trait]
impl SessionRecords for RedisPresence {
    async fn register(
        &self,
        client: &ClientId,
        record: &PresenceRecord,
        max_devices: usize,
    ) -> Result<Registered, PresenceError> {
        // The field, then (only once it is written: a member without its
        // field could be dropped by a sweep running meanwhile, and the
        // field then left unindexed) its index member; batched with the
        // registrations of the same moment.
        let raw = self
            .registrations
            .register(Registration {
                client: client.clone(),
                key: self.key(client),
                device: record.device.to_string(),
                value: record.value(),
                max_devices,
                index_key: self.index_key(record.node.as_str()),
                member: member(client, record),
            })
            .await?;
        let (previous, devices) = (raw.previous, parse_readable(client, raw.fields));
        if !raw.written {
            return Ok(Registered::TooManyDevices { devices });
        }
        // The previous field has been overwritten either way; a corrupt one
        // only means there is no older session we could close.
        let replaced = match previous
            .map(|v| PresenceRecord::from_field(client, record.device.as_str(), &v))
        {
            Some(Ok(previous)) => Some(previous),
            Some(Err(e)) => {
                tracing::warn!(%client, error = %e, "replaced a corrupt presence field");
                None
            }
            None => None,
        };
        Ok(Registered::Done { replaced, devices })
    }

    async fn lookup(&self, client: &ClientId) -> Result<Vec<PresenceRecord>, PresenceError> {
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.key(client))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| store_error(client, e))?;
        parse_all(client, fields)
    }

    async fn lookup_many(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Vec<PresenceRecord>>, PresenceError> {
        let commands = clients
            .iter()
            .map(|client| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(self.key(client));
                cmd
            })
            .collect();
        let replies = self
            .conn
            .batch_each(commands)
            .await
            .map_err(|e| PresenceError::caused("Redis", e))?;
        clients
            .iter()
            .zip(replies)
            .map(|(client, reply)| {
                let reply = reply.map_err(|e| store_error(client, e))?;
                let fields: Vec<(String, String)> =
                    redis::from_redis_value(reply).map_err(|e| store_error(client, e.into()))?;
                parse_all(client, fields)
            })
            .collect()
    }

    async fn remove(
        &self,
        client: &ClientId,
        device: &DeviceId,
        node: &NodeId,
        session: Uuid,
    ) -> Result<bool, PresenceError> {
        let (mut conn, mut index_conn) = (self.conn.clone(), self.conn.clone());
        let mut invocation = self.remove.key(self.key(client));
        invocation.arg(device.as_str()).arg(session.to_string());
        let mut unindex = redis::cmd("SREM");
        unindex
            .arg(self.index_key(node.as_str()))
            .arg(format!("{client}|{device}|{session}"));
        // The member goes whether or not the field still named this
        // session: either way the session's field is no more. Two keys in
        // two slots, so two commands (sent together).
        let (deleted, unindexed) = tokio::join!(
            invocation.invoke_async::<i64>(&mut conn),
            unindex.query_async::<i64>(&mut index_conn),
        );
        let deleted = deleted.map_err(|e| store_error(client, e))?;
        unindexed.map_err(|e| store_error(client, e))?;
        Ok(deleted == 1)
    }

    async fn reregister(
        &self,
        entries: &[(ClientId, PresenceRecord)],
    ) -> Result<Vec<Option<PresenceRecord>>, PresenceError> {
        let unavailable = |e: redis::RedisError| PresenceError::caused("Redis", e);
        // Batched EVALSHA needs the script loaded first (a restarted or
        // failed-over Redis has no scripts).
        self.load(&self.reregister).await.map_err(unavailable)?;
        let mut results = Vec::with_capacity(entries.len());
        for batch in entries.chunks(REREGISTER_BATCH) {
            let mut writes = Vec::with_capacity(batch.len());
            let mut members = Vec::with_capacity(batch.len());
            for (client, record) in batch {
                let mut write = redis::cmd("EVALSHA");
                write
                    .arg(self.reregister.get_hash())
                    .arg(1)
                    .arg(self.key(client))
                    .arg(record.device.as_str())
                    .arg(record.value())
                    .arg(record.session.to_string());
                writes.push(write);
                let mut index = redis::cmd("SADD");
                index
                    .arg(self.index_key(record.node.as_str()))
                    .arg(member(client, record));
                members.push(index);
            }
            // Fields first, then their index members (as in `register`):
            // on a cluster a batch runs concurrently, so the two go as two
            // batches to keep that order.
            let replies = self.conn.batch(writes).await.map_err(unavailable)?;
            self.conn.batch(members).await.map_err(unavailable)?;
            for ((client, record), reply) in batch.iter().zip(&replies) {
                let other: Option<String> = redis::from_redis_value_ref(reply).unwrap_or(None);
                results.push(other.and_then(|value| {
                    PresenceRecord::from_field(client, record.device.as_str(), &value).ok()
                }));
            }
        }
        Ok(results)
    }

    /// Records are written back periodically on both kinds of Redis
    /// (50,000 take well under a second of Redis' time). A cluster
    /// replicates asynchronously: a record written just before its master
    /// died may be missing on the replica that took over. And on either, a
    /// record can vanish while its session lives (a Redis with `maxmemory`
    /// and an eviction policy, an operator's `DEL`, a node wrongly judged
    /// dead): nothing else would bring it back.
    fn refresh_interval(&self, configured: Duration) -> Option<Duration> {
        Some(configured)
    }
}

#[async_trait]
impl Heartbeats for RedisPresence {
    async fn heartbeat(
        &self,
        member: &str,
        ttl: Duration,
        retention: Duration,
    ) -> Result<HeartbeatReport, PresenceError> {
        let (now, added, flat): (u64, i64, Vec<String>) = self
            .heartbeat
            .key(format!("{}nodes", self.key_prefix))
            .arg(member)
            .arg(ttl.as_millis() as u64)
            .arg(retention.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| PresenceError::caused("Redis", e))?;
        let members = flat
            .chunks_exact(2)
            .filter_map(|pair| Some((pair[0].clone(), pair[1].parse::<f64>().ok()? as u64)))
            .collect();
        Ok(HeartbeatReport {
            server_now_ms: now,
            members,
            own_was_missing: added == 1,
        })
    }

    async fn sweep(
        &self,
        node: &NodeId,
        lost_run: Option<u64>,
        before_since: u64,
    ) -> Result<Vec<(ClientId, PresenceRecord)>, PresenceError> {
        let mut conn = self.conn.clone();
        let unavailable = |e: redis::RedisError| PresenceError::caused("Redis", e);
        if let Some(run) = lost_run {
            // Every node notices the same death; one sweeps.
            let lock: Option<String> = redis::cmd("SET")
                .arg(format!("{}sweep:{node}:{run}", self.key_prefix))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(SWEEP_LOCK_MS)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if lock.is_none() {
                return Ok(Vec::new());
            }
        }
        self.load(&self.sweep_one).await.map_err(unavailable)?;
        let index = self.index_key(node.as_str());
        let mut cursor = 0u64;
        let mut deleted = Vec::new();
        loop {
            let (next, members): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(&index)
                .arg(cursor)
                .arg("COUNT")
                .arg(SWEEP_BATCH)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if !members.is_empty() {
                let commands = members
                    .iter()
                    .map(|member| {
                        let mut parts = member.splitn(3, '|');
                        let client = parts.next().unwrap_or_default();
                        let device = parts.next().unwrap_or_default();
                        let session = parts.next().unwrap_or_default();
                        let mut sweep = redis::cmd("EVALSHA");
                        sweep
                            .arg(self.sweep_one.get_hash())
                            .arg(1)
                            .arg(format!("{}presence:{client}", self.key_prefix))
                            .arg(device)
                            .arg(node.as_str())
                            .arg(session)
                            .arg(before_since);
                        sweep
                    })
                    .collect();
                let outcomes: Vec<i64> = self
                    .conn
                    .batch(commands)
                    .await
                    .and_then(|replies| Ok(redis::from_redis_value(Value::Array(replies))?))
                    .map_err(unavailable)?;
                let done: Vec<&String> = members
                    .iter()
                    .zip(&outcomes)
                    .filter(|(_, outcome)| **outcome != 0)
                    .map(|(member, _)| member)
                    .collect();
                deleted.extend(
                    members
                        .iter()
                        .zip(&outcomes)
                        .filter(|(_, outcome)| **outcome == 1)
                        .filter_map(|(member, _)| swept_field(member, node, before_since)),
                );
                if !done.is_empty() {
                    redis::cmd("SREM")
                        .arg(&index)
                        .arg(done)
                        .query_async::<i64>(&mut conn)
                        .await
                        .map_err(unavailable)?;
                }
            }
            cursor = next;
            if cursor == 0 {
                return Ok(deleted);
            }
        }
    }
}

#[async_trait]
impl GroupStore for RedisPresence {
    async fn add_member(
        &self,
        group: &GroupId,
        client: &ClientId,
        max_members: usize,
    ) -> Result<MemberAdded, PresenceError> {
        let added: i64 = self
            .add_member
            .key(self.group_key(group))
            .arg(client.as_str())
            .arg(max_members)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| group_error(group, e))?;
        let added = match added {
            1 => MemberAdded::Added,
            0 => MemberAdded::Already,
            _ => return Ok(MemberAdded::Full),
        };
        // The index after the set (a member already may predate it).
        self.index_group(client, group, true).await?;
        Ok(added)
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        client: &ClientId,
    ) -> Result<bool, PresenceError> {
        let removed = redis::cmd("SREM")
            .arg(self.group_key(group))
            .arg(client.as_str())
            .query_async::<i64>(&mut self.conn.clone())
            .await
            .map(|removed| removed == 1)
            .map_err(|e| group_error(group, e))?;
        self.index_group(client, group, false).await?;
        Ok(removed)
    }

    async fn members(&self, group: &GroupId) -> Result<Vec<ClientId>, PresenceError> {
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.group_key(group))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| group_error(group, e))?;
        members
            .iter()
            .map(|m| {
                ClientId::parse(m).map_err(|e| PresenceError::Corrupt {
                    client: format!("group {group}"),
                    why: format!("member {m:?}: {e}"),
                })
            })
            .collect()
    }

    async fn groups_of(&self, client: &ClientId) -> Result<Vec<GroupId>, PresenceError> {
        let groups: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.groups_of_key(client))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| store_error(client, e))?;
        // A group id that is not one is skipped: the index only narrows
        // where to look, membership is checked in the group itself.
        Ok(groups
            .iter()
            .filter_map(|g| GroupId::parse(g).ok())
            .collect())
    }
}

#[async_trait]
impl LastSeenStore for RedisPresence {
    async fn set_last_seen(
        &self,
        client: &ClientId,
        seen: LastSeen,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        redis::cmd("SET")
            .arg(self.seen_key(client))
            .arg(seen.value())
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| store_error(client, e))
    }

    async fn last_seen_many(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Option<LastSeen>>, PresenceError> {
        let commands = clients
            .iter()
            .map(|client| {
                let mut cmd = redis::cmd("GET");
                cmd.arg(self.seen_key(client));
                cmd
            })
            .collect();
        let replies = self
            .conn
            .batch_each(commands)
            .await
            .map_err(|e| PresenceError::caused("Redis", e))?;
        clients
            .iter()
            .zip(replies)
            .map(|(client, reply)| {
                let reply = reply.map_err(|e| store_error(client, e))?;
                let value: Option<String> =
                    redis::from_redis_value(reply).map_err(|e| store_error(client, e.into()))?;
                Ok(value.as_deref().and_then(LastSeen::parse))
            })
            .collect()
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn ping(&self) -> Result<(), PresenceError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(|e| PresenceError::caused("Redis", e))
    }

    fn backend(&self) -> &'static str {
        match self.conn {
            Conn::Single(_) => "redis",
            Conn::Cluster(_) => "redis-cluster",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_whole_or_refused() {
        let c = ClientId::parse("c").unwrap();
        let s = Uuid::new_v4();
        let record = PresenceRecord {
            device: DeviceId::parse("phone").unwrap(),
            node: NodeId::parse("n1").unwrap(),
            session: s,
            since: 5,
        };
        let fields = vec![("phone".to_owned(), record.value())];
        assert_eq!(parse_all(&c, fields).unwrap(), vec![record]);
        for value in [
            r#"{"node":"n.1","session":"x","since":5}"#,
            r#"{"node":"n1","since":5}"#,
            "n1 s 5",
        ] {
            assert!(
                parse_all(&c, vec![("phone".into(), value.into())]).is_err(),
                "{value}"
            );
        }
        assert!(parse_all(&c, vec![("a b".into(), record_value(s))]).is_err());
    }

    fn record_value(s: Uuid) -> String {
        format!(r#"{{"node":"n1","session":"{s}","since":5}}"#)
    }
}
