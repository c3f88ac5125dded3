//! Results: latency histograms, the summary a run prints, and its JSON.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use switchboard::lock::Locked;

/// Latencies in microseconds, recorded from many tasks at once. Sharded so
/// that recording stays an uncontended lock.
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latencies {
    pub fn new() -> Self {
        Self {
            shards: (0..16)
                .map(|_| {
                    // 1 µs to 1 h at 3 significant digits.
                    Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds"))
                })
                .collect(),
        }
    }

    pub fn record(&self, shard: usize, micros: u64) {
        let mut h = self.shards[shard % self.shards.len()].locked();
        h.saturating_record(micros.max(1));
    }

    pub fn reset(&self) {
        for shard in &self.shards {
            shard.locked().reset();
        }
    }

    pub fn summary(&self) -> LatencySummary {
        let mut all = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
        for shard in &self.shards {
            let _ = all.add(&*shard.locked());
        }
        let q = |q: f64| {
            if all.is_empty() {
                0
            } else {
                all.value_at_quantile(q)
            }
        };
        LatencySummary {
            count: all.len(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: all.max(),
        }
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl LatencySummary {
    fn row(&self, name: &str) -> String {
        format!(
            "{name:<14} {:>9} {:>9} {:>9} {:>9} {:>9}   (ms, {} samples)",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            self.count
        )
    }
}

/// What one measured traffic window produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub kind: &'static str,
    pub mode: String,
    pub clients: usize,
    /// Sessions per client (`--devices`).
    pub devices: usize,
    /// Members per group (`--mode group`), else 0.
    pub group_size: usize,
    /// Sessions in acks mode (`--acks`).
    pub acks: bool,
    pub payload_bytes: usize,
    pub offered_rate: u64,
    pub duration_s: f64,
    pub sent: u64,
    pub acked_local: u64,
    pub acked_remote: u64,
    pub acked_offline: u64,
    pub errors: u64,
    /// Deliveries the acks promised (the sessions each reached).
    pub expected: u64,
    /// Deliveries: message frames received by their recipients' sessions
    /// (carbons not counted).
    pub received: u64,
    /// Carbon copies received by senders' other devices.
    pub carbons: u64,
    /// Deliveries per second of the window.
    pub delivered_rate: f64,
    /// Acked local/remote (or echoed) but not received by the end of the
    /// grace period, as a fraction.
    pub loss: f64,
    pub latency: LatencySummary,
    pub ack_latency: LatencySummary,
    /// Sessions per second while connecting the clients.
    pub connect_rate: f64,
    /// How bursty the offered load really was: the coefficient of
    /// variation of sends per millisecond (a Poisson stream of λ per ms:
    /// 1/√λ; a shared tick: far more).
    pub burstiness: f64,
    /// Cores the generator itself used (1.0 = one core busy).
    pub generator_cores: f64,
    /// Cores the servers used: nodes, plus --pids.
    pub server_cores: f64,
    /// Server CPU per received message, in microseconds.
    pub server_cpu_us_per_msg: f64,
    /// Presence lookups (Redis round trips on the routing path) per routed
    /// send.
    pub lookups_per_send: f64,
    /// Messages nats-server took in per routed send (with --nats-monitor).
    pub bus_msgs_per_routed: f64,
    /// Message hops the nodes published per routed send (at most one per
    /// node a send's sessions are on).
    pub hops_per_send: f64,
    /// Context switches of every server thread (nodes and --pids) per
    /// delivered message: the wake-ups a message costs.
    pub context_switches_per_msg: f64,
}

impl Summary {
    pub fn print(&self) {
        let window = Duration::from_secs_f64(self.duration_s);
        eprintln!(
            "\n{} {} | {} clients x {} device(s) | {} B payload | offered {}/s for {:?}",
            self.kind,
            self.mode,
            self.clients,
            self.devices,
            self.payload_bytes,
            self.offered_rate,
            window
        );
        eprintln!(
            "sent {}  acked local {} remote {} offline {}  errors {}  deliveries expected {} received {}  carbons {}",
            self.sent,
            self.acked_local,
            self.acked_remote,
            self.acked_offline,
            self.errors,
            self.expected,
            self.received,
            self.carbons
        );
        eprintln!(
            "delivered {:.0} deliveries/s   loss {:.3}%   connect {:.0} sessions/s   burstiness (CV of sends/ms) {:.2}",
            self.delivered_rate,
            self.loss * 100.0,
            self.connect_rate,
            self.burstiness
        );
        eprintln!(
            "{:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "p50", "p90", "p99", "p99.9", "max"
        );
        eprintln!("{}", self.latency.row("end-to-end"));
        eprintln!("{}", self.ack_latency.row("ack"));
        eprintln!(
            "server CPU {:.2} cores = {:.1} µs per delivered message | generator CPU {:.2} cores | presence lookups per send {:.3}",
            self.server_cores,
            self.server_cpu_us_per_msg,
            self.generator_cores,
            self.lookups_per_send
        );
        eprintln!(
            "bus messages per routed send {:.3} | hops per send {:.3} | server context switches per delivery {:.2}",
            self.bus_msgs_per_routed, self.hops_per_send, self.context_switches_per_msg
        );
    }

    /// Whether this window meets the ramp's bar: at least 99% of what was
    /// offered was delivered (to every session each send reached), with p99
    /// under `max_p99`.
    pub fn passes(&self, max_p99: Duration) -> bool {
        let offered = self.offered_rate as f64 * self.duration_s;
        let routed = (self.acked_local + self.acked_remote) as f64;
        let per_send = if routed > 0.0 {
            (self.expected as f64 / routed).max(1.0)
        } else {
            1.0
        };
        self.received as f64 >= 0.99 * offered * per_send
            && self.latency.p99_us <= max_p99.as_micros() as u64
    }
}
