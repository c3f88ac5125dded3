//! A send's way out: find the recipient's sessions ([`Router::locate`]),
//! take the branch for each ([`Router::dispatch`]): hand the message to
//! the sessions here, publish one hop per other node, and send carbons to
//! the sender's other devices.

use std::sync::Arc;

use smallvec::SmallVec;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::cache::{CachedDevice, CachedRoute};
use super::courier::Parcel;
use super::inflight::{Leg, Who};
use super::liveness::Belief;
use super::offline::{Offline, Stored, ended_with_its_node};
use super::{Message, RouteError, Router};
use crate::bus::BusError;
use crate::hub::{Outbound, Report, SessionHandle};
use crate::presence::{PresenceError, PresenceRecord};
use crate::protocol::envelope::{ENVELOPE_OVERHEAD, MessageHopOut, encode_message_hop};
use crate::protocol::frames::with_field;
use crate::protocol::{Ack, AckStatus, Carbon, ClientId, NodeId, OfflineReason, Recipient, Target};

/// Where a message goes: every recipient session, by branch, and the
/// sender's other sessions that get a carbon copy.
#[derive(Debug, Default)]
pub struct Route {
    /// Recipient sessions on this node.
    pub local: Sessions,
    /// Recipient sessions (and carbons) on other nodes, one leg per node.
    pub remote: SmallVec<[RemoteLeg; 1]>,
    /// The sender's other sessions on this node.
    pub carbons: Sessions,
    /// Group members other than the sender with no session.
    pub offline: u32,
    /// Why nobody is reached (a send to a client with no session), or who
    /// (a group send's members with no session, when events are on). Boxed:
    /// most routes have none.
    pub offline_why: Option<Box<Offline>>,
}

/// Sessions on this node, without an allocation for the usual one. (A
/// route is moved a few times on its way through a session's pipeline,
/// so it is kept small.)
pub type Sessions = SmallVec<[Arc<SessionHandle>; 1]>;

/// What goes to one other node.
#[derive(Debug)]
pub struct RemoteLeg {
    pub node: NodeId,
    /// The node's liveness epoch when its sessions were read.
    pub epoch: u64,
    pub targets: SmallVec<[Target; 1]>,
    pub carbons: Vec<Carbon>,
}

impl Route {
    /// Sessions a message would reach (carbons not counted).
    pub fn sessions(&self) -> usize {
        self.local.len() + self.remote.iter().map(|l| l.targets.len()).sum::<usize>()
    }

    pub(super) fn leg(&mut self, node: &NodeId, epoch: u64) -> &mut RemoteLeg {
        match self.remote.iter().position(|l| l.node == *node) {
            Some(i) => &mut self.remote[i],
            None => {
                self.remote.push(RemoteLeg {
                    node: node.clone(),
                    epoch,
                    targets: SmallVec::new(),
                    carbons: Vec::new(),
                });
                self.remote.last_mut().expect("just pushed")
            }
        }
    }
}

/// One hop to publish: a leg's targets (a range of them, for a part of a
/// split leg), encoded.
struct PlannedHop {
    /// Index of its leg in [`Route::remote`].
    leg: usize,
    /// 0, or its part number (from 1) when the leg was split.
    part: u32,
    targets: std::ops::Range<usize>,
    json: Vec<u8>,
}

type Hops = SmallVec<[PlannedHop; 2]>;

/// What a dispatch did: the ack's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub status: AckStatus,
    /// Sessions the message was handed to here.
    pub local: u32,
    /// Sessions it was published to on other nodes.
    pub remote: u32,
    /// Group members with no session (0 for a send to a client).
    pub offline: u32,
    /// Hops published (one per node).
    pub nodes: u32,
    /// An offline send to a client: why, and when the recipient was last
    /// seen.
    pub reason: Option<OfflineReason>,
    pub last_seen: Option<u64>,
    /// An offline send that asked for the inbox, on a node with one.
    pub stored: Option<Stored>,
}

impl Sent {
    /// `ack.sessions`.
    pub fn sessions(&self) -> u32 {
        self.local + self.remote
    }

