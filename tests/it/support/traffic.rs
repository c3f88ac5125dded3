//! Chat traffic for failure tests: clients that connect to random nodes,
//! send to random peers with receipts on, come and go, and write every
//! outcome into a shared [`Ledger`] that checks no message was lost
//! silently.
//!
//! Every send asks for a receipt, so every session a `local` or `remote`
//! ack counted must end with a receipt naming its device (`delivered` or
//! `offline`) unless the sender's session was cut off first. A voluntary
//! disconnect waits for the outstanding receipts before closing, so only
//! sessions cut off by a crash or a takeover lose the means to hear an
//! outcome. With several devices per client, each device is a session of
//! its own, coming and going; carbon copies of what a client sends must
//! reach only its other devices.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::protocol::{AckStatus, ErrorCode, MessageFrame, ReceiptStatus, ServerFrame};
use switchboard_client::{Client, ClientError, ConnectOptions, Event, Identity};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;

/// A small, seedable random number generator (xorshift64*): enough for
/// picking nodes and peers without another dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One receiving session: a client's device.
type Device = (String, String);

/// A send, as its ack told it.
struct Acked {
    from: Device,
    /// The recipient client, or `#<group>`.
    to: String,
    status: AckStatus,
    /// Recipient sessions the ack counted.
    sessions: u32,
}

#[derive(Default)]
struct Book {
    sent: u64,
    /// msg_id -> its send, as acked
    acked: HashMap<Uuid, Acked>,
    errors: HashMap<ErrorCode, u64>,
    /// Sends whose session was cut off before their ack.
    unacked: u64,
    /// Sends still unacked when this client closed its session itself:
    /// the protocol owes every read send an ack, so this must stay 0.
    unacked_at_close: u64,
    /// msg_id -> device -> receipt (each session's outcome, named; for a
    /// group send, `client/device`).
    receipts: HashMap<Uuid, HashMap<String, ReceiptStatus>>,
    /// Two receipts for one message and one device.
    double_receipts: u64,
    /// msg_id -> the devices that received it.
    received: HashMap<Uuid, HashSet<Device>>,
    duplicates: u64,
    /// Carbon copies seen: msg_id -> (client, device) that got one.
    carbons: Vec<(Uuid, Device)>,
    /// Acked local/remote, but the sender's session was cut off before an
    /// outcome could reach it.
    sender_cut_off: HashSet<Uuid>,
    sessions: u64,
    cut_off_sessions: u64,
    /// When each device's sessions were cut off (ms since the epoch).
    cut_offs: HashMap<Device, Vec<u64>>,
}

/// How long after a message was sent a cut-off of its recipient's session
/// may have taken it unread (its node crashed with the frame in flight).
const CUT_OFF_WINDOW_MS: u64 = 10_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// When a message was sent, from its version 7 `msg_id`.
fn sent_ms(msg_id: &Uuid) -> u64 {
    msg_id
        .get_timestamp()
        .map(|t| {
            let (secs, nanos) = t.to_unix();
            secs * 1000 + u64::from(nanos) / 1_000_000
        })
        .unwrap_or(0)
}

impl Book {
    /// Whether `device`'s session was cut off soon after `msg_id` was sent:
    /// a frame written to it (`delivered`) may then never have been read
    /// ("delivered is not read", docs/guarantees.md).
    fn cut_off_after(&self, device: &Device, msg_id: &Uuid) -> bool {
        let sent = sent_ms(msg_id);
        self.cut_offs.get(device).is_some_and(|at| {
            at.iter()
                .any(|t| (sent..sent + CUT_OFF_WINDOW_MS).contains(t))
        })
    }
}

/// Everything the clients saw, shared between them.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Book>>);

