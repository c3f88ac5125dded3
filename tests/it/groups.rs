//! Groups (protocol v2): a send to a group reaches every session of every
//! member but the sending one, with one hop per node that holds any; the
//! ack counts each branch; members are kept through the API, in the
//! presence store, and changes reach every node.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;
use switchboard::protocol::{
    AckFrame, AckStatus, Envelope, ErrorCode, Hop, OfflineReason, ReceiptStatus, ServerFrame,
};
use switchboard::routing::MEMBERS_TTL;
use switchboard_client::{Client, To};

const KEY: &str = "group-key";
const AUTH: (&str, &str) = ("Authorization", "Bearer group-key");

async fn add(node: &impl Reach, group: &str, client: &str) -> u16 {
    let path = format!("/api/v1/groups/{group}/members/{client}");
    http(node, "PUT", &path, &[AUTH], None).await.0
}

async fn remove(node: &impl Reach, group: &str, client: &str) -> u16 {
    let path = format!("/api/v1/groups/{group}/members/{client}");
    http(node, "DELETE", &path, &[AUTH], None).await.0
}

async fn send_group(client: &mut Client, group: &str, body: serde_json::Value, id: &str) {
    client
        .send_to(To::Group(group), &body, Some(id), false, false)
        .await
        .unwrap();
}

/// (local, remote, offline, nodes) of a group ack.
fn counts(ack: &AckFrame) -> (u32, u32, u32, u32) {
    assert_eq!(ack.status, AckStatus::Fanout, "{ack:?}");
    assert_eq!(ack.sessions, None, "a group ack counts branches instead");
    (
        ack.local.unwrap(),
        ack.remote.unwrap(),
        ack.offline.unwrap(),
        ack.nodes.unwrap(),
    )
}

/// Six members over three nodes: alice sends from her laptop on node-a
/// (her tab is on node-b), bob is on node-a, carol on node-b on two
/// devices, dave and erin on node-c, frank offline.
#[tokio::test(start_paused = true)]
async fn a_group_send_takes_one_hop_per_node_and_reaches_every_session_once() {
    let bed = Bed::new();
    let flags = ["--api-key", KEY];
    let (a, b, c) = (
        bed.node("node-a", &flags).await,
        bed.node("node-b", &flags).await,
        bed.node("node-c", &flags).await,
    );
    for member in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        assert_eq!(add(&a, "team", member).await, 204);
    }
    let mut laptop = on_device(&a, "alice", "laptop").await;
    let mut tab = on_device(&b, "alice", "tab").await;
    let mut bob = connect(&a, "bob").await;
    let mut carol_phone = on_device(&b, "carol", "phone").await;
    let mut carol_pc = on_device(&b, "carol", "pc").await;
    let mut dave = connect(&c, "dave").await;
    let mut erin = connect(&c, "erin").await;
    let (mut hops_b, mut hops_c) = (bed.watch("node-b"), bed.watch("node-c"));

    send_group(&mut laptop, "team", json!("first"), "g1").await;
    let first = next_ack(&mut laptop).await;
    assert_eq!(first.id.as_deref(), Some("g1"));
    // bob here; alice's tab and carol's two devices on b, dave and erin on
    // c; frank offline; alice's laptop (the sender) not counted.
    assert_eq!(counts(&first), (1, 5, 1, 2));
    send_group(&mut laptop, "team", json!("second"), "g2").await;
    let second = next_ack(&mut laptop).await;
    assert_eq!(counts(&second), (1, 5, 1, 2));

    // Every session gets each message once, in order, as a group message;
    // the tab is a member's device like any other (not a carbon).
    for session in [
        &mut tab,
        &mut bob,
        &mut carol_phone,
        &mut carol_pc,
        &mut dave,
        &mut erin,
    ] {
        for (ack, body) in [(&first, "first"), (&second, "second")] {
            let m = message(session).await;
            assert_eq!(
                (
                    m.msg_id,
                    m.from.as_str(),
                    m.group.as_deref(),
                    m.to,
                    m.carbon
                ),
                (ack.msg_id, "alice", Some("team"), None, false)
            );
            assert_eq!(m.body, json!(body));
        }
    }
    // The sending session got nothing: the next thing it hears is bob.
    bob.send("alice", &json!("after"), None, false)
        .await
        .unwrap();
    assert_eq!(
        ack_status(&mut bob).await,
        AckStatus::Remote,
        "laptop and tab"
    );
    assert_eq!(message(&mut laptop).await.body, json!("after"));

    // What was published to each node held exactly one hop per send (the
    // bus keeps one publisher's order, so the second message's hop closes
    // the count of the first's).
    for (hops, sessions) in [(&mut hops_b, 3), (&mut hops_c, 2)] {
        let mut seen = Vec::new();
        while !seen.iter().any(|(id, _)| *id == second.msg_id) {
            let raw = within(hops.recv()).await.unwrap();
            for hop in Envelope::decode(&raw).unwrap().into_hops() {
                if let Hop::Message(m) = hop {
                    seen.push((m.msg_id, m.targets.len()));
                }
            }
        }
        assert_eq!(seen, [(first.msg_id, sessions), (second.msg_id, sessions)]);
    }
}

