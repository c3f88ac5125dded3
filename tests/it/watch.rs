//! Presence for clients and signals (v3): who may watch whom, presence
//! frames as devices come and go, coalescing, invisibility, the end of a
//! watch the application takes away, signals and their limits. On the
//! test bed; the bus-message count and a node's crash run against real
//! NATS, Redis and a killed node process.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use switchboard::protocol::{
    ClientId, Envelope, ErrorCode, Hop, PresenceFrame, ServerFrame, Shown,
};
use switchboard_client::{Client, ClientError, ConnectOptions, Identity, To};

use crate::support::*;

const SECRET: &str = "watch-secret";
const KEY: &str = "watch-key";
const AUTH: (&str, &str) = ("Authorization", "Bearer watch-key");

/// Flags of a node that checks tokens and has the API.
fn auth_flags() -> Vec<&'static str> {
    vec!["--jwt-secret", SECRET, "--api-key", KEY]
}

fn token(name: &str) -> Identity {
    let client = ClientId::parse(name).unwrap();
    Identity::Token(switchboard::auth::mint_hs256(
        SECRET,
        &client,
        Duration::from_secs(3600),
    ))
}

/// `name` on `device`, with a token.
async fn as_client(node: &impl Reach, name: &str, device: &str) -> Client {
    let options = ConnectOptions {
        device: Some(device.into()),
        ..Default::default()
    };
    within(connect_with(node, token(name), &options))
        .await
        .unwrap_or_else(|e| panic!("{name} cannot connect: {e}"))
}

async fn api(node: &impl Reach, method: &str, path: &str) -> u16 {
    http(node, method, path, &[AUTH], None).await.0
}

/// The next frame, which must be a presence frame.
async fn presence(client: &mut Client) -> PresenceFrame {
    match next_frame(client).await {
        ServerFrame::Presence(p) => p,
        other => panic!("expected a presence frame, got {other:?}"),
    }
}

/// No frame arrives within `quiet` (on paused time: nothing is pending).
async fn nothing_within(client: &mut Client, quiet: Duration) {
    match tokio::time::timeout(quiet, client.next_event()).await {
        Err(_) => {}
        Ok(event) => panic!("expected nothing, got {event:?}"),
    }
}

/// alice watches bob (a contact) and carol (a shared group); mallory is
/// neither. bob comes online on node-b, adds a phone, leaves.
#[tokio::test(start_paused = true)]
async fn watchers_see_devices_come_and_go_and_strangers_are_denied() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&auth_flags()).await;
    assert_eq!(api(&a, "PUT", "/api/v1/contacts/alice/bob").await, 204);
    assert_eq!(
        api(&a, "PUT", "/api/v1/groups/team/members/alice").await,
        204
    );
    assert_eq!(
        api(&b, "PUT", "/api/v1/groups/team/members/carol").await,
        204
    );
    let mut alice = as_client(&a, "alice", "laptop").await;
    let watching = within(alice.watch(&["bob", "carol", "mallory"]))
        .await
        .unwrap();
    assert_eq!(watching.clients, ["bob", "carol"]);
    assert_eq!(watching.denied, ["mallory"]);
    for name in ["bob", "carol"] {
        let p = presence(&mut alice).await;
        assert_eq!((p.client_id.as_str(), p.state), (name, Shown::Offline));
        assert_eq!((p.devices.len(), p.last_seen), (0, None), "never seen");
    }

    let bob = as_client(&b, "bob", "default").await;
    let p = presence(&mut alice).await;
    assert_eq!(
        (p.client_id.as_str(), p.state, p.devices.as_slice()),
        ("bob", Shown::Online, &["default".to_owned()][..])
    );
    // A second device, within the coalescing window: it comes when the
    // window ends, showing both.
    let phone = as_client(&a, "bob", "phone").await;
    let p = presence(&mut alice).await;
    assert_eq!(p.devices, ["default", "phone"], "sorted");
    drop(phone);
    within(bob.close()).await.unwrap();
    let p = presence(&mut alice).await;
    assert_eq!((p.state, p.devices.len()), (Shown::Offline, 0));
    let seen = p.last_seen.expect("last_seen once seen");
    assert!(seen <= switchboard::protocol::now_ms());
    // Nothing about mallory, ever.
    let _mallory = as_client(&b, "mallory", "default").await;
    nothing_within(&mut alice, Duration::from_secs(3)).await;
}

