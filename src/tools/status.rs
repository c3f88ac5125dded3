//! `switchboard status`: the cluster from the outside. Live nodes come from
//! the heartbeats in Redis (`<prefix>nodes`, the sorted set every node
//! beats into); each node is then asked over NATS, on its request subject
//! `<subject prefix>.req.<node id>` (the subject resumes use, protected
//! like the node subjects: the node permissions of nats.conf cover it), for
//! its sessions, detached sessions, messages in flight and sends so far.
//! Asked twice, a second apart, for the message rates.
//!
//! ```text
//! $ switchboard status --redis-url redis://127.0.0.1:6379 --nats-url nats://127.0.0.1:4222
//! node    sessions  detached  in flight  msgs/s  local  remote  offline  fanout  up
//! node-1       812         0          3   412.0  …
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use switchboard::protocol::requests::Request;
use switchboard::protocol::status::NodeStatus;

/// How long a node has to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Between the two samples the rates come from.
const RATE_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The presence Redis the nodes beat into.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: String,
    /// The NATS the nodes use.
    #[arg(long, env = "SWITCHBOARD_NATS_URL")]
    pub nats_url: String,
    /// The nodes' --key-prefix.
    #[arg(long, default_value = "sb:")]
    pub key_prefix: String,
    /// The nodes' --subject-prefix.
    #[arg(long, default_value = "sb")]
    pub subject_prefix: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One node, as `status` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub node: String,
    /// Its heartbeat's expiry is in the future.
    pub alive: bool,
    /// Its answer (`None`: it did not answer in time).
    pub status: Option<NodeStatus>,
    /// Sends per second over the last second, by branch and in total.
    pub rates: BTreeMap<String, f64>,
}

/// The cluster, as `status` reports it. (Redis and NATS answered, or the
/// command failed saying which did not; each node names its own backends.)
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
}

pub async fn run(args: StatusArgs) -> i32 {
    match cluster(&args).await {
        Ok(view) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&view).unwrap_or_default()
                );
            } else {
                print_table(&view);
            }
            0
        }
        Err(e) => {
            eprintln!("switchboard status: {e}");
            1
        }
    }
}

/// Reads the heartbeats, asks every live node twice, a second apart.
pub async fn cluster(args: &StatusArgs) -> Result<ClusterView, String> {
    let members = heartbeats(&args.redis_url, &args.key_prefix).await?;
    let nats = async_nats::connect(&args.nats_url)
        .await
        .map_err(|e| format!("NATS at {}: {e}", switchboard::redact::url(&args.nats_url)))?;
    let ask = |node: String| {
        let nats = nats.clone();
        let subject = format!("{}.req.{node}", args.subject_prefix);
        async move {
            let payload = serde_json::to_vec(&Request::Status).expect("serializable");
            let answer = tokio::time::timeout(ASK_TIMEOUT, nats.request(subject, payload.into()))
                .await
                .ok()?
                .ok()?;
            serde_json::from_slice::<NodeStatus>(&answer.payload).ok()
        }
    };
    let mut first = Vec::new();
    for (node, alive) in &members {
        first.push(if *alive {
            ask(node.clone()).await
        } else {
            None
        });
    }
    tokio::time::sleep(RATE_WINDOW).await;
    let mut nodes = Vec::new();
    for ((node, alive), before) in members.into_iter().zip(first) {
        let now = if alive { ask(node.clone()).await } else { None };
        let mut rates = BTreeMap::new();
        if let (Some(before), Some(now)) = (&before, &now) {
            let mut total = 0.0;
            for (branch, n) in &now.sends {
                let rate = n.saturating_sub(*before.sends.get(branch).unwrap_or(&0)) as f64
                    / RATE_WINDOW.as_secs_f64();
                total += rate;
                rates.insert(branch.clone(), rate);
            }
            rates.insert("total".into(), total);
        }
        nodes.push(NodeView {
            node,
            alive,
            status: now,
            rates,
        });
    }
    Ok(ClusterView { nodes })
}

/// Every node's newest heartbeat: (node id, alive by Redis' clock).
async fn heartbeats(redis_url: &str, prefix: &str) -> Result<Vec<(String, bool)>, String> {
    let shown = switchboard::redact::url(redis_url);
    let client = redis::Client::open(redis_url).map_err(|e| format!("Redis at {shown}: {e}"))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("Redis at {shown}: {e}"))?;
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("Redis at {shown}: {e}"))?;
    let now_ms = secs * 1000 + micros / 1000;
    let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}nodes"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("Redis at {shown}: {e}"))?;
    // Members are `<node>|<run started>|<nonce>`: the newest run per node.
    let mut newest: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for (member, expires) in entries {
        let mut parts = member.split('|');
        let (Some(node), Some(started)) = (parts.next(), parts.next()) else {
            continue;
        };
        let started: u64 = started.parse().unwrap_or(0);
        let entry = newest.entry(node.to_owned()).or_insert((started, expires));
        if started >= entry.0 {
            *entry = (started, expires);
        }
    }
    Ok(newest
        .into_iter()
        .map(|(node, (_, expires))| (node, expires as u64 >= now_ms))
        .collect())
}

fn print_table(view: &ClusterView) {
    println!(
        "{:<24} {:>6} {:>9} {:>9} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8}  backends",
        "node",
        "alive",
        "sessions",
        "detached",
        "in flight",
        "msgs/s",
        "local",
        "remote",
        "offline",
        "fanout"
    );
    for n in &view.nodes {
        let rate = |b: &str| n.rates.get(b).copied().unwrap_or(0.0);
        match &n.status {
            Some(s) => println!(
                "{:<24} {:>6} {:>9} {:>9} {:>10} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}  {} {}, {} {}",
                n.node,
                "yes",
                s.sessions,
                s.detached,
                s.in_flight,
                rate("total"),
                rate("local"),
                rate("remote"),
                rate("offline"),
                rate("fanout"),
                s.presence,
                if s.presence_ok { "ok" } else { "DOWN" },
                s.bus,
                if s.bus_ok { "ok" } else { "DOWN" }
            ),
            None => println!(
                "{:<24} {:>6} {:>9}",
                n.node,
                if n.alive { "yes" } else { "no" },
                "(no answer)"
            ),
        }
    }
}
