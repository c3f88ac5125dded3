//! `switchboard bench storm`: a reconnect storm (v3). N sessions on one
//! node (the first `--url`); that node is SIGKILLed (`--how kill`) or
//! drained (`--how drain`, SIGTERM); every client comes back to the other
//! nodes the way the clients do: after a drain's `reconnect_after_ms`
//! hint, else with exponential backoff and full jitter (100 ms doubling to
//! 5 s), never before a busy node's `Retry-After` (plus up to a second at
//! random, as the clients do); in acks mode resuming
//! its session. Reports when 50 / 99 / 100 % are registered again, the
//! connect attempts' latency, refusals by reason, Redis commands per
//! reconnect and the servers' CPU, and, with `--rate`, what traffic sent
//! to the storm's clients during it became: acked and received, acked and
//! lost, answered `offline`.
//!
//! Every client is a task of this process: with the file limit at 20,000
//! per process, N up to about 19,000.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::json;
use switchboard::lock::Locked;
use switchboard::protocol::frames::reconnect_hint;
use switchboard::protocol::{AckStatus, ReceiptStatus, ServerFrame};
use switchboard_client::{Client, ClientError, ConnectOptions, Event, Identity};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::report::Latencies;
use super::watch::redis_info;
use super::{BenchResult, Common, open_session, sample_servers};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum How {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a drain (rolling restart).
    Drain,
}

#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// The first URL is the node the sessions start on (the one stopped);
    /// the others are where they come back.
    #[command(flatten)]
    pub common: Common,

    /// Sessions on the stopped node.
    #[arg(long, default_value_t = 5000)]
    pub sessions: usize,

    /// Acks mode: sessions resume (nothing lost in a drain).
    #[arg(long)]
    pub acks: bool,

    /// The stopped node's process id (on this machine).
    #[arg(long)]
    pub victim_pid: i32,

    #[arg(long, value_enum, default_value = "kill")]
    pub how: How,

    /// The presence Redis, to count its commands per reconnect.
    #[arg(long)]
    pub redis_url: Option<String>,

    /// Messages per second sent to the storm's clients, from a survivor,
    /// from a second before the stop until all are back (0: none).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,

    /// Longest the storm may take.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,

    /// With `--rate`: how long after the storm the sender waits for the
    /// outcomes still owed (past the nodes' resume window, 30 s by
    /// default, every routed message has one).
    #[arg(long, default_value_t = 45.0)]
    pub settle: f64,
}

/// What the storm's clients saw.
#[derive(Default)]
struct Tally {
    /// Time from the stop to each client's next welcome, in ms.
    back_ms: Mutex<Vec<u64>>,
    resumed: AtomicU64,
    /// Times a client's connection ended again after it came back
    /// (replaced, or refused a resume and started afresh); it comes back
    /// again, as the clients do.
    ended_again: AtomicU64,
    /// Why they ended again (close code and reason, or "dropped").
    ended_again_by: Mutex<HashMap<String, u64>>,
    refused: Mutex<HashMap<String, u64>>,
    failed: AtomicU64,
    /// Messages received, by body number (the sender's count).
    received: Mutex<HashMap<u64, u32>>,
}

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