#[tokio::test(start_paused = true)]
async fn only_members_send_and_membership_changes_take_effect() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&["--api-key", KEY]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;

    // Not a member (the group does not even exist yet): not_member.
    send_group(&mut alice, "team", json!("hi"), "n1").await;
    match next_frame(&mut alice).await {
        ServerFrame::Error { code, id, .. } => {
            assert_eq!((code, id.as_deref()), (ErrorCode::NotMember, Some("n1")))
        }
        other => panic!("expected not_member, got {other:?}"),
    }
    // A member now: the change made on this node is in effect at once.
    assert_eq!(add(&a, "team", "alice").await, 204);
    assert_eq!(add(&a, "team", "bob").await, 204);
    assert_eq!(add(&a, "team", "bob").await, 204, "idempotent");
    send_group(&mut alice, "team", json!("hi"), "n2").await;
    assert_eq!(counts(&next_ack(&mut alice).await), (0, 1, 0, 1));
    assert_eq!(message(&mut bob).await.body, json!("hi"));

    // Removed on this node: the next send leaves bob out.
    assert_eq!(remove(&a, "team", "bob").await, 204);
    assert_eq!(remove(&a, "team", "bob").await, 204, "idempotent");
    send_group(&mut alice, "team", json!("not for bob"), "n3").await;
    assert_eq!(counts(&next_ack(&mut alice).await), (0, 0, 0, 0));

    // Added back through the other node: node-a, which has the members
    // cached, hears of it by broadcast, well within the bound.
    assert_eq!(add(&b, "team", "bob").await, 204);
    let changed = Instant::now();
    let mut i = 0;
    loop {
        send_group(&mut alice, "team", json!(i), "n4").await;
        if counts(&next_ack(&mut alice).await).1 == 1 {
            break;
        }
        assert!(changed.elapsed() < MEMBERS_TTL, "the change took too long");
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "a membership change reached the other node within {:?}",
        changed.elapsed()
    );
    assert_eq!(message(&mut bob).await.body, json!(i));

    // The members, read from the store.
    let (status, body) = http(&b, "GET", "/api/v1/groups/team", &[AUTH], None).await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&body),
        json!({"group": "team", "members": ["alice", "bob"]})
    );
    let (status, body) = http(&b, "GET", "/api/v1/groups/nobody", &[AUTH], None).await;
    assert_eq!(
        (status, json(&body)["error"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test(start_paused = true)]
async fn the_group_api_checks_ids_keys_and_the_member_cap() {
    let bed = Bed::new();
    let node = bed
        .node("node", &["--api-key", KEY, "--max-group-members", "2"])
        .await;
    assert_eq!(add(&node, "team", "a").await, 204);
    assert_eq!(add(&node, "team", "b").await, 204);
    let path = "/api/v1/groups/team/members/c";
    let (status, body) = http(&node, "PUT", path, &[AUTH], None).await;
    assert_eq!(
        (status, json(&body)["error"].as_str()),
        (409, Some("group_full"))
    );
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("--max-group-members")
    );
    // A member already in is not refused by the cap.
    assert_eq!(add(&node, "team", "b").await, 204);
    // Once one leaves, there is room again.
    assert_eq!(remove(&node, "team", "a").await, 204);
    assert_eq!(add(&node, "team", "c").await, 204);

    let (status, body) = http(
        &node,
        "PUT",
        "/api/v1/groups/te%20am/members/c",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(
        (status, json(&body)["error"].as_str()),
        (400, Some("invalid_group_id"))
    );
    let (status, body) = http(
        &node,
        "PUT",
        "/api/v1/groups/team/members/c%2Fd",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(
        (status, json(&body)["error"].as_str()),
        (400, Some("invalid_client_id"))
    );
    let (status, _) = http(&node, "PUT", path, &[], None).await;
    assert_eq!(status, 401);
    let (status, _) = http(
        &node,
        "GET",
        "/api/v1/groups/team",
        &[("Authorization", "Bearer wrong")],
        None,
    )
    .await;
    assert_eq!(status, 401);
    // Ids with '@' and ':' arrive percent-encoded.
    assert_eq!(add(&node, "ops%3Aeu", "eve%40example.com").await, 204);
    assert_eq!(remove(&node, "team", "b").await, 204);
    assert_eq!(add(&node, "team", "eve%40example.com").await, 204);
    let (_, body) = http(&node, "GET", "/api/v1/groups/team", &[AUTH], None).await;
    assert_eq!(json(&body)["members"], json!(["c", "eve@example.com"]));
}

#[tokio::test(start_paused = true)]
async fn an_api_send_to_a_group_fans_out_from_any_sender() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&["--api-key", KEY]).await;
    for member in ["bob", "carol"] {
        add(&a, "team", member).await;
    }
    let mut bob = connect(&a, "bob").await;
    let mut carol = connect(&b, "carol").await;
    let body = r#"{"from":"system","group":"team","body":{"text":"maintenance"}}"#;
    let (status, answer) = http(&a, "POST", "/api/v1/messages", &[AUTH], Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let answer = json(&answer);
    assert_eq!(
        (
            &answer["status"],
            &answer["local"],
            &answer["remote"],
            &answer["offline"],
            &answer["nodes"]
        ),
        (&json!("fanout"), &json!(1), &json!(1), &json!(0), &json!(1))
    );
    for member in [&mut bob, &mut carol] {
        let m = message(member).await;
        assert_eq!(
            (m.from.as_str(), m.group.as_deref()),
            ("system", Some("team"))
        );
        assert_eq!(m.msg_id.to_string(), answer["msg_id"].as_str().unwrap());
    }
    for bad in [
        r#"{"from":"system","group":"team","to":"bob","body":1}"#,
        r#"{"from":"system","body":1}"#,
    ] {
        let (status, answer) = http(&a, "POST", "/api/v1/messages", &[AUTH], Some(bad)).await;
        assert_eq!(
            (status, json(&answer)["error"].as_str()),
            (400, Some("bad_request"))
        );
    }
    let bad = r#"{"from":"system","group":"no group","body":1}"#;
    let (status, answer) = http(&a, "POST", "/api/v1/messages", &[AUTH], Some(bad)).await;
    assert_eq!(
        (status, json(&answer)["error"].as_str()),
        (400, Some("invalid_group_id"))
    );
}

/// Messages from one session to one group arrive at each recipient
/// session in send order, here and on another node.
#[tokio::test(start_paused = true)]
async fn group_messages_keep_their_order_at_every_session() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&["--api-key", KEY]).await;
    for member in ["alice", "bob", "carol"] {
        add(&a, "team", member).await;
    }
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&a, "bob").await;
    let mut carol = connect(&b, "carol").await;
    const N: u64 = 200;
    for i in 0..N {
        send_group(&mut alice, "team", json!(i), "o").await;
    }
    for _ in 0..N {
        assert_eq!(counts(&next_ack(&mut alice).await), (1, 1, 0, 1));
    }
    for member in [&mut bob, &mut carol] {
        for i in 0..N {
            assert_eq!(message(member).await.body, json!(i));
        }
    }
}

