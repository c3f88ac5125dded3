//! History, read state and sync (v3): `cseq` on acks and every copy, one
//! numbering for senders on several nodes, a device catching up on what it
//! missed, read receipts (coalesced, to whom), who may read, a history
//! store that fails, retention and deletion, bad input. The numbering and
//! the outage run against real Redis and NATS; the rest on the test bed.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use switchboard::protocol::{
    ClientId, ErrorCode, GroupId, MessageFrame, PageRange, ReadFrame, ServerFrame, Thread,
};
use switchboard_client::{Client, ClientError, To};

use crate::support::*;

const KEY: &str = "history-key";
const AUTH: (&str, &str) = ("Authorization", "Bearer history-key");

fn with(name: &str) -> Thread {
    Thread::With(ClientId::parse(name).unwrap())
}

fn group(name: &str) -> Thread {
    Thread::Group(GroupId::parse(name).unwrap())
}

async fn member(node: &impl Reach, group: &str, client: &str) {
    let path = format!("/api/v1/groups/{group}/members/{client}");
    assert_eq!(http(node, "PUT", &path, &[AUTH], None).await.0, 204);
}

/// The next message frame (skipping read receipts and the like).
async fn message(client: &mut Client) -> MessageFrame {
    loop {
        match next_frame(client).await {
            ServerFrame::Message(m) => return m,
            ServerFrame::Read(_) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// The next read receipt.
async fn read_receipt(client: &mut Client) -> ReadFrame {
    loop {
        match next_frame(client).await {
            ServerFrame::Read(r) => return r,
            ServerFrame::Message(_) => {}
            other => panic!("expected a read receipt, got {other:?}"),
        }
    }
}

fn cseqs(messages: &[MessageFrame]) -> Vec<u64> {
    messages.iter().map(|m| m.cseq.expect("a cseq")).collect()
}

/// 20 senders on three nodes write to one group at once: every member's
/// history holds `cseq` 1..N once each, in one order for all, and every
/// copy delivered carried its `cseq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_on_three_nodes_share_one_numbering() {
    let redis = Redis::start();
    let nats = Nats::start();
    let url = redis.url();
    let flags = ["--history", url.as_str(), "--api-key", KEY];
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b", "node-c"] {
        nodes.push(
            new_node()
                .id(id)
                .on(&redis, &nats)
                .flags(&flags)
                .start()
                .await,
        );
    }
    let names: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    for name in &names {
        member(&nodes[0], "team", name).await;
    }
    let mut clients = Vec::new();
    for (i, name) in names.iter().enumerate() {
        clients.push(connect(&nodes[i % 3], name).await);
    }
    // Everyone sends three at once.
    let sent = futures_util::future::join_all(clients.iter_mut().map(|c| async move {
        let mut cseqs = Vec::new();
        for n in 0..3 {
            let ack = c
                .ask(To::Group("team"), &json!(n), false, false)
                .await
                .unwrap();
            cseqs.push(ack.cseq.expect("the ack carries the cseq"));
        }
        cseqs
    }))
    .await;
    let mut all: Vec<u64> = sent.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=60).collect::<Vec<_>>(), "no gap, no repeat");
    // What every member got: 57 messages of the others, each with its
    // cseq; their histories agree.
    let mut orders = Vec::new();
    for client in &mut clients {
        let mut got = HashMap::new();
        while got.len() < 57 {
            let m = message(client).await;
            got.insert(m.msg_id, m.cseq.expect("a delivered copy carries its cseq"));
        }
        let page = within(client.history(&group("team"), PageRange::Latest, 200))
            .await
            .unwrap();
        assert_eq!(cseqs(&page.messages), (1..=60).collect::<Vec<_>>());
        for m in &page.messages {
            if let Some(cseq) = got.get(&m.msg_id) {
                assert_eq!(Some(*cseq), m.cseq, "the copy and the history agree");
            }
        }
        orders.push(page.messages.iter().map(|m| m.msg_id).collect::<Vec<_>>());
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "one order for every member"
    );
}

