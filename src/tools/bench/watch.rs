//! Presence-for-clients benchmarks (v3):
//!
//! - `fanout`: one client watched by N sessions spread over the nodes
//!   comes and goes; how long until the last watcher has each change, the
//!   `watched` hops and bus messages per change, server CPU per frame;
//! - `watch-idle`: node (and Redis) memory per watch, with every session
//!   watching many others;
//! - `storm`: N clients each watching W others connect at independent
//!   times within a few seconds; presence frames per session, Redis
//!   commands and bus messages per connect.
//!
//! Watchers read and drop every frame, as a real client would; nothing
//! here waits without a bound.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::report::Latencies;
use super::{BenchResult, Common, metric, metrics_url, sample_servers};
use switchboard_client::{Client, ConnectOptions, RawEvent};

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,

    /// Sessions watching the one client, spread over the node URLs.
    #[arg(long, default_value_t = 10_000)]
    pub watchers: usize,

    /// Presence changes (the watched client connects, then leaves, in turn).
    #[arg(long, default_value_t = 20)]
    pub changes: usize,

    /// Time between changes; longer than the nodes'
    /// --presence-coalesce-ms, so that each change goes out at once.
    #[arg(long, default_value_t = 1200)]
    pub gap_ms: u64,

    /// Connections opened at once while setting up.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Args)]
pub struct WatchIdleArgs {
    #[command(flatten)]
    pub common: Common,

    /// Sessions (spread over the node URLs).
    #[arg(long, default_value_t = 5000)]
    pub sessions: usize,

    /// Clients each session watches (the next ones among the sessions).
    #[arg(long, default_value_t = 200)]
    pub watch: usize,

    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,

    /// The presence Redis, to report its memory per watch too.
    #[arg(long)]
    pub redis_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,

    /// Clients connecting.
    #[arg(long, default_value_t = 5000)]
    pub sessions: usize,

    /// Others each one watches as soon as it is welcomed.
    #[arg(long, default_value_t = 50)]
    pub watch: usize,

    /// Seconds over which the connects arrive (independent, uniform
    /// times: a Poisson process of that many arrivals).
    #[arg(long, default_value_t = 10.0)]
    pub within: f64,

    /// The presence Redis, to count its commands per connect.
    #[arg(long)]
    pub redis_url: Option<String>,
}

pub(super) fn source(common: &Common, i: usize) -> Option<IpAddr> {
    let sources = common.sources.max(1) as usize;
    Some(IpAddr::from([127, 0, 0, 2 + (i % sources) as u8]))
}

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_owned()
}

