//! The chat page in a real browser: headless Chromium, driven over
//! WebDriver (chromedriver, both from Debian's packages), opens the page
//! from two different nodes of a cluster, signs in as two people, and
//! chats. What the page shows is checked on both sides, the `remote`
//! branch and the `delivered` receipt included, and the page reconnects
//! by itself when its node comes back.
//!
//! `SWITCHBOARD_SCREENSHOT=docs/chat-page.png cargo test --test browser`
//! also saves what alice's page looks like at the end.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::ServerProcess;
use crate::support::*;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// Starting a browser takes a while on a busy 2-core machine.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// A chromedriver child process on a free loopback port.
struct Driver(ServerProcess);

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let mut process = ServerProcess::spawn(
            "chromedriver",
            port,
            Command::new(find_binary("chromedriver"))
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(process.wait_for_port(), "chromedriver did not listen");
        Self(process)
    }

    async fn browser(&self) -> Browser {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": find_binary("chromium"),
                "args": [
                    "--headless=new",
                    // Tests may run as root, where Chromium's sandbox
                    // cannot start.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=420,760",
                ],
            }),
        );
        tokio::time::timeout(
            BROWSER_TIMEOUT,
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{}", self.0.port)),
        )
        .await
        .expect("Chromium started in time")
        .expect("a WebDriver session")
    }
}

/// Waits until the element at `css` shows text containing every one of
/// `needles`; returns that text.
async fn shows(page: &Browser, css: &str, needles: &[&str]) -> String {
    shows_within(page, css, needles, EVENT_TIMEOUT).await
}