/// The counts a failure test reports and checks. Counts of messages are per
/// recipient session: a message to a client on two devices is two.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub sessions: u64,
    pub sessions_cut_off: u64,
    pub sent: u64,
    pub acked_local: u64,
    pub acked_remote: u64,
    pub acked_offline: u64,
    /// Recipient sessions the acks counted.
    pub acked_sessions: u64,
    pub errors: u64,
    pub unavailable: u64,
    pub unacked: u64,
    pub unacked_at_close: u64,
    /// Messages received, per receiving session.
    pub received: u64,
    pub duplicates: u64,
    pub delivered_receipts: u64,
    pub offline_receipts: u64,
    pub double_receipts: u64,
    pub carbons: u64,
    pub misdirected_carbons: u64,
    /// Sessions not accounted for whose sender was cut off before an
    /// outcome could reach it.
    pub sender_cut_off: u64,
    /// `delivered` receipts naming a device that never read the message,
    /// whose session was not cut off: lies.
    pub false_deliveries: u64,
    /// Sessions written to (`delivered`) that never read the message
    /// because their connection was cut soon after (their node crashed
    /// with the frame in flight): "delivered is not read",
    /// docs/guarantees.md; what acks mode is for.
    pub delivered_then_cut_off: u64,
    /// Group sends: `offline` receipts for a session that did read the
    /// message. Allowed: an outcome lost with a crashed node or a bus
    /// outage makes `offline` mean "not known to be delivered"
    /// (docs/guarantees.md); counted to show how often.
    pub offline_yet_received: u64,
    /// Group sends that came back to the session that sent them.
    pub to_sender: u64,
    /// Group sends acked.
    pub acked_fanout: u64,
    /// Sessions an ack counted that neither received the message nor were
    /// answered `offline`, while the sender was there to be told: the
    /// losses that must not happen.
    pub unaccounted: u64,
    /// The first few of those, for the failure message.
    pub unaccounted_examples: Vec<String>,
}

impl Report {
    /// The promise every failure test checks: each session an ack counted
    /// received the message or was answered `offline`, no `delivered`
    /// receipt lied, nothing arrived twice, no session heard of one
    /// message twice, carbons went only to the sender's other devices, and
    /// every send a client read was acked before it closed.
    pub fn assert_no_silent_loss(&self) {
        assert_eq!(self.unaccounted, 0, "{self:#?}");
        assert_eq!(self.false_deliveries, 0, "{self:#?}");
        assert_eq!(self.to_sender, 0, "{self:#?}");
        assert_eq!(self.duplicates, 0, "{self:#?}");
        assert_eq!(self.double_receipts, 0, "{self:#?}");
        assert_eq!(self.misdirected_carbons, 0, "{self:#?}");
        assert_eq!(self.unacked_at_close, 0, "{self:#?}");
    }
}

