//! Session-count benchmarks: how fast sessions can be opened (connect,
//! upgrade and presence registration, up to the welcome frame), and what
//! an idle session costs a node in memory.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{BenchResult, SessionArgs, metric, metrics_url};
use switchboard_client::{Client, ConnectOptions};

/// Opens `args.sessions` sessions spread over the nodes and source
/// addresses, `args.concurrency` at a time. Returns them and the seconds
/// it took.
async fn open(args: &SessionArgs, read_buffer_bytes: usize) -> Result<(Vec<Client>, f64), String> {
    let urls = &args.common.urls;
    let sources = args.common.sources.max(1);
    let run = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let started = Instant::now();
    let mut clients = Vec::with_capacity(args.sessions);
    let mut progress_at = Instant::now();
    for first in (0..args.sessions).step_by(args.concurrency.max(1)) {
        let last = (first + args.concurrency.max(1)).min(args.sessions);
        let connects = (first..last).map(|i| {
            let url = &urls[i % urls.len()];
            let name = format!("bench-{run}-s{i}");
            let options = ConnectOptions {
                local_addr: Some(IpAddr::from([127, 0, 0, 2 + (i as u8 % sources)])),
                read_buffer_bytes,
                ..ConnectOptions::default()
            };
            let secret = args.jwt_secret.as_deref();
            async move { super::open_session(url, &name, secret, &options).await }
        });
        for result in futures_util::future::join_all(connects).await {
            clients.push(result?);
        }
        if progress_at.elapsed() > Duration::from_secs(1) {
            eprint!("\r{} sessions open   ", clients.len());
            progress_at = Instant::now();
        }
    }
    Ok((clients, started.elapsed().as_secs_f64()))
}

pub async fn connect(args: SessionArgs) -> BenchResult {
    let (clients, seconds) = open(&args, 4096).await?;
    let rate = clients.len() as f64 / seconds;
    eprintln!(
        "\nconnect: {} sessions (handshake, auth, presence registration, welcome) in {seconds:.2} s = {rate:.0} sessions/s, {} at a time",
        clients.len(),
        args.concurrency
    );
    if args.common.json {
        println!(
            "{}",
            json!({"kind": "connect", "sessions": clients.len(), "seconds": seconds, "rate": rate, "concurrency": args.concurrency})
        );
    }
    Ok(())
}

async fn node_rss(urls: &[String]) -> Result<Vec<f64>, String> {
    let mut rss = Vec::new();
    for url in urls {
        let text = super::http_get(&metrics_url(url)).await?;
        rss.push(
            metric(&text, "process_resident_memory_bytes")
                .ok_or_else(|| format!("{url}: no process_resident_memory_bytes in /metrics"))?,
        );
    }
    Ok(rss)
}

pub async fn idle(args: SessionArgs) -> BenchResult {
    let urls = &args.common.urls;
    let before = node_rss(urls).await?;
    // Clients that will never read: the smallest buffer tungstenite takes.
    let (clients, seconds) = open(&args, 256).await?;
    // Let allocators and the kernel settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = node_rss(urls).await?;
    let per_node = clients.len() as f64 / urls.len() as f64;
    let mut rows = Vec::new();
    eprintln!(
        "\nidle: {} sessions opened in {seconds:.1} s over {} node(s)",
        clients.len(),
        urls.len()
    );
    for (i, url) in urls.iter().enumerate() {
        let delta = after[i] - before[i];
        let per_session = delta / per_node;
        eprintln!(
            "{url}: RSS {:.1} MiB -> {:.1} MiB, {:.0} sessions: {:.2} KiB per idle session",
            before[i] / 1048576.0,
            after[i] / 1048576.0,
            per_node,
            per_session / 1024.0
        );
        rows.push(json!({"url": url, "rss_before": before[i], "rss_after": after[i], "sessions": per_node, "bytes_per_session": per_session}));
    }
    if args.common.json {
        println!(
            "{}",
            json!({"kind": "idle", "sessions": clients.len(), "nodes": rows})
        );
    }
    drop(clients);
    Ok(())
}
