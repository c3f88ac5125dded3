//! A node: the backends, the sessions, the router and the server, wired
//! together, started and stopped.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use uuid::Uuid;

use crate::auth::JwtVerifier;
use crate::bus::{Bus, MemoryHub, NatsBus};
use crate::config::{Backends, Config};
use crate::liveness::{DEAD_ENTRY_RETENTION, Incarnation, Liveness};
use crate::metrics::Metrics;
use crate::presence::{self, MemoryPresence, PresenceStore};
use crate::protocol::frames::max_message_frame;
use crate::protocol::{ClientId, NodeId, close};
use crate::router::{InFlight, RouteCache, Router, RouterParts, courier};
use crate::session::{SessionRegistry, Slots};
use crate::{hop, http, server, tls, upkeep};

/// How long shutdown waits for sessions to close before exiting anyway.
/// Together with the HTTP drain it keeps a stop well under 10 s.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

/// Most cross-node messages one node tracks at once, awaiting outcomes.
pub const MAX_IN_FLIGHT_HOPS: usize = 1 << 18;
/// How long a cached route is trusted without being confirmed by traffic.
pub const ROUTE_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most presence deletes kept for retry while the store is unreachable.
pub const MAX_DEFERRED_REMOVALS: usize = 1 << 16;

/// The shared state of a running node. Every session, request handler and
/// background task holds an `Arc<Node>`.
pub struct Node {
    pub id: NodeId,
    pub config: Config,
    pub presence: Arc<dyn PresenceStore>,
    pub bus: Arc<dyn Bus>,
    pub sessions: Arc<SessionRegistry>,
    pub router: Arc<Router>,
    pub liveness: Arc<Liveness>,
    pub metrics: Arc<Metrics>,
    /// `None` when authentication is off.
    pub auth: Option<JwtVerifier>,
    /// The `--max-sessions` cap.
    pub slots: Slots,
    /// Session tasks and other work that shutdown waits for.
    pub tasks: TaskTracker,
    /// Cancelled when the node begins to shut down.
    pub shutdown: CancellationToken,
    /// Set if the bus ever stops delivering this node's inbox: the node can
    /// no longer receive hops, so it must not report itself ready.
    pub inbox_closed: AtomicBool,
    /// Whether the presence store answered the last heartbeat or
    /// registration. While it does not, new sessions are refused (503).
    pub presence_ok: AtomicBool,
    /// Records of sessions that closed while presence was unreachable, to
    /// delete (compared on their session) once it is back.
    pub deferred_removals: Mutex<VecDeque<(ClientId, Uuid)>>,
}

/// Why a node did not start. The text is shown to the operator as is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// A started node. Dropping it does not stop it; call
/// [`shutdown`](RunningNode::shutdown).
pub struct RunningNode {
    node: Arc<Node>,
    addr: SocketAddr,
    server: JoinHandle<()>,
    inbox: JoinHandle<()>,
    upkeep: JoinHandle<()>,
    outcomes: JoinHandle<()>,
}

impl Node {
    /// Connects the backends named by `config` and starts serving.
    pub async fn start(config: Config) -> Result<RunningNode, StartError> {
        let (presence, bus): (Arc<dyn PresenceStore>, Arc<dyn Bus>) = match &config.backends {
            Backends::Embedded => (
                Arc::new(MemoryPresence::new()),
                Arc::new(MemoryHub::new().bus()),
            ),
            Backends::Clustered { presence, nats } => {
                let presence = presence::connect(presence, &config.key_prefix)
                    .await
                    .map_err(|e| StartError(e.to_string()))?;
                let bus = NatsBus::connect(nats, &config.subject_prefix, config.node_id.as_str())
                    .await
                    .map_err(|e| StartError(format!("{e} (check --nats-url)")))?;
                (presence, Arc::new(bus))
            }
        };
        Self::start_with(config, presence, bus).await
    }

