//! Routing: where does a message go?
//!
//! The router knows the three branches of the design and nothing about
//! Redis or NATS wire details (it sees the [`PresenceStore`] and [`Bus`]
//! ports). A client may be online on several devices (v2), so a
//! recipient's record holds one session per device, and the branch is
//! taken per session:
//!
//! - `local`: a session on this node; the message is handed to it here.
//! - `remote`: a session on another node; the message is published to
//!   that node's subject, **one** hop per node carrying every recipient
//!   session there.
//! - `offline`: no session at all; the message goes no further.
//!
//! It is split by responsibility:
//!
//! - [`route`]: a send's way out. Finding the sessions is split in two so
//!   that a session can have many sends in flight and still keep their
//!   order: [`Router::locate`] (the presence lookup, which may run
//!   concurrently with other lookups) and [`Router::dispatch`] (the
//!   hand-overs and publishes, which the session calls strictly in the
//!   order the sends were read). [`cache`] spares most lookups.
//! - [`delivery`]: what happens to a message handed to sessions here: each
//!   target's fate goes back to its sender ([`Handover`]).
//! - [`outcomes`]: what became of messages sent from here: cross-node
//!   messages are tracked per target ([`inflight`]) until their nodes
//!   report, so that a message that can no longer arrive is answered with
//!   an `offline` receipt rather than silence.
//! - [`inbound`]: hops that arrive from other nodes: messages handed to
//!   their sessions (re-routed once when a device moved), takeovers,
//!   invalidations. [`listener`] is the loop that reads them off the bus.
//! - [`registration`]: a session's device field in presence, written on
//!   open (refused beyond `--max-devices`) and compare-and-deleted on
//!   close, and written back after the store lost it.
//! - [`courier`]: one queue and one task that packs what this node sends
//!   to each other node into one envelope, and broadcasts changes.
//!
//! The patent looks up both the sender's and the recipient's records. The
//! sender's session is on this node by construction (that is where its
//! send was read); its record is read (with the recipient's, in the same
//! round trip, when neither is cached) only for its other devices, which
//! get a carbon copy. A record is only believed if its node is alive
//! ([`liveness`]): records of crashed nodes, and ghosts of a node's
//! earlier run, route `offline`.

mod cache;
pub mod courier;
mod delivery;
mod detached;
mod groups;
mod inbound;
mod inflight;
pub mod listener;
pub mod liveness;
mod offline;
mod outcomes;
mod registration;
mod route;
mod takeover;

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::bus::{Bus, BusError};
use crate::cause::chain;
use crate::events::Events;
use crate::hub::{Handover, Hub, Sender};
use crate::inbox::InboxStore;
use crate::metrics::Metrics;
use crate::presence::{PresenceError, PresenceStore};
use crate::protocol::frames::encode_message;
use crate::protocol::{ClientId, ErrorCode, NodeId, Recipient, now_ms};

pub use self::cache::{CachedDevice, CachedRoute};
pub use self::courier::CourierTask;
pub use self::groups::{MEMBERS_TTL, Members};
pub use self::liveness::Liveness;
pub use self::offline::{INBOX_LEASE, Offline, Stored};
pub use self::outcomes::Outcomes;
pub use self::registration::{RegisterError, Restored};
pub use self::route::{Route, Sent};

use self::cache::RouteCache;
use self::courier::Courier;
use self::detached::Detached;
use self::groups::MemberCache;
use self::inflight::InFlight;
use self::registration::Deferred;
use self::takeover::Moved;
pub use self::takeover::TakeOverError;

/// A session handed over, and the kept messages whose senders are to hear
/// where they went.
type PendingForward = (Arc<crate::hub::SessionHandle>, NodeId, Vec<Arc<Handover>>);

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
    pub to: Recipient,
    /// The `message` frame for the recipients, rendered once by the
    /// sender's node and passed along as it is.
    pub frame: Utf8Bytes,
    /// The sending session. `None` for server-side sends (HTTP API):
    /// nobody to tell, and no carbons.
    pub sender: Option<Sender>,
    /// The send asked for the inbox (`"store": true`) should the
    /// recipient be offline.
    pub store: bool,
}

