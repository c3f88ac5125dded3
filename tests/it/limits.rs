//! What one client, one connection or one caller may take: browser
//! origins, sustained rate abuse, the HTTP API's rate, the session cap,
//! slow handshakes, keepalive pings and silent sessions. Each through a
//! real client or a real socket.

use crate::support::*;
use switchboard::protocol::{Disconnect, ErrorCode, ServerFrame};
use switchboard_client::{Client, ClientError, Event, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn pages_from_other_origins_get_403_by_default() {
    let node = new_node().start().await;
    let addr = node.local_addr();
    let path = "/ws?client_id=alice";
    let (status, body, _) = raw_upgrade(addr, path, &[("Origin", "http://evil.example")]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(json(&body)["error"], "origin_not_allowed");
    // The node's own pages (Origin names the host asked for) and programs
    // (no Origin) are let in.
    let own = format!("http://{addr}");
    assert_eq!(raw_upgrade(addr, path, &[("Origin", &own)]).await.0, 101);
    assert_eq!(raw_upgrade(addr, "/ws?client_id=bob", &[]).await.0, 101);
    assert_eq!(
        metric(
            &node,
            "switchboard_upgrades_refused_total{reason=\"origin\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn listed_origins_are_let_in_and_star_lets_in_all() {
    let node = new_node()
        .flags(&[
            "--allowed-origins",
            "https://chat.example,http://localhost:3000",
        ])
        .start()
        .await;
    let addr = node.local_addr();
    for (origin, expected) in [
        ("https://chat.example", 101),
        ("HTTPS://CHAT.EXAMPLE:443", 101),
        ("http://localhost:3000", 101),
        ("http://chat.example", 403),
        ("https://chat.example.evil", 403),
        ("null", 403),
    ] {
        let path = format!("/ws?client_id=c{expected}{}", origin.len());
        let (status, body, _) = raw_upgrade(addr, &path, &[("Origin", origin)]).await;
        assert_eq!(status, expected, "{origin}: {body}");
    }
    let any = new_node().flags(&["--allowed-origins", "*"]).start().await;
    let (status, ..) = raw_upgrade(
        any.local_addr(),
        "/ws?client_id=a",
        &[("Origin", "http://x.test")],
    )
    .await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn a_session_that_keeps_over_its_rate_is_closed_with_1008() {
    let node = new_node()
        .flags(&[
            "--rate-limit",
            "5",
            "--rate-burst",
            "5",
            "--rate-abuse-ms",
            "500",
        ])
        .start()
        .await;
    let mut mallory = connect(&node, "mallory").await;
    let mut bob = connect(&node, "bob").await;
    let (mut answered, mut limited) = (0, 0);
    // One frame, one answer, until the node has had enough: refusals never
    // pause, so half a second into them the session is closed.
    let code = within(async {
        for i in 0..1_000_000 {
            if mallory.ping(Some(&i.to_string())).await.is_err() {
                return closed_with(&mut mallory).await;
            }
            match mallory.next_event().await.unwrap() {
                Event::Frame(ServerFrame::Pong { .. }) => answered += 1,
                Event::Frame(ServerFrame::Error { code, id, .. }) => {
                    assert_eq!((code, id), (ErrorCode::RateLimited, Some(i.to_string())));
                    limited += 1;
                }
                Event::Closed { code, .. } => return code,
                other => panic!("{other:?}"),
            }
        }
        panic!("never closed");
    })
    .await;
    assert_eq!(code, Some(Disconnect::Idle.code()));
    assert!(
        answered >= 5 && limited > 0,
        "answered {answered}, limited {limited}"
    );
    assert_eq!(
        metric(
            &node,
            "switchboard_sessions_policy_closed_total{reason=\"rate_abuse\"}"
        )
        .await,
        1.0
    );
    // Others are unaffected.
    bob.ping(Some("ok")).await.unwrap();
    assert!(matches!(
        next_frame(&mut bob).await,
        ServerFrame::Pong { .. }
    ));
}

#[tokio::test]
async fn the_http_api_answers_429_beyond_its_rate() {
    let node = new_node()
        .flags(&[
            "--api-key",
            "k",
            "--api-rate-limit",
            "1",
            "--api-rate-burst",
            "2",
        ])
        .start()
        .await;
    let auth = [("Authorization", "Bearer k")];
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(http(&node, "GET", "/api/v1/presence/bob", &auth, None).await);
    }
    assert_eq!(
        (statuses[0].0, statuses[1].0),
        (200, 200),
        "the burst passes"
    );
    let (_, body) = statuses
        .iter()
        .find(|(status, _)| *status == 429)
        .expect("ten requests at one a second cannot all pass");
    assert_eq!(json(body)["error"], "rate_limited");
    let send = r#"{"from":"system","to":"bob","body":1}"#;
    let (status, _) = http(&node, "POST", "/api/v1/messages", &auth, Some(send)).await;
    assert!(status == 429 || status == 200, "{status}");
    // Callers without the key do not use up the budget: they get 401.
    let (status, _) = http(&node, "GET", "/api/v1/presence/bob", &[], None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn sessions_beyond_the_cap_get_503_until_one_leaves() {
    let node = new_node().flags(&["--max-sessions", "2"]).start().await;
    let alice = connect(&node, "alice").await;
    let _bob = connect(&node, "bob").await;
    match within(Client::connect(
        &ws_url(&node),
        Identity::Name("carol".into()),
    ))
    .await
    {
        Err(ClientError::Refused { status, body, .. }) => {
            assert_eq!(status, 503);
            assert_eq!(json(&body)["error"], "at_capacity");
        }
        other => panic!("expected 503, got {:?}", other.map(|c| c.welcome().clone())),
    }
    assert_eq!(
        metric(
            &node,
            "switchboard_upgrades_refused_total{reason=\"capacity\"}"
        )
        .await,
        1.0
    );
    alice.close().await.unwrap();
    let url = ws_url(&node);
    eventually("a slot frees up", || {
        let url = url.clone();
        async move {
            Client::connect(&url, Identity::Name("carol".into()))
                .await
                .is_ok()
        }
    })
    .await;
}

#[tokio::test]
async fn connections_that_dawdle_over_the_handshake_are_dropped() {
    let node = new_node()
        .flags(&["--handshake-timeout-ms", "200"])
        .start()
        .await;
    // One says nothing; one starts a request and never finishes it.
    let mut silent = tokio::net::TcpStream::connect(node.local_addr())
        .await
        .unwrap();
    let mut slow = tokio::net::TcpStream::connect(node.local_addr())
        .await
        .unwrap();
    slow.write_all(b"GET /ws?client_id=x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // And one finishes a request, then keeps the connection idle.
    let mut idle = tokio::net::TcpStream::connect(node.local_addr())
        .await
        .unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    for stream in [&mut silent, &mut slow, &mut idle] {
        let mut rest = Vec::new();
        // EOF (or a reset) is the node hanging up; a hang is a failure.
        let _ = within(stream.read_to_end(&mut rest)).await;
    }
    // A prompt client is unaffected.
    connect(&node, "alice").await;
}

/// Reads WebSocket frames sent by a server (unmasked) until EOF; returns
/// (opcode, payload) pairs.
async fn frames_until_eof(stream: &mut tokio::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut bytes = Vec::new();
    let _ = within(stream.read_to_end(&mut bytes)).await;
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0f;
        let (len, header) = match bytes[at + 1] & 0x7f {
            126 => (
                u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(bytes[at + 2..at + 10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let end = (at + header + len).min(bytes.len());
        frames.push((opcode, bytes[at + header..end].to_vec()));
        at = end;
    }
    frames
}

#[tokio::test]
async fn the_node_pings_and_closes_sessions_that_never_answer() {
    let node = new_node()
        .flags(&["--ping-interval-ms", "100", "--idle-timeout-ms", "500"])
        .start()
        .await;

    // A client that reads answers pings (tungstenite does it while
    // reading): it sees several pings, and outlives the idle timeout.
    let url = format!("{}/ws?client_id=alive", ws_url(&node));
    let (mut alive, _) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut pings = 0;
    while pings < 8 {
        match within(alive.next()).await.unwrap().unwrap() {
            Message::Ping(_) => pings += 1,
            Message::Text(_) => {}
            other => panic!("{other:?}"),
        }
    }
    alive
        .send(Message::Text(r#"{"type":"ping","id":"still"}"#.into()))
        .await
        .unwrap();
    loop {
        match within(alive.next()).await.unwrap().unwrap() {
            Message::Text(text) => {
                assert!(text.contains("still"), "{text}");
                break;
            }
            Message::Ping(_) => {}
            other => panic!("{other:?}"),
        }
    }

    alive.close(None).await.unwrap();

    // A client that completes the handshake and then never reads nor
    // answers: the node closes it with 1008 once the idle timeout passes.
    let (status, _, mut silent) = raw_upgrade(node.local_addr(), "/ws?client_id=silent", &[]).await;
    assert_eq!(status, 101);
    let frames = frames_until_eof(&mut silent).await;
    assert!(
        frames.iter().any(|(op, _)| *op == 0x9),
        "pinged first: {frames:?}"
    );
    let (_, payload) = frames
        .iter()
        .find(|(op, _)| *op == 0x8)
        .expect("a close frame");
    assert_eq!(
        u16::from_be_bytes([payload[0], payload[1]]),
        Disconnect::Idle.code()
    );
    assert_eq!(
        metric(
            &node,
            "switchboard_sessions_policy_closed_total{reason=\"idle\"}"
        )
        .await,
        1.0
    );
}
