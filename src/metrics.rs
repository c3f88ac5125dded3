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
/// Devices a client has online, when one of its sessions opens.
const DEVICE_BUCKETS: [f64; 8] = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 64.0];

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
    /// 409: the client already has --max-devices devices online.
    TooManyDevices,
    /// v3: the application's backend refused it (its connect hook).
    Hook,
    /// v3: over --max-connect-rate (503 busy, with Retry-After).
    Busy,
}

impl UpgradeRefusal {
    const ALL: [(Self, &'static str); 8] = [
        (Self::Unauthorized, "unauthorized"),
        (Self::BadRequest, "bad_request"),
        (Self::Origin, "origin"),
        (Self::Capacity, "capacity"),
        (Self::Unavailable, "unavailable"),
        (Self::TooManyDevices, "too_many_devices"),
        (Self::Hook, "hook"),
        (Self::Busy, "busy"),
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

/// A histogram: cumulative buckets with these upper bounds, a count and a
/// sum, each one relaxed atomic add per observation.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The sum, in millionths of the unit (µs for seconds).
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6).max(0.0) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

pub struct Metrics {
    sessions_open: AtomicI64,
    sessions_opened: AtomicU64,
    sends: [AtomicU64; AckStatus::ALL.len()],
    errors: [AtomicU64; ErrorCode::ALL.len()],
    hops_received: AtomicU64,
    hops_rejected: [AtomicU64; HopRejection::ALL.len()],
    hops_absent: AtomicU64,
    upgrades_refused: [AtomicU64; UpgradeRefusal::ALL.len()],
    policy_closes: [AtomicU64; 2],
    hops_forwarded: AtomicU64,
    receipts_offline: AtomicU64,
    receipts_undeliverable: AtomicU64,
    slow_consumers: AtomicU64,
    /// Acks mode: sessions detached now, and resumes by result (ok,
    /// expired, rejected).
    sessions_detached: AtomicI64,
    messages_kept: AtomicU64,
    resumes: [AtomicU64; 3],
    hops_bounced: AtomicU64,
    presence_lookups: AtomicU64,
    route_cache_hits: AtomicU64,
    late_outcomes: AtomicU64,
    hops_published: AtomicU64,
    /// Inbox (v2): messages stored, refused (full, unavailable), and
    /// delivered from an inbox.
    inbox_stored: AtomicU64,
    inbox_refused: [AtomicU64; 2],
    inbox_delivered: AtomicU64,
    /// Events (v2) by kind (presence, offline), and those a sink (nats,
    /// webhook) dropped: queue full, or given up after retries.
    events: [AtomicU64; 2],
    events_dropped: [AtomicU64; 2],
    webhook_failed: AtomicU64,
    /// v3: watches held here; presence frames sent and coalesced; signals
    /// by fate (handed to a session, dropped for the sender's rate, dropped
    /// for a recipient's full queue).
    watches: AtomicI64,
    presence_frames: [AtomicU64; 2],
    presence_hops: AtomicU64,
    history_appends: [AtomicU64; 2],
    /// Hook calls (v3): connect then send, each by [`HOOK_RESULTS`].
    hook_calls: [AtomicU64; 8],
    hook_failures: [AtomicU64; 5],
    hook_waiting: AtomicI64,
    hook_seconds: Histogram,
    signals: [AtomicU64; 4],
    route_seconds: Histogram,
    devices_per_client: Histogram,
    handover_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            sessions_open: AtomicI64::new(0),
            sessions_opened: AtomicU64::new(0),
            sends: Default::default(),
            errors: Default::default(),
            hops_received: AtomicU64::new(0),
            hops_rejected: Default::default(),
            hops_absent: AtomicU64::new(0),
            upgrades_refused: Default::default(),
            policy_closes: Default::default(),
            hops_forwarded: AtomicU64::new(0),
            receipts_offline: AtomicU64::new(0),
            receipts_undeliverable: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            sessions_detached: AtomicI64::new(0),
            messages_kept: AtomicU64::new(0),
            resumes: Default::default(),
            hops_bounced: AtomicU64::new(0),
            presence_lookups: AtomicU64::new(0),
            route_cache_hits: AtomicU64::new(0),
            late_outcomes: AtomicU64::new(0),
            hops_published: AtomicU64::new(0),
            inbox_stored: AtomicU64::new(0),
            inbox_refused: Default::default(),
            inbox_delivered: AtomicU64::new(0),
            events: Default::default(),
            events_dropped: Default::default(),
            webhook_failed: AtomicU64::new(0),
            watches: AtomicI64::new(0),
            presence_frames: Default::default(),
            presence_hops: AtomicU64::new(0),
            history_appends: Default::default(),
            hook_calls: Default::default(),
            hook_failures: Default::default(),
            hook_waiting: AtomicI64::new(0),
            hook_seconds: Histogram::new(&LATENCY_BUCKETS),
            signals: Default::default(),
            route_seconds: Histogram::new(&LATENCY_BUCKETS),
            devices_per_client: Histogram::new(&DEVICE_BUCKETS),
            handover_seconds: Histogram::new(&LATENCY_BUCKETS),
        }
    }
}

