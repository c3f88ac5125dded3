//! Nodes that prove themselves to their backends, and clients that reach
//! nodes over TLS: NATS with a user and password, an nkey, or a
//! credentials file (operator mode); Redis with AUTH and with TLS; the
//! node's own port with native TLS. Against real servers, with keys and
//! certificates made by the test.

use crate::support::certs::{Pki, display, temp_dir};
use crate::support::*;
use serde_json::json;
use switchboard::protocol::AckStatus;
use switchboard_client::{Client, ConnectOptions, Identity};

/// Starts a node that must fail, and returns its error.
async fn start_error(flags: &[&str]) -> String {
    match new_node().flags(flags).try_start().await {
        Ok(_) => panic!("node started with {flags:?}"),
        Err(e) => switchboard::cause::chain(&e),
    }
}

/// alice on `a` sends to bob on `b`: proves both nodes publish and
/// subscribe under the credentials they were given.
async fn cross_node_message(
    a: &switchboard::runtime::RunningNode,
    b: &switchboard::runtime::RunningNode,
) {
    let mut alice = connect(a, "alice").await;
    let mut bob = connect(b, "bob").await;
    deliver(&mut alice, &mut bob, AckStatus::Remote).await;
}

#[tokio::test]
async fn nats_user_and_password_come_from_the_url_and_stay_out_of_errors() {
    let redis = Redis::start();
    let nats = Nats::start_args(&["--user", "node", "--pass", "hunter2"]);
    let r = redis.url();
    let good = format!("nats://node:hunter2@127.0.0.1:{}", nats.port());
    let start = |id: &'static str, url: String| {
        let r = r.clone();
        async move {
            new_node()
                .flags(&["--node-id", id, "--redis-url", &r, "--nats-url", &url])
                .try_start()
                .await
        }
    };
    let a = start("node-a", good.clone())
        .await
        .expect("starts with the right password");
    let b = start("node-b", good).await.unwrap();
    cross_node_message(&a, &b).await;

    let wrong = format!("nats://node:wrong-pass@127.0.0.1:{}", nats.port());
    let Err(e) = start("node-c", wrong).await else {
        panic!("a wrong password got in")
    };
    let e = e.to_string();
    assert!(e.contains("NATS") && e.contains("--nats-url"), "{e}");
    assert!(!e.contains("wrong-pass"), "the password leaked: {e}");
    let Err(e) = start("node-c", nats.url()).await else {
        panic!("no password got in")
    };
    assert!(e.to_string().contains("NATS"), "{e}");
}

