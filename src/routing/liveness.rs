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
//! Only the store's own word makes a node dead: its heartbeat expired by
//! the store's clock at this node's last heartbeat. A view that is older
//! than the TTL, or predates a heartbeat that failed, or was taken in the
//! grace period after an outage, disbelieves nobody: when this node could
//! not reach the store, neither perhaps could the others, and they need a
//! turn to beat again before a missed heartbeat means anything. (A record
//! deleted on a stale verdict would be a live session's.)
//!
//! The view also says when a node's in-flight hops are lost for good: when
//! it dies or restarts, every message published to it that has no outcome
//! yet will never get one ([`Lost`]); the router answers them `offline`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::lock::RwLocked;
use crate::presence::HeartbeatReport;
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

/// What the last heartbeat that reached the store showed.
struct View {
    /// The store's clock at that heartbeat.
    server_now_ms: u64,
    refreshed_at: Instant,
    nodes: HashMap<NodeId, NodeState>,
}

/// The view, and how far to trust it.
#[derive(Default)]
struct State {
    view: Option<View>,
    /// Set when a heartbeat failed, until the next one that reaches the
    /// store: meanwhile the view predates an outage the others went through
    /// too, and missed heartbeats prove nothing.
    unreachable: bool,
    /// Until then, nobody is declared dead for a missed heartbeat: set by
    /// the first heartbeat after this node lost the store, when the others
    /// have not had their turn to beat again yet.
    grace_until: Option<Instant>,
    /// This node's own heartbeat expiry at the last refresh, in the
    /// store's clock.
    own_expires_ms: Option<u64>,
    /// Heartbeats to go until this node writes its records back once more
    /// after its own heartbeat had lapsed (see [`Liveness::refresh`]).
    settle_in: u8,
}

/// After this node's heartbeat lapsed, the others may delete its records
/// until their views catch up with its return: a refresh, which takes up
/// to a period to start and another to finish. Its records are written
/// back once more after this many of its own heartbeats.
const SETTLE_BEATS: u8 = 2;

/// What one heartbeat told this node.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refresh {
    /// Nodes whose in-flight hops are lost: those that died, and those
    /// that restarted.
    pub lost: Vec<Lost>,
    /// This node's records may be missing from the store: it lost its
    /// data, or this node could not reach it, or this node's own heartbeat
    /// had expired (so others may have swept its records). Every live
    /// session's record is to be written back.
    pub restore: bool,
}

pub struct Liveness {
    me: Incarnation,
    ttl: Duration,
    state: RwLock<State>,
}

