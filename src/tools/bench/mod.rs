//! `switchboard bench`: the load generator and the measurements behind
//! BENCHMARKS.md.
//!
//! - `switchboard bench [--mode cross|local|offline|mixed|echo] [--rate R | --ramp]`
//!   drives WebSocket clients spread over the node URLs, open-loop at a
//!   fixed offered rate, with the send time carried in each message body.
//! - `switchboard bench connect --sessions N`: connect plus presence
//!   registration rate.
//! - `switchboard bench idle --sessions K`: node memory per idle session.
//! - `switchboard bench reregister --sessions 50000 --redis-url …`: how
//!   long the nodes take to write back all their presence records.
//! - `switchboard bench drain --messages 1000`: an inbox of that many
//!   stored messages, drained on connect (time to the last one).
//! - `switchboard bench fanout`, `watch-idle`, `watch-storm` (v3 presence): a
//!   change fanned out to many watchers, memory per watch, a login storm
//!   of clients that watch each other; `--mode signal` drives signals.
//! - `switchboard bench storm` (v3): a reconnect storm, a node of N
//!   sessions killed or drained, the time until all are back elsewhere.
//! - `switchboard bench history` (v3): memory per kept message, sync on
//!   login, reads of pages and conversation lists.
//! - `switchboard bench hook-backend` (v3): a backend that allows every
//!   hook call (after `--delay-ms`), for measuring what hooks cost a node.
//! - `switchboard bench nats-floor`, `switchboard bench echo-server` and
//!   `switchboard bench relay-server`: the floors Switchboard is compared
//!   with (a bare NATS relay, a bare WebSocket echo, and a minimal
//!   WebSocket-NATS-WebSocket relay with no presence, acks or receipts),
//!   measured the same way.
//!
//! Every run prints a table on stderr (and a progress line while it runs);
//! `--json` adds one JSON object on stdout. Server CPU is read from the
//! nodes' `/metrics` and from `/proc` for `--pids` (Redis, NATS), so runs
//! must be on the same machine as the servers for that figure. Every load
//! loop is bounded in count and time.

mod floor;
mod history;
mod hook_backend;
mod inbox;
mod presence;
mod report;
mod sessions;
mod storm;
mod traffic;
mod watch;

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,

    #[command(flatten)]
    pub traffic: TrafficArgs,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Connect N sessions as fast as the nodes take them; report sessions/s.
    Connect(SessionArgs),
    /// Open K idle sessions and report node memory per session.
    Idle(SessionArgs),
    /// The floor for the bus: publish-to-subscriber through nats-server.
    NatsFloor(NatsFloorArgs),
    /// A bare WebSocket echo server, the floor for the WebSocket side
    /// (drive it with `switchboard bench --mode echo`).
    EchoServer(EchoServerArgs),
    /// The relay floor: a minimal WebSocket-in, NATS, WebSocket-out relay
    /// (run two, drive them with `switchboard bench --mode relay`).
    RelayServer(RelayServerArgs),
    /// Time the cluster-wide re-registration of N sessions' presence
    /// records, straight against a store (after it lost its data).
    Reregister(presence::ReregisterArgs),
    /// Store N messages for an offline client (nodes with --inbox), then
    /// connect it: time from connecting to the last stored message.
    Drain(inbox::DrainArgs),
    /// One client watched by N sessions comes and goes: time until the
    /// last watcher has each change, hops and CPU per change.
    Fanout(watch::FanoutArgs),
    /// Node (and Redis) memory per watch, every session watching many.
    WatchIdle(watch::WatchIdleArgs),
    /// N clients that watch each other connect within a few seconds.
    WatchStorm(watch::StormArgs),
    /// A reconnect storm: N sessions on one node, which is killed or
    /// drained; how fast and at what cost they are back on the others.
    Storm(storm::StormArgs),
    /// History (v3): Redis memory per message, sync on login, reads of
    /// pages and conversation lists (run traffic beside it).
    History(history::HistoryArgs),
    /// The cheapest backend for the hooks (v3): answers every call
    /// `{"allow":true}`, optionally after a delay, checking signatures.
    HookBackend(hook_backend::HookBackendArgs),
}