pub async fn storm(args: StormArgs) -> BenchResult {
    let (victim, survivors) = args
        .common
        .urls
        .split_first()
        .filter(|(_, rest)| !rest.is_empty())
        .ok_or("--url: the node to stop first, then at least one other")?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let options = ConnectOptions {
        acks: args.acks,
        ..ConnectOptions::default()
    };
    let tally = Arc::new(Tally::default());
    let attempts = Arc::new(Latencies::new());
    let stopped = Arc::new(tokio::sync::OnceCell::<Instant>::new());
    let done = CancellationToken::new();
    let stop_sending = CancellationToken::new();

    // 1. Everyone on the victim (256 connects at once).
    let gate = Arc::new(Semaphore::new(256));
    let mut clients = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let permit = gate.clone().acquire_owned().await.expect("open");
        let name = format!("st{run}-{i}");
        let options = ConnectOptions {
            local_addr: super::watch::source(&args.common, i),
            ..options.clone()
        };
        let victim = victim.clone();
        clients.push(tokio::spawn(async move {
            // The victim admits at its --max-connect-rate too: wait as told.
            let mut tries = 0;
            let client = loop {
                match Client::connect_with(&victim, Identity::Name(name.clone()), &options).await {
                    Err(e) if tries < 30 && e.retry_after().is_some() => {
                        tries += 1;
                        tokio::time::sleep(e.retry_wait().unwrap_or_default()).await;
                    }
                    other => {
                        break other.map_err(|e| format!("{name} cannot connect to {victim}: {e}"));
                    }
                }
            };
            drop(permit);
            client
        }));
    }
    let mut opened = Vec::with_capacity(args.sessions);
    for c in clients {
        opened.push(c.await.map_err(|e| e.to_string())??);
    }
    eprintln!("{} sessions on {victim}", opened.len());
    let tasks: Vec<_> = opened
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let c = StormClient {
                name: format!("st{run}-{i}"),
                survivors: survivors.to_vec(),
                next: i,
                options: ConnectOptions {
                    local_addr: super::watch::source(&args.common, i),
                    ..options.clone()
                },
                tally: tally.clone(),
                attempts: attempts.clone(),
                stopped: stopped.clone(),
            };
            tokio::spawn(c.live(client, done.clone()))
        })
        .collect();

    // 2. Traffic to them from a survivor, from a second before the stop.
    let sender = (args.rate > 0).then(|| {
        let survivor = survivors[0].clone();
        let names: Vec<String> = (0..args.sessions).map(|i| format!("st{run}-{i}")).collect();
        let stop = stop_sending.clone();
        let rate = args.rate;
        let settle = Duration::from_secs_f64(args.settle);
        tokio::spawn(async move { send_traffic(survivor, names, rate, stop, settle).await })
    });
    if sender.is_some() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // 3. Stop the victim.
    let redis_before = match &args.redis_url {
        Some(url) => Some(redis_info(url, "total_commands_processed").await?),
        None => None,
    };
    // The survivors' CPU and --pids' (the victim's is not the storm's).
    let survivors_only = Common {
        urls: survivors.to_vec(),
        ..args.common.clone()
    };
    let before = sample_servers(&survivors_only).await;
    let signal = match args.how {
        How::Kill => libc::SIGKILL,
        How::Drain => libc::SIGTERM,
    };
    let started = Instant::now();
    let _ = stopped.set(started);
    // SAFETY: kill(2) with a pid and a signal number has no memory effects.
    if unsafe { libc::kill(args.victim_pid, signal) } != 0 {
        return Err(format!(
            "cannot signal --victim-pid {}: {}",
            args.victim_pid,
            std::io::Error::last_os_error()
        ));
    }
    let deadline = started + Duration::from_secs_f64(args.timeout);
    loop {
        let back = tally.back_ms.locked().len() + tally.failed.load(Relaxed) as usize;
        if back >= args.sessions || Instant::now() >= deadline {
            break;
        }
        eprint!(
            "\r{back} of {} back after {:.1} s   ",
            args.sessions,
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let storm_s = started.elapsed().as_secs_f64();
    let after = sample_servers(&survivors_only).await;
    let redis_commands = match (&args.redis_url, redis_before) {
        (Some(url), Some(before)) => {
            Some(redis_info(url, "total_commands_processed").await? - before)
        }
        _ => None,
    };
    // Traffic: stop sending, and wait (the clients reading on) until every
    // routed message has its outcomes or --settle has passed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_sending.cancel();
    let sent = match sender {
        Some(task) => Some(task.await.map_err(|e| e.to_string())?),
        None => None,
    };
    done.cancel();
    for t in tasks {
        let _ = t.await;
    }

    let mut back = std::mem::take(&mut *tally.back_ms.locked());
    back.sort_unstable();
    let at = |q: f64| -> Option<u64> {
        let n = (q * args.sessions as f64).ceil() as usize;
        back.get(n.saturating_sub(1)).copied()
    };
    let refused: HashMap<String, u64> = tally.refused.locked().clone();
    let attempts = attempts.summary();
    let received = tally.received.locked();
    let traffic = sent.map(|sent| {
        // The ledger: a routed message is received, or its sender heard
        // `offline`; anything else is lost. A `delivered` receipt for a
        // message never received is a false delivery.
        let mut lost: Vec<u64> = sent
            .routed
            .keys()
            .filter(|n| !received.contains_key(n) && !sent.offline_later.contains(n))
            .copied()
            .collect();
        lost.sort_unstable();
        // The first few, by recipient, to look for in the nodes' logs.
        let lost_examples: Vec<String> = lost
            .iter()
            .take(10)
            .map(|n| {
                let msg = sent.msg_ids.get(n).map(ToString::to_string).unwrap_or_default();
                format!("{n} to st{run}-{} ({msg})", *n as usize % args.sessions)
            })
            .collect();
        let false_delivered = sent
            .delivered
            .keys()
            .filter(|n| !received.contains_key(n))
            .count();
        let twice = received.values().filter(|c| **c > 1).count();
        json!({
            "sent": sent.sent, "acked_routed": sent.routed.len(),
            "acked_offline": sent.offline, "errors": sent.errors,
            "offline_later": sent.offline_later.len(),
            "delivered_receipts": sent.delivered.values().sum::<u32>(),
            "outcomes_owed": sent.owed(),
            "lost": lost.len(), "lost_examples": lost_examples, "duplicates": twice, "false_delivered": false_delivered,
        })
    });
    let cpu = after.cpu_seconds - before.cpu_seconds;
    let result = json!({
        "kind": "storm",
        "how": match args.how { How::Kill => "kill", How::Drain => "drain" },
        "acks": args.acks,
        "sessions": args.sessions,
        "back": back.len(),
        "resumed": tally.resumed.load(Relaxed),
        "ended_again": tally.ended_again.load(Relaxed),
        "ended_again_by": tally.ended_again_by.locked().clone(),
        "failed": tally.failed.load(Relaxed),
        "t50_ms": at(0.5), "t99_ms": at(0.99), "t100_ms": (back.len() == args.sessions).then(|| back.last().copied()).flatten(),
        "connect_p50_ms": attempts.p50_us as f64 / 1000.0,
        "connect_p99_ms": attempts.p99_us as f64 / 1000.0,
        "attempts": attempts.count,
        "refused": refused,
        "redis_commands_per_reconnect": redis_commands.map(|c| c / args.sessions as f64),
        "server_cpu_s": cpu,
        "server_cores": cpu / storm_s,
        "storm_s": storm_s,
        "traffic": traffic,
    });
    eprintln!(
        "\nstorm ({:?}{}) of {}: 50% back after {:?} ms, 99% {:?} ms, all {:?} ms; \
         connect attempts p50 {:.1} / p99 {:.1} ms ({} attempts); refused {:?}; \
         Redis commands per reconnect {:?}; survivors + --pids {:.2} CPU s; traffic {}",
        args.how,
        if args.acks { ", acks" } else { "" },
        args.sessions,
        at(0.5),
        at(0.99),
        result["t100_ms"],
        attempts.p50_us as f64 / 1000.0,
        attempts.p99_us as f64 / 1000.0,
        attempts.count,
        refused,
        result["redis_commands_per_reconnect"],
        cpu,
        result["traffic"],
    );
    if args.common.json {
        println!("{result}");
    }
    Ok(())
}

/// One client of the storm.
struct StormClient {
    name: String,
    survivors: Vec<String>,
    next: usize,
    options: ConnectOptions,
    tally: Arc<Tally>,
    attempts: Arc<Latencies>,
    stopped: Arc<tokio::sync::OnceCell<Instant>>,
}

impl StormClient {
    /// Reads (confirming in acks mode) until the connection ends, comes
    /// back, and reads on until `done`.
    async fn live(mut self, client: Client, done: CancellationToken) {
        let mut resume = client.welcome().resume_token.clone();
        let mut last_seq = 0u64;
        let mut came_back = false;
        let mut client = client;
        loop {
            let ended = self.read(&mut client, &mut last_seq, &done).await;
            let Some((hint, why)) = ended else { return };
            // The old socket goes before the new one opens: 15,000 of each
            // at once would pass the file limit.
            drop(client);
            if came_back {
                // A survivor closed it too (its session replaced, say):
                // counted, and followed like the first time, as a client
                // would, so that what is kept for it still counts.
                self.tally.ended_again.fetch_add(1, Relaxed);
                *self.tally.ended_again_by.locked().entry(why).or_default() += 1;
            }
            let first = !came_back;
            came_back = true;
            let options = ConnectOptions {
                resume: resume.clone().map(|t| (t, last_seq)),
                ..self.options.clone()
            };
            match self.come_back(hint, &options, &done, first).await {
                Some(c) => {
                    if c.welcome().resumed == Some(true) {
                        self.tally.resumed.fetch_add(1, Relaxed);
                    } else {
                        last_seq = 0;
                    }
                    resume = c.welcome().resume_token.clone();
                    client = c;
                }
                None => {
                    self.tally.failed.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
    }

    /// Reads until the connection ends (its reconnect hint, if any, and
    /// why it ended) or `done` (`None`).
    async fn read(
        &self,
        client: &mut Client,
        last_seq: &mut u64,
        done: &CancellationToken,
    ) -> Option<(Option<Duration>, String)> {
        loop {
            let event = tokio::select! {
                () = done.cancelled() => return None,
                event = client.next_event() => event,
            };
            match event {
                Ok(Event::Frame(ServerFrame::Message(m))) => {
                    if let Some(n) = m.body.as_u64() {
                        *self.tally.received.locked().entry(n).or_default() += 1;
                    }
                    if let Some(seq) = m.seq {
                        *last_seq = seq;
                        let _ = client.confirm(seq).await;
                    }
                }
                Ok(Event::Frame(_)) => {}
                Ok(Event::Closed { code, reason }) => {
                    // The hint's number differs per session: not part of why.
                    let why = reason
                        .split("; reconnect_after_ms")
                        .next()
                        .unwrap_or_default();
                    let why = format!("{} {why}", code.unwrap_or_default());
                    return Some((reconnect_hint(&reason), why));
                }
                Err(_) => return Some((None, "dropped".to_owned())),
            }
        }
    }

    /// Reconnects to the survivors in turn: the hint first, then backoff
    /// with full jitter, never before a Retry-After.
    async fn come_back(
        &mut self,
        hint: Option<Duration>,
        options: &ConnectOptions,
        done: &CancellationToken,
        first: bool,
    ) -> Option<Client> {
        let mut not_before = Duration::ZERO;
        for attempt in 0..30u32 {
            let backoff = match (attempt, hint) {
                (0, Some(hint)) => hint,
                _ => BACKOFF_BASE
                    .saturating_mul(1 << attempt.min(16))
                    .min(BACKOFF_CAP)
                    .mul_f64(switchboard::protocol::jitter()),
            };
            tokio::select! {
                () = done.cancelled() => return None,
                () = tokio::time::sleep(backoff.max(not_before)) => {}
            }
            // After a Retry-After, the same node again (a resume it could
            // not finish yet may be finished there), as the clients do.
            if not_before.is_zero() || attempt == 0 {
                self.next += 1;
            }
            let url = &self.survivors[self.next % self.survivors.len()];
            let started = Instant::now();
            let dialed = tokio::time::timeout(
                Duration::from_secs(10),
                Client::connect_with(url, Identity::Name(self.name.clone()), options),
            )
            .await;
            self.attempts
                .record(self.next, started.elapsed().as_micros() as u64);
            match dialed {
                Ok(Ok(client)) => {
                    if first {
                        let since = self
                            .stopped
                            .get()
                            .map_or(0, |s| s.elapsed().as_millis() as u64);
                        self.tally.back_ms.locked().push(since);
                    }
                    return Some(client);
                }
                Ok(Err(e)) => {
                    let reason = match &e {
                        ClientError::Refused { status, body, .. } => {
                            let code = serde_json::from_str::<serde_json::Value>(body)
                                .ok()
                                .and_then(|b| b["error"].as_str().map(str::to_owned))
                                .unwrap_or_default();
                            format!("{status} {code}")
                        }
                        _ => "connect".to_owned(),
                    };
                    *self.tally.refused.locked().entry(reason).or_default() += 1;
                    not_before = e.retry_wait().unwrap_or_default();
                }
                Err(_) => {
                    *self
                        .tally
                        .refused
                        .locked()
                        .entry("timeout".into())
                        .or_default() += 1;
                }
            }
        }
        None
    }
}

/// What the sender heard: acks, then one receipt per session the ack
/// counted (it asks for receipts, so every routed message is accounted
/// for by `delivered` or `offline`, however late).
#[derive(Default)]
struct Sent {
    sent: u64,
    /// Routed (acked `local` or `remote`), by body number: how many
    /// outcomes the ack promised (`ack.sessions`).
    routed: HashMap<u64, u32>,
    offline: u64,
    /// Outcomes heard, by body number.
    delivered: HashMap<u64, u32>,
    offline_later: std::collections::HashSet<u64>,
    errors: u64,
    /// The message id of each routed body number.
    msg_ids: HashMap<u64, uuid::Uuid>,
}

impl Sent {
    /// Routed messages still owed an outcome.
    fn owed(&self) -> usize {
        self.routed
            .iter()
            .filter(|(n, want)| {
                let heard = self.delivered.get(n).copied().unwrap_or(0)
                    + u32::from(self.offline_later.contains(n));
                heard < **want
            })
            .count()
    }
}

/// Sends numbered messages to `names` in turn at `rate` until `stop`, then
/// reads on until every routed message has its outcomes or `settle` has
/// passed (a session kept for a client that came back elsewhere is
/// answered when its resume window ends).
async fn send_traffic(
    url: String,
    names: Vec<String>,
    rate: u64,
    stop: CancellationToken,
    settle: Duration,
) -> Sent {
    let mut out = Sent::default();
    let mut by_msg: HashMap<uuid::Uuid, u64> = HashMap::new();
    let options = ConnectOptions::default();
    let Ok(mut client) = open_session(&url, "storm-sender", None, &options).await else {
        return out;
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut numbers: HashMap<String, u64> = HashMap::new();
    let mut n = 0u64;
    let mut settled_by: Option<Instant> = None;
    loop {
        if let Some(by) = settled_by
            && (Instant::now() >= by || (numbers.is_empty() && out.owed() == 0))
        {
            break;
        }
        tokio::select! {
            () = stop.cancelled(), if settled_by.is_none() => {
                settled_by = Some(Instant::now() + settle);
            }
            () = tokio::time::sleep(Duration::from_millis(100)), if settled_by.is_some() => {}
            _ = tick.tick(), if settled_by.is_none() => {
                let to = &names[n as usize % names.len()];
                let id = n.to_string();
                if client.send(to, &json!(n), Some(&id), true).await.is_err() {
                    break;
                }
                numbers.insert(id, n);
                n += 1;
                out.sent += 1;
            }
            event = client.next_event() => match event {
                Ok(Event::Frame(ServerFrame::Ack(ack))) => {
                    let number = ack.id.as_deref().and_then(|id| numbers.remove(id));
                    match (ack.status, number) {
                        (AckStatus::Offline, _) => out.offline += 1,
                        (_, Some(number)) => {
                            out.routed.insert(number, ack.sessions.unwrap_or(1));
                            by_msg.insert(ack.msg_id, number);
                            out.msg_ids.insert(number, ack.msg_id);
                        }
                        _ => {}
                    }
                }
                Ok(Event::Frame(ServerFrame::Receipt { msg_id, status, .. })) => {
                    if let Some(number) = by_msg.get(&msg_id) {
                        match status {
                            ReceiptStatus::Offline => {
                                out.offline_later.insert(*number);
                            }
                            ReceiptStatus::Delivered => {
                                *out.delivered.entry(*number).or_default() += 1;
                            }
                        }
                    }
                }
                Ok(Event::Frame(ServerFrame::Error { .. })) => out.errors += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    out
}