impl Liveness {
    pub fn new(me: Incarnation, ttl: Duration) -> Self {
        Self {
            me,
            ttl,
            state: RwLock::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read_locked()
    }

    pub fn me(&self) -> &Incarnation {
        &self.me
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A heartbeat did not reach the store. Until one does, the view is
    /// not trusted to declare anyone dead.
    pub fn unreachable(&self) {
        self.state.write_locked().unreachable = true;
    }

    /// Should a record naming `node`, written at `since`, be believed?
    ///
    /// `Dead` is only ever answered on the store's own word: the last
    /// heartbeat that reached it, recent and taken after any outage this
    /// node saw, found `node`'s heartbeat expired by the store's clock (or
    /// `node` restarted after `since`). A view that predates an outage, or
    /// is older than the TTL, or was taken during the grace after one,
    /// declares nobody dead for missed heartbeats: the others may simply
    /// not have had their turn to beat again, and a record deleted on such
    /// a verdict would be a live session's.
    pub fn judge(&self, node: &NodeId, since: u64) -> Belief {
        if *node == self.me.node {
            // Written by an earlier run of this node: a ghost.
            return if since < self.me.started_ms {
                Belief::Dead
            } else {
                Belief::Alive { epoch: 0 }
            };
        }
        let state = self.state();
        let Some(view) = state.view.as_ref() else {
            return Belief::Alive { epoch: 0 };
        };
        let now = Instant::now();
        let trusted = !state.unreachable
            && now.duration_since(view.refreshed_at) <= self.ttl
            && state.grace_until.is_none_or(|until| now >= until);
        let ttl_ms = self.ttl.as_millis() as u64;
        match view.nodes.get(node) {
            // A ghost of an earlier run is a ghost whatever the view's age.
            Some(state) if since < state.started_ms => Belief::Dead,
            Some(state) if trusted && state.expires_ms < view.server_now_ms => Belief::Dead,
            Some(state) => Belief::Alive { epoch: state.epoch },
            None if trusted && since.saturating_add(2 * ttl_ms) < view.server_now_ms => {
                Belief::Dead
            }
            None => Belief::Alive { epoch: 0 },
        }
    }

    /// The current epoch of `node` (0 if unknown).
    pub fn epoch(&self, node: &NodeId) -> u64 {
        self.state()
            .view
            .as_ref()
            .and_then(|v| v.nodes.get(node))
            .map_or(0, |s| s.epoch)
    }

    /// Takes in a heartbeat that reached the store.
    pub fn refresh(&self, report: &HeartbeatReport) -> Refresh {
        // Newest incarnation per node, and its expiry; this node's own.
        let mut newest: HashMap<NodeId, (Incarnation, u64)> = HashMap::new();
        let mut own_expires_ms = None;
        let me = self.me.member();
        for (member, expires_ms) in &report.members {
            if *member == me {
                own_expires_ms = Some(*expires_ms);
                continue;
            }
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

        let mut state = self.state.write_locked();
        let now = report.server_now_ms;
        // Had this node's own heartbeat expired before this one (a stall
        // longer than the TTL, say)? Then the others saw it dead, and may
        // have swept its records.
        let expired_meanwhile = state.own_expires_ms.is_some_and(|e| e < now);
        // The others saw it dead until their next heartbeat and may delete
        // records it writes back now; it writes them back again once their
        // views must have caught up.
        let settled = match state.settle_in {
            0 => false,
            n => {
                state.settle_in = n - 1;
                n == 1
            }
        };
        if expired_meanwhile {
            state.settle_in = SETTLE_BEATS;
        }
        let restore = report.own_was_missing || state.unreachable || expired_meanwhile || settled;
        if restore && state.view.is_some() {
            // The others need a turn to beat again before anyone is
            // written off for a missed heartbeat.
            state.grace_until = Some(Instant::now() + self.ttl);
        }
        state.unreachable = false;
        state.own_expires_ms = own_expires_ms;
        let grace = state
            .grace_until
            .is_some_and(|until| Instant::now() < until);

        let old = state.view.take();
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
        state.view = Some(View {
            server_now_ms: now,
            refreshed_at: Instant::now(),
            nodes,
        });
        Refresh { lost, restore }
    }

    /// Nodes this view believes alive, for logs and tests.
    /// Whether `node` is not known dead: its heartbeat is current, or the
    /// view cannot tell (no view yet, an unknown node). Only the store's
    /// word makes a node dead, as in [`judge`](Self::judge).
    pub fn is_alive(&self, node: &NodeId) -> bool {
        let state = self.state();
        let Some(view) = state.view.as_ref() else {
            return true;
        };
        view.nodes
            .get(node)
            .is_none_or(|s| s.expires_ms >= view.server_now_ms)
    }

    pub fn alive_nodes(&self) -> Vec<NodeId> {
        self.state().view.as_ref().map_or_else(Vec::new, |v| {
            v.nodes
                .iter()
                .filter(|(_, s)| s.expires_ms >= v.server_now_ms)
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
        assert!(
            live.refresh(&report(10_000, &[(&b, 12_000)]))
                .lost
                .is_empty()
        );
        assert_eq!(live.judge(&node("b"), 5000), Belief::Alive { epoch: 0 });

        let lost = live.refresh(&report(13_000, &[(&b, 12_000)])).lost;
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
        let again = live.refresh(&report(14_000, &[(&b, 12_000)])).lost;
        assert_eq!(again[0].sweep, None);
    }

    #[test]
    fn a_restarted_node_disowns_records_of_its_previous_run() {
        let live = Liveness::new(inc("me", 0), TTL);
        live.refresh(&report(10_000, &[(&inc("b", 1000), 12_000)]));
        // b restarts at 11_000; both entries are in the store for a while.
        let lost = live
            .refresh(&report(
                11_500,
                &[(&inc("b", 1000), 12_000), (&inc("b", 11_000), 14_500)],
            ))
            .lost;
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

    #[tokio::test(start_paused = true)]
    async fn after_an_outage_missed_heartbeats_do_not_count_for_a_while() {
        let live = Liveness::new(inc("me", 0), TTL);
        let b = inc("b", 1000);
        live.refresh(&report(10_000, &[(&b, 12_000)]));
        live.unreachable();
        let back = live.refresh(&report(20_000, &[(&b, 12_000)]));
        assert!(
            back.restore,
            "an outage means this node's records may be gone"
        );
        assert!(back.lost.is_empty(), "nobody is written off in the grace");
        assert_eq!(live.judge(&node("b"), 5000), Belief::Alive { epoch: 0 });
        assert_eq!(
            live.judge(&node("b"), 500),
            Belief::Dead,
            "ghosts stay ghosts"
        );
        // After a TTL of grace, the store's word counts again.
        tokio::time::advance(TTL).await;
        live.refresh(&report(23_000, &[(&b, 12_000)]));
        assert_eq!(live.judge(&node("b"), 5000), Belief::Dead);
    }

    /// Issue 11: a view taken before an outage must not write off a node
    /// whose heartbeat lapsed only because the store was away, even before
    /// this node's first heartbeat after it (with a TTL-old view, the
    /// estimate of the store's clock said "expired").
    #[tokio::test(start_paused = true)]
    async fn a_view_that_predates_an_outage_declares_nobody_dead() {
        let live = Liveness::new(inc("me", 0), TTL);
        let b = inc("b", 1000);
        live.refresh(&report(10_000, &[(&b, 12_100)]));
        // The store goes away; this node's heartbeats fail for 1.5 s.
        tokio::time::advance(Duration::from_millis(1000)).await;
        live.unreachable();
        tokio::time::advance(Duration::from_millis(1500)).await;
        // b's beat lapsed 2.1 s after the view, and the view is 2.5 s old
        // (under the TTL): b's freshly restored records must stand.
        assert_eq!(live.judge(&node("b"), 5000), Belief::Alive { epoch: 0 });
        assert_eq!(live.judge(&node("gone"), 1), Belief::Alive { epoch: 0 });
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_stores_clock_makes_a_node_dead() {
        let live = Liveness::new(inc("me", 0), TTL);
        let b = inc("b", 1000);
        live.refresh(&report(10_000, &[(&b, 10_500)]));
        // Half a second later b's beat has lapsed by any estimate of the
        // store's clock, but the store has not said so yet.
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(live.judge(&node("b"), 5000), Belief::Alive { epoch: 0 });
        live.refresh(&report(11_000, &[(&b, 10_500)]));
        assert_eq!(live.judge(&node("b"), 5000), Belief::Dead);
        // A view older than the TTL proves nothing any more.
        tokio::time::advance(TTL + Duration::from_millis(1)).await;
        assert_eq!(live.judge(&node("b"), 5000), Belief::Alive { epoch: 1 });
    }

    #[test]
    fn a_node_whose_own_heartbeat_lapsed_restores_its_records() {
        let me = inc("me", 0);
        let live = Liveness::new(me.clone(), TTL);
        assert!(!live.refresh(&report(10_000, &[(&me, 13_000)])).restore);
        assert!(!live.refresh(&report(12_000, &[(&me, 15_000)])).restore);
        // Stalled for longer than the TTL: the others saw this node dead.
        let late = live.refresh(&report(15_500, &[(&me, 18_500)]));
        assert!(late.restore);
        // Others may delete what it wrote back until their views catch up:
        // it writes its records back once more two heartbeats later.
        assert!(!live.refresh(&report(16_500, &[(&me, 19_500)])).restore);
        assert!(live.refresh(&report(17_500, &[(&me, 20_500)])).restore);
        assert!(!live.refresh(&report(18_500, &[(&me, 21_500)])).restore);
    }

    #[test]
    fn without_a_view_everyone_is_believed() {
        let live = Liveness::new(inc("me", 0), TTL);
        assert_eq!(live.judge(&node("x"), 0), Belief::Alive { epoch: 0 });
    }
}
