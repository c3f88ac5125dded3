//! Starting and stopping: the real binary, its startup errors, and the
//! SIGTERM drain.

mod support;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use support::*;
use switchboard::client::{Client, Identity};
use switchboard::protocol::close;

const BINARY: &str = env!("CARGO_BIN_EXE_switchboard");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and waits until it answers /healthz.
async fn start_binary(args: &[&str], port: u16) -> Running {
    let child = Command::new(BINARY)
        .args(args)
        .env_clear()
        .env("SWITCHBOARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let running = Running(child);
    eventually("the node answers", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    running
}

#[tokio::test]
async fn sigterm_closes_sessions_with_1001_deletes_presence_and_exits_in_time() {
    let redis = Redis::start();
    let nats = Nats::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (redis_url, nats_url) = (redis.url(), nats.url());
    let mut node = start_binary(
        &[
            "serve",
            "--listen",
            &listen,
            "--node-id",
            "node-x",
            "--redis-url",
            &redis_url,
            "--nats-url",
            &nats_url,
        ],
        port,
    )
    .await;
    let url = format!("ws://{listen}");
    let mut alice = within(Client::connect(&url, Identity::Name("alice".into())))
        .await
        .unwrap();
    let mut bob = within(Client::connect(&url, Identity::Name("bob".into())))
        .await
        .unwrap();
    let mut conn = redis.connection().await;
    assert!(conn.exists::<_, bool>("sb:presence:alice").await.unwrap());

    let sent = Instant::now();
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(node.0.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(closed_with(&mut alice).await, Some(close::GOING_AWAY));
    assert_eq!(closed_with(&mut bob).await, Some(close::GOING_AWAY));

    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "no exit within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
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
        assert_eq!(closed_with(client).await, Some(close::GOING_AWAY));
    }
    let mut conn = redis.connection().await;
    let keys: Vec<String> = conn.keys("sb:presence:*").await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn a_bare_invocation_serves_like_serve() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _node = start_binary(&["--listen", &listen], port).await;
    let client = within(Client::connect(
        &format!("ws://{listen}"),
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
