//! Routing: where does a message go?
//!
//! The router knows the three branches of the design and nothing about
//! Redis or NATS wire details (it sees the [`PresenceStore`] and [`Bus`]
//! ports):
//!
//! - `local`: the recipient's presence record names this node; the message
//!   is handed to the recipient's session here.
//! - `remote`: the record names another node; the message is published to
//!   that node's inbox on the bus.
//! - `offline`: there is no record; the message goes no further.
//!
//! It is split by responsibility:
//!
//! - [`route`]: a send's way out. Finding the branch is split in two so
//!   that a session can have many sends in flight and still keep their
//!   order: [`Router::locate`] (the presence lookup, which may run
//!   concurrently with other lookups) and [`Router::dispatch`] (the
//!   hand-over or publish, which the session calls strictly in the order
//!   the sends were read).
//! - [`outcomes`]: what became of messages: cross-node messages are
//!   tracked ([`inflight`]) until their recipient's node reports, so that a
//!   message that can no longer arrive is answered with an `offline`
//!   receipt rather than silence.
//! - [`inbound`]: hops that arrive from other nodes: messages handed to
//!   their sessions (re-routed once when a recipient moved), takeovers.
//!   [`inbox`] is the loop that reads them off the bus.
//! - [`registration`]: a session's presence record, written on open and
//!   compare-and-deleted on close, and written back after the store lost
//!   it.
//! - [`courier`]: one queue and one task that packs what this node sends
//!   to each other node into one envelope.
//!
//! The patent looks up both the sender's and the recipient's records. The
//! sender's session is on this node by construction (that is where its
//! send was read), so only the recipient is looked up. A record is only
//! believed if its node is alive ([`liveness`]): records of crashed nodes,
//! and ghosts of a node's earlier run, route `offline`.

mod cache;
pub mod courier;
mod inbound;
pub mod inbox;
mod inflight;
pub mod liveness;
mod outcomes;
mod registration;
mod route;

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::bus::{Bus, BusError};
use crate::cause::chain;
use crate::hub::{Hub, ReceiptTo};
use crate::metrics::Metrics;
use crate::presence::{PresenceError, PresenceStore};
use crate::protocol::envelope::encode_message_hop;
use crate::protocol::frames::encode_message;
use crate::protocol::{ClientId, ErrorCode, MessageHop, NodeId, ReplyTo, now_ms};

pub use self::cache::CachedRoute;
pub use self::courier::CourierTask;
pub use self::liveness::Liveness;
pub use self::outcomes::Outcomes;
pub use self::registration::Restored;

use self::cache::RouteCache;
use self::courier::Courier;
use self::inflight::InFlight;
use self::registration::Deferred;

/// Most cross-node messages one node tracks at once, awaiting outcomes.
pub const MAX_IN_FLIGHT_HOPS: usize = 1 << 18;
/// How long a cached route is trusted without being confirmed by traffic.
pub const ROUTE_CACHE_TTL: Duration = Duration::from_secs(60);
/// How many re-routes and stale-record deletes may run at once. Past that,
/// undeliverable hops are answered `offline` at once rather than queued.
const MAX_BACKGROUND: usize = 1024;

/// A message on its way, owned.
#[derive(Debug)]
pub struct Message {
    pub msg_id: Uuid,
    pub from: ClientId,
    pub to: ClientId,
    /// The `message` frame for the recipient, rendered once by the
    /// sender's node and passed along as it is.
    pub frame: Utf8Bytes,
    /// `None` for server-side sends (HTTP API): nobody to tell.
    pub receipt_to: Option<ReceiptTo>,
    /// Already re-routed once by a node that found its recipient gone.
    pub forwarded: bool,
}

impl Message {
    /// A new message, stamped now, its frame rendered.
    pub fn new(
        msg_id: Uuid,
        from: ClientId,
        to: ClientId,
        body: &RawValue,
        receipt_to: Option<ReceiptTo>,
    ) -> Self {
        let frame = encode_message(msg_id, &from, &to, body, now_ms()).into();
        Self {
            msg_id,
            from,
            to,
            frame,
            receipt_to,
            forwarded: false,
        }
    }

    /// The message as a hop, to go into an envelope.
    fn hop(&self) -> Vec<u8> {
        let reply = self.receipt_to.as_ref().map(|o| ReplyTo {
            node: o.node.clone(),
            session: o.session,
            receipt: o.receipt,
        });
        encode_message_hop(
            self.msg_id,
            &self.from,
            &self.to,
            self.forwarded,
            reply.as_ref(),
            &self.frame,
        )
    }