/// Watching again right after an unwatch (a page switching back to a
/// conversation): the node's removal of its watch from the store, still on
/// its way, must not undo the new watch; bob's later change on the other
/// node still reaches alice.
#[tokio::test(start_paused = true)]
async fn watching_again_at_once_is_not_undone_by_the_unwatch_before_it() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let mut alice = connect(&a, "alice").await;
    within(alice.watch(&["bob"])).await.unwrap();
    assert_eq!(presence(&mut alice).await.state, Shown::Offline);
    // Both frames in one go: the unwatch's removal is in the background
    // when the watch's add is written.
    alice
        .send_raw(json!({"type":"unwatch","clients":["bob"],"id":"u"}).to_string())
        .await
        .unwrap();
    alice
        .send_raw(json!({"type":"watch","clients":["bob"],"id":"w"}).to_string())
        .await
        .unwrap();
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Ok { .. }
    ));
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Watching(_)
    ));
    assert_eq!(presence(&mut alice).await.state, Shown::Offline);
    let _bob = connect(&b, "bob").await;
    let p = presence(&mut alice).await;
    assert_eq!((p.client_id.as_str(), p.state), ("bob", Shown::Online));
}

/// A client that connects and disconnects a hundred times in two seconds
/// costs each watcher at most three frames, the last its final state.
#[tokio::test(start_paused = true)]
async fn a_flapping_client_is_coalesced_and_the_last_frame_is_current() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let mut alice = connect(&a, "alice").await;
    within(alice.watch(&["bob"])).await.unwrap();
    assert_eq!(presence(&mut alice).await.state, Shown::Offline);
    for _ in 0..100 {
        let bob = connect(&b, "bob").await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        within(bob.close()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut frames = Vec::new();
    while let Ok(event) = tokio::time::timeout(Duration::from_secs(3), alice.next_event()).await {
        match event.unwrap() {
            switchboard_client::Event::Frame(ServerFrame::Presence(p)) => frames.push(p),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!frames.is_empty() && frames.len() <= 3, "{frames:?}");
    assert_eq!(frames.last().unwrap().state, Shown::Offline, "{frames:?}");
    let coalesced = a.node().metrics().render();
    assert!(
        coalesced.contains("switchboard_presence_frames_total{result=\"coalesced\"}"),
        "{coalesced}"
    );
}

/// Invisible: watchers see `offline` with `last_seen` the moment it went
/// invisible, which does not move; messages still reach it; visible again
/// shows it online.
#[tokio::test(start_paused = true)]
async fn an_invisible_client_looks_offline_and_still_gets_messages() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    within(alice.watch(&["bob"])).await.unwrap();
    assert_eq!(presence(&mut alice).await.state, Shown::Online);

    tokio::time::sleep(Duration::from_secs(2)).await;
    within(bob.set_visible(false)).await.unwrap();
    let p = presence(&mut alice).await;
    assert_eq!((p.state, p.devices.len()), (Shown::Offline, 0));
    let since = p.last_seen.expect("last_seen: when it went invisible");
    // bob's other device coming and going changes nothing visible.
    let tablet = on_device(&b, "bob", "tablet").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    within(tablet.close()).await.unwrap();
    nothing_within(&mut alice, Duration::from_secs(3)).await;
    // Messages still arrive.
    let ack = within(alice.send_for_ack("bob", &json!("psst"), false))
        .await
        .unwrap();
    assert_ne!(ack.status, switchboard::protocol::AckStatus::Offline);
    assert_eq!(message(&mut bob).await.body, json!("psst"));
    // A watcher that starts watching now sees the same last_seen.
    let mut carol = connect(&a, "carol").await;
    within(carol.watch(&["bob"])).await.unwrap();
    let p = presence(&mut carol).await;
    assert_eq!((p.state, p.last_seen), (Shown::Offline, Some(since)));

    within(bob.set_visible(true)).await.unwrap();
    let p = presence(&mut alice).await;
    assert_eq!(
        (p.state, p.devices.as_slice()),
        (Shown::Online, &["default".to_owned()][..])
    );
}

/// A contact or a membership the application removes ends the watch
/// within a second: one last `offline` frame, then nothing.
#[tokio::test(start_paused = true)]
async fn a_removed_contact_or_membership_ends_the_watch() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&auth_flags()).await;
    assert_eq!(api(&a, "PUT", "/api/v1/contacts/alice/bob").await, 204);
    for member in ["alice", "carol"] {
        let path = format!("/api/v1/groups/team/members/{member}");
        assert_eq!(api(&a, "PUT", &path).await, 204);
    }
    let mut alice = as_client(&a, "alice", "default").await;
    let _bob = as_client(&b, "bob", "default").await;
    let _carol = as_client(&b, "carol", "default").await;
    let watching = within(alice.watch(&["bob", "carol"])).await.unwrap();
    assert_eq!(watching.clients, ["bob", "carol"]);
    for _ in 0..2 {
        assert_eq!(presence(&mut alice).await.state, Shown::Online);
    }
    // The contact goes, through the other node.
    let started = tokio::time::Instant::now();
    assert_eq!(api(&b, "DELETE", "/api/v1/contacts/alice/bob").await, 204);
    let p = presence(&mut alice).await;
    assert_eq!((p.client_id.as_str(), p.state), ("bob", Shown::Offline));
    assert_eq!(p.last_seen, None, "nothing revealed");
    assert!(started.elapsed() <= Duration::from_secs(1));
    // The membership goes.
    let started = tokio::time::Instant::now();
    assert_eq!(
        api(&b, "DELETE", "/api/v1/groups/team/members/carol").await,
        204
    );
    let p = presence(&mut alice).await;
    assert_eq!((p.client_id.as_str(), p.state), ("carol", Shown::Offline));
    assert!(started.elapsed() <= Duration::from_secs(1));
    // Neither is watched any more: their changes reach alice no more.
    let _bob_phone = as_client(&b, "bob", "phone").await;
    nothing_within(&mut alice, Duration::from_secs(3)).await;
    assert_eq!(a.node().watches().len(), 0);
}

