//! Prometheus metrics, kept as plain atomics.
//!
//! Counting sits on the per-message path, so each observation is one or two
//! relaxed atomic adds; the text format is only built when `/metrics` is
//! scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::protocol::{AckStatus, ErrorCode};

/// Upper bounds of the routing latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Why an envelope (or one hop in it) from the bus was not used.
#[derive(Debug, Clone, Copy)]
pub enum HopRejection {
    Malformed,
    UnknownVersion,
    /// A message frame larger than any client could have sent.
    Oversized,
    /// A message frame that is not exactly the one its hop names, in the
    /// form every node writes (another recipient or sender, not a message,
    /// extra keys, a body a client could not read): never written to a
    /// socket.
    Mismatched,
}

impl HopRejection {
    const ALL: [(Self, &'static str); 4] = [
        (Self::Malformed, "malformed"),
        (Self::UnknownVersion, "unknown_version"),
        (Self::Oversized, "oversized"),
        (Self::Mismatched, "mismatched"),
    ];
}

/// Why a WebSocket upgrade was refused.
#[derive(Debug, Clone, Copy)]
pub enum UpgradeRefusal {
    /// 401: no token, or a token that does not verify.
    Unauthorized,
    /// 400: not a WebSocket handshake, or an invalid client id.
    BadRequest,
    /// 403: a page from an origin not in --allowed-origins.
    Origin,
    /// 503: --max-sessions reached.
    Capacity,
    /// 503: shutting down, or presence unreachable.
    Unavailable,
}

impl UpgradeRefusal {
    const ALL: [(Self, &'static str); 5] = [
        (Self::Unauthorized, "unauthorized"),
        (Self::BadRequest, "bad_request"),
        (Self::Origin, "origin"),
        (Self::Capacity, "capacity"),
        (Self::Unavailable, "unavailable"),
    ];
}

/// Why the node closed a session on its own initiative (1008).
#[derive(Debug, Clone, Copy)]
pub enum PolicyClose {
    /// No frame and no pong for the idle timeout.
    Idle,
    /// Over its rate limit for the whole abuse window.
    RateAbuse,
}

#[derive(Default)]
pub struct Metrics {
    sessions_open: AtomicI64,
    sessions_opened: AtomicU64,
    sends: [AtomicU64; 3],
    errors: [AtomicU64; 7],
    hops_received: AtomicU64,
    hops_rejected: [AtomicU64; HopRejection::ALL.len()],
    hops_absent: AtomicU64,
    upgrades_refused: [AtomicU64; UpgradeRefusal::ALL.len()],
    policy_closes: [AtomicU64; 2],
    hops_forwarded: AtomicU64,
    receipts_offline: AtomicU64,
    receipts_undeliverable: AtomicU64,
    slow_consumers: AtomicU64,
    hops_bounced: AtomicU64,
    presence_lookups: AtomicU64,
    route_cache_hits: AtomicU64,
    late_outcomes: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

impl Metrics {
    pub fn session_opened(&self) {
        self.sessions_open.fetch_add(1, Relaxed);
        self.sessions_opened.fetch_add(1, Relaxed);
    }

    pub fn session_closed(&self) {
        self.sessions_open.fetch_sub(1, Relaxed);
    }

    pub fn sessions_open(&self) -> i64 {
        self.sessions_open.load(Relaxed)
    }

    pub fn send_routed(&self, status: AckStatus) {
        self.sends[status as usize].fetch_add(1, Relaxed);
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors[code as usize].fetch_add(1, Relaxed);
    }

    pub fn hop_received(&self) {
        self.hops_received.fetch_add(1, Relaxed);
    }

    pub fn hop_rejected(&self, why: HopRejection) {
        self.hops_rejected[why as usize].fetch_add(1, Relaxed);
    }

    /// A message hop for a client this node does not hold (it left, or
    /// the sender's node had a stale route): re-routed or answered offline.
    pub fn hop_recipient_absent(&self) {
        self.hops_absent.fetch_add(1, Relaxed);
    }

    pub fn upgrade_refused(&self, why: UpgradeRefusal) {
        self.upgrades_refused[why as usize].fetch_add(1, Relaxed);
    }

    pub fn policy_closed(&self, why: PolicyClose) {
        self.policy_closes[why as usize].fetch_add(1, Relaxed);
    }

    pub fn hop_forwarded(&self) {
        self.hops_forwarded.fetch_add(1, Relaxed);
    }

    pub fn receipt_offline(&self) {
        self.receipts_offline.fetch_add(1, Relaxed);
    }

    /// A receipt whose sender session was gone by the time it arrived.
    pub fn receipt_undeliverable(&self) {
        self.receipts_undeliverable.fetch_add(1, Relaxed);
    }

    /// A presence lookup on the routing path (a round trip to the store).
    pub fn presence_lookup(&self) {
        self.presence_lookups.fetch_add(1, Relaxed);
    }

    /// A remote route found in the route cache (no store round trip).
    pub fn route_cache_hit(&self) {
        self.route_cache_hits.fetch_add(1, Relaxed);
    }

    /// A hop the bus could not deliver to anyone.
    pub fn hop_bounced(&self) {
        self.hops_bounced.fetch_add(1, Relaxed);
    }

    /// An outcome that arrived after its message had been answered offline.
    pub fn late_outcome(&self) {
        self.late_outcomes.fetch_add(1, Relaxed);
    }

    pub fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Relaxed);
    }