    /// The ack of the send: the branch and how many sessions it reached
    /// (for a group, the count of each branch).
    pub fn ack<'a>(&self, id: Option<&'a str>, msg_id: uuid::Uuid) -> Ack<'a> {
        let mut ack = Ack::new(id, msg_id, self.status);
        if self.status == AckStatus::Fanout {
            ack.local = Some(self.local);
            ack.remote = Some(self.remote);
            ack.offline = Some(self.offline);
            ack.nodes = Some(self.nodes);
        } else {
            ack.sessions = Some(self.sessions());
        }
        ack.reason = self.reason;
        ack.last_seen = self.last_seen;
        if let Some(stored) = self.stored {
            ack.stored = Some(stored.is_ok());
            ack.store_error = stored.err();
        }
        ack
    }
}

impl Router {
    /// The route for `msg` if it is known without asking the presence
    /// store: every record it needs is cached and names live nodes in the
    /// same run.
    pub fn locate_fast(&self, msg: &Message) -> Option<Route> {
        self.cache.follow_bus(self.ports.bus.generation());
        let to = match &msg.to {
            Recipient::Client(to) => to,
            Recipient::Group(group) => return self.locate_group_fast(msg, group),
        };
        // An empty entry is not trusted for a send to a client: one coming
        // online must be reachable at once.
        let records = self.cached(to).filter(|r| !r.is_empty())?;
        let own = match self.carbon_source(msg) {
            Some(from) => Some(self.cached(from)?),
            None => None,
        };
        self.metrics.route_cache_hit();
        Some(self.route_to(msg, &records, own.as_deref()))
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
        if let Some(from) = self.carbon_source(msg) {
            wanted.push(from.clone());
        }
        let mut read = self.lookup_noting_dead(&wanted).await?.into_iter();
        let (records, dead) = read.next().unwrap_or_default();
        let own = read.next().map(|(own, _)| own);
        let mut route = self.route_to(msg, &records, own.as_deref());
        if route.sessions() == 0 {
            route.offline_why = Some(Box::new(self.why_offline(to, dead).await));
        }
        Ok(route)
    }

