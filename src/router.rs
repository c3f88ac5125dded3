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
//! The receiving half lives here too: a message arriving from another node
//! is handed to its recipient if the session is still here; otherwise it is
//! re-routed once if the recipient moved, or answered with an `offline`
//! receipt. Receipts travel back to the sender's session the same way.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::bus::{Bus, BusError};
use crate::metrics::Metrics;
use crate::presence::{PresenceError, PresenceRecord, PresenceStore};
use crate::protocol::close;
use crate::protocol::frames::{encode_message, encode_receipt};
use crate::protocol::{
    AckStatus, ClientId, Envelope, ErrorCode, Hop, MessageHop, NodeId, ReceiptHop, ReceiptStatus,
    ReplacedHop, ReplyTo,
};
use crate::session::{Outbound, SessionRegistry};

/// How many re-routes (a presence lookup each) may run at once. Past that,
/// undeliverable hops are answered `offline` at once rather than queued.
const MAX_CONCURRENT_REROUTES: usize = 1024;

/// Where a message's outcome is reported: the sending session.
#[derive(Debug, Clone)]
pub struct Origin {
    pub node: NodeId,
    pub client: ClientId,
    pub session: Uuid,
    pub msg_id: Uuid,
    /// The `id` of the sender's `send` frame, echoed in receipts.
    pub id: Option<Box<str>>,
    /// The sender asked for a `delivered` receipt.
    pub receipt: bool,
}

/// A message on its way, owned.
#[derive(Debug)]
pub struct Message {
    pub msg_id: Uuid,
    pub from: ClientId,
    pub to: ClientId,
    /// Stamped by the sender's node, ms since the Unix epoch.
    pub ts: u64,
    pub body: Box<RawValue>,
    /// `None` for server-side sends (HTTP API): nobody to tell.
    pub origin: Option<Origin>,
    /// Already re-routed once by a node that found its recipient gone.
    pub forwarded: bool,
}

impl Message {
    fn frame(&self) -> String {
        encode_message(self.msg_id, &self.from, &self.to, &self.body, self.ts)
    }

    fn envelope(&self) -> Bytes {
        let reply = self.origin.as_ref().map(|o| ReplyTo {
            node: o.node.clone(),
            session: o.session,
            id: o.id.as_deref().map(Cow::Borrowed),
            receipt: o.receipt,
        });
        Bytes::from(
            Envelope::new(Hop::Message(MessageHop {
                msg_id: self.msg_id,
                from: self.from.clone(),
                to: self.to.clone(),
                ts: self.ts,
                body: &self.body,
                forwarded: self.forwarded,
                reply,
            }))
            .encode(),
        )
    }

