//! A rolling restart under traffic (acks mode, v2): three nodes as child
//! processes, 60 acks-mode clients sending to random others; every node is
//! SIGTERMed and restarted in turn. Each drain closes its sessions with
//! 1001; their clients resume them on the other nodes, which take what was
//! kept for them from the draining node. The ledger: every message acked
//! `local` or `remote` arrives exactly once; none is answered `offline`;
//! and every accepted send gets exactly `ack.sessions` receipts, also when
//! its sender's session moved before the recipient confirmed (the
//! receipts follow a resumed sender).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::traffic::Rng;
use crate::support::*;
use serde_json::json;
use switchboard::protocol::{AckStatus, ReceiptStatus, ServerFrame};
use switchboard_client::{Client, ConnectOptions, Event, Identity};
use uuid::Uuid;

const CLIENTS: usize = 60;
/// Between one client's sends: 60 clients make about 200 messages a second.
const PACE: Duration = Duration::from_millis(300);
/// How long clients keep reading after the last send.
const DRAIN: Duration = Duration::from_secs(4);

#[derive(Default, Debug)]
struct Book {
    /// msg_id -> (recipient, branch), as acked.
    acked: HashMap<Uuid, (String, AckStatus)>,
    /// msg_id -> how many times its recipient read it.
    received: HashMap<Uuid, u32>,
    /// msg_id -> the ack's `sessions`.
    sessions_of: HashMap<Uuid, u32>,
    /// msg_id -> receipts its sender got.
    receipts: HashMap<Uuid, u32>,
    /// Frames whose `seq` was not above the last one read (written twice).
    seq_repeats: u64,
    delivered_receipts: u64,
    offline_receipts: u64,
    errors: u64,
    /// Sends whose session ended before their ack (their fate unknown).
    unacked: u64,
    resumed: u64,
    resume_refused: u64,
    sessions: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_and_repeats_nothing_for_acks_mode_clients() {
    let redis = Redis::start();
    let nats = Nats::start();
    let (redis_url, nats_url) = (redis.url(), nats.url());
    let flags = [
        "--resume-secret",
        "rolling",
        "--rate-limit",
        "0",
        "--node-ttl-ms",
        "1000",
    ];
    let ids = ["node-1", "node-2", "node-3"];
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let start = |i: usize| {
        new_node()
            .id(ids[i])
            .port(ports[i])
            .urls(&redis_url, &nats_url)
            .flags(&flags)
            .spawn()
    };
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(start(i).await);
    }
    let urls: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(nodes.iter().map(NodeProcess::ws_url).collect()));
    let names: Arc<Vec<String>> = Arc::new((0..CLIENTS).map(|i| format!("r{i}")).collect());
    let book = Arc::new(Mutex::new(Book::default()));
    let ready = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let stop_at = Arc::new(Mutex::new(None::<Instant>));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(client(
                names[i].clone(),
                names.clone(),
                urls.clone(),
                book.clone(),
                ready.clone(),
                stop_at.clone(),
                i as u64 + 1,
            ))
        })
        .collect();
    ready.wait().await;
    let begun = Instant::now();

    for i in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let url = nodes[i].ws_url();
        urls.lock().unwrap().retain(|u| *u != url);
        eprintln!("rolling: SIGTERM {} at {:?}", ids[i], begun.elapsed());
        nodes[i].process.terminate();
        let drained = Instant::now();
        let status = tokio::task::block_in_place(|| nodes[i].process.wait_exit(EVENT_TIMEOUT));
        assert!(
            status.is_some_and(|s| s.success()),
            "{} drained and exited: {status:?}",
            ids[i]
        );
        eprintln!("rolling: {} exited after {:?}", ids[i], drained.elapsed());
        nodes[i] = start(i).await;
        urls.lock().unwrap().push(url);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    *stop_at.lock().unwrap() = Some(Instant::now());
    for c in clients {
        tokio::time::timeout(DRAIN + EVENT_TIMEOUT, c)
            .await
            .expect("a client finished")
            .expect("a client ran");
    }

    let book = book.lock().unwrap();
    let routed: Vec<_> = book
        .acked
        .iter()
        .filter(|(_, (_, branch))| *branch != AckStatus::Offline)
        .collect();
    let lost: Vec<_> = routed
        .iter()
        .filter(|(id, _)| !book.received.contains_key(*id))
        .collect();
    let repeated = book.received.values().filter(|n| **n > 1).count();
    let offline_acks = book.acked.len() - routed.len();
    eprintln!(
        "rolling: {} acked ({} offline), {} received, {} lost, {} repeated, {} seq repeats, \
         {} delivered / {} offline receipts, {} errors, {} unacked, {} sessions, {} resumed, {} refused",
        book.acked.len(),
        offline_acks,
        book.received.len(),
        lost.len(),
        repeated,
        book.seq_repeats,
        book.delivered_receipts,
        book.offline_receipts,
        book.errors,
        book.unacked,
        book.sessions,
        book.resumed,
        book.resume_refused
    );
    assert!(routed.len() > 1000, "traffic flowed");
    assert!(book.resumed >= 3, "sessions were resumed across the drains");
    assert_eq!(lost.len(), 0, "lost: {:?}", &lost[..lost.len().min(5)]);
    assert_eq!((repeated, book.seq_repeats), (0, 0), "nothing twice");
    assert_eq!(book.offline_receipts, 0, "nothing answered offline");
    assert_eq!(offline_acks, 0, "every recipient was always reachable");
    assert_eq!(book.resume_refused, 0);
    let short: Vec<_> = book
        .sessions_of
        .iter()
        .filter(|(id, n)| book.receipts.get(*id).copied().unwrap_or(0) != **n)
        .map(|(id, n)| (id, *n, book.receipts.get(id).copied().unwrap_or(0)))
        .collect();
    assert!(
        short.is_empty(),
        "{} of {} sends got other than ack.sessions receipts (msg_id, sessions, receipts): {:?}",
        short.len(),
        book.sessions_of.len(),
        &short[..short.len().min(5)]
    );
    let stray = book
        .receipts
        .keys()
        .filter(|id| !book.acked.contains_key(*id))
        .count();
    assert!(
        stray as u64 <= book.unacked,
        "receipts only for sends that were acked or whose ack a closed session took with it"
    );
}

