//! The test bed: nodes assembled in this process on the in-memory backends
//! (one presence store, one bus hub and, for nodes given `--inbox`, one
//! inbox, shared by every node of the bed as a cluster shares Redis and
//! NATS), whose
//! clients reach them over in-memory pipes (`tokio::io::duplex`) instead
//! of sockets. Each pipe is served by the node's own HTTP code
//! (`server::serve_connection`, the warp routes, the `/ws` upgrade), so a
//! test on the bed runs exactly what a test over TCP runs, minus the
//! kernel and the external processes.
//!
//! Nothing here needs real time: with `#[tokio::test(start_paused =
//! true)]` the clock moves only when every task waits, and the in-memory
//! stores judge expiries by it (the node TTL, the inbox TTL, last-seen).
//!
//! What stays on real processes: the contract suites (same cases on
//! Redis, Redis Cluster, memcached, NATS), failures and chaos (kills,
//! outages), rolling restarts, the browser, the deployment files, and the
//! tests of what Redis and NATS show an operator (key layouts, subjects).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use switchboard::backends::{MemoryBus, MemoryHistory, MemoryHub, MemoryInbox, MemoryPresence};
use switchboard::bus::{Bounce, Bus, BusError, Subscription};
use switchboard::history::{HistoryLimits, HistoryStore};
use switchboard::inbox::{InboxLimits, InboxStore};
use switchboard::node::{Backends, Lifetime, Node};
use switchboard::presence::PresenceStore;
use switchboard::protocol::NodeId;
use switchboard_client::Io;
use tokio::sync::mpsc;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::nodes::config;
use super::reach::Reach;

/// Nodes sharing in-memory backends; see the module comment.
pub struct Bed {
    presence: Arc<dyn PresenceStore>,
    hub: MemoryHub,
    /// Made by the first node configured with `--inbox`, shared by the
    /// others (as clustered nodes share one Redis inbox).
    inbox: Mutex<Option<Arc<dyn InboxStore>>>,
    history: Mutex<Option<Arc<dyn HistoryStore>>>,
    taps: Taps,
}

/// What the bed does to the envelopes published to a node: who watches
/// them, and whether they are lost on the way.
#[derive(Default)]
struct Tap {
    watchers: Vec<(NodeId, mpsc::UnboundedSender<Bytes>)>,
    /// Envelopes to these nodes are taken by the bus and never arrive (a
    /// partition): what was in them gets no outcome.
    lost: Vec<NodeId>,
    /// Broadcasts (changes of records and members) never arrive.
    deaf: bool,
    /// Requests to these nodes get no answer in time: they reach the node
    /// only when released, after the asker gave up.
    held: Vec<NodeId>,
    /// Requests held, in order.
    pending: Vec<(NodeId, Bytes)>,
    /// The next request to each of these nodes goes nowhere, as into the
    /// socket of a node killed an instant before: never answered.
    swallow_next: Vec<NodeId>,
    /// The bus says nobody listens for these nodes (it has noticed they
    /// are gone), whatever the nodes themselves still do.
    unlistened: Vec<NodeId>,
}

type Taps = Arc<Mutex<Tap>>;

impl Default for Bed {
    fn default() -> Self {
        Self::new()
    }
}

impl Bed {
    pub fn new() -> Self {
        Self::with_presence(Arc::new(MemoryPresence::new()))
    }

    /// A bed whose nodes share `presence` (a store a test wraps, to make
    /// it slow or forgetful).
    pub fn with_presence(presence: Arc<dyn PresenceStore>) -> Self {
        super::nodes::init_logs();
        Self {
            presence,
            hub: MemoryHub::new(),
            inbox: Mutex::default(),
            history: Mutex::default(),
            taps: Arc::default(),
        }
    }

    /// The presence store every node of the bed shares.
    pub fn presence(&self) -> &Arc<dyn PresenceStore> {
        &self.presence
    }

