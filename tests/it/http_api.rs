//! The HTTP endpoints of docs/protocol.md.

use crate::support::*;
use serde_json::json;
use switchboard::protocol::{MessageFrame, ServerFrame};

const KEY: &str = "api-key-1";

#[tokio::test]
async fn healthz_and_readyz_report_the_node_and_its_backends() {
    let cluster = Cluster::start().await;
    let (status, body) = http(&cluster.a, "GET", "/healthz", &[], None).await;
    assert_eq!((status, json(&body)["status"].as_str()), (200, Some("ok")));

    let (status, body) = http(&cluster.a, "GET", "/readyz", &[], None).await;
    let body = json(&body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["node"].as_str(),
            body["presence"].as_str(),
            body["bus"].as_str()
        ),
        (Some("node-a"), Some("redis"), Some("nats"))
    );

    // readyz really asks Redis: with Redis gone it answers 503 and says why,
    // while healthz (the process is alive) stays 200.
    let Cluster { redis, a, .. } = cluster;
    redis.stop();
    let (status, body) = http(&a, "GET", "/readyz", &[], None).await;
    assert_eq!(status, 503, "{body}");
    let body = json(&body);
    assert_eq!(body["status"], "unavailable");
    assert!(body["reason"].as_str().unwrap().contains("redis"), "{body}");
    assert_eq!(http(&a, "GET", "/healthz", &[], None).await.0, 200);
}

#[tokio::test]
async fn readyz_notices_nats_going_away() {
    let cluster = Cluster::start().await;
    let Cluster { nats, a, .. } = cluster;
    nats.stop();
    eventually("readyz turns 503", || async {
        http(&a, "GET", "/readyz", &[], None).await.0 == 503
    })
    .await;
    let (_, body) = http(&a, "GET", "/readyz", &[], None).await;
    assert!(
        json(&body)["reason"].as_str().unwrap().contains("nats"),
        "{body}"
    );
}

/// A hung backend (frozen, sockets still open) is not ready either:
/// readyz makes real round trips, with a time limit.
#[tokio::test]
async fn readyz_is_503_while_a_backend_hangs() {
    let cluster = Cluster::start().await;
    for frozen in ["redis", "nats"] {
        match frozen {
            "redis" => cluster.redis.freeze(),
            _ => cluster.nats.freeze(),
        }
        let (status, body) = http(&cluster.a, "GET", "/readyz", &[], None).await;
        assert_eq!(status, 503, "{frozen} frozen: {body}");
        assert!(
            json(&body)["reason"].as_str().unwrap().contains(frozen),
            "{body}"
        );
        match frozen {
            "redis" => cluster.redis.thaw(),
            _ => cluster.nats.thaw(),
        }
        eventually("ready again", || async {
            http(&cluster.a, "GET", "/readyz", &[], None).await.0 == 200
        })
        .await;
    }
}

#[tokio::test]
async fn metrics_count_sessions_sends_by_branch_and_errors() {
    let cluster = Cluster::start().await;
    let mut alice = connect(&cluster.a, "alice").await;
    let _bob = connect(&cluster.a, "bob").await;
    let _carol = connect(&cluster.b, "carol").await;
    for to in ["bob", "carol", "nobody", "bad id"] {
        alice.send(to, &json!(1), None, false).await.unwrap();
        next_frame(&mut alice).await;
    }
    let (status, text) = http(&cluster.a, "GET", "/metrics", &[], None).await;
    assert_eq!(status, 200);
    for line in [
        "# TYPE switchboard_sessions_open gauge",
        "switchboard_sessions_open 2",
        "switchboard_sends_total{branch=\"local\"} 1",
        "switchboard_sends_total{branch=\"remote\"} 1",
        "switchboard_sends_total{branch=\"offline\"} 1",
        "switchboard_errors_total{code=\"invalid_recipient\"} 1",
        "# TYPE switchboard_route_seconds histogram",
        "switchboard_route_seconds_count 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn the_api_is_off_without_a_key() {
    let node = new_node().start().await;
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/messages",
            Some(r#"{"from":"s","to":"b","body":1}"#),
        ),
        ("GET", "/api/v1/presence/bob", None),
    ] {
        let (status, response) = http(
            &node,
            method,
            path,
            &[("Authorization", "Bearer guess")],
            body,
        )
        .await;
        assert_eq!(status, 403, "{path}");
        let response = json(&response);
        assert_eq!(response["error"], "api_disabled");
        assert!(response["message"].as_str().unwrap().contains("--api-key"));
    }
}

#[tokio::test]
async fn api_requests_need_the_right_key() {
    let node = new_node().flags(&["--api-key", KEY]).start().await;
    for auth in [None, Some("Bearer wrong"), Some("Basic xyz"), Some(KEY)] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let (status, body) = http(&node, "GET", "/api/v1/presence/bob", &headers, None).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(json(&body)["error"], "unauthorized");
    }
}