/// Where the servers are and how to report.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Node WebSocket URLs, comma-separated (ws://host:port).
    #[arg(
        long = "url",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080"
    )]
    pub urls: Vec<String>,

    /// Other server processes (Redis, NATS) whose CPU counts as server CPU,
    /// comma-separated pids.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,

    /// Also print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// How many 127.0.0.x source addresses to spread connections over
    /// (each gives ~28,000 ephemeral ports).
    #[arg(long, default_value_t = 8)]
    pub sources: u8,

    /// nats-server's monitoring address (its -m port, e.g.
    /// http://127.0.0.1:8222): the report then gives the bus messages per
    /// routed message, from /varz's in_msgs.
    #[arg(long)]
    pub nats_monitor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Sender and recipient on different nodes.
    Cross,
    /// Sender and recipient on the same node.
    Local,
    /// Recipients that are never connected.
    Offline,
    /// Half the pairs local, half cross, and one send in ten offline.
    Mixed,
    /// Against `bench echo-server`: every frame comes back to its sender.
    Echo,
    /// Against two `bench relay-server`s: cross-node traffic with no acks.
    Relay,
    /// Clients in groups of --group-size, members spread over the nodes in
    /// turn; every member sends to its group (needs --api-key to make the
    /// groups). `--rate` counts sends; each reaches the other members.
    Group,
    /// Cross-node pairs sending signals (v3) instead of messages: no acks,
    /// nothing tracked (the nodes need a `--signal-rate` above each
    /// client's share of --rate, or the excess is dropped).
    Signal,
}

impl Mode {
    /// Whether the server answers every send with an ack (or error).
    pub fn acks(self) -> bool {
        !matches!(self, Mode::Echo | Mode::Relay | Mode::Signal)
    }
}

#[derive(Debug, Clone, Args)]
pub struct TrafficArgs {
    #[command(flatten)]
    pub common: Common,

    #[arg(long, value_enum, default_value_t = Mode::Cross)]
    pub mode: Mode,

    /// Connected clients; they send in pairs, each to its partner.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,

    /// Offered messages per second, all clients together.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,

    /// Seconds of measured traffic (per step with --ramp).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds of traffic before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,

    /// Sessions per client, each a device of its own, placed on the node
    /// URLs in turn from the client's own: the first device sends, every
    /// device receives (and the sender's others get carbon copies).
    #[arg(long, default_value_t = 1)]
    pub devices: usize,

    /// Bytes of padding in each message body.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,

    /// Acks mode (`?acks=1`): every session confirms what it reads, as
    /// the Rust client does (every 32 messages, or after 200 ms of quiet);
    /// `delivered` then means confirmed.
    #[arg(long)]
    pub acks: bool,

    /// Sends ask for the inbox (`"store": true`): with --mode offline and
    /// nodes started with --inbox, every send is stored.
    #[arg(long)]
    pub store: bool,

    /// Members per group, with --mode group.
    #[arg(long, default_value_t = 10)]
    pub group_size: usize,

    /// The nodes' API key, to make the groups of --mode group.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Find the highest rate at which >= 99% is delivered with p99 under
    /// 50 ms: start at --rate and multiply by --ramp-factor per step.
    #[arg(long)]
    pub ramp: bool,

    #[arg(long, default_value_t = 1.25)]
    pub ramp_factor: f64,

    /// Highest rate a ramp tries.
    #[arg(long, default_value_t = 400_000)]
    pub max_rate: u64,

    /// HS256 secret, when the nodes require tokens.
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    #[command(flatten)]
    pub common: Common,

    /// Sessions to open (spread over the node URLs).
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,

    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,

    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct NatsFloorArgs {
    #[command(flatten)]
    pub common: Common,

    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,

    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    #[arg(long, default_value_t = 100)]
    pub payload: usize,
}

#[derive(Debug, Clone, Args)]
pub struct EchoServerArgs {
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Clone, Args)]
pub struct RelayServerArgs {
    #[arg(long, default_value = "127.0.0.1:9091")]
    pub listen: std::net::SocketAddr,

    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

/// Runs a bench command to completion; returns an exit code.
pub async fn run(args: BenchArgs) -> i32 {
    let result = match args.command {
        None => traffic::run(args.traffic).await,
        Some(BenchCommand::Connect(a)) => sessions::connect(a).await,
        Some(BenchCommand::Idle(a)) => sessions::idle(a).await,
        Some(BenchCommand::NatsFloor(a)) => floor::nats(a).await,
        Some(BenchCommand::EchoServer(a)) => return floor::echo_server(a).await,
        Some(BenchCommand::RelayServer(a)) => return floor::relay_server(a).await,
        Some(BenchCommand::Reregister(a)) => presence::reregister(a).await,
        Some(BenchCommand::Drain(a)) => inbox::drain(a).await,
        Some(BenchCommand::Fanout(a)) => watch::fanout(a).await,
        Some(BenchCommand::WatchIdle(a)) => watch::watch_idle(a).await,
        Some(BenchCommand::WatchStorm(a)) => watch::storm(a).await,
        Some(BenchCommand::Storm(a)) => storm::storm(a).await,
        Some(BenchCommand::History(a)) => history::run(a).await,
        Some(BenchCommand::HookBackend(a)) => return hook_backend::run(a).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("switchboard bench: {e}");
            1
        }
    }
}

