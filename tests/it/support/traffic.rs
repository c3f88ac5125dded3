//! Chat traffic for failure tests: clients that connect to random nodes,
//! send to random peers with receipts on, come and go, and write every
//! outcome into a shared [`Ledger`] that checks no message was lost
//! silently.
//!
//! Every send asks for a receipt, so every message acked `local` or
//! `remote` must end with a receipt (`delivered` or `offline`) unless its
//! sender's session was cut off first. A voluntary disconnect waits for
//! the outstanding receipts before closing, so only sessions cut off by a
//! crash or a takeover lose the means to hear an outcome.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::protocol::{AckStatus, ErrorCode, ReceiptStatus, ServerFrame};
use switchboard_client::{Client, ClientError, Event, Identity};
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

#[derive(Default)]
struct Book {
    sent: u64,
    /// msg_id -> (sender, recipient, branch)
    acked: HashMap<Uuid, (String, String, AckStatus)>,
    errors: HashMap<ErrorCode, u64>,
    /// Sends whose session was cut off before their ack.
    unacked: u64,
    /// Sends still unacked when this client closed its session itself:
    /// the protocol owes every read send an ack, so this must stay 0.
    unacked_at_close: u64,
    receipts: HashMap<Uuid, ReceiptStatus>,
    /// msg_id -> recipient
    received: HashMap<Uuid, String>,
    duplicates: u64,
    /// Acked local/remote, but the sender's session was cut off before an
    /// outcome could reach it.
    sender_cut_off: HashSet<Uuid>,
    sessions: u64,
    cut_off_sessions: u64,
}

/// Everything the clients saw, shared between them.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Book>>);

/// The counts a failure test reports and checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub sessions: u64,
    pub sessions_cut_off: u64,
    pub sent: u64,
    pub acked_local: u64,
    pub acked_remote: u64,
    pub acked_offline: u64,
    pub errors: u64,
    pub unavailable: u64,
    pub unacked: u64,
    pub unacked_at_close: u64,
    pub received: u64,
    pub duplicates: u64,
    pub delivered_receipts: u64,
    pub offline_receipts: u64,
    /// Acked local/remote, not received, sender cut off before an outcome.
    pub sender_cut_off: u64,
    /// `delivered` receipts for messages their recipient never read.
    pub false_deliveries: u64,
    /// Acked local/remote, never received, no offline receipt, and the
    /// sender was there to be told: the losses that must not happen.
    pub unaccounted: u64,
    /// The first few of those, for the failure message.
    pub unaccounted_examples: Vec<String>,
}

impl Report {
    /// The promise every failure test checks: each message acked `local`
    /// or `remote` was received or answered `offline`, no `delivered`
    /// receipt lied, nothing arrived twice, and every send a client read
    /// was acked before it closed.
    pub fn assert_no_silent_loss(&self) {
        assert_eq!(self.unaccounted, 0, "{self:#?}");
        assert_eq!(self.false_deliveries, 0, "{self:#?}");
        assert_eq!(self.duplicates, 0, "{self:#?}");
        assert_eq!(self.unacked_at_close, 0, "{self:#?}");
    }
}

impl Ledger {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.0.lock().unwrap()
    }

    pub fn report(&self) -> Report {
        let book = self.book();
        let count = |s: AckStatus| book.acked.values().filter(|(_, _, b)| *b == s).count() as u64;
        let mut r = Report {
            sessions: book.sessions,
            sessions_cut_off: book.cut_off_sessions,
            sent: book.sent,
            acked_local: count(AckStatus::Local),
            acked_remote: count(AckStatus::Remote),
            acked_offline: count(AckStatus::Offline),
            errors: book.errors.values().sum(),
            unavailable: book
                .errors
                .get(&ErrorCode::Unavailable)
                .copied()
                .unwrap_or(0),
            unacked: book.unacked,
            unacked_at_close: book.unacked_at_close,
            received: book.received.len() as u64,
            duplicates: book.duplicates,
            ..Report::default()
        };
        for status in book.receipts.values() {
            match status {
                ReceiptStatus::Delivered => r.delivered_receipts += 1,
                ReceiptStatus::Offline => r.offline_receipts += 1,
            }
        }
        for (msg_id, (_, to, branch)) in &book.acked {
            if *branch == AckStatus::Offline {
                continue;
            }
            let received = book.received.get(msg_id) == Some(to);
            let receipt = book.receipts.get(msg_id);
            if receipt == Some(&ReceiptStatus::Delivered) && !received {
                r.false_deliveries += 1;
            }
            if received || receipt == Some(&ReceiptStatus::Offline) {
                continue;
            }
            if book.sender_cut_off.contains(msg_id) {
                r.sender_cut_off += 1;
            } else {
                r.unaccounted += 1;
                if r.unaccounted_examples.len() < 10 {
                    let (from, _, _) = &book.acked[msg_id];
                    r.unaccounted_examples.push(format!(
                        "{msg_id} {from} -> {to} acked {branch:?}, receipt {receipt:?}, received by {:?}",
                        book.received.get(msg_id)
                    ));
                }
            }
        }
        r
    }
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
        }
    }
}

enum SessionEnd {
    /// Closed by this client after its receipts came in.
    Voluntary,
    /// Closed by the node, or the connection dropped.
    CutOff,
}

