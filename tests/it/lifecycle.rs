//! Starting and stopping: the real binary, its startup errors, and the
//! SIGTERM drain.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use redis::AsyncCommands;
use switchboard::protocol::Disconnect;
use switchboard_client::{Client, Identity};

const BINARY: &str = env!("CARGO_BIN_EXE_switchboard");

/// Runs the binary to completion, failing if it takes longer than `limit`.
fn run_to_exit(args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(BINARY)
        .args(args)
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("switchboard {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

#[tokio::test]
async fn sigterm_closes_sessions_with_1001_deletes_presence_and_exits_in_time() {
    let redis = Redis::start();
    let nats = Nats::start();
    let mut node = new_node().id("node-x").on(&redis, &nats).spawn().await;
    let url = node.ws_url();
    let mut alice = within(Client::connect(&url, Identity::Name("alice".into())))
        .await
        .unwrap();
    let mut bob = within(Client::connect(&url, Identity::Name("bob".into())))
        .await
        .unwrap();
    let mut conn = redis.connection().await;
    assert!(conn.exists::<_, bool>("sb:presence:alice").await.unwrap());

    let sent = Instant::now();
    node.process.terminate();
    assert_eq!(
        closed_with(&mut alice).await,
        Some(Disconnect::GoingAway.code())
    );
    assert_eq!(
        closed_with(&mut bob).await,
        Some(Disconnect::GoingAway.code())
    );

    let status = node
        .process
        .wait_exit(Duration::from_secs(10).saturating_sub(sent.elapsed()))
        .expect("no exit within 10 s");
    assert!(status.success(), "{status}");
    for key in ["sb:presence:alice", "sb:presence:bob"] {
        assert!(
            !conn.exists::<_, bool>(key).await.unwrap(),
            "{key} left behind"
        );
    }
}

#[tokio::test]
async fn in_process_shutdown_drains_every_session() {
    let cluster = Cluster::start().await;
    let mut clients = Vec::new();
    for i in 0..50 {
        clients.push(connect(&cluster.a, &format!("c{i}")).await);
    }
    let Cluster { a, redis, .. } = cluster;
    within(a.shutdown()).await;
    for client in &mut clients {
        assert_eq!(
            closed_with(client).await,
            Some(Disconnect::GoingAway.code())
        );
    }
    let mut conn = redis.connection().await;
    let keys: Vec<String> = conn.keys("sb:presence:*").await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn a_bare_invocation_serves_like_serve() {
    let node = new_node().bare().spawn().await;
    let client = within(Client::connect(
        &node.ws_url(),
        Identity::Name("alice".into()),
    ))
    .await
    .unwrap();
    assert_eq!(client.welcome().client_id, "alice");
}

#[test]
fn help_shows_every_flag_with_its_environment_twin() {
    let (output, _) = run_to_exit(&["serve", "--help"], Duration::from_secs(10));
    let help = String::from_utf8_lossy(&output.stdout);
    for (flag, env) in [
        ("--listen", "SWITCHBOARD_LISTEN"),
        ("--node-id", "SWITCHBOARD_NODE_ID"),
        ("--redis-url", "SWITCHBOARD_REDIS_URL"),
        ("--nats-url", "SWITCHBOARD_NATS_URL"),
        ("--jwt-secret", "SWITCHBOARD_JWT_SECRET"),
        ("--api-key", "SWITCHBOARD_API_KEY"),
        ("--key-prefix", "SWITCHBOARD_KEY_PREFIX"),
        ("--subject-prefix", "SWITCHBOARD_SUBJECT_PREFIX"),
        ("--max-frame-bytes", "SWITCHBOARD_MAX_FRAME_BYTES"),
        ("--jwt-public-key", "SWITCHBOARD_JWT_PUBLIC_KEY"),
        ("--jwt-audience", "SWITCHBOARD_JWT_AUDIENCE"),
        ("--jwt-issuer", "SWITCHBOARD_JWT_ISSUER"),
        ("--allowed-origins", "SWITCHBOARD_ALLOWED_ORIGINS"),
        ("--tls-cert", "SWITCHBOARD_TLS_CERT"),
        ("--tls-key", "SWITCHBOARD_TLS_KEY"),
        ("--nats-creds", "SWITCHBOARD_NATS_CREDS"),
        ("--nats-nkey", "SWITCHBOARD_NATS_NKEY"),
        ("--redis-ca", "SWITCHBOARD_REDIS_CA"),
        ("--max-sessions", "SWITCHBOARD_MAX_SESSIONS"),
        ("--handshake-timeout-ms", "SWITCHBOARD_HANDSHAKE_TIMEOUT_MS"),
        ("--ping-interval-ms", "SWITCHBOARD_PING_INTERVAL_MS"),
        ("--idle-timeout-ms", "SWITCHBOARD_IDLE_TIMEOUT_MS"),
        ("--rate-abuse-ms", "SWITCHBOARD_RATE_ABUSE_MS"),
        ("--api-rate-limit", "SWITCHBOARD_API_RATE_LIMIT"),
        ("--max-connect-rate", "SWITCHBOARD_MAX_CONNECT_RATE"),
        ("--drain-spread-ms", "SWITCHBOARD_DRAIN_SPREAD_MS"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag}/{env} in\n{help}"
        );
    }
}

#[test]
fn configuration_mistakes_are_startup_errors_that_say_what_to_fix() {
    for (args, hint) in [
        (&["--redis-url", "redis://127.0.0.1:1"][..], "--nats-url"),
        (&["--nats-url", "nats://127.0.0.1:1"][..], "--redis-url"),
        (&["--listen", "0.0.0.0:0"][..], "--insecure-no-auth"),
        (&["--node-id", "bad.id"][..], "--node-id"),
    ] {
        let (output, _) = run_to_exit(args, Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(hint), "{args:?}: {stderr}");
    }
}

#[test]
fn unreachable_backends_are_clear_errors_not_hangs() {
    let nats = Nats::start();
    let redis = Redis::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let dead_redis = format!("redis://{dead}");
    let dead_nats = format!("nats://{dead}");
    for (redis_url, nats_url, named) in [
        (dead_redis.as_str(), nats.url(), "Redis"),
        (&redis.url(), dead_nats.clone(), "NATS"),
    ] {
        let (output, took) = run_to_exit(
            &[
                "--listen",
                "127.0.0.1:0",
                "--redis-url",
                redis_url,
                "--nats-url",
                &nats_url,
            ],
            Duration::from_secs(15),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(named) && stderr.contains(&dead), "{stderr}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
}

/// Everything secret a node handles, against everything it logs at the
/// most verbose level: tokens (valid and not, in the query and in the
/// header), the API key (right and wrong), the JWT secret and the
/// backends' passwords.
#[tokio::test]
async fn secrets_never_reach_the_logs() {
    secrets_never_reach_logs_in("text").await;
}

/// The same in `--log-format json`, where every line is also one JSON
/// object with the documented fields.
#[tokio::test]
async fn json_logs_are_one_object_per_line_and_keep_secrets_out() {
    let logs = secrets_never_reach_logs_in("json").await;
    let mut lines = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for field in ["timestamp", "level", "target"] {
            assert!(object.get(field).is_some(), "{field} missing: {line}");
        }
        lines += 1;
    }
    assert!(lines > 10, "trace-level logs were written ({lines} lines)");
    assert!(logs.contains(r#""message":"node started""#), "{logs}");
}

async fn secrets_never_reach_logs_in(format: &str) -> String {
    const SECRET: &str = "jwt-secret-hunter2";
    const API_KEY: &str = "api-key-hunter2";
    let redis = Redis::start_args(&["--requirepass", "redis-pass-hunter2"]);
    let nats = Nats::start_args(&["--user", "node", "--pass", "nats-pass-hunter2"]);
    let redis_url = format!("redis://:redis-pass-hunter2@127.0.0.1:{}", redis.port);
    let nats_url = format!("nats://node:nats-pass-hunter2@127.0.0.1:{}", nats.port());
    let log_path = std::env::temp_dir().join(format!("switchboard-log-{}", uuid::Uuid::new_v4()));
    let mut node = new_node()
        .bare()
        .urls(&redis_url, &nats_url)
        .flags(&["--jwt-secret", SECRET, "--api-key", API_KEY])
        .env("SWITCHBOARD_LOG", "trace")
        .env("SWITCHBOARD_LOG_FORMAT", format)
        .output(&log_path)
        .spawn()
        .await;
    let listen = format!("127.0.0.1:{}", node.port());

    let alice = switchboard::protocol::ClientId::parse("alice").unwrap();
    let valid = switchboard::auth::mint_hs256(SECRET, &alice, Duration::from_secs(60));
    let forged = switchboard::auth::mint_hs256("wrong-secret", &alice, Duration::from_secs(60));
    let url = format!("ws://{listen}");
    let client = within(Client::connect(&url, Identity::Token(valid.clone())))
        .await
        .unwrap();
    client.close().await.unwrap();
    assert!(
        within(Client::connect(&url, Identity::Token(forged.clone())))
            .await
            .is_err()
    );
    let addr = listen.parse().unwrap();
    let bearer = format!("Bearer {forged}");
    let (status, ..) = raw_upgrade(addr, "/ws", &[("Authorization", &bearer)]).await;
    assert_eq!(status, 401);
    for key in [API_KEY, "api-key-wrong-hunter2"] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!(
            "GET /api/v1/presence/alice HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        within(stream.read_to_end(&mut response)).await.unwrap();
    }

    node.process.terminate();
    node.process
        .wait_exit(Duration::from_secs(10))
        .expect("no exit within 10 s");
    let logs = std::fs::read_to_string(&log_path).unwrap();
    std::fs::remove_file(&log_path).unwrap();
    assert!(
        logs.contains("token=[redacted]"),
        "the refusal was logged:\n{logs}"
    );
    for secret in [valid.as_str(), forged.as_str(), SECRET, API_KEY, "hunter2"] {
        assert!(!logs.contains(secret), "{secret:?} is in the logs:\n{logs}");
    }
    logs
}
