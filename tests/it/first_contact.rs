//! What a newcomer touches first: the chat page each node serves, the
//! terminal client, minted tokens, and the Rust client library. (The page
//! in a real browser: tests/browser.rs.)

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::*;
use futures_util::StreamExt;
use serde_json::json;
use switchboard::protocol::{AckStatus, ErrorCode, MessageFrame, ReceiptStatus, ServerFrame};
use switchboard_client::{Client, ClientError, Event, Identity};

const BINARY: &str = env!("CARGO_BIN_EXE_switchboard");

#[tokio::test]
async fn the_client_library_sends_for_ack_and_streams_what_arrives() {
    let node = new_node().start().await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = connect(&node, "bob").await;

    // bob writes first; alice has not read it when she sends.
    let ack = bob
        .send_for_ack("alice", &json!({"text": "hi alice"}), false)
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Local);
    let ack = alice
        .send_for_ack("bob", &json!({"text": "hi bob"}), true)
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Local);

    // What arrived while alice waited for her ack is still hers, in order:
    // bob's message, then her receipt.
    let mut events = alice.events();
    match within(events.next()).await.unwrap().unwrap() {
        Event::Frame(ServerFrame::Message(MessageFrame { from, body, .. })) => {
            assert_eq!((from.as_str(), body), ("bob", json!({"text": "hi alice"})));
        }
        other => panic!("expected bob's message, got {other:?}"),
    }
    match within(events.next()).await.unwrap().unwrap() {
        Event::Frame(ServerFrame::Receipt { msg_id, status, .. }) => {
            assert_eq!((msg_id, status), (ack.msg_id, ReceiptStatus::Delivered));
        }
        other => panic!("expected the receipt, got {other:?}"),
    }
    drop(events);

    // A refused send is an error with the protocol's code.
    match alice.send_for_ack("not/an id", &json!(1), false).await {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::InvalidRecipient),
        other => panic!("expected a rejection, got {other:?}"),
    }

    // The stream ends after the close.
    drop(bob);
    node.shutdown().await;
    let mut events = alice.events();
    let mut last = None;
    while let Some(event) = within(events.next()).await {
        last = Some(event.unwrap());
    }
    assert!(
        matches!(
            last,
            Some(Event::Closed {
                code: Some(1001),
                ..
            })
        ),
        "{last:?}"
    );
}

fn run_token(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BINARY);
    command
        .arg("token")
        .args(args)
        .env_remove("SWITCHBOARD_JWT_SECRET");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("switchboard token runs")
}

