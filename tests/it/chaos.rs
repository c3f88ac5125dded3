//! The chaos suite: three nodes as child processes, chat traffic with
//! churn, and, mid-traffic, a node SIGKILLed and restarted, Redis
//! restarted empty, NATS restarted, and a node killed and restarted at
//! once. Meanwhile an announcer sends to a group of every client. Every
//! message must end up received or answered `offline` (per session, for the
//! group's), unless its sender's own session was cut off first. Bounded:
//! about a minute. node-1 and node-3 run with the bus linger on
//! (`--bus-linger-ms 2`), node-2 without: what a lingering message meets
//! (a crash, the outages) is in the ledger too.
//!
//! Run alone with `cargo test --test chaos -- --nocapture` to see the
//! counts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::traffic::{Churn, Ledger, Plan};
use crate::support::*;
use redis::AsyncCommands;
use serde_json::json;
use switchboard::protocol::{AckFrame, AckStatus, ErrorCode, ReceiptStatus, ServerFrame};
use switchboard_client::{Client, Event, Identity, To};
use uuid::Uuid;

const FLAGS: [&str; 10] = [
    "--api-key",
    "chaos",
    "--node-ttl-ms",
    "1000",
    "--rate-limit",
    "0",
    "--hop-timeout-ms",
    "8000",
    "--write-timeout-ms",
    "3000",
];

/// The bus linger of node `id`: on for node-1 and node-3.
fn linger(id: &str) -> &'static [&'static str] {
    match id {
        "node-2" => &[],
        _ => &["--bus-linger-ms", "2"],
    }
}

