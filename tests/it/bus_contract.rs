//! One contract, two buses: the in-process hub and NATS run the same cases
//! (NATS against real nats-servers started here: the version deployments
//! run, and Debian's 2.9.10). Whatever the router
//! relies on is a case: envelopes reach the addressed node in the order
//! they were published, a publish to a node nobody listens for comes back
//! as a bounce to the address it names (or is simply gone without one),
//! dropping an inbox stops the receiving, an envelope over the limit
//! is refused before it leaves, and a request is answered, or refused at
//! once when nobody listens for its node.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard::backends::{MemoryHub, NatsBus};
use switchboard::bus::{Bounce, BounceTag, Bus, BusError, Delivery, Subscription};
use switchboard::config::{NatsAuth, NatsTarget};
use switchboard::protocol::NodeId;
use uuid::Uuid;

use crate::support::{EVENT_TIMEOUT, Nats, within};

fn node(name: &str) -> NodeId {
    NodeId::parse(name).unwrap()
}

/// The whole contract on two handles of one bus (two nodes' views).
async fn contract(a: Arc<dyn Bus>, b: Arc<dyn Bus>) {
    // Fresh node ids, so that a bus shared with other runs does not
    // interfere.
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (node_a, node_b) = (node(&format!("a-{run}")), node(&format!("b-{run}")));
    let inbox_a = a.subscribe(&node_a).await.expect("a subscribes");
    let inbox_b = b.subscribe(&node_b).await.expect("b subscribes");
    assert!(a.connected() && b.connected());
    a.ping().await.expect("a round trip");

    let inbox_b = ordering(&*a, &node_b, inbox_b).await;
    let inbox_a = bounces(&*a, &node_a, inbox_a, &run).await;
    size_limit(&*a, &node_b).await;
    let inbox_b = requests(&*a, &node_b, inbox_b, &run).await;
    dropped_inbox_bounces(&*b, &node_b, inbox_b, &*a, &node_a, inbox_a).await;
    eprintln!("bus contract on {}: passed", a.backend());
}

async fn next(inbox: &mut Subscription) -> Delivery {
    within(inbox.next()).await.expect("the inbox is open")
}

/// A thousand envelopes from one publisher arrive in publish order.
async fn ordering(a: &dyn Bus, to: &NodeId, mut inbox: Subscription) -> Subscription {
    for i in 0..1000u32 {
        a.publish(to, Bytes::from(i.to_string()), None)
            .await
            .expect("publish");
    }
    for i in 0..1000u32 {
        assert_eq!(
            next(&mut inbox).await,
            Delivery::Envelope(Bytes::from(i.to_string())),
            "envelope {i} out of order"
        );
    }
    inbox
}

/// A publish to a node nobody listens for bounces to the node its bounce
/// names, with its tag: a single message or a batch's range. Without a
/// bounce address it is accepted and gone.
async fn bounces(a: &dyn Bus, node_a: &NodeId, mut inbox: Subscription, run: &str) -> Subscription {
    let nobody = node(&format!("nobody-{run}"));
    let msg_id = Uuid::now_v7();
    for tag in [
        BounceTag::Message(msg_id),
        BounceTag::Batch {
            to: nobody.clone(),
            first: 7,
            last: 42,
        },
    ] {
        let bounce = Bounce {
            node: node_a,
            tag: tag.clone(),
        };
        a.publish(&nobody, Bytes::from_static(b"x"), Some(bounce))
            .await
            .expect("a publish to nobody is taken");
        assert_eq!(next(&mut inbox).await, Delivery::Bounced(tag));
    }
    a.publish(&nobody, Bytes::from_static(b"gone"), None)
        .await
        .expect("without a bounce address it is simply gone");
    inbox
}

/// An envelope larger than the bus carries is refused, before it leaves.
async fn size_limit(a: &dyn Bus, to: &NodeId) {
    let limit = a.max_envelope();
    assert!(limit >= 64 * 1024, "a limit of {limit} bytes is too small");
    let too_big = Bytes::from(vec![b'x'; limit + 1]);
    match a.publish(to, too_big, None).await {
        Err(BusError::TooLarge { size, limit: l }) => assert_eq!((size, l), (limit + 1, limit)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

/// A request reaches the node's inbox and its answer comes back; a
/// request to a node nobody listens for is told so by the bus at once
/// (`NoListener`), not left to its timeout.
async fn requests(a: &dyn Bus, to: &NodeId, mut inbox: Subscription, run: &str) -> Subscription {
    let asked = a.request(to, Bytes::from_static(b"ping"), EVENT_TIMEOUT);
    let answered = async {
        match next(&mut inbox).await {
            Delivery::Request { payload, responder } => {
                assert_eq!(payload, Bytes::from_static(b"ping"));
                responder.respond(Bytes::from_static(b"pong")).await;
            }
            other => panic!("expected the request, got {other:?}"),
        }
    };
    let (answer, ()) = tokio::join!(asked, answered);
    assert_eq!(answer.expect("answered"), Bytes::from_static(b"pong"));

    let nobody = node(&format!("nobody-{run}"));
    let long = EVENT_TIMEOUT * 3;
    match within(a.request(&nobody, Bytes::from_static(b"ping"), long)).await {
        Err(BusError::NoListener { .. }) => {}
        other => panic!("expected NoListener, got {other:?}"),
    }
    inbox
}

/// Dropping an inbox stops the receiving: what is then published with a
/// bounce address comes back to the sender.
async fn dropped_inbox_bounces(
    b: &dyn Bus,
    node_b: &NodeId,
    inbox_b: Subscription,
    a: &dyn Bus,
    node_a: &NodeId,
    mut inbox_a: Subscription,
) {
    drop(inbox_b);
    let tag = BounceTag::Message(Uuid::now_v7());
    // NATS processes the unsubscribe in order with what the same client
    // sends next: a round trip on b's connection makes sure it is done.
    b.ping().await.expect("b round trip");
    let bounce = Bounce {
        node: node_a,
        tag: tag.clone(),
    };
    a.publish(node_b, Bytes::from_static(b"late"), Some(bounce))
        .await
        .expect("publish");
    assert_eq!(next(&mut inbox_a).await, Delivery::Bounced(tag));
}

#[tokio::test]
async fn memory() {
    let hub = MemoryHub::new();
    contract(Arc::new(hub.bus()), Arc::new(hub.bus())).await;
}

/// Two nodes' handles on `nats`.
async fn on(nats: &Nats) -> (Arc<dyn Bus>, Arc<dyn Bus>) {
    let target = NatsTarget {
        urls: vec![nats.url()],
        auth: NatsAuth::None,
    };
    let a = NatsBus::connect(&target, "sb", "contract-a").await.unwrap();
    let b = NatsBus::connect(&target, "sb", "contract-b").await.unwrap();
    (Arc::new(a), Arc::new(b))
}

/// The nats-server deployments run (scripts/nats-version).
#[tokio::test]
async fn nats() {
    let nats = Nats::start();
    let (a, b) = on(&nats).await;
    contract(a, b).await;
}

/// Debian's nats-server 2.9.10, the oldest a node still meets in the wild.
#[tokio::test]
async fn nats_debian() {
    let nats = Nats::start_debian();
    let (a, b) = on(&nats).await;
    contract(a, b).await;
}
