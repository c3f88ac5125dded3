//! Who may connect: JWTs (HS256 with a secret, RS256 or EdDSA with a
//! public key; audience and issuer when configured), `?client_id=` only
//! with authentication off.

use std::time::Duration;

use crate::support::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use switchboard::auth::mint_hs256;
use switchboard::protocol::ClientId;
use switchboard_client::{Client, ClientError, Identity};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret";

async fn refused(node: &switchboard::runtime::RunningNode, identity: Identity) -> (u16, String) {
    match within(Client::connect(&ws_url(node), identity)).await {
        Err(ClientError::Refused { status, body, .. }) => (status, body),
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
    let node = new_node().flags(&["--jwt-secret", SECRET]).start().await;
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
    let node = new_node().flags(&["--jwt-secret", SECRET]).start().await;
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
    let node = new_node().flags(&["--jwt-secret", SECRET]).start().await;
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
    let node = new_node().start().await;
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
    let node = new_node().start().await;
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

/// Issuers' and nodes' clocks differ a little: a token that expired a few
/// seconds ago by the node's clock is still taken, one well past the
/// leeway is not.
#[tokio::test]
async fn clock_skew_within_the_leeway_is_forgiven() {
    use switchboard::auth::LEEWAY_SECS;
    let node = new_node().flags(&["--jwt-secret", SECRET]).start().await;
    let now = switchboard::protocol::now_ms() / 1000;
    let just_expired = token(
        json!({"sub": "alice", "exp": now - LEEWAY_SECS / 3}),
        Algorithm::HS256,
        SECRET,
    );
    assert_eq!(connects_as(&node, just_expired).await, "alice");
    let long_expired = token(
        json!({"sub": "alice", "exp": now - 3 * LEEWAY_SECS}),
        Algorithm::HS256,
        SECRET,
    );
    let (status, body) = refused(&node, Identity::Token(long_expired)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("expired"), "{body}");
}

fn signed_with(claims: &serde_json::Value, alg: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

async fn connects_as(node: &switchboard::runtime::RunningNode, token: String) -> String {
    within(Client::connect(&ws_url(node), Identity::Token(token)))
        .await
        .unwrap_or_else(|e| panic!("token refused: {e}"))
        .welcome()
        .client_id
        .clone()
}

const RS256_PUBLIC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/rs256-public.pem"
);
const RS256_PRIVATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/rs256-private.pem"
);

#[tokio::test]
async fn an_rsa_public_key_takes_rs256_tokens_and_nothing_else() {
    let node = new_node()
        .flags(&["--jwt-public-key", RS256_PUBLIC])
        .start()
        .await;
    let private = EncodingKey::from_rsa_pem(&std::fs::read(RS256_PRIVATE).unwrap()).unwrap();
    let claims = json!({"sub": "carol", "exp": in_an_hour()});
    assert_eq!(
        connects_as(&node, signed_with(&claims, Algorithm::RS256, &private)).await,
        "carol"
    );

    // The classic confusion attack: HS256 "signed" with the public key as
    // the HMAC secret. The node takes RS256 only, so it never tries.
    let public_pem = std::fs::read(RS256_PUBLIC).unwrap();
    let forged = signed_with(
        &claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(&public_pem),
    );
    let (status, body) = refused(&node, Identity::Token(forged)).await;
    assert_eq!(status, 401);
    assert!(body.contains("RS256"), "{body}");
    // Another RSA algorithm with the right key is still another algorithm.
    let ps256 = signed_with(&claims, Algorithm::PS256, &private);
    assert_eq!(refused(&node, Identity::Token(ps256)).await.0, 401);
}

#[tokio::test]
async fn an_ed25519_public_key_takes_eddsa_tokens() {
    let pki = certs::Pki::new();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let public = pki.file("ed25519-public.pem", key.public_key_pem());
    let node = new_node()
        .flags(&["--jwt-public-key", &certs::display(&public)])
        .start()
        .await;
    let private = EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).unwrap();
    let claims = json!({"sub": "dave", "exp": in_an_hour()});
    assert_eq!(
        connects_as(&node, signed_with(&claims, Algorithm::EdDSA, &private)).await,
        "dave"
    );

    // Signed by another Ed25519 key: refused.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let other = EncodingKey::from_ed_pem(other.serialize_pem().as_bytes()).unwrap();
    let (status, body) = refused(
        &node,
        Identity::Token(signed_with(&claims, Algorithm::EdDSA, &other)),
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("signature"), "{body}");
}

#[tokio::test]
async fn a_public_key_file_that_is_not_one_stops_the_node_with_the_reason() {
    let result = new_node()
        .flags(&["--jwt-public-key", RS256_PRIVATE])
        .try_start()
        .await;
    let Err(e) = result else {
        panic!("a private key was taken as the public key")
    };
    assert!(e.to_string().contains("--jwt-public-key"), "{e}");
    let result = new_node()
        .flags(&["--jwt-public-key", "/nonexistent.pem"])
        .try_start()
        .await;
    let Err(e) = result else {
        panic!("a missing file was accepted")
    };
    assert!(e.to_string().contains("cannot read"), "{e}");
}

#[tokio::test]
async fn audience_and_issuer_are_enforced_when_configured() {
    let node = new_node()
        .flags(&[
            "--jwt-secret",
            SECRET,
            "--jwt-audience",
            "chat",
            "--jwt-issuer",
            "https://id.example",
        ])
        .start()
        .await;
    let exp = in_an_hour();
    let good = json!({"sub": "erin", "exp": exp, "aud": "chat", "iss": "https://id.example"});
    assert_eq!(
        connects_as(&node, token(good, Algorithm::HS256, SECRET)).await,
        "erin"
    );
    for (claims, why) in [
        (
            json!({"sub": "erin", "exp": exp, "iss": "https://id.example"}),
            "aud",
        ),
        (
            json!({"sub": "erin", "exp": exp, "aud": "billing", "iss": "https://id.example"}),
            "audience",
        ),
        (json!({"sub": "erin", "exp": exp, "aud": "chat"}), "iss"),
        (
            json!({"sub": "erin", "exp": exp, "aud": "chat", "iss": "https://evil.example"}),
            "issuer",
        ),
    ] {
        let (status, body) = refused(
            &node,
            Identity::Token(token(claims.clone(), Algorithm::HS256, SECRET)),
        )
        .await;
        assert_eq!(status, 401, "{claims}");
        assert!(body.contains(why), "{claims}: {body}");
    }
}

#[tokio::test]
async fn an_unsigned_token_is_refused() {
    let node = new_node().flags(&["--jwt-secret", SECRET]).start().await;
    // {"alg":"none","typ":"JWT"} . {"sub":"mallory","exp":4102444800} . (no signature)
    let unsigned =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJtYWxsb3J5IiwiZXhwIjo0MTAyNDQ0ODAwfQ.";
    let (status, _) = refused(&node, Identity::Token(unsigned.into())).await;
    assert_eq!(status, 401);
}
