//! The node's upkeep loop, once every third of the node TTL:
//!
//! 1. heartbeat into the presence store and refresh the liveness view;
//!    in-flight messages to nodes that died or restarted are answered
//!    `offline` ([`Router::lost`](crate::router::Router::lost));
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
//! it cannot, the node refuses new sessions (see `presence_ok`).
//!
//! Shared stores also get every live session's record written back every
//! `--presence-refresh-ms` (sooner for memcached, whose records expire), in
//! a task of its own so that a long refresh never delays a heartbeat: a
//! record that vanished while its session lives (evicted, lost in a
//! failover, deleted by mistake) is back within that time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::liveness::DEAD_ENTRY_RETENTION;
use crate::node::Node;
use crate::presence::{PresenceError, PresenceRecord};
use crate::protocol::close;

pub async fn run(node: Arc<Node>) {
    let ttl = node.liveness.ttl();
    let period = ttl / 3;
    let member = node.liveness.me().member();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; startup just beat
    // Ghosts of this node's earlier runs, whichever they were.
    let me = node.liveness.me().clone();
    sweep(&node, me.node, None, me.started_ms);
    if let Some(every) = node.presence.refresh_interval(node.config.presence_refresh) {
        tokio::spawn(refresh(node.clone(), every));
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
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = node.shutdown.cancelled() => return,
        }
        if let Some((started_at, task)) = restoring.take_if(|(_, task)| task.is_finished()) {
            let restored = task.await.unwrap_or(false);
            if restored && started_at == losses {
                lost_presence = false;
            }
        }
        // Never longer than a period: a hung store must not stall the loop
        // that notices it.
        let beat = tokio::time::timeout(
            period,
            node.presence.heartbeat(&member, ttl, DEAD_ENTRY_RETENTION),
        )
        .await
        .unwrap_or_else(|_| Err(PresenceError::Unavailable("heartbeat timed out".into())));
        match beat {
            Ok(report) => {
                node.presence_ok.store(true, Ordering::Relaxed);
                let refresh = node.liveness.refresh(&report);
                if refresh.restore {
                    losses += 1;
                    lost_presence = true;
                }
                if lost_presence && restoring.is_none() {
                    tracing::info!(
                        store_lost_data = report.own_was_missing,
                        "presence store is back; restoring this node's records"
                    );
                    let node = node.clone();
                    let task = tokio::spawn(async move { restore(&node, false).await.is_ok() });
                    restoring = Some((losses, task));
                }
                for lost in refresh.lost {
                    node.router.lost(&lost);
                    if let Some(ghosts) = &lost.sweep {
                        let run = Some(ghosts.run_started_ms);
                        sweep(&node, lost.node, run, ghosts.ghosts_before);
                    }
                }
            }
            Err(e) => {
                if !lost_presence {
                    tracing::warn!(error = %e, "presence store unreachable; refusing new sessions");
                }
                // Until a heartbeat reaches the store again, nobody is
                // written off on the strength of the view from before.
                node.liveness.unreachable();
                losses += 1;
                lost_presence = true;
                node.presence_ok.store(false, Ordering::Relaxed);
            }
        }
        node.router.expire_in_flight();
    }
}

/// How long one sweep may take before it is abandoned (the next death or
/// restart of that node, or lazy deletes, pick up what is left).
const SWEEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Deletes, in the background, the records `dead` wrote before
/// `before_since` (see [`PresenceStore::sweep`](crate::presence::PresenceStore::sweep)).
fn sweep(
    node: &Arc<Node>,
    dead: crate::protocol::NodeId,
    lost_run: Option<u64>,
    before_since: u64,
) {
    let presence = node.presence.clone();
    tokio::spawn(async move {
        let swept =
            tokio::time::timeout(SWEEP_TIMEOUT, presence.sweep(&dead, lost_run, before_since))
                .await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(node = %dead, records = n, "swept ghost presence records"),
            Ok(Err(e)) => tracing::warn!(node = %dead, error = %e, "sweep of ghost records failed"),
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
        if node.presence_ok.load(Ordering::Relaxed)
            && let Err(e) = restore(&node, true).await
        {
            tracing::warn!(error = %e, "refreshing presence records failed; retrying next round");
        }
    }
}

/// Brings the store back in line with this node: deferred deletes first,
/// then every live session's record. A routine refresh logs only what it
/// changed.
async fn restore(node: &Node, routine: bool) -> Result<(), PresenceError> {
    let started = Instant::now();
    loop {
        let next = node
            .deferred_removals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some((client, session)) = next else { break };
        if let Err(e) = node.presence.remove(&client, &node.id, session).await {
            node.defer_removal(client, session);
            return Err(e);
        }
    }

    let sessions = node.sessions.all();
    let entries: Vec<_> = sessions
        .iter()
        .map(|s| {
            let record = PresenceRecord {
                node: node.id.clone(),
                session: s.id,
                since: s.since,
            };
            (s.client.clone(), record)
        })
        .collect();
    let others = tokio::time::timeout(Duration::from_secs(30), node.presence.reregister(&entries))
        .await
        .unwrap_or_else(|_| {
            Err(PresenceError::Unavailable(
                "re-registration timed out".into(),
            ))
        })?;
    let mut replaced = 0;
    for (session, other) in sessions.iter().zip(others) {
        // A newer session of the client registered elsewhere meanwhile.
        if other.is_some() {
            session.outbox.close(close::REPLACED);
            replaced += 1;
        }
    }
    let took_ms = started.elapsed().as_millis() as u64;
    if routine && replaced == 0 {
        tracing::debug!(
            sessions = entries.len(),
            took_ms,
            "refreshed presence records"
        );
    } else {
        tracing::info!(
            sessions = entries.len(),
            replaced,
            took_ms,
            "re-registered live sessions"
        );
    }
    Ok(())
}
