//! History on Redis (one server, or a Cluster): per conversation, a
//! stream of its messages and two small hashes, all three under one hash
//! tag so that every script below touches one slot; per client, a sorted
//! set of its two-client conversations.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `<prefix>h:{<conv>}:log` | stream | one entry per kept message, id `<cseq>-<store ms>`, fields `i` (msg_id, 16 bytes), `f` (from), `t` (the sender node's ts), `b` (body) |
//! | `<prefix>h:{<conv>}:meta` | hash | `seq`: the last `cseq` ever given (never expires: numbering never restarts); `ts`: the last message's ts |
//! | `<prefix>h:{<conv>}:read` | hash | client id -> read cursor |
//! | `<prefix>h:convs:<client>` | sorted set | the client's two-client conversations, scored by their last message's ts |
//!
//! `<conv>` is `p:<a>|<b>` (the two clients in order) or `g:<group>`.
//!
//! A stream suits a conversation: its entry ids are the `cseq` itself (a
//! page is one `XRANGE`/`XREVRANGE` by id, with no index beside it), its
//! length cap is `MAXLEN`, and entries keep their order. The id's second
//! part is the store's clock at the append, so age retention compares the
//! store's time with the store's time: every 64th append trims the oldest
//! entries past `--history-ttl` (trimming on every append cost Redis three
//! times the append itself), reads skip any left, and the log and cursors
//! expire whole a TTL after the conversation's last message. Kept entries always have consecutive `cseq`s (trims only ever
//! take from the head), so a client's unread count is `last - max(read,
//! first - 1)` without a scan: a client's own send moves its cursor, so
//! what lies after it is others'.

use async_trait::async_trait;
use redis::{Script, Value};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::connect::Conn;
use crate::config::RedisTarget;
use crate::history::{
    Conversation, Cursor, Entry, HistoryError, HistoryLimits, HistoryStore, NewEntry, Page, Range,
    Summary,
};
use crate::protocol::{ClientId, GroupId};

/// The store's clock in ms (every script that starts with it has `now`).
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS: log, meta, read, and on one server the two clients'
/// conversation lists. ARGV: ttl ms, most messages, msg_id, from, ts,
/// body, the conversation's name. Returns the `cseq`.
const APPEND: &str = r"
local ttl = tonumber(ARGV[1])
local n = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], string.format('%d-%d', n, now),
  'i', ARGV[3], 'f', ARGV[4], 't', ARGV[5], 'b', ARGV[6])
-- Age retention, every 64th append (reads skip what is past the TTL
-- meanwhile): the oldest entries past the TTL go, up to 64 of them.
if n % 64 == 0 then
  local cutoff = now - ttl
  local keep = nil
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 64)) do
    local dash = string.find(e[1], '-', 1, true)
    if tonumber(string.sub(e[1], dash + 1)) >= cutoff then break end
    keep = tonumber(string.sub(e[1], 1, dash - 1)) + 1
  end
  if keep then redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', keep)) end
end
redis.call('HSET', KEYS[2], 'ts', ARGV[5])
local cursor = tonumber(redis.call('HGET', KEYS[3], ARGV[4]) or '0')
if n > cursor then redis.call('HSET', KEYS[3], ARGV[4], n) end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
-- One server: the two clients' lists too (KEYS[4], KEYS[5]), in the same
-- request. A cluster writes them apart (other slots).
for i = 4, #KEYS do
  redis.call('ZADD', KEYS[i], 'GT', ARGV[5], ARGV[7])
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return n
";

/// KEYS: log. ARGV: `latest` | `before` | `after`, cseq, limit, ttl ms.
/// Returns up to limit + 1 unexpired entries, in the page's direction.
const PAGE: &str = r"
local limit = tonumber(ARGV[3]) + 1
local rows
if ARGV[1] == 'after' then
  rows = redis.call('XRANGE', KEYS[1], string.format('%d', tonumber(ARGV[2]) + 1), '+', 'COUNT', limit)
elseif ARGV[1] == 'before' then
  rows = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[2] .. '-0', '-', 'COUNT', limit)
else
  rows = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', limit)
