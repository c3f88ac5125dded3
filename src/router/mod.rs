//! The router: where does a message go?
//!
//! It knows the three branches of the design and nothing about Redis or
//! NATS wire details:
//!
//! - `local`: the recipient's presence record names this node; the message
//!   is handed to the recipient's session here.
//! - `remote`: the record names another node; the message is published to
//!   that node's inbox on the bus.
//! - `offline`: there is no record; the message goes no further.
//!
//! Routing a send is split in two so that a session can have many sends in
//! flight and still keep their order: [`Router::locate`] (the presence
//! lookup, which may run concurrently with other lookups) and
//! [`Router::dispatch`] (the hand-over or publish, which the session calls
//! strictly in the order the sends were read).
//!
//! The patent looks up both the sender's and the recipient's records. The
//! sender's session is on this node by construction (that is where its
//! send was read), so only the recipient is looked up.
//!
//! A record is only believed if its node is alive ([`Liveness`]): records
//! of crashed nodes, and ghosts of a node's earlier run, route `offline`.
//!
//! Cross-node messages are tracked until their outcome comes back
//! ([`inflight`]), so that a message that can no longer arrive is answered
//! with an `offline` receipt rather than silence. The receiving half
//! ([`inbound`]) hands arriving messages to their sessions, re-routes once
//! when a recipient moved, and sends outcomes back.

mod cache;
pub mod courier;
mod inbound;
mod inflight;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::bus::{Bounce, BounceTag, Bus, BusError};
use crate::liveness::{Belief, Liveness, Lost};
use crate::metrics::Metrics;
use crate::presence::{PresenceError, PresenceStore};
use crate::protocol::envelope::{ENVELOPE_OVERHEAD, encode_envelope, encode_message_hop};
use crate::protocol::frames::encode_message;
use crate::protocol::{
    AckStatus, ClientId, ErrorCode, MessageHop, NodeId, ReceiptStatus, ReplyTo, now_ms,
};
use crate::session::{Outbound, SessionRegistry};

pub use self::cache::{CachedRoute, RouteCache};
pub use self::courier::{Courier, Parcel, Parcels};
pub use self::inflight::InFlight;

/// Where a message's outcome is reported: the sending session.
#[derive(Debug, Clone)]
pub struct Origin {
    pub node: NodeId,
    pub client: ClientId,
    pub session: Uuid,
    pub msg_id: Uuid,
    /// The `id` of the sender's `send` frame, echoed in the ack and in
    /// receipts. Shared, since both the ack and the in-flight entry keep a
    /// copy of the origin.
    pub id: Option<Arc<str>>,
    /// The sender asked for a `delivered` receipt.
    pub receipt: bool,
    /// The message went over the bus: its origin node tracks it in flight,
    /// and only that tracking (not this copy) may answer the sender.
    pub tracked: bool,
}

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
    pub origin: Option<Origin>,
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
        origin: Option<Origin>,
    ) -> Self {
        let frame = encode_message(msg_id, &from, &to, body, now_ms()).into();
        Self {
            msg_id,
            from,
            to,
            frame,
            origin,
            forwarded: false,
        }
    }

    /// The message as a hop, to go into an envelope.
    fn hop(&self) -> Vec<u8> {
        let reply = self.origin.as_ref().map(|o| ReplyTo {
            node: o.node.clone(),
            session: o.session,
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
            origin: inbound::origin_of(hop),
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
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Internal(String),
}

impl RouteError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RouteError::Unavailable(_) => ErrorCode::Unavailable,
            RouteError::TooLarge(_) => ErrorCode::TooLarge,
            RouteError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<PresenceError> for RouteError {
    fn from(e: PresenceError) -> Self {
        match e {
            PresenceError::Unavailable(_) => RouteError::Unavailable(e.to_string()),
            PresenceError::Corrupt { .. } => RouteError::Internal(e.to_string()),
        }
    }
}

impl From<BusError> for RouteError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Unavailable(_) => RouteError::Unavailable(e.to_string()),
            BusError::TooLarge { .. } => RouteError::TooLarge(e.to_string()),
        }
    }
}

