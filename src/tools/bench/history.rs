//! History benchmarks (v3), against nodes started with `--history`:
//!
//! 1. seeds one reader's conversations (`--conversations` peers, each
//!    sending it `--messages` messages of `--payload` bytes), and reports
//!    the history Redis's memory per message (`INFO used_memory`);
//! 2. **sync on login**: a fresh device of the reader connects, lists its
//!    conversations and pages every one after cursor 0, the pages asked
//!    for at once; the time from connecting to the last page;
//! 3. **reads under traffic**: the reader asks for a page of 50 and its
//!    list of 50 conversations, alternately, at `--rate` a second for
//!    `--duration` (the script runs message traffic beside it); their
//!    latencies.
//!
//! Every loop is bounded in count and time.

use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio::time::Instant;

use super::report::Latencies;
use super::{BenchResult, Common};
use switchboard_client::{Client, ConnectOptions, RawEvent, To};

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub common: Common,

    /// The reader's conversations (one peer each).
    #[arg(long, default_value_t = 50)]
    pub conversations: usize,

    /// Messages each peer sends the reader.
    #[arg(long, default_value_t = 20)]
    pub messages: usize,

    /// Bytes of padding in each body.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,

    /// Reads a second (a page, then the list, in turn) while measuring.
    #[arg(long, default_value_t = 50)]
    pub rate: u64,

    /// Seconds of reads.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Logins measured.
    #[arg(long, default_value_t = 5)]
    pub logins: usize,

    /// The history Redis (its key prefix `sb:`), for its memory per
    /// message and per conversation.
    #[arg(long)]
    pub redis_url: Option<String>,

    /// Messages of the one conversation whose stream gives the memory per
    /// message (0: not measured).
    #[arg(long, default_value_t = 2000)]
    pub memory_messages: usize,
}

async fn open(url: &str, name: &str, device: Option<&str>) -> Result<Client, String> {
    let options = ConnectOptions {
        device: device.map(str::to_owned),
        read_buffer_bytes: 64 * 1024,
        ..ConnectOptions::default()
    };
    super::open_session(url, name, None, &options).await
}

/// The bytes Redis holds for `keys` (`MEMORY USAGE … SAMPLES 0`: exact).
async fn memory_usage(url: &str, keys: &[String]) -> Result<f64, String> {
    let client = redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut total = 0.0;
    for key in keys {
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("{url}: MEMORY USAGE: {e}"))?;
        total += bytes.unwrap_or(0) as f64;
    }
    Ok(total)
}

/// Every peer sends `reader` `messages` messages at once, each acked with
/// a `cseq`.
async fn seed(
    peers: &mut [Client],
    reader: &str,
    padding: &str,
    messages: usize,
) -> Result<(), String> {
    let sends = peers.iter_mut().map(|peer| async move {
        for n in 0..messages {
            let ack = peer
                .ask(
                    To::Client(reader),
                    &json!({"n": n, "p": padding}),
                    false,
                    false,
                )
                .await
                .map_err(|e| e.to_string())?;
            if ack.cseq.is_none() {
                return Err("a send was not kept: are the nodes running with --history?".to_owned());
            }
        }
        Ok::<_, String>(())
    });
    for sent in futures_util::future::join_all(sends).await {
        sent?;
    }
    Ok(())
}