#[tokio::test]
async fn api_send_routes_like_a_client_send() {
    let cluster = Cluster::start_with(&["--api-key", KEY]).await;
    let mut bob = connect(&cluster.b, "bob").await;
    let auth = format!("Bearer {KEY}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];

    let (status, body) = http(
        &cluster.a,
        "POST",
        "/api/v1/messages",
        &headers,
        Some(r#"{"from":"system","to":"bob","body":{"notice":"maintenance at 5"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body = json(&body);
    assert_eq!(body["status"], "remote");
    let msg_id: uuid::Uuid = body["msg_id"].as_str().unwrap().parse().unwrap();

    let ServerFrame::Message(MessageFrame {
        msg_id: got,
        from,
        body,
        ..
    }) = next_frame(&mut bob).await
    else {
        panic!("expected a message")
    };
    assert_eq!((got, from.as_str()), (msg_id, "system"));
    assert_eq!(body, json!({"notice": "maintenance at 5"}));

    let (status, body) = http(
        &cluster.a,
        "POST",
        "/api/v1/messages",
        &headers,
        Some(r#"{"from":"system","to":"nobody","body":1}"#),
    )
    .await;
    assert_eq!(
        (status, json(&body)["status"].as_str()),
        (200, Some("offline"))
    );
}

#[tokio::test]
async fn api_send_refuses_bad_requests_clearly() {
    let node = new_node()
        .flags(&["--api-key", KEY, "--max-frame-bytes", "1024"])
        .start()
        .await;
    let auth = format!("Bearer {KEY}");
    let headers = [("Authorization", auth.as_str())];
    let big = format!(r#"{{"from":"s","to":"b","body":"{}"}}"#, "x".repeat(2000));
    let deep = format!(
        r#"{{"from":"s","to":"b","body":{}{}}}"#,
        "[".repeat(65),
        "]".repeat(65)
    );
    for (body, status, error) in [
        ("not json", 400, "bad_request"),
        (r#"{"from":"s","to":"b"}"#, 400, "bad_request"),
        // Bodies obey the same rules as a client's: numbers a double can
        // hold, at most 64 levels of nesting.
        (
            r#"{"from":"s","to":"b","body":[1e400]}"#,
            400,
            "bad_request",
        ),
        (deep.as_str(), 400, "bad_request"),
        (r#"{"from":"s s","to":"b","body":1}"#, 400, "invalid_sender"),
        (
            r#"{"from":"s","to":"b/c","body":1}"#,
            400,
            "invalid_recipient",
        ),
        (big.as_str(), 413, "too_large"),
    ] {
        let (got, response) = http(&node, "POST", "/api/v1/messages", &headers, Some(body)).await;
        assert_eq!(got, status, "{response}");
        assert_eq!(json(&response)["error"], error);
    }
}

#[tokio::test]
async fn api_presence_reports_where_a_client_is() {
    let cluster = Cluster::start_with(&["--api-key", KEY]).await;
    let bob = connect(&cluster.b, "bob@x").await;
    let options = switchboard_client::ConnectOptions {
        device: Some("phone".into()),
        ..Default::default()
    };
    let phone = within(switchboard_client::Client::connect_with(
        &ws_url(&cluster.a),
        switchboard_client::Identity::Name("bob@x".into()),
        &options,
    ))
    .await
    .unwrap();
    let auth = format!("Bearer {KEY}");
    let headers = [("Authorization", auth.as_str())];

    let (status, body) = http(
        &cluster.a,
        "GET",
        "/api/v1/presence/bob%40x",
        &headers,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body = json(&body);
    assert_eq!(
        (body["client_id"].as_str(), body["online"].as_bool()),
        (Some("bob@x"), Some(true))
    );
    // Every device, with its node, session and since.
    let mut devices = body["devices"].as_array().unwrap().clone();
    devices.sort_by_key(|d| d["device"].as_str().unwrap().to_owned());
    let summary: Vec<_> = devices
        .iter()
        .map(|d| {
            (
                d["device"].as_str().unwrap(),
                d["node"].as_str().unwrap(),
                d["session"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("default", "node-b", bob.welcome().session_id.to_string()),
            ("phone", "node-a", phone.welcome().session_id.to_string()),
        ]
    );
    assert!(devices.iter().all(|d| d["since"].as_u64().unwrap() > 0));

    let (status, body) = http(&cluster.a, "GET", "/api/v1/presence/nobody", &headers, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&body),
        json!({"client_id": "nobody", "online": false, "devices": []})
    );

    let (status, body) = http(&cluster.a, "GET", "/api/v1/presence/a%20b", &headers, None).await;
    assert_eq!(
        (status, json(&body)["error"].as_str()),
        (400, Some("invalid_client_id"))
    );
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let node = new_node().start().await;
    let (status, body) = http(&node, "GET", "/nope", &[], None).await;
    assert_eq!(
        (status, json(&body)["error"].as_str()),
        (404, Some("not_found"))
    );
}