/// Runs one client until `stop_at`, then closes voluntarily.
pub async fn run_client(name: String, plan: Plan, ledger: Ledger, stop_at: Instant, seed: u64) {
    let mut rng = Rng::new(seed);
    while Instant::now() < stop_at {
        let url = {
            let nodes = plan.nodes.lock().unwrap();
            nodes[rng.below(nodes.len())].clone()
        };
        let client = match Client::connect(&url, Identity::Name(name.clone())).await {
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
        match session(&name, client, &plan, &ledger, &mut rng, sends, stop_at).await {
            SessionEnd::Voluntary => {}
            SessionEnd::CutOff => {
                ledger.book().cut_off_sessions += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn session(
    name: &str,
    mut client: Client,
    plan: &Plan,
    ledger: &Ledger,
    rng: &mut Rng,
    sends: usize,
    stop_at: Instant,
) -> SessionEnd {
    // send id -> recipient, until acked; msg_id of acked local/remote
    // sends, until their receipt.
    let mut unacked: HashMap<String, String> = HashMap::new();
    let mut outstanding: HashSet<Uuid> = HashSet::new();
    let mut next_id = 0usize;
    let mut tick = tokio::time::interval(plan.pace);
    let mut draining_since: Option<Instant> = None;

    loop {
        let sending = next_id < sends && draining_since.is_none() && Instant::now() < stop_at;
        if !sending && draining_since.is_none() {
            draining_since = Some(Instant::now());
        }
        if let Some(since) = draining_since
            && ((unacked.is_empty() && outstanding.is_empty()) || since.elapsed() > plan.drain)
        {
            return close(client, name, ledger, unacked, outstanding).await;
        }
        tokio::select! {
            _ = tick.tick(), if sending => {
                let to = &plan.names[rng.below(plan.names.len())];
                let id = format!("{name}-{next_id}");
                next_id += 1;
                if client.send(to, &serde_json::json!({"from": name, "n": next_id}), Some(&id), true).await.is_err() {
                    return cut_off(ledger, unacked, outstanding);
                }
                ledger.book().sent += 1;
                unacked.insert(id, to.clone());
            }
            event = client.next_event() => match event {
                Ok(Event::Frame(frame)) => record(name, frame, ledger, &mut unacked, &mut outstanding),
                Ok(Event::Closed { .. }) | Err(_) => return cut_off(ledger, unacked, outstanding),
            },
        }
    }
}

fn record(
    name: &str,
    frame: ServerFrame,
    ledger: &Ledger,
    unacked: &mut HashMap<String, String>,
    outstanding: &mut HashSet<Uuid>,
) {
    let mut book = ledger.book();
    match frame {
        ServerFrame::Ack { id, msg_id, status } => {
            let to = id
                .and_then(|id| unacked.remove(&id))
                .unwrap_or_else(|| panic!("{name}: ack for no send"));
            if status != AckStatus::Offline {
                outstanding.insert(msg_id);
            }
            book.acked.insert(msg_id, (name.to_owned(), to, status));
        }
        ServerFrame::Error { id, code, .. } => {
            if let Some(id) = id {
                unacked.remove(&id);
            }
            *book.errors.entry(code).or_default() += 1;
        }
        ServerFrame::Receipt { msg_id, status, .. } => {
            outstanding.remove(&msg_id);
            let previous = book.receipts.insert(msg_id, status);
            assert!(previous.is_none(), "{name}: two receipts for {msg_id}");
        }
        ServerFrame::Message { msg_id, to, .. } => {
            assert_eq!(to, name);
            if book.received.insert(msg_id, to).is_some() {
                book.duplicates += 1;
            }
        }
        ServerFrame::Pong { .. } | ServerFrame::Welcome { .. } => {}
    }
}

fn cut_off(
    ledger: &Ledger,
    unacked: HashMap<String, String>,
    outstanding: HashSet<Uuid>,
) -> SessionEnd {
    let mut book = ledger.book();
    book.unacked += unacked.len() as u64;
    book.sender_cut_off.extend(outstanding);
    SessionEnd::CutOff
}

/// Closes from this side, still reading (and recording) whatever the node
/// writes until its close frame.
async fn close(
    mut client: Client,
    name: &str,
    ledger: &Ledger,
    mut unacked: HashMap<String, String>,
    mut outstanding: HashSet<Uuid>,
) -> SessionEnd {
    if client.send_message(WsMessage::Close(None)).await.is_err() {
        return cut_off(ledger, unacked, outstanding);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, client.next_event()).await {
            Ok(Ok(Event::Frame(frame))) => {
                record(name, frame, ledger, &mut unacked, &mut outstanding)
            }
            _ => break,
        }
    }
    // Outcomes that had not arrived by the close stay unresolved: unless
    // their recipient got them, they count as unaccounted.
    ledger.book().unacked_at_close += unacked.len() as u64;
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

/// Runs one traffic client per name until `stop_at` and waits for all of
/// them to finish (bounded by `limit`).
pub async fn run_clients(
    names: &[String],
    plan: &Plan,
    ledger: &Ledger,
    stop_at: Instant,
    seed: u64,
    limit: Duration,
) {
    let clients: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            tokio::spawn(run_client(
                name.clone(),
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

    /// Waits until every client has left, and returns the counts.
    pub async fn finish(self) -> Report {
        self.traffic.await.expect("the traffic clients ran");
        self.ledger.report()
    }
}