/// alice's phone is off while her laptop chats with bob; on another node
/// it lists her conversations and pages after the last `cseq` it knew: it
/// gets exactly what it missed, her laptop's messages included.
#[tokio::test(start_paused = true)]
async fn a_device_that_was_off_catches_up() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&["--history", "memory"]).await;
    let mut laptop = on_device(&a, "alice", "laptop").await;
    let mut bob = connect(&b, "bob").await;
    laptop
        .ask(To::Client("bob"), &json!("1"), false, false)
        .await
        .unwrap();
    bob.ask(To::Client("alice"), &json!("2"), false, false)
        .await
        .unwrap();
    // The phone knew up to 2, then went off.
    for n in 3..=6 {
        let (who, to) = if n % 2 == 0 {
            (&mut bob, "alice")
        } else {
            (&mut laptop, "bob")
        };
        let ack = who
            .ask(To::Client(to), &json!(n.to_string()), false, false)
            .await
            .unwrap();
        assert_eq!(ack.cseq, Some(n));
    }
    let mut phone = on_device(&b, "alice", "phone").await;
    let list = within(phone.conversations(None, 50)).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let item = &list.items[0];
    assert_eq!((item.with.as_deref(), item.cseq), (Some("bob"), 6));
    // Her laptop's send (5) moved her cursor; bob's 6 is unread.
    assert_eq!((item.read, item.unread, item.peer_read), (5, 1, Some(6)));
    assert_eq!(item.last.body, json!("6"));
    assert_eq!(item.last.cseq, Some(6));
    let missed = within(phone.history(&with("bob"), PageRange::After(2), 50))
        .await
        .unwrap();
    assert_eq!(cseqs(&missed.messages), [3, 4, 5, 6]);
    let froms: Vec<&str> = missed.messages.iter().map(|m| m.from.as_str()).collect();
    assert_eq!(froms, ["alice", "bob", "alice", "bob"]);
    assert_eq!(missed.messages[0].to.as_deref(), Some("bob"));
    assert!(!missed.more);
}

/// bob reads up to 7: alice's sessions and bob's other device hear it,
/// coalesced; the unread count drops; a lower cursor changes nothing; in a
/// group, a member's cursor goes to no other member.
#[tokio::test(start_paused = true)]
async fn read_receipts_reach_the_sender_and_the_readers_other_devices_coalesced() {
    let bed = Bed::new();
    let (a, b) = bed.pair(&["--history", "memory", "--api-key", KEY]).await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = on_device(&b, "bob", "phone").await;
    let mut bob_tab = on_device(&a, "bob", "tab").await;
    for n in 1..=8 {
        alice
            .ask(To::Client("bob"), &json!(n), false, false)
            .await
            .unwrap();
    }
    within(bob.mark_read(&with("alice"), 7)).await.unwrap();
    let r = read_receipt(&mut alice).await;
    assert_eq!(
        (r.by.as_str(), r.with.as_deref(), r.upto),
        ("bob", Some("bob"), 7)
    );
    let r = read_receipt(&mut bob_tab).await;
    assert_eq!(
        (r.by.as_str(), r.with.as_deref(), r.upto),
        ("bob", Some("alice"), 7)
    );
    let list = within(bob_tab.conversations(None, 10)).await.unwrap();
    assert_eq!((list.items[0].read, list.items[0].unread), (7, 1));
    // A lower cursor: ok, and nothing moves, nobody hears.
    within(bob.mark_read(&with("alice"), 3)).await.unwrap();
    // 20 moves within 100 ms: alice hears at most two, the last one 8.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for upto in 1..=20 {
        bob.send_raw(json!({"type":"read","with":"alice","upto": upto.min(8)}).to_string())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut heard = Vec::new();
    let quiet = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(event) = tokio::time::timeout_at(quiet, alice.next_event()).await {
        if let switchboard_client::Event::Frame(ServerFrame::Read(r)) = event.unwrap() {
            heard.push(r.upto);
        }
    }
    assert_eq!(heard, [8], "one receipt, the latest (7 was already out)");
    // A group: bob's cursor reaches his own sessions only.
    member(&a, "team", "alice").await;
    member(&a, "team", "bob").await;
    alice
        .ask(To::Group("team"), &json!("g"), false, false)
        .await
        .unwrap();
    let _ = message(&mut bob).await;
    within(bob.mark_read(&group("team"), 1)).await.unwrap();
    let r = loop {
        let r = read_receipt(&mut bob_tab).await;
        if r.group.is_some() {
            break r;
        }
        // (The pair's receipts of bob's burst, first.)
        assert_eq!(r.with.as_deref(), Some("alice"));
    };
    assert_eq!((r.group.as_deref(), r.upto), (Some("team"), 1));
    let quiet = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(event) = tokio::time::timeout_at(quiet, alice.next_event()).await {
        assert!(
            !matches!(
                event,
                Ok(switchboard_client::Event::Frame(ServerFrame::Read(_)))
            ),
            "a group member's cursor reached another member"
        );
    }
}