    fn from_hop(hop: &MessageHop<'_>, frame: Utf8Bytes) -> Self {
        Self {
            msg_id: hop.msg_id,
            from: hop.from.clone(),
            to: hop.to.clone(),
            frame,
            receipt_to: inbound::receipt_to_of(hop),
            forwarded: hop.forwarded,
        }
    }
}

/// The branch a message will take, decided from the recipient's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The record names this node (and this session id).
    Local {
        session: Uuid,
    },
    /// The record names a live node, seen in liveness `epoch`.
    Remote {
        node: NodeId,
        epoch: u64,
    },
    Offline,
}

/// A send that could not be routed; nothing was delivered or published.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{}", chain(.0))]
    Presence(#[source] PresenceError),
    #[error("{}", chain(.0))]
    Bus(#[source] BusError),
    #[error("too many messages in flight on this node")]
    TooManyInFlight,
    #[error("this node is shutting down")]
    ShuttingDown,
}

impl RouteError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RouteError::Presence(PresenceError::Corrupt { .. }) => ErrorCode::Internal,
            RouteError::Bus(BusError::TooLarge { .. }) => ErrorCode::TooLarge,
            RouteError::Presence(_)
            | RouteError::Bus(_)
            | RouteError::TooManyInFlight
            | RouteError::ShuttingDown => ErrorCode::Unavailable,
        }
    }
}

impl From<PresenceError> for RouteError {
    fn from(e: PresenceError) -> Self {
        RouteError::Presence(e)
    }
}

impl From<BusError> for RouteError {
    fn from(e: BusError) -> Self {
        RouteError::Bus(e)
    }
}

/// The ports a router routes over.
#[derive(Clone)]
pub struct Ports {
    pub presence: Arc<dyn PresenceStore>,
    pub bus: Arc<dyn Bus>,
}

/// How a router behaves: from the node's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Last-resort wait for a cross-node message's outcome.
    pub hop_timeout: Duration,
    /// Remote routes remembered; 0 turns the route cache off.
    pub route_cache: usize,
    /// The largest message frame a client of any node can cause, for
    /// checking received hops.
    pub max_message_frame: usize,
}

pub struct Router {
    node: NodeId,
    ports: Ports,
    hub: Arc<Hub>,
    liveness: Arc<Liveness>,
    cache: Arc<RouteCache>,
    outcomes: Arc<Outcomes>,
    courier: Courier,
    deferred: Deferred,
    metrics: Arc<Metrics>,
    /// Where background work (re-routes, deletes of stale records) runs:
    /// the node's task tracker, so that shutdown waits for it.
    tasks: TaskTracker,
    /// Bounds that background work, so a flood of it cannot grow without
    /// limit.
    background: Arc<Semaphore>,
    settings: Settings,
}

impl Router {
    /// A router for the node `liveness` describes, and the task that sends
    /// what it publishes (run it with [`CourierTask::run`]; it ends once
    /// the router is dropped and what it queued is sent).
    pub fn new(
        ports: Ports,
        hub: Arc<Hub>,
        liveness: Arc<Liveness>,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        settings: Settings,
    ) -> (Self, CourierTask) {
        let node = liveness.me().node.clone();
        let cache = Arc::new(RouteCache::new(settings.route_cache, ROUTE_CACHE_TTL));
        let outcomes = Arc::new(Outcomes::new(
            node.clone(),
            hub.clone(),
            InFlight::new(MAX_IN_FLIGHT_HOPS, settings.hop_timeout),
            cache.clone(),
            liveness.clone(),
            metrics.clone(),
        ));
        let (courier, task) = courier::courier(node.clone(), ports.bus.clone(), outcomes.clone());
        let router = Self {
            node,
            ports,
            hub,
            liveness,
            cache,
            outcomes,
            courier,
            deferred: Deferred::default(),
            metrics,
            tasks,
            background: Arc::new(Semaphore::new(MAX_BACKGROUND)),
            settings,
        };
        (router, task)
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// What became of messages sent from here: in-flight tracking and
    /// telling senders.
    pub fn outcomes(&self) -> &Arc<Outcomes> {
        &self.outcomes
    }

    pub fn presence(&self) -> &Arc<dyn PresenceStore> {
        &self.ports.presence
    }

    /// The route cache's entry for `client`, if any (for tests and
    /// debugging).
    pub fn cached_route(&self, client: &ClientId) -> Option<CachedRoute> {
        self.cache.get(client)
    }

    /// Runs `work` in the background (on the node's task tracker) with
    /// `permit` held.
    fn in_background<F>(&self, permit: OwnedSemaphorePermit, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(async move {
            let _permit = permit;
            work.await;
        });
    }

    /// Room for one more background task, if fewer than [`MAX_BACKGROUND`]
    /// are running.
    fn background_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.background.clone().try_acquire_owned().ok()
    }
}
