//! Backend hooks (v3), against the example backend
//! (`examples/hook-backend/server.py`, a real HTTP server started here):
//! bans at connect with the backend's own status and JSON, moderation and
//! rewrites of sends (history keeps the rewritten body), the order of a
//! session's sends while hook calls overlap, every way the backend can
//! fail in both failure modes, the signature on every call, and https.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::protocol::{ClientId, ErrorCode, PageRange, ServerFrame, Thread};
use switchboard_client::{Client, ClientError, Identity, To};

use crate::support::certs::Pki;
use crate::support::process::ServerProcess;
use crate::support::*;

const SECRET: &str = "hook-secret";

/// The example backend as a child process on a free port.
struct Backend {
    /// Held so the backend is stopped when the test ends.
    _process: ServerProcess,
    url: String,
}

impl Backend {
    fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, None)
    }

    fn start_with(extra: &[&str], tls: Option<&Pki>) -> Self {
        let port = free_port();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/hook-backend/server.py");
        let mut command = Command::new("python3");
        command
            .arg(&script)
            .args(["--port", &port.to_string(), "--secret", SECRET])
            .args(extra)
            .stdout(std::process::Stdio::null());
        if let Some(pki) = tls {
            command.arg("--tls-cert").arg(&pki.server_cert);
            command.arg("--tls-key").arg(&pki.server_key);
        }
        let mut process = ServerProcess::spawn("the hook backend", port, &mut command);
        assert!(process.wait_for_port(), "the hook backend did not start");
        let scheme = if tls.is_some() { "https" } else { "http" };
        Self {
            _process: process,
            url: format!("{scheme}://127.0.0.1:{port}/hook"),
        }
    }

    /// What the backend saw (`GET /calls`).
    async fn seen(&self) -> serde_json::Value {
        let url = self
            .url
            .replace("/hook", "/calls")
            .replace("https://", "http://");
        let (status, body) = http_at_url(&url).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// `GET url` over plain HTTP (the backend's own view; never over TLS).
async fn http_at_url(url: &str) -> (u16, String) {
    let rest = url.trim_start_matches("http://");
    let (authority, path) = rest.split_once('/').unwrap();
    http_at(
        authority.parse().unwrap(),
        "GET",
        &format!("/{path}"),
        &[],
        None,
    )
    .await
}

fn hook_flags<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec!["--hook-url", url, "--hook-secret", SECRET];
    flags.extend_from_slice(extra);
    flags
}