    /// The client whose other devices get carbons of `msg`: its sender,
    /// for a message from a session to another client.
    fn carbon_source<'m>(&self, msg: &'m Message) -> Option<&'m ClientId> {
        let to = msg.client()?;
        msg.sender
            .as_ref()
            .filter(|_| msg.from != *to)
            .map(|_| &msg.from)
    }

    /// A cached record whose remote devices are all believed, in the run
    /// they were read in.
    pub(super) fn cached(&self, client: &ClientId) -> Option<CachedRoute> {
        let route = self.cache.get(client)?;
        let believed = route.iter().all(|d| {
            d.record.node == self.node
                || matches!(self.liveness.judge(&d.record.node, d.record.since),
                    crate::routing::liveness::Belief::Alive { epoch } if epoch == d.epoch)
        });
        if believed {
            Some(route)
        } else {
            self.cache.invalidate(client);
            None
        }
    }

    /// Reads `clients`' records from the store in one round trip, keeps
    /// the believed devices, and caches them.
    pub(super) async fn lookup_many(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<CachedRoute>, RouteError> {
        let read = self.lookup_noting_dead(clients).await?;
        Ok(read.into_iter().map(|(route, _)| route).collect())
    }

    /// [`lookup_many`](Self::lookup_many), saying for each client whether
    /// a device of it was dropped for naming a dead node.
    async fn lookup_noting_dead(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<(CachedRoute, bool)>, RouteError> {
        self.metrics.presence_lookup();
        let seen: Vec<u64> = clients.iter().map(|c| self.cache.generation(c)).collect();
        let records = self.ports.presence.lookup_many(clients).await?;
        Ok(clients
            .iter()
            .zip(seen)
            .zip(records)
            .map(|((client, seen), records)| {
                let (route, dead) = self.believe_noting_dead(client, records);
                self.cache.insert(client.clone(), route.clone(), seen);
                (route, dead)
            })
            .collect())
    }

    /// The devices of a record that are to be believed. The others (a
    /// crashed node's, a ghost of an earlier run, one that outlived its
    /// session here) are deleted on the way, compared on their session.
    pub(super) fn believe(&self, client: &ClientId, records: Vec<PresenceRecord>) -> CachedRoute {
        self.believe_noting_dead(client, records).0
    }

    /// [`believe`](Self::believe), and whether a device named a dead node.
    fn believe_noting_dead(
        &self,
        client: &ClientId,
        records: Vec<PresenceRecord>,
    ) -> (CachedRoute, bool) {
        let mut dead = false;
        let route = records
            .into_iter()
            .filter_map(|record| {
                if record.node == self.node {
                    // Sessions register here before their field is
                    // written, so a field naming this node with no session
                    // here is left over (a ghost, or a close whose delete
                    // is still on its way).
                    if self.hub.get_session(client, record.session).is_none() {
                        self.forget_stale_record(client.clone(), record, false);
                        return None;
                    }
                    return Some(CachedDevice { record, epoch: 0 });
                }
                match self.liveness.judge(&record.node, record.since) {
                    Belief::Dead => {
                        dead = true;
                        self.forget_stale_record(client.clone(), record, true);
                        None
                    }
                    Belief::Alive { epoch } => Some(CachedDevice { record, epoch }),
                }
            })
            .collect();
        (route, dead)
    }

    /// The route of a message to a client: its sessions here (from the
    /// hub, the truth for this node), its sessions elsewhere (from its
    /// record), and carbons for the sender's other sessions. One session
    /// per device: while a device moves, the hub may still hold its old
    /// session here as the record names its new one elsewhere (or, with a
    /// stale cache, the other way round), and the newer one is taken.
    fn route_to(
        &self,
        msg: &Message,
        records: &[CachedDevice],
        own: Option<&[CachedDevice]>,
    ) -> Route {
        let mut route = Route::default();
        let to = msg.client().expect("a message to a client");
        if let Some(local) = self.hub.sessions(to) {
            route.local.extend(local.iter().cloned());
        }
        for d in remote_devices(&mut route.local, records, &self.node) {
            route.leg(&d.record.node, d.epoch).targets.push(Target {
                to: to.clone(),
                device: d.record.device.clone(),
                session: d.record.session,
            });
        }
        if let (Some(own), Some(sender)) = (own, &msg.sender) {
            if let Some(own_here) = self.hub.sessions(&msg.from) {
                route.carbons.extend(own_here.iter().cloned());
            }
            for d in remote_devices(&mut route.carbons, own, &self.node) {
                route.leg(&d.record.node, d.epoch).carbons.push(Carbon {
                    device: d.record.device.clone(),
                    session: d.record.session,
                });
            }
            route.carbons.retain(|s| s.id != sender.session);
        }
        route
    }

    /// Takes the branch for every session of `route`. Calls for one sender
    /// must come in send order. When it fails, nothing was handed over or
    /// published.
    pub async fn dispatch(&self, msg: Message, route: Route) -> Result<Sent, RouteError> {
        // Everything that can refuse the send is checked before anything
        // is handed over: an error means nothing was sent.
        let hops = self.encode_hops(&msg, &route)?;
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
        let (mut reason, mut last_seen, mut stored) = (None, None, None);
        match (&msg.to, route.offline_why) {
            (Recipient::Client(to), why) if status == AckStatus::Offline => {
                let why = why.map(|w| *w).unwrap_or_default();
                // Sessions here that refused it: closing, or just now full.
                let refused = route.local.first().and_then(|s| s.outbox.closing());
                let because = why
                    .reason
                    .or(refused.map(super::outcomes::offline_reason))
                    .unwrap_or(OfflineReason::Disconnected);
                stored = self.store(&msg).await;
                let kept = matches!(stored, Some(Ok(())));
                self.offline_event(msg.msg_id, &msg.from, to, None, kept, because);
                (reason, last_seen) = (Some(because), why.last_seen);
            }
            (Recipient::Group(group), Some(why)) => {
                self.group_offline_events(&msg, group, why.members);
            }
            _ => {}
        }
        Ok(Sent {
            status,
            local,
            remote,
            offline: route.offline,
            nodes: published,
            reason,
            last_seen,
            stored,
        })
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
        let handover = self.handover_of(msg, Report::Sender, route.local.len() as u32);
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

    /// Every leg's hop, encoded, checked against the bus's limits. One hop
    /// per leg, except for a group's leg too large for one bus message,
    /// which is split into parts of equal size.
    fn encode_hops(&self, msg: &Message, route: &Route) -> Result<Hops, RouteError> {
        let mut hops = Hops::new();
        if route.remote.is_empty() {
            return Ok(hops);
        }
        // Refused before queueing, so the sender hears it now.
        if !self.ports.bus.connected() {
            return Err(BusError::unavailable("the bus (NATS) is disconnected").into());
        }
        let limit = self
            .ports
            .bus
            .max_envelope()
            .saturating_sub(ENVELOPE_OVERHEAD);
        let reply = msg.sender.as_ref().map(|s| s.reply());
        let encode = |leg: &RemoteLeg, targets: &[Target], part: u32| {
            encode_message_hop(&MessageHopOut {
                msg_id: msg.msg_id,
                from: &msg.from,
                to: msg.to.addressee(),
                forwarded: false,
                reply: reply.as_ref(),
                targets,
                carbons: &leg.carbons,
                part,
                frame: &msg.frame,
            })
        };
        for (i, leg) in route.remote.iter().enumerate() {
            let whole = encode(leg, &leg.targets, 0);
            if whole.len() <= limit {
                hops.push(PlannedHop {
                    leg: i,
                    part: 0,
                    targets: 0..leg.targets.len(),
                    json: whole,
                });
                continue;
            }
            let n = leg.targets.len();
            let mut parts = whole.len().div_ceil(limit).max(2);
            let too_large = |size| BusError::TooLarge { size, limit };
            if !matches!(msg.to, Recipient::Group(_)) || n < 2 {
                return Err(too_large(whole.len()).into());
            }
            loop {
                let per = n.div_ceil(parts);
                let split: Vec<PlannedHop> = (0..n)
                    .step_by(per)
                    .enumerate()
                    .map(|(k, from)| {
                        let targets = from..(from + per).min(n);
                        let part = k as u32 + 1;
                        let json = encode(leg, &leg.targets[targets.clone()], part);
                        PlannedHop {
                            leg: i,
                            part,
                            targets,
                            json,
                        }
                    })
                    .collect();
                match split.iter().map(|h| h.json.len()).max() {
                    Some(largest) if largest > limit && per == 1 => {
                        return Err(too_large(largest).into());
                    }
                    Some(largest) if largest > limit => parts *= 2,
                    _ => {
                        hops.extend(split);
                        break;
                    }
                }
            }
        }
        Ok(hops)
    }

    /// Tracks the remote targets of a message from a session here, before
    /// any leaves (so that no outcome can overtake its entry). Returns
    /// each hop's in-flight sequence number (`None` for hops of carbons
    /// only).
    fn track(
        &self,
        msg: &Message,
        route: &Route,
        hops: &Hops,
    ) -> Result<SmallVec<[Option<u64>; 2]>, RouteError> {
        let untracked = || hops.iter().map(|_| None).collect();
        let Some(sender) = &msg.sender else {
            return Ok(untracked());
        };
        let legs: SmallVec<[Leg; 2]> = hops
            .iter()
            .filter(|h| !h.targets.is_empty())
            .map(|h| {
                let leg = &route.remote[h.leg];
                Leg {
                    node: leg.node.clone(),
                    epoch: leg.epoch,
                    part: h.part,
                    targets: leg.targets[h.targets.clone()]
                        .iter()
                        .map(|t| Who {
                            to: t.to.clone(),
                            device: t.device.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        if legs.is_empty() {
            return Ok(untracked());
        }
        let seqs = self
            .outcomes
            .track(msg.msg_id, sender.clone(), legs)
            .map_err(|_| RouteError::TooManyInFlight)?;
        let mut seqs = seqs.into_iter();
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

    /// `client`'s devices that are to be believed, read from the store (for
    /// the presence API).
    pub async fn devices(&self, client: &ClientId) -> Result<Vec<PresenceRecord>, PresenceError> {
        let records = self.ports.presence.lookup(client).await?;
        Ok(self
            .believe(client, records)
            .iter()
            .map(|d| d.record.clone())
            .collect())
    }

    /// A device field that must not be believed: one naming a dead node, a
    /// ghost of this node's earlier run, or one that outlived its session
    /// here. Deleting it, compared on its session id, can only remove that
    /// stale field.
    /// A field of a `dead` node's session that is deleted here ends that
    /// session (announced, and written as last-seen if it was the last).
    pub(super) fn forget_stale_record(&self, client: ClientId, record: PresenceRecord, dead: bool) {
        let Some(permit) = self.background_permit() else {
            return;
        };
        let presence = self.ports.presence.clone();
        let courier = self.courier.clone();
        let announce = dead.then(|| (self.ports.events.clone(), self.settings.last_seen_ttl));
        self.in_background(permit, async move {
            match presence
                .remove(&client, &record.device, &record.node, record.session)
                .await
            {
                Ok(true) => {
                    if let Some((events, ttl)) = announce {
                        ended_with_its_node(&*presence, &events, ttl, &client, &record).await;
                    }
                    courier.changed_client(client)
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(%client, error = %e, "could not delete a stale presence record")
                }
            }
        });
    }
}

/// The devices of `records` on other nodes, one session per device: where
/// `local` (this node's sessions of the client) has the same device, the
/// newer session is kept (the local one leaves `local` when the remote one
/// is newer).
pub(super) fn remote_devices<'r>(
    local: &mut Sessions,
    records: &'r [CachedDevice],
    me: &NodeId,
) -> SmallVec<[&'r CachedDevice; 2]> {
    let mut remote = SmallVec::new();
    for d in records.iter().filter(|d| d.record.node != *me) {
        match local.iter().position(|s| s.device == d.record.device) {
            Some(i) if d.record.since > local[i].since => {
                local.remove(i);
                remote.push(d);
            }
            Some(_) => {}
            None => remote.push(d),
        }
    }
    remote
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Outbox, QueueLimits};
    use crate::protocol::DeviceId;

    fn session(device: &str, since: u64) -> Arc<SessionHandle> {
        Arc::new(SessionHandle {
            id: uuid::Uuid::new_v4(),
            client: ClientId::parse("bob").unwrap(),
            device: DeviceId::parse(device).unwrap(),
            since,
            outbox: Outbox::new(QueueLimits {
                frames: 1,
                bytes: 1024,
            }),
        })
    }

    fn remote(device: &str, node: &str, since: u64) -> CachedDevice {
        CachedDevice {
            record: PresenceRecord {
                device: DeviceId::parse(device).unwrap(),
                node: NodeId::parse(node).unwrap(),
                session: uuid::Uuid::new_v4(),
                since,
            },
            epoch: 0,
        }
    }

    #[test]
    fn one_session_per_device_the_newer_one() {
        let me = NodeId::parse("a").unwrap();
        let mut local: Sessions = [session("phone", 10), session("tab", 10)]
            .into_iter()
            .collect();
        let records = [
            // The phone moved to node b after its session here opened.
            remote("phone", "b", 20),
            // The tab's record elsewhere is older than its session here.
            remote("tab", "b", 5),
            remote("laptop", "c", 1),
            // This node's own fields are the hub's business.
            remote("watch", "a", 1),
        ];
        let chosen: Vec<&str> = remote_devices(&mut local, &records, &me)
            .iter()
            .map(|d| d.record.device.as_str())
            .collect();
        assert_eq!(chosen, ["phone", "laptop"]);
        let here: Vec<&str> = local.iter().map(|s| s.device.as_str()).collect();
        assert_eq!(here, ["tab"]);
    }
}