/// A watcher whose node drains gets the current state again wherever its
/// client comes back: as a fresh session that watches again, or resumed
/// (acks mode) with its watches.
#[tokio::test(start_paused = true)]
async fn a_watcher_gets_the_current_state_after_its_node_restarts() {
    let bed = Bed::new();
    let flags = ["--resume-secret", "s3cr3t"];
    let (a, b) = bed.pair(&flags).await;
    let c = bed.node("node-c", &flags).await;
    let _bob = connect(&c, "bob").await;
    let acks = ConnectOptions {
        acks: true,
        ..Default::default()
    };
    let mut alice = within(connect_with(&a, Identity::Name("alice".into()), &acks))
        .await
        .unwrap();
    let token = alice.welcome().resume_token.clone().unwrap();
    within(alice.watch(&["bob"])).await.unwrap();
    assert_eq!(presence(&mut alice).await.state, Shown::Online);

    within(a.shutdown(Duration::from_secs(5))).await;
    assert_eq!(closed_with(&mut alice).await, Some(1001));
    let resume = ConnectOptions {
        resume: Some((token, 0)),
        ..acks
    };
    let mut alice = within(connect_with(&b, Identity::Name("alice".into()), &resume))
        .await
        .unwrap();
    assert_eq!(alice.welcome().resumed, Some(true));
    let p = presence(&mut alice).await;
    assert_eq!((p.client_id.as_str(), p.state), ("bob", Shown::Online));
    // The watch moved with the session: bob's change reaches it on b.
    let _phone = on_device(&c, "bob", "phone").await;
    let p = presence(&mut alice).await;
    assert_eq!(p.devices, ["default", "phone"]);
}

