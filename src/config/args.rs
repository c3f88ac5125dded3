//! The flags of `switchboard serve`, each with an environment twin. Their
//! doc comments are the `--help` text; docs/security.md and the README
//! list the same defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Flags of `switchboard serve` (also accepted by a bare `switchboard`).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on for WebSocket and HTTP.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// This node's id (1-64 of A-Z a-z 0-9 _ -). Default: the host name
    /// plus a short random suffix.
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,

    // ---- Backends -------------------------------------------------------
    #[command(flatten)]
    pub presence: PresenceArgs,

    /// NATS server URL(s) for node-to-node hops, comma-separated,
    /// e.g. nats://127.0.0.1:4222, or nats://user:password@host:4222.
    /// Needs --redis-url too.
    #[arg(long, env = "SWITCHBOARD_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,

    /// NATS credentials file (user JWT and nkey seed, as made by nsc) for
    /// servers in operator mode.
    #[arg(long, env = "SWITCHBOARD_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,

    /// File holding this node's NATS nkey seed (SU...), for servers that
    /// list the node's public nkey in their authorization block.
    #[arg(long, env = "SWITCHBOARD_NATS_NKEY", value_name = "FILE")]
    pub nats_nkey: Option<PathBuf>,

    /// Prefix of every Redis key this node writes.
    #[arg(long, env = "SWITCHBOARD_KEY_PREFIX", default_value = "sb:")]
    pub key_prefix: String,

    /// Prefix of the NATS subjects nodes listen on (<prefix>.node.<node id>).
    #[arg(long, env = "SWITCHBOARD_SUBJECT_PREFIX", default_value = "sb")]
    pub subject_prefix: String,

    // ---- Inbox, last-seen, events (v2) -----------------------------------
    /// Store-and-forward for sends with "store": true to an offline
    /// client: memory (one node on its own; lost when it stops), or a Redis
    /// URL (Redis Streams; may be the presence Redis). Default: no inbox.
    #[arg(long, env = "SWITCHBOARD_INBOX", hide_env_values = true)]
    pub inbox: Option<String>,

    /// Most messages one client's inbox holds; a send beyond it gets
    /// stored: false, store_error: inbox_full.
    #[arg(long, env = "SWITCHBOARD_INBOX_MAX_MESSAGES", default_value_t = 1000)]
    pub inbox_max_messages: usize,

    /// How long a stored message waits for its recipient, e.g. 30s, 12h, 7d.
    #[arg(long, env = "SWITCHBOARD_INBOX_TTL", default_value = "7d")]
    pub inbox_ttl: String,

    // ---- Backend hooks (v3) -------------------------------------------------
    /// Ask the application's backend before admitting a connection and
    /// before routing a client's message (http:// or https://; signed with
    /// --hook-secret). Default: no hooks.
    #[arg(long, env = "SWITCHBOARD_HOOK_URL", hide_env_values = true)]
    pub hook_url: Option<String>,

    /// Signs every hook call (HMAC-SHA256 in X-Switchboard-Signature).
    #[arg(long, env = "SWITCHBOARD_HOOK_SECRET", hide_env_values = true)]
    pub hook_secret: Option<String>,

    /// The hooks in use: connect, send, or both (comma-separated).
    #[arg(long, env = "SWITCHBOARD_HOOKS", default_value = "connect,send")]
    pub hooks: String,

    /// A hook call's answer must come within this (waiting for a call
    /// slot included).
    #[arg(long, env = "SWITCHBOARD_HOOK_TIMEOUT_MS", default_value_t = 1000)]
    pub hook_timeout_ms: u64,

    /// Hook calls under way at once, per node.
    #[arg(long, env = "SWITCHBOARD_HOOK_CONCURRENCY", default_value_t = 64)]
    pub hook_concurrency: usize,

    /// When a hook call fails: closed (refuse: 503 hook_unavailable, or
    /// unavailable for a send) or open (go on as if allowed).
    #[arg(long, env = "SWITCHBOARD_HOOK_FAILURE", default_value = "closed")]
    pub hook_failure: String,

    // ---- History (v3) ------------------------------------------------------
    /// Keep every message of a conversation, for paging, sync across
    /// devices and read state: memory (one node on its own; lost when it
    /// stops) or a Redis URL (may be the presence Redis). Default: no
    /// history.
    #[arg(
        long,
        env = "SWITCHBOARD_HISTORY",
        hide_env_values = true,
        conflicts_with = "history_cluster"
    )]
    pub history: Option<String>,

    /// History on a Redis Cluster instead: seed URLs, comma-separated.
    #[arg(long, env = "SWITCHBOARD_HISTORY_CLUSTER", hide_env_values = true)]
    pub history_cluster: Option<String>,

    /// How long a conversation's messages are kept, e.g. 30d, 12h.
    #[arg(long, env = "SWITCHBOARD_HISTORY_TTL", default_value = "30d")]
    pub history_ttl: String,

    /// Messages kept per conversation (the newest).
    #[arg(long, env = "SWITCHBOARD_HISTORY_MAX", default_value_t = 10_000)]
    pub history_max: usize,

    /// How long a client's last-seen time (and why its last session ended)
    /// is kept, e.g. 30d; offline answers carry it as last_seen.
    #[arg(long, env = "SWITCHBOARD_LAST_SEEN_TTL", default_value = "30d")]
    pub last_seen_ttl: String,

    /// Publish events on NATS (<subject prefix>.events.presence and
    /// .events.offline); clustered nodes only.
    #[arg(long, env = "SWITCHBOARD_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub events: bool,

    /// POST every event to this URL as {"subject":…,"event":…}, signed with
    /// --webhook-secret (X-Switchboard-Signature: sha256=<hex HMAC>).
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<String>,

    /// HMAC-SHA256 key of the webhook's signatures.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Events waiting for the webhook at most; beyond it they are dropped,
    /// counted in switchboard_webhook_dropped_total and logged.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_QUEUE", default_value_t = 10_000)]
    pub webhook_queue: usize,

    /// PEM CA certificates to trust, besides the system's, for the node's
    /// own https:// requests to the application's backend (the webhook):
    /// a backend with a private CA.
    #[arg(long, env = "SWITCHBOARD_BACKEND_CA_FILE", value_name = "FILE")]
    pub backend_ca_file: Option<PathBuf>,

    // ---- Who may connect ------------------------------------------------
    /// HS256 secret for client JWTs. Without it (and without
    /// --jwt-public-key), authentication is off and clients name themselves
    /// with ?client_id= (development only).
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key for client JWTs instead of a shared secret: an RSA
    /// key means RS256 tokens, an Ed25519 key EdDSA tokens.
    #[arg(long, env = "SWITCHBOARD_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `aud` claim of client JWTs. Default: not checked.
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim of client JWTs. Default: not checked.
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Bearer key for the HTTP API (/api/v1/...). Without it the API answers 403.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Browser origins allowed to open WebSocket sessions, comma-separated
    /// (e.g. https://chat.example.com), or * for any. Default: only pages
    /// served by this node itself. Requests without an Origin header
    /// (non-browser clients) are always allowed.
    #[arg(long, env = "SWITCHBOARD_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Allow authentication off on a non-loopback address. Anyone who can
    /// reach the port can then speak as any client.
    #[arg(long, env = "SWITCHBOARD_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// PEM certificate chain: serve HTTPS and wss:// natively. Needs --tls-key.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    // ---- Limits ---------------------------------------------------------
    /// Largest client frame accepted, in bytes. Larger frames get a
    /// too_large error; frames over four times this close the session (1009).
    #[arg(long, env = "SWITCHBOARD_MAX_FRAME_BYTES", default_value_t = 65_536)]
    pub max_frame_bytes: usize,

    /// Most WebSocket sessions this node holds; upgrades beyond it get 503.
    /// 0: the file-descriptor limit less 256 kept for everything else.
    #[arg(long, env = "SWITCHBOARD_MAX_SESSIONS", default_value_t = 0)]
    pub max_sessions: usize,

    /// Most devices one client may have online at once, across the
    /// cluster (every node must agree). A session of a new device beyond it
    /// is refused at the upgrade with HTTP 409 too_many_devices; a new
    /// session of a device already online replaces the old one (4001).
    #[arg(long, env = "SWITCHBOARD_MAX_DEVICES", default_value_t = 8)]
    pub max_devices: usize,

    /// Most members one group may have (every node must agree). Adding one
    /// more through the API is refused with HTTP 409 group_full.
    #[arg(long, env = "SWITCHBOARD_MAX_GROUP_MEMBERS", default_value_t = 10_000)]
    pub max_group_members: usize,

    /// v3: at most one presence frame per watched client per watching
    /// session in this many ms (the last one always current).
    #[arg(long, env = "SWITCHBOARD_PRESENCE_COALESCE_MS", default_value_t = 1000)]
    pub presence_coalesce_ms: u64,

    /// v3: most clients one session may watch; a watch beyond it is refused
    /// whole (too_many_watched).
    #[arg(long, env = "SWITCHBOARD_MAX_WATCHED", default_value_t = 1000)]
    pub max_watched: usize,

    /// v3: most contacts one client may have (every node must agree);
    /// adding one more through the API is refused with HTTP 409.
    #[arg(long, env = "SWITCHBOARD_MAX_CONTACTS", default_value_t = 10_000)]
    pub max_contacts: usize,

    /// v3: signals one session may send per second; the excess is dropped
    /// and counted (switchboard_signals_total{result="rate_limited"}).
    #[arg(long, env = "SWITCHBOARD_SIGNAL_RATE", default_value_t = 10)]
    pub signal_rate: u32,

    /// Acks mode: how long a session whose connection dropped (or whose
    /// node is draining) stays detached, its messages kept, for the client
    /// to resume it on any node. 0 turns resume off.
    #[arg(long, env = "SWITCHBOARD_RESUME_WINDOW_MS", default_value_t = 30_000)]
    pub resume_window_ms: u64,

    /// Signs resume tokens; the same on every node of a cluster (a
    /// clustered node without one offers no resume). A lone node makes one
    /// up when it starts.
    #[arg(long, env = "SWITCHBOARD_RESUME_SECRET", hide_env_values = true)]
    pub resume_secret: Option<String>,

    /// Message frames that may wait for one session's socket. A session
    /// whose queue fills up is closed with 4008 (slow consumer). Receipts
    /// owed to a session as a sender are kept apart and never count.
    #[arg(long, env = "SWITCHBOARD_SESSION_QUEUE", default_value_t = 1024)]
    pub session_queue: usize,

    /// Bytes of message frames that may wait for one session's socket;
    /// beyond it the session is closed with 4008 (slow consumer) like a
    /// full --session-queue. Must hold the largest message frame
    /// (--max-frame-bytes plus 512).
    #[arg(long, env = "SWITCHBOARD_SESSION_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub session_queue_bytes: usize,

    /// Longest a write to one client socket may take, in milliseconds,
    /// before the session is closed with 4008 (slow consumer).
    /// --hop-timeout-ms must exceed it.
    #[arg(long, env = "SWITCHBOARD_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,

    /// Longest a new connection may take to finish its TLS handshake and
    /// send its request headers, in milliseconds.
    #[arg(
        long,
        env = "SWITCHBOARD_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub handshake_timeout_ms: u64,

    /// How often the node pings each session, in milliseconds.
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL_MS", default_value_t = 20_000)]
    pub ping_interval_ms: u64,

    /// A session the node has heard nothing from (no frame, no pong) for
    /// this long is closed with 1008, in milliseconds.
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// New sessions (connects and resumes) this node admits per second;
    /// beyond it the upgrade gets 503 busy with a jittered Retry-After, so
    /// that a reconnect storm is spread instead of queued. 0: no limit.
    /// The default is about two thirds of what one node registers per
    /// second on a 2-core machine (BENCHMARKS.md): raise it on larger ones.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECT_RATE", default_value_t = 5_000)]
    pub max_connect_rate: u32,

    /// A draining node asks each session it closes (1001) to wait a random
    /// time below this before reconnecting (in the close reason,
    /// `reconnect_after_ms=`), so that its clients come back spread over
    /// this window rather than at once. 0: no hint.
    #[arg(long, env = "SWITCHBOARD_DRAIN_SPREAD_MS", default_value_t = 2_000)]
    pub drain_spread_ms: u64,

    /// Frames per second one session may send on average; frames beyond it
    /// are refused with rate_limited. 0 turns the limit off.
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,

    /// Frames one session may send in a burst above the rate.
    #[arg(long, env = "SWITCHBOARD_RATE_BURST", default_value_t = 200)]
    pub rate_burst: u32,

    /// A session refused for its rate without a break of a second or more
    /// for this long is closed with 1008, in milliseconds. 0: never closed.
    #[arg(long, env = "SWITCHBOARD_RATE_ABUSE_MS", default_value_t = 10_000)]
    pub rate_abuse_ms: u64,

    /// Requests per second the HTTP send API takes, for the whole node;
    /// beyond it callers get 429. 0 turns the limit off.
    #[arg(long, env = "SWITCHBOARD_API_RATE_LIMIT", default_value_t = 1000)]
    pub api_rate_limit: u32,

    /// Requests the HTTP send API takes in a burst above its rate.
    #[arg(long, env = "SWITCHBOARD_API_RATE_BURST", default_value_t = 2000)]
    pub api_rate_burst: u32,

    // ---- Cluster tuning -------------------------------------------------
    /// How long a node's heartbeat lasts, in milliseconds. A node that
    /// stops heartbeating (crashed, or cut off from presence) is believed
    /// dead after at most this plus a third of it: its presence records are
    /// no longer believed and its in-flight messages are answered offline.
    #[arg(long, env = "SWITCHBOARD_NODE_TTL_MS", default_value_t = 3000)]
    pub node_ttl_ms: u64,

    /// Longest a cross-node message waits for its outcome from the
    /// recipient's node before its sender is told offline, in milliseconds.
    /// A last resort: lost nodes and bounced messages are answered sooner.
    /// Must exceed --write-timeout-ms: a message may wait that long for a
    /// slow recipient's socket before its outcome is known.
    #[arg(long, env = "SWITCHBOARD_HOP_TIMEOUT_MS", default_value_t = 20_000)]
    pub hop_timeout_ms: u64,

    /// Nagle for the bus, in milliseconds: a message that would go to
    /// another node alone waits up to this long for more traffic to pack
    /// with it. Fewer bus messages at low rates, for up to this much
    /// latency; traffic already batched never waits. 0 (the default): off.
    #[arg(long, env = "SWITCHBOARD_BUS_LINGER_MS", default_value_t = 0)]
    pub bus_linger_ms: u64,

    /// Remote routes this node remembers (client -> node), sparing a
    /// presence lookup per message. 0 turns the route cache off.
    #[arg(long, env = "SWITCHBOARD_ROUTE_CACHE", default_value_t = 100_000)]
    pub route_cache: usize,

    /// How often each node writes its live sessions' presence records back
    /// to the store, in milliseconds, so that a record that vanished while
    /// its session lives (evicted, lost in a failover, deleted by mistake)
    /// is back within this. memcached records are also written back every
    /// third of --memcached-ttl-secs.
    #[arg(
        long,
        env = "SWITCHBOARD_PRESENCE_REFRESH_MS",
        default_value_t = 30_000
    )]
    pub presence_refresh_ms: u64,

    /// Threads that run the node's work. Default: one per CPU the process
    /// may use. Nodes that share a machine (with each other, or with NATS
    /// and Redis) should split its cores: measured on 2 cores shared by two
    /// nodes, NATS and Redis, 1 thread each cut server CPU per message by
    /// 10-20% (docs/performance.md).
    #[arg(long, env = "SWITCHBOARD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Log filter, e.g. info or switchboard=debug.
    #[arg(long, env = "SWITCHBOARD_LOG", default_value = "info")]
    pub log: String,

    /// Log lines as text, or one JSON object per line (fields: timestamp,
    /// level, target, message, and the event's own fields) for a log
    /// pipeline.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which shared presence store a node (or `switchboard bench reregister`)
