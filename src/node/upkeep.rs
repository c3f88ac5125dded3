//! The node's upkeep loop, once every third of the node TTL:
//!
//! 1. heartbeat into the presence store and refresh the liveness view;
//!    in-flight messages to nodes that died or restarted are answered
//!    `offline` ([`Outcomes::node_lost`](crate::routing::Outcomes::node_lost));
//! 2. answer `offline` for in-flight messages whose outcome is overdue;
//! 3. after the store was unreachable, came back without this node's
//!    heartbeat (it restarted empty, or failed over), or had seen this
//!    node's heartbeat lapse (a stall longer than the TTL, during which
//!    others may have swept its records): delete the records of
//!    sessions that closed meanwhile, and write every live session's record
//!    back without overwriting a newer session's (in a task beside the
//!    loop, so that heartbeats go on meanwhile; retried until one succeeds
//!    that started after the last sign of loss);
//! 4. sweep the ghost records a dead or restarted node left behind (and,
//!    once at startup, those of this node's own previous run), so that the
//!    store ends up holding one record per live session.
//!
//! The same heartbeat tells whether presence can be written at all; while
//! it cannot, the node refuses new sessions (see [`Health`](crate::health::Health)).
//!
//! Shared stores also get every live session's record written back every
//! `--presence-refresh-ms` (sooner for memcached, whose records expire), in
//! a task of its own so that a long refresh never delays a heartbeat: a
//! record that vanished while its session lives (evicted, lost in a
//! failover, deleted by mistake) is back within that time.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::cause::chain;
use crate::node::Node;
use crate::presence::PresenceError;
use crate::protocol::NodeId;
use crate::routing::liveness::DEAD_ENTRY_RETENTION;

pub async fn run(node: Arc<Node>) {
    let liveness = node.router().liveness().clone();
    let period = liveness.ttl() / 3;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; startup just beat
    // Ghosts of this node's earlier runs, whichever they were.
    let me = liveness.me().clone();
    sweep(&node, me.node, None, me.started_ms, false);
    if let Some(every) = node
        .presence()
        .refresh_interval(node.config.presence_refresh)
    {
        node.tasks.spawn(refresh(node.clone(), every));
    }
    // Set while this node's records may be missing from the store, until a
    // restore started after the last sign of loss has finished.
    let mut lost_presence = false;
    // Signs of loss so far (a failed beat, a beat that found the store
    // without this node); a restore only clears what it started after.
    let mut losses: u64 = 0;
    // A restore runs beside the loop: re-registering a large node can take
    // longer than the node TTL, and a heartbeat delayed that long would
    // make every other node think this one dead.
    let mut restoring: Option<(u64, JoinHandle<bool>)> = None;
    // A draining node beats on while it keeps detached sessions: their
    // clients may come back a while after the 1001 (--drain-spread-ms),
    // and a node that stopped beating would be written off, and its
    // sessions' fields swept, before they do.
    let kept_until = node.resumption().drain_over().clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = kept_until.cancelled() => return,
        }
        // For the metrics: what detached sessions keep, as of this tick.
        node.metrics
            .set_messages_kept(node.resumption().kept_messages());
        if let Some((started_at, task)) = restoring.take_if(|(_, task)| task.is_finished()) {
            let restored = task.await.unwrap_or(false);
            if restored && started_at == losses {
                lost_presence = false;
            }
        }
        match beat(&node).await {
            Ok((must_restore, report)) => {
                if must_restore {
                    losses += 1;
                    lost_presence = true;
                }
                if lost_presence && restoring.is_none() {
                    tracing::info!(
                        store_lost_data = report.own_was_missing,
                        "presence store is back; restoring this node's records"
                    );
                    let node = node.clone();
                    let task = node
                        .tasks
                        .clone()
                        .spawn(async move { restore(&node, false).await });
                    restoring = Some((losses, task));
                }
            }
            Err(e) => {
                if !lost_presence {
                    tracing::warn!(error = %chain(&e), "presence store unreachable; refusing new sessions");
                }
                // Until a heartbeat reaches the store again, nobody is
                // written off on the strength of the view from before.
                liveness.unreachable();
                losses += 1;
                lost_presence = true;
                node.health.presence_failed();
            }
        }
        node.router().outcomes().expire();
        // After a bus reconnect, presence changes may have been missed.
        let (watches, generation) = (node.watches().clone(), node.bus().generation());
        node.tasks()
            .spawn(async move { watches.follow_bus(generation).await });
    }
}