/// A typing signal crosses nodes; it gets no ack and no receipt, and is
/// never stored; a non-member's group signal with an `id` is refused.
#[tokio::test(start_paused = true)]
async fn signals_cross_nodes_unanswered_and_unkept() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&["--inbox", "memory", "--api-key", KEY]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    within(alice.signal(To::Client("bob"), &json!({"typing": true})))
        .await
        .unwrap();
    match next_frame(&mut bob).await {
        ServerFrame::Signal(s) => {
            assert_eq!((s.from.as_str(), s.to.as_deref()), ("alice", Some("bob")));
            assert_eq!(s.body, json!({"typing": true}));
        }
        other => panic!("expected the signal, got {other:?}"),
    }
    // No ack, no receipt: the next frame alice sees is her pong.
    alice.ping(Some("p")).await.unwrap();
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Pong { .. }
    ));
    // To someone offline: nothing stored, nothing said.
    within(alice.signal(To::Client("carol"), &json!({"typing": true})))
        .await
        .unwrap();
    let carol = connect(&a, "carol").await;
    assert_eq!(carol.welcome().inbox, Some(0));
    // A group signal needs membership; with an id, the refusal says so.
    alice
        .send_raw(r#"{"type":"signal","group":"team","body":{"typing":true},"id":"s1"}"#)
        .await
        .unwrap();
    match next_frame(&mut alice).await {
        ServerFrame::Error { code, id, .. } => {
            assert_eq!((code, id.as_deref()), (ErrorCode::NotMember, Some("s1")))
        }
        other => panic!("expected not_member, got {other:?}"),
    }
    // Members signal the group: every member session but the sending one.
    for member in ["alice", "bob"] {
        let path = format!("/api/v1/groups/team/members/{member}");
        assert_eq!(api(&a, "PUT", &path).await, 204);
    }
    within(alice.signal(To::Group("team"), &json!("hi all")))
        .await
        .unwrap();
    match next_frame(&mut bob).await {
        ServerFrame::Signal(s) => assert_eq!(s.group.as_deref(), Some("team")),
        other => panic!("expected the group signal, got {other:?}"),
    }
    alice.ping(Some("q")).await.unwrap();
    assert!(matches!(
        next_frame(&mut alice).await,
        ServerFrame::Pong { .. }
    ));
}

/// Beyond `--signal-rate`, signals are dropped and counted.
#[tokio::test(start_paused = true)]
async fn signals_beyond_the_rate_or_a_full_queue_are_dropped() {
    let bed = Bed::new();
    let flags = ["--signal-rate", "5", "--rate-limit", "0"];
    let (a, b) = bed.pair(&flags).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    for i in 0..20 {
        within(alice.signal(To::Client("bob"), &json!(i)))
            .await
            .unwrap();
    }
    let mut got = 0;
    while let Ok(event) = tokio::time::timeout(Duration::from_millis(500), bob.next_event()).await {
        assert!(matches!(
            event.unwrap(),
            switchboard_client::Event::Frame(ServerFrame::Signal(_))
        ));
        got += 1;
    }
    assert_eq!(got, 5, "the burst allowed, the rest dropped");
    let metrics = a.node().metrics().render();
    assert!(
        metrics.contains("switchboard_signals_total{result=\"rate_limited\"} 15"),
        "{metrics}"
    );
}

