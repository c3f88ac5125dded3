//! Acks mode and resume (protocol v2): messages carry a `seq` the client
//! confirms; `delivered` waits for the confirmation; a session whose
//! connection is lost detaches, keeps what comes for it, and is taken back
//! on any node with its resume token, every message once, in order.

use crate::support::*;
use serde_json::json;
use std::time::Duration;
use switchboard::protocol::{AckStatus, OfflineReason, ReceiptStatus, ServerFrame};

use switchboard_client::{Client, ConnectOptions, Happening, Identity, ResumingClient};

const SECRET: [&str; 2] = ["--resume-secret", "resume-secret-for-tests"];

fn acks() -> ConnectOptions {
    ConnectOptions {
        acks: true,
        ..ConnectOptions::default()
    }
}

async fn open(node: &impl Reach, name: &str, options: &ConnectOptions) -> Client {
    within(connect_with(node, Identity::Name(name.into()), options))
        .await
        .unwrap()
}

/// The node `client`'s default device's session is on, as the shared
/// presence store has it.
async fn node_of(bed: &Bed, client: &str) -> Option<String> {
    let client = switchboard::protocol::ClientId::parse(client).unwrap();
    let records = bed.presence().lookup(&client).await.unwrap();
    records.first().map(|r| r.node.to_string())
}

/// Bob opens an acks-mode session on `node` and drops it: detached there.
/// Returns what resuming it takes (the options with its token, from
/// nothing received) and its session id.
async fn detached_bob(node: &crate::support::bed::BedNode) -> (ConnectOptions, uuid::Uuid) {
    let bob = open(node, "bob", &acks()).await;
    let token = bob.welcome().resume_token.clone().expect("a resume token");
    let session = bob.welcome().session_id;
    drop(bob);
    eventually("bob's session detaches", || async {
        metric(node, "switchboard_sessions_detached").await == 1.0
    })
    .await;
    let resume = ConnectOptions {
        acks: true,
        resume: Some((token, 0)),
        ..ConnectOptions::default()
    };
    (resume, session)
}

/// The next receipt: (status, reason).
async fn receipt(client: &mut Client) -> (ReceiptStatus, Option<OfflineReason>) {
    match next_frame(client).await {
        ServerFrame::Receipt { status, reason, .. } => (status, reason),
        other => panic!("expected a receipt, got {other:?}"),
    }
}

/// Sends `n` messages numbered from `from`, with receipts, and reads their
/// acks; receipts that arrive meanwhile are counted into `receipts`.
async fn send_counting(
    alice: &mut Client,
    from: u64,
    n: u64,
    receipts: &mut Vec<(ReceiptStatus, Option<OfflineReason>)>,
) {
    for i in from..from + n {
        alice
            .send("bob", &json!(i), Some(&i.to_string()), true)
            .await
            .unwrap();
        loop {
            match next_frame(alice).await {
                ServerFrame::Ack(ack) => {
                    assert_ne!(ack.status, AckStatus::Offline, "{ack:?}");
                    break;
                }
                ServerFrame::Receipt { status, reason, .. } => receipts.push((status, reason)),
                other => panic!("alice got {other:?}"),
            }
        }
    }
}

/// [`send_counting`] where no receipt may come meanwhile.
async fn send_numbered(alice: &mut Client, from: u64, n: u64) {
    let mut receipts = Vec::new();
    send_counting(alice, from, n, &mut receipts).await;
    assert_eq!(receipts, [], "no receipt was due");
}

#[tokio::test(start_paused = true)]
async fn in_acks_mode_delivered_waits_for_the_clients_confirmation() {
    let bed = Bed::new();
    let node = bed.node("node", &[]).await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = open(&node, "bob", &acks()).await;
    assert!(
        bob.welcome().resume_token.is_some(),
        "a lone node offers resume"
    );
    send_numbered(&mut alice, 1, 2).await;
    let (first, second) = (message(&mut bob).await, message(&mut bob).await);
    assert_eq!((first.seq, second.seq), (Some(1), Some(2)));
    assert_eq!((first.body, second.body), (json!(1), json!(2)));
    // Written, not confirmed: no receipt yet (the pong comes first).
    alice.ping(Some("p")).await.unwrap();
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Pong { .. }
    ));
    bob.confirm(1).await.unwrap();
    assert_eq!(receipt(&mut alice).await, (ReceiptStatus::Delivered, None));
    alice.ping(Some("q")).await.unwrap();
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Pong { .. }
    ));
    bob.confirm(2).await.unwrap();
    assert_eq!(receipt(&mut alice).await, (ReceiptStatus::Delivered, None));
}