/// What a router needs from the rest of the node.
pub struct RouterParts {
    pub node: NodeId,
    pub presence: Arc<dyn PresenceStore>,
    pub bus: Arc<dyn Bus>,
    pub sessions: Arc<SessionRegistry>,
    pub liveness: Arc<Liveness>,
    pub inflight: InFlight,
    pub cache: RouteCache,
    pub courier: Courier,
    pub metrics: Arc<Metrics>,
    pub tasks: TaskTracker,
}

pub struct Router {
    node: NodeId,
    presence: Arc<dyn PresenceStore>,
    bus: Arc<dyn Bus>,
    sessions: Arc<SessionRegistry>,
    liveness: Arc<Liveness>,
    inflight: InFlight,
    cache: RouteCache,
    courier: Courier,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    /// Bounds the background work the router spawns (re-routes, deletes of
    /// stale records), so a flood of them cannot grow without limit.
    background: Arc<Semaphore>,
}

/// How many re-routes and stale-record deletes may run at once. Past that,
/// undeliverable hops are answered `offline` at once rather than queued.
const MAX_BACKGROUND: usize = 1024;

impl Router {
    pub fn new(parts: RouterParts) -> Self {
        Self {
            node: parts.node,
            presence: parts.presence,
            bus: parts.bus,
            sessions: parts.sessions,
            liveness: parts.liveness,
            inflight: parts.inflight,
            cache: parts.cache,
            courier: parts.courier,
            metrics: parts.metrics,
            tasks: parts.tasks,
            background: Arc::new(Semaphore::new(MAX_BACKGROUND)),
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The route cache's entry for `client`, if any (for tests and
    /// debugging).
    pub fn cached_route(&self, client: &ClientId) -> Option<CachedRoute> {
        self.cache.get(client)
    }

    /// Messages published to other nodes whose outcome is still awaited.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The branch for a message to `to`, if it is known without asking the
    /// presence store: a recipient with a session here, or a remote one in
    /// the route cache whose node is still alive in the same run.
    pub fn locate_fast(&self, to: &ClientId) -> Option<Route> {
        if let Some(session) = self.sessions.get(to) {
            return Some(Route::Local {
                session: session.id,
            });
        }
        let cached = self.cache.get(to)?;
        match self.liveness.judge(&cached.node, cached.since) {
            Belief::Alive { epoch } if epoch == cached.epoch => {
                self.metrics.route_cache_hit();
                Some(Route::Remote {
                    node: cached.node,
                    epoch,
                })
            }
            _ => {
                self.cache.remove(to);
                None
            }
        }
    }

    /// Finds the branch for a message to `to`.
    pub async fn locate(&self, to: &ClientId) -> Result<Route, RouteError> {
        if let Some(route) = self.locate_fast(to) {
            return Ok(route);
        }
        self.lookup(to).await
    }

    /// Finds the branch by asking the presence store, and remembers remote
    /// routes.
    async fn lookup(&self, to: &ClientId) -> Result<Route, RouteError> {
        self.metrics.presence_lookup();
        let Some(record) = self.presence.lookup(to).await? else {
            return Ok(Route::Offline);
        };
        Ok(match self.liveness.judge(&record.node, record.since) {
            // A crashed node's record, or a ghost of an earlier run: not
            // believed, and deleted (compared on its session) on the way.
            Belief::Dead => {
                self.forget_stale_record(to.clone(), record.node, record.session);
                Route::Offline
            }
            Belief::Alive { .. } if record.node == self.node => Route::Local {
                session: record.session,
            },
            Belief::Alive { epoch } => {
                self.cache.insert(
                    to.clone(),
                    CachedRoute {
                        node: record.node.clone(),
                        since: record.since,
                        epoch,
                    },
                );
                Route::Remote {
                    node: record.node,
                    epoch,
                }
            }
        })
    }

    /// Takes the branch. Calls for one sender must come in send order.
    pub async fn dispatch(&self, msg: Message, route: Route) -> Result<AckStatus, RouteError> {
        let status = match route {
            Route::Offline => AckStatus::Offline,
            Route::Local { session } => match self.sessions.get(&msg.to) {
                Some(handle) => {
                    let item = Outbound {
                        frame: msg.frame,
                        origin: msg.origin.map(Box::new),
                    };
                    // A refused push means the recipient is closing: the
                    // message goes no further than this node.
                    match handle.outbox.push(item) {
                        Ok(()) => AckStatus::Local,
                        Err(_) => AckStatus::Offline,
                    }
                }
                None => {
                    self.forget_stale_record(msg.to, self.node.clone(), session);
                    AckStatus::Offline
                }
            },
            Route::Remote { node, epoch } => {
                self.publish_tracked(&msg, &node, epoch).await?;
                AckStatus::Remote
            }
        };
        self.metrics.send_routed(status);
        Ok(status)
    }

    /// [`locate`](Self::locate) then [`dispatch`](Self::dispatch), for
    /// senders with a single message in flight (the HTTP API).
    pub async fn route(&self, msg: Message) -> Result<AckStatus, RouteError> {
        let route = self.locate(&msg.to).await?;
        self.dispatch(msg, route).await
    }

    /// Sends a message hop to `node`. A message whose sender session is
    /// here is tracked until its outcome returns; one re-routed for a
    /// sender elsewhere bounces to that sender's node if nobody listens on
    /// `node`'s subject.
    async fn publish_tracked(
        &self,
        msg: &Message,
        node: &NodeId,
        epoch: u64,
    ) -> Result<(), RouteError> {
        // Refused before queueing, so the sender hears it now.
        if !self.bus.connected() {
            return Err(RouteError::Unavailable(
                "the bus (NATS) is disconnected".into(),
            ));
        }
        let hop = msg.hop();
        let limit = self.bus.max_envelope().saturating_sub(ENVELOPE_OVERHEAD);
        if hop.len() > limit {
            return Err(RouteError::TooLarge(format!(
                "message of {} bytes exceeds the bus limit of {limit} bytes",
                hop.len()
            )));
        }
        let seq = match &msg.origin {
            // Re-routing for another node's sender: sent on its own, so
            // that a bounce can name the message to its origin node.
            Some(origin) if origin.node != self.node => {
                let bounce = Bounce {
                    node: &origin.node,
                    tag: BounceTag::Message(msg.msg_id),
                };
                let envelope = Bytes::from(encode_envelope([hop.as_slice()]));
                return Ok(self.bus.publish(node, envelope, Some(bounce)).await?);
            }
            // Tracked before it leaves, so an outcome cannot overtake it.
            Some(origin) => Some(
                self.inflight
                    .insert(origin.clone(), msg.to.clone(), node.clone(), epoch)
                    .map_err(|_| {
                        RouteError::Unavailable("too many messages in flight on this node".into())
                    })?,
            ),
            None => None,
        };
        let parcel = Parcel::Hop { json: hop, seq };
        if self.courier.send(node.clone(), parcel).await.is_err() {
            self.inflight.complete(msg.msg_id);
            return Err(RouteError::Unavailable("this node is shutting down".into()));
        }
        Ok(())
    }

    /// A record that must not be believed: one naming a dead node, a ghost
    /// of this node's earlier run, or one that outlived its session here.
    /// Deleting it, compared on its session id, can only remove that stale
    /// record.
    fn forget_stale_record(&self, client: ClientId, node: NodeId, session: Uuid) {
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            return;
        };
        let presence = self.presence.clone();
        self.tasks.spawn(async move {
            let _permit = permit;
            if let Err(e) = presence.remove(&client, &node, session).await {
                tracing::debug!(%client, error = %e, "could not delete a stale presence record");
            }
        });
    }

    /// The liveness view saw a node die or restart: its in-flight messages
    /// will never get an outcome.
    pub fn lost(&self, lost: &Lost) {
        let origins = self.inflight.lost(&lost.node, lost.before_epoch);
        if !origins.is_empty() {
            tracing::info!(node = %lost.node, messages = origins.len(),
                "node died or restarted with messages in flight; answering offline");
        }
        for origin in origins {
            self.report_to_sender(&origin, ReceiptStatus::Offline);
        }
    }

    /// Answers `offline` for messages whose outcome is overdue.
    pub fn expire_in_flight(&self) {
        for origin in self.inflight.expired(Instant::now()) {
            self.report_to_sender(&origin, ReceiptStatus::Offline);
        }
    }
}