    /// Time from reading a `send` to its ack.
    pub fn observe_route(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ns
            .fetch_add(elapsed.as_nanos() as u64, Relaxed);
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = family(
            &mut out,
            "switchboard_sessions_open",
            "gauge",
            "WebSocket sessions open on this node.",
        );
        let _ = writeln!(out, "switchboard_sessions_open {}", self.sessions_open());
        let name = family(
            &mut out,
            "switchboard_sessions_opened_total",
            "counter",
            "WebSocket sessions opened since start.",
        );
        let _ = writeln!(out, "{name} {}", self.sessions_opened.load(Relaxed));

        let name = family(
            &mut out,
            "switchboard_sends_total",
            "counter",
            "Sends routed, by the branch taken.",
        );
        for status in AckStatus::ALL {
            let _ = writeln!(
                out,
                "{name}{{branch=\"{}\"}} {}",
                status.as_str(),
                self.sends[status as usize].load(Relaxed)
            );
        }

        let name = family(
            &mut out,
            "switchboard_errors_total",
            "counter",
            "Error frames and error answers, by code.",
        );
        for code in ErrorCode::ALL {
            let _ = writeln!(
                out,
                "{name}{{code=\"{}\"}} {}",
                code.as_str(),
                self.errors[code as usize].load(Relaxed)
            );
        }

        let name = family(
            &mut out,
            "switchboard_hops_received_total",
            "counter",
            "Envelopes received from the bus.",
        );
        let _ = writeln!(out, "{name} {}", self.hops_received.load(Relaxed));
        let name = family(
            &mut out,
            "switchboard_hops_rejected_total",
            "counter",
            "Envelopes from the bus that could not be used, by reason.",
        );
        for (why, reason) in HopRejection::ALL {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{reason}\"}} {}",
                self.hops_rejected[why as usize].load(Relaxed)
            );
        }
        let name = family(
            &mut out,
            "switchboard_upgrades_refused_total",
            "counter",
            "WebSocket upgrades refused, by reason.",
        );
        for (why, reason) in UpgradeRefusal::ALL {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{reason}\"}} {}",
                self.upgrades_refused[why as usize].load(Relaxed)
            );
        }
        let name = family(
            &mut out,
            "switchboard_sessions_policy_closed_total",
            "counter",
            "Sessions the node closed with 1008, by reason.",
        );
        for (why, reason) in [
            (PolicyClose::Idle, "idle"),
            (PolicyClose::RateAbuse, "rate_abuse"),
        ] {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{reason}\"}} {}",
                self.policy_closes[why as usize].load(Relaxed)
            );
        }
        for (name, help, value) in [
            (
                "switchboard_hops_recipient_absent_total",
                "Message hops for a client not on this node: re-routed once or answered offline.",
                &self.hops_absent,
            ),
            (
                "switchboard_hops_forwarded_total",
                "Messages re-routed once because their recipient had moved.",
                &self.hops_forwarded,
            ),
            (
                "switchboard_receipts_offline_total",
                "Offline receipts issued for messages that could not be handed over.",
                &self.receipts_offline,
            ),
            (
                "switchboard_receipts_undeliverable_total",
                "Receipts whose sender session had already gone.",
                &self.receipts_undeliverable,
            ),
            (
                "switchboard_presence_lookups_total",
                "Presence lookups made to route messages (round trips to the store).",
                &self.presence_lookups,
            ),
            (
                "switchboard_route_cache_hits_total",
                "Remote routes taken from the route cache instead of the presence store.",
                &self.route_cache_hits,
            ),
            (
                "switchboard_hops_bounced_total",
                "Hops the bus found nobody listening for; answered offline.",
                &self.hops_bounced,
            ),
            (
                "switchboard_late_outcomes_total",
                "Outcomes that arrived after their message had been answered offline.",
                &self.late_outcomes,
            ),
            (
                "switchboard_slow_consumers_total",
                "Sessions closed with 4008 because they did not keep up.",
                &self.slow_consumers,
            ),
        ] {
            let name = family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", value.load(Relaxed));
        }

        if let Some(rss) = crate::process::resident_bytes("self") {
            let name = family(
                &mut out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory.",
            );
            let _ = writeln!(out, "{name} {rss}");
        }
        if let Some(cpu) = crate::process::cpu_seconds("self") {
            let name = family(
                &mut out,
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time.",
            );
            let _ = writeln!(out, "{name} {cpu}");
        }
        if let Some(fds) = crate::process::open_fds() {
            let name = family(
                &mut out,
                "process_open_fds",
                "gauge",
                "Open file descriptors.",
            );
            let _ = writeln!(out, "{name} {fds}");
        }

        let name = family(
            &mut out,
            "switchboard_route_seconds",
            "histogram",
            "Time from reading a send to its ack.",
        );
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency_sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        out
    }
}

/// Writes the HELP and TYPE lines of a metric family; returns its name.
fn family<'a>(out: &mut String, name: &'a str, kind: &str, help: &str) -> &'a str {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_by_label_and_builds_a_cumulative_histogram() {
        let m = Metrics::default();
        m.session_opened();
        m.send_routed(AckStatus::Remote);
        m.send_routed(AckStatus::Remote);
        m.error(ErrorCode::TooLarge);
        m.observe_route(Duration::from_micros(50));
        m.observe_route(Duration::from_millis(3));
        m.observe_route(Duration::from_secs(10));
        let text = m.render();
        for line in [
            "switchboard_sessions_open 1",
            "switchboard_sends_total{branch=\"remote\"} 2",
            "switchboard_sends_total{branch=\"local\"} 0",
            "switchboard_errors_total{code=\"too_large\"} 1",
            "switchboard_route_seconds_bucket{le=\"0.0001\"} 1",
            "switchboard_route_seconds_bucket{le=\"0.005\"} 2",
            "switchboard_route_seconds_bucket{le=\"2.5\"} 2",
            "switchboard_route_seconds_bucket{le=\"+Inf\"} 3",
            "switchboard_route_seconds_count 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
