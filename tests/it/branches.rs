//! The three routing branches, through real WebSocket clients: on the test
//! bed, and against real Redis and NATS where what they show is the point
//! (the hop on the recipient node's subject, the record's layout).

use std::sync::Arc;

use crate::support::*;
use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::json;
use switchboard::bus::{Bus, Delivery, Subscription};
use switchboard::protocol::{
    AckFrame, AckStatus, Envelope, Hop, MessageFrame, NodeId, ReceiptStatus, ServerFrame,
};

#[tokio::test(start_paused = true)]
async fn local_branch_hands_the_message_to_the_session_on_the_same_node() {
    let bed = Bed::new();
    let (a, _b) = bed.pair(&[]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&a, "bob").await;

    let body = json!({"text": "hi bob", "n": [1, 2, 3]});
    alice.send("bob", &body, Some("c-1"), true).await.unwrap();

    let ServerFrame::Ack(AckFrame {
        id,
        msg_id,
        status,
        sessions,
        ..
    }) = next_frame(&mut alice).await
    else {
        panic!("expected an ack")
    };
    assert_eq!(
        (id.as_deref(), status, sessions),
        (Some("c-1"), AckStatus::Local, Some(1))
    );
    assert_eq!(msg_id.get_version_num(), 7, "msg_id is a UUIDv7");

    let ServerFrame::Message(MessageFrame {
        msg_id: got,
        from,
        to,
        body: got_body,
        ts,
        ..
    }) = next_frame(&mut bob).await
    else {
        panic!("expected a message")
    };
    assert_eq!(
        (got, from.as_str(), to.as_deref()),
        (msg_id, "alice", Some("bob"))
    );
    assert_eq!(got_body, body);
    let now = switchboard::protocol::now_ms();
    assert!(ts <= now && now - ts < 60_000, "ts {ts} is the send time");

    // The sender asked for a receipt: delivered, naming the session.
    assert_eq!(
        next_frame(&mut alice).await,
        ServerFrame::Receipt {
            id: Some("c-1".into()),
            msg_id,
            status: ReceiptStatus::Delivered,
            to: Some("bob".into()),
            device: Some("default".into()),
            reason: None,
        }
    );
}

#[tokio::test]
async fn remote_branch_publishes_on_the_recipient_nodes_subject() {
    let cluster = Cluster::start().await;
    let mut alice = connect(&cluster.a, "alice").await;
    let mut bob = connect(&cluster.b, "bob").await;

    // A plain NATS subscriber on node-b's subject sees the hop.
    let (_watcher, mut hops) = nats_watch(&cluster.nats, "sb.node.node-b").await;

    alice
        .send("bob", &json!("across"), Some("x"), true)
        .await
        .unwrap();
    let ServerFrame::Ack(AckFrame {
        msg_id,
        status,
        sessions,
        ..
    }) = next_frame(&mut alice).await
    else {
        panic!("expected an ack")
    };
    assert_eq!((status, sessions), (AckStatus::Remote, Some(1)));

    let ServerFrame::Message(MessageFrame {
        msg_id: got,
        from,
        body,
        ..
    }) = next_frame(&mut bob).await
    else {
        panic!("expected a message")
    };
    assert_eq!(
        (got, from.as_str(), body),
        (msg_id, "alice", json!("across"))
    );

    let raw = within(hops.next()).await.unwrap();
    let envelope = Envelope::decode(&raw.payload).expect("a valid envelope");
    let mut hops = envelope.into_hops();
    let Some(Hop::Message(hop)) = hops.next() else {
        panic!("expected a message hop")
    };
    assert_eq!(hop.msg_id, msg_id);
    assert_eq!(
        (hop.from.as_str(), hop.to.as_ref().map(|t| t.as_str())),
        ("alice", Some("bob"))
    );
    // It names bob's session there.
    assert_eq!(hop.targets.len(), 1);
    assert_eq!(hop.targets[0].session, bob.welcome().session_id);
    assert_eq!(hop.targets[0].device.as_str(), "default");
    // The recipient's frame, rendered by node-a, rides along as it is.
    let frame: serde_json::Value = serde_json::from_str(hop.frame.get()).unwrap();
    assert_eq!(frame["type"], "message");
    assert_eq!(frame["body"], "across");
    assert_eq!(frame["msg_id"], msg_id.to_string());
    let reply = hop.reply.expect("reply-to for receipts");
    assert_eq!(reply.node.as_str(), "node-a");
    assert_eq!(reply.session, alice.welcome().session_id);

    // The delivered receipt travels back across the bus.
    assert_eq!(
        next_frame(&mut alice).await,
        ServerFrame::Receipt {
            id: Some("x".into()),
            msg_id,
            status: ReceiptStatus::Delivered,
            to: Some("bob".into()),
            device: Some("default".into()),
            reason: None,
        }
    );
}