/// Only members read a group's conversation; a removed member no longer
/// can; a client's `with` is always its own conversation.
#[tokio::test(start_paused = true)]
async fn only_members_read_a_group_and_with_is_ones_own() {
    let bed = Bed::new();
    let node = bed
        .node("node", &["--history", "memory", "--api-key", KEY])
        .await;
    member(&node, "team", "alice").await;
    member(&node, "team", "bob").await;
    let mut alice = connect(&node, "alice").await;
    let mut carol = connect(&node, "carol").await;
    alice
        .ask(To::Group("team"), &json!("secret"), false, false)
        .await
        .unwrap();
    alice
        .ask(To::Client("bob"), &json!("private"), false, false)
        .await
        .unwrap();
    for result in [
        within(carol.history(&group("team"), PageRange::Latest, 10))
            .await
            .map(drop),
        within(carol.mark_read(&group("team"), 1)).await,
    ] {
        match result {
            Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::NotAllowed),
            other => panic!("expected not_allowed, got {other:?}"),
        }
    }
    // carol's "with bob" is carol and bob's: empty, nothing of alice's.
    let page = within(carol.history(&with("bob"), PageRange::Latest, 10))
        .await
        .unwrap();
    assert!(page.messages.is_empty());
    let path = "/api/v1/groups/team/members/alice";
    assert_eq!(http(&node, "DELETE", path, &[AUTH], None).await.0, 204);
    match within(alice.history(&group("team"), PageRange::Latest, 10)).await {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::NotAllowed),
        other => panic!("a removed member read the group: {other:?}"),
    }
}

/// The history store away (its Redis frozen, presence on another): sends
/// are still routed, their acks say `history_error`; once it answers
/// again, numbering goes on without a gap or a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_store_that_fails_does_not_stop_messages() {
    let presence = Redis::start();
    let store = Redis::start();
    let nats = Nats::start();
    let url = store.url();
    let flags = ["--history", url.as_str()];
    let a = new_node()
        .id("node-a")
        .on(&presence, &nats)
        .flags(&flags)
        .start()
        .await;
    let b = new_node()
        .id("node-b")
        .on(&presence, &nats)
        .flags(&flags)
        .start()
        .await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    let ack = alice
        .ask(To::Client("bob"), &json!(1), false, false)
        .await
        .unwrap();
    assert_eq!(ack.cseq, Some(1));
    store.freeze();
    let ack = within(alice.ask(To::Client("bob"), &json!(2), false, false))
        .await
        .unwrap();
    assert_eq!(
        ack.status,
        switchboard::protocol::AckStatus::Remote,
        "routed anyway"
    );
    assert_eq!(
        (ack.cseq, ack.history_error.as_deref()),
        (None, Some("unavailable"))
    );
    store.thaw();
    let ack = within(alice.ask(To::Client("bob"), &json!(3), false, false))
        .await
        .unwrap();
    let third = ack.cseq.expect("appends resume");
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = message(&mut bob).await;
        got.push((m.body, m.cseq));
    }
    assert_eq!(got[0], (json!(1), Some(1)));
    assert_eq!(got[1], (json!(2), None), "routed without a cseq");
    assert_eq!(got[2], (json!(3), Some(third)));
    // The store numbers without a gap or a repeat: 1, then 2 for the
    // message whose append timed out if the frozen Redis applied it when
    // it woke (the node could not know), then the third.
    let page = within(bob.history(&with("alice"), PageRange::Latest, 10))
        .await
        .unwrap();
    let numbers = cseqs(&page.messages);
    assert_eq!(
        numbers,
        (1..=third).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
    let bodies: Vec<&serde_json::Value> = page.messages.iter().map(|m| &m.body).collect();
    assert!(
        bodies.first() == Some(&&json!(1)) && bodies.last() == Some(&&json!(3)),
        "{bodies:?}"
    );
}