    /// Starts a node on the given backends: how several nodes share one
    /// in-process presence store and hub.
    pub async fn start_with(
        config: Config,
        presence: Arc<dyn PresenceStore>,
        bus: Arc<dyn Bus>,
    ) -> Result<RunningNode, StartError> {
        // Keys and certificates first: a typo in a path should stop the
        // node before it touches the backends.
        let auth = config
            .jwt
            .as_ref()
            .map(JwtVerifier::new)
            .transpose()
            .map_err(StartError)?;
        let tls = config
            .tls
            .as_ref()
            .map(tls::acceptor)
            .transpose()
            .map_err(StartError)?;
        let max_sessions = config
            .limits
            .max_sessions
            .unwrap_or_else(default_max_sessions);
        let listener = listen(config.listen).map_err(|e| {
            StartError(format!(
                "cannot listen on {}: {e} (check --listen)",
                config.listen
            ))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError(format!("listener has no address: {e}")))?;

        let id = config.node_id.clone();
        let inbox = bus
            .subscribe(&id)
            .await
            .map_err(|e| StartError(format!("cannot subscribe to this node's inbox: {e}")))?;

        // The first heartbeat goes out before any session is accepted, so
        // that other nodes know this run before they see its records.
        let liveness = Arc::new(Liveness::new(Incarnation::new(id.clone()), config.node_ttl));
        let report = presence
            .heartbeat(
                &liveness.me().member(),
                config.node_ttl,
                DEAD_ENTRY_RETENTION,
            )
            .await
            .map_err(|e| StartError(format!("cannot write this node's heartbeat: {e}")))?;
        liveness.refresh(&report);

        let sessions = Arc::new(SessionRegistry::default());
        let metrics = Arc::new(Metrics::default());
        let tasks = TaskTracker::new();
        let (courier, parcels) = courier::courier();
        let router = Arc::new(Router::new(RouterParts {
            node: id.clone(),
            presence: presence.clone(),
            bus: bus.clone(),
            sessions: sessions.clone(),
            liveness: liveness.clone(),
            inflight: InFlight::new(MAX_IN_FLIGHT_HOPS, config.hop_timeout),
            cache: RouteCache::new(config.route_cache, ROUTE_CACHE_TTL),
            courier,
            metrics: metrics.clone(),
            tasks: tasks.clone(),
        }));
        let node = Arc::new(Node {
            id,
            auth,
            slots: Slots::new(max_sessions),
            config,
            presence,
            bus,
            sessions,
            router,
            liveness,
            metrics,
            tasks,
            shutdown: CancellationToken::new(),
            inbox_closed: AtomicBool::new(false),
            presence_ok: AtomicBool::new(true),
            deferred_removals: Mutex::new(VecDeque::new()),
        });
        let upkeep = tokio::spawn(upkeep::run(node.clone()));
        let outcomes = tokio::spawn(node.router.clone().run_courier(parcels));

        let inbox = tokio::spawn({
            let node = node.clone();
            async move {
                let max_frame = max_message_frame(node.config.limits.max_frame_bytes);
                hop::run(node.router.clone(), node.metrics.clone(), inbox, max_frame).await;
                node.inbox_closed.store(true, Ordering::Relaxed);
            }
        });
        let server = tokio::spawn(server::serve(
            listener,
            http::routes(node.clone()),
            tls,
            node.config.limits.handshake_timeout,
            node.shutdown.clone(),
        ));
        tracing::info!(
            node = %node.id,
            %addr,
            presence = node.presence.backend(),
            bus = node.bus.backend(),
            auth = node.auth.as_ref().map_or("off".to_owned(), |a| format!("{:?}", a.algorithm())),
            tls = node.config.tls.is_some(),
            max_sessions,
            "node started"
        );
        Ok(RunningNode {
            node,
            addr,
            server,
            inbox,
            upkeep,
            outcomes,
        })
    }
}

/// File descriptors kept for everything but sessions (backends, HTTP
/// requests, the listener) when --max-sessions is derived.
const RESERVED_FDS: usize = 256;

/// Without --max-sessions: as many as the file-descriptor limit allows,
/// less a reserve, so that the node refuses with 503 before accept(2)
/// starts failing.
fn default_max_sessions() -> usize {
    let limit = crate::process::open_files_limit().unwrap_or(1024) as usize;
    limit.saturating_sub(RESERVED_FDS).max(16)
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

impl Node {
    /// Remembers a presence delete that failed, to retry once the store is
    /// back. Bounded: past the limit the record is left for lazy cleanup
    /// (a send that finds it deletes it).
    pub fn defer_removal(&self, client: ClientId, session: Uuid) {
        let mut deferred = self
            .deferred_removals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if deferred.len() < MAX_DEFERRED_REMOVALS {
            deferred.push_back((client, session));
        }
    }
}

impl RunningNode {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Stops accepting, closes every session with 1001 (each deletes its
    /// presence record on the way out) and waits for them, at most
    /// [`SHUTDOWN_GRACE`].
    pub async fn shutdown(self) {
        let node = &self.node;
        node.shutdown.cancel();
        let open = node.sessions.all();
        tracing::info!(node = %node.id, sessions = open.len(), "shutting down");
        for session in open {
            session.outbox.close(close::GOING_AWAY);
        }
        node.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, node.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = node.sessions.len(),
                "sessions still open after the grace period; exiting anyway"
            );
        }
        let _ = self.server.await;
        self.inbox.abort();
        self.upkeep.abort();
        self.outcomes.abort();
        tracing::info!(node = %node.id, "stopped");
    }

    /// Serves until SIGTERM or Ctrl-C, then shuts down.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
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