/// A bench that could not run: the text says why.
pub type BenchResult = Result<(), String>;

/// Opens one session for `name` (a token when the nodes need one),
/// waiting at most 10 s for its welcome.
async fn open_session(
    url: &str,
    name: &str,
    jwt_secret: Option<&str>,
    options: &switchboard_client::ConnectOptions,
) -> Result<switchboard_client::Client, String> {
    use switchboard_client::{Client, Identity};
    let identity = match jwt_secret {
        Some(secret) => {
            let client = switchboard::protocol::ClientId::parse(name)
                .map_err(|e| format!("{name} is not a client id: {e}"))?;
            Identity::Token(switchboard::auth::mint_hs256(
                secret,
                &client,
                Duration::from_secs(24 * 3600),
            ))
        }
        None => Identity::Name(name.to_owned()),
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        Client::connect_with(url, identity, options),
    )
    .await
    .map_err(|_| format!("{name}: no welcome from {url} within 10 s"))?
    .map_err(|e| format!("{name} cannot connect to {url}: {e}"))
}

/// The `http://host:port/metrics` address of a node given by its ws URL.
fn metrics_url(ws_url: &str) -> String {
    let rest = ws_url
        .trim_start_matches("ws://")
        .trim_start_matches("wss://");
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("http://{authority}/metrics")
}

/// One value from a node's Prometheus text, by exact series name.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// GETs a URL over plain HTTP/1.1 (`/metrics`, nats-server's `/varz`).
async fn http_get(url: &str) -> Result<String, String> {
    let (status, body) = crate::tools::fetch(reqwest::Method::GET, url, None, None).await?;
    if !status.is_success() {
        return Err(format!("{url}: {status}"));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Snapshot of the server side: CPU seconds per process, and the nodes'
/// routing counters.
#[derive(Debug, Clone, Default)]
struct ServerSample {
    cpu_seconds: f64,
    node_rss: Vec<f64>,
    routed: f64,
    lookups: f64,
    /// Context switches of the nodes and --pids processes, all threads.
    context_switches: f64,
    /// Messages nats-server has taken in (with --nats-monitor).
    bus_msgs: f64,
    /// Message hops the nodes published.
    hops: f64,
}

async fn sample_servers(common: &Common) -> ServerSample {
    let mut sample = ServerSample::default();
    for url in &common.urls {
        if let Ok(text) = http_get(&metrics_url(url)).await {
            sample.cpu_seconds += metric(&text, "process_cpu_seconds_total").unwrap_or(0.0);
            sample
                .node_rss
                .push(metric(&text, "process_resident_memory_bytes").unwrap_or(0.0));
            for branch in ["local", "remote", "offline", "fanout"] {
                let series = format!("switchboard_sends_total{{branch=\"{branch}\"}}");
                sample.routed += metric(&text, &series).unwrap_or(0.0);
            }
            sample.lookups += metric(&text, "switchboard_presence_lookups_total").unwrap_or(0.0);
            sample.hops += metric(&text, "switchboard_hops_published_total").unwrap_or(0.0);
            for kind in ["voluntary", "involuntary"] {
                let series = format!("process_context_switches_total{{kind=\"{kind}\"}}");
                sample.context_switches += metric(&text, &series).unwrap_or(0.0);
            }
        }
    }
    for pid in &common.pids {
        let pid = pid.to_string();
        sample.cpu_seconds += switchboard::process::cpu_seconds(&pid).unwrap_or(0.0);
        if let Some((voluntary, involuntary)) = switchboard::process::context_switches(&pid) {
            sample.context_switches += (voluntary + involuntary) as f64;
        }
    }
    if let Some(monitor) = &common.nats_monitor
        && let Ok(varz) = http_get(&format!("{}/varz", monitor.trim_end_matches('/'))).await
        && let Ok(varz) = serde_json::from_str::<serde_json::Value>(&varz)
    {
        sample.bus_msgs = varz["in_msgs"].as_f64().unwrap_or(0.0);
    }
    sample
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_urls_and_values() {
        assert_eq!(
            metrics_url("ws://127.0.0.1:8081"),
            "http://127.0.0.1:8081/metrics"
        );
        assert_eq!(metrics_url("ws://h:1/ws"), "http://h:1/metrics");
        let text = "a 1\nswitchboard_sends_total{branch=\"local\"} 7\nb_total 2.5\n";
        assert_eq!(
            metric(text, "switchboard_sends_total{branch=\"local\"}"),
            Some(7.0)
        );
        assert_eq!(metric(text, "b_total"), Some(2.5));
        assert_eq!(metric(text, "b"), None);
    }
}
