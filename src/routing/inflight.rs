//! Messages this node published to other nodes whose outcomes have not
//! all come back yet.
//!
//! Every cross-node message with a sender session is tracked here from
//! publish until each of its remote targets (recipient sessions, named by
//! client and device) has an outcome. A message has one *leg* per node it
//! was published to, holding the targets there; a target that moved is
//! carried over to a leg of its own at the node it was forwarded to.
//! Outcomes arrive per target, or as a `done` that settles what is left
//! of one node's leg (see `routing::delivery`).
//!
//! A target that cannot get an outcome any more is answered `offline` to
//! its sender: when the bus bounces its hop (nobody listening), when the
//! liveness view sees its node die or restart, or, as a last resort, when
//! the message is older than the hop timeout. This is what turns
//! "published into a subject nobody reads" and "recipient node died with
//! the message" into `offline` receipts instead of silence.
//!
//! Entries live for about one round trip in steady state, so the map stays
//! small; it is bounded all the same (in messages), and a full map refuses
//! new sends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use smallvec::SmallVec;
use tokio::time::Instant;
use uuid::Uuid;

use crate::hub::Sender;
use crate::lock::Locked;
use crate::protocol::{ClientId, DeviceId, NodeId, OfflineReason, now_ms};

/// A recipient session, by client and device (its session id may change
/// while the message is on its way: a device that reconnects elsewhere is
/// still the same target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub to: ClientId,
    pub device: DeviceId,
}

/// The targets of a message at one node.
#[derive(Debug)]
pub struct Leg {
    pub node: NodeId,
    /// The node's liveness epoch when the leg was published.
    pub epoch: u64,
    /// Its part, when the targets at one node went in several hops (see
    /// `MessageHop::part`); 0 otherwise.
    pub part: u32,
    pub targets: SmallVec<[Who; 1]>,
}

#[derive(Debug)]
struct TrackedLeg {
    leg: Leg,
    /// Order of publishing: the bus bounces batches as ranges of these.
    /// `None` for the legs of forwarded targets, which a `done` never
    /// settles (their node reports each on its own).
    seq: Option<u64>,
    /// When it was tracked (ms since the epoch): a restart of its node
    /// loses only what was sent before the new run started.
    since_ms: u64,
}

#[derive(Debug)]
struct Flight {
    sender: Sender,
    deadline: Instant,
    legs: SmallVec<[TrackedLeg; 1]>,
}

impl Flight {
    fn is_empty(&self) -> bool {
        self.legs.iter().all(|l| l.leg.targets.is_empty())
    }
}

/// A target's final fate, for its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    Delivered,
    Offline(OfflineReason),
}

/// One target settled here: tell `sender`.
#[derive(Debug, Clone)]
pub struct Told {
    pub sender: Sender,
    pub msg_id: Uuid,
    pub who: Who,
    pub fate: Final,
}

pub struct InFlight {
    flights: Mutex<HashMap<Uuid, Flight>>,
    next_seq: AtomicU64,
    capacity: usize,
    timeout: Duration,
}

/// The in-flight map is at capacity.
#[derive(Debug)]
pub struct Full;

