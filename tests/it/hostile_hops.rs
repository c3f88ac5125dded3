//! Inter-node input is trusted but verified: whatever lands on a node's
//! subject (garbage, an unknown version, an oversized frame, a frame that
//! does not match its hop, a recipient the node does not hold) is counted
//! and answered where it can be, never a crash and never a frame written
//! to the wrong session.

use crate::support::*;
use futures_util::StreamExt;
use serde_json::json;
use serde_json::value::RawValue;
use switchboard::protocol::envelope::{
    MessageHopOut, OutcomeStatus, encode_envelope, encode_message_hop,
};
use switchboard::protocol::frames::encode_message;
use switchboard::protocol::{
    AckStatus, Addressee, ClientId, DeviceId, Envelope, Hop, MessageFrame, NodeId, ReplyTo,
    ServerFrame, Target,
};
use uuid::Uuid;

fn id(s: &str) -> ClientId {
    ClientId::parse(s).unwrap()
}

/// A message hop for `to` on node-b, claiming to come from `from` on a
/// made-up node whose subject the test watches; `frame` is what would be
/// written to the recipient's socket.
fn hop(msg_id: Uuid, from: &str, to: &str, frame: &str) -> Vec<u8> {
    let reply = ReplyTo {
        node: NodeId::parse("watcher").unwrap(),
        session: Uuid::new_v4(),
        receipt: false,
    };
    let targets = [Target {
        to: id(to),
        device: DeviceId::default_device(),
        session: Uuid::new_v4(),
    }];
    let hop = encode_message_hop(&MessageHopOut {
        msg_id,
        from: &id(from),
        to: Addressee::Client(&id(to)),
        forwarded: false,
        reply: Some(&reply),
        targets: &targets,
        carbons: &[],
        part: 0,
        frame,
    });
    encode_envelope([hop.as_slice()])
}

/// The next outcome reported to the watcher node.
async fn next_outcome(watcher: &mut async_nats::Subscriber) -> (Uuid, OutcomeStatus) {
    let message = within(watcher.next()).await.expect("an envelope");
    let envelope = Envelope::decode(&message.payload).expect("a valid envelope");
    for hop in envelope.into_hops() {
        if let Hop::Outcomes(outcomes) = hop {
            let outcome = &outcomes[0];
            return (outcome.msg_id, outcome.status);
        }
    }
    panic!("no outcome in the envelope");
}

#[tokio::test]
async fn hostile_envelopes_are_counted_answered_and_never_delivered() {
    let cluster = Cluster::start().await;
    let mut alice = connect(&cluster.a, "alice").await;
    let mut bob = connect(&cluster.b, "bob").await;
    let (nats, mut watcher) = nats_watch(&cluster.nats, "sb.node.watcher").await;
    let subject = "sb.node.node-b";
    let body = RawValue::from_string(r#"{"text":"forged"}"#.into()).unwrap();

    // Bytes no node would write, and a version from the future.
    for garbage in [
        &b"\xff not json"[..],
        b"{}",
        br#"{"v":2,"hop":{"teleport":{}}}"#,
    ] {
        nats.publish(subject, garbage.to_vec().into())
            .await
            .unwrap();
    }
    let future = json!({"v": 9, "hop": {"message": {}}}).to_string();
    nats.publish(subject, future.into()).await.unwrap();

    // A frame addressed to carol in a hop for bob: writing it to bob's
    // socket would hand him someone else's message.
    let mismatched = Uuid::now_v7();
    let frame = encode_message(
        mismatched,
        &id("alice"),
        Addressee::Client(&id("carol")),
        &body,
        1,
    );
    nats.publish(subject, hop(mismatched, "alice", "bob", &frame).into())
        .await
        .unwrap();
    assert_eq!(
        next_outcome(&mut watcher).await,
        (mismatched, OutcomeStatus::Offline)
    );

    // Not a message frame at all.
    let impostor = Uuid::now_v7();
    let welcome = r#"{"type":"welcome","client_id":"bob","session_id":"x","node":"evil"}"#;
    nats.publish(subject, hop(impostor, "alice", "bob", welcome).into())
        .await
        .unwrap();
    assert_eq!(
        next_outcome(&mut watcher).await,
        (impostor, OutcomeStatus::Offline)
    );

    // The right start, then a body bob's parser cannot read and a second
    // "type" key: not the form any node writes.
    for rest in [r#"[1e400],"ts":1}"#, r#"1,"type":"error","ts":1}"#] {
        let tampered = Uuid::now_v7();
        let frame = format!(
            r#"{{"type":"message","msg_id":"{tampered}","from":"alice","to":"bob","body":{rest}"#
        );
        nats.publish(subject, hop(tampered, "alice", "bob", &frame).into())
            .await
            .unwrap();
        assert_eq!(
            next_outcome(&mut watcher).await,
            (tampered, OutcomeStatus::Offline)
        );
    }

    // A body far larger than any client of node-b could have sent.
    let oversized = Uuid::now_v7();
    let big = RawValue::from_string(format!("\"{}\"", "x".repeat(70_000))).unwrap();
    let frame = encode_message(
        oversized,
        &id("alice"),
        Addressee::Client(&id("bob")),
        &big,
        1,
    );
    nats.publish(subject, hop(oversized, "alice", "bob", &frame).into())
        .await
        .unwrap();
    assert_eq!(
        next_outcome(&mut watcher).await,
        (oversized, OutcomeStatus::Offline)
    );

    // Well formed, for a client node-b does not hold: answered offline.
    let absent = Uuid::now_v7();
    let frame = encode_message(
        absent,
        &id("alice"),
        Addressee::Client(&id("nobody")),
        &body,
        1,
    );
    nats.publish(subject, hop(absent, "alice", "nobody", &frame).into())
        .await
        .unwrap();
    assert_eq!(
        next_outcome(&mut watcher).await,
        (absent, OutcomeStatus::Offline)
    );

    // node-b is unharmed, and the first thing bob ever receives after his
    // welcome is a real message.
    alice
        .send("bob", &json!("real"), Some("r"), false)
        .await
        .unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
    match next_frame(&mut bob).await {
        ServerFrame::Message(MessageFrame { from, body, .. }) => {
            assert_eq!((from.as_str(), body), ("alice", json!("real")))
        }
        other => panic!("bob got {other:?}"),
    }

    let b = &cluster.b;
    let rejected = |reason: &str| format!("switchboard_hops_rejected_total{{reason=\"{reason}\"}}");
    assert_eq!(metric(b, &rejected("malformed")).await, 3.0);
    assert_eq!(metric(b, &rejected("unknown_version")).await, 1.0);
    assert_eq!(metric(b, &rejected("mismatched")).await, 4.0);
    assert_eq!(metric(b, &rejected("oversized")).await, 1.0);
    assert_eq!(
        metric(b, "switchboard_hops_recipient_absent_total").await,
        1.0
    );
}