/// Bob's connection to node-b is cut (no close frame) while alice sends;
/// he resumes on node-a with his token and the last `seq` he read: every
/// message arrives exactly once, in order, and alice hears `delivered`
/// for each, never `offline`.
#[tokio::test(start_paused = true)]
async fn a_cut_connection_resumes_on_another_node_with_every_message_once_in_order() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&SECRET).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = open(&b, "bob", &acks()).await;
    let token = bob.welcome().resume_token.clone().expect("a resume token");
    let session = bob.welcome().session_id;

    send_numbered(&mut alice, 1, 10).await;
    let mut got = Vec::new();
    for _ in 0..6 {
        let m = message(&mut bob).await;
        got.push((m.seq.unwrap(), m.body.as_u64().unwrap()));
    }
    bob.confirm(3).await.unwrap();
    let mut receipts = Vec::new();
    while receipts.len() < 3 {
        receipts.push(receipt(&mut alice).await);
    }
    // The connection goes away without a close: the session detaches on
    // node-b, keeping 4..10, and what comes next.
    drop(bob);
    send_counting(&mut alice, 11, 10, &mut receipts).await;

    let upto = 6;
    let options = ConnectOptions {
        acks: true,
        resume: Some((token, upto)),
        ..ConnectOptions::default()
    };
    let mut bob = open(&a, "bob", &options).await;
    assert_eq!(bob.welcome().resumed, Some(true));
    assert_eq!(bob.welcome().session_id, session, "the same session");
    send_counting(&mut alice, 21, 5, &mut receipts).await;
    while got.len() < 25 {
        let m = message(&mut bob).await;
        got.push((m.seq.unwrap(), m.body.as_u64().unwrap()));
    }
    let expected: Vec<(u64, u64)> = (1..=25).map(|i| (i, i)).collect();
    assert_eq!(got, expected, "every message once, in order, numbered on");
    bob.confirm(25).await.unwrap();
    while receipts.len() < 25 {
        receipts.push(receipt(&mut alice).await);
    }
    assert!(
        receipts
            .iter()
            .all(|r| *r == (ReceiptStatus::Delivered, None)),
        "{receipts:?}"
    );
    // And the session lives on at node-a, alice's node: local now.
    alice.send("bob", &json!(26), None, false).await.unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Local);
    assert_eq!(message(&mut bob).await.seq, Some(26));
    assert_eq!(node_of(&bed, "bob").await.as_deref(), Some("node-a"));
    // Counted: one resume on node-a, one hand-over timed, none detached.
    assert_eq!(
        metric(&a, "switchboard_resumes_total{result=\"ok\"}").await,
        1.0
    );
    assert_eq!(metric(&a, "switchboard_handover_seconds_count").await, 1.0);
    assert_eq!(metric(&b, "switchboard_sessions_detached").await, 0.0);
}

