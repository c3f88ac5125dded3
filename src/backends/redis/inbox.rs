//! The inbox on Redis Streams: one stream per client,
//! `<prefix>inbox:{<client id>}`, an entry per stored message (field `m`,
//! the frame), and beside it the drain lease `<prefix>inbox:{<client
//! id>}:drain` (`<device>|<session>` of the claiming session, with a TTL). The braces keep
//! both keys in one slot, so each script below touches one slot.
//!
//! A stream suits an inbox: entries keep their order, their ids are the
//! store's clock (so the TTL is a trim by id, `XTRIM MINID`, with no
//! per-entry timer), `XDEL` takes out exactly what was delivered, and the
//! stream's own length is the cap check. Every step is one Lua script, so
//! a check and the write it guards are one atomic step on the server.

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use uuid::Uuid;

use super::connect::Conn;
use crate::config::RedisTarget;
use crate::inbox::{InboxError, InboxLimits, InboxStore, InboxSummary, StoredMessage};
use crate::protocol::{ClientId, DeviceId};

/// The store's clock in ms, and the trim of what is older than the TTL
/// (ARGV[1] in every script that starts with it).
const TRIM: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XTRIM', KEYS[1], 'MINID', now - tonumber(ARGV[1]))
";

/// KEYS: stream. ARGV: ttl ms, frame, most messages. Returns 1 when
/// stored, 0 when full. The key lives a TTL past its last append.
const APPEND: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// KEYS: stream, lease. ARGV: ttl ms, `<device>|<session>`, lease ms,
/// `<device>|`. Returns false when a session of another device holds the
/// lease, else every entry (and takes the lease, unless there is nothing
/// to drain).
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder and string.sub(holder, 1, #ARGV[4]) ~= ARGV[4] then return false end
if redis.call('XLEN', KEYS[1]) == 0 then return {} end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return redis.call('XRANGE', KEYS[1], '-', '+')
";

/// KEYS: stream, lease. ARGV: `|<session>`.
const RELEASE: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder and string.sub(holder, -#ARGV[1]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
";

/// KEYS: stream. ARGV: entry ids. The stream goes with its last entry.
const REMOVE: &str = r"
redis.call('XDEL', KEYS[1], unpack(ARGV))
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
return 1
";

/// KEYS: stream. ARGV: ttl ms. Returns {count, oldest entry or empty}.
const SUMMARY: &str = r"
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local oldest = ''
if #first > 0 then oldest = first[1][1] end
return {redis.call('XLEN', KEYS[1]), oldest}
";

pub struct RedisInbox {
    conn: Conn,
    key_prefix: String,
    limits: InboxLimits,
    append: Script,
    claim: Script,
    release: Script,
    remove: Script,
    summary: Script,
}

impl RedisInbox {
    pub async fn connect(
        target: &RedisTarget,
        key_prefix: &str,
        limits: InboxLimits,
    ) -> Result<Self, InboxError> {
        let conn = Conn::open(target)
            .await
            .map_err(|e| InboxError::caused("cannot open the inbox", e))?;
        let inbox = Self {
            conn,
            key_prefix: key_prefix.to_owned(),
            limits,
            append: Script::new(&format!("{TRIM}{APPEND}")),
            claim: Script::new(&format!("{TRIM}{CLAIM}")),
            release: Script::new(RELEASE),
            remove: Script::new(REMOVE),
            summary: Script::new(&format!("{TRIM}{SUMMARY}")),
        };
        // XTRIM MINID needs Redis 6.2: say so at startup, not on the
        // first stored message.
        inbox
            .summary(&ClientId::parse("startup-check").expect("a valid id"))
            .await
            .map_err(|e| {
                InboxError::caused(
                    format!(
                        "Redis at {} cannot hold an inbox (it needs Redis 6.2 or later)",
                        target.shown()
                    ),
                    e,
                )
            })?;
        Ok(inbox)
    }

    fn key(&self, client: &ClientId) -> String {
        format!("{}inbox:{{{client}}}", self.key_prefix)
    }

    fn lease_key(&self, client: &ClientId) -> String {
        format!("{}inbox:{{{client}}}:drain", self.key_prefix)
    }

    fn ttl_ms(&self) -> u64 {
        self.limits.ttl.as_millis() as u64
    }
}

fn unavailable(e: redis::RedisError) -> InboxError {
    InboxError::caused("Redis", e)
}

/// An entry id's time part: when Redis stored it, in ms.
fn entry_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

#[async_trait]
impl InboxStore for RedisInbox {
    async fn append(&self, client: &ClientId, frame: &str) -> Result<(), InboxError> {
        let stored: i64 = self
            .append
            .key(self.key(client))
            .arg(self.ttl_ms())
            .arg(frame)
            .arg(self.limits.max_messages)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if stored == 1 {
            Ok(())
        } else {
            Err(InboxError::Full)
        }
    }

    async fn claim(
        &self,
        client: &ClientId,
        device: &DeviceId,
        session: Uuid,
        lease: Duration,
    ) -> Result<Option<Vec<StoredMessage>>, InboxError> {
        let entries: Option<Vec<(String, Vec<String>)>> = self
            .claim
            .key(self.key(client))
            .key(self.lease_key(client))
            .arg(self.ttl_ms())
            .arg(format!("{device}|{session}"))
            .arg(lease.as_millis() as u64)
            .arg(format!("{device}|"))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(entries.map(|entries| {
            entries
                .into_iter()
                .filter_map(|(entry, mut fields)| {
                    // [field, value]: the one field is `m`.
                    let frame = fields.pop()?;
                    Some(StoredMessage { entry, frame })
                })
                .collect()
        }))
    }

    async fn release(&self, client: &ClientId, session: Uuid) -> Result<(), InboxError> {
        self.release
            .key(self.key(client))
            .key(self.lease_key(client))
            .arg(format!("|{session}"))
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn remove(&self, client: &ClientId, entries: &[String]) -> Result<(), InboxError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut invocation = self.remove.key(self.key(client));
        for entry in entries {
            invocation.arg(entry);
        }
        invocation
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn summary(&self, client: &ClientId) -> Result<InboxSummary, InboxError> {
        let (count, oldest): (u64, String) = self
            .summary
            .key(self.key(client))
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(InboxSummary {
            count,
            oldest: entry_ms(&oldest),
        })
    }

    async fn clear(&self, client: &ClientId) -> Result<bool, InboxError> {
        let deleted: i64 = redis::cmd("DEL")
            .arg(self.key(client))
            .arg(self.lease_key(client))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(deleted > 0)
    }

    async fn ping(&self) -> Result<(), InboxError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