impl InFlight {
    pub fn new(capacity: usize, timeout: Duration) -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(1),
            capacity,
            timeout,
        }
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Flight>> {
        self.flights.locked()
    }

    /// Starts tracking message `msg_id`, published in `legs`. Returns each
    /// leg's sequence number, in order.
    pub fn insert(
        &self,
        msg_id: Uuid,
        sender: Sender,
        legs: impl IntoIterator<Item = Leg>,
    ) -> Result<SmallVec<[u64; 2]>, Full> {
        let mut flights = self.flights();
        if flights.len() >= self.capacity {
            return Err(Full);
        }
        let mut seqs = SmallVec::new();
        let legs = legs
            .into_iter()
            .map(|leg| {
                let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                seqs.push(seq);
                TrackedLeg {
                    leg,
                    seq: Some(seq),
                    since_ms: now_ms(),
                }
            })
            .collect();
        flights.insert(
            msg_id,
            Flight {
                sender,
                deadline: Instant::now() + self.timeout,
                legs,
            },
        );
        Ok(seqs)
    }

    /// Stops tracking the leg of `msg_id` to `node`, which never left.
    pub fn remove_leg(&self, msg_id: Uuid, node: &NodeId) {
        let mut flights = self.flights();
        if let Some(flight) = flights.get_mut(&msg_id) {
            flight
                .legs
                .retain(|l| !(l.seq.is_some() && l.leg.node == *node));
            if flight.is_empty() {
                flights.remove(&msg_id);
            }
        }
    }

    /// Starts tracking `who`, a target of `msg_id` forwarded from here to
    /// `node` (in liveness `epoch`): its sender is on this node, but the
    /// message had been handed to a session here that left.
    pub fn insert_forwarded(
        &self,
        msg_id: Uuid,
        sender: Sender,
        who: Who,
        node: &NodeId,
        epoch: u64,
    ) -> Result<(), Full> {
        let mut flights = self.flights();
        let leg = TrackedLeg {
            leg: Leg {
                node: node.clone(),
                epoch,
                part: 0,
                targets: smallvec::smallvec![who],
            },
            seq: None,
            since_ms: now_ms(),
        };
        if let Some(flight) = flights.get_mut(&msg_id) {
            flight.legs.push(leg);
            return Ok(());
        }
        if flights.len() >= self.capacity {
            return Err(Full);
        }
        flights.insert(
            msg_id,
            Flight {
                sender,
                deadline: Instant::now() + self.timeout,
                legs: smallvec::smallvec![leg],
            },
        );
        Ok(())
    }

    /// `who`'s own outcome arrived: returns what to tell its sender (`None`
    /// when it is not tracked here, e.g. already answered).
    pub fn settle(&self, msg_id: Uuid, who: &Who, fate: Final) -> Option<Told> {
        let mut flights = self.flights();
        let flight = flights.get_mut(&msg_id)?;
        let found = flight.legs.iter_mut().any(|l| {
            let before = l.leg.targets.len();
            l.leg.targets.retain(|t| t != who);
            l.leg.targets.len() != before
        });
        if !found {
            return None;
        }
        let told = Told {
            sender: flight.sender.clone(),
            msg_id,
            who: who.clone(),
            fate,
        };
        if flight.is_empty() {
            flights.remove(&msg_id);
        }
        Some(told)
    }

    /// `who` was forwarded to `node` (in liveness `epoch`): its outcome now
    /// depends on that node. False when it is not tracked here.
    pub fn forwarded(&self, msg_id: Uuid, who: &Who, node: &NodeId, epoch: u64) -> bool {
        let mut flights = self.flights();
        let Some(flight) = flights.get_mut(&msg_id) else {
            return false;
        };
        let found = flight.legs.iter_mut().any(|l| {
            let before = l.leg.targets.len();
            l.leg.targets.retain(|t| t != who);
            l.leg.targets.len() != before
        });
        if !found {
            return false;
        }
        match flight
            .legs
            .iter_mut()
            .find(|l| l.seq.is_none() && l.leg.node == *node)
        {
            Some(leg) => leg.leg.targets.push(who.clone()),
            None => flight.legs.push(TrackedLeg {
                leg: Leg {
                    node: node.clone(),
                    epoch,
                    part: 0,
                    targets: smallvec::smallvec![who.clone()],
                },
                seq: None,
                since_ms: now_ms(),
            }),
        }
        true
    }

    /// `node` reports every target of its leg (of that `part` of it) not
    /// reported on its own as delivered.
    pub fn done(&self, msg_id: Uuid, node: &NodeId, part: u32) -> Vec<Told> {
        let mut flights = self.flights();
        let Some(flight) = flights.get_mut(&msg_id) else {
            return Vec::new();
        };
        let mut told = Vec::new();
        for l in flight
            .legs
            .iter_mut()
            .filter(|l| l.seq.is_some() && l.leg.node == *node && l.leg.part == part)
        {
            told.extend(l.leg.targets.drain(..).map(|who| Told {
                sender: flight.sender.clone(),
                msg_id,
                who,
                fate: Final::Delivered,
            }));
        }
        if flight.is_empty() {
            flights.remove(&msg_id);
        }
        told
    }

    /// Removes and returns the targets at `node` published before
    /// `before_epoch`: their outcome will never come. For a restart,
    /// `new_run_ms` is when the new run started: what was tracked after it
    /// went to the new run (the same node subject), which answers it, so it
    /// stays (a session handed over to the restarted node while this
    /// node's view still knew only the old run, say).
    pub fn lost(&self, node: &NodeId, before_epoch: u64, new_run_ms: Option<u64>) -> Vec<Told> {
        self.take_legs(|_, l| {
            l.leg.node == *node
                && l.leg.epoch < before_epoch
                && new_run_ms.is_none_or(|started| l.since_ms < started)
        })
    }

    /// Removes and returns the targets of a batch sent to `node` that
    /// reached nobody: legs with sequence numbers `first..=last` (others in
    /// that range went to other nodes and stay).
    pub fn lost_batch(&self, node: &NodeId, first: u64, last: u64) -> Vec<Told> {
        self.take_legs(|_, l| {
            l.leg.node == *node && l.seq.is_some_and(|s| (first..=last).contains(&s))
        })
    }

    /// A forward of `msg_id` reached nobody: its forwarded targets are lost.
    pub fn forward_bounced(&self, msg_id: Uuid) -> Vec<Told> {
        self.take_legs(|id, l| id == msg_id && l.seq.is_none())
    }

    /// Removes and returns every target of messages whose outcome is
    /// overdue.
    pub fn expired(&self, now: Instant) -> Vec<Told> {
        let mut flights = self.flights();
        let overdue: Vec<Uuid> = flights
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut told = Vec::new();
        for msg_id in overdue {
            if let Some(flight) = flights.remove(&msg_id) {
                for l in flight.legs {
                    told.extend(l.leg.targets.into_iter().map(|who| Told {
                        sender: flight.sender.clone(),
                        msg_id,
                        who,
                        fate: Final::Offline(OfflineReason::NodeDead),
                    }));
                }
            }
        }
        told
    }

    fn take_legs(&self, lost: impl Fn(Uuid, &TrackedLeg) -> bool) -> Vec<Told> {
        let mut flights = self.flights();
        let mut told = Vec::new();
        flights.retain(|msg_id, flight| {
            for l in flight.legs.iter_mut().filter(|l| lost(*msg_id, l)) {
                told.extend(l.leg.targets.drain(..).map(|who| Told {
                    sender: flight.sender.clone(),
                    msg_id: *msg_id,
                    who,
                    fate: Final::Offline(OfflineReason::NodeDead),
                }));
            }
            !flight.is_empty()
        });
        told
    }

    /// Removes and returns every target of messages from senders `of`
    /// picks, as `offline` for `reason`: their outcome will not be waited
    /// for.
    pub fn give_up_senders(
        &self,
        of: impl Fn(&Sender) -> bool,
        reason: OfflineReason,
    ) -> Vec<Told> {
        let mut flights = self.flights();
        let mut told = Vec::new();
        flights.retain(|msg_id, flight| {
            if !of(&flight.sender) {
                return true;
            }
            for l in flight.legs.drain(..) {
                told.extend(l.leg.targets.into_iter().map(|who| Told {
                    sender: flight.sender.clone(),
                    msg_id: *msg_id,
                    who,
                    fate: Final::Offline(reason),
                }));
            }
            false
        });
        told
    }

    /// Whether a message of a sender `of` picks still awaits an outcome.
    pub fn any_sender(&self, of: impl Fn(&Sender) -> bool) -> bool {
        self.flights().values().any(|f| of(&f.sender))
    }

    /// Messages tracked.
    pub fn len(&self) -> usize {
        self.flights().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> Sender {
        Sender {
            node: NodeId::parse("a").unwrap(),
            client: ClientId::parse("alice").unwrap(),
            session: Uuid::new_v4(),
            id: None,
            receipt: false,
            group: None,
        }
    }

    fn who(device: &str) -> Who {
        Who {
            to: ClientId::parse("bob").unwrap(),
            device: DeviceId::parse(device).unwrap(),
        }
    }

    fn node(n: &str) -> NodeId {
        NodeId::parse(n).unwrap()
    }

    fn leg(n: &str, epoch: u64, devices: &[&str]) -> Leg {
        Leg {
            node: node(n),
            epoch,
            part: 0,
            targets: devices.iter().map(|d| who(d)).collect(),
        }
    }

    #[test]
    fn targets_leave_by_their_own_outcome_or_their_legs_done() {
        let flight = InFlight::new(10, Duration::from_secs(60));
        let m = Uuid::now_v7();
        flight
            .insert(
                m,
                sender(),
                [leg("b", 0, &["phone", "tab"]), leg("c", 0, &["pc"])],
            )
            .unwrap();
        let told = flight
            .settle(m, &who("tab"), Final::Offline(OfflineReason::Disconnected))
            .unwrap();
        assert_eq!(told.who, who("tab"));
        assert!(
            flight.settle(m, &who("tab"), Final::Delivered).is_none(),
            "only once"
        );
        let done = flight.done(m, &node("b"), 0);
        assert_eq!(done.len(), 1, "phone, quietly");
        assert_eq!(flight.len(), 1, "c's leg is still out");
        assert_eq!(flight.done(m, &node("c"), 0).len(), 1);
        assert!(flight.is_empty());
    }

    #[test]
    fn a_forwarded_target_is_not_settled_by_a_done() {
        let flight = InFlight::new(10, Duration::from_secs(60));
        let m = Uuid::now_v7();
        flight
            .insert(m, sender(), [leg("b", 0, &["phone", "tab"])])
            .unwrap();
        flight
            .insert(Uuid::now_v7(), sender(), [leg("c", 0, &["pc"])])
            .unwrap();
        // tab moved from b to c, where another leg of this message may
        // also be: c's `done` for that leg must not cover tab.
        assert!(flight.forwarded(m, &who("tab"), &node("c"), 0));
        assert!(flight.done(m, &node("c"), 0).is_empty());
        assert_eq!(flight.done(m, &node("b"), 0).len(), 1);
        assert_eq!(flight.len(), 2);
        // c dies: tab is lost with it.
        let lost = flight.lost(&node("c"), 1, None);
        assert_eq!(lost.len(), 2);
        assert!(
            lost.iter()
                .all(|t| t.fate == Final::Offline(OfflineReason::NodeDead))
        );
        assert!(flight.is_empty());
    }

    #[test]
    fn a_restart_loses_only_what_was_sent_before_the_new_run() {
        let flight = InFlight::new(10, Duration::from_secs(60));
        let before = Uuid::now_v7();
        flight
            .insert(before, sender(), [leg("b", 0, &["x"])])
            .unwrap();
        let restarted_at = now_ms() + 1;
        std::thread::sleep(Duration::from_millis(3));
        // Handed to the new run while this view still had the old epoch.
        let after = Uuid::now_v7();
        flight
            .insert_forwarded(after, sender(), who("y"), &node("b"), 0)
            .unwrap();
        let lost = flight.lost(&node("b"), 1, Some(restarted_at));
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].msg_id, before);
        assert_eq!(flight.len(), 1, "the new run's target stays");
        // A death takes everything.
        assert_eq!(flight.lost(&node("b"), u64::MAX, None).len(), 1);
    }

    #[test]
    fn a_bounced_batch_takes_only_its_node_and_range() {
        let flight = InFlight::new(10, Duration::from_secs(60));
        let s1 = flight
            .insert(Uuid::now_v7(), sender(), [leg("b", 0, &["x"])])
            .unwrap()[0];
        let s2 = flight
            .insert(Uuid::now_v7(), sender(), [leg("c", 0, &["x"])])
            .unwrap()[0];
        let s3 = flight
            .insert(Uuid::now_v7(), sender(), [leg("b", 0, &["x", "y"])])
            .unwrap()[0];
        flight
            .insert(Uuid::now_v7(), sender(), [leg("b", 0, &["x"])])
            .unwrap();
        assert!(s1 < s2 && s2 < s3);
        assert_eq!(flight.lost_batch(&node("b"), s1, s3).len(), 3);
        assert_eq!(flight.len(), 2, "c's and the one after the range stay");
    }

    #[test]
    fn overdue_messages_are_answered_and_a_full_map_refuses() {
        let flight = InFlight::new(1, Duration::from_secs(1));
        let m = Uuid::now_v7();
        flight
            .insert(m, sender(), [leg("b", 0, &["x", "y"])])
            .unwrap();
        assert!(
            flight
                .insert(Uuid::now_v7(), sender(), [leg("b", 0, &["x"])])
                .is_err()
        );
        let later = Instant::now() + Duration::from_secs(2);
        assert_eq!(flight.expired(later).len(), 2);
        assert!(flight.is_empty());
    }
}
