//! The route cache: repeated sends skip the presence store, and a stale
//! route never loses a message and is corrected by the first message that
//! finds it stale.

use crate::support::*;
use serde_json::json;
use switchboard::protocol::{AckStatus, ReceiptStatus, ServerFrame};
use switchboard::runtime::RunningNode;

fn counter(node: &RunningNode, series: &str) -> u64 {
    let text = node.node().metrics().render();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn lookups(node: &RunningNode) -> u64 {
    counter(node, "switchboard_presence_lookups_total")
}

#[tokio::test]
async fn repeated_sends_to_a_remote_recipient_look_it_up_once() {
    let cluster = Cluster::start_with(&["--rate-limit", "0"]).await;
    let mut alice = connect(&cluster.a, "alice").await;
    let mut bob = connect(&cluster.b, "bob").await;
    let mut carol = connect(&cluster.a, "carol").await;
    for i in 0..100 {
        alice.send("bob", &json!(i), None, false).await.unwrap();
        assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
        assert!(matches!(
            next_frame(&mut bob).await,
            ServerFrame::Message { .. }
        ));
        // A recipient on the same node needs no lookup at all.
        alice.send("carol", &json!(i), None, false).await.unwrap();
        assert_eq!(ack_status(&mut alice).await, AckStatus::Local);
        assert!(matches!(
            next_frame(&mut carol).await,
            ServerFrame::Message { .. }
        ));
    }
    assert_eq!(lookups(&cluster.a), 1);
    assert_eq!(
        counter(&cluster.a, "switchboard_route_cache_hits_total"),
        99
    );
}

/// Bob moves from node-b to node-c: node-a's cached route is stale. The
/// next message still reaches him (node-b forwards it), and the one after
/// goes straight to node-c.
#[tokio::test]
async fn a_stale_route_still_delivers_and_is_corrected() {
    let cluster = Cluster::start().await;
    let c = new_node()
        .id("node-c")
        .on(&cluster.redis, &cluster.nats)
        .start()
        .await;
    let mut alice = connect(&cluster.a, "alice").await;
    let mut bob = connect(&cluster.b, "bob").await;
    alice.send("bob", &json!(0), None, false).await.unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
    assert!(matches!(
        next_frame(&mut bob).await,
        ServerFrame::Message { .. }
    ));
    bob.close().await.unwrap();
    let mut bob = connect(&c, "bob").await;

    alice.send("bob", &json!(1), Some("1"), true).await.unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
    let ServerFrame::Message { body, .. } = next_frame(&mut bob).await else {
        panic!("expected the forwarded message")
    };
    assert_eq!(body, json!(1));
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Receipt {
            status: ReceiptStatus::Delivered,
            ..
        }
    ));
    assert_eq!(counter(&cluster.b, "switchboard_hops_forwarded_total"), 1);

    // Node-b told node-a where bob went: the stale route is gone.
    let bob_id = switchboard::protocol::ClientId::parse("bob").unwrap();
    eventually("node-a drops the stale route", || async {
        cluster.a.node().router().cached_route(&bob_id).is_none()
    })
    .await;
    // Looked up again, and straight to node-c: no more forwards.
    for i in 2..5 {
        alice.send("bob", &json!(i), None, false).await.unwrap();
        assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
        assert!(matches!(
            next_frame(&mut bob).await,
            ServerFrame::Message { .. }
        ));
    }
    assert_eq!(counter(&cluster.b, "switchboard_hops_forwarded_total"), 1);
    assert_eq!(lookups(&cluster.a), 2);
    assert_eq!(
        cluster
            .a
            .node()
            .router()
            .cached_route(&bob_id)
            .map(|r| r.node),
        Some(c.node().id().clone())
    );
}

/// Bob leaves: the cached route sends the next message to his old node,
/// which answers offline; after that, sends are acked offline at once.
#[tokio::test]
async fn a_departed_recipient_is_answered_offline_then_known_offline() {
    let cluster = Cluster::start().await;
    let mut alice = connect(&cluster.a, "alice").await;
    let mut bob = connect(&cluster.b, "bob").await;
    alice.send("bob", &json!(0), None, false).await.unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
    assert!(matches!(
        next_frame(&mut bob).await,
        ServerFrame::Message { .. }
    ));
    bob.close().await.unwrap();
    eventually("node-b let bob go", || async {
        cluster.b.node().sessions() == 0
    })
    .await;

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