    /// A node `id` on the bed, with these flags (as an operator gives
    /// them).
    pub async fn node(&self, id: &str, flags: &[&str]) -> BedNode {
        let mut all = vec!["--node-id", id];
        all.extend_from_slice(flags);
        let config = config(&all);
        let inbox = config.inbox.as_ref().map(|inbox| {
            let limits = InboxLimits {
                max_messages: inbox.max_messages,
                ttl: inbox.ttl,
            };
            let mut shared = self.inbox.lock().unwrap();
            let made = || Arc::new(MemoryInbox::new(limits)) as Arc<dyn InboxStore>;
            shared.get_or_insert_with(made).clone()
        });
        // One history for the bed's nodes, as a shared store would be.
        let history = config.history.as_ref().map(|history| {
            let limits = HistoryLimits {
                ttl: history.ttl,
                max_messages: history.max_messages,
            };
            let mut shared = self.history.lock().unwrap();
            let made = || Arc::new(MemoryHistory::new(limits)) as Arc<dyn HistoryStore>;
            shared.get_or_insert_with(made).clone()
        });
        let backends = Backends {
            presence: self.presence.clone(),
            bus: Arc::new(Tapped {
                inner: self.hub.bus(),
                taps: self.taps.clone(),
            }),
            inbox,
            history,
        };
        let (node, lifetime) = Node::assemble(config, backends)
            .await
            .expect("node assembles");
        let routes = switchboard::http::routes(node.clone());
        BedNode {
            node,
            lifetime,
            routes,
        }
    }

    /// Two nodes, `node-a` and `node-b`, with the same flags.
    pub async fn pair(&self, flags: &[&str]) -> (BedNode, BedNode) {
        (
            self.node("node-a", flags).await,
            self.node("node-b", flags).await,
        )
    }

    /// A handle on the bed's bus, for a test that plays a node of its own.
    pub fn bus(&self) -> Arc<dyn Bus> {
        Arc::new(self.hub.bus())
    }

    /// Every envelope any node of the bed publishes to `node` from now on
    /// (what `nats sub sb.node.<node>` shows on a cluster).
    pub fn watch(&self, node: &str) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let node = NodeId::parse(node).unwrap();
        self.taps.lock().unwrap().watchers.push((node, tx));
        rx
    }

    /// From now on, broadcasts are lost: every node misses every change of
    /// a record or a group, as a node that missed the one that mattered.
    pub fn lose_broadcasts(&self) {
        self.taps.lock().unwrap().deaf = true;
    }

    /// From now on, requests to `node` (a take-over, say) are held: the
    /// asker hears nothing within its timeout, as from a node too busy to
    /// answer, and `node` gets them when [`release_requests`] is called.
    ///
    /// [`release_requests`]: Self::release_requests
    pub fn hold_requests_to(&self, node: &str) {
        let node = NodeId::parse(node).unwrap();
        self.taps.lock().unwrap().held.push(node);
    }

    /// Requests held so far.
    pub fn held_requests(&self) -> usize {
        self.taps.lock().unwrap().pending.len()
    }

    /// Requests reach their nodes again; those held are delivered now, in
    /// order, and answered to nobody (their askers gave up).
    pub async fn release_requests(&self) {
        let pending = {
            let mut tap = self.taps.lock().unwrap();
            tap.held.clear();
            std::mem::take(&mut tap.pending)
        };
        let bus = self.hub.bus();
        for (node, payload) in pending {
            let _ = bus.request(&node, payload, Duration::from_secs(60)).await;
        }
    }

    /// The next request to `node` is lost on the way: its asker waits out
    /// its timeout (a node killed just after the request left).
    pub fn swallow_next_request_to(&self, node: &str) {
        let node = NodeId::parse(node).unwrap();
        self.taps.lock().unwrap().swallow_next.push(node);
    }

    /// From now on the bus answers requests to `node` with "nobody
    /// listens" (it has noticed the node is gone).
    pub fn unlisten(&self, node: &str) {
        let node = NodeId::parse(node).unwrap();
        self.taps.lock().unwrap().unlistened.push(node);
    }

    /// From now on, envelopes published to `node` are taken by the bus and
    /// lost on the way (the node is cut off from the bus, but nobody knows
    /// yet): the messages in them never get an outcome.
    pub fn lose_envelopes_to(&self, node: &str) {
        let node = NodeId::parse(node).unwrap();
        self.taps.lock().unwrap().lost.push(node);
    }
}

