//! Open-loop traffic: clients in pairs, each sending to its partner at a
//! fixed rate whatever the answers do, so that a slow server shows up as
//! latency and loss rather than as a politely slower generator.
//!
//! Each message body carries its send time and the measurement window it
//! belongs to (`{"t": µs, "w": window, "p": padding}`); receivers count only
//! the current window, so windows do not bleed into each other.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::report::{Latencies, Summary};
use super::{BenchResult, Mode, TrafficArgs, sample_servers};
use switchboard_client::{Client, ConnectOptions, RawEvent};

/// The ramp's bar: p99 end-to-end latency at most this.
const RAMP_P99: Duration = Duration::from_millis(50);
/// How long after a window the generator waits for its last messages.
const DRAIN: Duration = Duration::from_secs(3);
/// Most sends one client queues per wake-up: bounds a catch-up burst.
const MAX_BURST: u64 = 1000;

struct Shared {
    epoch: Instant,
    /// Sends per second per client, times 1000.
    milli_rate: AtomicU64,
    sending: AtomicBool,
    window: AtomicU32,
    sent: AtomicU64,
    acked: [AtomicU64; 3],
    errors: AtomicU64,
    received: AtomicU64,
    e2e: Latencies,
    ack: Latencies,
    padding: String,
    mode: Mode,
    stop: CancellationToken,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn reset(&self) {
        for counter in [&self.sent, &self.errors, &self.received]
            .into_iter()
            .chain(&self.acked)
        {
            counter.store(0, Relaxed);
        }
        self.e2e.reset();
        self.ack.reset();
    }
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    status: Option<&'a str>,
    #[serde(default)]
    body: Option<Stamp>,
}

#[derive(Deserialize)]
struct Stamp {
    t: u64,
    w: u32,
}

pub async fn run(args: TrafficArgs) -> BenchResult {
    let nodes = args.common.urls.len();
    if args.clients < 2 || args.clients % 2 == 1 {
        return Err("--clients must be an even number, at least 2".into());
    }
    if matches!(args.mode, Mode::Cross | Mode::Mixed) && nodes < 2 {
        return Err("cross and mixed modes need two node URLs (--url a,b)".into());
    }
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        milli_rate: AtomicU64::new(0),
        sending: AtomicBool::new(false),
        window: AtomicU32::new(0),
        sent: AtomicU64::new(0),
        acked: Default::default(),
        errors: AtomicU64::new(0),
        received: AtomicU64::new(0),
        e2e: Latencies::new(),
        ack: Latencies::new(),
        padding: "x".repeat(args.payload),
        mode: args.mode,
        stop: CancellationToken::new(),
    });

    let (clients, connect_rate) = connect_pairs(&args).await?;
    let drivers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, (client, to))| tokio::spawn(drive(client, i, to, shared.clone())))
        .collect();
    let progress = tokio::spawn(progress(shared.clone()));

    let result = if args.ramp {
        ramp(&args, &shared, connect_rate).await
    } else {
        set_rate(&shared, args.rate, args.clients);
        window(&args, &shared, args.warmup).await;
        let summary = measure(&args, &shared, args.rate, connect_rate).await;
        summary.print();
        if args.common.json {
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
        }
        Ok(())
    };
    shared.stop.cancel();
    progress.abort();
    for driver in drivers {
        let _ = driver.await;
    }
    result
}

fn set_rate(shared: &Shared, rate: u64, clients: usize) {
    shared
        .milli_rate
        .store(rate * 1000 / clients as u64, Relaxed);
}

/// Connects the clients in pairs, placed per mode; returns each client
/// with the name it sends to, and the connect rate.
async fn connect_pairs(args: &TrafficArgs) -> Result<(Vec<(Client, String)>, f64), String> {
    let urls = &args.common.urls;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let name = |i: usize| format!("bench-{run}-{i}");
    let mut plan = Vec::with_capacity(args.clients);
    for pair in 0..args.clients / 2 {
        let here = &urls[pair % urls.len()];
        let there = &urls[(pair + 1) % urls.len()];
        let partner_url = match args.mode {
            Mode::Cross => there,
            Mode::Mixed if pair % 2 == 1 => there,
            _ => here,
        };
        let (a, b) = (2 * pair, 2 * pair + 1);
        let target = |me: usize, partner: usize| match args.mode {
            Mode::Offline => format!("bench-{run}-offline-{me}"),
            Mode::Echo => name(me),
            _ => name(partner),
        };
        plan.push((here.clone(), name(a), target(a, b)));
        plan.push((partner_url.clone(), name(b), target(b, a)));
    }

    let started = Instant::now();
    let sources = args.common.sources.max(1);
    let mut clients = Vec::with_capacity(plan.len());
    // Bounded concurrency: a few hundred handshakes in flight at a time.
    for chunk in plan.chunks(256) {
        let connects = chunk.iter().enumerate().map(|(i, (url, me, to))| {
            let options = ConnectOptions {
                local_addr: Some(std::net::IpAddr::from([127, 0, 0, 2 + (i as u8 % sources)])),
                ..ConnectOptions::default()
            };
            let secret = args.jwt_secret.as_deref();
            async move {
                super::open_session(url, me, secret, &options)
                    .await
                    .map(|c| (c, to.clone()))
            }
        });
        for result in futures_util::future::join_all(connects).await {
            clients.push(result?);
        }
    }
    let rate = clients.len() as f64 / started.elapsed().as_secs_f64();
    Ok((clients, rate))
}