/// `--history-max` keeps the newest; `--history-ttl` expires by the
/// store's clock; `DELETE` removes, and the next message is numbered after
/// every one before. `"history": false` and signals are never kept.
#[tokio::test(start_paused = true)]
async fn retention_deletion_and_what_is_never_kept() {
    let bed = Bed::new();
    let flags = [
        "--history",
        "memory",
        "--history-max",
        "10",
        "--history-ttl",
        "2s",
        "--api-key",
        KEY,
    ];
    let node = bed.node("node", &flags).await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = connect(&node, "bob").await;
    for n in 1..=12 {
        alice
            .ask(To::Client("bob"), &json!(n), false, false)
            .await
            .unwrap();
    }
    let page = within(bob.history(&with("alice"), PageRange::Latest, 200))
        .await
        .unwrap();
    assert_eq!(
        cseqs(&page.messages),
        (3..=12).collect::<Vec<_>>(),
        "the newest 10"
    );
    // Not kept: a send that says so, and a signal.
    bob.send_raw(
        json!({"type":"send","to":"alice","body":"off","history":false,"id":"x"}).to_string(),
    )
    .await
    .unwrap();
    bob.signal(To::Client("alice"), &json!({"typing": true}))
        .await
        .unwrap();
    let page = within(bob.history(&with("alice"), PageRange::Latest, 200))
        .await
        .unwrap();
    assert_eq!(page.messages.last().unwrap().cseq, Some(12));
    // The API reads and deletes; numbering goes on.
    let (status, body) = http(
        &node,
        "GET",
        "/api/v1/history/bob/alice?limit=2",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let read: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (read["with"].as_str(), read["more"].as_bool()),
        (Some("alice"), Some(true))
    );
    assert_eq!(read["messages"][1]["cseq"], json!(12));
    assert_eq!(
        http(&node, "DELETE", "/api/v1/history/alice/bob", &[AUTH], None)
            .await
            .0,
        204
    );
    let page = within(bob.history(&with("alice"), PageRange::Latest, 200))
        .await
        .unwrap();
    assert!(page.messages.is_empty());
    let ack = alice
        .ask(To::Client("bob"), &json!("after"), false, false)
        .await
        .unwrap();
    assert_eq!(ack.cseq, Some(13));
    // The TTL: two seconds on the store's clock.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let page = within(bob.history(&with("alice"), PageRange::Latest, 200))
        .await
        .unwrap();
    assert!(page.messages.is_empty(), "expired");
    let ack = alice
        .ask(To::Client("bob"), &json!("later"), false, false)
        .await
        .unwrap();
    assert_eq!(ack.cseq, Some(14));
}