/// A resume whose take-over gets no answer in time (the holder is too
/// busy, as a draining node in a storm): the new node held the session in
/// its hub while it asked, so sends on that node landed there (`local`).
/// They are routed again when the take-over fails, never dropped with the
/// session: every message gets its receipt, and the client, resuming once
/// the holder answers, gets each once.
#[tokio::test(start_paused = true)]
async fn messages_that_reach_a_session_while_its_take_over_fails_are_not_lost() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&SECRET).await;
    let bob = open(&a, "bob", &acks()).await;
    let token = bob.welcome().resume_token.clone().expect("a resume token");
    drop(bob);
    eventually("bob's session detaches on node-a", || async {
        metric(&a, "switchboard_sessions_detached").await == 1.0
    })
    .await;
    let mut alice = connect(&b, "alice").await;

    bed.hold_requests_to("node-a");
    let resume = ConnectOptions {
        acks: true,
        resume: Some((token, 0)),
        ..ConnectOptions::default()
    };
    let attempt = connect_with(&b, Identity::Name("bob".into()), &resume);
    tokio::pin!(attempt);
    // Alice sends while node-b waits for node-a's answer.
    let (mut sent, mut statuses) = (0u64, Vec::new());
    let refused = loop {
        tokio::select! {
            refused = &mut attempt => break refused,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                sent += 1;
                alice.send("bob", &json!(sent), Some(&sent.to_string()), true).await.unwrap();
                statuses.push(ack_status(&mut alice).await);
            }
        }
    };
    let error = refused.err().expect("the resume is deferred");
    assert!(
        error.retry_after().is_some(),
        "503 with Retry-After: {error}"
    );
    assert!(
        statuses.contains(&AckStatus::Local),
        "a send landed in the waiting session: {statuses:?}"
    );
    assert!(!statuses.contains(&AckStatus::Offline), "{statuses:?}");

    // node-a answers now (to nobody) and keeps its answer for the retry.
    bed.release_requests().await;
    let mut bob = within(async {
        loop {
            match connect_with(&b, Identity::Name("bob".into()), &resume).await {
                Ok(bob) => break bob,
                Err(e) if e.retry_after().is_some() => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => panic!("bob cannot resume: {e}"),
            }
        }
    })
    .await;
    assert_eq!(bob.welcome().resumed, Some(true));
    // Every message is accounted for: delivered (bob got it, once) or,
    // for one that reached node-a after it handed the session over and
    // before bob asked again, `offline`.
    let (mut got, mut receipts) = (Vec::new(), std::collections::BTreeMap::new());
    while receipts.len() < sent as usize {
        tokio::select! {
            m = message(&mut bob) => {
                bob.confirm(m.seq.unwrap()).await.unwrap();
                got.push(m.body.as_u64().unwrap());
            }
            frame = next_frame(&mut alice) => match frame {
                ServerFrame::Receipt { id, status, .. } => {
                    let n: u64 = id.unwrap().parse().unwrap();
                    assert!(receipts.insert(n, status).is_none(), "one receipt for {n}");
                }
                other => panic!("alice got {other:?}"),
            },
        }
    }
    let delivered: Vec<u64> = receipts
        .iter()
        .filter(|(_, s)| **s == ReceiptStatus::Delivered)
        .map(|(n, _)| *n)
        .collect();
    got.sort_unstable();
    assert_eq!(got, delivered, "delivered means bob got it, once");
    let landed = statuses.iter().filter(|s| **s == AckStatus::Local).count();
    assert!(
        delivered.len() >= landed,
        "what landed in the waiting session reached bob: {receipts:?}"
    );
}

/// A take-over request published in the instant its holder is killed goes
/// to the dead node's subscription before the bus notices, and is never
/// answered. The resuming node pings the holder after 250 ms; told by the
/// bus that nobody listens for it, it gives the client a fresh session at
/// once rather than waiting out the 3 s and refusing it 503.
#[tokio::test(start_paused = true)]
async fn a_take_over_sent_as_its_holder_dies_ends_when_the_bus_says_it_is_gone() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&SECRET).await;
    let (resume, _) = detached_bob(&a).await;

    bed.swallow_next_request_to("node-a");
    bed.unlisten("node-a");
    let started = tokio::time::Instant::now();
    let bob = connect_with(&b, Identity::Name("bob".into()), &resume)
        .await
        .expect("a fresh session, not a 503");
    assert_eq!(bob.welcome().resumed, Some(false));
    let waited = started.elapsed();
    assert!(
        waited < switchboard::routing::resumption::TAKEOVER_TIMEOUT,
        "waited {waited:?}"
    );
}