/// A node holding members' sessions is SIGKILLed: the sender hears
/// `offline` receipts for exactly the sessions that were there, and the
/// members elsewhere still get the message.
#[tokio::test]
async fn a_members_node_killed_mid_fanout_answers_exactly_its_sessions_offline() {
    let flags = ["--api-key", KEY, "--node-ttl-ms", "1000"];
    let Cluster { redis, nats, a, b } = Cluster::start_with(&flags).await;
    let mut c = new_node()
        .id("node-c")
        .on(&redis, &nats)
        .flags(&flags)
        .spawn()
        .await;
    for member in ["alice", "bob", "dave", "erin"] {
        add(&a, "team", member).await;
    }
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    let _dave = named(&c.ws_url(), "dave").await;
    let _erin_phone = on_device(&c, "erin", "phone").await;
    let _erin_pc = on_device(&c, "erin", "pc").await;
    send_group(&mut alice, "team", json!("warm"), "w").await;
    assert_eq!(counts(&next_ack(&mut alice).await), (0, 4, 0, 2));
    message(&mut bob).await;
    // Settled before the kill: node-c's `done` for it has come back (else
    // its sessions would be answered `offline` too, rightly: not known).
    let outcomes = a.node().router().outcomes().clone();
    eventually("the first send settled", || {
        let left = outcomes.in_flight();
        async move { left == 0 }
    })
    .await;

    c.kill();
    send_group(&mut alice, "team", json!("lost on c"), "k").await;
    let ack = next_ack(&mut alice).await;
    assert_eq!(counts(&ack), (0, 4, 0, 2), "c's sessions still believed");
    assert_eq!(message(&mut bob).await.msg_id, ack.msg_id);
    let mut lost = BTreeSet::new();
    while lost.len() < 3 {
        match next_frame(&mut alice).await {
            ServerFrame::Receipt {
                msg_id,
                status,
                to,
                device,
                reason,
                ..
            } => {
                assert_eq!(msg_id, ack.msg_id);
                assert_eq!(
                    (status, reason),
                    (ReceiptStatus::Offline, Some(OfflineReason::NodeDead))
                );
                assert!(lost.insert((to.unwrap(), device.unwrap())), "once each");
            }
            other => panic!("alice got {other:?}"),
        }
    }
    let expected: BTreeSet<(String, String)> =
        [("dave", "default"), ("erin", "pc"), ("erin", "phone")]
            .into_iter()
            .map(|(c, d)| (c.to_owned(), d.to_owned()))
            .collect();
    assert_eq!(lost, expected);
    // Nothing more: bob's session was delivered, and group sends get no
    // `delivered` receipts.
    alice.ping(Some("p")).await.unwrap();
    match next_frame(&mut alice).await {
        ServerFrame::Pong { id } => assert_eq!(id.as_deref(), Some("p")),
        other => panic!("alice got {other:?}"),
    }
}