/// What one row of the table shows.
enum Value {
    One(f64),
    /// One series per value of `label`.
    By(&'static str, Vec<(&'static str, u64)>),
    /// One series per pair of values of two labels.
    ByTwo(
        (&'static str, &'static str),
        Vec<((&'static str, &'static str), u64)>,
    ),
}

/// One metric family: its name, type, help and how to read it.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Metrics) -> Value,
}

fn by<const N: usize>(
    label: &'static str,
    names: impl IntoIterator<Item = &'static str>,
    counts: &[AtomicU64; N],
) -> Value {
    Value::By(
        label,
        names
            .into_iter()
            .zip(counts.iter().map(|c| c.load(Relaxed)))
            .collect(),
    )
}

fn one(counter: &AtomicU64) -> Value {
    Value::One(counter.load(Relaxed) as f64)
}

/// What a hook call came to (v3), in the order of the metric's series.
const HOOK_RESULTS: [&str; 4] = ["allow", "rewrite", "refuse", "failed"];
/// Why a hook call failed (v3).
const HOOK_CAUSES: [&str; 5] = ["timeout", "status", "garbage", "unreachable", "busy"];

/// Why a signal was not handed to a session (v3).
#[derive(Debug, Clone, Copy)]
pub enum SignalFate {
    Sent = 0,
    /// The sender went over `--signal-rate`.
    RateLimited = 1,
    /// The recipient session's queue was more than half full (or it was
    /// closing).
    QueueFull = 2,
    /// The recipient session had gone by the time the signal reached its
    /// node.
    Gone = 3,
}