/// One heartbeat into the presence store, and what it tells: the liveness
/// view is refreshed; in-flight messages to nodes that died or restarted
/// are answered, their watches forgotten, their ghost records swept.
/// Whether this node's records need restoring, with the report. Also run
/// by a drain before it passes sessions on, so that it picks among the
/// nodes alive now (upkeep has stopped by then).
pub(super) async fn beat(
    node: &Arc<Node>,
) -> Result<(bool, crate::presence::HeartbeatReport), PresenceError> {
    let liveness = node.router().liveness();
    let ttl = liveness.ttl();
    let member = liveness.me().member();
    // Never longer than a period: a hung store must not stall the loop
    // that notices it.
    let report = tokio::time::timeout(
        ttl / 3,
        node.presence()
            .heartbeat(&member, ttl, DEAD_ENTRY_RETENTION),
    )
    .await
    .unwrap_or_else(|_| Err(PresenceError::unavailable("heartbeat timed out")))?;
    node.health.presence_answered();
    let refresh = liveness.refresh(&report);
    for lost in refresh.lost {
        node.router().outcomes().node_lost(&lost);
        node.watches().node_lost(&lost.node);
        if let Some(ghosts) = &lost.sweep {
            let run = Some(ghosts.run_started_ms);
            let died = lost.before_epoch == u64::MAX;
            sweep(node, lost.node, run, ghosts.ghosts_before, died);
        }
    }
    Ok((refresh.restore, report))
}

/// How long one sweep may take before it is abandoned (the next death or
/// restart of that node, or lazy deletes, pick up what is left).
const SWEEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Deletes, in the background, the records `dead` wrote before
/// `before_since` (see [`Heartbeats::sweep`](crate::presence::Heartbeats::sweep)).
fn sweep(node: &Node, dead: NodeId, lost_run: Option<u64>, before_since: u64, died: bool) {
    let presence = node.presence().clone();
    let offline = node.router().offline().clone();
    node.tasks.spawn(async move {
        let swept =
            tokio::time::timeout(SWEEP_TIMEOUT, presence.sweep(&dead, lost_run, before_since))
                .await;
        match swept {
            Ok(Ok(swept)) => {
                if !swept.is_empty() {
                    tracing::info!(node = %dead, records = swept.len(), "swept ghost presence records");
                    // Their sessions ended with their node: announced, and
                    // written as their clients' last-seen.
                    offline.ended_with_their_node(swept).await;
                }
                // A dead node's watches went with it; a restarted one's
                // new run holds its own (it forgot its earlier run's when it
                // started).
                if died
                    && let Err(e) = presence.forget_watcher(&dead).await
                {
                    tracing::debug!(node = %dead, error = %e, "a dead node's watches not forgotten");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(node = %dead, error = %chain(&e), "sweep of ghost records failed")
            }
            Err(_) => tracing::warn!(node = %dead, "sweep of ghost records timed out"),
        }
    });
}

/// Writes every live session's record back every `every`, while the store
/// is reachable (the heartbeat restores everything when it comes back).
async fn refresh(node: Arc<Node>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = node.shutdown.cancelled() => return,
        }
        if node.health.presence_reachable() && !restore(&node, true).await {
            tracing::warn!("refreshing presence records failed; retrying next round");
        }
    }
}

/// Writes every live session's record back (see
/// [`Registrar::restore`](crate::routing::Registrar::restore)), and this
/// node's watcher entries ([`Watches::restore`](crate::routing::Watches::restore)).
/// A routine refresh logs only what it changed. Whether it succeeded.
async fn restore(node: &Node, routine: bool) -> bool {
    let watches = match node.watches().restore(!routine).await {
        Ok(watched) => {
            tracing::debug!(watched, "watcher entries written back");
            true
        }
        Err(e) => {
            tracing::debug!(error = %chain(&e), "writing watcher entries back failed");
            false
        }
    };
    let records = match node.registrar().restore().await {
        Ok(done) if routine && done.replaced == 0 => {
            tracing::debug!(sessions = done.sessions, took = ?done.took, "refreshed presence records");
            true
        }
        Ok(done) => {
            tracing::info!(
                sessions = done.sessions,
                replaced = done.replaced,
                took = ?done.took,
                "re-registered live sessions"
            );
            true
        }
        Err(e) => {
            tracing::debug!(error = %chain(&e), "re-registering live sessions failed");
            false
        }
    };
    if records && !routine {
        node.watches().announce_local();
    }
    records && watches
}
