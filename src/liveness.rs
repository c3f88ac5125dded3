//! Which nodes are alive, so that a crashed node's presence records stop
//! being believed.
//!
//! Every node writes a heartbeat into the presence store every
//! `ttl / 3`: its *incarnation* (node id, start time, a random nonce) with
//! an expiry `ttl` ahead, stamped by the store's own clock, so node clocks
//! never have to agree. Each heartbeat returns every node's latest entry,
//! from which this module keeps a view and answers one question for the
//! router: should a presence record naming node N, written at `since`, be
//! believed?
//!
//! - N's newest incarnation expired: N is dead (crashed, or cut off from
//!   the store); no record naming it is believed.
//! - N restarted (its newest incarnation started after `since`): the
//!   record is a ghost of the previous run, not believed. This is how a
//!   node restarting with the same id does not inherit its old ghosts.
//! - N unknown: believed only if written recently, since a node heartbeats
//!   before it accepts sessions and so should be in any view refreshed well
//!   after its records were written.
//!
//! A view older than the TTL (the store unreachable) disbelieves nobody: a
//! stale view must not declare the whole cluster dead.
//!
//! The view also says when a node's in-flight hops are lost for good: when
//! it dies or restarts, every message published to it that has no outcome
//! yet will never get one ([`Lost`]); the router answers them `offline`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::protocol::{NodeId, now_ms};

/// How long a dead node's heartbeat entry is kept, so that its records are
/// recognized as ghosts for that long without guessing.
pub const DEAD_ENTRY_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// One run of a node process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incarnation {
    pub node: NodeId,
    /// When the process started, ms since the Unix epoch (node's clock).
    pub started_ms: u64,
    pub nonce: u32,
}

impl Incarnation {
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            started_ms: now_ms(),
            nonce: uuid::Uuid::new_v4().as_u128() as u32,
        }
    }

    /// The heartbeat entry's name: `<node>|<started ms>|<nonce hex>`.
    pub fn member(&self) -> String {
        format!("{}|{}|{:08x}", self.node, self.started_ms, self.nonce)
    }

    pub fn parse(member: &str) -> Option<Self> {
        let mut parts = member.split('|');
        let node = NodeId::parse(parts.next()?).ok()?;
        let started_ms = parts.next()?.parse().ok()?;
        let nonce = u32::from_str_radix(parts.next()?, 16).ok()?;
        parts.next().is_none().then_some(Self {
            node,
            started_ms,
            nonce,
        })
    }
}

/// What one heartbeat returned from the presence store.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatReport {
    /// The store's clock when it took the heartbeat, ms since the epoch.
    pub server_now_ms: u64,
    /// Every heartbeat entry (member, expiry in the store's ms).
    pub members: Vec<(String, u64)>,
    /// This node's entry was not there before this heartbeat: the store
    /// lost its data (restart, flush, failover) or this is the first beat.
    pub own_was_missing: bool,
}

/// Whether to believe a record naming a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Belief {
    /// Believed; `epoch` counts the node's deaths and restarts seen here,
    /// so a hop can later be matched to the run it was sent to.
    Alive {
        epoch: u64,
    },
    Dead,
}

/// Hops published to `node` in an epoch below `before_epoch` will never
/// get an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub node: NodeId,
    pub before_epoch: u64,
    /// Set when this refresh saw the death or restart happen: the records
    /// the lost run left behind are to be swept.
    pub sweep: Option<Sweep>,
}

/// Ghost records to delete: those naming `Lost::node` written before
/// `ghosts_before` (ms), left by the run that started at `run_started_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    pub run_started_ms: u64,
    pub ghosts_before: u64,
}

#[derive(Debug, Clone)]
struct NodeState {
    started_ms: u64,
    nonce: u32,
    expires_ms: u64,
    epoch: u64,
}

struct View {
    server_now_ms: u64,
    refreshed_at: Instant,
    nodes: HashMap<NodeId, NodeState>,
}

impl View {
    /// The store's clock now, estimated from the last refresh.
    fn server_now(&self) -> u64 {
        self.server_now_ms + self.refreshed_at.elapsed().as_millis() as u64
    }
}

pub struct Liveness {
    me: Incarnation,
    ttl: Duration,
    view: RwLock<Option<View>>,
    /// Until then, nobody is declared dead for a missed heartbeat: set
    /// after this node itself lost the store for a while, when the others
    /// have not had their turn to heartbeat again yet.
    grace_until: RwLock<Option<Instant>>,
}

impl Liveness {
    pub fn new(me: Incarnation, ttl: Duration) -> Self {
        Self {
            me,
            ttl,
            view: RwLock::new(None),
            grace_until: RwLock::new(None),
        }
    }