impl Message {
    /// A new message, stamped now, its frame rendered.
    pub fn new(
        msg_id: Uuid,
        from: ClientId,
        to: Recipient,
        body: &RawValue,
        sender: Option<Sender>,
    ) -> Self {
        let frame = encode_message(msg_id, &from, to.addressee(), body, now_ms()).into();
        Self {
            msg_id,
            from,
            to,
            frame,
            sender,
            store: false,
        }
    }

    /// The recipient client, for a message to a client.
    pub fn client(&self) -> Option<&ClientId> {
        match &self.to {
            Recipient::Client(client) => Some(client),
            Recipient::Group(_) => None,
        }
    }
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
    /// Only a member may send to a group.
    #[error("only members may send to this group")]
    NotMember,
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
            RouteError::NotMember => ErrorCode::NotMember,
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
    /// Store-and-forward (v2), when the node has one (`--inbox`).
    pub inbox: Option<Arc<dyn InboxStore>>,
    /// Where events go (v2); [`Events::off`] for none.
    pub events: Events,
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
    /// The bounds of a session's queue (for sessions adopted from a
    /// draining node).
    pub session_queue: crate::hub::QueueLimits,
    /// How long a client's last-seen record is kept.
    pub last_seen_ttl: Duration,
}

pub struct Router {
    node: NodeId,
    ports: Ports,
    hub: Arc<Hub>,
    liveness: Arc<Liveness>,
    cache: Arc<RouteCache>,
    /// Groups' members, as last read.
    groups: MemberCache,
    /// Acks-mode sessions kept for a resume.
    detached: Detached,
    /// Sessions handed to other nodes lately, to forward to.
    moved: Moved,
    /// Hand-overs answered whose senders are still to be told.
    pending_forwards: std::sync::Mutex<Vec<PendingForward>>,
    /// Cancelled when a draining node stops keeping detached sessions.
    drain_over: tokio_util::sync::CancellationToken,
    outcomes: Arc<Outcomes>,
    courier: Courier,
    deferred: Deferred,
    /// Inbox entries delivered, to delete.
    delivered: Arc<offline::Delivered>,
    /// Last-seen records to write.
    last_seen: offline::LastSeenWriter,
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
            ports.events.clone(),
        ));
        let (courier, task) = courier::courier(node.clone(), ports.bus.clone(), outcomes.clone());
        let (last_seen, writer) =
            offline::LastSeenWriter::new(ports.presence.clone(), settings.last_seen_ttl);
        tasks.spawn(writer);
        let router = Self {
            node,
            ports,
            hub,
            liveness,
            cache,
            groups: MemberCache::default(),
            detached: Detached::default(),
            moved: Moved::default(),
            pending_forwards: std::sync::Mutex::default(),
            drain_over: tokio_util::sync::CancellationToken::new(),
            outcomes,
            courier,
            deferred: Deferred::default(),
            delivered: Arc::default(),
            last_seen,
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

    /// Cancelled when this node, draining, gives up keeping detached
    /// sessions.
    pub fn drain_over(&self) -> &tokio_util::sync::CancellationToken {
        &self.drain_over
    }

    pub fn presence(&self) -> &Arc<dyn PresenceStore> {
        &self.ports.presence
    }

    /// The route cache's entry for `client`, if any (for tests and
    /// debugging).
    pub fn cached_route(&self, client: &ClientId) -> Option<CachedRoute> {
        self.cache.get(client)
    }

    /// A handover of `msg` to `targets` sessions here.
    fn handover_of(
        &self,
        msg: &Message,
        report: crate::hub::Report,
        targets: u32,
    ) -> Arc<Handover> {
        Arc::new(Handover::new(
            msg.msg_id,
            msg.from.clone(),
            msg.to.clone(),
            msg.sender.clone(),
            report,
            false,
            targets,
        ))
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
