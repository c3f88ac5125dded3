//! The inbox (protocol v2): opt-in store-and-forward for offline clients.
//! A send with `"store": true` to a client with no session is appended to
//! its inbox; its next session is welcomed with `inbox: n` and gets them
//! first, in order, each once; limits, expiry, two devices, resume mid-
//! drain and bad input.

use crate::support::*;
use serde_json::json;
use switchboard::protocol::{AckStatus, OfflineReason, ServerFrame};
use switchboard_client::{Ack, Client, ConnectOptions, Identity, To};

const KEY: &str = "inbox-key";

/// A store-and-forward send from `from` to `to`; returns the ack.
async fn store(from: &mut Client, to: &str, body: serde_json::Value) -> Ack {
    within(from.ask(To::Client(to), &body, false, true))
        .await
        .unwrap()
}

async fn open(node: &impl Reach, name: &str, options: ConnectOptions) -> Client {
    within(connect_with(node, Identity::Name(name.into()), &options))
        .await
        .unwrap_or_else(|e| panic!("{name} cannot connect: {e}"))
}

/// `GET /api/v1/inbox/<client>`: (count, oldest).
async fn inbox_of(node: &impl Reach, client: &str) -> (u64, Option<u64>) {
    let bearer = format!("Bearer {KEY}");
    let path = format!("/api/v1/inbox/{client}");
    let (status, body) = http(node, "GET", &path, &[("Authorization", &bearer)], None).await;
    assert_eq!(status, 200, "{body}");
    let body = json(&body);
    (body["count"].as_u64().unwrap(), body["oldest"].as_u64())
}

#[tokio::test(start_paused = true)]
async fn stored_messages_arrive_in_order_before_live_ones_and_leave_the_inbox() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&["--inbox", "memory", "--api-key", KEY]).await;
    let mut alice = connect(&a, "alice").await;
    assert_eq!(
        alice.welcome().inbox,
        Some(0),
        "an inbox says so, even empty"
    );

    for n in 1..=3 {
        let ack = store(&mut alice, "bob", json!({ "n": n })).await;
        assert_eq!(ack.status, AckStatus::Offline, "the branch is unchanged");
        assert_eq!(ack.stored, Some(true));
        assert_eq!(ack.store_error, None);
        assert_eq!(ack.reason, Some(OfflineReason::NeverSeen));
    }
    // Without `store`, nothing is kept.
    let ack = within(alice.send_for_ack("bob", &json!({ "n": 0 }), false))
        .await
        .unwrap();
    assert_eq!((ack.status, ack.stored), (AckStatus::Offline, None));
    let (count, oldest) = inbox_of(&b, "bob").await;
    assert_eq!(count, 3);
    assert!(oldest.unwrap() <= switchboard::protocol::now_ms());
    assert_eq!(metric(&a, "switchboard_inbox_stored_total").await, 3.0);

    // bob comes online on the other node: told how many, then each in
    // order, flagged, before a live message sent after he connected.
    let mut bob = connect(&b, "bob").await;
    assert_eq!(bob.welcome().inbox, Some(3));
    let ack = within(alice.send_for_ack("bob", &json!({ "n": 4 }), false))
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Remote);
    for n in 1..=4 {
        let m = message(&mut bob).await;
        assert_eq!(m.body, json!({ "n": n }));
        assert_eq!(m.stored, n <= 3, "{m:?}");
        assert_eq!(m.from, "alice");
    }
    eventually("the delivered messages leave the inbox", || async {
        inbox_of(&a, "bob").await.0 == 0
    })
    .await;
    assert_eq!(metric(&b, "switchboard_inbox_delivered_total").await, 3.0);

    // Nothing twice: a new session finds the inbox empty.
    drop(bob);
    eventually("bob's session is gone", || async {
        let (_, body) = http(
            &a,
            "GET",
            "/api/v1/presence/bob",
            &[("Authorization", &format!("Bearer {KEY}"))],
            None,
        )
        .await;
        json(&body)["online"] == false
    })
    .await;
    let mut bob = connect(&a, "bob").await;
    assert_eq!(bob.welcome().inbox, Some(0));
    let ack = within(alice.send_for_ack("bob", &json!("live"), false))
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Local);
    assert_eq!(message(&mut bob).await.body, json!("live"));
}

