//! A client that stops reading cannot make the node buffer without bound:
//! its queue fills, it is closed with 4008, and every message that was
//! acked `local` is either received or answered with an offline receipt.

mod support;

use serde_json::json;
use support::*;
use switchboard::client::Event;
use switchboard::protocol::{AckStatus, ReceiptStatus, ServerFrame, close};

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_4008_and_nothing_is_lost_silently() {
    let node = embedded_node(&[
        "--session-queue",
        "8",
        "--rate-limit",
        "0",
        "--write-timeout-ms",
        "5000",
    ])
    .await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = connect(&node, "bob").await; // and bob stops reading here

    // Big messages fill the socket buffers quickly; then bob's queue fills.
    let body = json!("x".repeat(60_000));
    const N: usize = 400;
    for i in 0..N {
        alice
            .send("bob", &body, Some(&i.to_string()), false)
            .await
            .unwrap();
    }
    let (mut local, mut offline_acks) = (0, 0);
    for _ in 0..N {
        match next_frame(&mut alice).await {
            ServerFrame::Ack {
                status: AckStatus::Local,
                ..
            } => local += 1,
            ServerFrame::Ack {
                status: AckStatus::Offline,
                ..
            } => offline_acks += 1,
            ServerFrame::Receipt { .. } => {}
            other => panic!("alice got {other:?}"),
        }
    }
    assert!(
        offline_acks > 0,
        "bob's full queue must refuse some messages"
    );

    // Bob reads again: everything the socket took, then the 4008.
    let mut received = 0;
    let code = loop {
        match next_event(&mut bob).await {
            Event::Frame(ServerFrame::Message { .. }) => received += 1,
            Event::Frame(other) => panic!("bob got {other:?}"),
            Event::Closed { code, .. } => break code,
        }
    };
    assert_eq!(code, Some(close::SLOW_CONSUMER));

    // Every `local` ack is accounted for: received by bob, or answered
    // with an offline receipt.
    let mut offline_receipts = 0;
    while received + offline_receipts < local {
        match next_frame(&mut alice).await {
            ServerFrame::Receipt {
                status: ReceiptStatus::Offline,
                ..
            } => offline_receipts += 1,
            other => panic!("alice got {other:?}"),
        }
    }
    // ... and nothing more: the next frame is the pong alice asks for.
    alice.ping(Some("end")).await.unwrap();
    assert_eq!(
        next_frame(&mut alice).await,
        ServerFrame::Pong {
            id: Some("end".into())
        }
    );
    let metrics = node.node().metrics.render();
    assert!(
        metrics.contains("switchboard_slow_consumers_total 1"),
        "{metrics}"
    );
}
