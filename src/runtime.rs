//! Running a node: connect its backends, listen, serve, and stop on a
//! signal. The top of the server's layers: it wires the transport
//! ([`http`], [`server`]) to a [`Node`], which assembles everything below.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::backends;
use crate::config::Config;
use crate::node::{Backends, Lifetime, Node, StartError};
use crate::{http, server, tls};

/// How long a stop may take by default: sessions, HTTP, the courier and
/// the backends, within the 10 s a process manager usually allows.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// A started node. Dropping it does not stop it; call
/// [`shutdown`](RunningNode::shutdown).
pub struct RunningNode {
    node: Arc<Node>,
    addr: SocketAddr,
    lifetime: Lifetime,
}

/// Connects the backends named by `config` and starts serving.
pub async fn start(config: Config) -> Result<RunningNode, StartError> {
    let (presence, bus) = backends::connect(
        &config.backends,
        &config.key_prefix,
        &config.subject_prefix,
        &config.node_id,
    )
    .await?;
    let inbox = match &config.inbox {
        Some(inbox) => Some(backends::connect_inbox(inbox, &config.key_prefix).await?),
        None => None,
    };
    let history = match &config.history {
        Some(history) => Some(backends::connect_history(history, &config.key_prefix).await?),
        None => None,
    };
    let backends = Backends {
        presence,
        bus,
        inbox,
        history,
    };
    start_with(config, backends).await
}

/// Starts a node on the given backends: how several nodes share one
/// in-process presence store, hub and inbox.
pub async fn start_with(config: Config, backends: Backends) -> Result<RunningNode, StartError> {
    // Certificates before the backends: a typo in a path should stop the
    // node before it touches them.
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let addr = config.listen;
    let listening = listen(addr).and_then(|l| Ok((l.local_addr()?, l)));
    let (addr, listener) = listening.map_err(|source| StartError::Listen { addr, source })?;
    let (node, lifetime) = Node::assemble(config, backends).await?;
    node.tasks().spawn(server::serve(
        listener,
        http::routes(node.clone()),
        tls,
        node.config().limits.handshake_timeout,
        node.shutdown_signal().clone(),
    ));
    tracing::info!(
        node = %node.id(),
        %addr,
        presence = node.presence().backend(),
        bus = node.bus().backend(),
        auth = node.auth().map_or("off".to_owned(), |a| format!("{:?}", a.algorithm())),
        tls = node.config().tls.is_some(),
        max_sessions = node.slots().max(),
        "node started"
    );
    Ok(RunningNode {
        node,
        addr,
        lifetime,
    })
}

/// Connections the kernel may hold completed but not yet accepted. Tokio's
/// default (1024) overflows when thousands of clients reconnect at once
/// (a node restart): overflowing connections wait a full second for the
/// SYN retransmit. The kernel caps it at net.core.somaxconn.
const LISTEN_BACKLOG: u32 = 16_384;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl RunningNode {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Stops the node (see [`Lifetime::stop`]), giving up on whatever is
    /// still running at `deadline`.
    pub async fn shutdown_by(self, deadline: Instant) {
        self.lifetime.stop(self.node, deadline).await;
    }

    /// [`shutdown_by`](Self::shutdown_by) within [`SHUTDOWN_GRACE`].
    pub async fn shutdown(self) {
        self.shutdown_by(Instant::now() + SHUTDOWN_GRACE).await;
    }

    /// Serves until SIGTERM or Ctrl-C, then shuts down.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        self.shutdown().await;
    }
}

/// Returns on SIGTERM or Ctrl-C (the tools that serve until stopped use
/// it too).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