impl Ledger {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.0.lock().unwrap()
    }

    /// A group send by `from` was acked `fanout` to `sessions` sessions.
    pub fn group_acked(&self, msg_id: Uuid, from: &str, group: &str, sessions: u32) {
        let mut book = self.book();
        book.sent += 1;
        let acked = Acked {
            from: (from.to_owned(), "default".to_owned()),
            to: format!("#{group}"),
            status: AckStatus::Fanout,
            sessions,
        };
        book.acked.insert(msg_id, acked);
    }

    /// A group send by a session that was refused (`code`), or never
    /// acked because the session was cut off (`None`).
    pub fn group_refused(&self, code: Option<ErrorCode>) {
        let mut book = self.book();
        book.sent += 1;
        match code {
            Some(code) => *book.errors.entry(code).or_default() += 1,
            None => book.unacked += 1,
        }
    }

    /// An `offline` receipt for a group send, naming the member's session.
    pub fn group_receipt(&self, msg_id: Uuid, to: &str, device: &str, status: ReceiptStatus) {
        let mut book = self.book();
        let who = format!("{to}/{device}");
        if book
            .receipts
            .entry(msg_id)
            .or_default()
            .insert(who, status)
            .is_some()
        {
            book.double_receipts += 1;
        }
    }

    /// The session that sent these group messages was cut off: their
    /// outcomes can no longer reach it.
    pub fn group_sender_cut_off(&self, msg_ids: impl IntoIterator<Item = Uuid>) {
        self.book().sender_cut_off.extend(msg_ids);
    }

    pub fn report(&self) -> Report {
        let book = self.book();
        let count = |s: AckStatus| book.acked.values().filter(|a| a.status == s).count() as u64;
        let mut r = Report {
            sessions: book.sessions,
            sessions_cut_off: book.cut_off_sessions,
            sent: book.sent,
            acked_local: count(AckStatus::Local),
            acked_remote: count(AckStatus::Remote),
            acked_offline: count(AckStatus::Offline),
            acked_fanout: count(AckStatus::Fanout),
            acked_sessions: book.acked.values().map(|a| u64::from(a.sessions)).sum(),
            errors: book.errors.values().sum(),
            unavailable: book
                .errors
                .get(&ErrorCode::Unavailable)
                .copied()
                .unwrap_or(0),
            unacked: book.unacked,
            unacked_at_close: book.unacked_at_close,
            received: book.received.values().map(|d| d.len() as u64).sum(),
            duplicates: book.duplicates,
            double_receipts: book.double_receipts,
            carbons: book.carbons.len() as u64,
            ..Report::default()
        };
        // A carbon goes to the sender's other devices: never to another
        // client, never to the device that sent it.
        for (msg_id, (name, device)) in &book.carbons {
            let right = book
                .acked
                .get(msg_id)
                .is_some_and(|a| a.from.0 == *name && a.from.1 != *device);
            // Its send may not have been acked (the sender was cut off).
            if !right && book.acked.contains_key(msg_id) {
                r.misdirected_carbons += 1;
            }
        }
        for status in book.receipts.values().flat_map(|r| r.values()) {
            match status {
                ReceiptStatus::Delivered => r.delivered_receipts += 1,
                ReceiptStatus::Offline => r.offline_receipts += 1,
            }
        }
        let none = HashSet::new();
        let no_receipts = HashMap::new();
        for (msg_id, acked) in &book.acked {
            let Acked {
                from,
                to,
                status: branch,
                sessions,
            } = acked;
            if *branch == AckStatus::Offline {
                continue;
            }
            let received = book.received.get(msg_id).unwrap_or(&none);
            let receipts = book.receipts.get(msg_id).unwrap_or(&no_receipts);
            if let Some(group) = to.strip_prefix('#') {
                let mut missing = group_missing(from, *sessions, received, receipts, &mut r);
                // Sessions written to and then cut off by a crash: those
                // of members' devices cut off soon after, that neither
                // read it nor were answered.
                let cut = book
                    .cut_offs
                    .keys()
                    .filter(|d| book.cut_off_after(d, msg_id) && !received.contains(*d))
                    .filter(|(n, d)| !receipts.contains_key(&format!("{n}/{d}")))
                    .count() as u64;
                let excused = missing.min(cut);
                r.delivered_then_cut_off += excused;
                missing -= excused;
                if missing > 0 {
                    if book.sender_cut_off.contains(msg_id) {
                        r.sender_cut_off += missing;
                    } else {
                        r.unaccounted += missing;
                        if r.unaccounted_examples.len() < 10 {
                            r.unaccounted_examples.push(format!(
                                "{msg_id} {from:?} -> #{group} to {sessions} sessions, \
                                 received by {received:?}, receipts {receipts:?}"
                            ));
                        }
                    }
                }
                continue;
            }
            let got = |device: &str| received.contains(&(to.clone(), device.to_owned()));
            let mut written_then_cut: HashSet<&str> = HashSet::new();
            for (device, status) in receipts {
                if *status == ReceiptStatus::Delivered && !got(device) {
                    if book.cut_off_after(&(to.clone(), device.clone()), msg_id) {
                        r.delivered_then_cut_off += 1;
                        written_then_cut.insert(device);
                    } else {
                        r.false_deliveries += 1;
                    }
                }
            }
            // Sessions accounted for: those that read it, and those
            // answered offline.
            let mut accounted: HashSet<&str> = received
                .iter()
                .filter(|(who, _)| who == to)
                .map(|(_, d)| d.as_str())
                .collect();
            accounted.extend(
                receipts
                    .iter()
                    .filter(|(_, s)| **s == ReceiptStatus::Offline)
                    .map(|(d, _)| d.as_str()),
            );
            accounted.extend(written_then_cut);
            let missing = u64::from(*sessions).saturating_sub(accounted.len() as u64);
            if missing == 0 {
                continue;
            }
            if book.sender_cut_off.contains(msg_id) {
                r.sender_cut_off += missing;
            } else {
                r.unaccounted += missing;
                if r.unaccounted_examples.len() < 10 {
                    r.unaccounted_examples.push(format!(
                        "{msg_id} {from:?} -> {to} acked {branch:?} to {sessions} sessions, \
                         received by {received:?}, receipts {receipts:?}"
                    ));
                }
            }
        }
        r
    }
}