/// A node of the bed.
pub struct BedNode {
    node: Arc<Node>,
    lifetime: Lifetime,
    routes: BoxedFilter<(Response,)>,
}

impl BedNode {
    /// Stops the node as SIGTERM does (sessions close 1001, acks-mode
    /// sessions detach and are passed on), within `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let BedNode {
            node,
            lifetime,
            routes,
        } = self;
        let deadline = tokio::time::Instant::now() + grace;
        // The node's routes hold it: as in a process, nothing but the
        // node's own tasks may keep it once it stops.
        drop(routes);
        lifetime.stop(node, deadline).await;
    }
}

#[async_trait]
impl Reach for BedNode {
    async fn open(&self) -> Box<dyn Io> {
        let (client, server) = tokio::io::duplex(64 << 10);
        let limits = &self.node.config().limits;
        let serving = switchboard::server::serve_connection(
            server,
            "127.0.0.1:0".parse().unwrap(),
            self.routes.clone(),
            limits.handshake_timeout,
            self.node.shutdown_signal().clone(),
        );
        self.node.tasks().spawn(serving);
        Box::new(client)
    }

    fn base_url(&self) -> String {
        format!("ws://{}.bed", self.node.id())
    }
}

impl BedNode {
    /// The node itself, for looking into it.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

/// The hub's bus, with a copy of every publish for the taps.
struct Tapped {
    inner: MemoryBus,
    taps: Taps,
}

#[async_trait]
impl Bus for Tapped {
    async fn publish(
        &self,
        node: &NodeId,
        envelope: Bytes,
        bounce: Option<Bounce<'_>>,
    ) -> Result<(), BusError> {
        {
            let mut tap = self.taps.lock().unwrap();
            tap.watchers.retain(|(_, tx)| !tx.is_closed());
            for (_, tx) in tap.watchers.iter().filter(|(tapped, _)| tapped == node) {
                let _ = tx.send(envelope.clone());
            }
            if tap.lost.contains(node) {
                return Ok(());
            }
        }
        self.inner.publish(node, envelope, bounce).await
    }

    async fn broadcast(&self, envelope: Bytes) -> Result<(), BusError> {
        if self.taps.lock().unwrap().deaf {
            return Ok(());
        }
        self.inner.broadcast(envelope).await
    }

    async fn publish_event(&self, kind: &str, event: Bytes) -> Result<(), BusError> {
        self.inner.publish_event(kind, event).await
    }

    async fn request(
        &self,
        node: &NodeId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let (held, swallowed, unlistened) = {
            let mut tap = self.taps.lock().unwrap();
            let held = tap.held.contains(node);
            if held {
                tap.pending.push((node.clone(), payload.clone()));
            }
            let swallowed = tap.swallow_next.iter().position(|n| n == node);
            if let Some(i) = swallowed {
                tap.swallow_next.remove(i);
            }
            (held, swallowed.is_some(), tap.unlistened.contains(node))
        };
        if unlistened && !swallowed {
            return Err(BusError::NoListener {
                what: format!("no responders for node {node}"),
            });
        }
        if held || swallowed {
            tokio::time::sleep(timeout).await;
            return Err(BusError::NoAnswer {
                what: format!("node {node} did not answer within {timeout:?}"),
            });
        }
        self.inner.request(node, payload, timeout).await
    }

    async fn subscribe(&self, node: &NodeId) -> Result<Subscription, BusError> {
        self.inner.subscribe(node).await
    }

    fn connected(&self) -> bool {
        self.inner.connected()
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    fn max_envelope(&self) -> usize {
        self.inner.max_envelope()
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.inner.ping().await
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn close(&self) {
        self.inner.close().await
    }
}
