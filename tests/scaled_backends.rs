//! Nodes on scaled-out backing services, end to end: a Redis Cluster that
//! loses a master, and memcached that loses records.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::backends::{Memcached, RedisCluster};
use support::traffic::{Ledger, Plan, run_clients};
use support::*;
use switchboard::client::Client;
use switchboard::node::{Node, RunningNode};
use switchboard::protocol::{AckStatus, ServerFrame};

async fn node_on(id: &str, presence: &[&str], nats: &Nats, extra: &[&str]) -> RunningNode {
    let nats_url = nats.url();
    let mut flags = vec!["--node-id", id, "--nats-url", &nats_url];
    flags.extend_from_slice(presence);
    flags.extend_from_slice(extra);
    init_logs();
    Node::start(config(&flags)).await.expect("node starts")
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
                ServerFrame::Ack { status, .. } => break Some(status),
                ServerFrame::Error { .. } => break None,
                _ => {}
            }
        };
        if status == Some(want) {
            loop {
                if let ServerFrame::Message { body, .. } = next_frame(to).await
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

    let names: Vec<String> = (0..16).map(|i| format!("c{i}")).collect();
    let plan = Plan {
        nodes: Arc::new(Mutex::new(vec![ws_url(&a), ws_url(&b)])),
        names: Arc::new(names.clone()),
        sends_per_session: (1, 12),
        pace: Duration::from_millis(5),
        drain: Duration::from_secs(20),
    };
    let ledger = Ledger::default();
    let stop_at = Instant::now() + Duration::from_secs(8);
    let traffic = {
        let (names, plan, ledger) = (names.clone(), plan.clone(), ledger.clone());
        tokio::spawn(async move {
            run_clients(&names, &plan, &ledger, stop_at, 7, Duration::from_secs(60)).await
        })
    };

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
    traffic.await.unwrap();

    let report = ledger.report();
    eprintln!("redis cluster failover: {report:#?}");
    assert!(
        report.acked_remote > 0 && report.acked_local > 0,
        "{report:?}"
    );
    assert_eq!(report.unaccounted, 0, "{report:#?}");
    assert_eq!(report.false_deliveries, 0);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.unacked_at_close, 0);

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