/// uses: at most one of the three.
#[derive(Debug, Clone, Args)]
pub struct PresenceArgs {
    /// Redis URL for the shared presence registry: redis://[:password@]host:port[/db],
    /// or rediss:// for TLS. Needs --nats-url too; leave both unset to run
    /// one node on its own.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis Cluster for the presence registry instead of one server: the
    /// URLs of some of its nodes, comma-separated (any one that answers is
    /// enough to learn the rest), e.g. redis://10.0.0.1:7000,redis://10.0.0.2:7000.
    /// Needs --nats-url too.
    #[arg(long, env = "SWITCHBOARD_REDIS_CLUSTER", hide_env_values = true)]
    pub redis_cluster: Option<String>,

    /// memcached for the presence registry instead of Redis: host:port of
    /// one or several servers, comma-separated (keys are spread over them
    /// by consistent hashing). Needs --nats-url too.
    #[arg(long, env = "SWITCHBOARD_MEMCACHED_URL")]
    pub memcached_url: Option<String>,

    /// Lifetime of a presence record in memcached, in seconds. Nodes write
    /// their live sessions' records back every third of it, so a record
    /// memcached evicted is back within that; a crashed node's records are
    /// gone within it.
    #[arg(long, env = "SWITCHBOARD_MEMCACHED_TTL_SECS", default_value_t = 180)]
    pub memcached_ttl_secs: u32,

    /// PEM file of the certificate authority that signed Redis's TLS
    /// certificate, for rediss:// URLs. Default: the system's trusted roots.
    #[arg(long, env = "SWITCHBOARD_REDIS_CA", value_name = "FILE")]
    pub redis_ca: Option<PathBuf>,
}