end
local cutoff = now - tonumber(ARGV[4])
local kept = {}
for _, e in ipairs(rows) do
  local dash = string.find(e[1], '-', 1, true)
  if tonumber(string.sub(e[1], dash + 1)) >= cutoff then kept[#kept + 1] = e end
end
return kept
";

/// KEYS: log, meta, read. ARGV: client, peer (empty for a group), ttl ms.
/// Returns {seq} for a conversation with nothing kept, else {seq, last
/// entry, first cseq, read, peer read (-1 without a peer)}.
const SUMMARY: &str = r"
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 then return {seq} end
local dash = string.find(last[1][1], '-', 1, true)
if tonumber(string.sub(last[1][1], dash + 1)) < now - tonumber(ARGV[3]) then return {seq} end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local fdash = string.find(first[1][1], '-', 1, true)
local peer = -1
if ARGV[2] ~= '' then peer = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0') end
return {seq, last[1], tonumber(string.sub(first[1][1], 1, fdash - 1)),
  tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0'), peer}
";

/// KEYS: meta, read. ARGV: client, upto, ttl ms. Returns {cursor, moved}.
const MARK: &str = r"
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local upto = math.min(tonumber(ARGV[2]), seq)
local cursor = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if upto > cursor then
  redis.call('HSET', KEYS[2], ARGV[1], upto)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return {upto, 1}
end
return {cursor, 0}
";

pub struct RedisHistory {
    conn: Conn,
    key_prefix: String,
    limits: HistoryLimits,
    append: Script,
    page: Script,
    summary: Script,
    mark: Script,
}

impl RedisHistory {
    pub async fn connect(
        target: &RedisTarget,
        key_prefix: &str,
        limits: HistoryLimits,
    ) -> Result<Self, HistoryError> {
        let conn = Conn::open(target)
            .await
            .map_err(|e| HistoryError::caused("cannot open the history store", e))?;
        let history = Self {
            conn,
            key_prefix: key_prefix.to_owned(),
            limits,
            append: Script::new(&format!("{NOW}{APPEND}")),
            page: Script::new(&format!("{NOW}{PAGE}")),
            summary: Script::new(&format!("{NOW}{SUMMARY}")),
            mark: Script::new(MARK),
        };
        // XTRIM MINID and exclusive ranges need Redis 6.2: say so at
        // startup, not on the first message.
        let info: Value = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut history.conn.clone())
            .await
            .map_err(unavailable)?;
        // One server's text, or (a cluster) each master's: the oldest counts.
        let texts: Vec<String> = match info {
            Value::Map(nodes) => nodes
                .into_iter()
                .filter_map(|(_, text)| redis::from_redis_value(text).ok())
                .collect(),
            other => redis::from_redis_value(other).into_iter().collect(),
        };
        let version = texts
            .iter()
            .flat_map(|text| text.lines())
            .filter_map(|l| l.strip_prefix("redis_version:"))
            .min_by_key(|v| {
                let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
                (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
            })
            .unwrap_or("0");
        let mut parts = version
            .trim()
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (6, 2) {
            return Err(HistoryError::new(format!(
                "--history needs Redis 6.2 or later (streams trimmed by id); this one is {version}"
            )));
        }
        Ok(history)
    }

    fn key(&self, conversation: &Conversation, part: &str) -> String {
        format!("{}h:{{{}}}:{part}", self.key_prefix, conversation.key())
    }

    fn convs_key(&self, client: &ClientId) -> String {
        format!("{}h:convs:{client}", self.key_prefix)
    }

    fn ttl_ms(&self) -> u64 {
        self.limits.ttl.as_millis() as u64
    }

    async fn summary(
        &self,
        conversation: &Conversation,
        client: &ClientId,
    ) -> Result<Option<Summary>, HistoryError> {
        let peer = conversation.peer(client).map(|p| p.as_str()).unwrap_or("");
        let reply: Vec<Value> = self
            .summary
            .key(self.key(conversation, "log"))
            .key(self.key(conversation, "meta"))
            .key(self.key(conversation, "read"))
            .arg(client.as_str())
            .arg(peer)
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut reply = reply.into_iter();
        let cseq: u64 = number(reply.next())?;
        let Some(last) = reply.next() else {
            return Ok(None);
        };
        let last = entry(last)?;
        let first: u64 = number(reply.next())?;
        let read: u64 = number(reply.next())?;
        let peer_read: i64 = number(reply.next())?;
        Ok(Some(Summary {
            conversation: conversation.clone(),
            cseq,
            unread: last.cseq.saturating_sub(read.max(first.saturating_sub(1))),
            last,
            read,
            peer_read: u64::try_from(peer_read).ok(),
        }))
    }
}

fn unavailable(e: redis::RedisError) -> HistoryError {
    HistoryError::caused("Redis", e)
}

fn corrupt(why: impl Into<String>) -> HistoryError {
    HistoryError::new(format!("a history entry is not readable: {}", why.into()))
}

fn number<T: redis::FromRedisValue>(value: Option<Value>) -> Result<T, HistoryError> {
    let value = value.ok_or_else(|| corrupt("a summary field is missing"))?;
    redis::from_redis_value(value).map_err(|e| corrupt(e.to_string()))
}

/// A stream entry `[id, [field, value, …]]` as an [`Entry`].
fn entry(value: Value) -> Result<Entry, HistoryError> {
    let (id, fields): (String, Vec<Vec<u8>>) =
        redis::from_redis_value(value).map_err(|e| corrupt(e.to_string()))?;
    let cseq = id
        .split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| corrupt(format!("entry id {id:?}")))?;
    let (mut msg_id, mut from, mut ts, mut body) = (None, None, None, None);
    for pair in fields.chunks(2) {
        let [field, value] = pair else { break };
        match field.as_slice() {
            b"i" => msg_id = Uuid::from_slice(value).ok(),
            b"f" => {
                from = std::str::from_utf8(value)
                    .ok()
                    .and_then(|f| ClientId::parse(f).ok())
            }
            b"t" => ts = std::str::from_utf8(value).ok().and_then(|t| t.parse().ok()),
            b"b" => {
                body = String::from_utf8(value.clone())
                    .ok()
                    .and_then(|b| RawValue::from_string(b).ok())
            }
            _ => {}
        }
    }
    match (msg_id, from, ts, body) {
        (Some(msg_id), Some(from), Some(ts), Some(body)) => Ok(Entry {
            cseq,
            msg_id,
            from,
            ts,
            body,
        }),
        _ => Err(corrupt(format!(
            "entry {id} lacks a field or holds a bad one"
        ))),
    }
}

#[async_trait]
impl HistoryStore for RedisHistory {
    async fn append(
        &self,
        conversation: &Conversation,
        entry: NewEntry<'_>,
    ) -> Result<u64, HistoryError> {
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(self.key(conversation, "log"))
            .key(self.key(conversation, "meta"))
            .key(self.key(conversation, "read"))
            .arg(self.ttl_ms())
            .arg(self.limits.max_messages)
            .arg(entry.msg_id.as_bytes().as_slice())
            .arg(entry.from.as_str())
            .arg(entry.ts)
            .arg(entry.body);
        invocation.arg(conversation.key());
        // Each client's list of its conversations: in the script on one
        // server (one request per message); on a cluster its own key's
        // slot, so written beside the script, at once. A lost list update
        // leaves the list a message behind until the next.
        let mut index = Vec::new();
        if let Conversation::Pair(a, b) = conversation {
            for client in [a, b] {
                let key = self.convs_key(client);
                if matches!(self.conn, Conn::Single(_)) {
                    invocation.key(key);
                    continue;
                }
                let mut add = redis::cmd("ZADD");
                add.arg(&key)
                    .arg("GT")
                    .arg(entry.ts)
                    .arg(conversation.key());
                let mut expire = redis::cmd("PEXPIRE");
                expire.arg(&key).arg(self.ttl_ms());
                index.extend([add, expire]);
            }
        }
        let mut conn = self.conn.clone();
        let (cseq, listed) = tokio::join!(invocation.invoke_async::<u64>(&mut conn), async {
            if index.is_empty() {
                Ok(Vec::new())
            } else {
                self.conn.batch(index).await
            }
        });
        listed.map_err(unavailable)?;
        cseq.map_err(unavailable)
    }

    async fn page(
        &self,
        conversation: &Conversation,
        range: Range,
        limit: usize,
    ) -> Result<Page, HistoryError> {
        let limit = limit.max(1);
        let (mode, cseq) = match range {
            Range::Latest => ("latest", 0),
            Range::Before(n) => ("before", n),
            Range::After(n) => ("after", n),
        };
        let rows: Vec<Value> = self
            .page
            .key(self.key(conversation, "log"))
            .arg(mode)
            .arg(cseq)
            .arg(limit)
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let more = rows.len() > limit;
        let mut entries = rows
            .into_iter()
            .take(limit)
            .map(entry)
            .collect::<Result<Vec<_>, _>>()?;
        if mode != "after" {
            entries.reverse();
        }
        Ok(Page { entries, more })
    }

    async fn conversations(
        &self,
        client: &ClientId,
        groups: &[GroupId],
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Summary>, bool), HistoryError> {
        // Candidates by their last message's ts: the newest two-client
        // ones from the client's set, and every group's.
        let max = before.map_or("+inf".to_owned(), |b| format!("({b}"));
        let mut commands = Vec::new();
        // Conversations past the TTL leave the list when it is read.
        let cutoff = crate::protocol::now_ms().saturating_sub(self.ttl_ms());
        let mut trim = redis::cmd("ZREMRANGEBYSCORE");
        trim.arg(self.convs_key(client))
            .arg("-inf")
            .arg(format!("({cutoff}"));
        commands.push(trim);
        let mut pairs = redis::cmd("ZREVRANGEBYSCORE");
        pairs
            .arg(self.convs_key(client))
            .arg(&max)
            .arg("-inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1);
        commands.push(pairs);
        let group_conversations: Vec<Conversation> =
            groups.iter().cloned().map(Conversation::Group).collect();
        for conversation in &group_conversations {
            let mut ts = redis::cmd("HGET");
            ts.arg(self.key(conversation, "meta")).arg("ts");
            commands.push(ts);
        }
        let mut replies = self
            .conn
            .batch(commands)
            .await
            .map_err(unavailable)?
            .into_iter();
        let _trimmed = replies.next();
        let scored: Vec<(String, u64)> =
            redis::from_redis_value(replies.next().unwrap_or(Value::Nil)).unwrap_or_default();
        let mut candidates: Vec<(u64, Conversation)> = scored
            .into_iter()
            .filter_map(|(key, ts)| Some((ts, Conversation::from_key(&key)?)))
            .collect();
        for (conversation, ts) in group_conversations.into_iter().zip(replies) {
            let ts: Option<u64> = redis::from_redis_value(ts).unwrap_or(None);
            if let Some(ts) = ts.filter(|ts| before.is_none_or(|b| *ts < b)) {
                candidates.push((ts, conversation));
            }
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        let more_candidates = candidates.len() > limit;
        candidates.truncate(limit + 1);
        // Their summaries, all at once (one pipeline on the connection).
        let summaries = futures_util::future::join_all(
            candidates
                .iter()
                .map(|(_, conversation)| self.summary(conversation, client)),
        )
        .await;
        let mut kept = Vec::new();
        for summary in summaries {
            if let Some(summary) = summary? {
                kept.push(summary);
            }
        }
        kept.sort_by(|a, b| b.last.ts.cmp(&a.last.ts).then(b.cseq.cmp(&a.cseq)));
        let more = more_candidates || kept.len() > limit;
        kept.truncate(limit);
        Ok((kept, more))
    }

    async fn mark_read(
        &self,
        conversation: &Conversation,
        client: &ClientId,
        upto: u64,
    ) -> Result<Cursor, HistoryError> {
        let (upto, moved): (u64, u8) = self
            .mark
            .key(self.key(conversation, "meta"))
            .key(self.key(conversation, "read"))
            .arg(client.as_str())
            .arg(upto)
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(Cursor {
            upto,
            moved: moved == 1,
        })
    }

    async fn delete(&self, conversation: &Conversation) -> Result<(), HistoryError> {
        let mut commands = Vec::new();
        let mut del = redis::cmd("DEL");
        del.arg(self.key(conversation, "log"))
            .arg(self.key(conversation, "read"));
        commands.push(del);
        let mut forget = redis::cmd("HDEL");
        forget.arg(self.key(conversation, "meta")).arg("ts");
        commands.push(forget);
        if let Conversation::Pair(a, b) = conversation {
            for client in [a, b] {
                let mut rem = redis::cmd("ZREM");
                rem.arg(self.convs_key(client)).arg(conversation.key());
                commands.push(rem);
            }
        }
        self.conn
            .batch(commands)
            .await
            .map_err(unavailable)
            .map(drop)
    }

    async fn ping(&self) -> Result<(), HistoryError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    fn backend(&self) -> &'static str {
        match self.conn {
            Conn::Single(_) => "redis",
            Conn::Cluster(_) => "redis-cluster",
        }
    }
}
