//! Failures without loss: crashed nodes, Redis and NATS outages, churn.
//! Nodes that must crash run as child processes and are SIGKILLed.

use std::time::{Duration, Instant};

use crate::support::traffic::Churn;
use crate::support::*;
use redis::AsyncCommands;
use serde_json::json;
use switchboard::protocol::{
    AckFrame, AckStatus, Disconnect, ErrorCode, MessageFrame, ReceiptStatus, ServerFrame,
};
use switchboard_client::{Client, ClientError, Event, Identity};
use uuid::Uuid;

/// A short node TTL keeps these tests quick; the bounds scale with it.
const TTL: &str = "1000";

/// Sends one message and returns its ack status, collecting any receipts
/// that arrive meanwhile.
async fn send_and_ack(
    client: &mut Client,
    to: &str,
    id: &str,
    receipts: &mut Vec<ReceiptStatus>,
) -> AckStatus {
    client.send(to, &json!(id), Some(id), false).await.unwrap();
    loop {
        match next_frame(client).await {
            ServerFrame::Ack(AckFrame {
                id: got, status, ..
            }) => {
                assert_eq!(got.as_deref(), Some(id));
                return status;
            }
            ServerFrame::Receipt { status, .. } => receipts.push(status),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_killed_nodes_clients_are_answered_offline_within_the_ttl() {
    let redis = Redis::start();
    let nats = Nats::start();
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&["--node-ttl-ms", TTL])
        .start()
        .await;
    let mut b = new_node()
        .id("node-b")
        .on(&redis, &nats)
        .flags(&["--node-ttl-ms", TTL])
        .spawn()
        .await;
    let mut alice = connect(&a, "alice").await;
    let _bob = named(&b.ws_url(), "bob").await;
    let mut receipts = Vec::new();
    assert_eq!(
        send_and_ack(&mut alice, "bob", "warm-up", &mut receipts).await,
        AckStatus::Remote
    );

    let killed = Instant::now();
    b.kill();
    let mut first_offline_receipt = None;
    let mut remote_after_kill = 0;
    let mut i = 0;
    let ack_offline_after = loop {
        i += 1;
        match send_and_ack(&mut alice, "bob", &format!("p{i}"), &mut receipts).await {
            AckStatus::Offline => break killed.elapsed(),
            AckStatus::Remote => remote_after_kill += 1,
            other => panic!("bob is not on node-a: {other:?}"),
        }
        if first_offline_receipt.is_none() && receipts.contains(&ReceiptStatus::Offline) {
            first_offline_receipt = Some(killed.elapsed());
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "still routed remote"
        );
        // Pacing between probes; every wait above is on an event.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Every probe that was still routed `remote` is answered offline.
    while receipts
        .iter()
        .filter(|s| **s == ReceiptStatus::Offline)
        .count()
        < remote_after_kill
    {
        match next_frame(&mut alice).await {
            ServerFrame::Receipt { status, .. } => receipts.push(status),
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!(
        "SIGKILL -> first offline receipt: {:?}; -> acks say offline: {ack_offline_after:?} \
         ({remote_after_kill} probes routed remote in between)",
        first_offline_receipt
    );
    // The protocol's bound: the default TTL of 3 s is believed within 5 s;
    // with a 1 s TTL this is generous.
    assert!(ack_offline_after < Duration::from_secs(5));

    // The dead node's record is deleted on the way.
    eventually("bob's record is gone", || async {
        let mut redis = redis.connection().await;
        !redis.exists::<_, bool>("sb:presence:bob").await.unwrap()
    })
    .await;
}

#[tokio::test]
async fn messages_in_flight_when_the_recipient_node_dies_are_answered_offline() {
    let redis = Redis::start();
    let nats = Nats::start();
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&[
            "--node-ttl-ms",
            TTL,
            "--rate-limit",
            "0",
            "--hop-timeout-ms",
            "120000",
        ])
        .start()
        .await;
    // Timeouts far away: only the death of node-b may answer these.
    let mut b = new_node()
        .id("node-b")
        .on(&redis, &nats)
        .flags(&[
            "--node-ttl-ms",
            TTL,
            "--write-timeout-ms",
            "60000",
            "--hop-timeout-ms",
            "120000",
            // Room for all of them in bob's queue (10 MB).
            "--session-queue-bytes",
            "16777216",
        ])
        .spawn()
        .await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = named(&b.ws_url(), "bob").await; // bob does not read for now

    const N: usize = 200;
    let body = json!("x".repeat(50_000));
    for i in 0..N {
        alice
            .send("bob", &body, Some(&i.to_string()), true)
            .await
            .unwrap();
    }
    let mut outcomes = std::collections::HashMap::new();
    let mut acked = Vec::new();
    while acked.len() < N {
        match next_frame(&mut alice).await {
            ServerFrame::Ack(AckFrame { status, msg_id, .. }) => {
                assert_eq!(status, AckStatus::Remote);
                acked.push(msg_id);
            }
            ServerFrame::Receipt { msg_id, status, .. } => {
                outcomes.insert(msg_id, status);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    b.kill();
    while outcomes.len() < N {
        match next_frame(&mut alice).await {
            ServerFrame::Receipt { msg_id, status, .. } => {
                assert!(
                    outcomes.insert(msg_id, status).is_none(),
                    "one outcome each"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Bob reads what node-b had written to his socket before it died.
    let mut received = std::collections::HashSet::new();
    loop {
        match next_event(&mut bob).await {
            Event::Frame(ServerFrame::Message(MessageFrame { msg_id, .. })) => {
                received.insert(msg_id);
            }
            Event::Frame(other) => panic!("unexpected {other:?}"),
            Event::Closed { .. } => break,
        }
    }
    let offline = outcomes
        .values()
        .filter(|s| **s == ReceiptStatus::Offline)
        .count();
    let delivered: Vec<_> = outcomes
        .iter()
        .filter(|(_, s)| **s == ReceiptStatus::Delivered)
        .map(|(id, _)| *id)
        .collect();
    eprintln!(
        "in flight at SIGKILL: {N} sent, {} delivered, {offline} answered offline, {} read by bob",
        delivered.len(),
        received.len()
    );
    assert!(offline > 0, "some messages were still queued on node-b");
    for id in &delivered {
        assert!(received.contains(id), "delivered but never read: {id}");
    }
    for id in &acked {
        let status = outcomes[id];
        assert!(
            received.contains(id) || status == ReceiptStatus::Offline,
            "{id} neither read nor answered offline"
        );
    }
}

#[tokio::test]
async fn a_restarted_node_does_not_inherit_its_ghosts() {
    let redis = Redis::start();
    let nats = Nats::start();
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&["--node-ttl-ms", TTL])
        .start()
        .await;
    let mut b = new_node()
        .id("node-b")
        .on(&redis, &nats)
        .flags(&["--node-ttl-ms", TTL])
        .spawn()
        .await;
    let bob = named(&b.ws_url(), "bob").await;
    let bob_session = bob.welcome().session_id;
    let port = b.port();
    b.kill();
    drop(bob);
    // Same id, same address, right away: well within the TTL.
    let _b = new_node()
        .id("node-b")
        .port(port)
        .urls(&redis.url(), &nats.url())
        .flags(&["--node-ttl-ms", TTL])
        .spawn()
        .await;

    // On the restarted node itself, bob's old record is a ghost at once.
    let mut carol = named(&format!("ws://127.0.0.1:{port}"), "carol").await;
    let mut receipts = Vec::new();
    assert_eq!(
        send_and_ack(&mut carol, "bob", "c1", &mut receipts).await,
        AckStatus::Offline
    );
    // Node-a stops believing it as soon as it sees the new run.
    let mut alice = connect(&a, "alice").await;
    let mut i = 0;
    loop {
        i += 1;
        let status = send_and_ack(&mut alice, "bob", &format!("a{i}"), &mut receipts).await;
        if status == AckStatus::Offline {
            break;
        }
        assert!(i < 500, "node-a kept routing to the ghost");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let conn = redis.connection().await;
    let left = presence_field(&conn, "bob").await.map(|f| f.session);
    assert_ne!(left, Some(bob_session.to_string()), "the ghost was deleted");
}

#[tokio::test]
async fn a_redis_outage_keeps_sessions_refuses_new_ones_and_restores_records() {
    let redis = Redis::start();
    let nats = Nats::start();
    let flags = ["--node-ttl-ms", TTL];
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&flags)
        .start()
        .await;
    let b = new_node()
        .id("node-b")
        .on(&redis, &nats)
        .flags(&flags)
        .start()
        .await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    let (alice_session, bob_session) = (alice.welcome().session_id, bob.welcome().session_id);
    let port = redis.stop();

    // Sends that need Redis: unavailable, nothing sent.
    alice
        .send("bob", &json!(1), Some("u"), false)
        .await
        .unwrap();
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Error {
            code: ErrorCode::Unavailable,
            ..
        }
    ));
    // New sessions: 503 once the node notices; readiness follows.
    eventually("new sessions are refused", || async {
        matches!(
            Client::connect(&ws_url(&a), Identity::Name("carol".into())).await,
            Err(ClientError::Refused { status: 503, .. })
        )
    })
    .await;
    assert_eq!(http(&a, "GET", "/readyz", &[], None).await.0, 503);
    // Existing sessions stay open.
    for client in [&mut alice, &mut bob] {
        client.ping(Some("still")).await.unwrap();
        assert!(matches!(next_frame(client).await, ServerFrame::Pong { .. }));
    }

    // Redis comes back empty: every live session's record is written back.
    let redis = Redis::start_on(Some(port));
    let conn = redis.connection().await;
    let started = Instant::now();
    eventually("records are restored", || {
        let conn = conn.clone();
        async move {
            let a = presence_field(&conn, "alice").await.map(|f| f.session);
            let b = presence_field(&conn, "bob").await.map(|f| f.session);
            a == Some(alice_session.to_string()) && b == Some(bob_session.to_string())
        }
    })
    .await;
    eprintln!(
        "records restored {:?} after Redis came back",
        started.elapsed()
    );
    let node = presence_field(&conn, "bob").await.unwrap().node;
    assert_eq!(node, "node-b");

    alice
        .send("bob", &json!("back"), Some("r"), true)
        .await
        .unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
    assert!(matches!(
        next_frame(&mut bob).await,
        ServerFrame::Message(MessageFrame { .. })
    ));

    // A newer session wins over a restored older one, wherever it is.
    let bob2 = loop {
        match Client::connect(&ws_url(&a), Identity::Name("bob".into())).await {
            Ok(client) => break client,
            Err(ClientError::Refused { status: 503, .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    loop {
        match next_event(&mut bob).await {
            Event::Closed { code, .. } => {
                assert_eq!(code, Some(Disconnect::Replaced.code()));
                break;
            }
            Event::Frame(_) => {}
        }
    }
    let session = presence_field(&conn, "bob").await.unwrap().session;
    assert_eq!(session, bob2.welcome().session_id.to_string());
}

#[tokio::test]
async fn a_nats_outage_is_answered_and_subscriptions_come_back() {
    let redis = Redis::start();
    let nats = Nats::start();
    let a = new_node().id("node-a").on(&redis, &nats).start().await;
    let b = new_node().id("node-b").on(&redis, &nats).start().await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    let port = nats.stop();

    eventually("readyz turns 503", || async {
        http(&a, "GET", "/readyz", &[], None).await.0 == 503
    })
    .await;
    // A cross-node send is answered, promptly: unavailable.
    let asked = Instant::now();
    alice.send("bob", &json!(1), Some("n"), true).await.unwrap();
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Error {
            code: ErrorCode::Unavailable,
            ..
        }
    ));
    assert!(asked.elapsed() < Duration::from_secs(2));

    let _nats = Nats::start_on(Some(port));
    let back = Instant::now();
    // Until both nodes have resubscribed, a send may bounce (offline
    // receipt) or be refused; it is never dropped without a word.
    let mut i = 0;
    loop {
        i += 1;
        let id = format!("r{i}");
        alice.send("bob", &json!(i), Some(&id), true).await.unwrap();
        let delivered = loop {
            match next_frame(&mut alice).await {
                ServerFrame::Error {
                    code: ErrorCode::Unavailable,
                    ..
                } => break false,
                ServerFrame::Ack(AckFrame {
                    status: AckStatus::Remote,
                    ..
                }) => {}
                ServerFrame::Receipt { status, .. } => break status == ReceiptStatus::Delivered,
                other => panic!("unexpected {other:?}"),
            }
        };
        if delivered {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "traffic did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "cross-node traffic resumed {:?} after NATS came back",
        back.elapsed()
    );
    assert!(matches!(
        next_frame(&mut bob).await,
        ServerFrame::Message(MessageFrame { .. })
    ));
    eventually("ready again", || async {
        http(&a, "GET", "/readyz", &[], None).await.0 == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_one_record_per_live_session_and_loses_nothing_silently() {
    let redis = Redis::start();
    let nats = Nats::start();
    let flags = ["--rate-limit", "0", "--hop-timeout-ms", "15000"];
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&flags)
        .start()
        .await;
    let b = new_node()
        .id("node-b")
        .on(&redis, &nats)
        .flags(&flags)
        .start()
        .await;
    let churn = Churn::start(
        vec![ws_url(&a), ws_url(&b)],
        16,
        Duration::from_millis(5),
        Duration::from_secs(4),
    );
    let report = churn.finish().await;
    eprintln!("churn: {report:#?}");
    assert!(report.sessions > 50, "enough churn: {report:?}");
    assert!(report.acked_local > 0 && report.acked_remote > 0);
    report.assert_no_silent_loss();

    // Everyone left: no record may outlive its session.
    let mut conn = redis.connection().await;
    eventually("no record is left behind", || {
        let mut conn = conn.clone();
        async move {
            let keys: Vec<String> = conn.keys("sb:presence:*").await.unwrap();
            keys.is_empty()
        }
    })
    .await;
    // And with some staying: exactly one record each, naming the live
    // session.
    let mut stayers = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        stayers.push(connect(node, &format!("c{i}")).await);
    }
    let keys: Vec<String> = conn.keys("sb:presence:*").await.unwrap();
    assert_eq!(keys.len(), stayers.len());
    for client in &stayers {
        let key = format!("sb:presence:{}", client.welcome().client_id);
        let fields: Vec<String> = conn.hkeys(&key).await.unwrap();
        assert_eq!(fields, ["default"], "one field: its one device");
        let field = presence_field(&conn, &client.welcome().client_id)
            .await
            .unwrap();
        assert_eq!(field.session, client.welcome().session_id.to_string());
    }
}

/// The records a crashed node leaves are swept without anyone sending to
/// them: by the surviving nodes once it is declared dead, and by the node
/// itself when it comes back under the same id.
#[tokio::test]
async fn ghost_records_are_swept_after_a_crash_and_after_a_restart() {
    let redis = Redis::start();
    let nats = Nats::start();
    let _a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&["--node-ttl-ms", TTL])
        .start()
        .await;
    let conn = redis.connection().await;
    let count = |pattern: &'static str| {
        let mut conn = conn.clone();
        async move { conn.keys::<_, Vec<String>>(pattern).await.unwrap().len() }
    };

    for restart in [false, true] {
        let mut b = new_node()
            .id("node-b")
            .on(&redis, &nats)
            .flags(&["--node-ttl-ms", TTL])
            .spawn()
            .await;
        let mut clients = Vec::new();
        for i in 0..5 {
            clients.push(named(&b.ws_url(), &format!("g{i}")).await);
        }
        assert_eq!(count("sb:presence:g*").await, 5);
        let port = b.port();
        b.kill();
        drop(clients);
        let _restarted = if restart {
            Some(
                new_node()
                    .id("node-b")
                    .port(port)
                    .urls(&redis.url(), &nats.url())
                    .flags(&["--node-ttl-ms", TTL])
                    .spawn()
                    .await,
            )
        } else {
            None
        };
        // The sweep deletes the fields, then their index members (a
        // second command): swept once both are gone.
        let indexed = || {
            let mut conn = conn.clone();
            async move {
                conn.smembers::<_, Vec<String>>("sb:node:node-b:clients")
                    .await
                    .unwrap()
            }
        };
        let swept = tokio::time::timeout(EVENT_TIMEOUT, async {
            while count("sb:presence:g*").await != 0 || !indexed().await.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        if swept.is_err() {
            let mut c = conn.clone();
            let keys: Vec<String> = c.keys("sb:presence:g*").await.unwrap();
            for key in &keys {
                let record: std::collections::HashMap<String, String> =
                    c.hgetall(key).await.unwrap();
                eprintln!("left: {key} {record:?}");
            }
            let index: Vec<String> = c.smembers("sb:node:node-b:clients").await.unwrap();
            let nodes: Vec<(String, f64)> = c.zrange_withscores("sb:nodes", 0, -1).await.unwrap();
            panic!("ghosts left (restart={restart}); index {index:?}; nodes {nodes:?}");
        }
    }
}

/// A session is findable on its node from the moment it is registered
/// locally, before its presence field is written. If that write then
/// fails, the session is refused at the upgrade (503) and what was queued
/// for it meanwhile is not dropped: here, a reconnect of bob's phone
/// cannot be registered (Redis hangs), and the message that reached it
/// meanwhile goes to the phone's previous session, which stays.
#[tokio::test]
async fn messages_for_a_session_that_fails_to_register_are_not_lost() {
    let redis = Redis::start();
    let nats = Nats::start();
    let a = new_node().id("node-a").on(&redis, &nats).start().await;
    let b = new_node().id("node-b").on(&redis, &nats).start().await;
    let mut alice = connect(&b, "alice").await;
    let mut bob = connect(&a, "bob").await;
    // Node-b caches bob's route.
    deliver_until_cached(&mut alice, &mut bob, b.node()).await;
    let bob_id = switchboard::protocol::ClientId::parse("bob").unwrap();

    redis.freeze();
    let url = ws_url(&a);
    let again =
        tokio::spawn(async move { Client::connect(&url, Identity::Name("bob".into())).await });
    let first = bob.welcome().session_id;
    eventually("bob's new session is registered locally", || async {
        a.node()
            .router()
            .hub()
            .sessions(&bob_id)
            .is_some_and(|s| s.iter().any(|s| s.id != first))
    })
    .await;
    alice
        .send("bob", &json!("early"), Some("e"), true)
        .await
        .unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
    // The registration fails (Redis does not answer): refused at the upgrade...
    match within(again).await.unwrap() {
        Err(ClientError::Refused { status, .. }) => assert_eq!(status, 503),
        Err(e) => panic!("the new session should have been refused with 503: {e}"),
        Ok(_) => panic!("the new session should have been refused"),
    }
    // ... and the message reaches bob's phone all the same.
    match next_frame(&mut bob).await {
        ServerFrame::Message(m) => assert_eq!(m.body, json!("early")),
        other => panic!("bob got {other:?}"),
    }
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Receipt {
            status: ReceiptStatus::Delivered,
            ..
        }
    ));
    redis.thaw();
}

/// A client that closes is let go at once: the node closes the TCP
/// connection after echoing the close (RFC 6455 7.1.1) and only then
/// cleans up, so a slow presence store does not hold the client's close
/// (here Redis hangs: the clean-up waits for its response timeout).
#[tokio::test]
async fn a_clients_close_does_not_wait_for_the_clean_up() {
    let redis = Redis::start();
    let nats = Nats::start();
    let node = new_node().on(&redis, &nats).start().await;
    let alice = connect(&node, "alice").await;
    assert_eq!(node.node().metrics().sessions_open(), 1);

    redis.freeze();
    within(alice.close()).await.unwrap();
    // Closed for the client while the clean-up still waits on Redis.
    assert_eq!(node.node().metrics().sessions_open(), 1);
    redis.thaw();
    eventually("the session is cleaned up", || async {
        node.node().metrics().sessions_open() == 0
    })
    .await;
}

/// Issue 11, defect 1. Three nodes started a little apart, traffic to
/// random peers, Redis stopped for 1.5 s and started again empty. Every
/// node writes its sessions' records back; no node may then delete
/// another node's fresh records on the strength of a liveness view that
/// predates the outage. All records must come back and stay back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_restored_after_a_short_redis_outage_stay_restored() {
    let redis = Redis::start();
    let nats = Nats::start();
    let (redis_url, nats_url) = (redis.url(), nats.url());
    let mut nodes = Vec::new();
    for id in ["node-1", "node-2", "node-3"] {
        nodes.push(
            new_node()
                .id(id)
                .port(free_port())
                .urls(&redis_url, &nats_url)
                .flags(&["--rate-limit", "0"])
                .spawn()
                .await,
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    let names: Vec<String> = (0..30).map(|i| format!("c{i:02}")).collect();
    let mut sessions = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let client = named(&nodes[i % 3].ws_url(), name).await;
        sessions.push(client.welcome().session_id.to_string());
        let names = names.clone();
        tokio::spawn(async move {
            let mut client = client;
            let mut rng = crate::support::traffic::Rng::new(i as u64 + 7);
            let mut tick = tokio::time::interval(Duration::from_millis(150));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let to = &names[rng.below(names.len())];
                        if client.send(to, &json!(1), None, false).await.is_err() {
                            return;
                        }
                    }
                    event = client.next_event() => if !matches!(event, Ok(Event::Frame(_))) {
                        return;
                    }
                }
            }
        });
    }
    let conn = redis.connection().await;
    let all_present = |conn: &redis::aio::MultiplexedConnection| {
        let (conn, names, sessions) = (conn.clone(), names.clone(), sessions.clone());
        async move {
            for (name, session) in names.iter().zip(&sessions) {
                let got = presence_field(&conn, name).await.map(|f| f.session);
                if got.as_ref() != Some(session) {
                    return false;
                }
            }
            true
        }
    };
    eventually("every record is written", || all_present(&conn)).await;

    let port = redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let redis = Redis::start_on(Some(port));
    let conn = redis.connection().await;
    eventually("every record is back", || all_present(&conn)).await;

    // They stay: wait until every node has beaten several more times
    // (each heartbeat moves its expiry in the store's `nodes` set) and
    // look again.
    let beats = |conn: &redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let beats: Vec<(String, f64)> =
                conn.zrange_withscores("sb:nodes", 0, -1).await.unwrap();
            let mut newest = std::collections::HashMap::new();
            for (member, score) in beats {
                let node = member.split('|').next().unwrap_or_default().to_owned();
                let e = newest.entry(node).or_insert(0f64);
                *e = e.max(score);
            }
            newest
        }
    };
    let before = beats(&conn).await;
    eventually("every node beats four more times", || {
        let (before, beats) = (before.clone(), beats(&conn));
        async move {
            let now = beats.await;
            ["node-1", "node-2", "node-3"].iter().all(|n| {
                now.get(*n).copied().unwrap_or(0.0)
                    >= before.get(*n).copied().unwrap_or(0.0) + 4000.0
            })
        }
    })
    .await;
    assert!(
        all_present(&conn).await,
        "a restored record was deleted again"
    );
}

/// Issue 11: a record that vanishes while its session lives comes back by
/// itself: within `--presence-refresh-ms` when something removed it
/// behind the nodes' backs, within a heartbeat when its node had stalled
/// for longer than the TTL and the others swept its records as a dead
/// node's.
#[tokio::test]
async fn a_live_sessions_vanished_record_comes_back_by_itself() {
    let redis = Redis::start();
    let nats = Nats::start();
    let flags = ["--node-ttl-ms", TTL, "--presence-refresh-ms", "300"];
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&flags)
        .start()
        .await;
    let b = new_node()
        .id("node-b")
        .on(&redis, &nats)
        .flags(&flags)
        .spawn()
        .await;
    let alice = connect(&a, "alice").await;
    let bob = named(&b.ws_url(), "bob").await;
    let conn = redis.connection().await;
    let holds = |client: &'static str, session: Uuid| {
        let conn = conn.clone();
        async move {
            let got = presence_field(&conn, client).await.map(|f| f.session);
            got == Some(session.to_string())
        }
    };

    let _: () = conn.clone().del("sb:presence:alice").await.unwrap();
    let deleted = Instant::now();
    eventually("alice's record is written back", || {
        holds("alice", alice.welcome().session_id)
    })
    .await;
    eprintln!("a deleted record was back after {:?}", deleted.elapsed());

    // node-b hangs for three TTLs: node-a sees its heartbeat lapse and
    // sweeps bob's record as a dead node's.
    b.freeze();
    eventually("bob's record is swept", || async {
        !holds("bob", bob.welcome().session_id).await
    })
    .await;
    b.thaw();
    let thawed = Instant::now();
    eventually("bob's record is back", || {
        holds("bob", bob.welcome().session_id)
    })
    .await;
    eprintln!(
        "a stalled node's records were back {:?} after it resumed",
        thawed.elapsed()
    );
    // node-a may still see node-b dead until its next heartbeat, and
    // delete the record again; node-b writes it back once more after two
    // heartbeats. Once both nodes have beaten three more times, it holds.
    let beat_of = |node: &'static str| {
        let mut conn = conn.clone();
        async move {
            let beats: Vec<(String, f64)> =
                conn.zrange_withscores("sb:nodes", 0, -1).await.unwrap();
            beats
                .iter()
                .filter(|(m, _)| m.starts_with(&format!("{node}|")))
                .map(|(_, s)| *s)
                .fold(0.0, f64::max)
        }
    };
    let (a0, b0) = (beat_of("node-a").await, beat_of("node-b").await);
    eventually("both nodes beat three more times", || async {
        beat_of("node-a").await >= a0 + 1000.0 && beat_of("node-b").await >= b0 + 1000.0
    })
    .await;
    assert!(holds("bob", bob.welcome().session_id).await);
    let (mut alice, mut bob) = (alice, bob);
    deliver(&mut alice, &mut bob, AckStatus::Remote).await;
}
