//! Devices (protocol v2): one client online on several devices at once,
//! each its own session with its own field in presence; a message to the
//! client reaches every device, one hop per node; the sender's other
//! devices get carbon copies; receipts name the device.

use std::time::{Duration, Instant};

use crate::support::*;
use redis::AsyncCommands;
use serde_json::json;
use switchboard::protocol::{
    AckStatus, Disconnect, Envelope, Hop, OfflineReason, ReceiptStatus, ServerFrame,
};
use switchboard_client::{Client, ClientError, ConnectOptions, Identity};

/// The next `n` receipts, as (device, status, reason), sorted by device.
async fn receipts(
    client: &mut Client,
    n: usize,
) -> Vec<(String, ReceiptStatus, Option<OfflineReason>)> {
    let mut all = Vec::new();
    while all.len() < n {
        match next_frame(client).await {
            ServerFrame::Receipt {
                status,
                to,
                device,
                reason,
                ..
            } => {
                assert!(to.is_some(), "a receipt names its recipient");
                all.push((device.expect("a receipt names the device"), status, reason));
            }
            other => panic!("expected a receipt, got {other:?}"),
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[tokio::test(start_paused = true)]
async fn a_message_reaches_every_device_and_each_one_answers() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let mut alice = connect(&a, "alice").await;
    let mut phone = on_device(&b, "bob", "phone").await;
    let mut laptop = on_device(&b, "bob", "laptop").await;
    assert_eq!(phone.welcome().device, "phone");
    let mut hops = bed.watch("node-b");

    alice
        .send("bob", &json!("to all of bob"), Some("m1"), true)
        .await
        .unwrap();
    let ack = next_ack(&mut alice).await;
    assert_eq!((ack.status, ack.sessions), (AckStatus::Remote, Some(2)));
    for device in [&mut phone, &mut laptop] {
        let m = message(device).await;
        assert_eq!(
            (m.msg_id, m.body, m.carbon),
            (ack.msg_id, json!("to all of bob"), false)
        );
    }
    assert_eq!(
        receipts(&mut alice, 2).await,
        [
            ("laptop".into(), ReceiptStatus::Delivered, None),
            ("phone".into(), ReceiptStatus::Delivered, None),
        ]
    );

    // Both sessions on node-b: one hop, naming both.
    let raw = within(hops.recv()).await.unwrap();
    let envelope = Envelope::decode(&raw).unwrap();
    let message_hops: Vec<_> = envelope
        .into_hops()
        .filter_map(|hop| match hop {
            Hop::Message(m) => Some(m.targets.len()),
            _ => None,
        })
        .collect();
    assert_eq!(message_hops, [2], "one hop carrying both sessions");
}

#[tokio::test(start_paused = true)]
async fn two_devices_on_two_nodes_both_receive_with_receipts_naming_them() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let c = bed.node("node-c", &[]).await;
    let mut alice = connect(&c, "alice").await;
    let mut phone = on_device(&a, "bob", "phone").await;
    let mut laptop = on_device(&b, "bob", "laptop").await;

    alice
        .send("bob", &json!("hello"), Some("h"), true)
        .await
        .unwrap();
    let ack = next_ack(&mut alice).await;
    assert_eq!((ack.status, ack.sessions), (AckStatus::Remote, Some(2)));
    assert_eq!(message(&mut phone).await.msg_id, ack.msg_id);
    assert_eq!(message(&mut laptop).await.msg_id, ack.msg_id);
    assert_eq!(
        receipts(&mut alice, 2).await,
        [
            ("laptop".into(), ReceiptStatus::Delivered, None),
            ("phone".into(), ReceiptStatus::Delivered, None),
        ]
    );

    // A local device and a remote one: still `remote`, two sessions.
    let mut tab = on_device(&c, "bob", "tab").await;
    alice.send("bob", &json!(2), None, false).await.unwrap();
    let ack = next_ack(&mut alice).await;
    assert_eq!((ack.status, ack.sessions), (AckStatus::Remote, Some(3)));
    for device in [&mut phone, &mut laptop, &mut tab] {
        assert_eq!(message(device).await.msg_id, ack.msg_id);
    }
    // Only local devices: `local`.
    let mut carol_phone = on_device(&c, "carol", "phone").await;
    let mut carol_tab = on_device(&c, "carol", "tab").await;
    alice.send("carol", &json!(3), None, false).await.unwrap();
    let ack = next_ack(&mut alice).await;
    assert_eq!((ack.status, ack.sessions), (AckStatus::Local, Some(2)));
    assert_eq!(message(&mut carol_phone).await.msg_id, ack.msg_id);
    assert_eq!(message(&mut carol_tab).await.msg_id, ack.msg_id);
}

#[tokio::test]
async fn a_same_device_reconnect_takes_over_and_the_other_device_stays() {
    let cluster = Cluster::start().await;
    let redis = cluster.redis.connection().await;
    let mut old_phone = on_device(&cluster.a, "bob", "phone").await;
    let mut laptop = on_device(&cluster.a, "bob", "laptop").await;
    let new_phone = on_device(&cluster.b, "bob", "phone").await;
    assert_eq!(
        closed_with(&mut old_phone).await,
        Some(Disconnect::Replaced.code())
    );
    // The laptop is untouched, and each device's field names its session.
    laptop.ping(Some("still here")).await.unwrap();
    assert!(matches!(
        next_frame(&mut laptop).await,
        ServerFrame::Pong { .. }
    ));
    eventually("node-a let the old phone go", || async {
        cluster.a.node().sessions() == 1
    })
    .await;
    let phone = device_field(&redis, "bob", "phone").await.unwrap();
    assert_eq!(
        (phone.node.as_str(), phone.session),
        ("node-b", new_phone.welcome().session_id.to_string())
    );
    let lap = device_field(&redis, "bob", "laptop").await.unwrap();
    assert_eq!(lap.session, laptop.welcome().session_id.to_string());
    let fields: Vec<String> = redis.clone().hkeys("sb:presence:bob").await.unwrap();
    assert_eq!(fields.len(), 2, "{fields:?}");
}

#[tokio::test(start_paused = true)]
async fn a_device_beyond_the_cap_is_refused_with_409() {
    let bed = Bed::new();
    let node = bed.node("node", &[]).await;
    let mut devices = Vec::new();
    for i in 0..8 {
        devices.push(on_device(&node, "bob", &format!("d{i}")).await);
    }
    let options = ConnectOptions {
        device: Some("d8".into()),
        ..Default::default()
    };
    match connect_with(&node, Identity::Name("bob".into()), &options).await {
        Err(ClientError::Refused { status, body, .. }) => {
            assert_eq!(status, 409);
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["error"], "too_many_devices", "{body}");
            assert!(
                body["message"].as_str().unwrap().contains("8 devices"),
                "{body}"
            );
        }
        other => panic!("the 9th device should get 409, got {:?}", other.map(|_| ())),
    }
    // A device already online reconnects at the cap (replacing itself)...
    let again = on_device(&node, "bob", "d3").await;
    assert_eq!(
        closed_with(&mut devices[3]).await,
        Some(Disconnect::Replaced.code())
    );
    // ...and once one leaves, a new one gets in.
    devices.remove(0).close().await.unwrap();
    let ninth = on_device(&node, "bob", "d8").await;
    assert_eq!(ninth.welcome().device, "d8");
    drop(again);
    let metrics = node.node().metrics().render();
    assert!(
        metrics.contains("switchboard_upgrades_refused_total{reason=\"too_many_devices\"} 1"),
        "{metrics}"
    );

    // A device id outside the rules is a 400.
    let bad = ConnectOptions {
        device: Some("my phone".into()),
        ..Default::default()
    };
    match connect_with(&node, Identity::Name("bob".into()), &bad).await {
        Err(ClientError::Refused { status, body, .. }) => {
            assert_eq!(status, 400);
            assert!(body.contains("invalid_device_id"), "{body}");
        }
        other => panic!(
            "a bad device id should get 400, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[tokio::test(start_paused = true)]
async fn carbons_reach_the_other_devices_and_never_the_sender() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let mut laptop = on_device(&a, "alice", "laptop").await;
    let mut phone = on_device(&a, "alice", "phone").await;
    let mut tab = on_device(&b, "alice", "tab").await;
    let mut bob = connect(&b, "bob").await;

    laptop
        .send("bob", &json!("from my laptop"), Some("c1"), true)
        .await
        .unwrap();
    let ack = next_ack(&mut laptop).await;
    // Carbons never change the ack: one session, bob's.
    assert_eq!((ack.status, ack.sessions), (AckStatus::Remote, Some(1)));
    let got = message(&mut bob).await;
    assert!(!got.carbon);
    for device in [&mut phone, &mut tab] {
        let carbon = message(device).await;
        assert!(carbon.carbon, "{carbon:?}");
        assert_eq!(
            (
                carbon.msg_id,
                carbon.from.as_str(),
                carbon.to.as_deref(),
                &carbon.body,
                carbon.ts
            ),
            (ack.msg_id, "alice", Some("bob"), &got.body, got.ts)
        );
    }
    // The sender hears its receipt, and nothing else: no carbon of its own.
    assert_eq!(
        receipts(&mut laptop, 1).await,
        [("default".into(), ReceiptStatus::Delivered, None)]
    );
    laptop.ping(Some("after")).await.unwrap();
    assert!(matches!(
        next_frame(&mut laptop).await,
        ServerFrame::Pong { .. }
    ));

    // Bob answers: all three of alice's devices get it as a message.
    bob.send("alice", &json!("hi all"), None, false)
        .await
        .unwrap();
    let ack = next_ack(&mut bob).await;
    assert_eq!(ack.sessions, Some(3));
    for device in [&mut laptop, &mut phone, &mut tab] {
        let m = message(device).await;
        assert!(!m.carbon);
        assert_eq!(m.msg_id, ack.msg_id);
    }
}

/// For the tab, carbons and the messages it is sent keep the order in which
/// the sender's node routed them.
#[tokio::test(start_paused = true)]
async fn carbons_and_direct_messages_keep_their_order() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&["--rate-limit", "0"]).await;
    let mut laptop = on_device(&a, "alice", "laptop").await;
    let mut tab = on_device(&b, "alice", "tab").await;
    let mut bob = connect(&a, "bob").await;
    const N: usize = 200;
    for i in 0..N {
        laptop
            .send("bob", &json!({"n": i}), None, false)
            .await
            .unwrap();
        bob.send("alice", &json!({"n": i}), None, false)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 2 * N {
        let m = message(&mut tab).await;
        seen.push((m.carbon, m.body["n"].as_u64().unwrap()));
    }
    let carbons: Vec<u64> = seen.iter().filter(|(c, _)| *c).map(|(_, n)| *n).collect();
    let direct: Vec<u64> = seen.iter().filter(|(c, _)| !*c).map(|(_, n)| *n).collect();
    assert_eq!(carbons, (0..N as u64).collect::<Vec<_>>());
    assert_eq!(direct, (0..N as u64).collect::<Vec<_>>());
}

/// Bob's phone is on a node that is SIGKILLed: sends to bob still reach his
/// laptop (`remote`), and the phone is answered `offline` (`node_dead`) by
/// receipt; once the liveness bound has passed, the ack counts only the
/// laptop.
#[tokio::test]
async fn a_dead_devices_node_is_answered_offline_and_then_left_out() {
    let flags = ["--node-ttl-ms", "1000"];
    let Cluster { redis, nats, a, b } = Cluster::start_with(&flags).await;
    let mut c = new_node()
        .id("node-c")
        .on(&redis, &nats)
        .flags(&flags)
        .spawn()
        .await;
    let mut alice = connect(&a, "alice").await;
    let mut laptop = on_device(&b, "bob", "laptop").await;
    let _phone = on_device(&c, "bob", "phone").await;
    alice.send("bob", &json!(0), None, false).await.unwrap();
    assert_eq!(next_ack(&mut alice).await.sessions, Some(2));
    message(&mut laptop).await;
    // Settled before the kill (else the first send's phone session would
    // be answered `offline` too: its outcome died with node-c).
    let outcomes = a.node().router().outcomes().clone();
    eventually("the first send settled", || {
        let left = outcomes.in_flight();
        async move { left == 0 }
    })
    .await;

    c.kill();
    let killed = Instant::now();
    // Right after the kill: the phone's session is still believed.
    alice.send("bob", &json!(1), Some("k"), true).await.unwrap();
    let first = next_ack(&mut alice).await;
    assert_eq!(first.status, AckStatus::Remote);
    assert_eq!(message(&mut laptop).await.msg_id, first.msg_id);
    let heard = receipts(&mut alice, first.sessions.unwrap() as usize).await;
    if first.sessions == Some(2) {
        assert_eq!(
            heard,
            [
                ("laptop".into(), ReceiptStatus::Delivered, None),
                (
                    "phone".into(),
                    ReceiptStatus::Offline,
                    Some(OfflineReason::NodeDead)
                ),
            ]
        );
    }
    // After the liveness bound, only the laptop counts. Meanwhile, every
    // send still routed to the phone is answered offline.
    let mut i = 2;
    loop {
        alice.send("bob", &json!(i), None, false).await.unwrap();
        let ack = loop {
            match next_frame(&mut alice).await {
                ServerFrame::Ack(ack) => break ack,
                ServerFrame::Receipt {
                    device,
                    status,
                    reason,
                    ..
                } => assert_eq!(
                    (device.as_deref(), status, reason),
                    (
                        Some("phone"),
                        ReceiptStatus::Offline,
                        Some(OfflineReason::NodeDead)
                    )
                ),
                other => panic!("alice got {other:?}"),
            }
        };
        message(&mut laptop).await;
        if ack.sessions == Some(1) {
            assert_eq!(ack.status, AckStatus::Remote);
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(8),
            "node-c still believed"
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("a dead device's node left out after {:?}", killed.elapsed());
}