#[tokio::test(start_paused = true)]
async fn offline_branch_ends_at_the_senders_node_and_says_so() {
    let bed = Bed::new();
    let (a, _b) = bed.pair(&[]).await;
    let mut alice = connect(&a, "alice").await;
    let (mut to_a, mut to_b) = (bed.watch("node-a"), bed.watch("node-b"));

    alice
        .send("nobody", &json!(1), Some("o"), true)
        .await
        .unwrap();
    let ServerFrame::Ack(AckFrame { status, id, .. }) = next_frame(&mut alice).await else {
        panic!("expected an ack")
    };
    assert_eq!((status, id.as_deref()), (AckStatus::Offline, Some("o")));

    // No receipt follows an offline ack: the next frame alice sees is the
    // pong she asks for now.
    alice.ping(Some("after")).await.unwrap();
    assert_eq!(
        next_frame(&mut alice).await,
        ServerFrame::Pong {
            id: Some("after".into())
        }
    );
    // Nothing reached the bus.
    assert!(to_a.try_recv().is_err() && to_b.try_recv().is_err());
    let metrics = a.node().metrics().render();
    assert!(
        metrics.contains("switchboard_sends_total{branch=\"offline\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn presence_record_has_the_protocol_fields_and_goes_with_its_session() {
    let cluster = Cluster::start().await;
    let mut redis = cluster.redis.connection().await;
    let before = switchboard::protocol::now_ms();
    let alice = connect(&cluster.a, "alice").await;
    let session = alice.welcome().session_id;

    // The welcome comes after the record is written: no waiting needed.
    // One field per device, named by the device, holding the session as
    // JSON with exactly these keys.
    let record: std::collections::HashMap<String, String> =
        redis.hgetall("sb:presence:alice").await.unwrap();
    assert_eq!(record.len(), 1, "{record:?}");
    let field: serde_json::Value = serde_json::from_str(&record["default"]).unwrap();
    assert_eq!(
        field.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["node", "session", "since"]
    );
    assert_eq!(field["node"], "node-a");
    assert_eq!(field["session"], session.to_string());
    let since = field["since"].as_u64().unwrap();
    assert!(since >= before && since <= switchboard::protocol::now_ms());

    alice.close().await.unwrap();
    eventually("the record is deleted", || {
        let mut redis = redis.clone();
        async move { !redis.exists::<_, bool>("sb:presence:alice").await.unwrap() }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn order_of_a_thousand_cross_node_sends_is_kept() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&["--rate-limit", "0"]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    const N: usize = 1000;

    // Many in flight at once: the sends are written without waiting.
    let reader = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(N);
        while seen.len() < N {
            match next_frame(&mut bob).await {
                ServerFrame::Message(MessageFrame { body, .. }) => {
                    seen.push(body["seq"].as_u64().unwrap())
                }
                other => panic!("bob got {other:?}"),
            }
        }
        seen
    });
    for i in 0..N {
        alice
            .send("bob", &json!({"seq": i}), Some(&format!("c-{i}")), false)
            .await
            .unwrap();
    }
    for i in 0..N {
        match next_frame(&mut alice).await {
            ServerFrame::Ack(AckFrame { id, status, .. }) => {
                assert_eq!(id, Some(format!("c-{i}")), "acks come in send order");
                assert_eq!(status, AckStatus::Remote);
            }
            other => panic!("alice got {other:?}"),
        }
    }
    let seen = within(reader).await.unwrap();
    assert_eq!(seen, (0..N as u64).collect::<Vec<_>>());
}

/// The test plays a node of its own ("node-t") on the bed's bus: it sends
/// hops the way a sender node with a stale lookup would, and reads what
/// comes back to its own subscription.
async fn fake_origin(bed: &Bed) -> (Arc<dyn Bus>, Subscription) {
    let bus = bed.bus();
    let origin = bus.subscribe(&NodeId::parse("node-t").unwrap()).await;
    (bus, origin.unwrap())
}

/// Publishes `hop` (an envelope's JSON) to `node`, as node-t.
async fn publish(bus: &Arc<dyn Bus>, node: &str, hop: String) {
    let node = NodeId::parse(node).unwrap();
    bus.publish(&node, hop.into(), None).await.unwrap();
}

fn hop_from_node_t(msg_id: uuid::Uuid, to: &str, forwarded: bool) -> String {
    let frame = format!(
        r#"{{"type":"message","msg_id":"{msg_id}","from":"tester","to":"{to}","body":{{"late":true}},"ts":1}}"#
    );
    format!(
        r#"{{"v":2,"hop":{{"message":{{"msg_id":"{msg_id}","from":"tester","to":"{to}",
        "forwarded":{forwarded},"reply":{{"node":"node-t","session":"{}"}},
        "targets":[{{"to":"{to}","device":"default","session":"{}"}}],"frame":{frame}}}}}}}"#,
        uuid::Uuid::nil(),
        uuid::Uuid::new_v4()
    )
}