/// Reads and drops every frame until `stop`, noting when each presence
/// frame came and whether it said online.
async fn read_presence(mut client: Client, stop: CancellationToken) -> Vec<(Instant, bool)> {
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            event = client.next_raw() => match event {
                RawEvent::Text(text) => {
                    if text.contains(r#""type":"presence""#) {
                        seen.push((Instant::now(), text.contains(r#""state":"online""#)));
                    }
                }
                RawEvent::Closed { .. } => break,
            },
        }
    }
    seen
}

/// A presence change of the watched client, as the generator caused it.
struct Change {
    at: Instant,
    online: bool,
}

pub async fn fanout(args: FanoutArgs) -> BenchResult {
    let urls = &args.common.urls;
    let run = run_id();
    let target = format!("bench-{run}-target");
    eprintln!(
        "fanout: {} watchers of {target} over {} node(s)",
        args.watchers,
        urls.len()
    );
    let mut readers = Vec::with_capacity(args.watchers);
    let stop = CancellationToken::new();
    for first in (0..args.watchers).step_by(args.concurrency.max(1)) {
        let last = (first + args.concurrency.max(1)).min(args.watchers);
        let opened = (first..last).map(|i| {
            let url = &urls[i % urls.len()];
            let name = format!("bench-{run}-w{i}");
            let options = ConnectOptions {
                local_addr: source(&args.common, i),
                read_buffer_bytes: 4096,
                ..ConnectOptions::default()
            };
            let target = target.as_str();
            async move {
                let mut client = super::open_session(url, &name, None, &options).await?;
                client
                    .watch(&[target])
                    .await
                    .map_err(|e| format!("{name} cannot watch: {e}"))?;
                Ok::<_, String>(client)
            }
        });
        for client in futures_util::future::join_all(opened).await {
            readers.push(tokio::spawn(read_presence(client?, stop.clone())));
        }
    }
    // Past the coalescing window of the first frame each watcher got.
    tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;

    let before = sample_servers(&args.common).await;
    let hops_before = presence_hops(urls).await;
    let cpu_before = switchboard::process::cpu_seconds("self").unwrap_or(0.0);
    let started = Instant::now();
    let mut changes = Vec::with_capacity(args.changes);
    let mut online: Option<Client> = None;
    for c in 0..args.changes {
        let at = Instant::now();
        match online.take() {
            None => {
                let options = ConnectOptions::default();
                online = Some(super::open_session(&urls[0], &target, None, &options).await?);
                changes.push(Change { at, online: true });
            }
            Some(client) => {
                let _ = client.close().await;
                changes.push(Change { at, online: false });
            }
        }
        eprint!("\rchange {}/{}   ", c + 1, args.changes);
        tokio::time::sleep_until(at + Duration::from_millis(args.gap_ms)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = sample_servers(&args.common).await;
    let hops_after = presence_hops(urls).await;
    let generator = switchboard::process::cpu_seconds("self").unwrap_or(0.0) - cpu_before;
    stop.cancel();
    drop(online);

    // Each watcher's first frame of each change's state after it began.
    let all = Latencies::new();
    let mut last_per_change = vec![Duration::ZERO; changes.len()];
    let (mut frames, mut missing) = (0u64, 0u64);
    for (w, reader) in readers.into_iter().enumerate() {
        let seen = reader.await.map_err(|e| format!("a watcher failed: {e}"))?;
        let seen: Vec<_> = seen.into_iter().filter(|(t, _)| *t >= started).collect();
        frames += seen.len() as u64;
        for (c, change) in changes.iter().enumerate() {
            let until = changes.get(c + 1).map(|n| n.at);
            let got = seen.iter().find(|(t, on)| {
                *t >= change.at && until.is_none_or(|u| *t < u) && *on == change.online
            });
            match got {
                Some((t, _)) => {
                    let took = *t - change.at;
                    all.record(w, took.as_micros() as u64);
                    last_per_change[c] = last_per_change[c].max(took);
                }
                None => missing += 1,
            }
        }
    }
    let server_cpu = after.cpu_seconds - before.cpu_seconds;
    let n = changes.len() as f64;
    let mut last: Vec<f64> = last_per_change
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    last.sort_by(f64::total_cmp);
    let pick = |q: f64| last[((last.len() - 1) as f64 * q).round() as usize];
    let latency = all.summary();
    let result = json!({
        "kind": "fanout",
        "watchers": args.watchers,
        "nodes": urls.len(),
        "changes": changes.len(),
        "frames": frames,
        "missing": missing,
        "extra": frames.saturating_sub(args.watchers as u64 * changes.len() as u64 - missing),
        "latency": latency,
        "last_watcher_ms": {"p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)},
        "watched_hops_per_change": (hops_after - hops_before) / n,
        "bus_msgs_per_change": (after.bus_msgs - before.bus_msgs) / n,
        "server_cpu_us_per_frame": if frames == 0 { 0.0 } else { server_cpu * 1e6 / frames as f64 },
        "server_cores": server_cpu / elapsed,
        "generator_cores": generator / elapsed,
    });
    eprintln!(
        "\nfanout: {frames} frames ({missing} missing); to each watcher p50 {:.2} / p99 {:.2} ms; the last watcher p50 {:.2} / p99 {:.2} / max {:.2} ms; {:.2} watched hops and {:.2} bus messages per change; {:.2} µs server CPU per frame",
        latency.p50_us as f64 / 1000.0,
        latency.p99_us as f64 / 1000.0,
        pick(0.5),
        pick(0.99),
        pick(1.0),
        result["watched_hops_per_change"].as_f64().unwrap_or(0.0),
        result["bus_msgs_per_change"].as_f64().unwrap_or(0.0),
        result["server_cpu_us_per_frame"].as_f64().unwrap_or(0.0),
    );
    if args.common.json {
        println!("{result}");
    }
    Ok(())
}

/// `watched` hops the nodes have sent, all together.
async fn presence_hops(urls: &[String]) -> f64 {
    let mut hops = 0.0;
    for url in urls {
        if let Ok(text) = super::http_get(&metrics_url(url)).await {
            hops += metric(&text, "switchboard_presence_hops_total").unwrap_or(0.0);
        }
    }
    hops
}

async fn node_rss(urls: &[String]) -> Result<f64, String> {
    let mut rss = 0.0;
    for url in urls {
        let text = super::http_get(&metrics_url(url)).await?;
        rss += metric(&text, "process_resident_memory_bytes")
            .ok_or_else(|| format!("{url}: no process_resident_memory_bytes"))?;
    }
    Ok(rss)
}

/// A number from Redis's INFO (`used_memory`, `total_commands_processed`).
pub(super) async fn redis_info(url: &str, field: &str) -> Result<f64, String> {
    let client = redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let info: String = redis::cmd("INFO")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{url}: INFO: {e}"))?;
    info.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("{url}: no {field} in INFO"))
}

pub async fn watch_idle(args: WatchIdleArgs) -> BenchResult {
    let urls = &args.common.urls;
    let run = run_id();
    let name = |i: usize| format!("bench-{run}-s{i}");
    let n = args.sessions;
    if args.watch >= n {
        return Err("--watch must be below --sessions (sessions watch each other)".into());
    }
    let mut clients = Vec::with_capacity(n);
    for first in (0..n).step_by(args.concurrency.max(1)) {
        let last = (first + args.concurrency.max(1)).min(n);
        let opened = (first..last).map(|i| {
            let options = ConnectOptions {
                local_addr: source(&args.common, i),
                read_buffer_bytes: 4096,
                ..ConnectOptions::default()
            };
            let (url, name) = (&urls[i % urls.len()], name(i));
            async move { super::open_session(url, &name, None, &options).await }
        });
        for client in futures_util::future::join_all(opened).await {
            clients.push(client?);
        }
        eprint!("\r{} sessions open   ", clients.len());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = node_rss(urls).await?;
    let redis_before = match &args.redis_url {
        Some(url) => Some(redis_info(url, "used_memory").await?),
        None => None,
    };
    // Every session watches the next --watch sessions' clients, then
    // reads (and drops) what comes.
    let stop = CancellationToken::new();
    let mut readers = Vec::with_capacity(n);
    let mut iter = clients.into_iter().enumerate().peekable();
    while iter.peek().is_some() {
        let batch: Vec<_> = iter.by_ref().take(args.concurrency.max(1)).collect();
        let watching = batch.into_iter().map(|(i, mut client)| {
            let targets: Vec<String> = (1..=args.watch).map(|k| name((i + k) % n)).collect();
            async move {
                let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
                for chunk in targets.chunks(256) {
                    client
                        .watch(chunk)
                        .await
                        .map_err(|e| format!("session {i} cannot watch: {e}"))?;
                }
                Ok::<_, String>(client)
            }
        });
        for client in futures_util::future::join_all(watching).await {
            readers.push(tokio::spawn(read_presence(client?, stop.clone())));
        }
        eprint!("\r{} sessions watching   ", readers.len());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = node_rss(urls).await?;
    let redis_after = match &args.redis_url {
        Some(url) => Some(redis_info(url, "used_memory").await?),
        None => None,
    };
    stop.cancel();
    let mut frames = 0;
    for reader in readers {
        frames += reader.await.map(|seen| seen.len()).unwrap_or(0);
    }
    let watches = (n * args.watch) as f64;
    let per_watch = (rss_after - rss_before) / watches;
    // Watcher entries: one per (watched client, node with watchers).
    let redis_per_entry = redis_before.zip(redis_after).map(|(b, a)| {
        let entries = (n * urls.len().min(args.watch)) as f64;
        (a - b) / entries
    });
    eprintln!(
        "\nwatch-idle: {n} sessions each watching {}: node RSS {:.1} -> {:.1} MiB, {per_watch:.0} bytes per watch; {frames} presence frames read{}",
        args.watch,
        rss_before / 1048576.0,
        rss_after / 1048576.0,
        redis_per_entry
            .map(|b| format!("; Redis {b:.0} bytes per watcher entry"))
            .unwrap_or_default()
    );
    if args.common.json {
        println!(
            "{}",
            json!({"kind": "watch-idle", "sessions": n, "watch": args.watch, "nodes": urls.len(),
                   "rss_before": rss_before, "rss_after": rss_after, "bytes_per_watch": per_watch,
                   "redis_before": redis_before, "redis_after": redis_after,
                   "redis_bytes_per_entry": redis_per_entry, "frames": frames})
        );
    }
    Ok(())
}

pub async fn storm(args: StormArgs) -> BenchResult {
    let urls = &args.common.urls;
    let run = run_id();
    let n = args.sessions;
    if args.watch >= n {
        return Err("--watch must be below --sessions (clients watch each other)".into());
    }
    let commands_before = match &args.redis_url {
        Some(url) => Some(redis_info(url, "total_commands_processed").await?),
        None => None,
    };
    let before = sample_servers(&args.common).await;
    let stop = CancellationToken::new();
    let connect_latency = Arc::new(Latencies::new());
    let watch_latency = Arc::new(Latencies::new());
    let started = Instant::now();
    let seed = uuid::Uuid::new_v4().as_u128() as u64;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        // Independent uniform times within the window: the arrivals of a
        // Poisson process conditioned on their number.
        let u = splitmix(seed ^ i as u64) as f64 / u64::MAX as f64;
        let due = started + Duration::from_secs_f64(u * args.within);
        let url = urls[i % urls.len()].clone();
        let name = format!("bench-{run}-c{i}");
        let targets: Vec<String> = (1..=args.watch)
            .map(|k| format!("bench-{run}-c{}", (i + k) % n))
            .collect();
        let options = ConnectOptions {
            local_addr: source(&args.common, i),
            read_buffer_bytes: 4096,
            ..ConnectOptions::default()
        };
        let (stop, connect_latency, watch_latency) =
            (stop.clone(), connect_latency.clone(), watch_latency.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let t = Instant::now();
            let mut client = super::open_session(&url, &name, None, &options).await?;
            connect_latency.record(i, t.elapsed().as_micros() as u64);
            let t = Instant::now();
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            client
                .watch(&targets)
                .await
                .map_err(|e| format!("{name} cannot watch: {e}"))?;
            watch_latency.record(i, t.elapsed().as_micros() as u64);
            Ok::<_, String>(read_presence(client, stop).await.len())
        }));
    }
    // Every connect, then quiet for the coalescing windows to end.
    tokio::time::sleep_until(started + Duration::from_secs_f64(args.within + 3.0)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = sample_servers(&args.common).await;
    let commands_after = match &args.redis_url {
        Some(url) => Some(redis_info(url, "total_commands_processed").await?),
        None => None,
    };
    stop.cancel();
    let (mut frames, mut most, mut failed) = (0usize, 0usize, 0usize);
    for task in tasks {
        match task.await {
            Ok(Ok(seen)) => {
                frames += seen;
                most = most.max(seen);
            }
            Ok(Err(e)) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("\nstorm: {e}");
                }
            }
            Err(e) => return Err(format!("a client task failed: {e}")),
        }
    }
    let ok = (n - failed).max(1) as f64;
    let commands = commands_before
        .zip(commands_after)
        .map(|(b, a)| (a - b) / ok);
    let connect = connect_latency.summary();
    let watch = watch_latency.summary();
    let result = json!({
        "kind": "storm", "sessions": n, "watch": args.watch, "within_s": args.within, "failed": failed,
        "connect_latency": connect, "watch_latency": watch,
        "frames_per_session": frames as f64 / ok, "frames_most": most,
        "redis_commands_per_connect": commands,
        "bus_msgs_per_connect": (after.bus_msgs - before.bus_msgs) / ok,
        "server_cpu_ms_per_connect": (after.cpu_seconds - before.cpu_seconds) * 1e3 / ok,
        "seconds": elapsed,
    });
    eprintln!(
        "storm: {n} clients watching {} each, connecting within {} s ({failed} failed): welcome p50 {:.1} / p99 {:.1} ms, watching p50 {:.1} / p99 {:.1} ms; {:.1} presence frames per session (most {most}); {} Redis commands and {:.1} bus messages per connect",
        args.watch,
        args.within,
        connect.p50_us as f64 / 1000.0,
        connect.p99_us as f64 / 1000.0,
        watch.p50_us as f64 / 1000.0,
        watch.p99_us as f64 / 1000.0,
        frames as f64 / ok,
        commands.map_or("?".to_owned(), |c| format!("{c:.1}")),
        (after.bus_msgs - before.bus_msgs) / ok,
    );
    if args.common.json {
        println!("{result}");
    }
    Ok(())
}

/// A well-mixed 64-bit number from `x` (SplitMix64's finalizer).
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
