//! Switchboard nodes for tests, all started one way: [`new_node()`] gives a
//! builder; `.start()` runs the node in this process (a [`RunningNode`]),
//! `.spawn()` runs the release-built binary as a child process (a
//! [`NodeProcess`], which can be SIGKILLed or frozen like a real crash or
//! hang).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use switchboard::bus::Bus;
use switchboard::config::{Config, ServeArgs};
use switchboard::presence::PresenceStore;
use switchboard::runtime::{self, RunningNode};

use super::EVENT_TIMEOUT;
use super::process::{ServerProcess, free_port};
use super::servers::{Nats, Redis};

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: ServeArgs,
}

/// A node configuration from command-line flags, exactly as an operator
/// would give them (on a free loopback port unless they name one).
pub fn config(flags: &[&str]) -> Config {
    let mut argv = vec!["switchboard"];
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

/// How to start a node; see the module comment.
#[derive(Default)]
pub struct NodeBuilder {
    flags: Vec<String>,
    port: Option<u16>,
    backends: Option<(Arc<dyn PresenceStore>, Arc<dyn Bus>)>,
    env: Vec<(String, String)>,
    /// Spawned as a bare `switchboard`, without the `serve` subcommand.
    bare: bool,
    /// Where a spawned node's stdout and stderr go (default: stderr).
    output: Option<std::path::PathBuf>,
}

/// A node with nothing configured: embedded (in-memory presence and bus)
/// until given backends.
pub fn new_node() -> NodeBuilder {
    NodeBuilder::default()
}

impl NodeBuilder {
    pub fn id(self, id: &str) -> Self {
        self.flags(&["--node-id", id])
    }

    /// Clustered on this Redis and NATS.
    pub fn on(self, redis: &Redis, nats: &Nats) -> Self {
        self.urls(&redis.url(), &nats.url())
    }

    /// Clustered on the Redis and NATS at these URLs.
    pub fn urls(self, redis_url: &str, nats_url: &str) -> Self {
        self.flags(&["--redis-url", redis_url, "--nats-url", nats_url])
    }

    /// In-process backends shared with other nodes of this process.
    pub fn backends(mut self, presence: Arc<dyn PresenceStore>, bus: Arc<dyn Bus>) -> Self {
        self.backends = Some((presence, bus));
        self
    }

    /// More flags, exactly as an operator would give them.
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// The port to listen on (default: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Spawns a bare `switchboard` (what `serve` is the default of).
    pub fn bare(mut self) -> Self {
        self.bare = true;
        self
    }

    /// Writes a spawned node's output (its logs) to `path`.
    pub fn output(mut self, path: &std::path::Path) -> Self {
        self.output = Some(path.to_owned());
        self
    }

    /// An environment variable of a spawned node.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    fn args(&self) -> Vec<&str> {
        self.flags.iter().map(String::as_str).collect()
    }

    /// Runs the node in this process.
    pub async fn start(self) -> RunningNode {
        self.try_start().await.expect("node starts")
    }

    /// Runs the node in this process, or says why it would not start.
    pub async fn try_start(mut self) -> Result<RunningNode, switchboard::node::StartError> {
        init_logs();
        let listen = self.port.map(|p| format!("127.0.0.1:{p}"));
        if let Some(listen) = &listen {
            self.flags.extend(["--listen".into(), listen.clone()]);
        }
        let config = config(&self.args());
        match self.backends.take() {
            Some((presence, bus)) => {
                let history = match &config.history {
                    Some(history) => Some(
                        switchboard::backends::connect_history(history, &config.key_prefix)
                            .await
                            .expect("history store"),
                    ),
                    None => None,
                };
                let backends = switchboard::node::Backends {
                    presence,
                    bus,
                    inbox: None,
                    history,
                };
                runtime::start_with(config, backends).await
            }
            None => runtime::start(config).await,
        }
    }

    /// Runs the binary as a child process and waits until it listens.
    pub async fn spawn(self) -> NodeProcess {
        let id = self
            .flags
            .iter()
            .position(|f| f == "--node-id")
            .map(|i| self.flags[i + 1].clone())
            .unwrap_or_else(|| "node".to_owned());
        let port = self.port.unwrap_or_else(free_port);
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        if !self.bare {
            command.arg("serve");
        }
        command
            .args(["--listen", &listen])
            .args(self.args())
            .env_clear()
            .env("SWITCHBOARD_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        match &self.output {
            Some(path) => {
                let log = std::fs::File::create(path).expect("a log file");
                command
                    .stdout(log.try_clone().expect("a log file"))
                    .stderr(log)
            }
            None => command.stdout(Stdio::null()).stderr(Stdio::inherit()),
        };
        let process = ServerProcess::spawn(&format!("switchboard {id}"), port, &mut command);
        let node = NodeProcess { process, id };
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "node {} did not start", node.id);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node
    }
}

/// A node running as a child process of the test, so that it can be
/// killed for real (SIGKILL: no clean-up, like a crash) or frozen.
pub struct NodeProcess {
    pub process: ServerProcess,
    pub id: String,
}

impl NodeProcess {
    pub fn port(&self) -> u16 {
        self.process.port
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.process.port)
    }

    /// SIGKILL: the node dies mid-flight, its presence records left behind.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGSTOP: the node hangs with its sockets open.
    pub fn freeze(&self) {
        self.process.freeze();
    }

    pub fn thaw(&self) {
        self.process.thaw();
    }
}

pub fn ws_url(node: &RunningNode) -> String {
    format!("ws://{}", node.local_addr())
}

pub fn http_url(node: &RunningNode, path: &str) -> String {
    format!("http://{}{path}", node.local_addr())
}

/// A cluster for tests: one Redis, one NATS, two nodes "node-a" and
/// "node-b" in this process.
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
        let (a, b) = Self::pair(&redis, &nats, extra).await;
        Self { redis, nats, a, b }
    }

    /// node-a and node-b on servers the test started (for flags that
    /// name them, such as `--inbox <the Redis URL>`).
    pub async fn pair(redis: &Redis, nats: &Nats, extra: &[&str]) -> (RunningNode, RunningNode) {
        let a = new_node()
            .id("node-a")
            .on(redis, nats)
            .flags(extra)
            .start()
            .await;
        let b = new_node()
            .id("node-b")
            .on(redis, nats)
            .flags(extra)
            .start()
            .await;
        (a, b)
    }
}