/// The same, but the node asked had passed the session on (a drained node
/// that has exited) before the request reached it: the field now names
/// another node. That is no reason for a fresh session, which would forfeit
/// what is kept: the client is told to retry (503 with `Retry-After`), and
/// finds the session where the field says.
#[tokio::test(start_paused = true)]
async fn a_take_over_whose_holder_left_after_passing_the_session_on_is_retried() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&SECRET).await;
    let (resume, session) = detached_bob(&a).await;

    bed.swallow_next_request_to("node-a");
    bed.unlisten("node-a");
    let bob_id = switchboard::protocol::ClientId::parse("bob").unwrap();
    let attempt = connect_with(&b, Identity::Name("bob".into()), &resume);
    let passed_on = async {
        eventually("node-b is taking bob's session over", || async {
            b.node().router().hub().sessions(&bob_id).is_some()
        })
        .await;
        // What node-a's pass-on writes, before node-b's ping finds it gone.
        let record = switchboard::presence::PresenceRecord {
            device: switchboard::protocol::DeviceId::parse("default").unwrap(),
            node: switchboard::protocol::NodeId::parse("node-c").unwrap(),
            session,
            since: switchboard::protocol::now_ms(),
        };
        bed.presence().register(&bob_id, &record, 10).await.unwrap();
    };
    let (refused, ()) = tokio::join!(attempt, passed_on);
    let error = refused.err().expect("deferred, not a fresh session");
    assert!(
        error.retry_after().is_some(),
        "503 with Retry-After: {error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_that_ends_answers_the_kept_messages_offline_resume_expired() {
    // An upkeep tick every 200 ms, for the kept-messages gauge.
    let bed = Bed::new();
    let node = bed
        .node(
            "node",
            &["--resume-window-ms", "2000", "--node-ttl-ms", "600"],
        )
        .await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = open(&node, "bob", &acks()).await;
    send_numbered(&mut alice, 1, 2).await;
    message(&mut bob).await;
    drop(bob);
    send_numbered(&mut alice, 3, 1).await;
    eventually("the gauge counts the 3 kept messages", || async {
        metric(&node, "switchboard_messages_kept").await == 3.0
    })
    .await;
    assert_eq!(metric(&node, "switchboard_sessions_detached").await, 1.0);
    for _ in 0..3 {
        assert_eq!(
            receipt(&mut alice).await,
            (ReceiptStatus::Offline, Some(OfflineReason::ResumeExpired))
        );
    }
    // Gone for good: the next send finds nobody.
    alice.send("bob", &json!(4), None, false).await.unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Offline);
}

#[tokio::test(start_paused = true)]
async fn a_token_resumes_only_its_own_clients_session() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&SECRET).await;
    let bob = open(&a, "bob", &acks()).await;
    let token = bob.welcome().resume_token.clone().unwrap();
    drop(bob);
    let with = |token: &str, device: Option<&str>| ConnectOptions {
        acks: true,
        device: device.map(Into::into),
        resume: Some((token.to_owned(), 0)),
        ..ConnectOptions::default()
    };
    // Someone else with bob's token, bob on another device, and a forged
    // token (on a third device: a fresh session of bob's own device would
    // replace the detached one): each gets a fresh session, and bob's
    // stays detached.
    for (name, options) in [
        ("mallory", with(&token, None)),
        ("bob", with(&token, Some("other"))),
        (
            "bob",
            with("eyJhbGciOiJIUzI1NiJ9.e30.forged", Some("third")),
        ),
    ] {
        let client = open(&b, name, &options).await;
        assert_eq!(client.welcome().resumed, Some(false), "{name}");
        client.close().await.unwrap();
    }
    let bob = open(&b, "bob", &with(&token, None)).await;
    assert_eq!(bob.welcome().resumed, Some(true));
    assert!(metric(&b, "switchboard_resumes_total{result=\"rejected\"}").await >= 3.0);
}

/// A client that reads but never confirms fills its kept messages: it is
/// closed 4008 like any slow consumer, detached, and when the window ends
/// its messages are answered `offline`.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_confirms_is_closed_4008_then_expires() {
    let bed = Bed::new();
    let node = bed
        .node(
            "node",
            &["--session-queue", "4", "--resume-window-ms", "300"],
        )
        .await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = open(&node, "bob", &acks()).await;
    // Four fit (written, never confirmed); the fifth finds the queue full
    // and the session closing, as does the sixth: not handed over, so
    // acked `offline`.
    let mut acks = Vec::new();
    for i in 0..6 {
        alice.send("bob", &json!(i), None, true).await.unwrap();
        acks.push(ack_status(&mut alice).await);
    }
    use AckStatus::{Local, Offline};
    assert_eq!(acks, [Local, Local, Local, Local, Offline, Offline]);
    assert_eq!(closed_with(&mut bob).await, Some(4008));
    // The four kept are answered when the window ends.
    for _ in 0..4 {
        assert_eq!(
            receipt(&mut alice).await,
            (ReceiptStatus::Offline, Some(OfflineReason::ResumeExpired))
        );
    }
}

