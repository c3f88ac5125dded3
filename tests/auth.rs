//! Who may connect: HS256 JWTs when a secret is set, `?client_id=` only
//! with authentication off.

mod support;

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::*;
use switchboard::auth::mint_hs256;
use switchboard::client::{Client, ClientError, Identity};
use switchboard::protocol::ClientId;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret";

async fn refused(node: &switchboard::node::RunningNode, identity: Identity) -> (u16, String) {
    match within(Client::connect(&ws_url(node), identity)).await {
        Err(ClientError::Refused { status, body }) => (status, body),
        Ok(c) => panic!("connected as {:?}", c.welcome()),
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn token(claims: serde_json::Value, alg: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn in_an_hour() -> u64 {
    switchboard::protocol::now_ms() / 1000 + 3600
}

#[tokio::test]
async fn a_valid_token_in_the_query_or_header_names_the_client() {
    let node = embedded_node(&["--jwt-secret", SECRET]).await;
    let alice = ClientId::parse("alice@example.com").unwrap();
    let minted = mint_hs256(SECRET, &alice, Duration::from_secs(60));

    let client = within(Client::connect(
        &ws_url(&node),
        Identity::Token(minted.clone()),
    ))
    .await
    .unwrap();
    assert_eq!(client.welcome().client_id, "alice@example.com");
    drop(client);

    let mut request = format!("ws://{}/ws", node.local_addr())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {minted}").parse().unwrap());
    let (mut ws, response) = within(tokio_tungstenite::connect_async(request))
        .await
        .expect("bearer header accepted");
    assert_eq!(response.status(), 101);
    use futures_util::StreamExt;
    let welcome = within(ws.next()).await.unwrap().unwrap();
    let welcome: serde_json::Value = serde_json::from_str(welcome.to_text().unwrap()).unwrap();
    assert_eq!(welcome["client_id"], "alice@example.com");
}

#[tokio::test]
async fn bad_tokens_get_401_with_the_reason() {
    let node = embedded_node(&["--jwt-secret", SECRET]).await;
    let cases = [
        ("missing", None, "missing token"),
        (
            "bad signature",
            Some(token(
                json!({"sub": "alice", "exp": in_an_hour()}),
                Algorithm::HS256,
                "other",
            )),
            "signature",
        ),
        (
            "expired",
            Some(token(
                json!({"sub": "alice", "exp": in_an_hour() - 7200}),
                Algorithm::HS256,
                SECRET,
            )),
            "expired",
        ),
        (
            "no exp",
            Some(token(json!({"sub": "alice"}), Algorithm::HS256, SECRET)),
            "exp",
        ),
        (
            "wrong alg",
            Some(token(
                json!({"sub": "alice", "exp": in_an_hour()}),
                Algorithm::HS512,
                SECRET,
            )),
            "algorithm",
        ),
        (
            "alg none",
            Some(
                "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0."
                    .into(),
            ),
            "token",
        ),
        ("garbage", Some("garbage".into()), "token"),
    ];
    for (what, token, reason) in cases {
        let identity = match token {
            Some(t) => Identity::Token(t),
            // A client naming itself is not enough when auth is on.
            None => Identity::Name("alice".into()),
        };
        let (status, body) = refused(&node, identity).await;
        assert_eq!(status, 401, "{what}: {body}");
        let body = json(&body);
        assert_eq!(body["error"], "unauthorized", "{what}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(reason), "{what}: {message}");
    }
}

#[tokio::test]
async fn a_token_for_an_invalid_client_id_gets_400() {
    let node = embedded_node(&["--jwt-secret", SECRET]).await;
    let t = token(
        json!({"sub": "not valid!", "exp": in_an_hour()}),
        Algorithm::HS256,
        SECRET,
    );
    let (status, body) = refused(&node, Identity::Token(t)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["error"], "invalid_client_id");
}

#[tokio::test]
async fn with_auth_off_clients_name_themselves_within_the_rules() {
    let node = embedded_node(&[]).await;
    let client = connect(&node, "a.b-c_d@e:f").await;
    assert_eq!(client.welcome().client_id, "a.b-c_d@e:f");

    for bad in ["", "with space", "emoji🙂", &"x".repeat(129)] {
        let (status, body) = refused(&node, Identity::Name(bad.into())).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert_eq!(json(&body)["error"], "invalid_client_id");
    }
    // No name at all.
    let (status, _) = http(
        &node,
        "GET",
        "/ws",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        None,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn plain_http_on_the_websocket_endpoint_is_told_what_to_do() {
    let node = embedded_node(&[]).await;
    let (status, body) = http(&node, "GET", "/ws?client_id=alice", &[], None).await;
    assert_eq!(status, 400);
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("WebSocket")
    );
    let (status, _) = http(
        &node,
        "GET",
        "/ws?client_id=alice",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "8"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        None,
    )
    .await;
    assert_eq!(status, 426);
}
