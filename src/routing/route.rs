//! A [`Route`]: where a message goes, every recipient session by branch
//! (here, or one leg per other node), and the sender's other sessions that
//! get a carbon copy; and [`Sent`], what its dispatch did (the ack).
//!
//! A route is built from the hub (the truth for this node's sessions) and
//! the records the [`Locator`](super::locator::Locator) believes (the
//! other nodes'), one session per device.

use std::sync::Arc;

use smallvec::SmallVec;

use super::Message;
use super::cache::CachedDevice;
use super::offline::{Stored, Why};
use crate::hub::{Hub, SessionHandle};
use crate::protocol::{Ack, AckStatus, Carbon, ClientId, NodeId, OfflineReason, Target};

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
    pub offline_why: Option<Box<Why>>,
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

    fn leg(&mut self, node: &NodeId, epoch: u64) -> &mut RemoteLeg {
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

    /// The route of a message to a client: its sessions here (from the
    /// hub, the truth for this node), its sessions elsewhere (from its
    /// believed `records`), and carbons for the sender's other sessions
    /// (`own`: the sender's records, when it gets carbons). One session
    /// per device: while a device moves, the hub may still hold its old
    /// session here as the record names its new one elsewhere (or, with a
    /// stale cache, the other way round), and the newer one is taken.
    pub fn to_client(
        hub: &Hub,
        me: &NodeId,
        msg: &Message,
        records: &[CachedDevice],
        own: Option<&[CachedDevice]>,
    ) -> Route {
        let mut route = Route::default();
        let to = msg.client().expect("a message to a client");
        if let Some(local) = hub.sessions(to) {
            route.local.extend(local.iter().cloned());
        }
        for d in remote_devices(&mut route.local, records, me) {
            route.leg(&d.record.node, d.epoch).targets.push(Target {
                to: to.clone(),
                device: d.record.device.clone(),
                session: d.record.session,
            });
        }
        if let (Some(own), Some(sender)) = (own, &msg.sender) {
            if let Some(own_here) = hub.sessions(&msg.from) {
                route.carbons.extend(own_here.iter().cloned());
            }
            for d in remote_devices(&mut route.carbons, own, me) {
                route.leg(&d.record.node, d.epoch).carbons.push(Carbon {
                    device: d.record.device.clone(),
                    session: d.record.session,
                });
            }
            route.carbons.retain(|s| s.id != sender.session);
        }
        route
    }

    /// Adds every session of group `member` (its `records` elsewhere, its
    /// sessions here from the hub) to the route of a group send, by
    /// branch. The sending session gets nothing (its other devices do); a
    /// member other than the sender with no session counts offline (and,
    /// with `note_offline`, is named for events).
    pub fn add_member(
        &mut self,
        hub: &Hub,
        me: &NodeId,
        msg: &Message,
        member: &ClientId,
        records: &[CachedDevice],
        note_offline: bool,
    ) {
        let mut here: Sessions = hub
            .sessions(member)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let remote = remote_devices(&mut here, records, me);
        let reached = here.len() + remote.len();
        for d in remote {
            self.leg(&d.record.node, d.epoch).targets.push(Target {
                to: member.clone(),
                device: d.record.device.clone(),
                session: d.record.session,
            });
        }
        let sending = msg.sender.as_ref().map(|s| s.session);
        here.retain(|s| Some(s.id) != sending);
        self.local.extend(here);
        if reached == 0 && *member != msg.from {
            self.offline += 1;
            if note_offline {
                self.offline_why
                    .get_or_insert_default()
                    .members
                    .push(member.clone());
            }
        }
    }
}

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

/// The devices of `records` on other nodes, one session per device: where
/// `local` (this node's sessions of the client) has the same device, the
/// newer session is kept (the local one leaves `local` when the remote one
/// is newer).
fn remote_devices<'r>(
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
    use crate::presence::PresenceRecord;
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