/// One acks-mode client: sends to random others every [`PACE`], confirms
/// every message it reads, and on a lost connection resumes its session on
/// another node.
async fn client(
    me: String,
    names: Arc<Vec<String>>,
    urls: Arc<Mutex<Vec<String>>>,
    book: Arc<Mutex<Book>>,
    ready: Arc<tokio::sync::Barrier>,
    stop_at: Arc<Mutex<Option<Instant>>>,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let mut resume: Option<String> = None;
    let mut last_seq = 0u64;
    let mut waited = false;
    let mut next_id = 0u64;
    loop {
        let stop = *stop_at.lock().unwrap();
        if stop.is_some_and(|s| s.elapsed() > DRAIN) {
            return;
        }
        let url = {
            let urls = urls.lock().unwrap();
            urls[rng.below(urls.len())].clone()
        };
        let options = ConnectOptions {
            acks: true,
            resume: resume.clone().map(|token| (token, last_seq)),
            ..ConnectOptions::default()
        };
        let mut session =
            match Client::connect_with(&url, Identity::Name(me.clone()), &options).await {
                Ok(session) => session,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
        {
            let mut book = book.lock().unwrap();
            book.sessions += 1;
            match session.welcome().resumed {
                Some(true) => book.resumed += 1,
                Some(false) => book.resume_refused += 1,
                None => {}
            }
        }
        if session.welcome().resumed != Some(true) {
            last_seq = 0;
        }
        resume = session.welcome().resume_token.clone();
        if !waited {
            waited = true;
            ready.wait().await;
        }
        let mut unacked: HashMap<String, String> = HashMap::new();
        let mut tick = tokio::time::interval(PACE);
        loop {
            let stop = *stop_at.lock().unwrap();
            let sending = stop.is_none();
            if stop.is_some_and(|s| s.elapsed() > DRAIN) {
                let _ = session.close().await;
                return;
            }
            tokio::select! {
                _ = tick.tick(), if sending => {
                    let pick = rng.below(names.len() - 1);
                    let to = names.iter().filter(|n| **n != me).nth(pick).expect("another client");
                    next_id += 1;
                    let id = format!("{me}-{next_id}");
                    if session.send(to, &json!(next_id), Some(&id), true).await.is_err() {
                        break;
                    }
                    unacked.insert(id, to.clone());
                }
                event = session.next_event() => match event {
                    Ok(Event::Frame(ServerFrame::Message(m))) => {
                        let seq = m.seq.expect("acks mode numbers every message");
                        let fresh = seq > last_seq;
                        {
                            let mut book = book.lock().unwrap();
                            if fresh {
                                *book.received.entry(m.msg_id).or_default() += 1;
                            } else {
                                book.seq_repeats += 1;
                            }
                        }
                        if !fresh {
                            continue;
                        }
                        last_seq = seq;
                        if session.confirm(seq).await.is_err() {
                            break;
                        }
                    }
                    Ok(Event::Frame(ServerFrame::Ack(ack))) => {
                        let to = ack.id.and_then(|id| unacked.remove(&id)).expect("an ack for a send");
                        let mut book = book.lock().unwrap();
                        book.acked.insert(ack.msg_id, (to, ack.status));
                        book.sessions_of.insert(ack.msg_id, ack.sessions.unwrap_or(0));
                    }
                    Ok(Event::Frame(ServerFrame::Receipt { status, msg_id, .. })) => {
                        let mut book = book.lock().unwrap();
                        *book.receipts.entry(msg_id).or_default() += 1;
                        match status {
                            ReceiptStatus::Delivered => book.delivered_receipts += 1,
                            ReceiptStatus::Offline => book.offline_receipts += 1,
                        }
                    }
                    Ok(Event::Frame(ServerFrame::Error { id, .. })) => {
                        if let Some(id) = id {
                            unacked.remove(&id);
                        }
                        book.lock().unwrap().errors += 1;
                    }
                    Ok(Event::Frame(_)) => {}
                    Ok(Event::Closed { .. }) | Err(_) => break,
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        book.lock().unwrap().unacked += unacked.len() as u64;
    }
}