    /// After an outage of the store: for one TTL, missed heartbeats do not
    /// count, so that nodes get their turn to beat again before anyone
    /// writes them off.
    pub fn grace(&self) {
        *self.grace_until.write().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + self.ttl);
    }

    fn in_grace(&self) -> bool {
        self.grace_until
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    pub fn me(&self) -> &Incarnation {
        &self.me
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Should a record naming `node`, written at `since`, be believed?
    pub fn judge(&self, node: &NodeId, since: u64) -> Belief {
        if *node == self.me.node {
            // Written by an earlier run of this node: a ghost.
            return if since < self.me.started_ms {
                Belief::Dead
            } else {
                Belief::Alive { epoch: 0 }
            };
        }
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        let Some(view) = view.as_ref() else {
            return Belief::Alive { epoch: 0 };
        };
        // A stale view (the store unreachable), or one taken right after an
        // outage, must not write the cluster off for missed heartbeats.
        let trusted = view.refreshed_at.elapsed() <= self.ttl && !self.in_grace();
        let ttl_ms = self.ttl.as_millis() as u64;
        match view.nodes.get(node) {
            // A ghost of an earlier run is a ghost whatever the view's age.
            Some(state) if since < state.started_ms => Belief::Dead,
            Some(state) if trusted && state.expires_ms < view.server_now() => Belief::Dead,
            Some(state) => Belief::Alive { epoch: state.epoch },
            None if trusted && since.saturating_add(2 * ttl_ms) < view.server_now_ms => {
                Belief::Dead
            }
            None => Belief::Alive { epoch: 0 },
        }
    }

    /// The current epoch of `node` (0 if unknown).
    pub fn epoch(&self, node: &NodeId) -> u64 {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        view.as_ref()
            .and_then(|v| v.nodes.get(node))
            .map_or(0, |s| s.epoch)
    }

    /// Takes in a heartbeat report; returns the nodes whose in-flight hops
    /// are lost: those that died, and those that restarted.
    pub fn refresh(&self, report: &HeartbeatReport) -> Vec<Lost> {
        // Newest incarnation per node, and its expiry.
        let mut newest: HashMap<NodeId, (Incarnation, u64)> = HashMap::new();
        for (member, expires_ms) in &report.members {
            let Some(inc) = Incarnation::parse(member) else {
                continue;
            };
            if inc.node == self.me.node {
                continue;
            }
            match newest.get(&inc.node) {
                Some((seen, _)) if seen.started_ms >= inc.started_ms => {}
                _ => {
                    newest.insert(inc.node.clone(), (inc, *expires_ms));
                }
            }
        }

        let grace = self.in_grace();
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        let old = view.take();
        let now = report.server_now_ms;
        let old_now = old.as_ref().map_or(0, |v| v.server_now_ms);
        let mut lost = Vec::new();
        let mut nodes = HashMap::with_capacity(newest.len());
        for (node, (inc, expires_ms)) in newest {
            let previous = old.as_ref().and_then(|v| v.nodes.get(&node));
            let alive = expires_ms >= now || grace;
            let mut epoch = previous.map_or(0, |p| p.epoch);
            let restarted =
                previous.is_some_and(|p| (p.started_ms, p.nonce) != (inc.started_ms, inc.nonce));
            let was_alive = previous.is_none_or(|p| p.expires_ms >= old_now);
            let died = !alive && was_alive;
            if restarted || died {
                epoch += 1;
            }
            if !alive {
                // Dead: nothing sent to it in any epoch will be answered.
                lost.push(Lost {
                    node: node.clone(),
                    before_epoch: u64::MAX,
                    sweep: died.then_some(Sweep {
                        run_started_ms: inc.started_ms,
                        ghosts_before: now,
                    }),
                });
            } else if let Some(previous) = previous.filter(|_| restarted) {
                lost.push(Lost {
                    node: node.clone(),
                    before_epoch: epoch,
                    sweep: Some(Sweep {
                        run_started_ms: previous.started_ms,
                        ghosts_before: inc.started_ms,
                    }),
                });
            }
            nodes.insert(
                node,
                NodeState {
                    started_ms: inc.started_ms,
                    nonce: inc.nonce,
                    expires_ms,
                    epoch,
                },
            );
        }
        // A node whose entry vanished (retention, or the store lost its
        // data) keeps no state; hops to it are covered by the hop timeout.
        *view = Some(View {
            server_now_ms: now,
            refreshed_at: Instant::now(),
            nodes,
        });
        lost
    }

    /// Nodes this view believes alive, for logs and tests.
    pub fn alive_nodes(&self) -> Vec<NodeId> {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        view.as_ref().map_or_else(Vec::new, |v| {
            let now = v.server_now();
            v.nodes
                .iter()
                .filter(|(_, s)| s.expires_ms >= now)
                .map(|(n, _)| n.clone())
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_millis(3000);

    fn node(id: &str) -> NodeId {
        NodeId::parse(id).unwrap()
    }

    fn inc(id: &str, started_ms: u64) -> Incarnation {
        Incarnation {
            node: node(id),
            started_ms,
            nonce: 7,
        }
    }

    fn report(now: u64, members: &[(&Incarnation, u64)]) -> HeartbeatReport {
        HeartbeatReport {
            server_now_ms: now,
            members: members.iter().map(|(i, e)| (i.member(), *e)).collect(),
            own_was_missing: false,
        }
    }

    #[test]
    fn members_round_trip() {
        let i = Incarnation::new(node("node-a"));
        assert_eq!(Incarnation::parse(&i.member()), Some(i));
        assert_eq!(Incarnation::parse("a|1"), None);
        assert_eq!(Incarnation::parse("a.b|1|0"), None);
        assert_eq!(Incarnation::parse("a|1|0|x"), None);
    }

    #[test]
    fn a_node_whose_heartbeat_expired_is_dead_and_its_hops_lost() {
        let live = Liveness::new(inc("me", 0), TTL);
        let b = inc("b", 1000);
        assert!(live.refresh(&report(10_000, &[(&b, 12_000)])).is_empty());
        assert_eq!(live.judge(&node("b"), 5000), Belief::Alive { epoch: 0 });

        let lost = live.refresh(&report(13_000, &[(&b, 12_000)]));
        assert_eq!(
            lost,
            vec![Lost {
                node: node("b"),
                before_epoch: u64::MAX,
                sweep: Some(Sweep {
                    run_started_ms: 1000,
                    ghosts_before: 13_000
                }),
            }]
        );
        assert_eq!(live.judge(&node("b"), 5000), Belief::Dead);
        // Still dead at the next refresh: in-flight hops are still lost, but
        // the sweep was asked for once.
        let again = live.refresh(&report(14_000, &[(&b, 12_000)]));
        assert_eq!(again[0].sweep, None);
    }

    #[test]
    fn a_restarted_node_disowns_records_of_its_previous_run() {
        let live = Liveness::new(inc("me", 0), TTL);
        live.refresh(&report(10_000, &[(&inc("b", 1000), 12_000)]));
        // b restarts at 11_000; both entries are in the store for a while.
        let lost = live.refresh(&report(
            11_500,
            &[(&inc("b", 1000), 12_000), (&inc("b", 11_000), 14_500)],
        ));
        assert_eq!(
            lost,
            vec![Lost {
                node: node("b"),
                before_epoch: 1,
                sweep: Some(Sweep {
                    run_started_ms: 1000,
                    ghosts_before: 11_000
                }),
            }]
        );
        assert_eq!(
            live.judge(&node("b"), 5000),
            Belief::Dead,
            "old run's record"
        );
        assert_eq!(live.judge(&node("b"), 11_200), Belief::Alive { epoch: 1 });
        assert_eq!(live.epoch(&node("b")), 1);
    }

    #[test]
    fn unknown_nodes_are_believed_only_for_recent_records() {
        let live = Liveness::new(inc("me", 0), TTL);
        live.refresh(&report(100_000, &[]));
        assert_eq!(live.judge(&node("new"), 99_000), Belief::Alive { epoch: 0 });
        assert_eq!(live.judge(&node("gone"), 50_000), Belief::Dead);
    }

    #[test]
    fn records_of_this_nodes_earlier_runs_are_ghosts() {
        let live = Liveness::new(inc("me", 5000), TTL);
        assert_eq!(live.judge(&node("me"), 4000), Belief::Dead);
        assert_eq!(live.judge(&node("me"), 6000), Belief::Alive { epoch: 0 });
    }

    #[test]
    fn after_an_outage_missed_heartbeats_do_not_count_for_a_while() {
        let live = Liveness::new(inc("me", 0), TTL);
        live.grace();
        let b = inc("b", 1000);
        assert!(live.refresh(&report(20_000, &[(&b, 12_000)])).is_empty());
        assert_eq!(live.judge(&node("b"), 5000), Belief::Alive { epoch: 0 });
        assert_eq!(
            live.judge(&node("b"), 500),
            Belief::Dead,
            "ghosts stay ghosts"
        );
    }

    #[test]
    fn without_a_view_everyone_is_believed() {
        let live = Liveness::new(inc("me", 0), TTL);
        assert_eq!(live.judge(&node("x"), 0), Belief::Alive { epoch: 0 });
    }
}