/// Sends to a client on the node about to be killed and measures how long
/// after the kill the first `offline` answer (receipt or ack) comes, and
/// when acks themselves turn `offline`.
async fn probe_kill(
    prober_url: String,
    killed: tokio::sync::oneshot::Receiver<Instant>,
) -> (Duration, Duration) {
    let mut prober = Client::connect(&prober_url, Identity::Name("prober".into()))
        .await
        .unwrap();
    let killed_at = killed.await.unwrap();
    let mut first_offline = None;
    let mut i = 0;
    loop {
        i += 1;
        prober
            .send("victim", &json!(i), Some(&i.to_string()), false)
            .await
            .unwrap();
        let status = loop {
            match next_frame(&mut prober).await {
                ServerFrame::Ack(AckFrame { status, .. }) => break status,
                ServerFrame::Receipt {
                    status: ReceiptStatus::Offline,
                    ..
                } => {
                    first_offline.get_or_insert(killed_at.elapsed());
                }
                other => panic!("prober got {other:?}"),
            }
        };
        if status == AckStatus::Offline {
            let acks_offline = killed_at.elapsed();
            return (first_offline.unwrap_or(acks_offline), acks_offline);
        }
        assert!(killed_at.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Makes `members` the group `all`, through the API of the node at `port`.
/// Answers whether every member was written (Redis may be down).
async fn make_group(port: u16, members: &[String]) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut all = true;
    for member in members {
        let path = format!("/api/v1/groups/all/members/{member}");
        let auth = [("Authorization", "Bearer chaos")];
        all &= http_at(addr, "PUT", &path, &auth, None).await.0 == 204;
    }
    all
}

/// Sends to the group of every traffic client from node-1 (which stays up)
/// until `stop_at`, then keeps reading for longer than the hop timeout, so
/// that every outcome of its sends can reach it. Writes into `ledger`.
async fn announce(url: String, port: u16, members: Vec<String>, ledger: Ledger, stop_at: Instant) {
    make_group(port, &members).await;
    let stay_until = stop_at + Duration::from_secs(12);
    let mut n = 0u64;
    'sessions: while Instant::now() < stay_until {
        let Ok(mut client) = Client::connect(&url, Identity::Name("announcer".into())).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut unacked = 0u64;
        let mut acked: Vec<Uuid> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(25));
        loop {
            let sending = Instant::now() < stop_at;
            let left = stay_until.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = tick.tick(), if sending => {
                    n += 1;
                    let to = To::Group("all");
                    let id = n.to_string();
                    if client.send_to(to, &json!(n), Some(&id), false, false).await.is_err() {
                        break;
                    }
                    unacked += 1;
                }
                event = client.next_event() => match event {
                    Ok(Event::Frame(ServerFrame::Ack(ack))) => {
                        unacked -= 1;
                        let sessions = ack.local.unwrap_or(0) + ack.remote.unwrap_or(0);
                        ledger.group_acked(ack.msg_id, "announcer", "all", sessions);
                        acked.push(ack.msg_id);
                    }
                    Ok(Event::Frame(ServerFrame::Error { code, id: Some(_), .. })) => {
                        unacked -= 1;
                        ledger.group_refused(Some(code));
                        // Redis came back empty: the application adds its
                        // members again.
                        if code == ErrorCode::NotMember {
                            make_group(port, &members).await;
                        }
                    }
                    Ok(Event::Frame(ServerFrame::Receipt { msg_id, status, to, device, .. })) => {
                        let (to, device) = (to.unwrap_or_default(), device.unwrap_or_default());
                        ledger.group_receipt(msg_id, &to, &device, status);
                    }
                    Ok(Event::Frame(_)) => {}
                    Ok(Event::Closed { .. }) | Err(_) => break,
                },
                _ = tokio::time::sleep(left), if !sending => {
                    let _ = client.close().await;
                    break 'sessions;
                }
            }
        }
        // Cut off: what it sent can no longer be answered to it.
        ledger.group_sender_cut_off(acked);
        for _ in 0..unacked {
            ledger.group_refused(None);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_silently() {
    let begun = Instant::now();
    let redis = Redis::start();
    let nats = Nats::start();
    let (redis_url, nats_url) = (redis.url(), nats.url());
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let ids = ["node-1", "node-2", "node-3"];
    let mut nodes = Vec::new();
    for (id, port) in ids.iter().zip(&ports) {
        nodes.push(
            new_node()
                .id(id)
                .port(*port)
                .urls(&redis_url, &nats_url)
                .flags(&FLAGS)
                .flags(linger(id))
                .spawn()
                .await,
        );
    }
    let urls: Vec<String> = nodes.iter().map(NodeProcess::ws_url).collect();

    // Every client on two devices, each coming and going on its own.
    let names: Vec<String> = (0..14).map(|i| format!("user{i}")).collect();
    let plan = Plan {
        nodes: Arc::new(Mutex::new(urls.clone())),
        names: Arc::new(names.clone()),
        sends_per_session: (5, 40),
        pace: Duration::from_millis(10),
        drain: Duration::from_secs(15),
        devices: 2,
    };
    let churn = Churn::with_plan(plan, Duration::from_secs(30));
    let mut members = names.clone();
    members.push("announcer".into());
    let announcer = tokio::spawn(announce(
        urls[0].clone(),
        ports[0],
        members,
        churn.ledger(),
        Instant::now() + Duration::from_secs(30),
    ));

    // The victim sits on node-3; the prober on node-1, which stays up.
    let _victim = Client::connect(&urls[2], Identity::Name("victim".into()))
        .await
        .unwrap();
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel();
    let probe = tokio::spawn(probe_kill(urls[0].clone(), killed_rx));

    let pause = |secs| tokio::time::sleep(Duration::from_secs(secs));
    pause(3).await;
    eprintln!("chaos: SIGKILL node-3");
    nodes[2].kill();
    let _ = killed_tx.send(Instant::now());
    pause(3).await;
    eprintln!("chaos: node-3 back");
    nodes[2] = new_node()
        .id(ids[2])
        .port(ports[2])
        .urls(&redis_url, &nats_url)
        .flags(&FLAGS)
        .flags(linger(ids[2]))
        .spawn()
        .await;
    pause(3).await;
    eprintln!("chaos: Redis restarts, empty");
    let redis_port = redis.stop();
    pause(1).await;
    let redis = Redis::start_on(Some(redis_port));
    pause(4).await;
    eprintln!("chaos: NATS restarts");
    let nats_port = nats.stop();
    pause(1).await;
    let _nats = Nats::start_on(Some(nats_port));
    pause(4).await;
    eprintln!("chaos: node-2 killed and restarted at once");
    nodes[1].kill();
    nodes[1] = new_node()
        .id(ids[1])
        .port(ports[1])
        .urls(&redis_url, &nats_url)
        .flags(&FLAGS)
        .flags(linger(ids[1]))
        .spawn()
        .await;

    announcer.await.unwrap();
    let report = churn.finish().await;
    let (first_offline, acks_offline) = probe.await.unwrap();
    eprintln!("chaos report: {report:#?}");
    eprintln!(
        "chaos: SIGKILL -> first offline answer {first_offline:?}; -> acks offline {acks_offline:?}"
    );

    assert!(report.sent > 1000, "traffic flowed: {report:?}");
    assert!(report.acked_remote > 0 && report.acked_local > 0);
    assert!(report.acked_fanout > 100, "group sends flowed: {report:?}");
    report.assert_no_silent_loss();

    // Everyone has left: no record outlives its session, ghosts included.
    drop(_victim);
    let conn = redis.connection().await;
    eventually("presence is empty", || {
        let mut conn = conn.clone();
        async move {
            let keys: Vec<String> = conn.keys("sb:presence:*").await.unwrap();
            keys.is_empty()
        }
    })
    .await;
    eprintln!("chaos: done in {:?}", begun.elapsed());
}