/// How many of the `sessions` a group send's ack counted neither received it
/// nor were answered `offline` (receipts keyed `client/device`). Counts
/// into `r` what a group send must never do (reach the sending session, or
/// be answered `delivered`) and `offline` receipts for sessions that got it.
fn group_missing(
    from: &Device,
    sessions: u32,
    received: &HashSet<Device>,
    receipts: &HashMap<String, ReceiptStatus>,
    r: &mut Report,
) -> u64 {
    if received.contains(from) {
        r.to_sender += 1;
    }
    let mut accounted: HashSet<String> = received
        .iter()
        .map(|(name, device)| format!("{name}/{device}"))
        .collect();
    for (who, status) in receipts {
        match status {
            ReceiptStatus::Offline if accounted.contains(who) => r.offline_yet_received += 1,
            ReceiptStatus::Offline => {
                accounted.insert(who.clone());
            }
            ReceiptStatus::Delivered => r.false_deliveries += 1, // never for groups
        }
    }
    u64::from(sessions).saturating_sub(accounted.len() as u64)
}

/// How a traffic client behaves.
#[derive(Clone)]
pub struct Plan {
    /// WebSocket URLs of the nodes to pick from.
    pub nodes: Arc<Mutex<Vec<String>>>,
    /// Every client name; peers are picked from these.
    pub names: Arc<Vec<String>>,
    /// Sends per session, before a voluntary disconnect.
    pub sends_per_session: (usize, usize),
    /// Pause between sends.
    pub pace: Duration,
    /// How long a voluntary disconnect waits for outstanding receipts.
    pub drain: Duration,
    /// Devices per client, each its own session coming and going (1: the
    /// client names no device).
    pub devices: usize,
}

impl Plan {
    /// Churn over `nodes`: sessions of 1 to 12 sends, `pace` apart, that
    /// wait up to 20 s for their receipts before leaving.
    pub fn churn(nodes: Vec<String>, names: &[String], pace: Duration) -> Self {
        Self {
            nodes: Arc::new(Mutex::new(nodes)),
            names: Arc::new(names.to_vec()),
            sends_per_session: (1, 12),
            pace,
            drain: Duration::from_secs(20),
            devices: 1,
        }
    }
}

enum SessionEnd {
    /// Closed by this client after its receipts came in.
    Voluntary,
    /// Closed by the node, or the connection dropped.
    CutOff,
}

/// One session's view: its client and device.
struct Me<'a> {
    name: &'a str,
    device: &'a str,
}

