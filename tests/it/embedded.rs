//! The embedded default: no Redis, no NATS, one node on in-memory
//! presence and in-process routing. Also several nodes sharing the
//! in-memory backends inside one process.

use std::sync::Arc;

use crate::support::*;
use serde_json::json;
use switchboard::backends::MemoryHub;
use switchboard::backends::MemoryPresence;
use switchboard::protocol::{AckStatus, Disconnect, MessageFrame, ReceiptStatus, ServerFrame};

#[tokio::test]
async fn a_bare_node_routes_local_and_offline() {
    let node = new_node().flags(&["--api-key", "k"]).start().await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = connect(&node, "bob").await;
    assert_eq!(alice.welcome().node, node.node().id().as_str());

    alice
        .send("bob", &json!("hello"), Some("1"), true)
        .await
        .unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Local);
    assert!(matches!(
        next_frame(&mut bob).await,
        ServerFrame::Message(MessageFrame { .. })
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
    assert_eq!(
        closed_with(&mut bob).await,
        Some(Disconnect::Replaced.code())
    );
}

#[tokio::test]
async fn the_default_node_id_is_the_host_name_with_a_suffix() {
    let node = new_node().start().await;
    let id = node.node().id().as_str().to_owned();
    let (prefix, suffix) = id.rsplit_once('-').unwrap();
    assert!(!prefix.is_empty());
    assert_eq!(suffix.len(), 6, "{id}");
}

#[tokio::test]
async fn nodes_sharing_in_memory_backends_take_the_remote_branch() {
    let presence = Arc::new(MemoryPresence::new());
    let hub = MemoryHub::new();
    let a = new_node()
        .id("a")
        .backends(presence.clone(), Arc::new(hub.bus()))
        .start()
        .await;
    let b = new_node()
        .id("b")
        .backends(presence.clone(), Arc::new(hub.bus()))
        .start()
        .await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;

    alice
        .send("bob", &json!({"x": 1}), Some("r"), true)
        .await
        .unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Remote);
    let ServerFrame::Message(MessageFrame { body, .. }) = next_frame(&mut bob).await else {
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
    assert_eq!(
        closed_with(&mut bob).await,
        Some(Disconnect::Replaced.code())
    );
}