/// Without acks mode nothing changes: no `seq`, no token, a dropped
/// connection ends the session.
#[tokio::test(start_paused = true)]
async fn without_acks_mode_sessions_are_as_before() {
    let bed = Bed::new();
    let node = bed.node("node", &[]).await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = connect(&node, "bob").await;
    assert_eq!(bob.welcome().resume_token, None);
    alice.send("bob", &json!(1), None, true).await.unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Local);
    assert_eq!(message(&mut bob).await.seq, None);
    assert_eq!(receipt(&mut alice).await, (ReceiptStatus::Delivered, None));
    drop(bob);
    eventually("bob is gone", || {
        let node = &node;
        async move { node.node().sessions() == 1 }
    })
    .await;
    alice.send("bob", &json!(2), None, false).await.unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Offline);
}

/// The Rust client's `ResumingClient`: bob's node drains (SIGTERM's path,
/// 1001), and bob resumes on the other node by himself, backoff and all;
/// alice's messages before, during and after arrive once, in order, and
/// each is confirmed (`delivered`).
#[tokio::test]
async fn the_rust_client_resumes_by_itself_when_its_node_drains() {
    let Cluster {
        redis: _r,
        nats: _n,
        a,
        b,
    } = Cluster::start_with(&SECRET).await;
    let mut alice = connect(&a, "alice").await;
    let urls = vec![ws_url(&b), ws_url(&a)];
    let mut bob = ResumingClient::connect(
        urls,
        || Identity::Name("bob".into()),
        ConnectOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(bob.welcome().node, "node-b");
    let mut receipts = Vec::new();
    send_counting(&mut alice, 1, 5, &mut receipts).await;
    let mut got = Vec::new();
    let mut reconnected = None;
    while got.len() < 5 {
        match within(bob.next()).await.unwrap() {
            Happening::Frame(ServerFrame::Message(m)) => got.push(m.body.as_u64().unwrap()),
            other => panic!("bob: {other:?}"),
        }
    }
    let draining =
        tokio::spawn(b.shutdown_by(tokio::time::Instant::now() + Duration::from_secs(8)));
    send_counting(&mut alice, 6, 5, &mut receipts).await;
    while got.len() < 10 {
        match within(bob.next()).await.unwrap() {
            Happening::Frame(ServerFrame::Message(m)) => got.push(m.body.as_u64().unwrap()),
            Happening::Reconnected { resumed, node } => reconnected = Some((resumed, node)),
            Happening::Frame(_) => {}
        }
    }
    assert_eq!(got, (1..=10).collect::<Vec<_>>());
    assert_eq!(reconnected, Some((true, "node-a".to_owned())));
    within(draining).await.unwrap();
    // Confirmed lazily, every one: ten `delivered`, nothing else.
    let reader = tokio::spawn(async move {
        loop {
            let _ = bob.next().await;
        }
    });
    while receipts.len() < 10 {
        receipts.push(receipt(&mut alice).await);
    }
    assert!(
        receipts
            .iter()
            .all(|r| *r == (ReceiptStatus::Delivered, None)),
        "{receipts:?}"
    );
    reader.abort();
}

/// A draining node whose detached session was not resumed in time passes
/// it on to another node: bob, who comes back only after his node is gone
/// (to the node started in its place, as a page served by it would), still
/// gets every message, once, in order, and alice hears `delivered`.
#[tokio::test(start_paused = true)]
async fn a_session_not_resumed_during_a_drain_is_passed_on_and_resumed_later() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&SECRET).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = open(&b, "bob", &acks()).await;
    let token = bob.welcome().resume_token.clone().unwrap();
    send_numbered(&mut alice, 1, 3).await;
    for _ in 0..3 {
        message(&mut bob).await;
    }
    // node-b drains; bob stays away until it has gone.
    within(b.shutdown(Duration::from_secs(8))).await;
    assert_eq!(closed_with(&mut bob).await, Some(1001));
    assert_eq!(
        node_of(&bed, "bob").await.as_deref(),
        Some("node-a"),
        "passed on to node-a"
    );
    send_numbered(&mut alice, 4, 2).await;

    // The node that takes node-b's place.
    let c = bed.node("node-c", &SECRET).await;
    let options = ConnectOptions {
        acks: true,
        resume: Some((token, 0)),
        ..ConnectOptions::default()
    };
    let mut bob = open(&c, "bob", &options).await;
    assert_eq!(bob.welcome().resumed, Some(true));
    let mut got = Vec::new();
    for _ in 0..5 {
        let m = message(&mut bob).await;
        got.push((m.seq.unwrap(), m.body.as_u64().unwrap()));
    }
    assert_eq!(got, (1..=5).map(|i| (i, i)).collect::<Vec<_>>());
    bob.confirm(5).await.unwrap();
    for _ in 0..5 {
        assert_eq!(receipt(&mut alice).await, (ReceiptStatus::Delivered, None));
    }
}