async fn error_of(client: &mut Client) -> (ErrorCode, Option<String>, String) {
    match next_frame(client).await {
        ServerFrame::Error {
            code,
            reason,
            message,
            ..
        } => (code, reason, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A banned client gets the backend's 403 and JSON; an allowed one
/// connects; the backend sees a JWT's claims; every call was signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_hook_bans_with_the_backends_answer_and_sees_the_claims() {
    let backend = Backend::start(&["--ban", "mallory"]);
    let flags = hook_flags(&backend.url, &["--jwt-secret", "jwt", "--hooks", "connect"]);
    let node = new_node().flags(&flags).start().await;
    let token = |name: &str| {
        let client = ClientId::parse(name).unwrap();
        Identity::Token(switchboard::auth::mint_hs256(
            "jwt",
            &client,
            Duration::from_secs(600),
        ))
    };
    match Client::connect(&ws_url(&node), token("mallory")).await {
        Err(ClientError::Refused { status, body, .. }) => {
            assert_eq!(status, 403);
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["error"], "banned");
            assert_eq!(body["message"], "mallory may not connect");
        }
        other => panic!("mallory got in: {:?}", other.err()),
    }
    let alice = within(Client::connect(&ws_url(&node), token("alice")))
        .await
        .unwrap();
    assert_eq!(alice.welcome().client_id, "alice");
    let seen = backend.seen().await;
    let connects = seen["connects"].as_array().unwrap();
    let claims = &connects.last().unwrap()["claims"];
    assert_eq!(claims["sub"], "alice");
    assert!(claims["exp"].as_u64().is_some(), "{claims}");
    assert_eq!(seen["bad_signatures"], 0, "every call verified");
    let metrics = http(&node, "GET", "/metrics", &[], None).await.1;
    assert!(metrics.contains(r#"switchboard_hook_calls_total{hook="connect",result="refuse"} 1"#));
    assert!(metrics.contains(r#"switchboard_upgrades_refused_total{reason="hook"} 1"#));
}

/// A moderated word: `rejected`/`moderated`, nothing routed. A masked
/// word: the message arrives rewritten, same `msg_id` and `cseq`, and the
/// history keeps the rewritten body. Signals and API sends ask nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_hook_moderates_and_rewrites() {
    let backend = Backend::start(&["--mask", "darn", "--refuse", "spam"]);
    let flags = hook_flags(&backend.url, &["--history", "memory", "--api-key", "k"]);
    let node = new_node().flags(&flags).start().await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = connect(&node, "bob").await;
    alice
        .send("bob", &json!({"text": "buy spam now"}), Some("m1"), false)
        .await
        .unwrap();
    let (code, reason, message) = error_of(&mut alice).await;
    assert_eq!(
        (code, reason.as_deref()),
        (ErrorCode::Rejected, Some("moderated"))
    );
    assert_eq!(message, "no spam here");
    let ack = alice
        .ask(To::Client("bob"), &json!({"text": "darn it"}), false, false)
        .await
        .unwrap();
    let got = message_of(&mut bob).await;
    assert_eq!(got.body, json!({"text": "**** it"}), "rewritten");
    assert_eq!((got.msg_id, got.cseq), (ack.msg_id, ack.cseq));
    let thread = Thread::With(ClientId::parse("alice").unwrap());
    let page = within(bob.history(&thread, PageRange::Latest, 10))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1, "the refused one was not kept");
    assert_eq!(page.messages[0].body, json!({"text": "**** it"}));
    // Neither a signal nor the API's send goes through the hook.
    let sends_before = backend.seen().await["sends"].as_u64().unwrap();
    alice
        .signal(To::Client("bob"), &json!("spam"))
        .await
        .unwrap();
    let (status, _) = http(
        &node,
        "POST",
        "/api/v1/messages",
        &[("Authorization", "Bearer k")],
        Some(r#"{"from":"system","to":"bob","body":"spam"}"#),
    )
    .await;
    assert_eq!(status, 200);
    let mut signal_and_api = 0;
    while signal_and_api < 2 {
        match next_frame(&mut bob).await {
            ServerFrame::Signal(_) | ServerFrame::Message(_) => signal_and_api += 1,
            other => panic!("bob got {other:?}"),
        }
    }
    assert_eq!(
        backend.seen().await["sends"].as_u64().unwrap(),
        sends_before
    );
}

async fn message_of(client: &mut Client) -> switchboard::protocol::MessageFrame {
    loop {
        if let ServerFrame::Message(m) = next_frame(client).await {
            return m;
        }
    }
}

/// 200 sends while the backend answers after 0-20 ms at random: acks and
/// deliveries in the order sent, none lost or twice, and the calls overlap
/// (far quicker than one at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_keep_their_order_while_hook_calls_overlap() {
    let backend = Backend::start(&["--jitter-ms", "20"]);
    let flags = hook_flags(&backend.url, &["--hooks", "send", "--rate-limit", "0"]);
    let node = new_node().flags(&flags).start().await;
    let mut alice = connect(&node, "alice").await;
    let mut bob = connect(&node, "bob").await;
    let started = Instant::now();
    for n in 0..200 {
        alice
            .send("bob", &json!(n), Some(&n.to_string()), false)
            .await
            .unwrap();
    }
    let mut acks = Vec::new();
    while acks.len() < 200 {
        match next_frame(&mut alice).await {
            ServerFrame::Ack(ack) => acks.push(ack.id.unwrap().parse::<u32>().unwrap()),
            other => panic!("alice got {other:?}"),
        }
    }
    assert_eq!(acks, (0..200).collect::<Vec<_>>(), "acks in the order sent");
    let mut got = Vec::new();
    while got.len() < 200 {
        got.push(message_of(&mut bob).await.body.as_u64().unwrap());
    }
    assert_eq!(
        got,
        (0..200).collect::<Vec<_>>(),
        "delivered in order, once each"
    );
    // One at a time would take 200 x 10 ms on average.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

/// The backend failing every way, in both modes: closed refuses within
/// the timeout (503 `hook_unavailable`, `unavailable`); open admits and
/// routes. A session whose sends do not wait on the hook is not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_is_refused_closed_and_let_through_open() {
    let dead = format!("http://127.0.0.1:{}/hook", free_port());
    let status = Backend::start(&["--fail", "status"]);
    let timeout = Backend::start(&["--fail", "timeout"]);
    let garbage = Backend::start(&["--fail", "garbage"]);
    for (url, cause) in [
        (dead.as_str(), "unreachable"),
        (status.url.as_str(), "status"),
        (timeout.url.as_str(), "timeout"),
        (garbage.url.as_str(), "garbage"),
    ] {
        let closed = new_node()
            .flags(&hook_flags(url, &["--hook-timeout-ms", "300"]))
            .start()
            .await;
        let started = Instant::now();
        match Client::connect(&ws_url(&closed), Identity::Name("alice".into())).await {
            Err(ClientError::Refused { status, body, .. }) => {
                assert_eq!(status, 503, "{cause}");
                assert!(body.contains("hook_unavailable"), "{cause}: {body}");
            }
            other => panic!("{cause}: closed let alice in: {:?}", other.err()),
        }
        assert!(
            started.elapsed() < Duration::from_millis(1300),
            "{cause}: {:?}",
            started.elapsed()
        );
        let metrics = http(&closed, "GET", "/metrics", &[], None).await.1;
        let counted = format!(r#"switchboard_hook_failures_total{{cause="{cause}"}} 1"#);
        assert!(metrics.contains(&counted), "{cause}: {metrics}");

        // Sends only: the connection is not asked about.
        let sends_closed = new_node()
            .flags(&hook_flags(
                url,
                &["--hook-timeout-ms", "300", "--hooks", "send"],
            ))
            .start()
            .await;
        let mut alice = connect(&sends_closed, "alice").await;
        let mut carol = connect(&sends_closed, "carol").await;
        alice
            .send("carol", &json!(1), Some("s"), false)
            .await
            .unwrap();
        // carol, who sends nothing, gets her pong at once meanwhile.
        let pinged = Instant::now();
        carol.ping(Some("p")).await.unwrap();
        assert!(matches!(
            next_frame(&mut carol).await,
            ServerFrame::Pong { .. }
        ));
        assert!(
            pinged.elapsed() < Duration::from_millis(200),
            "{cause}: carol held up"
        );
        let (code, ..) = error_of(&mut alice).await;
        assert_eq!(code, ErrorCode::Unavailable, "{cause}");

        let open = new_node()
            .flags(&hook_flags(
                url,
                &["--hook-timeout-ms", "300", "--hook-failure", "open"],
            ))
            .start()
            .await;
        let mut alice = connect(&open, "alice").await;
        let mut bob = connect(&open, "bob").await;
        let ack = within(alice.ask(To::Client("bob"), &json!("hi"), false, false))
            .await
            .unwrap();
        assert_eq!(
            ack.status,
            switchboard::protocol::AckStatus::Local,
            "{cause}: open routes"
        );
        assert_eq!(message_of(&mut bob).await.body, json!("hi"));
    }
    drop((status, timeout, garbage));
}

/// The hook over https, its CA given with --backend-ca-file; without it,
/// the call fails (and closed refuses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_over_https() {
    let pki = Pki::new();
    let backend = Backend::start_with(&["--ban", "mallory"], Some(&pki));
    let ca = display(&pki.ca_cert);
    let trusted = new_node()
        .flags(&hook_flags(&backend.url, &["--backend-ca-file", &ca]))
        .start()
        .await;
    let alice = within(Client::connect(
        &ws_url(&trusted),
        Identity::Name("alice".into()),
    ))
    .await;
    assert!(alice.is_ok(), "{:?}", alice.err());
    match Client::connect(&ws_url(&trusted), Identity::Name("mallory".into())).await {
        Err(ClientError::Refused { status, .. }) => assert_eq!(status, 403),
        other => panic!("mallory got in over https: {:?}", other.err()),
    }
    let untrusted = new_node()
        .flags(&hook_flags(&backend.url, &[]))
        .start()
        .await;
    match Client::connect(&ws_url(&untrusted), Identity::Name("alice".into())).await {
        Err(ClientError::Refused { status, .. }) => assert_eq!(status, 503),
        other => panic!("an untrusted certificate was accepted: {:?}", other.err()),
    }
}

use crate::support::certs::display;
