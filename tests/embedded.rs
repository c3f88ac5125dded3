//! The embedded default: no Redis, no NATS, one node on in-memory
//! presence and in-process routing. Also several nodes sharing the
//! in-memory backends inside one process.

mod support;

use std::sync::Arc;

use serde_json::json;
use support::*;
use switchboard::bus::MemoryHub;
use switchboard::node::Node;
use switchboard::presence::MemoryPresence;
use switchboard::protocol::{AckStatus, ReceiptStatus, ServerFrame, close};

#[tokio::test]
async fn a_bare_node_routes_local_and_offline() {
    let node = embedded_node(&["--api-key", "k"]).await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = connect(&node, "bob").await;
    assert_eq!(alice.welcome().node, node.node().id.as_str());

    alice
        .send("bob", &json!("hello"), Some("1"), true)
        .await
        .unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Local);
    assert!(matches!(
        next_frame(&mut bob).await,
        ServerFrame::Message { .. }
    ));
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Receipt {
            status: ReceiptStatus::Delivered,
            ..
        }
    ));

    alice
        .send("carol", &json!("hello?"), Some("2"), false)
        .await
        .unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Offline);

    // Presence, takeover and readiness work the same as clustered.
    let (status, body) = http(
        &node,
        "GET",
        "/api/v1/presence/bob",
        &[("Authorization", "Bearer k")],
        None,
    )
    .await;
    assert_eq!((status, json(&body)["online"].as_bool()), (200, Some(true)));
    let (status, body) = http(&node, "GET", "/readyz", &[], None).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["presence"], "memory");
    let _bob2 = connect(&node, "bob").await;
    assert_eq!(closed_with(&mut bob).await, Some(close::REPLACED));
}

#[tokio::test]
async fn the_default_node_id_is_the_host_name_with_a_suffix() {
    let node = embedded_node(&[]).await;
    let id = node.node().id.as_str().to_owned();
    let (prefix, suffix) = id.rsplit_once('-').unwrap();
    assert!(!prefix.is_empty());
    assert_eq!(suffix.len(), 6, "{id}");
}

#[tokio::test]
async fn nodes_sharing_in_memory_backends_take_the_remote_branch() {
    let presence = Arc::new(MemoryPresence::new());
    let hub = MemoryHub::new();
    let a = Node::start_with(
        config(&["--node-id", "a"]),
        presence.clone(),
        Arc::new(hub.bus()),
    )
    .await
    .unwrap();
    let b = Node::start_with(
        config(&["--node-id", "b"]),
        presence.clone(),
        Arc::new(hub.bus()),
    )
    .await
    .unwrap();
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;

    alice
        .send("bob", &json!({"x": 1}), Some("r"), true)
        .await
        .unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
    let ServerFrame::Message { body, .. } = next_frame(&mut bob).await else {
        panic!("expected a message")
    };
    assert_eq!(body, json!({"x": 1}));
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Receipt {
            status: ReceiptStatus::Delivered,
            ..
        }
    ));

    // Takeover across the two in-process nodes.
    let _bob_on_a = connect(&a, "bob").await;
    assert_eq!(closed_with(&mut bob).await, Some(close::REPLACED));
}