#[tokio::test(start_paused = true)]
async fn a_full_inbox_refuses_with_inbox_full_and_the_api_empties_it() {
    let bed = Bed::new();
    let node = bed
        .node(
            "node",
            &[
                "--inbox",
                "memory",
                "--inbox-max-messages",
                "2",
                "--api-key",
                KEY,
            ],
        )
        .await;
    let mut alice = connect(&node, "alice").await;
    for n in 0..2 {
        assert_eq!(store(&mut alice, "bob", json!(n)).await.stored, Some(true));
    }
    let ack = store(&mut alice, "bob", json!(2)).await;
    assert_eq!(ack.status, AckStatus::Offline);
    assert_eq!(ack.stored, Some(false));
    assert_eq!(ack.store_error.as_deref(), Some("inbox_full"));
    assert_eq!(
        ack.reason,
        Some(OfflineReason::NeverSeen),
        "the reason stays the recipient's"
    );
    assert_eq!(
        metric(
            &node,
            "switchboard_inbox_refused_total{error=\"inbox_full\"}"
        )
        .await,
        1.0
    );
    assert_eq!(inbox_of(&node, "bob").await.0, 2);

    let bearer = format!("Bearer {KEY}");
    let (status, _) = http(
        &node,
        "DELETE",
        "/api/v1/inbox/bob",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(inbox_of(&node, "bob").await, (0, None));
    let (status, _) = http(&node, "GET", "/api/v1/inbox/bob", &[], None).await;
    assert_eq!(status, 401, "the inbox API needs the key");
    let (status, _) = http(
        &node,
        "GET",
        "/api/v1/inbox/bad%20id",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, 400);
    let mut bob = connect(&node, "bob").await;
    assert_eq!(bob.welcome().inbox, Some(0));
    bob.ping(Some("p")).await.unwrap();
    assert!(matches!(
        next_frame(&mut bob).await,
        ServerFrame::Pong { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn stored_messages_expire_after_the_inbox_ttl() {
    let bed = Bed::new();
    let flags = ["--inbox", "memory", "--inbox-ttl", "1s", "--api-key", KEY];
    let node = bed.node("node", &flags).await;
    let mut alice = connect(&node, "alice").await;
    assert_eq!(
        store(&mut alice, "bob", json!("soon gone")).await.stored,
        Some(true)
    );
    assert_eq!(inbox_of(&node, "bob").await.0, 1);
    // The store's own clock decides (paused time here: the TTL passes
    // without a real wait).
    eventually("the stored message expires", || async {
        inbox_of(&node, "bob").await.0 == 0
    })
    .await;
    let bob = connect(&node, "bob").await;
    assert_eq!(bob.welcome().inbox, Some(0));
}

/// Two devices connecting at once: one claims the inbox and gets every
/// stored message; the other is welcomed with `inbox: 0`.
#[tokio::test(start_paused = true)]
async fn of_two_devices_connecting_at_once_one_drains_the_inbox() {
    let bed = Bed::new();
    let node = bed
        .node("node", &["--inbox", "memory", "--api-key", KEY])
        .await;
    let mut alice = connect(&node, "alice").await;
    for n in 0..5 {
        store(&mut alice, "bob", json!(n)).await;
    }
    let (mut phone, mut laptop) = tokio::join!(
        on_device(&node, "bob", "phone"),
        on_device(&node, "bob", "laptop")
    );
    let counts = (
        phone.welcome().inbox.unwrap(),
        laptop.welcome().inbox.unwrap(),
    );
    assert!(counts == (5, 0) || counts == (0, 5), "{counts:?}");
    let drainer = if counts.0 == 5 {
        &mut phone
    } else {
        &mut laptop
    };
    for n in 0..5 {
        assert_eq!(message(drainer).await.body, json!(n));
    }
    // Neither gets anything more from it.
    for device in [&mut phone, &mut laptop] {
        device.ping(Some("p")).await.unwrap();
        assert!(matches!(next_frame(device).await, ServerFrame::Pong { .. }));
    }
}

/// Acks mode: a connection cut in the middle of a drain resumes with the
/// rest, none lost, none twice; a message leaves the inbox only once
/// confirmed.
#[tokio::test(start_paused = true)]
async fn a_drain_cut_short_resumes_with_the_rest_once_in_acks_mode() {
    let bed = Bed::new();
    let node = bed
        .node(
            "node",
            &[
                "--inbox",
                "memory",
                "--api-key",
                KEY,
                "--resume-window-ms",
                "30000",
            ],
        )
        .await;
    let mut alice = connect(&node, "alice").await;
    for n in 1..=5 {
        store(&mut alice, "bob", json!(n)).await;
    }
    let acks = ConnectOptions {
        acks: true,
        ..ConnectOptions::default()
    };
    let mut bob = open(&node, "bob", acks.clone()).await;
    assert_eq!(bob.welcome().inbox, Some(5));
    let token = bob.welcome().resume_token.clone().unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        let m = message(&mut bob).await;
        got.push((m.seq.unwrap(), m.body));
    }
    bob.confirm(2).await.unwrap();
    bob.ping(Some("p")).await.unwrap();
    assert!(matches!(
        next_frame(&mut bob).await,
        ServerFrame::Pong { .. }
    ));
    eventually("the two confirmed leave the inbox", || async {
        inbox_of(&node, "bob").await.0 == 3
    })
    .await;
    // The connection drops without a close: the session detaches.
    drop(bob);
    let resume = ConnectOptions {
        resume: Some((token, 2)),
        ..acks
    };
    let mut bob = open(&node, "bob", resume).await;
    assert_eq!(bob.welcome().resumed, Some(true));
    assert_eq!(
        bob.welcome().inbox,
        Some(0),
        "a resumed session does not claim again"
    );
    for n in 3..=5 {
        let m = message(&mut bob).await;
        assert_eq!(m.body, json!(n), "the rest, in order");
        assert!(m.stored);
    }
    bob.confirm(5).await.unwrap();
    eventually("every confirmed message leaves the inbox", || async {
        inbox_of(&node, "bob").await.0 == 0
    })
    .await;
    bob.ping(Some("p")).await.unwrap();
    assert!(
        matches!(next_frame(&mut bob).await, ServerFrame::Pong { .. }),
        "none twice"
    );
}

/// Without acks mode a message leaves the inbox once written to the
/// socket; what a session that goes away did not write stays there. How
/// many the first session wrote depends on when the node sees it gone;
/// whatever that is, the next session gets exactly the rest, in order.
#[tokio::test]
async fn a_session_gone_mid_drain_leaves_the_rest_for_the_next() {
    let node = new_node()
        .flags(&["--inbox", "memory", "--api-key", KEY])
        .start()
        .await;
    let mut alice = connect(&node, "alice").await;
    for n in 1..=3 {
        store(&mut alice, "bob", json!(n)).await;
    }
    // A handshake whose socket never reads: the node writes the welcome
    // and the stored messages into the socket buffer, so they count as
    // delivered... unless the connection is gone first. Drop it at once.
    let (status, _, socket) = raw_upgrade(node.local_addr(), "/ws?client_id=bob", &[]).await;
    assert_eq!(status, 101);
    drop(socket);
    // Whatever that session wrote left the inbox; what it did not, stayed.
    let left = {
        let mut left = 0;
        eventually("bob's first session is gone", || async {
            let (_, body) = http(
                &node,
                "GET",
                "/api/v1/presence/bob",
                &[("Authorization", &format!("Bearer {KEY}"))],
                None,
            )
            .await;
            json(&body)["online"] == false
        })
        .await;
        left += inbox_of(&node, "bob").await.0;
        left
    };
    let mut bob = connect(&node, "bob").await;
    assert_eq!(bob.welcome().inbox, Some(left));
    for n in (4 - left)..=3 {
        assert_eq!(message(&mut bob).await.body, json!(n));
    }
}

#[tokio::test(start_paused = true)]
async fn bad_store_flags_and_bodies_at_the_limit_are_clear_and_whole() {
    let bed = Bed::new();
    let node = bed
        .node(
            "node",
            &[
                "--inbox",
                "memory",
                "--api-key",
                KEY,
                "--max-frame-bytes",
                "1024",
            ],
        )
        .await;
    let mut alice = connect(&node, "alice").await;
    alice
        .send_raw(r#"{"type":"send","to":"bob","body":1,"store":"yes","id":"s"}"#)
        .await
        .unwrap();
    match next_frame(&mut alice).await {
        ServerFrame::Error { code, message, .. } => {
            assert_eq!(code.as_str(), "bad_frame");
            assert!(message.contains("store"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // The largest frame allowed is stored whole; one byte more is refused
    // and nothing is stored.
    let envelope = r#"{"type":"send","to":"bob","store":true,"body":""}"#.len();
    let text = "x".repeat(1024 - envelope);
    let frame = format!(r#"{{"type":"send","to":"bob","store":true,"body":"{text}"}}"#);
    assert_eq!(frame.len(), 1024);
    alice.send_raw(frame).await.unwrap();
    assert_eq!(next_ack(&mut alice).await.stored, Some(true));
    let over = format!(r#"{{"type":"send","to":"bob","store":true,"body":"{text}x"}}"#);
    alice.send_raw(over).await.unwrap();
    match next_frame(&mut alice).await {
        ServerFrame::Error { code, .. } => assert_eq!(code.as_str(), "too_large"),
        other => panic!("expected too_large, got {other:?}"),
    }
    assert_eq!(inbox_of(&node, "bob").await.0, 1);
    let mut bob = connect(&node, "bob").await;
    assert_eq!(bob.welcome().inbox, Some(1));
    assert_eq!(message(&mut bob).await.body, json!(text));
}

/// A node without an inbox says so: no `inbox` in the welcome, no
/// `stored` in acks, and 404 from the inbox API.
#[tokio::test(start_paused = true)]
async fn without_an_inbox_store_is_ignored_as_in_version_1() {
    let bed = Bed::new();
    let node = bed.node("node", &["--api-key", KEY]).await;
    let mut alice = connect(&node, "alice").await;
    assert_eq!(alice.welcome().inbox, None);
    let ack = store(&mut alice, "bob", json!(1)).await;
    assert_eq!(
        (ack.status, ack.stored, ack.store_error),
        (AckStatus::Offline, None, None)
    );
    let bearer = format!("Bearer {KEY}");
    let (status, body) = http(
        &node,
        "GET",
        "/api/v1/inbox/bob",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(json(&body)["error"], "no_inbox");
}
