//! `switchboard bench reregister`: how long the nodes of a cluster take to
//! write back the records of all their live sessions, straight against a
//! presence store. That happens after the store lost its data (Redis
//! restarted empty, a failover to a replica that missed writes, a memcached
//! server restarted) and, on memcached, as the routine refresh. It must
//! take seconds, not minutes: until it is done, the clients whose records
//! are missing look offline.
//!
//! Records go under a fresh key prefix and are removed afterwards (on
//! memcached they would also expire). Run it against a scratch store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use futures_util::{StreamExt, stream};
use uuid::Uuid;

use super::BenchResult;
use switchboard::config::PresenceArgs;
use switchboard::presence::{PresenceRecord, PresenceStore};
use switchboard::protocol::{ClientId, DeviceId, NodeId, now_ms};

#[derive(Debug, Clone, clap::Args)]
pub struct ReregisterArgs {
    #[command(flatten)]
    pub presence: PresenceArgs,

    /// Live sessions across the cluster.
    #[arg(long, default_value_t = 50_000)]
    pub sessions: usize,

    /// Nodes sharing them; each re-registers its share at the same time,
    /// on a connection of its own, as after a store restart.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,

    /// Also print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn reregister(args: ReregisterArgs) -> BenchResult {
    let target = args.presence.target().map_err(|e| e.0)?.ok_or(
        "name the store to measure: --redis-url, --redis-cluster or --memcached-url".to_owned(),
    )?;
    if args.sessions == 0 || args.nodes == 0 || args.sessions > 1_000_000 {
        return Err("--sessions must be 1..=1000000 and --nodes at least 1".into());
    }
    let prefix = format!("sbbench:{}:", &Uuid::new_v4().simple().to_string()[..8]);
    let mut stores = Vec::new();
    for _ in 0..args.nodes {
        stores.push(
            switchboard::backends::connect_presence(&target, &prefix)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let since = now_ms();
    let shares: Vec<Vec<(ClientId, PresenceRecord)>> = (0..args.nodes)
        .map(|n| {
            let node = NodeId::parse(&format!("bench-{n}")).expect("a valid node id");
            (n..args.sessions)
                .step_by(args.nodes)
                .map(|i| {
                    let client = ClientId::parse(&format!("client-{i}")).expect("a valid id");
                    let record = PresenceRecord {
                        device: DeviceId::default_device(),
                        node: node.clone(),
                        session: Uuid::new_v4(),
                        since,
                    };
                    (client, record)
                })
                .collect()
        })
        .collect();

    eprintln!(
        "reregister: {} sessions over {} node(s) on {} ({})",
        args.sessions,
        args.nodes,
        stores[0].backend(),
        target.flag()
    );
    let into_empty = all_nodes_reregister(&stores, &shares).await?;
    let refresh = all_nodes_reregister(&stores, &shares).await?;
    check_written(&stores[0], &shares).await?;
    let removed = remove_all(&stores, &shares).await?;

    let rate = |d: Duration| args.sessions as f64 / d.as_secs_f64();
    eprintln!(
        "  into an empty store: {:>8.3} s  ({:>9.0} records/s)",
        into_empty.as_secs_f64(),
        rate(into_empty)
    );
    eprintln!(
        "  over present records: {:>7.3} s  ({:>9.0} records/s)",
        refresh.as_secs_f64(),
        rate(refresh)
    );
    eprintln!(
        "  removing them all:   {:>8.3} s  ({:>9.0} records/s, one remove each, as sessions end)",
        removed.as_secs_f64(),
        rate(removed)
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "reregister",
                "backend": stores[0].backend(),
                "sessions": args.sessions,
                "nodes": args.nodes,
                "into_empty_s": into_empty.as_secs_f64(),
                "refresh_s": refresh.as_secs_f64(),
                "remove_s": removed.as_secs_f64(),
            })
        );
    }
    Ok(())
}

/// Every node re-registers its share at once; the time until all are done.
async fn all_nodes_reregister(
    stores: &[Arc<dyn PresenceStore>],
    shares: &[Vec<(ClientId, PresenceRecord)>],
) -> Result<Duration, String> {
    let started = Instant::now();
    let results = tokio::time::timeout(
        Duration::from_secs(300),
        try_join_all(
            stores
                .iter()
                .zip(shares)
                .map(|(store, share)| store.reregister(share)),
        ),
    )
    .await
    .map_err(|_| "re-registration took over 5 minutes".to_owned())?
    .map_err(|e| format!("re-registration failed: {e}"))?;
    let elapsed = started.elapsed();
    let refused = results.iter().flatten().filter(|r| r.is_some()).count();
    if refused > 0 {
        return Err(format!(
            "{refused} records were refused as taken by another session: the key prefix collided"
        ));
    }
    Ok(elapsed)
}

/// A sample of records must read back as written: a fast run that loses
/// records is no result.
async fn check_written(
    store: &Arc<dyn PresenceStore>,
    shares: &[Vec<(ClientId, PresenceRecord)>],
) -> Result<(), String> {
    for share in shares {
        for (client, record) in share.iter().step_by(97) {
            let found = store.lookup(client).await.map_err(|e| e.to_string())?;
            if found.first() != Some(record) || found.len() != 1 {
                return Err(format!("{client}: wrote {record:?}, read back {found:?}"));
            }
        }
    }
    Ok(())
}

/// Removes every record, each with its own compare-and-delete, as closing
/// sessions do, up to 256 at once per node.
async fn remove_all(
    stores: &[Arc<dyn PresenceStore>],
    shares: &[Vec<(ClientId, PresenceRecord)>],
) -> Result<Duration, String> {
    let started = Instant::now();
    try_join_all(stores.iter().zip(shares).map(|(store, share)| async move {
        let removed: Vec<_> = stream::iter(share)
            .map(|(client, record)| {
                store.remove(client, &record.device, &record.node, record.session)
            })
            .buffer_unordered(256)
            .collect()
            .await;
        removed
            .into_iter()
            .collect::<Result<Vec<bool>, _>>()
            .map_err(|e| e.to_string())
    }))
    .await?;
    Ok(started.elapsed())
}