/// A recipient whose queue is more than half full gets no signal, while
/// its messages still arrive, in order. (Real time: the session must block
/// on its pipe while its queue fills.)
#[tokio::test]
async fn a_recipient_with_a_half_full_queue_gets_no_signals() {
    let bed = Bed::new();
    let flags = [
        "--session-queue",
        "8",
        "--rate-limit",
        "0",
        "--write-timeout-ms",
        "30000",
        "--hop-timeout-ms",
        "40000",
    ];
    let (a, b) = bed.pair(&flags).await;
    let mut alice = connect(&a, "alice").await;
    let mut carol = connect(&b, "carol").await;
    // Before anything queues: the signal arrives.
    within(alice.signal(To::Client("carol"), &json!("early")))
        .await
        .unwrap();
    // carol does not read: four 20 KB messages fill her pipe and block her
    // session's write; four more wait in her queue (half of 8).
    let big = "m".repeat(20_000);
    for i in 0..8 {
        let ack = within(alice.send_for_ack("carol", &json!({"n": i, "pad": big}), false))
            .await
            .unwrap();
        assert_eq!(ack.status, switchboard::protocol::AckStatus::Remote);
    }
    // Signals sent while her queue fills: once it is half full, each is
    // dropped (and counted).
    let dropped = "switchboard_signals_total{result=\"queue_full\"} 0";
    for _ in 0..100 {
        within(alice.signal(To::Client("carol"), &json!("late")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !b.node().metrics().render().contains(dropped) {
            break;
        }
    }
    assert!(
        !b.node().metrics().render().contains(dropped),
        "no signal was dropped"
    );
    let mut order = Vec::new();
    let mut signals = Vec::new();
    while order.len() < 8 {
        match next_frame(&mut carol).await {
            ServerFrame::Message(m) => order.push(m.body["n"].as_u64().unwrap()),
            ServerFrame::Signal(s) => signals.push(s.body),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(order, (0..8).collect::<Vec<_>>(), "every message, in order");
    assert_eq!(signals.first(), Some(&json!("early")));
}

/// Bad input gets a clear error and the session stays.
#[tokio::test(start_paused = true)]
async fn bad_watch_signal_and_visibility_frames_are_refused_clearly() {
    let bed = Bed::new();
    let node = bed.node("node", &["--max-watched", "3"]).await;
    let mut alice = connect(&node, "alice").await;
    let many: Vec<String> = (0..257).map(|i| format!("c{i}")).collect();
    let frame = json!({"type": "watch", "clients": many, "id": "w1"});
    let big = "x".repeat(2048);
    let cases: Vec<(String, ErrorCode)> = vec![
        (frame.to_string(), ErrorCode::BadFrame),
        (
            json!({"type":"watch","clients":["ok","bad id"],"id":"w2"}).to_string(),
            ErrorCode::InvalidRecipient,
        ),
        (
            json!({"type":"watch","clients":"bob","id":"w3"}).to_string(),
            ErrorCode::BadFrame,
        ),
        (
            json!({"type":"signal","to":"bob","body":big,"id":"s1"}).to_string(),
            ErrorCode::TooLarge,
        ),
        (
            json!({"type":"visibility","visible":"no","id":"v1"}).to_string(),
            ErrorCode::BadFrame,
        ),
        (
            json!({"type":"watch","clients":["a","b","c","d"],"id":"w4"}).to_string(),
            ErrorCode::TooManyWatched,
        ),
    ];
    for (frame, expected) in cases {
        alice.send_raw(frame.clone()).await.unwrap();
        match next_frame(&mut alice).await {
            ServerFrame::Error { code, message, .. } => {
                assert_eq!(code, expected, "{frame}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{frame}: expected an error, got {other:?}"),
        }
    }
    // A signal without an id is dropped silently, even when bad.
    alice
        .send_raw(json!({"type":"signal","to":"bad id","body":1}).to_string())
        .await
        .unwrap();
    // The session stays, and a proper watch works.
    let watching = within(alice.watch(&["bob"])).await.unwrap();
    assert_eq!(watching.clients, ["bob"]);
    assert_eq!(presence(&mut alice).await.state, Shown::Offline);
    match within(alice.watch(&["c1", "c2", "c3"])).await {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::TooManyWatched),
        other => panic!("expected too_many_watched, got {other:?}"),
    }
}

/// Bus messages for one presence change, counted by a plain NATS
/// subscriber on the node subjects: a client watched by 500 sessions on
/// two nodes costs one `watched` hop (to the one node that watches it and
/// is not where it connected); an unwatched client costs none.
#[tokio::test]
async fn one_bus_message_per_node_that_watches() {
    let cluster = Cluster::start().await;
    let mut watchers = Vec::new();
    for i in 0..500 {
        let node = if i % 2 == 0 { &cluster.a } else { &cluster.b };
        let mut client = connect(node, &format!("w{i}")).await;
        within(client.watch(&["bob"])).await.unwrap();
        watchers.push(client);
    }
    let (_watcher, mut hops) = nats_watch(&cluster.nats, "sb.node.*").await;
    let _bob = connect(&cluster.a, "bob").await;
    let _nobody = connect(&cluster.b, "nobody-watches-me").await;
    // Every watcher sees bob online: the change has gone everywhere.
    for client in &mut watchers {
        let p = presence(client).await; // the initial offline
        assert_eq!(p.state, Shown::Offline);
        let p = presence(client).await;
        assert_eq!(p.state, Shown::Online);
    }
    let mut watched_hops = Vec::new();
    while let Ok(Some(raw)) = tokio::time::timeout(Duration::from_millis(300), hops.next()).await {
        let envelope = Envelope::decode(&raw.payload).unwrap();
        for hop in envelope.into_hops() {
            if let Hop::Watched(w) = hop {
                watched_hops.push((raw.subject.to_string(), w.clients));
            }
        }
    }
    let bob = ClientId::parse("bob").unwrap();
    assert_eq!(
        watched_hops,
        [("sb.node.node-b".to_owned(), vec![bob])],
        "exactly one hop, to the other node, and none for the unwatched client"
    );
}

/// bob's node dies (SIGKILL): every watcher sees him `offline` within the
/// liveness bound, and nobody sees him `online` afterwards.
#[tokio::test]
async fn a_crashed_nodes_clients_turn_offline_for_their_watchers() {
    let redis = Redis::start();
    let nats = Nats::start();
    let ttl = ["--node-ttl-ms", "1500"];
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&ttl)
        .start()
        .await;
    let mut doomed = new_node()
        .id("node-c")
        .on(&redis, &nats)
        .flags(&ttl)
        .spawn()
        .await;
    let _bob = connect(&doomed, "bob").await;
    let mut alice = connect(&a, "alice").await;
    within(alice.watch(&["bob"])).await.unwrap();
    assert_eq!(presence(&mut alice).await.state, Shown::Online);
    let killed = std::time::Instant::now();
    doomed.kill();
    let p = presence(&mut alice).await;
    assert_eq!(p.state, Shown::Offline);
    let took = killed.elapsed();
    eprintln!("watcher saw offline {took:?} after the kill");
    // The bound: the TTL plus one heartbeat period (a third of it), and a
    // read.
    assert!(
        took < Duration::from_millis(1500 + 500 + 500),
        "offline after {took:?}"
    );
    // Then at most its last-seen (written by the node that swept the dead
    // node's records, after the offline went out at once), and never
    // online again.
    let quiet = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(event) = tokio::time::timeout_at(quiet, alice.next_event()).await {
        match event {
            Ok(switchboard_client::Event::Frame(ServerFrame::Presence(p))) => {
                assert_eq!((p.state, p.devices.len()), (Shown::Offline, 0));
                assert!(p.last_seen.is_some(), "a later frame adds last_seen");
            }
            other => panic!("expected nothing but last_seen, got {other:?}"),
        }
    }
}

/// Redis restarts empty (watcher entries and records lost) while bob
/// leaves: alice, watching from the other node, is shown him offline once
/// the nodes write back what they hold, and his return afterwards reaches
/// her (her node's watcher entry came back too).
#[tokio::test]
async fn watchers_are_right_again_after_redis_restarts_empty() {
    let redis = Redis::start();
    let nats = Nats::start();
    let ttl = ["--node-ttl-ms", "1500"];
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&ttl)
        .start()
        .await;
    let b = new_node()
        .id("node-b")
        .on(&redis, &nats)
        .flags(&ttl)
        .start()
        .await;
    let mut alice = connect(&a, "alice").await;
    let bob = connect(&b, "bob").await;
    within(alice.watch(&["bob"])).await.unwrap();
    assert_eq!(presence(&mut alice).await.state, Shown::Online);

    let port = redis.stop();
    within(bob.close()).await.unwrap();
    let redis = Redis::start_on(Some(port));
    let p = presence(&mut alice).await;
    assert_eq!((p.client_id.as_str(), p.state), ("bob", Shown::Offline));
    // bob can connect once node-b sees the store again.
    let _bob = loop {
        match Client::connect(&ws_url(&b), Identity::Name("bob".into())).await {
            Ok(client) => break client,
            Err(ClientError::Refused { status: 503, .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    let p = presence(&mut alice).await;
    assert_eq!((p.client_id.as_str(), p.state), ("bob", Shown::Online));
    drop(redis);
}

/// NATS restarts while bob leaves: the `watched` hop is lost with it, and
/// alice's node, reading everything it watches again once its bus is
/// back, shows him offline.
#[tokio::test]
async fn a_change_lost_with_a_nats_outage_is_shown_after_the_bus_returns() {
    let redis = Redis::start();
    let nats = Nats::start();
    let ttl = ["--node-ttl-ms", "1500"];
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&ttl)
        .start()
        .await;
    let b = new_node()
        .id("node-b")
        .on(&redis, &nats)
        .flags(&ttl)
        .start()
        .await;
    let mut alice = connect(&a, "alice").await;
    let bob = connect(&b, "bob").await;
    within(alice.watch(&["bob"])).await.unwrap();
    assert_eq!(presence(&mut alice).await.state, Shown::Online);

    let port = nats.stop();
    within(bob.close()).await.unwrap();
    let nats = Nats::start_on(Some(port));
    let p = presence(&mut alice).await;
    assert_eq!((p.client_id.as_str(), p.state), ("bob", Shown::Offline));
    drop(nats);
}

/// A watcher that does not read (its socket full, its session blocked on
/// the write) is not closed for presence frames, and gets only the latest
/// state of a watched client once it reads again: frames wait one per
/// watched client, each replaced by the next. (Real time: the session must
/// block on its pipe.)
#[tokio::test]
async fn a_watcher_that_stops_reading_gets_the_latest_state_only() {
    let bed = Bed::new();
    let flags = [
        "--presence-coalesce-ms",
        "1",
        "--rate-limit",
        "0",
        "--write-timeout-ms",
        "30000",
        "--hop-timeout-ms",
        "40000",
    ];
    let (a, b) = bed.pair(&flags).await;
    let mut alice = connect(&a, "alice").await;
    let mut sender = connect(&a, "sender").await;
    within(alice.watch(&["bob"])).await.unwrap();
    assert_eq!(presence(&mut alice).await.state, Shown::Offline);
    // alice stops reading: four 20 KB messages fill her pipe.
    let big = "m".repeat(20_000);
    for i in 0..4 {
        within(sender.send_for_ack("alice", &json!({"n": i, "pad": big}), false))
            .await
            .unwrap();
    }
    // bob comes and goes 30 times, then stays.
    for _ in 0..30 {
        let bob = connect(&b, "bob").await;
        within(bob.close()).await.unwrap();
    }
    let _bob = connect(&b, "bob").await;
    // alice reads again: her messages, then a handful of presence frames
    // at most (those written before her pipe filled, and the latest), the
    // last one online.
    let mut frames = Vec::new();
    let mut messages = 0;
    while messages < 4
        || frames
            .last()
            .is_none_or(|p: &PresenceFrame| p.state != Shown::Online)
    {
        match next_frame(&mut alice).await {
            ServerFrame::Message(_) => messages += 1,
            ServerFrame::Presence(p) => frames.push(p),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(frames.len() <= 4, "{} presence frames", frames.len());
    assert_eq!(frames.last().unwrap().devices, ["default"]);
    assert!(
        a.node()
            .metrics()
            .render()
            .contains("switchboard_slow_consumers_total 0")
    );
}

/// A reconnect storm: 200 watchers on a draining node come back on the
/// other at once and watch again; each gets its answer and exactly one
/// presence frame, the current state, and bob's next change reaches every
/// one of them.
#[tokio::test(start_paused = true)]
async fn watchers_reconnecting_at_once_each_get_the_current_state_once() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&[]).await;
    let c = bed.node("node-c", &[]).await;
    let _bob = connect(&c, "bob").await;
    let mut watchers = Vec::new();
    for i in 0..200 {
        let mut w = connect(&a, &format!("w{i}")).await;
        within(w.watch(&["bob"])).await.unwrap();
        assert_eq!(presence(&mut w).await.state, Shown::Online);
        watchers.push(w);
    }
    within(a.shutdown(Duration::from_secs(5))).await;
    for w in &mut watchers {
        assert_eq!(closed_with(w).await, Some(1001));
    }
    let names: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
    let mut back: Vec<Client> =
        futures_util::future::join_all(names.iter().map(|name| connect(&b, name))).await;
    let watched = futures_util::future::join_all(back.iter_mut().map(|w| w.watch(&["bob"]))).await;
    assert!(
        watched
            .iter()
            .all(|w| w.as_ref().is_ok_and(|w| w.clients == ["bob"]))
    );
    for w in &mut back {
        let p = presence(w).await;
        assert_eq!(
            (p.state, p.devices.as_slice()),
            (Shown::Online, &["default".to_owned()][..])
        );
    }
    let _phone = on_device(&c, "bob", "phone").await;
    for w in &mut back {
        let p = presence(w).await;
        assert_eq!(p.devices, ["default", "phone"]);
    }
    // Nothing more: one frame per change, per watcher.
    nothing_within(&mut back[0], Duration::from_secs(3)).await;
}

/// The contacts API: one way, sorted, capped by --max-contacts, and it
/// says what is wrong.
#[tokio::test(start_paused = true)]
async fn the_contacts_api_keeps_a_capped_sorted_list() {
    let bed = Bed::new();
    let node = bed
        .node("node", &["--api-key", KEY, "--max-contacts", "2"])
        .await;
    let list = async |who: &str| {
        let (status, body) = http(
            &node,
            "GET",
            &format!("/api/v1/contacts/{who}"),
            &[AUTH],
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    assert_eq!(
        list("alice").await,
        json!({"client_id": "alice", "contacts": []})
    );
    for contact in ["carol", "bob", "bob"] {
        assert_eq!(
            api(&node, "PUT", &format!("/api/v1/contacts/alice/{contact}")).await,
            204
        );
    }
    assert_eq!(
        list("alice").await["contacts"],
        json!(["bob", "carol"]),
        "sorted, once each"
    );
    assert_eq!(list("bob").await["contacts"], json!([]), "one way");
    let (status, body) = http(&node, "PUT", "/api/v1/contacts/alice/dave", &[AUTH], None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("too_many_contacts") && body.contains("--max-contacts"),
        "{body}"
    );
    assert_eq!(
        api(&node, "DELETE", "/api/v1/contacts/alice/bob").await,
        204
    );
    assert_eq!(
        api(&node, "DELETE", "/api/v1/contacts/alice/bob").await,
        204,
        "not one: still 204"
    );
    assert_eq!(
        api(&node, "PUT", "/api/v1/contacts/alice/dave").await,
        204,
        "room again"
    );
    assert_eq!(list("alice").await["contacts"], json!(["carol", "dave"]));
    // Bad input and no key.
    let (status, body) = http(
        &node,
        "PUT",
        "/api/v1/contacts/alice/no%20way",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_client_id"), "{body}");
    let (status, _) = http(&node, "GET", "/api/v1/contacts/alice", &[], None).await;
    assert_eq!(status, 401);
}
