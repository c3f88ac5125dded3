//! The bus carries envelopes from node to node. Each node has one subscription,
//! addressed by its node id; a cross-node message is one publish to the
//! recipient node's subscription.
//!
//! A publish can carry a *bounce* address: if nobody at all is listening on
//! the recipient node's subscription (the node crashed, or lost its bus
//! connection), the bus hands the bounce tag back to the sending node at
//! once, instead of the message vanishing. A node can also broadcast an
//! envelope to every node (cache invalidations), and ask one node a question
//! and wait for its answer ([`Bus::request`]: handing a detached session
//! over). This is a port: the router sees
//! only the [`Bus`] trait. NATS is the clustered backend (its "no
//! responders" status does the bouncing); the in-process hub serves the
//! embedded default and several nodes inside one process. Both live in
//! [`crate::backends`].

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use uuid::Uuid;

use crate::cause::Cause;
use crate::protocol::NodeId;

/// What a node's subscription yields.
#[derive(Debug)]
pub enum Delivery {
    /// An envelope from another node.
    Envelope(Bytes),
    /// Something this node sent (or is the origin of) reached nobody.
    Bounced(BounceTag),
    /// Another node's question ([`Bus::request`]); answer it with the
    /// responder.
    Request {
        payload: Bytes,
        responder: Responder,
    },
}

impl PartialEq for Delivery {
    /// Envelopes and bounces by content; a request is never equal to
    /// anything (it carries a way to answer, not data).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Delivery::Envelope(a), Delivery::Envelope(b)) => a == b,
            (Delivery::Bounced(a), Delivery::Bounced(b)) => a == b,
            _ => false,
        }
    }
}

/// Sends the answer to one request, once.
pub struct Responder(Box<dyn FnOnce(Bytes) -> Answering + Send>);

/// The sending of an answer.
type Answering = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Responder {
    pub fn new<F, Fut>(answer: F) -> Self
    where
        F: FnOnce(Bytes) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self(Box::new(move |bytes| Box::pin(answer(bytes))))
    }

    pub async fn respond(self, answer: Bytes) {
        (self.0)(answer).await;
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

/// What came back when a publish reached nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BounceTag {
    /// One message, by id (a message re-routed by another node).
    Message(Uuid),
    /// A batch this node sent to node `to`, holding its tracked messages
    /// with in-flight sequence numbers `first..=last`.
    Batch { to: NodeId, first: u64, last: u64 },
}

/// The subscription of this node, in the order the bus delivered.
pub type Subscription = Pin<Box<dyn Stream<Item = Delivery> + Send>>;

/// Where to report a publish that reached nobody: the node tracking the
/// outcome, and what to tell it.
#[derive(Debug, Clone)]
pub struct Bounce<'a> {
    pub node: &'a NodeId,
    pub tag: BounceTag,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The envelope did not leave this node; the sender must hear
    /// `unavailable`.
    #[error("bus unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The envelope is larger than the bus accepts.
    #[error("envelope of {size} bytes exceeds the bus limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// A request got no answer within its timeout: the other node may or
    /// may not have acted on it (it may be alive but busy).
    #[error("bus request not answered: {what}")]
    NoAnswer { what: String },
    /// A request reached nobody: the bus itself says that no one listens
    /// for that node (NATS' "no responders"), so it cannot have acted.
    #[error("nobody listens: {what}")]
    NoListener { what: String },
}

impl BusError {
    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::Unavailable {
            what: what.into(),
            cause: None,
        }
    }

    /// The same, keeping the error that said so.
    pub fn caused(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Unavailable {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Hands one envelope to the bus for `node`. Returns once the bus has
    /// taken it, within a bounded time; it does not wait for the far node.
    async fn publish(
        &self,
        node: &NodeId,
        envelope: Bytes,
        bounce: Option<Bounce<'_>>,
    ) -> Result<(), BusError>;

    /// Hands one envelope to every node of the cluster, this one included
    /// (what one node's change makes stale in the others' caches). Best
    /// effort, like every publish: a node that was disconnected meanwhile
    /// sees [`generation`](Self::generation) change and forgets what it
    /// cached.
    async fn broadcast(&self, envelope: Bytes) -> Result<(), BusError>;

    /// Publishes an event (v2) of `kind` ("presence", "offline") for the
    /// application's backend, outside the nodes' own subjects. A bus with
    /// nobody outside the process to hear it (the memory bus) drops it.
    async fn publish_event(&self, kind: &str, event: Bytes) -> Result<(), BusError>;

    /// Asks `node` (`payload`) and waits up to `timeout` for its answer.
    /// Fails at once when nobody listens there.
    async fn request(
        &self,
        node: &NodeId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError>;

    /// Starts receiving the envelopes addressed to `node`, the broadcasts,
    /// and the bounces of hops `node` tracks. Returns once the
    /// subscriptions are live; dropping the subscription stops receiving.
    async fn subscribe(&self, node: &NodeId) -> Result<Subscription, BusError>;

    /// Whether a publish would be taken now. A disconnected bus refuses
    /// publishes, so callers can answer `unavailable` before queueing.
    fn connected(&self) -> bool;

    /// Counts this node's connections to the bus: it changes after every
    /// reconnect, across which broadcasts may have been missed.
    fn generation(&self) -> u64 {
        0
    }

    /// The largest envelope the bus accepts, in bytes.
    fn max_envelope(&self) -> usize;

    /// A real round trip to the backend, for `/readyz`.
    async fn ping(&self) -> Result<(), BusError>;

    /// Short name for logs and `/readyz` ("memory", "nats").
    fn backend(&self) -> &'static str;

    /// Flushes what was published and lets go of the connection, at the
    /// end of a node's shutdown (after its subscription was dropped and its
    /// courier drained). Nothing is called after it.
    async fn close(&self) {}
}
