//! The [`Router`]: a send's way out. Finding the sessions is split in two
//! so that a session can have many sends in flight and still keep their
//! order: [`Router::locate`] (the presence lookup, which may run
//! concurrently with other lookups) and [`Router::dispatch`] (the
//! hand-overs and publishes, which the session calls strictly in the order
//! the sends were read).
//!
//! The router owns no state of its own beyond its node's name: it composes
//! the services that do (the locator and its cache, the groups, the
//! outcomes in flight, the offline branch, the courier) and knows the
//! branches. What arrives from other nodes is in [`super::inbound`], and
//! what becomes of a message handed to a session here in
//! [`super::delivery`].

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::background::Background;
use super::cache::RouteCache;
use super::courier::{self, Courier, CourierTask, Parcel};
use super::groups::{Groups, may_send};
use super::hops;
use super::inflight::InFlight;
use super::liveness::Liveness;
use super::locator::{Locator, LocatorParts};
use super::moved::Moved;
use super::offline::announce::Announcer;
use super::offline::last_seen::LastSeenPorts;
use super::offline::{Offline, Why};
use super::outcomes::{Outcomes, OutcomesParts, offline_reason};
use super::route::{Route, Sent};
use super::{Message, RouteError};
use crate::bus::{Bus, BusError};
use crate::events::Events;
use crate::hub::{Handover, Hub, Outbound, Report};
use crate::inbox::InboxStore;
use crate::metrics::{Metrics, SignalFate};
use crate::presence::{GroupStore, LastSeenStore, SessionRecords};
use crate::protocol::envelope::{encode_hop, raw_frame};
use crate::protocol::frames::with_field;
use crate::protocol::{AckStatus, ClientId, GroupId, NodeId, OfflineReason, Recipient};
use crate::protocol::{Hop, ReadHop, SignalHop};

/// Most cross-node messages one node tracks at once, awaiting outcomes.
pub const MAX_IN_FLIGHT_HOPS: usize = 1 << 18;
/// How long a cached route is trusted without being confirmed by traffic.
pub const ROUTE_CACHE_TTL: Duration = Duration::from_secs(60);

pub struct Router {
    node: NodeId,
    hub: Arc<Hub>,
    locator: Arc<Locator>,
    groups: Arc<Groups>,
    outcomes: Arc<Outcomes>,
    offline: Arc<Offline>,
    /// Sessions handed to other nodes lately, to forward to.
    moved: Arc<Moved>,
    courier: Courier,
    metrics: Arc<Metrics>,
    background: Background,
}

/// The ports a router routes over: narrow views of the node's backends.
#[derive(Clone)]
pub struct Ports {
    pub records: Arc<dyn SessionRecords>,
    pub groups: Arc<dyn GroupStore>,
    pub last_seen: Arc<dyn LastSeenStore>,
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
    /// How long a lone cross-node message waits for company (0: off).
    pub bus_linger: Duration,
    /// Remote routes remembered; 0 turns the route cache off.
    pub route_cache: usize,
    /// How long a client's last-seen record is kept.
    pub last_seen_ttl: Duration,
}