/// Bad input gets a clear error (or the documented clamp); the session
/// stays. A node without history says so.
#[tokio::test(start_paused = true)]
async fn bad_history_frames_are_refused_clearly() {
    let bed = Bed::new();
    let node = bed.node("node", &["--history", "memory"]).await;
    let mut alice = connect(&node, "alice").await;
    alice
        .ask(To::Client("bob"), &json!(1), false, false)
        .await
        .unwrap();
    let cases = [
        (
            json!({"type":"history","with":"bob","limit":0,"id":"1"}),
            ErrorCode::BadFrame,
        ),
        (
            json!({"type":"history","with":"bob","limit":1000,"id":"2"}),
            ErrorCode::BadFrame,
        ),
        (
            json!({"type":"history","with":"bob","before":5,"after":1,"id":"3"}),
            ErrorCode::BadFrame,
        ),
        (
            json!({"type":"history","with":"bob","before":"5","id":"4"}),
            ErrorCode::BadFrame,
        ),
        (json!({"type":"history","id":"5"}), ErrorCode::BadFrame),
        (
            json!({"type":"history","with":"b b","id":"6"}),
            ErrorCode::InvalidRecipient,
        ),
        (
            json!({"type":"read","with":"bob","id":"7"}),
            ErrorCode::BadFrame,
        ),
        (
            json!({"type":"read","with":"bob","upto":-1,"id":"8"}),
            ErrorCode::BadFrame,
        ),
        (
            json!({"type":"conversations","limit":201,"id":"9"}),
            ErrorCode::BadFrame,
        ),
        (
            json!({"type":"send","to":"bob","body":1,"history":"no","id":"10"}),
            ErrorCode::BadFrame,
        ),
    ];
    for (frame, code) in cases {
        alice.send_raw(frame.to_string()).await.unwrap();
        match next_frame(&mut alice).await {
            ServerFrame::Error {
                code: got,
                message,
                id,
                ..
            } => {
                assert_eq!(got, code, "{frame}: {message}");
                assert_eq!(id.as_deref(), frame["id"].as_str(), "{frame}");
            }
            other => panic!("{frame}: expected an error, got {other:?}"),
        }
    }
    // Beyond the last cseq: clamped, answered ok.
    within(alice.mark_read(&with("bob"), 999)).await.unwrap();
    let list = within(alice.conversations(None, 10)).await.unwrap();
    assert_eq!((list.items[0].read, list.items[0].cseq), (1, 1));
    // A node without history.
    let plain = bed.node("plain", &[]).await;
    let mut carol = connect(&plain, "carol").await;
    match within(carol.conversations(None, 10)).await {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::NoHistory),
        other => panic!("expected no_history, got {other:?}"),
    }
    let (status, _) = http(&plain, "GET", "/api/v1/history/a/b", &[], None).await;
    assert!(status == 401 || status == 403 || status == 404, "{status}");
}

/// Every copy carries the `cseq`: the recipient's, the carbon on the
/// sender's other device, the inbox's (kept for an offline client).
#[tokio::test(start_paused = true)]
async fn every_copy_carries_the_cseq() {
    let bed = Bed::new();
    let (a, b) = bed
        .pair(&["--history", "memory", "--inbox", "memory"])
        .await;
    let mut laptop = on_device(&a, "alice", "laptop").await;
    let mut phone = on_device(&b, "alice", "phone").await;
    let mut bob = connect(&b, "bob").await;
    let ack = laptop
        .ask(To::Client("bob"), &json!("hi"), false, false)
        .await
        .unwrap();
    assert_eq!(ack.cseq, Some(1));
    assert_eq!(message(&mut bob).await.cseq, Some(1));
    let carbon = message(&mut phone).await;
    assert_eq!((carbon.carbon, carbon.cseq), (true, Some(1)));
    let ack = laptop
        .ask(To::Client("carol"), &json!("later"), false, true)
        .await
        .unwrap();
    assert_eq!((ack.stored, ack.cseq), (Some(true), Some(1)));
    let mut carol = connect(&a, "carol").await;
    let kept = message(&mut carol).await;
    assert_eq!((kept.stored, kept.cseq), (true, Some(1)));
}
