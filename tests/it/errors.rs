//! Every error code a client can provoke, and what each does (and does
//! not do) to the session.

use crate::support::*;
use redis::AsyncCommands;
use serde_json::json;
use switchboard::protocol::{AckFrame, Disconnect, ErrorCode, MessageFrame, ServerFrame};
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn expect_error(
    client: &mut switchboard_client::Client,
) -> (ErrorCode, Option<String>, String) {
    match next_frame(client).await {
        ServerFrame::Error {
            code, id, message, ..
        } => (code, id, message),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// After an error the session is still usable: a ping gets its pong.
async fn still_open(client: &mut switchboard_client::Client) {
    client.ping(Some("alive")).await.unwrap();
    assert_eq!(
        next_frame(client).await,
        ServerFrame::Pong {
            id: Some("alive".into())
        }
    );
}

#[tokio::test]
async fn malformed_frames_get_bad_frame_and_the_session_stays_open() {
    let node = new_node().start().await;
    let mut alice = connect(&node, "alice").await;
    for (frame, id) in [
        ("not json at all", None),
        ("[1,2,3]", None),
        (r#"{"id":"a1"}"#, Some("a1")),
        (r#"{"type":"send","body":1,"id":"a2"}"#, Some("a2")),
        (r#"{"type":"send","to":"bob","id":"a3"}"#, Some("a3")),
        (r#"{"type":"send","to":7,"body":1,"id":"a4"}"#, Some("a4")),
        (
            r#"{"type":"send","to":"bob","body":1,"receipt":"please"}"#,
            None,
        ),
        (r#"{"type":"ping","id":12}"#, None),
    ] {
        alice.send_raw(frame).await.unwrap();
        let (code, got_id, message) = expect_error(&mut alice).await;
        assert_eq!(code, ErrorCode::BadFrame, "{frame}: {message}");
        assert_eq!(got_id.as_deref(), id, "{frame}");
        assert!(!message.is_empty());
    }
    alice
        .send_message(WsMessage::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let (code, _, message) = expect_error(&mut alice).await;
    assert_eq!(code, ErrorCode::BadFrame);
    assert!(message.contains("binary"), "{message}");
    still_open(&mut alice).await;
}

#[tokio::test]
async fn unknown_types_and_invalid_recipients_are_named() {
    let node = new_node().start().await;
    let mut alice = connect(&node, "alice").await;

    alice
        .send_raw(r#"{"type":"shout","id":"s"}"#)
        .await
        .unwrap();
    let (code, id, message) = expect_error(&mut alice).await;
    assert_eq!((code, id.as_deref()), (ErrorCode::UnknownType, Some("s")));
    assert!(message.contains("shout"), "{message}");

    for bad in ["", "has space", "slash/ed", &"x".repeat(129)] {
        alice.send(bad, &json!(1), Some("r"), false).await.unwrap();
        let (code, id, _) = expect_error(&mut alice).await;
        assert_eq!(
            (code, id.as_deref()),
            (ErrorCode::InvalidRecipient, Some("r"))
        );
    }
    still_open(&mut alice).await;
}

#[tokio::test]
async fn oversized_frames_get_too_large_and_far_oversized_ones_close_1009() {
    let node = new_node()
        .flags(&["--max-frame-bytes", "1024"])
        .start()
        .await;
    let mut alice = connect(&node, "alice").await;

    let big = json!({"type": "send", "to": "bob", "body": "x".repeat(2000), "id": "big"});
    alice.send_raw(big.to_string()).await.unwrap();
    let (code, id, message) = expect_error(&mut alice).await;
    assert_eq!(code, ErrorCode::TooLarge);
    assert_eq!(id, None, "the frame was not parsed, so its id is unknown");
    assert!(message.contains("1024"), "{message}");
    still_open(&mut alice).await;

    // Past four times the limit the frame is not even read: close 1009.
    alice.send_raw("y".repeat(5000)).await.unwrap();
    assert_eq!(
        closed_with(&mut alice).await,
        Some(Disconnect::TooBig.code())
    );
}

#[tokio::test]
async fn a_body_nested_too_deep_is_refused() {
    let node = new_node().start().await;
    let mut alice = connect(&node, "alice").await;
    let deep = format!(
        r#"{{"type":"send","to":"bob","body":{}{},"id":"d"}}"#,
        "[".repeat(65),
        "]".repeat(65)
    );
    alice.send_raw(deep).await.unwrap();
    let (code, id, _) = expect_error(&mut alice).await;
    assert_eq!((code, id.as_deref()), (ErrorCode::BadFrame, Some("d")));
}

#[tokio::test]
async fn a_send_that_needs_redis_while_it_is_down_gets_unavailable() {
    let cluster = Cluster::start().await;
    let mut alice = connect(&cluster.a, "alice").await;
    let mut bob = connect(&cluster.b, "bob").await;
    let mut carol = connect(&cluster.a, "carol").await;
    // Alice's and carol's records are cached on node-a when they register,
    // unless a change of another client of the same cache shard arrives
    // meanwhile (bob's registration, broadcast from node-b): then the
    // first send between them caches them.
    let node = cluster.a.node();
    let cached = |name: &str| {
        let client = switchboard::protocol::ClientId::parse(name).unwrap();
        node.router().cached_route(&client).is_some()
    };
    for _ in 0..20 {
        if cached("alice") && cached("carol") {
            break;
        }
        deliver(
            &mut alice,
            &mut carol,
            switchboard::protocol::AckStatus::Local,
        )
        .await;
    }
    assert!(cached("alice") && cached("carol"), "never cached");
    let Cluster { redis, .. } = cluster;
    redis.stop();

    // Bob is on another node and was never looked up: that needs Redis.
    alice
        .send("bob", &json!("lost?"), Some("u"), false)
        .await
        .unwrap();
    let (code, id, message) = expect_error(&mut alice).await;
    assert_eq!((code, id.as_deref()), (ErrorCode::Unavailable, Some("u")));
    assert!(!message.is_empty());
    // Bob got nothing: his next frame is the pong he asks for.
    still_open(&mut bob).await;

    // Carol is on alice's node: found without Redis, delivered.
    alice
        .send("carol", &json!("hi"), None, false)
        .await
        .unwrap();
    assert_eq!(
        ack_status(&mut alice).await,
        switchboard::protocol::AckStatus::Local
    );
    assert!(matches!(
        next_frame(&mut carol).await,
        ServerFrame::Message(MessageFrame { .. })
    ));
}

#[tokio::test]
async fn a_corrupt_presence_record_gets_internal() {
    let cluster = Cluster::start().await;
    let mut redis = cluster.redis.connection().await;
    let _: () = redis.set("sb:presence:bob", "not a hash").await.unwrap();
    let _: () = redis
        .hset(
            "sb:presence:carol",
            "default",
            r#"{"node":"node-a","session":"nope","since":1}"#,
        )
        .await
        .unwrap();

    let mut alice = connect(&cluster.a, "alice").await;
    for (to, id) in [("bob", "i1"), ("carol", "i2")] {
        alice.send(to, &json!(1), Some(id), false).await.unwrap();
        let (code, got, _) = expect_error(&mut alice).await;
        assert_eq!((code, got.as_deref()), (ErrorCode::Internal, Some(id)));
    }
    still_open(&mut alice).await;

    let metrics = cluster.a.node().metrics().render();
    assert!(
        metrics.contains("switchboard_errors_total{code=\"internal\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sends_over_the_rate_limit_get_rate_limited() {
    let node = new_node()
        .flags(&["--rate-limit", "1", "--rate-burst", "3"])
        .start()
        .await;
    let mut alice = connect(&node, "alice").await;
    const N: usize = 13;
    for i in 0..N {
        alice
            .send("nobody", &json!(i), Some(&i.to_string()), false)
            .await
            .unwrap();
    }
    let mut limited = 0;
    for i in 0..N {
        match next_frame(&mut alice).await {
            ServerFrame::Ack(AckFrame { id, .. }) => assert_eq!(id, Some(i.to_string())),
            ServerFrame::Error { code, id, .. } => {
                assert!(i >= 3, "the burst of 3 is allowed");
                assert_eq!((code, id), (ErrorCode::RateLimited, Some(i.to_string())));
                limited += 1;
            }
            other => panic!("frame {i}: {other:?}"),
        }
    }
    // At one token a second, ten sends written back to back cannot all pass.
    assert!(limited > 0);
    // Every frame counts against the rate, pings too: the ping is answered
    // with a pong or refused with its id, and either way the session is open.
    alice.ping(Some("alive")).await.unwrap();
    match next_frame(&mut alice).await {
        ServerFrame::Pong { id } => assert_eq!(id.as_deref(), Some("alive")),
        ServerFrame::Error { code, id, .. } => {
            assert_eq!(
                (code, id.as_deref()),
                (ErrorCode::RateLimited, Some("alive"))
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_cross_node_send_while_nats_is_down_gets_unavailable() {
    let cluster = Cluster::start().await;
    let mut alice = connect(&cluster.a, "alice").await;
    let _bob = connect(&cluster.b, "bob").await;
    let Cluster { nats, a, .. } = cluster;
    nats.stop();
    eventually("node-a notices NATS is gone", || async {
        a.node().bus().ping().await.is_err()
    })
    .await;

    alice
        .send("bob", &json!(1), Some("n"), false)
        .await
        .unwrap();
    let (code, id, message) = expect_error(&mut alice).await;
    assert_eq!((code, id.as_deref()), (ErrorCode::Unavailable, Some("n")));
    assert!(message.contains("NATS"), "{message}");
}

/// A raw WebSocket to a node, to see close frames exactly as sent.
async fn raw_socket(
    node: &switchboard::runtime::RunningNode,
    name: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::StreamExt;
    let url = format!("{}/ws?client_id={name}", ws_url(node));
    let (mut ws, _) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
    assert!(
        matches!(within(ws.next()).await, Some(Ok(WsMessage::Text(_)))),
        "welcome"
    );
    ws
}

/// Issue 11, defect 3: a client's close frame is answered with a close
/// frame (RFC 6455 5.5.1), so client libraries report a normal close, not
/// 1006.
#[tokio::test]
async fn a_clients_close_frame_is_echoed_before_the_connection_ends() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let node = new_node().start().await;
    let mut ws = raw_socket(&node, "alice").await;
    ws.send(WsMessage::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    match within(ws.next()).await {
        Some(Ok(WsMessage::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the close echoed, got {other:?}"),
    }
    // Then the node ends the connection.
    assert!(within(ws.next()).await.is_none_or(|r| r.is_err()));
    eventually("the session is gone", || async {
        metric(&node, "switchboard_sessions_open").await == 0.0
    })
    .await;
}

/// A text frame that is not UTF-8 closes the session with 1007 and a
/// reason (RFC 6455 7.4.1), not with an empty close frame.
#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let node = new_node().start().await;
    let mut ws = raw_socket(&node, "alice").await;
    let invalid = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(WsMessage::Frame(invalid)).await.unwrap();
    loop {
        match within(ws.next()).await {
            Some(Ok(WsMessage::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), Disconnect::InvalidPayload.code());
                assert!(frame.reason.contains("UTF-8"), "{}", frame.reason);
                break;
            }
            Some(Ok(WsMessage::Text(_))) => {}
            other => panic!("expected a 1007 close, got {other:?}"),
        }
    }
}