/// Runs one device of a client until `stop_at`, then closes voluntarily.
pub async fn run_client(
    name: String,
    device: Option<String>,
    plan: Plan,
    ledger: Ledger,
    stop_at: Instant,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let options = ConnectOptions {
        device: device.clone(),
        ..ConnectOptions::default()
    };
    let me = Me {
        name: &name,
        device: device.as_deref().unwrap_or("default"),
    };
    while Instant::now() < stop_at {
        let url = {
            let nodes = plan.nodes.lock().unwrap();
            nodes[rng.below(nodes.len())].clone()
        };
        let client = match Client::connect_with(&url, Identity::Name(name.clone()), &options).await
        {
            Ok(client) => client,
            // A node that is down, starting, or refusing (503): try another.
            Err(
                ClientError::Refused { .. } | ClientError::Connect(_) | ClientError::Closed { .. },
            ) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => panic!("{name}: {e}"),
        };
        ledger.book().sessions += 1;
        let sends = plan.sends_per_session.0
            + rng.below(plan.sends_per_session.1 - plan.sends_per_session.0 + 1);
        match session(&me, client, &plan, &ledger, &mut rng, sends, stop_at).await {
            SessionEnd::Voluntary => {}
            SessionEnd::CutOff => {
                ledger.book().cut_off_sessions += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// What one session waits for.
#[derive(Default)]
struct Waiting {
    /// Send id -> recipient, until acked.
    unacked: HashMap<String, String>,
    /// msg_id of acked local/remote sends -> receipts still to come (one
    /// per session the ack counted).
    outstanding: HashMap<Uuid, u32>,
}

impl Waiting {
    fn is_empty(&self) -> bool {
        self.unacked.is_empty() && self.outstanding.is_empty()
    }
}

async fn session(
    me: &Me<'_>,
    mut client: Client,
    plan: &Plan,
    ledger: &Ledger,
    rng: &mut Rng,
    sends: usize,
    stop_at: Instant,
) -> SessionEnd {
    let mut waiting = Waiting::default();
    let mut next_id = 0usize;
    let mut tick = tokio::time::interval(plan.pace);
    let mut draining_since: Option<Instant> = None;

    loop {
        let sending = next_id < sends && draining_since.is_none() && Instant::now() < stop_at;
        if !sending && draining_since.is_none() {
            draining_since = Some(Instant::now());
        }
        if let Some(since) = draining_since
            && (waiting.is_empty() || since.elapsed() > plan.drain)
        {
            return close(client, me, ledger, waiting).await;
        }
        tokio::select! {
            _ = tick.tick(), if sending => {
                let to = &plan.names[rng.below(plan.names.len())];
                let id = format!("{}-{}-{next_id}", me.name, me.device);
                next_id += 1;
                let body = serde_json::json!({"from": me.name, "n": next_id});
                if client.send(to, &body, Some(&id), true).await.is_err() {
                    return cut_off(me, ledger, waiting);
                }
                ledger.book().sent += 1;
                waiting.unacked.insert(id, to.clone());
            }
            event = client.next_event() => match event {
                Ok(Event::Frame(frame)) => record(me, frame, ledger, &mut waiting),
                Ok(Event::Closed { .. }) | Err(_) => return cut_off(me, ledger, waiting),
            },
        }
    }
}

fn record(me: &Me<'_>, frame: ServerFrame, ledger: &Ledger, waiting: &mut Waiting) {
    let name = me.name;
    let mut book = ledger.book();
    match frame {
        ServerFrame::Ack(ack) => {
            let to = ack
                .id
                .and_then(|id| waiting.unacked.remove(&id))
                .unwrap_or_else(|| panic!("{name}: ack for no send"));
            let sessions = ack
                .sessions
                .unwrap_or_else(|| panic!("{name}: an ack without sessions"));
            if ack.status != AckStatus::Offline && sessions > 0 {
                waiting.outstanding.insert(ack.msg_id, sessions);
            }
            let acked = Acked {
                from: (name.to_owned(), me.device.to_owned()),
                to,
                status: ack.status,
                sessions,
            };
            book.acked.insert(ack.msg_id, acked);
        }
        ServerFrame::Error { id, code, .. } => {
            if let Some(id) = id {
                waiting.unacked.remove(&id);
            }
            *book.errors.entry(code).or_default() += 1;
        }
        ServerFrame::Receipt {
            msg_id,
            status,
            device,
            ..
        } => {
            if let Some(left) = waiting.outstanding.get_mut(&msg_id) {
                *left -= 1;
                if *left == 0 {
                    waiting.outstanding.remove(&msg_id);
                }
            }
            let device = device.unwrap_or_else(|| panic!("{name}: a receipt naming no device"));
            if book
                .receipts
                .entry(msg_id)
                .or_default()
                .insert(device, status)
                .is_some()
            {
                book.double_receipts += 1;
            }
        }
        ServerFrame::Message(MessageFrame {
            msg_id,
            to,
            from,
            carbon,
            group,
            ..
        }) => {
            if carbon {
                // A copy of what this client sent from another device.
                assert_eq!(from, name, "a carbon of someone else's message");
                let receiver = (name.to_owned(), me.device.to_owned());
                book.carbons.push((msg_id, receiver));
                return;
            }
            if group.is_none() {
                assert_eq!(to.as_deref(), Some(name));
            }
            let receiver = (name.to_owned(), me.device.to_owned());
            if !book.received.entry(msg_id).or_default().insert(receiver) {
                book.duplicates += 1;
            }
        }
        // The churn neither watches, signals nor reads history (v3).
        ServerFrame::Pong { .. }
        | ServerFrame::Welcome { .. }
        | ServerFrame::Ok { .. }
        | ServerFrame::Watching(_)
        | ServerFrame::Presence(_)
        | ServerFrame::Signal(_)
        | ServerFrame::History(_)
        | ServerFrame::Conversations(_)
        | ServerFrame::Read(_) => {}
    }
}

fn cut_off(me: &Me<'_>, ledger: &Ledger, waiting: Waiting) -> SessionEnd {
    let mut book = ledger.book();
    let device = (me.name.to_owned(), me.device.to_owned());
    book.cut_offs.entry(device).or_default().push(now_ms());
    book.unacked += waiting.unacked.len() as u64;
    book.sender_cut_off.extend(waiting.outstanding.into_keys());
    SessionEnd::CutOff
}

/// Closes from this side, still reading (and recording) whatever the node
/// writes until its close frame.
async fn close(
    mut client: Client,
    me: &Me<'_>,
    ledger: &Ledger,
    mut waiting: Waiting,
) -> SessionEnd {
    if client.send_message(WsMessage::Close(None)).await.is_err() {
        return cut_off(me, ledger, waiting);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, client.next_event()).await {
            Ok(Ok(Event::Frame(frame))) => record(me, frame, ledger, &mut waiting),
            _ => break,
        }
    }
    // Outcomes that had not arrived by the close stay unresolved: unless
    // their recipients got them, they count as unaccounted.
    ledger.book().unacked_at_close += waiting.unacked.len() as u64;
    SessionEnd::Voluntary
}

/// [`run_clients`] in the background, while the test breaks things.
pub fn spawn_clients(
    names: &[String],
    plan: &Plan,
    ledger: &Ledger,
    stop_at: Instant,
    seed: u64,
    limit: Duration,
) -> tokio::task::JoinHandle<()> {
    let (names, plan, ledger) = (names.to_vec(), plan.clone(), ledger.clone());
    tokio::spawn(async move { run_clients(&names, &plan, &ledger, stop_at, seed, limit).await })
}

/// Runs one traffic client per name and device until `stop_at` and waits
/// for all of them to finish (bounded by `limit`).
pub async fn run_clients(
    names: &[String],
    plan: &Plan,
    ledger: &Ledger,
    stop_at: Instant,
    seed: u64,
    limit: Duration,
) {
    let devices: Vec<Option<String>> = match plan.devices {
        1 => vec![None],
        n => (0..n).map(|d| Some(format!("d{d}"))).collect(),
    };
    let clients: Vec<_> = names
        .iter()
        .flat_map(|name| devices.iter().map(move |device| (name, device)))
        .enumerate()
        .map(|(i, (name, device))| {
            tokio::spawn(run_client(
                name.clone(),
                device.clone(),
                plan.clone(),
                ledger.clone(),
                stop_at,
                seed + i as u64,
            ))
        })
        .collect();
    for client in clients {
        tokio::time::timeout(limit, client)
            .await
            .expect("a traffic client did not finish in time")
            .expect("a traffic client panicked");
    }
}

/// The churn scenario the failure tests share: named clients that come
/// and go over the nodes, sending to one another with receipts on, while
/// the test breaks things; every outcome goes into one ledger.
pub struct Churn {
    ledger: Ledger,
    traffic: tokio::task::JoinHandle<()>,
}

impl Churn {
    /// `clients` clients (`c0`, `c1`, ...) churning over `nodes` with
    /// sessions of 1 to 12 sends `pace` apart, for `run_for`.
    pub fn start(nodes: Vec<String>, clients: usize, pace: Duration, run_for: Duration) -> Self {
        let names: Vec<String> = (0..clients).map(|i| format!("c{i}")).collect();
        Self::with_plan(Plan::churn(nodes, &names, pace), run_for)
    }

    /// The same with a plan of the test's own.
    pub fn with_plan(plan: Plan, run_for: Duration) -> Self {
        let ledger = Ledger::default();
        let stop_at = Instant::now() + run_for;
        let names = plan.names.to_vec();
        // Bounded: every client drains its receipts and leaves by then.
        let limit = run_for + plan.drain + Duration::from_secs(30);
        let traffic = spawn_clients(&names, &plan, &ledger, stop_at, 1000, limit);
        Self { ledger, traffic }
    }

    /// The ledger the clients write to, for traffic of the test's own.
    pub fn ledger(&self) -> Ledger {
        self.ledger.clone()
    }

    /// Waits until every client has left, and returns the counts.
    pub async fn finish(self) -> Report {
        self.traffic.await.expect("the traffic clients ran");
        self.ledger.report()
    }
}
