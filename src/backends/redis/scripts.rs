//! The Lua scripts behind presence writes. Each is one atomic step on the
//! server, and each touches exactly one key (`KEYS[1]`), so that on a
//! Redis Cluster it runs on the master that owns that key's slot: a
//! script with keys in two slots is refused there (CROSSSLOT).

pub const REGISTER: &str = r"
local prev = redis.call('HMGET', KEYS[1], 'node', 'session', 'since')
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'session', ARGV[2], 'since', ARGV[3])
return prev
";

/// Re-registration after data loss: write the record only if the client
/// has none, or one of this same session; otherwise return the other one.
pub const REREGISTER: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'node', 'session', 'since')
if cur[1] and cur[2] and cur[3] and cur[2] ~= ARGV[2] then
  return cur
end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'session', ARGV[2], 'since', ARGV[3])
return {}
";

/// The heartbeat: one sorted set of incarnation -> expiry, stamped with
/// Redis' own clock so node clocks need not agree. Touches one key only
/// (a Redis Cluster slot rule). ARGV: member, ttl ms, retention ms.
pub const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
return {now, added, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
";

/// Compare-and-delete: 1 if the record named the session and is gone.
pub const REMOVE: &str = r"
if redis.call('HGET', KEYS[1], 'session') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Sweep of one indexed session of a lost run. ARGV: node, session, ghosts
/// before. 1: ghost deleted; 2: the record is gone or belongs to another
/// session or node (drop the member); 0: a live record (keep).
pub const SWEEP_ONE: &str = r"
local r = redis.call('HMGET', KEYS[1], 'node', 'session', 'since')
if r[1] ~= ARGV[1] or r[2] ~= ARGV[2] then
  return 2
end
if tonumber(r[3] or '0') < tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";