/// Every family `/metrics` shows, in order. A new metric is a row here.
const FAMILIES: &[Family] = &[
    Family {
        name: "switchboard_watches",
        kind: "gauge",
        help: "Presence watches held by sessions on this node (v3).",
        value: |m| Value::One(m.watches.load(Relaxed) as f64),
    },
    Family {
        name: "switchboard_presence_frames_total",
        kind: "counter",
        help: "Presence frames for watchers: sent, or coalesced into a later one (v3).",
        value: |m| by("result", ["sent", "coalesced"], &m.presence_frames),
    },
    Family {
        name: "switchboard_presence_hops_total",
        kind: "counter",
        help: "`watched` hops this node sent: one per other node with watchers of a client whose presence changed here, per batch of changes (v3).",
        value: |m| Value::One(m.presence_hops.load(Relaxed) as f64),
    },
    Family {
        name: "switchboard_history_appends_total",
        kind: "counter",
        help: "Messages appended to their conversation's history, or not (the store failed: history_error on the ack) (v3).",
        value: |m| by("result", ["ok", "failed"], &m.history_appends),
    },
    Family {
        name: "switchboard_hook_calls_total",
        kind: "counter",
        help: "Backend hook calls by hook and result: allowed, rewritten (send), refused, or failed (v3).",
        value: |m| {
            let mut series = Vec::new();
            for (h, hook) in ["connect", "send"].into_iter().enumerate() {
                for (r, result) in HOOK_RESULTS.into_iter().enumerate() {
                    series.push(((hook, result), m.hook_calls[h * 4 + r].load(Relaxed)));
                }
            }
            Value::ByTwo(("hook", "result"), series)
        },
    },
    Family {
        name: "switchboard_hook_failures_total",
        kind: "counter",
        help: "Backend hook calls that failed, by cause (v3).",
        value: |m| by("cause", HOOK_CAUSES, &m.hook_failures),
    },
    Family {
        name: "switchboard_hook_waiting",
        kind: "gauge",
        help: "Hook calls waiting for a slot or an answer (sends and connections held by the hook) (v3).",
        value: |m| Value::One(m.hook_waiting.load(Relaxed) as f64),
    },
    Family {
        name: "switchboard_signals_total",
        kind: "counter",
        help: "Signals by fate: sent to a session, dropped for the sender's rate, for a recipient's full queue, or because the recipient session had gone (v3).",
        value: |m| {
            by(
                "result",
                ["sent", "rate_limited", "queue_full", "gone"],
                &m.signals,
            )
        },
    },
    Family {
        name: "switchboard_sessions_open",
        kind: "gauge",
        help: "WebSocket sessions open on this node.",
        value: |m| Value::One(m.sessions_open() as f64),
    },
    Family {
        name: "switchboard_sessions_opened_total",
        kind: "counter",
        help: "WebSocket sessions opened since start.",
        value: |m| one(&m.sessions_opened),
    },
    Family {
        name: "switchboard_sends_total",
        kind: "counter",
        help: "Sends routed, by the branch taken.",
        value: |m| by("branch", AckStatus::ALL.map(AckStatus::as_str), &m.sends),
    },
    Family {
        name: "switchboard_errors_total",
        kind: "counter",
        help: "Error frames and error answers, by code.",
        value: |m| by("code", ErrorCode::ALL.map(ErrorCode::as_str), &m.errors),
    },
    Family {
        name: "switchboard_hops_received_total",
        kind: "counter",
        help: "Envelopes received from the bus.",
        value: |m| one(&m.hops_received),
    },
    Family {
        name: "switchboard_hops_rejected_total",
        kind: "counter",
        help: "Envelopes from the bus that could not be used, by reason.",
        value: |m| {
            by(
                "reason",
                HopRejection::ALL.map(|(_, r)| r),
                &m.hops_rejected,
            )
        },
    },
    Family {
        name: "switchboard_upgrades_refused_total",
        kind: "counter",
        help: "WebSocket upgrades refused, by reason.",
        value: |m| {
            by(
                "reason",
                UpgradeRefusal::ALL.map(|(_, r)| r),
                &m.upgrades_refused,
            )
        },
    },
    Family {
        name: "switchboard_sessions_policy_closed_total",
        kind: "counter",
        help: "Sessions the node closed with 1008, by reason.",
        value: |m| by("reason", ["idle", "rate_abuse"], &m.policy_closes),
    },
    Family {
        name: "switchboard_hops_recipient_absent_total",
        kind: "counter",
        help: "Message hops for a client not on this node: re-routed once or answered offline.",
        value: |m| one(&m.hops_absent),
    },
    Family {
        name: "switchboard_hops_forwarded_total",
        kind: "counter",
        help: "Messages re-routed once because their recipient had moved.",
        value: |m| one(&m.hops_forwarded),
    },
    Family {
        name: "switchboard_receipts_offline_total",
        kind: "counter",
        help: "Offline receipts issued for messages that could not be handed over.",
        value: |m| one(&m.receipts_offline),
    },
    Family {
        name: "switchboard_receipts_undeliverable_total",
        kind: "counter",
        help: "Receipts whose sender session had already gone.",
        value: |m| one(&m.receipts_undeliverable),
    },
    Family {
        name: "switchboard_presence_lookups_total",
        kind: "counter",
        help: "Presence lookups made to route messages (round trips to the store).",
        value: |m| one(&m.presence_lookups),
    },
    Family {
        name: "switchboard_hops_published_total",
        kind: "counter",
        help: "Message hops published to other nodes (at most one per node per routed message; divide by switchboard_sends_total for hops per send).",
        value: |m| one(&m.hops_published),
    },
    Family {
        name: "switchboard_route_cache_hits_total",
        kind: "counter",
        help: "Remote routes taken from the route cache instead of the presence store.",
        value: |m| one(&m.route_cache_hits),
    },
    Family {
        name: "switchboard_hops_bounced_total",
        kind: "counter",
        help: "Hops the bus found nobody listening for; answered offline.",
        value: |m| one(&m.hops_bounced),
    },
    Family {
        name: "switchboard_late_outcomes_total",
        kind: "counter",
        help: "Outcomes that arrived after their message had been answered offline.",
        value: |m| one(&m.late_outcomes),
    },
    Family {
        name: "switchboard_slow_consumers_total",
        kind: "counter",
        help: "Sessions closed with 4008 because they did not keep up.",
        value: |m| one(&m.slow_consumers),
    },
    Family {
        name: "switchboard_sessions_detached",
        kind: "gauge",
        help: "Acks-mode sessions detached on this node, kept for a resume.",
        value: |m| Value::One(m.sessions_detached.load(Relaxed) as f64),
    },
    Family {
        name: "switchboard_messages_kept",
        kind: "gauge",
        help: "Messages kept for detached sessions (acks mode), as of the last upkeep tick.",
        value: |m| one(&m.messages_kept),
    },
    Family {
        name: "switchboard_resumes_total",
        kind: "counter",
        help: "Resumes asked for: ok (taken back, here or from another node), expired (the window ended first), rejected (a token this cluster does not honour, or a session it no longer has).",
        value: |m| by("result", ["ok", "expired", "rejected"], &m.resumes),
    },
    Family {
        name: "switchboard_inbox_stored_total",
        kind: "counter",
        help: "Offline sends stored in their recipient's inbox (store: true).",
        value: |m| one(&m.inbox_stored),
    },
    Family {
        name: "switchboard_inbox_refused_total",
        kind: "counter",
        help: "Offline sends with store: true that were not stored, by store_error.",
        value: |m| by("error", ["inbox_full", "unavailable"], &m.inbox_refused),
    },
    Family {
        name: "switchboard_inbox_delivered_total",
        kind: "counter",
        help: "Stored messages delivered (in acks mode: confirmed) and taken out of their inbox.",
        value: |m| one(&m.inbox_delivered),
    },
    Family {
        name: "switchboard_events_total",
        kind: "counter",
        help: "Events emitted, by kind.",
        value: |m| by("kind", ["presence", "offline"], &m.events),
    },
    Family {
        name: "switchboard_events_dropped_total",
        kind: "counter",
        help: "Events a sink did not deliver (its queue was full, or it gave up retrying), by sink.",
        value: |m| by("sink", ["nats", "webhook"], &m.events_dropped),
    },
    Family {
        name: "switchboard_webhook_failed_total",
        kind: "counter",
        help: "Webhook POSTs that failed (each is retried with backoff, up to its attempts).",
        value: |m| one(&m.webhook_failed),
    },
];

