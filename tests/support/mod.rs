//! Test harness: real redis-server and nats-server processes on free
//! loopback ports, Switchboard nodes in-process, and helpers that wait for
//! events with timeouts (never sleep-and-hope).
//!
//! Servers are stopped when their handle drops, and are also killed by the
//! kernel if the test process dies (PR_SET_PDEATHSIG), so a failed run
//! leaves nothing behind.

#![allow(dead_code)]

pub mod backends;
pub mod certs;
pub mod traffic;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use switchboard::client::{Client, Event, Identity};
use switchboard::config::{Config, ServeArgs};
use switchboard::node::{Node, RunningNode};
use switchboard::protocol::ServerFrame;

/// How long any single expected event may take before the test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Finds a server binary on PATH or in /usr/sbin (where Debian puts
/// nats-server), or fails with the command that installs it.
pub fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH or in /usr/sbin. Install the test dependencies with \
                 scripts/install-deps.sh (or: sudo apt-get install redis-server nats-server memcached)"
            )
        })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn spawn(command: &mut Command) -> Child {
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill
    // the child when this (forking) thread exits.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn().expect("cannot start a test server")
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) -> bool {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("{what} on port {port} exited: {status}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what} did not open port {port} within {EVENT_TIMEOUT:?}");
}

/// Freezes (SIGSTOP) or thaws (SIGCONT) a server: it keeps its sockets
/// open but answers nothing, like a hung process.
fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    // kill(2) only queues the signal: wait until every thread of the
    // server has really stopped (or runs again), or a request sent right
    // after a freeze may still be answered.
    let stopped = signal == libc::SIGSTOP;
    let tasks = format!("/proc/{}/task", child.id());
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let states: Vec<bool> = std::fs::read_dir(&tasks)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
            // The state follows the parenthesised command name.
            .filter_map(|stat| stat.rsplit(") ").next()?.chars().next())
            .map(|state| state == 'T' || state == 't')
            .collect();
        if !states.is_empty() && states.iter().all(|s| *s == stopped) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "signal {signal} did not take effect"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A redis-server child process.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_on(None)
    }

    /// Starts on `port` (to restart a stopped server where nodes expect it),
    /// or on a free port.
    pub fn start_on(port: Option<u16>) -> Self {
        Self::launch(port, |port| vec!["--port".into(), port.to_string()])
    }

    /// Starts with extra redis-server arguments (`--requirepass`, say).
    pub fn start_args(extra: &[&str]) -> Self {
        Self::launch(None, |port| {
            let mut args = vec!["--port".into(), port.to_string()];
            args.extend(extra.iter().map(|a| a.to_string()));
            args
        })
    }

    /// Starts serving TLS only, with the certificate of `pki`.
    pub fn start_tls(pki: &certs::Pki) -> Self {
        Self::launch(None, |port| {
            let path = |p: &std::path::Path| p.display().to_string();
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                path(&pki.server_cert),
                "--tls-key-file".into(),
                path(&pki.server_key),
                "--tls-ca-cert-file".into(),
                path(&pki.ca_cert),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        })
    }

    fn launch(port: Option<u16>, args: impl Fn(u16) -> Vec<String>) -> Self {
        let binary = find_binary("redis-server");
        for _ in 0..5 {
            let port = port.unwrap_or_else(free_port);
            let mut child = spawn(
                Command::new(&binary)
                    .args(args(port))
                    .args(["--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            if wait_for_port(port, &mut child, "redis-server") {
                return Self { child, port };
            }
        }
        panic!("redis-server would not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain connection, to look at what the nodes wrote.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis")
    }

    pub fn freeze(&self) {
        signal(&self.child, libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        signal(&self.child, libc::SIGCONT);
    }

    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A nats-server child process.
pub struct Nats {
    child: Child,
    pub port: u16,
}

impl Nats {
    pub fn start() -> Self {
        Self::start_on(None)
    }

    /// Starts on `port` (to restart a stopped server where nodes expect
    /// it), or on a port the server picks.
    pub fn start_on(port: Option<u16>) -> Self {
        Self::launch(port, &[])
    }

    /// Starts with extra nats-server arguments (`--user`, `-c FILE`, ...).
    pub fn start_args(extra: &[&str]) -> Self {
        Self::launch(None, extra)
    }

    fn launch(port: Option<u16>, extra: &[&str]) -> Self {
        let binary = find_binary("nats-server");
        // -p -1 lets the server pick a free port; it prints which.
        let port_arg = port.map_or("-1".to_owned(), |p| p.to_string());
        let mut child = spawn(
            Command::new(binary)
                .args(extra)
                .args(["-a", "127.0.0.1", "-p", &port_arg])
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                    let port = rest.trim().rsplit(':').next().and_then(|p| p.parse().ok());
                    let _ = tx.send(port);
                }
            }
        });
        let port: u16 = rx
            .recv_timeout(EVENT_TIMEOUT)
            .ok()
            .flatten()
            .expect("nats-server did not report its port");
        wait_for_port(port, &mut child, "nats-server");
        Self { child, port }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn freeze(&self) {
        signal(&self.child, libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        signal(&self.child, libc::SIGCONT);
    }

    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain NATS subscriber on `subject`, live at the server when this
/// returns. (`flush` only writes the SUB out; a probe message through the
/// same connection proves the server has processed it.)
pub async fn nats_watch(
    nats: &Nats,
    subject: &str,
) -> (async_nats::Client, async_nats::Subscriber) {
    use futures_util::StreamExt;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let watched = client.subscribe(subject.to_owned()).await.unwrap();
    let probe_subject = format!("probe.{}", uuid::Uuid::new_v4().simple());
    let mut probe = client.subscribe(probe_subject.clone()).await.unwrap();
    client.publish(probe_subject, "p".into()).await.unwrap();
    within(probe.next()).await.expect("probe comes back");
    (client, watched)
}

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: ServeArgs,
}

/// A node configuration from command-line flags, exactly as an operator
/// would give them.
pub fn config(flags: &[&str]) -> Config {
    let mut argv = vec!["switchboard"];
    // A free loopback port, unless the test names the address.
    if !flags.contains(&"--listen") {
        argv.extend_from_slice(&["--listen", "127.0.0.1:0"]);
    }
    argv.extend_from_slice(flags);
    Config::try_from(Flags::try_parse_from(argv).expect("flags parse").args).expect("valid config")
}

/// Logs of in-process nodes, when `SWITCHBOARD_TEST_LOG` is set (e.g. to
/// `switchboard=debug`): for looking into a failing test.
pub fn init_logs() {
    if let Ok(filter) = std::env::var("SWITCHBOARD_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Starts a clustered node on `redis` and `nats`.
pub async fn clustered_node(id: &str, redis: &Redis, nats: &Nats, extra: &[&str]) -> RunningNode {
    let (redis_url, nats_url) = (redis.url(), nats.url());
    let mut flags = vec![
        "--node-id",
        id,
        "--redis-url",
        &redis_url,
        "--nats-url",
        &nats_url,
    ];
    flags.extend_from_slice(extra);
    init_logs();
    Node::start(config(&flags)).await.expect("node starts")
}

/// Starts a node with no backends configured: the embedded default.
pub async fn embedded_node(flags: &[&str]) -> RunningNode {
    Node::start(config(flags)).await.expect("node starts")
}

/// A cluster for tests: one Redis, one NATS, two nodes "node-a" and
/// "node-b".
pub struct Cluster {
    pub redis: Redis,
    pub nats: Nats,
    pub a: RunningNode,
    pub b: RunningNode,
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Self {
        let redis = Redis::start();
        let nats = Nats::start();
        let a = clustered_node("node-a", &redis, &nats, extra).await;
        let b = clustered_node("node-b", &redis, &nats, extra).await;
        Self { redis, nats, a, b }
    }
}

/// A node running as a child process of the test, so that it can be
/// killed for real (SIGKILL: no clean-up, like a crash).
pub struct NodeProcess {
    child: Child,
    pub id: String,
    pub port: u16,
}

impl NodeProcess {
    pub async fn start(id: &str, redis: &Redis, nats: &Nats, extra: &[&str]) -> Self {
        Self::start_on(id, free_port(), &redis.url(), &nats.url(), extra).await
    }

    pub async fn start_on(
        id: &str,
        port: u16,
        redis_url: &str,
        nats_url: &str,
        extra: &[&str],
    ) -> Self {
        let listen = format!("127.0.0.1:{port}");
        let child = spawn(
            Command::new(env!("CARGO_BIN_EXE_switchboard"))
                .args(["serve", "--listen", &listen, "--node-id", id])
                .args(["--redis-url", redis_url, "--nats-url", nats_url])
                .args(extra)
                .env_clear()
                .env("SWITCHBOARD_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        );
        let node = Self {
            child,
            id: id.to_owned(),
            port,
        };
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "node {id} did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: the node hangs with its sockets open.
    pub fn freeze(&self) {
        signal(&self.child, libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        signal(&self.child, libc::SIGCONT);
    }

    /// SIGKILL: the node dies mid-flight, its presence records left behind.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ws_url(node: &RunningNode) -> String {
    format!("ws://{}", node.local_addr())
}

pub fn http_url(node: &RunningNode, path: &str) -> String {
    format!("http://{}{path}", node.local_addr())
}

/// `from` sends one message to `to`: the ack must name `branch`, and `to`
/// must receive it next.
pub async fn deliver(from: &mut Client, to: &mut Client, branch: switchboard::protocol::AckStatus) {
    let recipient = to.welcome().client_id.clone();
    from.send(&recipient, &serde_json::json!("delivered?"), None, false)
        .await
        .unwrap();
    assert_eq!(ack_status(from).await, branch);
    match next_frame(to).await {
        ServerFrame::Message { body, .. } => assert_eq!(body, "delivered?"),
        other => panic!("{recipient} got {other:?} instead of the message"),
    }
}

/// Connects `name` to `node` (authentication off).
pub async fn connect(node: &RunningNode, name: &str) -> Client {
    within(Client::connect(&ws_url(node), Identity::Name(name.into())))
        .await
        .unwrap_or_else(|e| panic!("{name} cannot connect: {e}"))
}

/// Awaits `future`, failing the test if it takes longer than
/// [`EVENT_TIMEOUT`].
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(EVENT_TIMEOUT, future)
        .await
        .expect("timed out waiting for an event")
}

/// The next event of `client`.
pub async fn next_event(client: &mut Client) -> Event {
    within(client.next_event()).await.expect("readable event")
}

/// The next frame of `client`; fails if the session closes instead.
pub async fn next_frame(client: &mut Client) -> ServerFrame {
    match next_event(client).await {
        Event::Frame(frame) => frame,
        Event::Closed { code, reason } => panic!("session closed ({code:?}): {reason}"),
    }
}

/// The status of the next frame, which must be an ack.
pub async fn ack_status(client: &mut Client) -> switchboard::protocol::AckStatus {
    match next_frame(client).await {
        ServerFrame::Ack { status, .. } => status,
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// Waits until the session closes and returns the close code.
pub async fn closed_with(client: &mut Client) -> Option<u16> {
    loop {
        if let Event::Closed { code, .. } = next_event(client).await {
            return code;
        }
    }
}

/// Polls `check` until it holds. For state that changes without an event
/// to wait on (a Redis key written by another task).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A minimal HTTP/1.1 client over a TCP stream: enough to call a node's
/// endpoints without pulling an HTTP client crate into the build.
pub async fn http(
    node: &RunningNode,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(node.local_addr())
        .await
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within(stream.read_to_end(&mut response)).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Parses a JSON HTTP body.
pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// A WebSocket handshake by hand: sends `GET <path>` with the upgrade
/// headers plus `headers`, and returns the status and (for refusals) the
/// body. With 101, the open stream is returned too, positioned after the
/// response headers.
pub async fn raw_upgrade(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // Byte by byte up to the blank line: nothing after it may be consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = within(stream.read_u8()).await.expect("response headers");
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    within(stream.read_exact(&mut body)).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned(), stream)
}

/// A metric's value as /metrics shows it (`name` includes any labels,
/// exactly as rendered).
pub async fn metric(node: &RunningNode, name: &str) -> f64 {
    let (_, text) = http(node, "GET", "/metrics", &[], None).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}