    fn from_hop(hop: MessageHop<'_>) -> Self {
        let origin = origin_of(&hop);
        Self {
            msg_id: hop.msg_id,
            from: hop.from,
            to: hop.to,
            ts: hop.ts,
            body: hop.body.to_owned(),
            origin,
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
    Remote(NodeId),
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

pub struct Router {
    node: NodeId,
    presence: Arc<dyn PresenceStore>,
    bus: Arc<dyn Bus>,
    sessions: Arc<SessionRegistry>,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    reroutes: Arc<Semaphore>,
}

impl Router {
    pub fn new(
        node: NodeId,
        presence: Arc<dyn PresenceStore>,
        bus: Arc<dyn Bus>,
        sessions: Arc<SessionRegistry>,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            node,
            presence,
            bus,
            sessions,
            metrics,
            tasks,
            reroutes: Arc::new(Semaphore::new(MAX_CONCURRENT_REROUTES)),
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Finds the branch for a message to `to`.
    pub async fn locate(&self, to: &ClientId) -> Result<Route, RouteError> {
        Ok(match self.presence.lookup(to).await? {
            None => Route::Offline,
            Some(record) if record.node == self.node => Route::Local {
                session: record.session,
            },
            Some(record) => Route::Remote(record.node),
        })
    }

    /// Takes the branch. Calls for one sender must come in send order.
    pub async fn dispatch(&self, msg: Message, route: Route) -> Result<AckStatus, RouteError> {
        let status = match route {
            Route::Offline => AckStatus::Offline,
            Route::Local { session } => match self.sessions.get(&msg.to) {
                Some(handle) => {
                    let item = Outbound::Message {
                        frame: msg.frame().into(),
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
                    self.forget_stale_record(msg.to, session);
                    AckStatus::Offline
                }
            },
            Route::Remote(node) => {
                self.bus.publish(&node, msg.envelope()).await?;
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

    /// A record names this node but no session of its client is here: it
    /// outlived its session (a crash before the delete, say). Deleting it,
    /// compared on the session id, can only remove that stale record.
    fn forget_stale_record(&self, client: ClientId, session: Uuid) {
        let Ok(permit) = self.reroutes.clone().try_acquire_owned() else {
            return;
        };
        let presence = self.presence.clone();
        self.tasks.spawn(async move {
            let _permit = permit;
            if let Err(e) = presence.remove(&client, session).await {
                tracing::debug!(%client, error = %e, "could not delete a stale presence record");
            }
        });
    }

    /// A message arrived from another node for a client believed to be here.
    pub async fn accept_hop(self: &Arc<Self>, hop: MessageHop<'_>) {
        if let Some(session) = self.sessions.get(&hop.to) {
            let item = Outbound::Message {
                frame: encode_message(hop.msg_id, &hop.from, &hop.to, hop.body, hop.ts).into(),
                origin: origin_of(&hop).map(Box::new),
            };
            if session.outbox.push(item).is_ok() {
                return;
            }
        }
        self.reroute(Message::from_hop(hop)).await;
    }

    /// The recipient is not (or no longer) here. Look it up again and
    /// forward once if it moved; otherwise tell the sender `offline`.
    async fn reroute(self: &Arc<Self>, msg: Message) {
        if msg.forwarded {
            return self.answer_offline(msg).await;
        }
        // The lookup may take a while; it must not hold up the inbox, and
        // the number of them in flight is bounded.
        let Ok(permit) = self.reroutes.clone().try_acquire_owned() else {
            return self.answer_offline(msg).await;
        };
        let router = self.clone();
        self.tasks.spawn(async move {
            let _permit = permit;
            match router.locate(&msg.to).await {
                Ok(Route::Remote(node)) => {
                    let msg = Message {
                        forwarded: true,
                        ..msg
                    };
                    match router.bus.publish(&node, msg.envelope()).await {
                        Ok(()) => router.metrics.hop_forwarded(),
                        Err(e) => {
                            tracing::debug!(error = %e, "could not forward a message");
                            router.answer_offline(msg).await;
                        }
                    }
                }
                // The record may name this node because the recipient just
                // reconnected here; one more look at the local sessions.
                Ok(Route::Local { .. }) => {
                    let session = router.sessions.get(&msg.to);
                    let item = Outbound::Message {
                        frame: msg.frame().into(),
                        origin: msg.origin.clone().map(Box::new),
                    };
                    if session.is_none_or(|s| s.outbox.push(item).is_err()) {
                        router.answer_offline(msg).await;
                    }
                }
                Ok(Route::Offline) | Err(_) => router.answer_offline(msg).await,
            }
        });
    }

    async fn answer_offline(&self, msg: Message) {
        if let Some(origin) = msg.origin {
            self.answer(&origin, ReceiptStatus::Offline).await;
        }
    }

    /// Reports a message's outcome to its sender's session, wherever it is.
    pub async fn answer(&self, origin: &Origin, status: ReceiptStatus) {
        if status == ReceiptStatus::Offline {
            self.metrics.receipt_offline();
        }
        if origin.node == self.node {
            self.receipt_to_local_session(
                &origin.client,
                origin.session,
                origin.id.as_deref(),
                origin.msg_id,
                status,
            );
            return;
        }
        let hop = Envelope::new(Hop::Receipt(ReceiptHop {
            msg_id: origin.msg_id,
            to: origin.client.clone(),
            session: origin.session,
            id: origin.id.as_deref().map(Cow::Borrowed),
            status,
        }));
        if let Err(e) = self.bus.publish(&origin.node, hop.encode().into()).await {
            // The sender's node cannot be reached, so neither can the sender.
            tracing::debug!(node = %origin.node, error = %e, "could not send a receipt");
            self.metrics.receipt_undeliverable();
        }
    }

    /// A receipt arrived from another node for a session here.
    pub fn accept_receipt(&self, hop: ReceiptHop<'_>) {
        self.receipt_to_local_session(
            &hop.to,
            hop.session,
            hop.id.as_deref(),
            hop.msg_id,
            hop.status,
        );
    }

    fn receipt_to_local_session(
        &self,
        client: &ClientId,
        session: Uuid,
        id: Option<&str>,
        msg_id: Uuid,
        status: ReceiptStatus,
    ) {
        let delivered = self.sessions.get_session(client, session).is_some_and(|s| {
            s.outbox
                .push(Outbound::Frame(encode_receipt(id, msg_id, status).into()))
                .is_ok()
        });
        if !delivered {
            self.metrics.receipt_undeliverable();
        }
    }

    /// A newer session of a client registered; `previous` is the record it
    /// replaced. Closes the older session with 4001, on whichever node.
    pub async fn evict(&self, client: &ClientId, previous: &PresenceRecord) {
        if previous.node == self.node {
            if let Some(old) = self.sessions.get_session(client, previous.session) {
                old.outbox.close(close::REPLACED);
            }
            return;
        }
        let hop = Envelope::new(Hop::Replaced(ReplacedHop {
            client: client.clone(),
            session: previous.session,
        }));
        if let Err(e) = self.bus.publish(&previous.node, hop.encode().into()).await {
            tracing::warn!(%client, node = %previous.node, error = %e,
                "could not tell the node of a replaced session to close it");
        }
    }

    /// Another node registered a newer session of `hop.client`.
    pub fn accept_replaced(&self, hop: ReplacedHop) {
        if let Some(old) = self.sessions.get_session(&hop.client, hop.session) {
            old.outbox.close(close::REPLACED);
        }
    }
}

fn origin_of(hop: &MessageHop<'_>) -> Option<Origin> {
    hop.reply.as_ref().map(|reply| Origin {
        node: reply.node.clone(),
        client: hop.from.clone(),
        session: reply.session,
        msg_id: hop.msg_id,
        id: reply.id.as_deref().map(Into::into),
        receipt: reply.receipt,
    })
}
