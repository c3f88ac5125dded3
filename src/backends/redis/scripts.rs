//! The Lua scripts behind presence writes. Each is one atomic step on the
//! server, and each touches exactly one key (`KEYS[1]`, a client's hash
//! of device fields), so that on a Redis Cluster it runs on the master
//! that owns that key's slot: a script with keys in two slots is refused
//! there (CROSSSLOT). Field values are the JSON of docs/protocol.md,
//! decoded with Redis' own cjson.

/// Registers a device field. ARGV: device, value, max devices. Returns
/// `{1, previous value or nil, all fields}` when written, `{0, nil, all
/// fields}` when the client already has max devices and this is a new one.
pub const REGISTER: &str = r"
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if not prev and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return {0, false, redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, prev or false, redis.call('HGETALL', KEYS[1])}
";

/// The session a field's value names, or nil for a value that is not one.
const SESSION_OF: &str = r"
local function session_of(value)
  local ok, field = pcall(cjson.decode, value)
  if ok and type(field) == 'table' then return field['session'], field end
  return nil, nil
end
";

/// Re-registration after data loss: write the field only if absent, or
/// naming this same session; otherwise return the other value. ARGV:
/// device, value, session.
pub fn reregister() -> String {
    format!(
        r"{SESSION_OF}
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local session = session_of(cur)
  if session and session ~= ARGV[3] then return cur end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return false
"
    )
}

/// Compare-and-delete of one field: 1 if it named the session and is gone
/// (the key goes with its last field). ARGV: device, session.
pub fn remove() -> String {
    format!(
        r"{SESSION_OF}
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and session_of(cur) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"
    )
}

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

/// Sweep of one indexed session of a lost run. ARGV: device, node,
/// session, ghosts before. 1: ghost deleted; 2: the field is gone or
/// belongs to another session or node (drop the index member); 0: a live
/// field (keep).
pub fn sweep_one() -> String {
    format!(
        r"{SESSION_OF}
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 2 end
local session, field = session_of(cur)
if not session or field['node'] ~= ARGV[2] or session ~= ARGV[3] then return 2 end
if tonumber(field['since'] or 0) < tonumber(ARGV[4]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"
    )
}

/// Adds a group member. KEYS[1] is the group's set; ARGV: client id, max
/// members. Returns 1 when added, 0 when already a member, 2 when the
/// group is full.
pub const ADD_MEMBER: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 2 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
";