impl Router {
    /// A router for the node `liveness` describes, and the task that sends
    /// what it publishes (run it with [`CourierTask::run`]; it ends once
    /// every holder of the courier is dropped and what it queued is sent).
    pub fn new(
        ports: Ports,
        hub: Arc<Hub>,
        liveness: Arc<Liveness>,
        metrics: Arc<Metrics>,
        background: Background,
        settings: Settings,
    ) -> (Self, CourierTask) {
        let node = liveness.me().node.clone();
        let cache = Arc::new(RouteCache::new(settings.route_cache, ROUTE_CACHE_TTL));
        let moved = Arc::new(Moved::default());
        let outcomes = Arc::new(Outcomes::new(OutcomesParts {
            node: node.clone(),
            hub: hub.clone(),
            inflight: InFlight::new(MAX_IN_FLIGHT_HOPS, settings.hop_timeout),
            cache: cache.clone(),
            liveness: liveness.clone(),
            metrics: metrics.clone(),
            announce: Announcer::new(node.clone(), ports.events.clone()),
            moved: moved.clone(),
        }));
        let (courier, task) = courier::courier(
            node.clone(),
            ports.bus.clone(),
            outcomes.clone(),
            settings.bus_linger,
        );
        let offline = Arc::new(Offline::new(
            LastSeenPorts {
                records: ports.records.clone(),
                last_seen: ports.last_seen,
                ttl: settings.last_seen_ttl,
            },
            ports.inbox,
            Announcer::new(node.clone(), ports.events),
            metrics.clone(),
            background.clone(),
        ));
        let locator = Arc::new(Locator::new(LocatorParts {
            records: ports.records,
            liveness,
            hub: hub.clone(),
            cache,
            courier: courier.clone(),
            offline: offline.clone(),
            metrics: metrics.clone(),
            background: background.clone(),
        }));
        let router = Self {
            node,
            hub,
            locator,
            groups: Arc::new(Groups::new(ports.groups, courier.clone())),
            outcomes,
            offline,
            moved,
            courier,
            metrics,
            background,
        };
        (router, task)
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Finding sessions: the route cache, the records, liveness.
    pub fn locator(&self) -> &Arc<Locator> {
        &self.locator
    }

    pub fn liveness(&self) -> &Arc<Liveness> {
        self.locator.liveness()
    }

    /// Group membership.
    pub fn groups(&self) -> &Arc<Groups> {
        &self.groups
    }

    /// What became of messages sent from here: in-flight tracking and
    /// telling senders.
    pub fn outcomes(&self) -> &Arc<Outcomes> {
        &self.outcomes
    }

    /// The offline branch: last-seen, the inbox, events.
    pub fn offline(&self) -> &Arc<Offline> {
        &self.offline
    }

    /// Notes of sessions handed to other nodes (acks mode).
    pub fn moved(&self) -> &Arc<Moved> {
        &self.moved
    }

    /// The way to other nodes.
    pub fn courier(&self) -> &Courier {
        &self.courier
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn background(&self) -> &Background {
        &self.background
    }

    /// The route cache's entry for `client`, if any (for tests and
    /// debugging).
    pub fn cached_route(&self, client: &ClientId) -> Option<super::CachedRoute> {
        self.locator.cache().get(client)
    }

    /// The route for `msg` if it is known without asking the presence
    /// store: every record it needs is cached and names live nodes in the
    /// same run.
    pub fn locate_fast(&self, msg: &Message) -> Option<Route> {
        self.locator.follow_bus(self.courier.bus_generation());
        let to = match &msg.to {
            Recipient::Client(to) => to,
            Recipient::Group(group) => return self.locate_group_fast(msg, group),
        };
        // An empty entry is not trusted for a send to a client: one coming
        // online must be reachable at once.
        let records = self.locator.cached(to).filter(|r| !r.is_empty())?;
        let own = match carbon_source(msg) {
            Some(from) => Some(self.locator.cached(from)?),
            None => None,
        };
        self.metrics.route_cache_hit();
        Some(Route::to_client(
            &self.hub,
            &self.node,
            msg,
            &records,
            own.as_deref(),
        ))
    }

    /// Finds the route for `msg`, in at most one round trip to the
    /// presence store.
    pub async fn locate(&self, msg: &Message) -> Result<Route, RouteError> {
        if let Some(route) = self.locate_fast(msg) {
            return Ok(route);
        }
        let to = match &msg.to {
            Recipient::Client(to) => to,
            Recipient::Group(group) => return self.locate_group(msg, group).await,
        };
        let mut wanted = vec![to.clone()];
        if let Some(from) = carbon_source(msg) {
            wanted.push(from.clone());
        }
        let mut read = self.locator.lookup_noting_dead(&wanted).await?.into_iter();
        let (records, dead) = read.next().unwrap_or_default();
        let own = read.next().map(|(own, _)| own);
        let mut route = Route::to_client(&self.hub, &self.node, msg, &records, own.as_deref());
        if route.sessions() == 0 {
            route.offline_why = Some(Box::new(self.offline.why_offline(to, dead).await));
        }
        Ok(route)
    }

    /// The route of a message to `group` if every member's record is
    /// cached (and the members are).
    fn locate_group_fast(&self, msg: &Message, group: &GroupId) -> Option<Route> {
        let members = self.groups.cached(group)?;
        if !may_send(msg, &members) {
            return None; // `locate` says why
        }
        // Built as the records are found (nothing kept per member): a miss
        // drops what was built, and `locate` reads what is missing.
        let mut route = Route::default();
        let note = self.offline.announce().is_on();
        for member in members.iter() {
            let records = self.locator.cached(member)?;
            route.add_member(&self.hub, &self.node, msg, member, &records, note);
        }
        self.metrics.route_cache_hit();
        Some(route)
    }

    /// The route of a message to `group`: its members, then their records,
    /// cached or read in one batch (one pipeline on Redis, one multi-get
    /// per memcached server). Nothing is done per member on the wire.
    async fn locate_group(&self, msg: &Message, group: &GroupId) -> Result<Route, RouteError> {
        let members = self.groups.members(group).await?;
        if !may_send(msg, &members) {
            return Err(RouteError::NotMember);
        }
        let mut records: Vec<_> = members.iter().map(|m| self.locator.cached(m)).collect();
        let missing: Vec<ClientId> = members
            .iter()
            .zip(&records)
            .filter(|(_, r)| r.is_none())
            .map(|(m, _)| m.clone())
            .collect();
        if !missing.is_empty() {
            let mut read = self.locator.lookup_many(&missing).await?.into_iter();
            for slot in records.iter_mut().filter(|r| r.is_none()) {
                *slot = read.next();
            }
        } else {
            self.metrics.route_cache_hit();
        }
        let mut route = Route::default();
        let note = self.offline.announce().is_on();
        for (member, records) in members.iter().zip(records) {
            let records = records.unwrap_or_default();
            route.add_member(&self.hub, &self.node, msg, member, &records, note);
        }
        Ok(route)
    }

    /// Takes the branch for every session of `route`. Calls for one sender
    /// must come in send order. When it fails, nothing was handed over or
    /// published.
    pub async fn dispatch(&self, msg: Message, route: Route) -> Result<Sent, RouteError> {
        // Everything that can refuse the send is checked before anything
        // is handed over: an error means nothing was sent.
        if !route.remote.is_empty() && !self.courier.connected() {
            // Refused before queueing, so the sender hears it now.
            return Err(BusError::unavailable("the bus (NATS) is disconnected").into());
        }
        let hops = hops::plan(&msg, &route, self.courier.max_envelope())?;
        let seqs = self.track(&msg, &route, &hops)?;

        let (mut remote, mut published) = (0, 0);
        for (i, (hop, seq)) in hops.into_iter().zip(seqs).enumerate() {
            let node = route.remote[hop.leg].node.clone();
            let targets = hop.targets.len() as u32;
            let parcel = Parcel::Hop {
                json: hop.json,
                seq,
            };
            if self.courier.send(node, parcel).await.is_err() {
                // The courier stops only once the node is shutting down:
                // this hop, and those after it, never leave.
                if i == 0 {
                    for leg in &route.remote {
                        self.outcomes.untrack_leg(msg.msg_id, &leg.node);
                    }
                    return Err(RouteError::ShuttingDown);
                }
                for leg in route.remote.iter().skip(hop.leg) {
                    self.outcomes.untrack_leg(msg.msg_id, &leg.node);
                }
                break;
            }
            published += 1;
            remote += targets;
        }

        let local = self.hand_over_local(&msg, &route);
        if !route.carbons.is_empty() {
            let carbon = Utf8Bytes::from(with_field(&msg.frame, "carbon", "true"));
            for session in &route.carbons {
                // Untracked: a carbon never changes the ack or receipts.
                let _ = session.outbox.push(Outbound {
                    frame: carbon.clone(),
                    handover: None,
                });
            }
        }

        let status = if matches!(msg.to, Recipient::Group(_)) {
            AckStatus::Fanout
        } else if remote > 0 {
            AckStatus::Remote
        } else if local > 0 {
            AckStatus::Local
        } else {
            AckStatus::Offline
        };
        self.metrics.send_routed(status);
        self.metrics.hops_published(published);
        let mut sent = Sent {
            status,
            local,
            remote,
            offline: route.offline,
            nodes: published,
            reason: None,
            last_seen: None,
            stored: None,
        };
        match (&msg.to, route.offline_why) {
            (Recipient::Client(to), why) if status == AckStatus::Offline => {
                let why = why.map(|w| *w).unwrap_or_default();
                // Sessions here that refused it: closing, or just now full.
                let refused = route.local.first().and_then(|s| s.outbox.closing());
                let because = why
                    .reason
                    .or(refused.map(offline_reason))
                    .unwrap_or(OfflineReason::Disconnected);
                sent.stored = self.offline.store(&msg).await;
                let kept = matches!(sent.stored, Some(Ok(())));
                let announce = self.offline.announce();
                announce.offline(msg.msg_id, &msg.from, to, None, kept, because);
                (sent.reason, sent.last_seen) = (Some(because), why.last_seen);
            }
            (Recipient::Group(group), Some(why)) => {
                let Why { members, .. } = *why;
                self.offline.group_offline_events(&msg, group, members);
            }
            _ => {}
        }
        Ok(sent)
    }

    /// Hands a signal (v3) to every session of `route`: those here, and
    /// one hop per other node. Never tracked, stored or answered: a session
    /// whose queue is more than half full does not get it, a hop the bus
    /// does not take is gone. Returns how many sessions here took it.
    pub async fn dispatch_signal(&self, msg: Message, route: Route) -> u32 {
        let mut handed = 0;
        for session in &route.local {
            if session.outbox.put_signal(msg.frame.clone()) {
                handed += 1;
                self.metrics.signal(SignalFate::Sent);
            } else {
                self.metrics.signal(SignalFate::QueueFull);
            }
        }
        for leg in &route.remote {
            let hop = SignalHop {
                from: msg.from.clone(),
                targets: leg.targets.clone(),
                frame: raw_frame(&msg.frame),
            };
            let json = encode_hop(&Hop::Signal(hop));
            // A stopped courier (shutting down) takes no more: the signal
            // is gone, as signals may be.
            let _ = self
                .courier
                .send(leg.node.clone(), Parcel::Note(json))
                .await;
        }
        handed
    }

    /// Hands a read receipt (v3) about `by` to every session of `route`:
    /// the latest per conversation and reader waits in each session here;
    /// one hop per other node. Never tracked or answered.
    pub async fn dispatch_read(&self, by: &ClientId, frame: Utf8Bytes, route: Route) {
        let key = Utf8Bytes::from(ReadHop::key(&frame).to_owned());
        for session in &route.local {
            session.outbox.put_read(key.clone(), frame.clone());
        }
        for leg in &route.remote {
            let hop = ReadHop {
                by: by.clone(),
                targets: leg.targets.clone(),
                frame: raw_frame(&frame),
            };
            let json = encode_hop(&Hop::Read(hop));
            let _ = self
                .courier
                .send(leg.node.clone(), Parcel::Note(json))
                .await;
        }
    }

    /// [`locate`](Self::locate) then [`dispatch`](Self::dispatch), for
    /// senders with a single message in flight (the HTTP API).
    pub async fn route(&self, msg: Message) -> Result<Sent, RouteError> {
        let route = self.locate(&msg).await?;
        self.dispatch(msg, route).await
    }

    /// Hands the message to its sessions here; returns how many took it.
    /// A session that refuses (it is closing, or its queue is full) did
    /// not take it and is not counted: the ack says what happened.
    fn hand_over_local(&self, msg: &Message, route: &Route) -> u32 {
        if route.local.is_empty() {
            return 0;
        }
        let handover = Arc::new(Handover::new(
            msg.msg_id,
            msg.from.clone(),
            msg.to.clone(),
            msg.sender.clone(),
            Report::Sender,
            false,
            route.local.len() as u32,
        ));
        let mut handed = 0;
        for session in &route.local {
            let item = Outbound {
                frame: msg.frame.clone(),
                handover: Some(handover.clone()),
            };
            if session.outbox.push(item).is_ok() {
                handed += 1;
            }
        }
        handed
    }

    /// Tracks the remote targets of a message from a session here, before
    /// any leaves (so that no outcome can overtake its entry). Returns
    /// each hop's in-flight sequence number (`None` for hops of carbons
    /// only, and for messages without a sender session).
    fn track(
        &self,
        msg: &Message,
        route: &Route,
        hops: &hops::Hops,
    ) -> Result<smallvec::SmallVec<[Option<u64>; 2]>, RouteError> {
        let untracked = || hops.iter().map(|_| None).collect();
        let Some(sender) = &msg.sender else {
            return Ok(untracked());
        };
        let legs = hops::legs(route, hops);
        if legs.is_empty() {
            return Ok(untracked());
        }
        let mut seqs = self
            .outcomes
            .track(msg.msg_id, sender.clone(), legs)
            .map_err(|_| RouteError::TooManyInFlight)?
            .into_iter();
        Ok(hops
            .iter()
            .map(|h| {
                if h.targets.is_empty() {
                    None
                } else {
                    seqs.next()
                }
            })
            .collect())
    }
}

/// The client whose other devices get carbons of `msg`: its sender, for a
/// message (not a signal) from a session to another client.
fn carbon_source(msg: &Message) -> Option<&ClientId> {
    if msg.signal {
        return None;
    }
    let to = msg.client()?;
    msg.sender
        .as_ref()
        .filter(|_| msg.from != *to)
        .map(|_| &msg.from)
}