/// [`shows`] with a deadline of its own, for waits on the page's own
/// timers (its reconnect backoff).
async fn shows_within(page: &Browser, css: &str, needles: &[&str], wait: Duration) -> String {
    let deadline = Instant::now() + wait;
    let mut last = String::new();
    loop {
        if let Ok(element) = page.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if needles.iter().all(|n| text.contains(n)) {
                return text;
            }
            last = text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed {needles:?}; last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next message to a client a page writes to: the page's "typing"
/// signals (v3) may come first.
async fn typed_then(
    client: &mut switchboard_client::Client,
) -> switchboard::protocol::MessageFrame {
    loop {
        match next_frame(client).await {
            switchboard::protocol::ServerFrame::Message(m) => return m,
            switchboard::protocol::ServerFrame::Signal(s) => {
                assert_eq!(s.body, json!({"typing": true}), "only typing signals")
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Replaces the text of the field with id `id`.
async fn fill(page: &Browser, id: &str, text: &str) {
    let field = page.find(Locator::Id(id)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(page: &Browser, id: &str) {
    page.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn sign_in(page: &Browser, url: &str, name: &str) {
    page.goto(url).await.unwrap();
    fill(page, "name", name).await;
    click(page, "connect").await;
    shows(page, "#me", &[name]).await;
}

async fn send(page: &Browser, to: &str, text: &str) {
    fill(page, "to", to).await;
    fill(page, "text", text).await;
    click(page, "send").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_across_two_nodes_in_the_browser() {
    let redis = Redis::start();
    let nats = Nats::start();
    let a = new_node().id("node-a").on(&redis, &nats).start().await;
    let b = new_node().id("node-b").on(&redis, &nats).start().await;
    let driver = Driver::start();
    let alice = driver.browser().await;
    let bob = driver.browser().await;

    sign_in(&alice, &http_url(&a, "/"), "alice").await;
    shows(
        &alice,
        "#who",
        &["You are alice on device tab-", ", node node-a."],
    )
    .await;
    sign_in(&bob, &http_url(&b, "/"), "bob").await;
    shows(&bob, "#who", &["node-b"]).await;

    send(&alice, "bob", "hello from alice").await;
    // alice's page: her message, routed to another node, then delivered.
    shows(
        &alice,
        "#log li.out:last-child",
        &["you → bob", "hello from alice", "remote", "delivered"],
    )
    .await;
    // bob's page, on the other node: the message, from alice.
    shows(
        &bob,
        "#log li.in:last-child",
        &["alice", "hello from alice"],
    )
    .await;

    send(&bob, "alice", "hi alice, bob here").await;
    shows(
        &alice,
        "#log li.in:last-child",
        &["bob", "hi alice, bob here"],
    )
    .await;
    shows(&bob, "#log li.out:last-child", &["remote", "delivered"]).await;

    // Presence (v3): each sees the other online, across nodes; "typing…"
    // while the other types, gone when the message comes; invisible
    // looks offline.
    let bob_row = "#people-list li[data-client='bob']";
    shows(&alice, bob_row, &["bob", "online, 1 device"]).await;
    shows(
        &bob,
        "#people-list li[data-client='alice']",
        &["online, 1 device"],
    )
    .await;
    fill(&bob, "to", "alice").await;
    fill(&bob, "text", "writing to you").await;
    shows(&alice, bob_row, &["typing…"]).await;
    click(&bob, "send").await;
    shows(&alice, "#log li.in:last-child", &["writing to you"]).await;
    let row = shows(&alice, bob_row, &["online"]).await;
    assert!(
        !row.contains("typing"),
        "typing cleared by the message: {row}"
    );
    click(&bob, "invisible").await;
    shows(&alice, bob_row, &["offline, last seen"]).await;
    click(&bob, "invisible").await;
    shows(&alice, bob_row, &["online, 1 device"]).await;

    // Someone who is not there: the page says so, and why.
    send(&alice, "carol", "anyone?").await;
    shows(
        &alice,
        "#log li.out:last-child",
        &["carol", "offline: never_seen"],
    )
    .await;

    // node-a goes away: alice's page says so and keeps trying; when a
    // node is back at the same address, it reconnects by itself.
    let address = a.local_addr().to_string();
    a.shutdown().await;
    shows(&alice, "#log", &["connection lost (1001"]).await;
    shows(&alice, "#status", &["reconnecting in"]).await;
    let _a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&["--listen", &address])
        .start()
        .await;
    shows(&alice, "#status", &["connected"]).await;
    let log = shows(&alice, "#log", &["to node-a"]).await;
    assert_eq!(log.matches("connected as alice (tab-").count(), 2, "{log}");
    send(&bob, "alice", "welcome back").await;
    shows(&alice, "#log li.in:last-child", &["bob", "welcome back"]).await;

    if let Ok(path) = std::env::var("SWITCHBOARD_SCREENSHOT") {
        let png = alice.screenshot().await.unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
    // Disconnect shows what the socket really reported.
    click(&bob, "disconnect").await;
    shows(&bob, "#log", &["disconnected (1000)"]).await;
    shows(&alice, bob_row, &["offline"]).await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

/// Two tabs of one person are two devices: both get what is sent to them,
/// and what one sends shows in the other as sent from another device. A
/// tab sends to a group with `#team`, and shows what the group says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tab_is_a_device_of_its_own() {
    let flags = ["--api-key", "k"];
    let Cluster {
        redis: _redis,
        nats: _nats,
        a,
        b,
    } = Cluster::start_with(&flags).await;
    let driver = Driver::start();
    let (tab1, tab2) = (driver.browser().await, driver.browser().await);
    sign_in(&tab1, &http_url(&a, "/"), "alice").await;
    sign_in(&tab2, &http_url(&b, "/"), "alice").await;
    let device = |page: &Browser| {
        let page = page.clone();
        async move {
            page.find(Locator::Id("my-device"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let (d1, d2) = (device(&tab1).await, device(&tab2).await);
    assert!(d1.starts_with("tab-") && d2.starts_with("tab-") && d1 != d2);

    let mut bob = connect(&a, "bob").await;
    // Node-a cached alice's record when tab one registered there.
    heard_of_devices(a.node(), "alice", 2).await;
    bob.send(
        "alice",
        &serde_json::json!({"text": "to both tabs"}),
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        ack_status(&mut bob).await,
        switchboard::protocol::AckStatus::Remote
    );
    for tab in [&tab1, &tab2] {
        shows(tab, "#log li.in:last-child", &["bob", "to both tabs"]).await;
    }

    send(&tab1, "bob", "from tab one").await;
    shows(&tab1, "#log li.out:last-child", &["local", "delivered"]).await;
    shows(
        &tab2,
        "#log li.carbon:last-child",
        &["you (another device) → bob", "from tab one"],
    )
    .await;

    // The group team: alice and bob.
    for member in ["alice", "bob"] {
        let path = format!("/api/v1/groups/team/members/{member}");
        let (status, _) = http(&a, "PUT", &path, &[("Authorization", "Bearer k")], None).await;
        assert_eq!(status, 204);
    }
    // Tab one sends to #team: bob, and alice's other tab, get it.
    send(&tab1, "#team", "hello team").await;
    shows(
        &tab1,
        "#log li.out:last-child",
        &["you → #team", "fanout: 1 here, 1 elsewhere, 0 offline"],
    )
    .await;
    shows(
        &tab2,
        "#log li.group:last-child",
        &["#team alice", "hello team"],
    )
    .await;
    // (After "from tab one", which bob has not read yet.)
    let m = loop {
        match next_frame(&mut bob).await {
            switchboard::protocol::ServerFrame::Message(m) if m.group.is_some() => break m,
            switchboard::protocol::ServerFrame::Message(m) => {
                assert_eq!(m.body["text"], "from tab one")
            }
            // The tabs say they are typing (v3).
            switchboard::protocol::ServerFrame::Signal(s) => {
                assert_eq!(
                    (s.from.as_str(), &s.body),
                    ("alice", &json!({"typing": true}))
                )
            }
            other => panic!("bob got {other:?}"),
        }
    };
    assert_eq!(
        (m.group.as_deref(), m.from.as_str()),
        (Some("team"), "alice")
    );
    // What bob says to the group shows in both tabs, with the group's name.
    bob.send_to(
        switchboard_client::To::Group("team"),
        &serde_json::json!({"text": "hi all"}),
        None,
        false,
        false,
    )
    .await
    .unwrap();
    for tab in [&tab1, &tab2] {
        shows(tab, "#log li.group:last-child", &["#team bob", "hi all"]).await;
    }
    tab1.close().await.unwrap();
    tab2.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_required_the_page_asks_for_one() {
    let node = new_node()
        .flags(&["--jwt-secret", "page-secret"])
        .start()
        .await;
    let driver = Driver::start();
    let page = driver.browser().await;
    page.goto(&http_url(&node, "/")).await.unwrap();
    let name_field = page.find(Locator::Id("name-field")).await.unwrap();
    assert!(!name_field.is_displayed().await.unwrap(), "no name field");

    // A wrong token: the page says it could not connect, and retries.
    fill(&page, "token", "not-a-token").await;
    click(&page, "connect").await;
    shows(&page, "#status", &["reconnecting"]).await;
    shows(&page, "#log", &["could not connect", "check the token"]).await;

    // A right one (what `switchboard token carol` prints).
    let client = switchboard::protocol::ClientId::parse("carol").unwrap();
    let token = switchboard::auth::mint_hs256("page-secret", &client, Duration::from_secs(600));
    fill(&page, "token", &token).await;
    click(&page, "connect").await;
    shows(&page, "#who", &["You are carol"]).await;

    // Disconnecting is a normal close: the node echoes the page's close
    // frame, so the browser reports 1000, not 1006.
    click(&page, "disconnect").await;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let log = page
            .execute("return document.getElementById('log').textContent", vec![])
            .await
            .unwrap();
        let log = log.as_str().unwrap_or_default().to_owned();
        if log.contains("disconnected (1000)") {
            break;
        }
        assert!(Instant::now() < deadline, "no normal disconnect in {log:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    page.close().await.unwrap();
}

/// The page is in acks mode: its node restarts (a drain, then a new run on
/// the same address) while alice writes to it, and the page resumes its
/// session from the node that kept it meanwhile, showing every message
/// once, in order; alice's messages are all `delivered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_resumes_across_a_restart_of_its_node_without_losing_a_message() {
    let redis = Redis::start();
    let nats = Nats::start();
    let secret = ["--resume-secret", "page"];
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&secret)
        .start()
        .await;
    let port = free_port();
    let b = new_node()
        .id("node-b")
        .port(port)
        .on(&redis, &nats)
        .flags(&secret)
        .start()
        .await;
    let driver = Driver::start();
    let page = driver.browser().await;
    sign_in(&page, &http_url(&b, "/"), "bob").await;
    let mut alice = connect(&a, "alice").await;
    let say = |n: u32| serde_json::json!({"text": format!("message {n}")});
    alice.send("bob", &say(1), None, true).await.unwrap();
    shows(&page, "#log li.in:last-child", &["alice", "message 1"]).await;

    // node-b drains and is gone; alice writes meanwhile; a new run of
    // node-b comes up on the same address, and the page resumes there.
    b.shutdown_by(tokio::time::Instant::now() + Duration::from_secs(8))
        .await;
    for n in 2..=4 {
        alice.send("bob", &say(n), None, true).await.unwrap();
    }
    let _b2 = new_node()
        .id("node-b")
        .port(port)
        .on(&redis, &nats)
        .flags(&secret)
        .start()
        .await;
    // The page retried while node-b was away, backing off 1, 2, 4, 8 s
    // (each ±25%): its next try can be up to 10 s after the new run is up.
    let backoff = Duration::from_secs(10) + EVENT_TIMEOUT;
    shows_within(&page, "#log", &["session resumed", "message 4"], backoff).await;
    let log = shows(&page, "#log", &["message 2", "message 3"]).await;
    let order: Vec<usize> = (1..=4)
        .map(|n| log.find(&format!("message {n}")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {log}");
    assert_eq!(log.matches("message 3").count(), 1, "once: {log}");
    // Every one confirmed by the page: four acks, four `delivered`.
    let mut delivered = 0;
    while delivered < 4 {
        match next_frame(&mut alice).await {
            switchboard::protocol::ServerFrame::Receipt { status, .. } => {
                assert_eq!(status, switchboard::protocol::ReceiptStatus::Delivered);
                delivered += 1;
            }
            switchboard::protocol::ServerFrame::Ack(_) => {}
            other => panic!("alice got {other:?}"),
        }
    }
    page.close().await.unwrap();
}

/// The marks of the page built on the JavaScript client: ✓ sent, ✓✓
/// delivered, offline with its reason, stored (with an inbox, the page
/// offers to keep a message), and the stored message shown to its
/// recipient when they come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_marks_each_outcome_and_keeps_messages_for_the_offline() {
    let node = new_node().flags(&["--inbox", "memory"]).start().await;
    let driver = Driver::start();
    let alice = driver.browser().await;
    sign_in(&alice, &http_url(&node, "/"), "alice").await;
    // The inbox option is offered: this node keeps messages.
    click(&alice, "store").await;
    send(&alice, "dora", "see you later").await;
    shows(
        &alice,
        "#log li.out:last-child",
        &["offline: never_seen", "stored for later"],
    )
    .await;
    let mut bob = connect(&node, "bob").await;
    send(&alice, "bob", "are you there?").await;
    shows(
        &alice,
        "#log li.out:last-child",
        &["✓ local", "✓✓ delivered"],
    )
    .await;
    assert_eq!(typed_then(&mut bob).await.body["text"], "are you there?");

    let dora = driver.browser().await;
    sign_in(&dora, &http_url(&node, "/"), "dora").await;
    shows(
        &dora,
        "#log",
        &["1 message(s) kept for you while you were away"],
    )
    .await;
    shows(
        &dora,
        "#log li.stored:last-child",
        &["alice", "see you later", "kept while you were away"],
    )
    .await;
    alice.close().await.unwrap();
    dora.close().await.unwrap();
}

/// The package's browser example (`clients/js/examples/browser`), served
/// by its own one-command server, imports the bundle, connects to a node
/// that lets its origin in, and sends with a receipt: ✓✓.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_example_runs_on_the_bundle() {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let node = new_node()
        .flags(&["--allowed-origins", &origin])
        .start()
        .await;
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients/js/examples/browser/serve.mjs");
    let mut command = Command::new("node");
    command
        .arg(&example)
        .arg(ws_url(&node))
        .arg(port.to_string())
        .stdout(Stdio::null());
    let mut server = ServerProcess::spawn("the example's server", port, &mut command);
    assert!(server.wait_for_port(), "the example's server did not start");
    let mut bob = connect(&node, "bob").await;
    let driver = Driver::start();
    let page = driver.browser().await;
    let url = format!("{origin}/?node={}&me=alice", ws_url(&node));
    page.goto(&url).await.unwrap();
    shows(&page, "#status", &["open"]).await;
    fill(&page, "to", "bob").await;
    fill(&page, "text", "from the example").await;
    page.find(Locator::Css("#send button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(message(&mut bob).await.body["text"], "from the example");
    shows(
        &page,
        "#log li:last-child",
        &["you → bob: from the example ✓✓"],
    )
    .await;
    page.close().await.unwrap();
}

/// The admin page: the API key entered in a form (never in the URL), the
/// cluster as every node reports it, a live rate graph, a client lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_shows_the_cluster_and_looks_a_client_up() {
    let flags = ["--api-key", "admin-key"];
    let Cluster {
        redis: _redis,
        nats: _nats,
        a,
        b,
    } = Cluster::start_with(&flags).await;
    let mut alice = on_device(&a, "alice", "phone").await;
    let mut bob = connect(&b, "bob").await;
    let driver = Driver::start();
    let page = driver.browser().await;
    page.goto(&http_url(&a, "/admin")).await.unwrap();
    // A wrong key is said so.
    fill(&page, "key", "wrong").await;
    click(&page, "open").await;
    shows(&page, "#status", &["wrong API key"]).await;
    page.goto(&http_url(&a, "/admin")).await.unwrap();
    fill(&page, "key", "admin-key").await;
    click(&page, "open").await;
    assert!(
        !page
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("admin-key")
    );
    shows(&page, "#nodes", &["node-a", "node-b", "redis ok / nats ok"]).await;
    // Traffic shows in the rates.
    for i in 0..20 {
        alice
            .send("bob", &serde_json::json!(i), None, false)
            .await
            .unwrap();
        ack_status(&mut alice).await;
        next_frame(&mut bob).await;
    }
    shows(&page, "#rate-now", &["msgs/s now"]).await;
    let points = page
        .find(Locator::Id("rate-line"))
        .await
        .unwrap()
        .attr("points")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(!points.is_empty(), "the graph has points");
    // Where is alice?
    fill(&page, "client", "alice").await;
    click(&page, "lookup").await;
    shows(
        &page,
        "#client-result",
        &["alice is online on 1 device(s)", "phone on node node-a"],
    )
    .await;
    page.close().await.unwrap();
}

/// With history (v3): the page lists conversations with unread counts,
/// opens one with its last messages (numbered), shows ✓✓ when the other
/// has read; after a reload, and on a second tab (another device), the
/// same conversation and the same read marks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_keeps_conversations_unread_counts_and_read_marks() {
    let node = new_node().flags(&["--history", "memory"]).start().await;
    let driver = Driver::start();
    let alice = driver.browser().await;
    let bob = driver.browser().await;
    sign_in(&alice, &http_url(&node, "/"), "alice").await;
    sign_in(&bob, &http_url(&node, "/"), "bob").await;
    for text in ["one", "two", "three"] {
        send(&alice, "bob", text).await;
    }
    shows(&alice, "#log li.out:last-child", &["three", "#3"]).await;
    // bob's page opens the conversation that spoke, numbered; reading it
    // is alice's ✓✓.
    shows(
        &bob,
        "#log",
        &["conversation with alice", "one", "#1", "three", "#3"],
    )
    .await;
    shows(&alice, "#log li.out:last-child", &["three", "✓✓ read"]).await;
    // Someone else writes to bob: an unread count, not the log.
    let mut dave = connect(&node, "dave").await;
    dave.ask(
        switchboard_client::To::Client("bob"),
        &json!({"text": "psst"}),
        false,
        false,
    )
    .await
    .unwrap();
    shows(
        &bob,
        "#conversation-list li[data-key='dave']",
        &["1 unread"],
    )
    .await;
    let log = shows(&bob, "#log", &["three"]).await;
    assert!(!log.contains("psst"), "{log}");
    // bob answers alice; alice reads it (her conversation is open).
    send(&bob, "alice", "four from bob").await;
    shows(&alice, "#log li.in:last-child", &["four from bob", "#4"]).await;
    shows(
        &bob,
        "#log li.out:last-child",
        &["four from bob", "✓✓ read"],
    )
    .await;
    // A reload: the conversations and the open one's last messages again.
    bob.refresh().await.unwrap();
    sign_in(&bob, &http_url(&node, "/"), "bob").await;
    shows(&bob, "#conversation-list", &["alice", "dave", "1 unread"]).await;
    shows(
        &bob,
        "#log",
        &["conversation with alice", "one", "four from bob", "✓✓ read"],
    )
    .await;
    // A second tab, another device of bob's: the same read mark.
    let tab = driver.browser().await;
    sign_in(&tab, &http_url(&node, "/"), "bob").await;
    tab.find(Locator::Css(
        "#conversation-list li[data-key='alice'] button",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    shows(
        &tab,
        "#log",
        &["conversation with alice", "four from bob", "✓✓ read"],
    )
    .await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    tab.close().await.unwrap();
}

/// With a send hook (v3): a message the application's backend refuses is
/// marked "rejected: <reason>" on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_message_the_backend_rejected() {
    let port = free_port();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hook-backend/server.py");
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .args([
            "--port",
            &port.to_string(),
            "--secret",
            "s",
            "--refuse",
            "spam",
        ])
        .stdout(Stdio::null());
    let mut backend = ServerProcess::spawn("the hook backend", port, &mut command);
    assert!(backend.wait_for_port(), "the hook backend did not start");
    let url = format!("http://127.0.0.1:{port}/hook");
    let flags = [
        "--hook-url",
        url.as_str(),
        "--hook-secret",
        "s",
        "--hooks",
        "send",
    ];
    let node = new_node().flags(&flags).start().await;
    let driver = Driver::start();
    let alice = driver.browser().await;
    sign_in(&alice, &http_url(&node, "/"), "alice").await;
    send(&alice, "bob", "buy spam").await;
    shows(
        &alice,
        "#log li.out:last-child",
        &["buy spam", "rejected: moderated"],
    )
    .await;
    alice.close().await.unwrap();
}