/// The process's own families, read from /proc when scraped (shown only
/// where /proc has them).
const PROCESS: &[Family] = &[
    Family {
        name: "process_resident_memory_bytes",
        kind: "gauge",
        help: "Resident memory.",
        value: |_| maybe(crate::process::resident_bytes("self").map(|b| b as f64)),
    },
    Family {
        name: "process_cpu_seconds_total",
        kind: "counter",
        help: "User and system CPU time.",
        value: |_| maybe(crate::process::cpu_seconds("self")),
    },
    Family {
        name: "process_context_switches_total",
        kind: "counter",
        help: "Context switches of all the process's threads, by kind.",
        value: |_| match crate::process::context_switches("self") {
            Some((voluntary, involuntary)) => Value::By(
                "kind",
                vec![("voluntary", voluntary), ("involuntary", involuntary)],
            ),
            None => Value::By("", Vec::new()),
        },
    },
    Family {
        name: "process_open_fds",
        kind: "gauge",
        help: "Open file descriptors.",
        value: |_| maybe(crate::process::open_fds().map(|n| n as f64)),
    },
];

/// A value /proc may not have: no series at all then.
fn maybe(value: Option<f64>) -> Value {
    value.map_or(Value::By("", Vec::new()), Value::One)
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

    /// Hops published for one routed message.
    pub fn hops_published(&self, hops: u32) {
        self.hops_published.fetch_add(hops.into(), Relaxed);
    }

    /// A session opened; its client now has `devices` devices online.
    pub fn devices_per_client(&self, devices: usize) {
        self.devices_per_client.observe(devices as f64);
    }

    /// An outcome that arrived after its message had been answered offline.
    pub fn late_outcome(&self) {
        self.late_outcomes.fetch_add(1, Relaxed);
    }

    pub fn set_messages_kept(&self, kept: usize) {
        self.messages_kept.store(kept as u64, Relaxed);
    }

    pub fn session_detached(&self) {
        self.sessions_detached.fetch_add(1, Relaxed);
    }

    /// A detached session here was taken back, here or by another node,
    /// or ended.
    pub fn detach_ended(&self) {
        self.sessions_detached.fetch_sub(1, Relaxed);
    }

    /// A client resumed its session on this node.
    pub fn resumed(&self) {
        self.resumes[0].fetch_add(1, Relaxed);
    }

    /// A detached session's window ended (or the node's drain did).
    pub fn resume_expired(&self) {
        self.resumes[1].fetch_add(1, Relaxed);
    }

    /// A resume that took nothing back: the session starts afresh.
    pub fn resume_rejected(&self) {
        self.resumes[2].fetch_add(1, Relaxed);
    }

    /// An offline send was stored (`Ok`), or not, with its `store_error`.
    pub fn inbox_append(&self, refused: Option<&str>) {
        match refused {
            None => &self.inbox_stored,
            Some("inbox_full") => &self.inbox_refused[0],
            Some(_) => &self.inbox_refused[1],
        }
        .fetch_add(1, Relaxed);
    }

    pub fn inbox_delivered(&self, n: usize) {
        self.inbox_delivered.fetch_add(n as u64, Relaxed);
    }

    /// An event was emitted: `presence` (else `offline`).
    pub fn event(&self, presence: bool) {
        self.events[usize::from(!presence)].fetch_add(1, Relaxed);
    }

    /// A sink dropped an event: the webhook's (else NATS').
    pub fn event_dropped(&self, webhook: bool) {
        self.events_dropped[usize::from(webhook)].fetch_add(1, Relaxed);
    }

    pub fn webhook_failed(&self) {
        self.webhook_failed.fetch_add(1, Relaxed);
    }

    pub fn watches_changed(&self, by: i64) {
        self.watches.fetch_add(by, Relaxed);
    }

    pub fn presence_hop(&self) {
        self.presence_hops.fetch_add(1, Relaxed);
    }

    /// `n` presence frames sent, or coalesced into a later one.
    pub fn presence_frames(&self, sent: bool, n: u64) {
        self.presence_frames[usize::from(!sent)].fetch_add(n, Relaxed);
    }

    /// A hook call's result (`allow`, `rewrite`, `refuse`, `failed`).
    pub fn hook_call(&self, hook: &str, result: &str) {
        let h = usize::from(hook == "send");
        if let Some(r) = HOOK_RESULTS.iter().position(|x| *x == result) {
            self.hook_calls[h * 4 + r].fetch_add(1, Relaxed);
        }
    }

    pub fn hook_failure(&self, cause: &str) {
        if let Some(c) = HOOK_CAUSES.iter().position(|x| *x == cause) {
            self.hook_failures[c].fetch_add(1, Relaxed);
        }
    }

    pub fn hook_waiting(&self, by: i64) {
        self.hook_waiting.fetch_add(by, Relaxed);
    }

    pub fn observe_hook(&self, _hook: &str, elapsed: Duration) {
        self.hook_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn history_appended(&self, ok: bool) {
        self.history_appends[usize::from(!ok)].fetch_add(1, Relaxed);
    }

    pub fn signal(&self, fate: SignalFate) {
        self.signals[fate as usize].fetch_add(1, Relaxed);
    }

    pub fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Relaxed);
    }

    /// A resume on this node took a session over from another: how long
    /// asking for it and putting it in place took.
    pub fn observe_handover(&self, elapsed: Duration) {
        self.handover_seconds.observe(elapsed.as_secs_f64());
    }

    /// Time from reading a `send` to its ack.
    pub fn observe_route(&self, elapsed: Duration) {
        self.route_seconds.observe(elapsed.as_secs_f64());
    }

    /// Sends routed so far, by branch.
    pub fn sends_by_branch(&self) -> Vec<(&'static str, u64)> {
        AckStatus::ALL
            .iter()
            .zip(&self.sends)
            .map(|(status, count)| (status.as_str(), count.load(Relaxed)))
            .collect()
    }

    /// Offline receipts sent so far.
    pub fn offline_receipts(&self) -> u64 {
        self.receipts_offline.load(Relaxed)
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        for family in FAMILIES.iter().chain(PROCESS) {
            match (family.value)(self) {
                Value::One(v) => {
                    header(&mut out, family.name, family.kind, family.help);
                    let _ = writeln!(out, "{} {v}", family.name);
                }
                Value::By(_, series) if series.is_empty() => {}
                Value::By(label, series) => {
                    header(&mut out, family.name, family.kind, family.help);
                    for (value, count) in series {
                        let _ = writeln!(out, "{}{{{label}=\"{value}\"}} {count}", family.name);
                    }
                }
                Value::ByTwo((a, b), series) => {
                    header(&mut out, family.name, family.kind, family.help);
                    for ((x, y), count) in series {
                        let _ = writeln!(out, "{}{{{a}=\"{x}\",{b}=\"{y}\"}} {count}", family.name);
                    }
                }
            }
        }
        let name = "switchboard_route_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Time from reading a send to its ack.",
        );
        self.route_seconds.render(&mut out, name);
        let name = "switchboard_handover_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Resumes that took a detached session over from another node: the time from asking for it to having it here.",
        );
        self.handover_seconds.render(&mut out, name);
        let name = "switchboard_hook_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "Backend hook calls (v3): from having a call slot to the answer.",
        );
        self.hook_seconds.render(&mut out, name);
        let name = "switchboard_devices_per_client";
        header(
            &mut out,
            name,
            "histogram",
            "Devices a client has online across the cluster, observed when one of its sessions opens here.",
        );
        self.devices_per_client.render(&mut out, name);
        out
    }
}

/// The HELP and TYPE lines of a metric family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
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
