//! Open-loop traffic: clients in pairs, each sending to its partner whatever
//! the answers do, so that a slow server shows up as latency and loss
//! rather than as a politely slower generator.
//!
//! Arrivals are honest: each client sends at the times of its own Poisson
//! process (exponential gaps, its own random generator, its own random
//! start), with no tick shared between clients, so the offered load is
//! spread in time the way independent people's messages are. The report
//! says how bursty the sends really were: the coefficient of variation of
//! sends per millisecond (a Poisson stream at λ per ms has 1/√λ).
//!
//! Each message body carries its *intended* send time and the measurement
//! window it belongs to (`{"t": µs, "w": window, "p": padding}`): latency is
//! measured from when the message was due, not from when a late generator
//! got round to it (no coordinated omission). Receivers count only the
//! current window, so windows do not bleed into each other.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
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
/// How often a client that is not sending looks whether it should.
const IDLE_CHECK: Duration = Duration::from_millis(10);
/// Longest window whose sends per millisecond are counted (for the
/// burstiness figure).
const MAX_WINDOW_MS: usize = 600_000;

struct Shared {
    epoch: Instant,
    /// Sends per second per client, times 1000.
    milli_rate: AtomicU64,
    sending: AtomicBool,
    window: AtomicU32,
    sent: AtomicU64,
    acked: [AtomicU64; 3],
    errors: AtomicU64,
    /// Deliveries the acks promised (sessions reached).
    expected: AtomicU64,
    received: AtomicU64,
    carbons: AtomicU64,
    /// When the current window started, µs since `epoch`.
    window_start_us: AtomicU64,
    /// Sends per millisecond of the current window, as they left.
    sends_per_ms: Box<[AtomicU32]>,
    e2e: Latencies,
    ack: Latencies,
    padding: String,
    /// `,"store":true` with --store, else empty.
    store: &'static str,
    mode: Mode,
    stop: CancellationToken,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn reset(&self) {
        for counter in [
            &self.sent,
            &self.errors,
            &self.expected,
            &self.received,
            &self.carbons,
        ]
        .into_iter()
        .chain(&self.acked)
        {
            counter.store(0, Relaxed);
        }
        for ms in &self.sends_per_ms {
            ms.store(0, Relaxed);
        }
        self.window_start_us.store(self.now_us(), Relaxed);
        self.e2e.reset();
        self.ack.reset();
    }

    /// Counts a send that left now, for the burstiness figure.
    fn count_send(&self) {
        let since = self
            .now_us()
            .saturating_sub(self.window_start_us.load(Relaxed));
        if let Some(ms) = self.sends_per_ms.get((since / 1000) as usize) {
            ms.fetch_add(1, Relaxed);
        }
    }

    /// The coefficient of variation (standard deviation / mean) of sends
    /// per millisecond over the first `duration` of the window.
    fn burstiness(&self, duration: Duration) -> f64 {
        let n = (duration.as_millis() as usize).clamp(1, self.sends_per_ms.len());
        let counts: Vec<f64> = self.sends_per_ms[..n]
            .iter()
            .map(|c| c.load(Relaxed) as f64)
            .collect();
        let mean = counts.iter().sum::<f64>() / n as f64;
        if mean == 0.0 {
            return 0.0;
        }
        let variance = counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / n as f64;
        variance.sqrt() / mean
    }
}

/// Exponentially distributed gaps: the arrival times of a Poisson process,
/// from a small per-client generator (xorshift64*).
struct Arrivals(u64);

