//! The route cache: repeated sends skip the presence store; a change of a
//! record is told to every node; and a stale route (its change not heard)
//! never loses a message and is corrected by the first message that finds
//! it stale. On the test bed.

use crate::support::*;
use serde_json::json;
use switchboard::node::Node;
use switchboard::protocol::{AckStatus, ClientId, MessageFrame, ReceiptStatus, ServerFrame};

fn counter(node: &Node, series: &str) -> u64 {
    let text = node.metrics().render();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn lookups(node: &Node) -> u64 {
    counter(node, "switchboard_presence_lookups_total")
}

#[tokio::test(start_paused = true)]
async fn repeated_sends_look_their_recipient_up_once() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&["--rate-limit", "0"]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    let mut carol = connect(&a, "carol").await;
    let bob_id = switchboard::protocol::ClientId::parse("bob").unwrap();
    // The first send looks bob (and alice's own record, for carbons) up in
    // one round trip. A change broadcast while it was under way keeps its
    // answer out of the cache, so send until it is there.
    for i in 0.. {
        assert!(i < 20, "bob's route never got cached");
        alice.send("bob", &json!(i), None, false).await.unwrap();
        assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
        next_frame(&mut bob).await;
        if a.node().router().cached_route(&bob_id).is_some() {
            break;
        }
    }
    let (lookups_before, hits_before) = (
        lookups(a.node()),
        counter(a.node(), "switchboard_route_cache_hits_total"),
    );
    for i in 0..100 {
        alice.send("bob", &json!(i), None, false).await.unwrap();
        assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
        assert!(matches!(
            next_frame(&mut bob).await,
            ServerFrame::Message(MessageFrame { .. })
        ));
        // A recipient on the same node: its record was cached when it
        // registered here.
        alice.send("carol", &json!(i), None, false).await.unwrap();
        assert_eq!(ack_status(&mut alice).await, AckStatus::Local);
        assert!(matches!(
            next_frame(&mut carol).await,
            ServerFrame::Message(MessageFrame { .. })
        ));
    }
    assert_eq!(lookups(a.node()), lookups_before, "no lookup at all");
    assert_eq!(
        counter(a.node(), "switchboard_route_cache_hits_total"),
        hits_before + 200
    );
}

/// Bob moves from node-b to node-c: node-c tells every node, so node-a's
/// next message goes straight to node-c, after one lookup.
#[tokio::test(start_paused = true)]
async fn a_move_is_told_to_every_node() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let c = bed.node("node-c", &[]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    let bob_id = switchboard::protocol::ClientId::parse("bob").unwrap();
    // Sent until cached (a change broadcast during a lookup keeps its
    // answer out).
    for i in 0.. {
        assert!(i < 20, "bob's route never got cached");
        alice.send("bob", &json!(0), None, false).await.unwrap();
        assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
        next_frame(&mut bob).await;
        if a.node().router().cached_route(&bob_id).is_some() {
            break;
        }
    }

    drop(bob);
    let mut bob = connect(&c, "bob").await;
    eventually("node-a forgets the old route", || async {
        a.node().router().cached_route(&bob_id).is_none()
    })
    .await;
    alice.send("bob", &json!(1), Some("1"), true).await.unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
    let ServerFrame::Message(MessageFrame { body, .. }) = next_frame(&mut bob).await else {
        panic!("expected the message")
    };
    assert_eq!(body, json!(1));
    assert_eq!(counter(b.node(), "switchboard_hops_forwarded_total"), 0);
}

/// Bob leaves: the cached route sends the next message to his old node,
/// which answers offline; after that, sends are acked offline at once.
#[tokio::test(start_paused = true)]
async fn a_departed_recipient_is_answered_offline_then_known_offline() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    alice.send("bob", &json!(0), None, false).await.unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
    assert!(matches!(
        next_frame(&mut bob).await,
        ServerFrame::Message(MessageFrame { .. })
    ));
    bob.close().await.unwrap();
    eventually("node-b let bob go", || async { b.node().sessions() == 0 }).await;

    alice
        .send("bob", &json!(1), Some("1"), false)
        .await
        .unwrap();
    let status = ack_status(&mut alice).await;
    if status == AckStatus::Remote {
        assert!(matches!(
            next_frame(&mut alice).await,
            ServerFrame::Receipt {
                status: ReceiptStatus::Offline,
                ..
            }
        ));
    }
    alice
        .send("bob", &json!(2), Some("2"), false)
        .await
        .unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Offline);
}

/// Bob moves from node-b to node-c and node-a never hears of it (every
/// broadcast of a change is lost): its cached route sends the next message
/// to node-b, which forwards it to node-c; bob gets it, alice's receipt
/// says delivered, and node-a drops the stale route, so the message after
/// goes straight to node-c.
#[tokio::test(start_paused = true)]
async fn a_stale_route_still_delivers_and_is_corrected() {
    let bed = Bed::new();
    bed.lose_broadcasts();
    let (a, b) = bed.pair(&[]).await;
    let c = bed.node("node-c", &[]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    let bob_id = ClientId::parse("bob").unwrap();

    let ack = within(alice.send_for_ack("bob", &json!(0), false))
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Remote);
    message(&mut bob).await;
    assert!(a.node().router().cached_route(&bob_id).is_some());

    // Bob leaves node-b and comes back on node-c.
    within(bob.close()).await.unwrap();
    eventually("node-b let bob go", || async { b.node().sessions() == 0 }).await;
    let mut bob = connect(&c, "bob").await;

    let ack = within(alice.send_for_ack("bob", &json!(1), true))
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Remote);
    assert_eq!(
        message(&mut bob).await.body,
        json!(1),
        "forwarded by node-b"
    );
    match next_frame(&mut alice).await {
        ServerFrame::Receipt { status, .. } => assert_eq!(status, ReceiptStatus::Delivered),
        other => panic!("expected the receipt, got {other:?}"),
    }
    assert_eq!(
        counter(b.node(), "switchboard_hops_forwarded_total"),
        1,
        "node-b forwarded it"
    );
    assert!(
        a.node().router().cached_route(&bob_id).is_none(),
        "the forward told node-a its route was stale"
    );

    let ack = within(alice.send_for_ack("bob", &json!(2), false))
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Remote);
    assert_eq!(message(&mut bob).await.body, json!(2));
    assert_eq!(
        counter(b.node(), "switchboard_hops_forwarded_total"),
        1,
        "straight to node-c"
    );
    let cached = a.node().router().cached_route(&bob_id).unwrap();
    assert_eq!(cached[0].record.node, *c.node().id());
}