/// bob (acks mode) on node-a holds message 1 from alice (on node-b),
/// unconfirmed; node-a drains, and its pass-on of bob's session to node-b
/// is held (node-b too busy to answer). `meanwhile` runs once node-b has
/// the request waiting; then node-b gets it, after node-a gave up waiting.
async fn pass_on_held_while<F: std::future::Future<Output = ()>>(
    bed: &Bed,
    a: crate::support::bed::BedNode,
    alice: &mut Client,
    meanwhile: F,
) {
    let mut bob = open(&a, "bob", &acks()).await;
    send_numbered(alice, 1, 1).await;
    assert_eq!(message(&mut bob).await.seq, Some(1));
    bed.hold_requests_to("node-b");
    let drained = async {
        within(a.shutdown(Duration::from_secs(8))).await;
    };
    let then = async {
        eventually("node-a passes bob's session on", || async {
            bed.held_requests() == 1
        })
        .await;
        meanwhile.await;
    };
    tokio::join!(drained, then);
    bed.release_requests().await;
    drop(bob);
}

/// A draining node passes a session on after its client gave up on it
/// and connected afresh, to the very node it is on: the fresh session
/// stays (no 4001), and the old one is not adopted.
#[tokio::test(start_paused = true)]
async fn a_session_passed_on_to_where_its_client_started_afresh_is_not_adopted() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&SECRET).await;
    let mut alice = connect(&b, "alice").await;
    let fresh = std::sync::Mutex::new(None);
    pass_on_held_while(&bed, a, &mut alice, async {
        *fresh.lock().unwrap() = Some(open(&b, "bob", &acks()).await);
    })
    .await;
    let mut bob = fresh.into_inner().unwrap().unwrap();
    let session = bob.welcome().session_id;

    // The fresh session lives on and is where bob's messages go.
    send_numbered(&mut alice, 2, 1).await;
    let m = message(&mut bob).await;
    assert_eq!(m.body.as_u64(), Some(2), "no 4001: the fresh session lives");
    bob.confirm(m.seq.unwrap()).await.unwrap();
    let client = switchboard::protocol::ClientId::parse("bob").unwrap();
    let records = bed.presence().lookup(&client).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].node.as_str(), records[0].session),
        ("node-b", session)
    );
    // Message 1 stayed with the old session: alice hears `offline`.
    let mut receipts = vec![receipt(&mut alice).await, receipt(&mut alice).await];
    receipts.sort_by_key(|r| r.0 == ReceiptStatus::Offline);
    assert_eq!(receipts[0], (ReceiptStatus::Delivered, None));
    assert_eq!(receipts[1].0, ReceiptStatus::Offline, "{receipts:?}");
}