#[tokio::test]
async fn nats_nkey_seed_file() {
    let dir = temp_dir("nkey");
    let user = nkeys::KeyPair::new_user();
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let seed = dir.join("node.nk");
    std::fs::write(&seed, user.seed().unwrap()).unwrap();
    let redis = Redis::start();
    let nats = Nats::start_args(&["-c", &display(&conf)]);
    let with_seed = ["--nats-nkey", &display(&seed)];
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&with_seed)
        .start()
        .await;
    let b = new_node()
        .id("node-b")
        .on(&redis, &nats)
        .flags(&with_seed)
        .start()
        .await;
    cross_node_message(&a, &b).await;

    // Another key is not let in; a file that holds no seed is named.
    let stranger = dir.join("stranger.nk");
    std::fs::write(&stranger, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let (r, n) = (redis.url(), nats.url());
    let flags = [
        "--node-id",
        "node-c",
        "--redis-url",
        &r,
        "--nats-url",
        &n,
        "--nats-nkey",
    ];
    let e = start_error(&[&flags[..], &[&display(&stranger)]].concat()).await;
    assert!(e.contains("NATS"), "{e}");
    let public = dir.join("public.nk");
    std::fs::write(&public, user.public_key()).unwrap();
    let e = start_error(&[&flags[..], &[&display(&public)]].concat()).await;
    assert!(e.contains("seed"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// NATS's decentralized auth: an operator signs an account, the account
/// signs a user, and the user's JWT and seed make a credentials file.
mod operator {
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    /// A NATS JWT: `claims` plus the common fields, signed by `issuer`.
    pub fn jwt(
        issuer: &nkeys::KeyPair,
        subject: &str,
        name: &str,
        nats: serde_json::Value,
    ) -> String {
        let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let claims = json!({
            "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
            "iat": switchboard::protocol::now_ms() / 1000,
            "iss": issuer.public_key(),
            "name": name,
            "sub": subject,
            "nats": nats,
        });
        let payload = b64(claims.to_string().as_bytes());
        let signed = format!("{header}.{payload}");
        let signature = issuer.sign(signed.as_bytes()).unwrap();
        format!("{signed}.{}", b64(&signature))
    }

    pub fn unlimited() -> serde_json::Value {
        json!({"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
               "wildcards": true, "conn": -1, "leaf": -1})
    }
}

#[tokio::test]
async fn nats_credentials_file_in_operator_mode() {
    let dir = temp_dir("creds");
    let operator_key = nkeys::KeyPair::new_operator();
    let account_key = nkeys::KeyPair::new_account();
    let user_key = nkeys::KeyPair::new_user();
    let operator_jwt = operator::jwt(
        &operator_key,
        &operator_key.public_key(),
        "test-operator",
        json!({"type": "operator", "version": 2}),
    );
    let account_jwt = operator::jwt(
        &operator_key,
        &account_key.public_key(),
        "switchboard",
        json!({"type": "account", "version": 2, "limits": operator::unlimited()}),
    );
    let user_jwt = operator::jwt(
        &account_key,
        &user_key.public_key(),
        "node",
        json!({"type": "user", "version": 2, "pub": {}, "sub": {},
               "subs": -1, "data": -1, "payload": -1}),
    );
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: {operator_jwt}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {account_jwt}\n}}\n",
            account_key.public_key()
        ),
    )
    .unwrap();
    let creds = dir.join("node.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user_key.seed().unwrap()
        ),
    )
    .unwrap();

    let redis = Redis::start();
    let nats = Nats::start_args(&["-c", &display(&conf)]);
    let with_creds = ["--nats-creds", &display(&creds)];
    let a = new_node()
        .id("node-a")
        .on(&redis, &nats)
        .flags(&with_creds)
        .start()
        .await;
    let b = new_node()
        .id("node-b")
        .on(&redis, &nats)
        .flags(&with_creds)
        .start()
        .await;
    cross_node_message(&a, &b).await;

    let (r, n) = (redis.url(), nats.url());
    let e = start_error(&["--node-id", "node-c", "--redis-url", &r, "--nats-url", &n]).await;
    assert!(e.contains("NATS"), "no credentials, no entry: {e}");
    let e = start_error(&[
        "--node-id",
        "node-c",
        "--redis-url",
        &r,
        "--nats-url",
        &n,
        "--nats-creds",
        "/nonexistent.creds",
    ])
    .await;
    assert!(e.contains("--nats-creds"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn redis_auth_comes_from_the_url_and_stays_out_of_errors() {
    let redis = Redis::start_args(&["--requirepass", "hunter2"]);
    let nats = Nats::start();
    let n = nats.url();
    let good = format!("redis://:hunter2@127.0.0.1:{}", redis.port);
    let node = new_node()
        .flags(&[
            "--node-id",
            "node-a",
            "--redis-url",
            &good,
            "--nats-url",
            &n,
        ])
        .try_start()
        .await
        .expect("starts with the password");
    let mut alice = connect(&node, "alice").await;
    alice.send("nobody", &json!(1), None, false).await.unwrap();
    assert_eq!(ack_status(&mut alice).await, AckStatus::Offline);

    let wrong = format!("redis://:wrong-pass@127.0.0.1:{}", redis.port);
    let e = start_error(&[
        "--node-id",
        "node-b",
        "--redis-url",
        &wrong,
        "--nats-url",
        &n,
    ])
    .await;
    assert!(e.contains("Redis") && e.contains("--redis-url"), "{e}");
    assert!(!e.contains("wrong-pass"), "the password leaked: {e}");
    let e = start_error(&[
        "--node-id",
        "node-b",
        "--redis-url",
        &redis.url(),
        "--nats-url",
        &n,
    ])
    .await;
    assert!(
        e.contains("Redis") && e.contains("password in the URL"),
        "{e}"
    );
}

#[tokio::test]
async fn redis_over_tls_with_a_private_ca() {
    let pki = Pki::new();
    let redis = Redis::start_tls(&pki);
    let nats = Nats::start();
    let n = nats.url();
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let ca = display(&pki.ca_cert);
    let node = new_node()
        .flags(&[
            "--node-id",
            "node-a",
            "--redis-url",
            &url,
            "--redis-ca",
            &ca,
            "--nats-url",
            &n,
        ])
        .try_start()
        .await
        .expect("starts over TLS");
    connect(&node, "alice").await;
    let (status, body) = http(&node, "GET", "/readyz", &[], None).await;
    assert_eq!(status, 200, "{body}");

    // Without the CA, the server's certificate is not trusted.
    let e = start_error(&["--node-id", "node-b", "--redis-url", &url, "--nats-url", &n]).await;
    assert!(e.contains("Redis"), "{e}");
    // Plain text to a TLS port gets nowhere either.
    let plain = format!("redis://127.0.0.1:{}", redis.port);
    let e = start_error(&[
        "--node-id",
        "node-b",
        "--redis-url",
        &plain,
        "--nats-url",
        &n,
    ])
    .await;
    assert!(e.contains("Redis"), "{e}");
}

#[tokio::test]
async fn the_node_serves_wss_with_its_own_certificate() {
    let pki = Pki::new();
    let (cert, key) = (display(&pki.server_cert), display(&pki.server_key));
    let node = new_node()
        .flags(&["--tls-cert", &cert, "--tls-key", &key])
        .start()
        .await;
    let url = format!("wss://127.0.0.1:{}", node.local_addr().port());
    let options = ConnectOptions {
        tls: Some(pki.client_tls()),
        ..ConnectOptions::default()
    };
    let connect_as = |name: &str| Client::connect_with(&url, Identity::Name(name.into()), &options);
    let mut alice = within(connect_as("alice")).await.expect("wss connects");
    let mut bob = within(connect_as("bob")).await.unwrap();
    deliver(&mut alice, &mut bob, AckStatus::Local).await;

    // A client that does not trust the CA refuses the node; plain ws://
    // to the TLS port gets no session.
    let untrusting = Client::connect(&url, Identity::Name("eve".into()));
    assert!(within(untrusting).await.is_err());
    let plain = format!("ws://127.0.0.1:{}", node.local_addr().port());
    assert!(
        within(Client::connect(&plain, Identity::Name("eve".into())))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn tls_files_that_do_not_fit_stop_the_node_with_the_reason() {
    let pki = Pki::new();
    let (cert, key, ca) = (
        display(&pki.server_cert),
        display(&pki.server_key),
        display(&pki.ca_cert),
    );
    let e = start_error(&["--tls-cert", "/nonexistent.pem", "--tls-key", &key]).await;
    assert!(e.contains("--tls-cert"), "{e}");
    let e = start_error(&["--tls-cert", &cert, "--tls-key", &cert]).await;
    assert!(e.contains("--tls-key"), "{e}");
    let other = rcgen::KeyPair::generate().unwrap();
    let other = pki.file("other-key.pem", other.serialize_pem());
    let e = start_error(&["--tls-cert", &ca, "--tls-key", &display(&other)]).await;
    assert!(e.contains("do not make a pair"), "{e}");
}
