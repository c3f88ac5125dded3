//! A node: the shared state its parts are built around ([`Node`]), how it
//! is assembled ([`Node::assemble`]) and stopped ([`Lifetime::stop`]), and
//! its upkeep loop ([`upkeep`]). Serving it on a port is the runtime's
//! (`crate::runtime`).
//!
//! The node is the one place that knows every part below the transport.
//! Each part gets only what it needs: sessions an
//! [`Env`](crate::session::Env), the routing services their narrow ports,
//! the HTTP layer the `Node` itself. Its [`listener`] reads what other
//! nodes send and hands each part to the service it is for.
//!
//! One cancellation tree and one task tracker own everything the node
//! runs. Stopping goes in an order that loses nothing it can keep:
//!
//! 1. the serving token is cancelled: the server stops accepting (and
//!    drains its HTTP requests), every session closes with 1001 and
//!    deletes its presence record (acks-mode sessions detach instead), the
//!    upkeep stops;
//! 2. once the sessions' slots are back, it waits a moment for the
//!    detached sessions to be resumed on other nodes, passes the rest on
//!    to other nodes (`Adopt`), and keeps forwarding a moment for sessions
//!    it handed over;
//! 3. the root token (the node's lifetime) stops the node receiving hops
//!    (its subscription is dropped);
//! 4. with every task done with them, the routing services are dropped;
//!    the courier then sends what is still queued (the last outcomes) and
//!    ends;
//! 5. the bus and the presence store are closed.

pub mod admission;
mod listener;
pub mod status;
mod upkeep;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::listener::Ended;
use crate::auth::{JwtVerifier, KeyError};
use crate::backends::webhook::POST_TIMEOUT;
use crate::bus::{Bus, BusError};
use crate::config::Config;
use crate::health::Health;
use crate::http_client::HttpClient;
use crate::hub::{Hub, QueueLimits, Slots};
use crate::inbox::InboxStore;
use crate::metrics::Metrics;
use crate::presence::{PresenceError, PresenceStore};
use crate::protocol::NodeId;
use crate::protocol::frames::max_message_frame;
use crate::routing::liveness::{DEAD_ENTRY_RETENTION, Incarnation};
use crate::routing::{
    Background, Detached, Liveness, Ports, Registrar, Resumption, Router, Settings, WatchPorts,
    WatchSettings, Watches,
};
use crate::session::Env;