/// One client: sends on schedule, reads everything that comes back.
async fn drive(mut client: Client, index: usize, to: String, shared: Arc<Shared>) {
    let mut acks_due: VecDeque<(u64, u32)> = VecDeque::new();
    let mut credit = 0.0f64;
    let mut last = Instant::now();
    let mut sends = 0u64;
    let mut next = tokio::time::Instant::now();
    let mut frame = String::with_capacity(shared.padding.len() + 128);
    loop {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            event = client.next_raw() => match event {
                RawEvent::Text(text) => receive(&text, index, &mut acks_due, &shared),
                RawEvent::Closed { code, reason } => {
                    if !shared.stop.is_cancelled() {
                        eprintln!("\nbench client {index} closed ({code:?}): {reason}");
                    }
                    return;
                }
            },
            () = tokio::time::sleep_until(next) => {
                let per_second = shared.milli_rate.load(Relaxed) as f64 / 1000.0;
                let now = Instant::now();
                // Wake about every 1/rate, within 1-20 ms.
                let period = if per_second > 0.0 { (1.0 / per_second).clamp(0.001, 0.02) } else { 0.02 };
                next += Duration::from_secs_f64(period);
                if !shared.sending.load(Relaxed) {
                    credit = 0.0;
                    last = now;
                    continue;
                }
                credit += per_second * now.duration_since(last).as_secs_f64();
                last = now;
                let burst = (credit.floor() as u64).min(MAX_BURST);
                credit -= burst as f64;
                let window = shared.window.load(Relaxed);
                for _ in 0..burst {
                    sends += 1;
                    // One in ten to nobody, in mixed mode.
                    let target = if shared.mode == Mode::Mixed && sends % 10 == 0 {
                        "bench-nobody"
                    } else {
                        to.as_str()
                    };
                    let t = shared.now_us();
                    frame.clear();
                    let _ = write!(
                        frame,
                        r#"{{"type":"send","to":"{target}","body":{{"t":{t},"w":{window},"p":"{}"}}}}"#,
                        shared.padding
                    );
                    if client.feed_raw(frame.as_str()).await.is_err() {
                        return;
                    }
                    if shared.mode != Mode::Echo {
                        acks_due.push_back((t, window));
                    }
                    shared.sent.fetch_add(1, Relaxed);
                }
                if burst > 0 && client.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

fn receive(text: &str, index: usize, acks_due: &mut VecDeque<(u64, u32)>, shared: &Shared) {
    let Ok(frame) = serde_json::from_str::<Incoming<'_>>(text) else {
        return;
    };
    let window = shared.window.load(Relaxed);
    let now = shared.now_us();
    match frame.kind {
        "ack" | "error" => {
            // Exactly one answer per send, in order: the oldest is this one.
            let Some((sent_at, sent_in)) = acks_due.pop_front() else {
                return;
            };
            if sent_in != window {
                return;
            }
            shared.ack.record(index, now.saturating_sub(sent_at));
            if frame.kind == "error" {
                shared.errors.fetch_add(1, Relaxed);
                return;
            }
            let branch = match frame.status {
                Some("local") => 0,
                Some("remote") => 1,
                _ => 2,
            };
            shared.acked[branch].fetch_add(1, Relaxed);
        }
        // "send" is what the echo server returns.
        "message" | "send" => {
            if let Some(stamp) = frame.body
                && stamp.w == window
            {
                shared.e2e.record(index, now.saturating_sub(stamp.t));
                shared.received.fetch_add(1, Relaxed);
            }
        }
        _ => {}
    }
}

/// Runs traffic for `seconds` in a fresh window (used for warm-up).
async fn window(_args: &TrafficArgs, shared: &Shared, seconds: f64) {
    shared.window.fetch_add(1, Relaxed);
    shared.reset();
    shared.sending.store(true, Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
}

/// One measured window at `rate`: traffic for --duration, then a drain.
async fn measure(args: &TrafficArgs, shared: &Shared, rate: u64, connect_rate: f64) -> Summary {
    set_rate(shared, rate, args.clients);
    let before = sample_servers(&args.common).await;
    let generator_before = crate::process::cpu_seconds("self").unwrap_or(0.0);
    let started = Instant::now();
    window(args, shared, args.duration).await;
    shared.sending.store(false, Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let after = sample_servers(&args.common).await;
    let generator_after = crate::process::cpu_seconds("self").unwrap_or(0.0);

    // Let the window's last messages arrive.
    let expected = |s: &Shared| match args.mode {
        Mode::Echo => s.sent.load(Relaxed),
        _ => s.acked[0].load(Relaxed) + s.acked[1].load(Relaxed),
    };
    let drain_until = Instant::now() + DRAIN;
    while shared.received.load(Relaxed) < expected(shared) && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let received = shared.received.load(Relaxed);
    let expected = expected(shared);
    let server_cpu = after.cpu_seconds - before.cpu_seconds;
    let routed = after.routed - before.routed;
    Summary {
        kind: "traffic",
        mode: format!("{:?}", args.mode).to_lowercase(),
        clients: args.clients,
        payload_bytes: args.payload,
        offered_rate: rate,
        duration_s: args.duration,
        sent: shared.sent.load(Relaxed),
        acked_local: shared.acked[0].load(Relaxed),
        acked_remote: shared.acked[1].load(Relaxed),
        acked_offline: shared.acked[2].load(Relaxed),
        errors: shared.errors.load(Relaxed),
        received,
        delivered_rate: received as f64 / elapsed,
        loss: if expected == 0 {
            0.0
        } else {
            expected.saturating_sub(received) as f64 / expected as f64
        },
        latency: shared.e2e.summary(),
        ack_latency: shared.ack.summary(),
        connect_rate,
        generator_cores: (generator_after - generator_before) / elapsed,
        server_cores: server_cpu / elapsed,
        server_cpu_us_per_msg: if received == 0 {
            0.0
        } else {
            server_cpu * 1e6 / received as f64
        },
        lookups_per_send: if routed > 0.0 {
            (after.lookups - before.lookups) / routed
        } else {
            0.0
        },
    }
}

async fn ramp(args: &TrafficArgs, shared: &Shared, connect_rate: f64) -> BenchResult {
    set_rate(shared, args.rate, args.clients);
    window(args, shared, args.warmup).await;
    let mut steps = Vec::new();
    let mut rate = args.rate;
    let mut best: Option<Summary> = None;
    while rate <= args.max_rate {
        let summary = measure(args, shared, rate, connect_rate).await;
        let passed = summary.passes(RAMP_P99);
        eprintln!(
            "\nramp {rate:>7}/s: delivered {:>8.0}/s  p99 {:>7.2} ms  loss {:.3}%  server {:.2} cores {:.1} µs/msg  generator {:.2} cores  {}",
            summary.delivered_rate,
            summary.latency.p99_us as f64 / 1000.0,
            summary.loss * 100.0,
            summary.server_cores,
            summary.server_cpu_us_per_msg,
            summary.generator_cores,
            if passed { "ok" } else { "FAIL" }
        );
        steps.push(summary.clone());
        if !passed {
            break;
        }
        best = Some(summary);
        rate = ((rate as f64) * args.ramp_factor).ceil() as u64;
    }
    match &best {
        Some(best) => {
            eprintln!(
                "\nramp result: {} msgs/s offered, {:.0} delivered, with >= 99% delivered and p99 under {:?}",
                best.offered_rate, best.delivered_rate, RAMP_P99
            );
            best.print();
        }
        None => eprintln!("\nramp result: even {} msgs/s missed the bar", args.rate),
    }
    if args.common.json {
        let json = serde_json::json!({
            "kind": "ramp",
            "best_rate": best.as_ref().map(|b| b.offered_rate),
            "best": best,
            "steps": steps,
        });
        println!("{json}");
    }
    Ok(())
}

/// A progress line on stderr, once a second.
async fn progress(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_received = 0;
    let mut last_window = 0;
    loop {
        tick.tick().await;
        let window = shared.window.load(Relaxed);
        let received = shared.received.load(Relaxed);
        if window != last_window {
            last_received = 0;
            last_window = window;
        }
        let p99 = shared.e2e.summary().p99_us as f64 / 1000.0;
        eprint!(
            "\r[window {window}] sent {:>9} received {:>9} ({:>7}/s) p99 {p99:>7.2} ms   ",
            shared.sent.load(Relaxed),
            received,
            received.saturating_sub(last_received)
        );
        last_received = received;
    }
}