impl Arrivals {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A uniform number in (0, 1].
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (bits as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// The gap to the next arrival at `per_second` arrivals a second.
    fn gap(&mut self, per_second: f64) -> Duration {
        Duration::from_secs_f64(-self.uniform().ln() / per_second.max(1e-9))
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
    /// On acks: the sessions the message reached.
    #[serde(default)]
    sessions: Option<u64>,
    /// On group acks: sessions handed over here, and published elsewhere.
    #[serde(default)]
    local: Option<u64>,
    #[serde(default)]
    remote: Option<u64>,
    /// On messages: a copy for the sender's other device.
    #[serde(default)]
    carbon: bool,
    /// On messages, in acks mode: the number to confirm.
    #[serde(default)]
    seq: Option<u64>,
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
    if args.devices == 0 || (args.devices > 1 && !args.mode.acks()) {
        return Err("--devices must be at least 1, and 1 against echo and relay servers".into());
    }
    if args.mode == Mode::Group
        && (args.group_size < 2
            || args.clients % args.group_size != 0
            || args.devices != 1
            || args.api_key.is_none())
    {
        return Err(
            "--mode group needs --group-size >= 2 dividing --clients, one device, \
                    and --api-key (to make the groups)"
                .into(),
        );
    }
    if matches!(
        args.mode,
        Mode::Cross | Mode::Mixed | Mode::Relay | Mode::Signal
    ) && nodes < 2
    {
        return Err("cross, mixed, relay and signal modes need two node URLs (--url a,b)".into());
    }
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        milli_rate: AtomicU64::new(0),
        sending: AtomicBool::new(false),
        window: AtomicU32::new(0),
        sent: AtomicU64::new(0),
        acked: Default::default(),
        errors: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        received: AtomicU64::new(0),
        carbons: AtomicU64::new(0),
        window_start_us: AtomicU64::new(0),
        sends_per_ms: (0..MAX_WINDOW_MS).map(|_| AtomicU32::new(0)).collect(),
        e2e: Latencies::new(),
        ack: Latencies::new(),
        padding: "x".repeat(args.payload),
        store: if args.store { r#","store":true"# } else { "" },
        mode: args.mode,
        stop: CancellationToken::new(),
    });

    let (clients, connect_rate) = if args.mode == Mode::Group {
        connect_groups(&args).await?
    } else {
        connect_pairs(&args).await?
    };
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

/// One session to open: where, as whom, on which device, and whom it
/// sends to (`None`: a device that only receives).
struct Planned {
    url: String,
    name: String,
    device: Option<String>,
    to: Option<String>,
}

/// Connects the clients in pairs, placed per mode, each on `--devices`
/// devices; returns each session with the name it sends to (`None` for
/// devices that only receive), and the connect rate.
async fn connect_pairs(args: &TrafficArgs) -> Result<(Vec<(Client, Option<String>)>, f64), String> {
    let urls = &args.common.urls;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let name = |i: usize| format!("bench-{run}-{i}");
    let mut plan = Vec::with_capacity(args.clients * args.devices);
    for pair in 0..args.clients / 2 {
        let here = pair % urls.len();
        let there = (pair + 1) % urls.len();
        let partner_home = match args.mode {
            Mode::Cross | Mode::Relay | Mode::Signal => there,
            Mode::Mixed if pair % 2 == 1 => there,
            _ => here,
        };
        let (a, b) = (2 * pair, 2 * pair + 1);
        let target = |me: usize, partner: usize| match args.mode {
            Mode::Offline => format!("bench-{run}-offline-{me}"),
            Mode::Echo => name(me),
            _ => name(partner),
        };
        for (me, home, to) in [(a, here, target(a, b)), (b, partner_home, target(b, a))] {
            for device in 0..args.devices {
                plan.push(Planned {
                    // Devices on the nodes in turn, from the client's own.
                    url: urls[(home + device) % urls.len()].clone(),
                    name: name(me),
                    device: (args.devices > 1).then(|| format!("d{device}")),
                    to: (device == 0).then(|| to.clone()),
                });
            }
        }
    }
    connect_planned(args, plan).await
}

/// Opens the planned sessions, a few hundred handshakes at a time.
async fn connect_planned(
    args: &TrafficArgs,
    plan: Vec<Planned>,
) -> Result<(Vec<(Client, Option<String>)>, f64), String> {
    let started = std::time::Instant::now();
    let sources = args.common.sources.max(1);
    let mut clients = Vec::with_capacity(plan.len());
    // Bounded concurrency: a few hundred handshakes in flight at a time.
    for chunk in plan.chunks(256) {
        let connects = chunk.iter().enumerate().map(|(i, planned)| {
            let options = ConnectOptions {
                local_addr: Some(std::net::IpAddr::from([127, 0, 0, 2 + (i as u8 % sources)])),
                device: planned.device.clone(),
                acks: args.acks,
                ..ConnectOptions::default()
            };
            let secret = args.jwt_secret.as_deref();
            async move {
                super::open_session(&planned.url, &planned.name, secret, &options)
                    .await
                    .map(|c| (c, planned.to.clone()))
            }
        });
        for result in futures_util::future::join_all(connects).await {
            clients.push(result?);
        }
    }
    let rate = clients.len() as f64 / started.elapsed().as_secs_f64();
    Ok((clients, rate))
}

/// Makes the groups of `--mode group` through the first node's API, then
/// connects every member (members of a group on the nodes in turn), each
/// sending to its group (`#<group>`).
async fn connect_groups(
    args: &TrafficArgs,
) -> Result<(Vec<(Client, Option<String>)>, f64), String> {
    let urls = &args.common.urls;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let key = args.api_key.as_deref();
    let api = super::metrics_url(&urls[0]).replace("/metrics", "");
    let mut plan = Vec::with_capacity(args.clients);
    for g in 0..args.clients / args.group_size {
        let group = format!("bench-{run}-g{g}");
        for i in 0..args.group_size {
            let name = format!("bench-{run}-g{g}-{i}");
            let url = format!("{api}/api/v1/groups/{group}/members/{name}");
            let (status, body) = crate::tools::fetch(reqwest::Method::PUT, &url, key, None).await?;
            if status != reqwest::StatusCode::NO_CONTENT {
                return Err(format!(
                    "could not add {name} to {group}: {status} {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            plan.push(Planned {
                url: urls[i % urls.len()].clone(),
                name,
                device: None,
                to: Some(format!("#{group}")),
            });
        }
    }
    connect_planned(args, plan).await
}

/// One session: sends (if it has someone `to` send to) at the arrival
/// times of its own Poisson process, reads everything that comes back.
async fn drive(mut client: Client, index: usize, to: Option<String>, shared: Arc<Shared>) {
    let mut acks_due: VecDeque<(u64, u32)> = VecDeque::new();
    let seed = shared.now_us() ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut arrivals = Arrivals::new(seed);
    // When the next message is due; `None` while not sending.
    let mut due: Option<Instant> = None;
    let mut sends = 0u64;
    let mut frame = String::with_capacity(shared.padding.len() + 128);
    // Acks mode: the last `seq` read, and the last confirmed.
    let (mut last_seq, mut confirmed) = (0u64, 0u64);
    loop {
        let wake = due.unwrap_or_else(|| Instant::now() + IDLE_CHECK);
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            event = client.next_raw() => match event {
                RawEvent::Text(text) => {
                    if let Some(seq) = receive(&text, index, &mut acks_due, &shared) {
                        last_seq = last_seq.max(seq);
                        if last_seq - confirmed >= switchboard_client::CONFIRM_EVERY {
                            if client.confirm(last_seq).await.is_err() {
                                return;
                            }
                            confirmed = last_seq;
                        }
                    }
                }
                RawEvent::Closed { code, reason } => {
                    if !shared.stop.is_cancelled() {
                        eprintln!("\nbench client {index} closed ({code:?}): {reason}");
                    }
                    return;
                }
            },
            () = tokio::time::sleep(switchboard_client::CONFIRM_AFTER), if last_seq > confirmed => {
                if client.confirm(last_seq).await.is_err() {
                    return;
                }
                confirmed = last_seq;
            }
            () = tokio::time::sleep_until(wake), if to.is_some() => {
                let to = to.as_deref().unwrap_or_default();
                let per_second = shared.milli_rate.load(Relaxed) as f64 / 1000.0;
                if !shared.sending.load(Relaxed) || per_second <= 0.0 {
                    due = None;
                    continue;
                }
                let now = Instant::now();
                // Starting: the first arrival is a gap away, like any other.
                let mut next = due.unwrap_or_else(|| now + arrivals.gap(per_second));
                let window = shared.window.load(Relaxed);
                let mut burst = 0;
                while next <= now && burst < MAX_BURST {
                    burst += 1;
                    sends += 1;
                    // One in ten to nobody, in mixed mode.
                    let target = if shared.mode == Mode::Mixed && sends % 10 == 0 {
                        "bench-nobody"
                    } else {
                        to
                    };
                    // Stamped with when it was due.
                    let t = next.duration_since(shared.epoch).as_micros() as u64;
                    frame.clear();
                    let (key, target) = match target.strip_prefix('#') {
                        Some(group) => ("group", group),
                        None => ("to", target),
                    };
                    let kind = if shared.mode == Mode::Signal { "signal" } else { "send" };
                    let _ = write!(
                        frame,
                        r#"{{"type":"{kind}","{key}":"{target}","body":{{"t":{t},"w":{window},"p":"{}"}}{}}}"#,
                        shared.padding, shared.store
                    );
                    if client.feed_raw(frame.as_str()).await.is_err() {
                        return;
                    }
                    if shared.mode.acks() {
                        acks_due.push_back((t, window));
                    }
                    shared.sent.fetch_add(1, Relaxed);
                    shared.count_send();
                    next += arrivals.gap(per_second);
                }
                // Far behind (an overloaded generator): skip ahead rather
                // than burst without end; the lateness already shows as
                // latency in what was sent.
                if burst == MAX_BURST && next < now {
                    next = now + arrivals.gap(per_second);
                }
                due = Some(next);
                if burst > 0 && client.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Counts one frame; returns a message's `seq` (acks mode), to confirm.
fn receive(
    text: &str,
    index: usize,
    acks_due: &mut VecDeque<(u64, u32)>,
    shared: &Shared,
) -> Option<u64> {
    let Ok(frame) = serde_json::from_str::<Incoming<'_>>(text) else {
        return None;
    };
    let seq = frame.seq;
    let window = shared.window.load(Relaxed);
    let now = shared.now_us();
    match frame.kind {
        "ack" | "error" => {
            // Exactly one answer per send, in order: the oldest is this one.
            let Some((sent_at, sent_in)) = acks_due.pop_front() else {
                return seq;
            };
            if sent_in != window {
                return seq;
            }
            shared.ack.record(index, now.saturating_sub(sent_at));
            if frame.kind == "error" {
                shared.errors.fetch_add(1, Relaxed);
                return seq;
            }
            let branch = match frame.status {
                Some("local") => 0,
                Some("remote" | "fanout") => 1,
                _ => 2,
            };
            shared.acked[branch].fetch_add(1, Relaxed);
            let reached = match frame.status {
                Some("fanout") => frame.local.unwrap_or(0) + frame.remote.unwrap_or(0),
                _ => frame.sessions.unwrap_or(1),
            };
            if branch < 2 {
                shared.expected.fetch_add(reached, Relaxed);
            }
        }
        // "send" is what the echo server returns.
        "message" | "send" | "signal" => {
            if let Some(stamp) = frame.body
                && stamp.w == window
            {
                if frame.carbon {
                    shared.carbons.fetch_add(1, Relaxed);
                    return seq;
                }
                shared.e2e.record(index, now.saturating_sub(stamp.t));
                shared.received.fetch_add(1, Relaxed);
            }
        }
        _ => {}
    }
    seq
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
    let generator_before = switchboard::process::cpu_seconds("self").unwrap_or(0.0);
    let started = std::time::Instant::now();
    window(args, shared, args.duration).await;
    shared.sending.store(false, Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let after = sample_servers(&args.common).await;
    let generator_after = switchboard::process::cpu_seconds("self").unwrap_or(0.0);

    // Let the window's last messages arrive.
    let expected = |s: &Shared| match args.mode {
        Mode::Echo | Mode::Relay | Mode::Signal => s.sent.load(Relaxed),
        _ => s.expected.load(Relaxed),
    };
    let drain_until = Instant::now() + DRAIN;
    while shared.received.load(Relaxed) < expected(shared) && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let received = shared.received.load(Relaxed);
    let expected = expected(shared);
    let burstiness = shared.burstiness(Duration::from_secs_f64(args.duration));
    let server_cpu = after.cpu_seconds - before.cpu_seconds;
    // Relay and echo servers route without counting: every send is one.
    let routed = if args.mode.acks() {
        after.routed - before.routed
    } else {
        shared.sent.load(Relaxed) as f64
    };
    Summary {
        kind: "traffic",
        mode: format!("{:?}", args.mode).to_lowercase(),
        clients: args.clients,
        devices: args.devices,
        acks: args.acks,
        group_size: if args.mode == Mode::Group {
            args.group_size
        } else {
            0
        },
        payload_bytes: args.payload,
        offered_rate: rate,
        duration_s: args.duration,
        sent: shared.sent.load(Relaxed),
        acked_local: shared.acked[0].load(Relaxed),
        acked_remote: shared.acked[1].load(Relaxed),
        acked_offline: shared.acked[2].load(Relaxed),
        errors: shared.errors.load(Relaxed),
        expected,
        received,
        carbons: shared.carbons.load(Relaxed),
        delivered_rate: received as f64 / elapsed,
        loss: if expected == 0 {
            0.0
        } else {
            expected.saturating_sub(received) as f64 / expected as f64
        },
        latency: shared.e2e.summary(),
        ack_latency: shared.ack.summary(),
        connect_rate,
        burstiness,
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
        bus_msgs_per_routed: if routed > 0.0 {
            (after.bus_msgs - before.bus_msgs) / routed
        } else {
            0.0
        },
        hops_per_send: if routed > 0.0 {
            (after.hops - before.hops) / routed
        } else {
            0.0
        },
        context_switches_per_msg: if received == 0 {
            0.0
        } else {
            (after.context_switches - before.context_switches) / received as f64
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
