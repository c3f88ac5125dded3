//! Nodes on scaled-out backing services, end to end: a Redis Cluster that
//! loses a master, memcached that loses records, and a NATS cluster that
//! loses the server a node is connected to.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::servers::{Memcached, NatsCluster, RedisCluster};
use crate::support::traffic::Churn;
use crate::support::*;
use serde_json::json;
use switchboard::protocol::{
    AckFrame, AckStatus, ErrorCode, MessageFrame, ReceiptStatus, ServerFrame,
};
use switchboard::runtime::RunningNode;
use switchboard_client::Client;
use uuid::Uuid;

async fn node_on(id: &str, presence: &[&str], nats: &Nats, extra: &[&str]) -> RunningNode {
    node_with(id, presence, &nats.url(), extra).await
}

async fn node_with(id: &str, presence: &[&str], nats_urls: &str, extra: &[&str]) -> RunningNode {
    new_node()
        .id(id)
        .flags(presence)
        .flags(&["--nats-url", nats_urls])
        .flags(extra)
        .start()
        .await
}

/// Sends until one is acked with `want` (the store may need a moment),
/// then checks the recipient got that one.
async fn send_until(from: &mut Client, to: &mut Client, want: AckStatus) {
    let deadline = Instant::now() + 3 * EVENT_TIMEOUT;
    for i in 0.. {
        let id = format!("probe-{i}");
        from.send(
            to.welcome().client_id.as_str(),
            &json!(id),
            Some(&id),
            false,
        )
        .await
        .unwrap();
        let status = loop {
            match next_frame(from).await {
                ServerFrame::Ack(AckFrame { status, .. }) => break Some(status),
                ServerFrame::Error { .. } => break None,
                _ => {}
            }
        };
        if status == Some(want) {
            loop {
                if let ServerFrame::Message(MessageFrame { body, .. }) = next_frame(to).await
                    && body == json!(id)
                {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "never acked {want:?}; last {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Churning clients on two nodes of a Redis Cluster; one master is killed
/// mid-traffic and its replica takes over. Every send is answered, no
/// acked message is lost without its sender hearing `offline`, and traffic
/// flows again after the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_master_failover_loses_nothing_silently() {
    let mut cluster = RedisCluster::start();
    let nats = Nats::start();
    let seeds = cluster.seeds();
    let presence = ["--redis-cluster", seeds.as_str()];
    let flags = ["--rate-limit", "0", "--hop-timeout-ms", "15000"];
    let a = node_on("node-a", &presence, &nats, &flags).await;
    let b = node_on("node-b", &presence, &nats, &flags).await;

    let churn = Churn::start(
        vec![ws_url(&a), ws_url(&b)],
        16,
        Duration::from_millis(5),
        Duration::from_secs(8),
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    // The master holding the heartbeat list: the hardest one to lose.
    let victim = cluster.master_of("sb:nodes");
    let killed = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.kill_and_fail_over(victim);
        cluster
    })
    .await
    .unwrap();
    eprintln!(
        "master {victim} killed; cluster healthy again after {:?}",
        killed.elapsed()
    );
    let report = churn.finish().await;
    eprintln!("redis cluster failover: {report:#?}");
    assert!(
        report.acked_remote > 0 && report.acked_local > 0,
        "{report:?}"
    );
    report.assert_no_silent_loss();

    // After the failover, the cluster serves presence as before.
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    send_until(&mut alice, &mut bob, AckStatus::Remote).await;
    let _ = cluster.seeds();
}

/// Deletes a key behind the nodes' backs, as an eviction would.
fn evict(memcached: &Memcached, key: &str) {
    let mut stream = std::net::TcpStream::connect(memcached.address()).unwrap();
    write!(stream, "md {key}\r\n").unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    assert!(
        reply.starts_with("HD") || reply.starts_with("NF"),
        "{reply}"
    );
}

/// Nodes on three memcached servers route all three branches; a record
/// lost to eviction makes its client look offline (the sender is told)
/// until the next refresh puts it back, and a restarted (emptied) server
/// is refilled the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_nodes_route_and_recover_lost_records() {
    let servers = [Memcached::start(), Memcached::start(), Memcached::start()];
    let list = servers
        .iter()
        .map(Memcached::address)
        .collect::<Vec<_>>()
        .join(",");
    let nats = Nats::start();
    let presence = [
        "--memcached-url",
        list.as_str(),
        "--memcached-ttl-secs",
        "3",
    ];
    let a = node_on("node-a", &presence, &nats, &[]).await;
    let b = node_on("node-b", &presence, &nats, &[]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    let mut carol = connect(&b, "carol").await;

    send_until(&mut alice, &mut bob, AckStatus::Remote).await;
    send_until(&mut carol, &mut bob, AckStatus::Local).await;
    alice
        .send("nobody", &json!("hello?"), None, false)
        .await
        .unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Offline);

    // Evicted on every server (whichever holds it): bob looks offline to
    // a node that has no route to him cached...
    let c = node_on("node-c", &presence, &nats, &["--route-cache", "0"]).await;
    let mut dave = connect(&c, "dave").await;
    send_until(&mut dave, &mut bob, AckStatus::Remote).await;
    for server in &servers {
        evict(server, "sb:presence:bob");
    }
    dave.send("bob", &json!("lost?"), None, false)
        .await
        .unwrap();
    assert_eq!(ack_status(&mut dave).await, AckStatus::Offline);
    // ...until node-b's refresh (every second here) writes him back.
    send_until(&mut dave, &mut bob, AckStatus::Remote).await;

    // A server restarts empty; whatever it held comes back the same way.
    let [first, second, third] = servers;
    let port = first.stop();
    let _first = Memcached::start_on(Some(port));
    send_until(&mut alice, &mut bob, AckStatus::Remote).await;
    send_until(&mut bob, &mut alice, AckStatus::Remote).await;
    send_until(&mut carol, &mut bob, AckStatus::Local).await;
    drop((second, third));
}

/// Two nodes on a cluster of three NATS servers (node-a on the first or
/// second, node-b on the third); the server node-a is connected to is
/// stopped mid-traffic. node-a reconnects to another server and cross-node
/// traffic resumes; every send in the gap is answered (an ack, or
/// `unavailable`), and the churning clients' ledger shows nothing acked
/// was lost silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_stopping_under_a_node_is_a_short_answered_gap() {
    let mut nats = NatsCluster::start();
    let redis = Redis::start();
    let redis_url = redis.url();
    let presence = ["--redis-url", redis_url.as_str()];
    let flags = ["--rate-limit", "0", "--hop-timeout-ms", "15000"];
    let a_urls = format!("{},{}", nats.url(0), nats.url(1));
    let a = node_with("node-a", &presence, &a_urls, &flags).await;
    let b = node_with("node-b", &presence, &nats.url(2), &flags).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    send_until(&mut alice, &mut bob, AckStatus::Remote).await;
    let a_server = nats
        .serving("switchboard node-a")
        .expect("node-a is connected");
    assert_ne!(nats.serving("switchboard node-b"), Some(a_server));

    // Background churn, for the no-silent-loss ledger.
    let churn = Churn::start(
        vec![ws_url(&a), ws_url(&b)],
        12,
        Duration::from_millis(10),
        Duration::from_secs(6),
    );

    // bob notes when each probe arrives.
    let arrivals = Arc::new(Mutex::new(Vec::<(u64, Instant)>::new()));
    let reader = {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Ok(Some(frame)) = bob.next_frame().await {
                if let ServerFrame::Message(MessageFrame { body, .. }) = frame
                    && let Some(n) = body.as_u64()
                {
                    arrivals.lock().unwrap().push((n, Instant::now()));
                }
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped_at = Instant::now();
    nats.stop(a_server);
    // alice probes every 10 ms with receipts on. A probe published just
    // before node-a noticed the stop is acked `remote` and lost with the
    // server; its receipt must then say `offline`.
    let (mut unavailable, mut offline, mut lost) = (0, 0, 0);
    let mut remote: Vec<(u64, Uuid)> = Vec::new();
    let mut receipts: HashMap<Uuid, ReceiptStatus> = HashMap::new();
    let mut resumed = None;
    for n in 0..600u64 {
        alice.send("bob", &json!(n), Some("p"), true).await.unwrap();
        let answer = loop {
            match next_frame(&mut alice).await {
                ServerFrame::Ack(AckFrame { status, msg_id, .. }) => break Ok((status, msg_id)),
                ServerFrame::Error { code, .. } => break Err(code),
                ServerFrame::Receipt { msg_id, status, .. } => {
                    receipts.insert(msg_id, status);
                }
                _ => {}
            }
        };
        match answer {
            Ok((AckStatus::Remote, msg_id)) => remote.push((n, msg_id)),
            Ok((AckStatus::Offline, _)) => offline += 1,
            Ok((other, _)) => panic!("bob is not on node-a: {other:?}"),
            Err(ErrorCode::Unavailable) => unavailable += 1,
            Err(code) => panic!("probe {n}: {code:?}"),
        }
        if resumed.is_none() {
            resumed = arrivals.lock().unwrap().first().map(|(_, at)| *at);
        }
        if resumed.is_some() && remote.len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resumed = resumed.expect("cross-node traffic resumed");
    // Every probe acked `remote` ends with a receipt: `delivered` for
    // those bob got, `offline` for any lost (at the latest after the
    // 15 s hop timeout).
    let deadline = Instant::now() + Duration::from_secs(15) + EVENT_TIMEOUT;
    while remote.iter().any(|(_, id)| !receipts.contains_key(id)) {
        assert!(
            Instant::now() < deadline,
            "a probe acked remote never got its receipt"
        );
        if let Ok(Some(ServerFrame::Receipt { msg_id, status, .. })) =
            tokio::time::timeout(Duration::from_millis(500), alice.next_frame())
                .await
                .unwrap_or(Ok(None))
        {
            receipts.insert(msg_id, status);
        }
    }
    let arrived: HashSet<u64> = arrivals.lock().unwrap().iter().map(|(n, _)| *n).collect();
    for (n, id) in &remote {
        match receipts[id] {
            ReceiptStatus::Delivered => assert!(arrived.contains(n), "probe {n}: false delivery"),
            ReceiptStatus::Offline => lost += 1,
        }
    }
    eprintln!(
        "NATS failover: probes after the stop: {unavailable} unavailable, {offline} offline, \
         {lost} acked remote then answered offline; first delivery {:?} after the stop",
        resumed - stopped_at
    );
    assert_ne!(nats.serving("switchboard node-a"), Some(a_server));

    let report = churn.finish().await;
    eprintln!("NATS failover churn: {report:#?}");
    assert!(report.acked_remote > 0, "{report:?}");
    report.assert_no_silent_loss();
    reader.abort();
}