#[tokio::test]
async fn a_minted_token_opens_a_node_with_the_same_secret_only() {
    let output = run_token(
        &["alice", "--ttl", "10m"],
        &[("SWITCHBOARD_JWT_SECRET", "s1")],
    );
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    let same = new_node().flags(&["--jwt-secret", "s1"]).start().await;
    let client = within(Client::connect(
        &ws_url(&same),
        Identity::Token(token.clone()),
    ))
    .await
    .expect("the node with the same secret takes it");
    assert_eq!(client.welcome().client_id, "alice");

    let other = new_node().flags(&["--jwt-secret", "s2"]).start().await;
    match within(Client::connect(&ws_url(&other), Identity::Token(token))).await {
        Err(ClientError::Refused { status: 401, .. }) => {}
        Err(e) => panic!("expected 401, got {e}"),
        Ok(_) => panic!("a node with another secret took the token"),
    }

    // Audience and issuer for nodes that check them.
    let checked = new_node()
        .flags(&[
            "--jwt-secret",
            "s1",
            "--jwt-audience",
            "chat",
            "--jwt-issuer",
            "me",
        ])
        .start()
        .await;
    let output = run_token(
        &[
            "bob",
            "--jwt-secret",
            "s1",
            "--jwt-audience",
            "chat",
            "--jwt-issuer",
            "me",
        ],
        &[],
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let client = within(Client::connect(&ws_url(&checked), Identity::Token(token)))
        .await
        .expect("aud and iss as the node wants them");
    assert_eq!(client.welcome().client_id, "bob");

    // Mistakes are told, not minted.
    for (args, says) in [
        (&["alice"][..], "--jwt-secret"),
        (&["not an id", "--jwt-secret", "s"], "not a client id"),
        (
            &["alice", "--jwt-secret", "s", "--ttl", "1w"],
            "unknown unit",
        ),
    ] {
        let output = run_token(args, &[]);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// `switchboard chat` as a child process, its stdout read line by line.
struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Chat {
    fn start(url: &str, name: &str) -> Self {
        let mut child = Command::new(BINARY)
            .args(["chat", "--url", url, "--as", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("switchboard chat runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Reads lines until one contains `needle`; returns it.
    fn expect(&self, needle: &str) -> String {
        tokio::task::block_in_place(|| {
            let deadline = Instant::now() + EVENT_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.lines.recv_timeout(left) {
                    Ok(line) if line.contains(needle) => return line,
                    Ok(_) => {}
                    Err(_) => panic!("switchboard chat never printed {needle:?}"),
                }
            }
        })
    }

    /// Waits for the process to end; its exit code.
    fn exit_code(&mut self) -> i32 {
        tokio::task::block_in_place(|| {
            let deadline = Instant::now() + EVENT_TIMEOUT;
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status.code().unwrap_or(-1);
                }
                assert!(Instant::now() < deadline, "switchboard chat did not exit");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_client_chats_over_stdin_and_stdout() {
    let node = new_node().start().await;
    let mut bob = connect(&node, "bob").await;
    let mut chat = Chat::start(&ws_url(&node), "alice");
    chat.expect("connected: you are alice on");

    chat.type_line("@bob hello bob");
    chat.expect("[1] -> bob: local");
    chat.expect("[1] -> bob: delivered");
    match next_frame(&mut bob).await {
        ServerFrame::Message(MessageFrame { from, body, .. }) => {
            assert_eq!(
                (from.as_str(), body),
                ("alice", json!({"text": "hello bob"}))
            )
        }
        other => panic!("bob got {other:?}"),
    }
    // A line without @ goes to the last recipient.
    chat.type_line("and again");
    chat.expect("[2] -> bob: local");

    bob.send("alice", &json!({"text": "hi alice"}), None, false)
        .await
        .unwrap();
    chat.expect("bob: hi alice");

    chat.type_line("@nobody are you there");
    chat.expect("[3] -> nobody: offline");
    chat.type_line("@not/valid hello");
    chat.expect("[4] error invalid_recipient");

    // Ctrl-D: a normal close, and the session is gone.
    drop(chat.stdin.take());
    chat.expect("bye");
    assert_eq!(chat.exit_code(), 0);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let ack = bob.send_for_ack("alice", &json!(1), false).await.unwrap();
        if ack.status == AckStatus::Offline {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's session outlived the chat"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Ctrl-C: the same clean exit.
    let mut chat = Chat::start(&ws_url(&node), "carol");
    chat.expect("connected: you are carol");
    // SAFETY: kill(2) on our own child process.
    assert_eq!(
        unsafe { libc::kill(chat.child.id() as i32, libc::SIGINT) },
        0
    );
    chat.expect("bye");
    assert_eq!(chat.exit_code(), 0);
}

/// `/watch` in the terminal: bob's devices come and go, his typing shows,
/// `/typing` sends one, `/invisible` hides alice from bob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_client_watches_and_shows_typing() {
    let node = new_node()
        .flags(&["--presence-coalesce-ms", "10"])
        .start()
        .await;
    let mut chat = Chat::start(&ws_url(&node), "alice");
    chat.expect("connected: you are alice on");
    chat.type_line("/watch bob");
    chat.expect("watching bob");
    chat.expect("bob is offline");
    let mut bob = connect(&node, "bob").await;
    chat.expect("bob is online (default)");
    bob.signal(
        switchboard_client::To::Client("alice"),
        &json!({"typing": true}),
    )
    .await
    .unwrap();
    chat.expect("bob is typing…");
    chat.type_line("/typing bob");
    match next_frame(&mut bob).await {
        ServerFrame::Signal(s) => {
            assert_eq!(
                (s.from.as_str(), s.body),
                ("alice", json!({"typing": true}))
            );
        }
        other => panic!("bob got {other:?}"),
    }
    within(bob.watch(&["alice"])).await.unwrap();
    let online = within(async {
        loop {
            if let ServerFrame::Presence(p) = next_frame(&mut bob).await {
                break p;
            }
        }
    })
    .await;
    assert_eq!(online.state, switchboard::protocol::Shown::Online);
    chat.type_line("/invisible");
    chat.expect("you are invisible");
    let hidden = within(async {
        loop {
            if let ServerFrame::Presence(p) = next_frame(&mut bob).await {
                break p;
            }
        }
    })
    .await;
    assert_eq!(hidden.state, switchboard::protocol::Shown::Offline);
    within(bob.close()).await.unwrap();
    chat.expect("bob is offline (last seen 20");
    chat.type_line("/frobnicate");
    chat.type_line("/unwatch bob");
    chat.expect("no longer watching bob");
}

/// `/history` and `/conversations` in the terminal (v3), and the other
/// side's read receipts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_client_pages_history_and_shows_reads() {
    let node = new_node().flags(&["--history", "memory"]).start().await;
    let mut bob = connect(&node, "bob").await;
    for text in ["one", "two"] {
        bob.ask(
            switchboard_client::To::Client("alice"),
            &json!({"text": text}),
            false,
            false,
        )
        .await
        .unwrap();
    }
    let mut chat = Chat::start(&ws_url(&node), "alice");
    chat.expect("connected: you are alice on");
    chat.type_line("/history bob");
    chat.expect("#1 bob -> alice: one");
    chat.expect("#2 bob -> alice: two");
    chat.expect("end of history");
    // Reading the history marked it read: bob hears so.
    match next_frame(&mut bob).await {
        ServerFrame::Read(r) => assert_eq!((r.by.as_str(), r.upto), ("alice", 2)),
        other => panic!("bob got {other:?}"),
    }
    chat.type_line("@bob three");
    chat.expect("[1] -> bob: local");
    chat.type_line("/conversations");
    chat.expect("bob: 0 unread (last #3: three)");
    let alice = switchboard::protocol::ClientId::parse("alice").unwrap();
    let thread = switchboard::protocol::Thread::With(alice);
    within(bob.mark_read(&thread, 3)).await.unwrap();
    chat.expect("bob read up to #3");
}

#[tokio::test]
async fn every_node_serves_the_chat_page_with_strict_headers() {
    let node = new_node().flags(&["--node-id", "node-page"]).start().await;
    let (status, page) = http(&node, "GET", "/", &[], None).await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-node="node-page""#), "{page}");
    assert!(page.contains(r#"data-auth="name""#));
    for (path, needle) in [
        ("/page/app.js", r#"from "/page/switchboard-client.min.js""#),
        ("/page/conversations.js", "export class Conversations"),
        ("/page/switchboard-client.min.js", "resume"),
        ("/page/app.css", "#log"),
    ] {
        let (status, body) = http(&node, "GET", path, &[], None).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(needle), "{path}");
    }
    let response = response_head(&node, "/").await;
    assert!(response.contains("content-type: text/html"), "{response}");
    assert!(
        response.contains("content-security-policy: default-src 'none'"),
        "{response}"
    );
    assert!(response.contains("x-content-type-options: nosniff"));

    let with_tokens = new_node().flags(&["--jwt-secret", "s"]).start().await;
    let (_, page) = http(&with_tokens, "GET", "/", &[], None).await;
    assert!(page.contains(r#"data-auth="token""#));
}

/// The raw response head of `GET path`, header names in lower case.
async fn response_head(node: &switchboard::runtime::RunningNode, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(node.local_addr())
        .await
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    within(stream.read_to_end(&mut response)).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_lowercase();
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}