/// The same when the fresh session is on another node: the adopting node
/// finds the device's field naming it, and leaves it be.
#[tokio::test(start_paused = true)]
async fn a_session_passed_on_after_its_client_started_afresh_elsewhere_is_not_adopted() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&SECRET).await;
    let mut alice = connect(&b, "alice").await;
    let client = switchboard::protocol::ClientId::parse("bob").unwrap();
    // bob's fresh session on a node of its own (node-z), as its field has it.
    let fresh = switchboard::presence::PresenceRecord {
        device: switchboard::protocol::DeviceId::parse("default").unwrap(),
        node: switchboard::protocol::NodeId::parse("node-z").unwrap(),
        session: uuid::Uuid::new_v4(),
        since: switchboard::protocol::now_ms(),
    };
    pass_on_held_while(&bed, a, &mut alice, async {
        bed.presence().register(&client, &fresh, 10).await.unwrap();
    })
    .await;
    // node-b has answered the held request by now: the field is node-z's.
    let records = bed.presence().lookup(&client).await.unwrap();
    assert_eq!(records, vec![fresh]);
    assert_eq!(
        metric(&b, "switchboard_sessions_detached").await,
        0.0,
        "nothing adopted"
    );
    let (status, _) = receipt(&mut alice).await;
    assert_eq!(status, ReceiptStatus::Offline, "message 1 is answered");
}

/// A draining node passes a session on to the very node its client is
/// resuming on, while that node still asks the draining one for it: the
/// adoption is not refused for the resume's own handle (same session, not
/// a newer one), and the client, asking again, resumes it with what it
/// kept.
#[tokio::test(start_paused = true)]
async fn a_session_passed_on_while_its_resume_asks_for_it_is_resumed() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&SECRET).await;
    let mut alice = connect(&b, "alice").await;
    let mut bob = open(&a, "bob", &acks()).await;
    let token = bob.welcome().resume_token.clone().unwrap();
    send_numbered(&mut alice, 1, 1).await;
    assert_eq!(message(&mut bob).await.seq, Some(1));
    // node-a drains; bob asks node-b to resume at once, and node-b's
    // request to node-a gets no answer in time; node-a meanwhile passes
    // the session on to node-b.
    bed.hold_requests_to("node-a");
    let resume = ConnectOptions {
        acks: true,
        resume: Some((token, 0)),
        ..ConnectOptions::default()
    };
    let drained = async { within(a.shutdown(Duration::from_secs(8))).await };
    let asked = async {
        assert_eq!(closed_with(&mut bob).await, Some(1001));
        // Late enough that node-a passes the session on (once its wait
        // for resumes, DRAIN_WAIT_FOR_RESUMES + the spread, is over) while
        // node-b's request is still unanswered.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let first = connect_with(&b, Identity::Name("bob".into()), &resume).await;
        assert!(
            first.as_ref().err().and_then(|e| e.retry_after()).is_some(),
            "deferred, not refused"
        );
    };
    tokio::join!(drained, asked);
    bed.release_requests().await;
    let mut bob = open(&b, "bob", &resume).await;
    assert_eq!(bob.welcome().resumed, Some(true), "adopted, then resumed");
    let m = message(&mut bob).await;
    assert_eq!((m.seq, m.body.as_u64()), (Some(1), Some(1)));
    bob.confirm(1).await.unwrap();
    assert_eq!(receipt(&mut alice).await, (ReceiptStatus::Delivered, None));
}

/// A detached session keeps its session slot: connecting and dropping
/// cannot pile detached sessions up beyond `--max-sessions`. The slot comes
/// back when the window ends.
#[tokio::test(start_paused = true)]
async fn a_detached_session_counts_against_max_sessions_until_it_ends() {
    let bed = Bed::new();
    let node = bed
        .node(
            "node",
            &["--max-sessions", "2", "--resume-window-ms", "500"],
        )
        .await;
    let bob = open(&node, "bob", &acks()).await;
    let _alice = connect(&node, "alice").await;
    drop(bob);
    eventually("bob is detached", || async {
        metric(&node, "switchboard_sessions_detached").await == 1.0
    })
    .await;
    match connect_with(
        &node,
        Identity::Name("carol".into()),
        &ConnectOptions::default(),
    )
    .await
    {
        Err(switchboard_client::ClientError::Refused { status, body, .. }) => {
            assert_eq!(status, 503);
            assert!(body.contains("at_capacity"), "{body}");
        }
        other => panic!(
            "carol was let in beside a detached session: {:?}",
            other.map(|_| ())
        ),
    }
    // The window ends: the slot is free again.
    eventually("carol gets in", || async {
        connect_with(
            &node,
            Identity::Name("carol".into()),
            &ConnectOptions::default(),
        )
        .await
        .is_ok()
    })
    .await;
}
