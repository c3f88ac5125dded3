//! A client that stops reading cannot make the node buffer without bound:
//! its queue fills, it is closed with 4008, and every message that was
//! acked `local` is either received or answered with an offline receipt.

use crate::support::*;
use serde_json::json;
use switchboard::protocol::{
    AckFrame, AckStatus, Disconnect, MessageFrame, ReceiptStatus, ServerFrame,
};
use switchboard_client::Event;

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_4008_and_nothing_is_lost_silently() {
    let node = new_node()
        .flags(&[
            "--session-queue",
            "8",
            "--rate-limit",
            "0",
            "--write-timeout-ms",
            "5000",
        ])
        .start()
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
            ServerFrame::Ack(AckFrame {
                status: AckStatus::Local,
                ..
            }) => local += 1,
            ServerFrame::Ack(AckFrame {
                status: AckStatus::Offline,
                ..
            }) => offline_acks += 1,
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
            Event::Frame(ServerFrame::Message(MessageFrame { .. })) => received += 1,
            Event::Frame(other) => panic!("bob got {other:?}"),
            Event::Closed { code, .. } => break code,
        }
    };
    assert_eq!(code, Some(Disconnect::SlowConsumer.code()));

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
    let metrics = node.node().metrics().render();
    assert!(
        metrics.contains("switchboard_slow_consumers_total 1"),
        "{metrics}"
    );
}

/// Issue 11, defect 2: a sender that reads promptly is never closed by a
/// burst of its own outcomes. Its recipient's node hangs with hundreds of
/// its messages in flight; when that node's heartbeat lapses, every one is
/// answered `offline` at once, and every receipt reaches the sender.
async fn a_burst_of_offline_receipts_reaches_a_reading_sender(sends: usize, extra: &[&str]) {
    const TTL: &str = "1000";
    let redis = Redis::start();
    let nats = Nats::start();
    let mut flags = vec!["--node-ttl-ms", TTL, "--rate-limit", "0"];
    flags.extend_from_slice(extra);
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
    let mut alice = connect(&a, "alice").await;
    let _bob = within(switchboard_client::Client::connect(
        &b.ws_url(),
        switchboard_client::Identity::Name("bob".into()),
    ))
    .await
    .unwrap();
    // bob's node hangs: what is published to it stays in flight.
    b.freeze();
    for i in 0..sends {
        alice
            .send("bob", &json!(i), Some(&i.to_string()), false)
            .await
            .unwrap();
    }
    let (mut remote, mut offline_receipts) = (0, 0);
    while remote < sends || offline_receipts < remote {
        match next_event(&mut alice).await {
            Event::Frame(ServerFrame::Ack(AckFrame {
                status: AckStatus::Remote,
                ..
            })) => remote += 1,
            Event::Frame(ServerFrame::Receipt {
                status: ReceiptStatus::Offline,
                ..
            }) => offline_receipts += 1,
            Event::Frame(other) => panic!("alice got {other:?}"),
            Event::Closed { code, reason } => {
                panic!("alice was closed ({code:?} {reason}) after {offline_receipts} receipts")
            }
        }
    }
    assert_eq!(offline_receipts, sends);
    assert_eq!(
        metric(&a, "switchboard_receipts_undeliverable_total").await,
        0.0
    );
    assert_eq!(metric(&a, "switchboard_slow_consumers_total").await, 0.0);
    b.thaw();
}

#[tokio::test]
async fn a_burst_of_receipts_never_closes_a_sender_with_the_default_queue() {
    a_burst_of_offline_receipts_reaches_a_reading_sender(1500, &[]).await;
}

#[tokio::test]
async fn a_burst_of_receipts_never_closes_a_sender_with_a_short_queue() {
    a_burst_of_offline_receipts_reaches_a_reading_sender(450, &["--session-queue", "256"]).await;
}

/// The queue is bounded in bytes as well as frames: 64 KiB messages to a
/// client that does not read close it with 4008 once 256 KiB wait, long
/// before 1024 frames would.
#[tokio::test]
async fn a_session_queue_is_bounded_in_bytes() {
    let node = new_node()
        .flags(&[
            "--session-queue-bytes",
            "262144",
            "--rate-limit",
            "0",
            "--write-timeout-ms",
            "5000",
        ])
        .start()
        .await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = connect(&node, "bob").await; // stops reading
    let body = json!("y".repeat(60_000));
    let mut local = 0;
    let mut sent = 0;
    // Until the node refuses: a queue of 256 KiB holds 4 of these, the
    // socket buffers some more; far fewer than 1024.
    loop {
        alice.send("bob", &body, None, false).await.unwrap();
        sent += 1;
        match next_frame(&mut alice).await {
            ServerFrame::Ack(AckFrame {
                status: AckStatus::Local,
                ..
            }) => local += 1,
            ServerFrame::Ack(AckFrame {
                status: AckStatus::Offline,
                ..
            }) => break,
            other => panic!("alice got {other:?}"),
        }
        assert!(sent < 200, "the byte bound never took effect");
    }
    assert!(local < 200, "{local}");
    loop {
        if let Event::Closed { code, .. } = next_event(&mut bob).await {
            assert_eq!(code, Some(Disconnect::SlowConsumer.code()));
            break;
        }
    }
}