/// Why a node did not start. Shown to the operator with its causes
/// ([`crate::cause::chain`]); each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr} (check --listen)")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Connect(#[from] crate::backends::ConnectError),
    #[error("cannot subscribe to this node's subject")]
    Subscribe(#[source] BusError),
    #[error("cannot write this node's heartbeat")]
    Heartbeat(#[source] PresenceError),
    #[error(transparent)]
    HttpClient(#[from] crate::http_client::HttpClientError),
}

/// The backends a node runs on, connected (see [`crate::backends`]).
#[derive(Clone)]
pub struct Backends {
    pub presence: Arc<dyn PresenceStore>,
    pub bus: Arc<dyn Bus>,
    /// Store-and-forward (v2), when configured (`--inbox`).
    pub inbox: Option<Arc<dyn InboxStore>>,
    /// Conversations (v3), when configured (`--history`).
    pub history: Option<Arc<dyn crate::history::HistoryStore>>,
}

/// The shared state of a running node, as the HTTP layer and the node's
/// own background work see it.
pub struct Node {
    config: Config,
    backends: Backends,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// `None` when authentication is off.
    auth: Option<JwtVerifier>,
    /// The `--max-sessions` cap.
    slots: Slots,
    /// The `--max-connect-rate` admission (v3).
    connects: admission::ConnectLimiter,
    /// Every task the node starts (sessions, background work): shutdown
    /// waits for them.
    tasks: TaskTracker,
    /// Cancelled when the node begins to shut down.
    shutdown: CancellationToken,
    /// What each session is given: the routing services among it.
    session_env: Arc<Env>,
}

impl Node {
    pub fn id(&self) -> &NodeId {
        &self.config.node_id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn presence(&self) -> &Arc<dyn PresenceStore> {
        &self.backends.presence
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.backends.bus
    }

    /// The inbox, when the node has one (for `/readyz`).
    pub fn inbox(&self) -> Option<&Arc<dyn InboxStore>> {
        self.backends.inbox.as_ref()
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.session_env.router
    }

    pub fn registrar(&self) -> &Arc<Registrar> {
        &self.session_env.registrar
    }

    pub fn resumption(&self) -> &Arc<Resumption> {
        &self.session_env.resumption
    }

    pub fn watches(&self) -> &Arc<Watches> {
        &self.session_env.watches
    }

    /// History (v3), when the node keeps it.
    pub fn history(&self) -> Option<&Arc<crate::routing::History>> {
        self.session_env.history.as_ref()
    }

    /// The backend hooks (v3), when configured.
    pub fn gate(&self) -> Option<&Arc<crate::routing::Gate>> {
        self.session_env.gate.as_ref()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn auth(&self) -> Option<&JwtVerifier> {
        self.auth.as_ref()
    }

    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// How many new sessions a second this node admits.
    pub fn connects(&self) -> &admission::ConnectLimiter {
        &self.connects
    }

    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Whether the node has begun to shut down.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    pub fn session_env(&self) -> &Arc<Env> {
        &self.session_env
    }

    /// Cancelled when the node begins to shut down: what serves clients
    /// (the accept loop, sessions) stops.
    pub fn shutdown_signal(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Sessions open on this node.
    pub fn sessions(&self) -> usize {
        self.router().hub().len()
    }
}

/// The root of a node's cancellation tree, held by whoever runs the node:
/// with it, and only with it, the node is stopped.
pub struct Lifetime(CancellationToken);

impl Node {
    /// Assembles a node on `backends` and starts its background work (the
    /// courier, the upkeep, the listener); the caller serves it.
    pub async fn assemble(
        config: Config,
        backends: Backends,
    ) -> Result<(Arc<Node>, Lifetime), StartError> {
        // Keys first: a typo in a path should stop the node before it
        // touches the backends.
        let auth = config.jwt.as_ref().map(JwtVerifier::new).transpose()?;
        let max_sessions = config
            .limits
            .max_sessions
            .unwrap_or_else(default_max_sessions);
        let id = config.node_id.clone();
        let subscription = backends
            .bus
            .subscribe(&id)
            .await
            .map_err(StartError::Subscribe)?;

        // The first heartbeat goes out before any session is accepted, so
        // that other nodes know this run before they see its records.
        let liveness = Arc::new(Liveness::new(Incarnation::new(id.clone()), config.node_ttl));
        let report = backends
            .presence
            .heartbeat(
                &liveness.me().member(),
                config.node_ttl,
                DEAD_ENTRY_RETENTION,
            )
            .await
            .map_err(StartError::Heartbeat)?;
        liveness.refresh(&report);

        if config.resume.is_none() {
            tracing::info!(
                "acks-mode resume is off: a clustered node needs --resume-secret (the same on \
                 every node), and --resume-window-ms must not be 0"
            );
        }

        // The tree: the node's lifetime, and beneath it the serving of
        // sessions, which stops first.
        let lifetime = CancellationToken::new();
        let shutdown = lifetime.child_token();
        let tasks = TaskTracker::new();
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(Health::default());
        // The one HTTP client for the application's backend (the webhook,
        // the hooks), when there is one to call.
        let http = (config.events.webhook.is_some() || config.hooks.is_some())
            .then(|| HttpClient::new(config.backend_ca_file.as_deref(), POST_TIMEOUT))
            .transpose()?;
        let application =
            Application {
                events: start_events(
                    &config,
                    &backends.bus,
                    &metrics,
                    &tasks,
                    &lifetime,
                    http.as_ref(),
                ),
                gate: config.hooks.as_ref().zip(http).map(|(hooks, http)| {
                    gate(hooks, config.limits.max_frame_bytes, http, &metrics)
                }),
            };
        let (session_env, courier) = routing(
            &config,
            &backends,
            application,
            liveness,
            &metrics,
            &health,
            &tasks,
            (&lifetime, &shutdown),
        );
        // Before any session of this run watches anything.
        session_env.watches.forget_earlier_runs().await;
        let node = Arc::new(Node {
            auth,
            slots: Slots::new(max_sessions),
            connects: admission::ConnectLimiter::new(config.limits.max_connect_rate),
            config,
            backends,
            metrics,
            health,
            tasks,
            shutdown,
            session_env,
        });

        let tasks = &node.tasks;
        tasks.spawn(courier.run());
        tasks.spawn(upkeep::run(node.clone()));
        tasks.spawn({
            let (node, health) = (node.clone(), node.health.clone());
            let max_frame = max_message_frame(node.config.limits.max_frame_bytes);
            let stop = lifetime.clone();
            async move {
                if listener::run(node, subscription, max_frame, stop).await == Ended::Closed {
                    health.inbox_closed();
                }
            }
        });
        Ok((node, Lifetime(lifetime)))
    }
}

/// The routing services, composed on the node's backends, and what each
/// session is given of them; and the courier's task.
#[allow(clippy::too_many_arguments)]
fn routing(
    config: &Config,
    backends: &Backends,
    application: Application,
    liveness: Arc<Liveness>,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    tasks: &TaskTracker,
    (lifetime, shutdown): (&CancellationToken, &CancellationToken),
) -> (Arc<Env>, crate::routing::CourierTask) {
    let presence = &backends.presence;
    let ports = Ports {
        records: presence.clone(),
        groups: presence.clone(),
        last_seen: presence.clone(),
        bus: backends.bus.clone(),
        inbox: backends.inbox.clone(),
        events: application.events,
    };
    let settings = Settings {
        hop_timeout: config.hop_timeout,
        bus_linger: config.bus_linger,
        route_cache: config.route_cache,
        last_seen_ttl: config.last_seen_ttl,
    };
    let background = Background::new(tasks.clone());
    let (router, courier) = Router::new(
        ports,
        Arc::new(Hub::default()),
        liveness,
        metrics.clone(),
        background,
        settings,
    );
    let router = Arc::new(router);
    let watches = Watches::new(
        router.clone(),
        WatchPorts {
            store: presence.clone(),
            contacts: presence.clone(),
            groups: presence.clone(),
            last_seen: presence.clone(),
        },
        WatchSettings {
            coalesce: config.watching.coalesce,
            max_watched: config.watching.max_watched,
            open: config.jwt.is_none(),
            invisible_ttl: config.last_seen_ttl,
        },
    );
    watches.start(lifetime.clone(), backends.bus.generation());
    // Watchers see a client offline once its last-seen is written. Weak:
    // the router's services must not keep the watches alive.
    let settled = Arc::downgrade(&watches);
    router
        .offline()
        .when_last_seen_settled(Box::new(move |clients| {
            if let Some(watches) = settled.upgrade() {
                for client in clients {
                    watches.changed(client);
                }
            }
        }));
    let detached = Arc::new(Detached::new(metrics.clone()));
    let registrar = Arc::new(Registrar::new(
        router.clone(),
        presence.clone(),
        detached.clone(),
        watches.clone(),
    ));
    let queue = QueueLimits {
        frames: config.limits.session_queue,
        bytes: config.limits.session_queue_bytes,
    };
    let resumption = Arc::new(Resumption::new(
        router.clone(),
        registrar.clone(),
        detached,
        watches.clone(),
        queue,
    ));
    let history = backends
        .history
        .as_ref()
        .map(|store| crate::routing::History::new(store.clone(), presence.clone(), router.clone()));
    let env = Arc::new(Env {
        node: config.node_id.clone(),
        router,
        registrar,
        resumption,
        watches,
        history,
        gate: application.gate,
        limits: config.limits.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        shutdown: shutdown.clone(),
        signal_rate: config.watching.signal_rate,
        resume: config.resume.as_ref().map(|r| crate::session::Resume {
            keys: crate::resume::ResumeKeys::new(r.secret.expose()),
            window: r.window,
        }),
    });
    (env, courier)
}

impl Lifetime {
    /// Stops `node` (see the module comment), giving up on whatever is
    /// still running at `deadline`.
    pub async fn stop(self, node: Arc<Node>, deadline: Instant) {
        tracing::info!(node = %node.id(), sessions = node.sessions(), "shutting down");
        node.shutdown.cancel();
        if tokio::time::timeout_at(deadline, node.slots.all_returned())
            .await
            .is_err()
        {
            tracing::warn!(
                left = node.sessions(),
                "sessions still open at the shutdown deadline; stopping anyway"
            );
        }
        // Acks-mode sessions closed with 1001 are detached: their clients
        // resume them on other nodes, which take what was kept for them
        // from here. Wait a moment for that; pass the rest on to other
        // nodes (a client that comes back later, even here after the
        // restart, finds them there); what no node takes by shortly before
        // the deadline is answered `offline` (shutting_down).
        let resumption = node.resumption().clone();
        let give_up = deadline
            .checked_sub(DRAIN_RESERVE)
            .unwrap_or_else(Instant::now);
        // Clients asked to wait before reconnecting (--drain-spread-ms)
        // get that long more.
        let spread = node.config().limits.drain_spread;
        // The pass-on needs time of its own before the deadline.
        let pass_on_from = give_up
            .checked_sub(PASS_ON_RESERVE)
            .unwrap_or_else(Instant::now);
        let wait_until = pass_on_from.min(Instant::now() + DRAIN_WAIT_FOR_RESUMES + spread);
        if !resumption.resumed_by(wait_until).await {
            // Upkeep has stopped: look at which nodes are alive now, to
            // pass sessions on only to those (and to all of them).
            if let Err(e) = upkeep::beat(&node).await {
                tracing::warn!(error = %crate::cause::chain(&e), "no fresh view of the live nodes; passing sessions on by the last one");
            }
            // Ends by the deadline by itself (what is left is answered
            // offline); the timeout is a last resort against a stuck peer.
            let passed =
                tokio::time::timeout_at(deadline, resumption.pass_on_detached(give_up)).await;
            if passed.is_err() || resumption.detached_sessions() > 0 {
                tracing::warn!(
                    left = resumption.detached_sessions(),
                    "detached sessions neither resumed nor passed on by the drain deadline; answering offline"
                );
            }
        }
        resumption.drain_over().cancel();
        // Sessions handed over: senders whose routes still name this node
        // (their caches learn of the move by broadcast, a moment later)
        // are still forwarded to the new nodes for a short while, instead
        // of bouncing off a node that has gone.
        if node.router().moved().any() {
            let until = give_up.min(Instant::now() + FORWARD_GRACE);
            tokio::time::sleep_until(until).await;
            // Outcomes of what those sessions sent from here still come
            // here, and their receipts follow the sessions: wait for them
            // (each is answered by the hop timeout at the latest).
            let outcomes = node.router().outcomes();
            if tokio::time::timeout_at(give_up, outcomes.moved_senders_answered())
                .await
                .is_err()
            {
                tracing::warn!(
                    "outcomes owed to sessions that moved still awaited at the drain deadline; \
                     answering them offline"
                );
                outcomes.give_up_on_moved_senders();
            }
        }
        drop(resumption);
        self.0.cancel();
        let (tasks, backends, id) = (node.tasks.clone(), node.backends.clone(), node.id().clone());
        // The routing services go with the last task that holds them; the
        // courier then drains its queue and ends.
        drop(node);
        tasks.close();
        if tokio::time::timeout_at(deadline, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = tasks.len(),
                "tasks still running at the shutdown deadline"
            );
        }
        backends.bus.close().await;
        backends.presence.close().await;
        tracing::info!(node = %id, "stopped");
    }
}

/// Events in a NATS sink's queue at most (publishes are quick: it only
/// fills while NATS is away).
const NATS_EVENT_QUEUE: usize = 16_384;

/// What the node tells the application's backend (events) and asks it
/// (the hooks, v3).
struct Application {
    events: crate::events::Events,
    gate: Option<Arc<crate::routing::Gate>>,
}

/// The backend hooks, over HTTP.
fn gate(
    hooks: &crate::config::HookConfig,
    max_frame_bytes: usize,
    http: HttpClient,
    metrics: &Arc<Metrics>,
) -> Arc<crate::routing::Gate> {
    let backend = crate::backends::HttpHooks::new(
        hooks.url.expose(),
        hooks.secret.expose(),
        hooks.timeout,
        http,
    );
    let settings = crate::routing::GateSettings {
        connect: hooks.connect,
        send: hooks.send,
        timeout: hooks.timeout,
        concurrency: hooks.concurrency,
        on_failure: if hooks.closed {
            crate::routing::OnFailure::Closed
        } else {
            crate::routing::OnFailure::Open
        },
        max_body_bytes: max_frame_bytes,
    };
    Arc::new(crate::routing::Gate::new(
        Arc::new(backend),
        settings,
        metrics.clone(),
    ))
}

/// The node's event sinks, as configured: NATS subjects (clustered nodes,
/// unless `--events false`) and the webhook (with `http`).
fn start_events(
    config: &Config,
    bus: &Arc<dyn Bus>,
    metrics: &Arc<Metrics>,
    tasks: &TaskTracker,
    lifetime: &CancellationToken,
    http: Option<&HttpClient>,
) -> crate::events::Events {
    let mut sinks: Vec<(Arc<dyn crate::events::EventSink>, usize)> = Vec::new();
    if config.events.nats {
        sinks.push((
            Arc::new(crate::backends::BusEvents(bus.clone())),
            NATS_EVENT_QUEUE,
        ));
    }
    if let (Some(webhook), Some(client)) = (&config.events.webhook, http) {
        let prefix = &config.subject_prefix;
        let sink = crate::backends::Webhook::new(webhook, prefix, metrics.clone(), client.clone());
        sinks.push((Arc::new(sink), webhook.queue));
    }
    if sinks.is_empty() {
        return crate::events::Events::off();
    }
    crate::events::Events::start(sinks, metrics.clone(), tasks, lifetime.clone())
}

/// Time kept at the end of a drain for what follows the wait for detached
/// sessions (answering what they kept, closing the backends).
const DRAIN_RESERVE: Duration = Duration::from_secs(1);
/// How long a drain waits for its detached sessions to be resumed before
/// it passes them on to other nodes.
const DRAIN_WAIT_FOR_RESUMES: Duration = Duration::from_secs(2);
/// What a draining node keeps of its grace for passing sessions on.
const PASS_ON_RESERVE: Duration = Duration::from_secs(1);
/// How long a draining node that handed sessions over keeps forwarding
/// what still arrives for them, before it stops reading its inbox.
const FORWARD_GRACE: Duration = Duration::from_secs(1);

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