/// Sends `frames` at once, then reads until an answer carrying each id
/// came (or `limit` passed). Answers how many came.
async fn ask_all(
    client: &mut Client,
    frames: Vec<(String, String)>,
    limit: Duration,
) -> Result<usize, String> {
    let mut waiting: std::collections::HashSet<String> = frames
        .iter()
        .map(|(id, _)| format!(r#""id":"{id}""#))
        .collect();
    let want = waiting.len();
    for (_, frame) in frames {
        client.send_raw(frame).await.map_err(|e| e.to_string())?;
    }
    let deadline = Instant::now() + limit;
    while !waiting.is_empty() {
        let event = tokio::time::timeout_at(deadline, client.next_raw())
            .await
            .map_err(|_| format!("{} answers missing after {limit:?}", waiting.len()))?;
        match event {
            RawEvent::Text(text) => {
                if text.starts_with(r#"{"type":"error""#) {
                    return Err(format!("refused: {text}"));
                }
                waiting.retain(|id| !text.contains(id.as_str()));
            }
            RawEvent::Closed { reason, .. } => return Err(format!("closed: {reason}")),
        }
    }
    Ok(want)
}

pub async fn run(args: HistoryArgs) -> BenchResult {
    let urls = &args.common.urls;
    let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let reader = format!("bench-{run}-reader");
    let padding = "x".repeat(args.payload);

    // 1. Seed the reader's conversations (two rounds, as a device that
    // missed them would find them).
    let mut peers = Vec::new();
    for p in 0..args.conversations {
        peers.push(open(&urls[p % urls.len()], &format!("bench-{run}-p{p}"), None).await?);
    }
    let seeded_at = Instant::now();
    for _ in 0..2 {
        seed(&mut peers, &reader, &padding, args.messages).await?;
    }
    let seed_seconds = seeded_at.elapsed().as_secs_f64();
    let total = (2 * args.conversations * args.messages) as f64;
    // The history Redis, key by key (`MEMORY USAGE`): per message, one
    // conversation of --memory-messages; per conversation, what the
    // reader's cost beyond their messages.
    let (per_message, per_conversation) = match &args.redis_url {
        Some(url) if args.memory_messages > 0 => {
            let (a, b) = (format!("bench-{run}-ma"), format!("bench-{run}-mb"));
            let mut sender = open(&urls[0], &a, None).await?;
            for n in 0..args.memory_messages {
                sender
                    .ask(To::Client(&b), &json!({"n": n, "p": padding}), false, false)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let log = memory_usage(url, &[format!("sb:h:{{p:{a}|{b}}}:log")]).await?;
            let per_message = log / args.memory_messages as f64;
            let mut keys = vec![format!("sb:h:convs:{reader}")];
            for p in 0..args.conversations {
                let peer = format!("bench-{run}-p{p}");
                let (x, y) = if peer < reader {
                    (&peer, &reader)
                } else {
                    (&reader, &peer)
                };
                for part in ["log", "meta", "read"] {
                    keys.push(format!("sb:h:{{p:{x}|{y}}}:{part}"));
                }
                keys.push(format!("sb:h:convs:{peer}"));
            }
            let all = memory_usage(url, &keys).await?;
            let beyond = all - per_message * total;
            (Some(per_message), Some(beyond / args.conversations as f64))
        }
        _ => (None, None),
    };
    eprintln!(
        "seeded {total} messages in {} conversations in {seed_seconds:.2} s{}",
        args.conversations,
        per_message
            .zip(per_conversation)
            .map(|(m, c)| format!("; Redis {m:.0} bytes per message, {c:.0} more per conversation"))
            .unwrap_or_default()
    );

    // 2. Sync on login: conversations, then every page after cursor 0.
    let logins = Latencies::new();
    for login in 0..args.logins {
        let started = Instant::now();
        let device = format!("d{login}");
        let mut phone = open(&urls[login % urls.len()], &reader, Some(&device)).await?;
        let list = phone
            .conversations(None, args.conversations.min(200))
            .await
            .map_err(|e| e.to_string())?;
        if list.items.len() < args.conversations.min(200) {
            return Err(format!(
                "{} conversations listed of {}",
                list.items.len(),
                args.conversations
            ));
        }
        let frames: Vec<(String, String)> = list
            .items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let id = format!("sync-{login}-{i}");
                let with = item.with.as_ref()?;
                let frame =
                    json!({"type": "history", "with": with, "after": 0, "limit": 200, "id": id});
                Some((id, frame.to_string()))
            })
            .collect();
        ask_all(&mut phone, frames, Duration::from_secs(10)).await?;
        logins.record(login, started.elapsed().as_micros() as u64);
        let _ = phone.close().await;
    }
    let login = logins.summary();
    eprintln!(
        "sync on login ({} conversations, {total} messages): p50 {:.1} ms, max {:.1} ms over {} logins",
        args.conversations,
        login.p50_us as f64 / 1000.0,
        login.max_us as f64 / 1000.0,
        args.logins
    );

    // 3. Reads while traffic runs beside them.
    let (pages, lists) = (Latencies::new(), Latencies::new());
    let mut desk = open(&urls[0], &reader, Some("desk")).await?;
    let peer = format!("bench-{run}-p0");
    let gap = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let until = Instant::now() + Duration::from_secs_f64(args.duration);
    let mut next = Instant::now();
    let mut n = 0u64;
    while Instant::now() < until {
        tokio::time::sleep_until(next).await;
        next += gap;
        let started = Instant::now();
        let id = format!("r{n}");
        let frame = if n % 2 == 0 {
            json!({"type": "history", "with": peer, "limit": 50, "id": id})
        } else {
            json!({"type": "conversations", "limit": 50, "id": id})
        };
        ask_all(
            &mut desk,
            vec![(id, frame.to_string())],
            Duration::from_secs(5),
        )
        .await?;
        let took = started.elapsed().as_micros() as u64;
        if n % 2 == 0 {
            pages.record(0, took);
        } else {
            lists.record(0, took);
        }
        n += 1;
    }
    let (page, list) = (pages.summary(), lists.summary());
    eprintln!(
        "under traffic: a page of 50 p50 {:.2} / p99 {:.2} ms; conversations of 50 p50 {:.2} / p99 {:.2} ms ({n} reads)",
        page.p50_us as f64 / 1000.0,
        page.p99_us as f64 / 1000.0,
        list.p50_us as f64 / 1000.0,
        list.p99_us as f64 / 1000.0,
    );
    if args.common.json {
        println!(
            "{}",
            json!({"kind": "history", "conversations": args.conversations, "messages": args.messages,
                   "payload": args.payload, "redis_bytes_per_message": per_message,
                   "redis_bytes_per_conversation": per_conversation,
                   "memory_messages": args.memory_messages,
                   "seed_seconds": seed_seconds, "login": login, "page": page, "list": list, "reads": n})
        );
    }
    Ok(())
}
