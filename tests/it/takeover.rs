//! One session per client: a newer session replaces the older one wherever
//! it is, and the older one's late disconnect leaves the new record alone.

use crate::support::*;
use serde_json::json;
use switchboard::protocol::{AckFrame, AckStatus, Disconnect, MessageFrame, ServerFrame};

#[tokio::test]
async fn a_new_session_on_another_node_replaces_the_old_one() {
    let cluster = Cluster::start().await;
    let redis = cluster.redis.connection().await;
    let mut old = connect(&cluster.a, "bob").await;
    let new = connect(&cluster.b, "bob").await;
    let new_session = new.welcome().session_id;

    // Node-b told node-a over NATS; node-a closed the old session.
    assert_eq!(
        closed_with(&mut old).await,
        Some(Disconnect::Replaced.code())
    );

    // Node-a's clean-up has run (the session is counted closed) and its
    // compare-and-delete did not touch the newer record.
    eventually("node-a closed the old session", || async {
        cluster.a.node().metrics().sessions_open() == 0
    })
    .await;
    let field = presence_field(&redis, "bob").await.expect("bob's field");
    assert_eq!(
        (field.session, field.node.as_str()),
        (new_session.to_string(), "node-b")
    );

    // Messages now go to the new session.
    let mut alice = connect(&cluster.a, "alice").await;
    let mut new = new;
    alice
        .send("bob", &json!("to the new one"), None, false)
        .await
        .unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
    assert!(matches!(
        next_frame(&mut new).await,
        ServerFrame::Message(MessageFrame { .. })
    ));
}

#[tokio::test]
async fn a_new_session_on_the_same_node_replaces_the_old_one() {
    let cluster = Cluster::start().await;
    let mut old = connect(&cluster.a, "bob").await;
    let mut new = connect(&cluster.a, "bob").await;
    assert_eq!(
        closed_with(&mut old).await,
        Some(Disconnect::Replaced.code())
    );
    eventually("one session left", || async {
        cluster.a.node().metrics().sessions_open() == 1
    })
    .await;

    let redis = cluster.redis.connection().await;
    let field = presence_field(&redis, "bob").await.expect("bob's field");
    assert_eq!(field.session, new.welcome().session_id.to_string());

    let mut alice = connect(&cluster.a, "alice").await;
    alice.send("bob", &json!(1), None, false).await.unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Local);
    assert!(matches!(
        next_frame(&mut new).await,
        ServerFrame::Message(MessageFrame { .. })
    ));
}

/// Sends the node had read when the takeover came are each acked, in
/// order, before the 4001; sends it had not read yet are not acked (the
/// client learns of them by their missing ack).
#[tokio::test(start_paused = true)]
async fn acks_before_a_takeover_are_in_order_and_end_with_4001() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let mut old = connect(&a, "carol").await;
    let _peer = connect(&b, "dave").await;
    for i in 0..50 {
        old.send("dave", &json!(i), Some(&i.to_string()), false)
            .await
            .unwrap();
    }
    let _new = connect(&b, "carol").await;
    let mut acks = 0;
    loop {
        match next_event(&mut old).await {
            switchboard_client::Event::Frame(ServerFrame::Ack(AckFrame { id, .. })) => {
                assert_eq!(id, Some(acks.to_string()));
                acks += 1;
            }
            switchboard_client::Event::Frame(other) => panic!("unexpected {other:?}"),
            switchboard_client::Event::Closed { code, .. } => {
                assert_eq!(code, Some(Disconnect::Replaced.code()));
                break;
            }
        }
    }
    assert!(acks <= 50);
}
