//! The route cache: repeated sends skip the presence store; a change of a
//! record is told to every node; and a stale route (its change not heard)
//! never loses a message and is corrected by the first message that finds
//! it stale.

use crate::support::*;
use serde_json::json;
use switchboard::protocol::{AckStatus, MessageFrame, ReceiptStatus, ServerFrame};
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
async fn repeated_sends_look_their_recipient_up_once() {
    let cluster = Cluster::start_with(&["--rate-limit", "0"]).await;
    let mut alice = connect(&cluster.a, "alice").await;
    let mut bob = connect(&cluster.b, "bob").await;
    let mut carol = connect(&cluster.a, "carol").await;
    let bob_id = switchboard::protocol::ClientId::parse("bob").unwrap();
    // The first send looks bob (and alice's own record, for carbons) up in
    // one round trip. A change broadcast while it was under way keeps its
    // answer out of the cache, so send until it is there.
    for i in 0.. {
        assert!(i < 20, "bob's route never got cached");
        alice.send("bob", &json!(i), None, false).await.unwrap();
        assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
        next_frame(&mut bob).await;
        if cluster.a.node().router().cached_route(&bob_id).is_some() {
            break;
        }
    }
    let (lookups_before, hits_before) = (
        lookups(&cluster.a),
        counter(&cluster.a, "switchboard_route_cache_hits_total"),
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
    assert_eq!(lookups(&cluster.a), lookups_before, "no lookup at all");
    assert_eq!(
        counter(&cluster.a, "switchboard_route_cache_hits_total"),
        hits_before + 200
    );
}

/// Bob moves from node-b to node-c: node-c tells every node, so node-a's
/// next message goes straight to node-c, after one lookup.
#[tokio::test]
async fn a_move_is_told_to_every_node() {
    let cluster = Cluster::start().await;
    let c = new_node()
        .id("node-c")
        .on(&cluster.redis, &cluster.nats)
        .start()
        .await;
    let mut alice = connect(&cluster.a, "alice").await;
    let mut bob = connect(&cluster.b, "bob").await;
    let bob_id = switchboard::protocol::ClientId::parse("bob").unwrap();
    // Sent until cached (a change broadcast during a lookup keeps its
    // answer out).
    for i in 0.. {
        assert!(i < 20, "bob's route never got cached");
        alice.send("bob", &json!(0), None, false).await.unwrap();
        assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
        next_frame(&mut bob).await;
        if cluster.a.node().router().cached_route(&bob_id).is_some() {
            break;
        }
    }

    drop(bob);
    let mut bob = connect(&c, "bob").await;
    eventually("node-a forgets the old route", || async {
        cluster.a.node().router().cached_route(&bob_id).is_none()
    })
    .await;
    alice.send("bob", &json!(1), Some("1"), true).await.unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
    let ServerFrame::Message(MessageFrame { body, .. }) = next_frame(&mut bob).await else {
        panic!("expected the message")
    };
    assert_eq!(body, json!(1));
    assert_eq!(counter(&cluster.b, "switchboard_hops_forwarded_total"), 0);
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
        ServerFrame::Message(MessageFrame { .. })
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

/// A bus that never delivers broadcasts: the nodes on it miss every
/// change, as a node that lost the one that mattered would.
struct Deaf(switchboard::backends::MemoryBus);

#[async_trait::async_trait]
impl switchboard::bus::Bus for Deaf {
    async fn publish(
        &self,
        node: &switchboard::protocol::NodeId,
        envelope: bytes::Bytes,
        bounce: Option<switchboard::bus::Bounce<'_>>,
    ) -> Result<(), switchboard::bus::BusError> {
        self.0.publish(node, envelope, bounce).await
    }
    async fn broadcast(&self, _envelope: bytes::Bytes) -> Result<(), switchboard::bus::BusError> {
        Ok(())
    }
    async fn publish_event(
        &self,
        _kind: &str,
        _event: bytes::Bytes,
    ) -> Result<(), switchboard::bus::BusError> {
        Ok(())
    }
    async fn request(
        &self,
        node: &switchboard::protocol::NodeId,
        payload: bytes::Bytes,
        timeout: std::time::Duration,
    ) -> Result<bytes::Bytes, switchboard::bus::BusError> {
        self.0.request(node, payload, timeout).await
    }
    async fn subscribe(
        &self,
        node: &switchboard::protocol::NodeId,
    ) -> Result<switchboard::bus::Subscription, switchboard::bus::BusError> {
        self.0.subscribe(node).await
    }
    fn connected(&self) -> bool {
        true
    }
    fn max_envelope(&self) -> usize {
        self.0.max_envelope()
    }
    async fn ping(&self) -> Result<(), switchboard::bus::BusError> {
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "deaf"
    }
}

/// Bob moves from node-b to node-c and node-a never hears of it: its cached
/// route sends the next message to node-b, which forwards it to node-c;
/// bob gets it, alice's receipt says delivered, and node-a drops the stale
/// route, so the message after goes straight to node-c.
#[tokio::test]
async fn a_stale_route_still_delivers_and_is_corrected() {
    use std::sync::Arc;
    use switchboard::backends::{MemoryHub, MemoryPresence};
    let presence: Arc<dyn switchboard::presence::PresenceStore> = Arc::new(MemoryPresence::new());
    let hub = MemoryHub::new();
    let node = |id: &'static str| {
        let presence = presence.clone();
        let bus = Arc::new(Deaf(hub.bus()));
        async move { assembled(&["--node-id", id], presence, bus).await }
    };
    let ((a, _la), (b, _lb), (c, _lc)) = (node("a").await, node("b").await, node("c").await);
    let alice = FakeSession::open(&a, "alice").await;
    let bob = FakeSession::open(&b, "bob").await;
    let bob_id = bob.handle.client.clone();

    let sent = a.router().route(alice.message("bob", false)).await.unwrap();
    assert_eq!(sent.status, AckStatus::Remote);
    bob.handle.outbox.ready().await;
    assert_eq!(bob.write().await.0.len(), 1);
    assert!(a.router().cached_route(&bob_id).is_some());

    // Bob leaves node-b and comes back on node-c.
    b.registrar()
        .unregister(&bob.handle, switchboard::protocol::SessionEnd::Closed)
        .await;
    let bob = FakeSession::open(&c, "bob").await;

    let sent = a.router().route(alice.message("bob", true)).await.unwrap();
    assert_eq!(sent.status, AckStatus::Remote);
    bob.handle.outbox.ready().await;
    let (messages, _) = bob.write().await;
    assert_eq!(messages.len(), 1, "forwarded by node-b");
    alice.handle.outbox.ready().await;
    let (_, receipts) = alice.write().await;
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert!(receipts[0].contains("\"delivered\""), "{receipts:?}");
    assert_eq!(
        counter_of(&b, "switchboard_hops_forwarded_total"),
        1,
        "node-b forwarded it"
    );
    assert!(
        a.router().cached_route(&bob_id).is_none(),
        "the forward told node-a its route was stale"
    );

    let sent = a.router().route(alice.message("bob", false)).await.unwrap();
    assert_eq!(sent.status, AckStatus::Remote);
    bob.handle.outbox.ready().await;
    assert_eq!(bob.write().await.0.len(), 1);
    assert_eq!(
        counter_of(&b, "switchboard_hops_forwarded_total"),
        1,
        "straight to node-c"
    );
    let cached = a.router().cached_route(&bob_id).unwrap();
    assert_eq!(cached[0].record.node, *c.id());
}

fn counter_of(node: &switchboard::node::Node, series: &str) -> u64 {
    let text = node.metrics().render();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}