/// A group's sessions on one node that do not fit in one bus message go in
/// several hops (parts); every session gets the message once, and every
/// part's `done` settles its own sessions, so nothing is left in flight to
/// be answered `offline` later.
#[tokio::test]
async fn a_hop_too_large_for_the_bus_is_split_into_parts() {
    let redis = Redis::start();
    let conf = certs::temp_dir("nats-small").join("nats.conf");
    std::fs::write(&conf, "max_payload: 4096\n").unwrap();
    let nats = Nats::start_args(&["-c", conf.to_str().unwrap()]);
    let flags = ["--api-key", KEY, "--max-frame-bytes", "2048"];
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
        .start()
        .await;
    const MEMBERS: usize = 120;
    add(&a, "big", "sender").await;
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let name = format!("member-with-a-long-name-{i:04}");
        add(&a, "big", &name).await;
        members.push(named(&ws_url(&b), &name).await);
    }
    let mut sender = connect(&a, "sender").await;
    send_group(&mut sender, "big", json!("x".repeat(1000)), "s").await;
    let ack = next_ack(&mut sender).await;
    let (local, remote, offline, hops) = counts(&ack);
    assert_eq!((local, remote as usize, offline), (0, MEMBERS, 0));
    assert!(
        hops > 1,
        "{MEMBERS} sessions in a 4 KiB bus message: split ({hops} hops)"
    );
    for member in &mut members {
        assert_eq!(message(member).await.msg_id, ack.msg_id);
    }
    let outcomes = a.node().router().outcomes().clone();
    eventually("every part settled", || {
        let left = outcomes.in_flight();
        async move { left == 0 }
    })
    .await;
    sender.ping(Some("p")).await.unwrap();
    assert!(matches!(
        next_frame(&mut sender).await,
        ServerFrame::Pong { .. }
    ));
}