/// The hops of the next envelope on `sub` (one, or several packed).
async fn next_hops(sub: &mut Subscription) -> Vec<serde_json::Value> {
    let raw = loop {
        match within(sub.next()).await.unwrap() {
            Delivery::Envelope(raw) => break raw,
            _ => continue,
        }
    };
    let envelope: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    match (envelope.get("hop"), envelope.get("hops")) {
        (Some(hop), _) => vec![hop.clone()],
        (None, Some(hops)) => hops.as_array().unwrap().clone(),
        _ => panic!("no hop in {envelope}"),
    }
}

/// A hop that reaches a node which no longer holds the recipient's device:
/// the node looks again, forwards it once to where the device is now, and
/// tells the origin node where it went (a `forwarded` outcome); the new
/// node reports that target's outcome on its own.
#[tokio::test(start_paused = true)]
async fn a_moved_recipient_is_followed_to_its_new_node() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let mut bob = connect(&a, "bob").await; // bob is on node-a now
    let (bus, mut origin) = fake_origin(&bed).await;

    let msg_id = uuid::Uuid::now_v7();
    let stale = hop_from_node_t(msg_id, "bob", false);
    publish(&bus, "node-b", stale).await;

    let ServerFrame::Message(MessageFrame {
        msg_id: got, body, ..
    }) = next_frame(&mut bob).await
    else {
        panic!("expected the forwarded message")
    };
    assert_eq!((got, body), (msg_id, json!({"late": true})));

    let mut forwarded = None;
    let mut receipt = None;
    while forwarded.is_none() || receipt.is_none() {
        for hop in next_hops(&mut origin).await {
            for outcome in hop["outcomes"].as_array().into_iter().flatten() {
                match outcome["status"].as_str() {
                    Some("forwarded") => forwarded = Some(outcome.clone()),
                    _ => receipt = Some(outcome.clone()),
                }
            }
        }
    }
    let (forwarded, receipt) = (forwarded.unwrap(), receipt.unwrap());
    assert_eq!(forwarded["node"], "node-a");
    assert_eq!(forwarded["msg_id"], msg_id.to_string());
    assert_eq!(
        (&forwarded["to"], &forwarded["device"]),
        (&json!("bob"), &json!("default"))
    );
    assert_eq!(receipt["status"], "delivered");
    assert_eq!(receipt["msg_id"], msg_id.to_string());
    assert_eq!(
        (&receipt["to"], &receipt["device"]),
        (&json!("bob"), &json!("default"))
    );
    eventually("node-b counts the forward", || async {
        let metrics = b.node().metrics().render();
        metrics.contains("switchboard_hops_forwarded_total 1")
    })
    .await;
}

/// A hop for a recipient who is gone everywhere is answered to its origin
/// with an offline outcome, never dropped silently; a hop that was already
/// forwarded once is not forwarded again.
#[tokio::test(start_paused = true)]
async fn a_hop_for_a_recipient_gone_everywhere_is_answered_offline() {
    let bed = Bed::new();
    let _nodes = bed.pair(&[]).await;
    let (bus, mut origin) = fake_origin(&bed).await;
    for forwarded in [false, true] {
        let msg_id = uuid::Uuid::now_v7();
        let hop = hop_from_node_t(msg_id, "ghost", forwarded);
        publish(&bus, "node-b", hop).await;
        let hops = next_hops(&mut origin).await;
        let reply = &hops[0];
        let receipt = &reply["outcomes"][0];
        assert_eq!(receipt["msg_id"], msg_id.to_string(), "{reply}");
        assert_eq!(receipt["status"], "offline");
        assert_eq!(receipt["reason"], "disconnected");
        assert_eq!(
            (&receipt["to"], &receipt["device"]),
            (&json!("ghost"), &json!("default"))
        );
    }
}
