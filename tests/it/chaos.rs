//! The chaos suite: three nodes as child processes, chat traffic with
//! churn, and, mid-traffic, a node SIGKILLed and restarted, Redis
//! restarted empty, NATS restarted, and a node killed and restarted at
//! once. Every message must end up received or answered `offline`, unless
//! its sender's own session was cut off first. Bounded: about a minute.
//!
//! Run alone with `cargo test --test chaos -- --nocapture` to see the
//! counts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::traffic::{Churn, Plan};
use crate::support::*;
use redis::AsyncCommands;
use serde_json::json;
use switchboard::protocol::{AckFrame, AckStatus, ReceiptStatus, ServerFrame};
use switchboard_client::{Client, Identity};

const FLAGS: [&str; 8] = [
    "--node-ttl-ms",
    "1000",
    "--rate-limit",
    "0",
    "--hop-timeout-ms",
    "8000",
    "--write-timeout-ms",
    "3000",
];

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
        .spawn()
        .await;

    let report = churn.finish().await;
    let (first_offline, acks_offline) = probe.await.unwrap();
    eprintln!("chaos report: {report:#?}");
    eprintln!(
        "chaos: SIGKILL -> first offline answer {first_offline:?}; -> acks offline {acks_offline:?}"
    );

    assert!(report.sent > 1000, "traffic flowed: {report:?}");
    assert!(report.acked_remote > 0 && report.acked_local > 0);
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
