//! The three tasks that keep watchers right:
//!
//! - the **announcer** tells the nodes that watch a changed client (read
//!   from the store, many clients per round trip) one `watched` hop each;
//! - the **refresher** reads the current state of the clients marked dirty
//!   here (changed here, or named by a hop) and shows it to their watchers,
//!   within the coalescing window;
//! - the **timer** sends, when a window ends, the frame a watcher was kept
//!   waiting for, with the state of that moment.
//!
//! Each waits on a `Notify`, then yields once so that what is ready joins
//! the batch (as the courier does), and stops with the node.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Watches;
use super::registry::{Registry, State};
use crate::lock::Locked;
use crate::protocol::envelope::encode_hop;
use crate::protocol::{ClientId, Hop, NodeId, WatchedHop};
use crate::routing::courier::Parcel;

/// Clients one round trip reads at most.
pub(super) const BATCH: usize = 256;
/// How long a task waits before trying a store that failed again.
pub(super) const RETRY: Duration = Duration::from_millis(200);

/// What the tasks share with the service.
#[derive(Default)]
pub struct Feed {
    /// Changed here, to tell the nodes that watch them.
    announce: Mutex<HashSet<ClientId>>,
    announce_wake: Notify,
    /// Watched here, to read again (urgent: show at once, whatever the
    /// coalescing window).
    dirty: Mutex<(HashSet<ClientId>, HashSet<ClientId>)>,
    dirty_wake: Notify,
    /// Frames kept waiting for their window's end: (due, client, session).
    timers: Mutex<BinaryHeap<Reverse<(Instant, ClientId, Uuid)>>>,
    timer_wake: Notify,
    /// The bus connection generation last followed (from the start).
    generation: AtomicU64,
}

impl Feed {
    pub fn announce(&self, client: ClientId) {
        let first = {
            let mut announce = self.announce.locked();
            announce.insert(client) && announce.len() == 1
        };
        if first {
            self.announce_wake.notify_one();
        }
    }

    pub fn dirty(&self, clients: Vec<ClientId>, urgent: bool) {
        if clients.is_empty() {
            return;
        }
        {
            let mut dirty = self.dirty.locked();
            for client in clients {
                if urgent {
                    dirty.1.insert(client);
                } else {
                    dirty.0.insert(client);
                }
            }
        }
        self.dirty_wake.notify_one();
    }

    fn later(&self, due: Instant, client: ClientId, session: Uuid) {
        let mut timers = self.timers.locked();
        let earliest = timers.peek().is_none_or(|Reverse((d, _, _))| due < *d);
        timers.push(Reverse((due, client, session)));
        drop(timers);
        if earliest {
            self.timer_wake.notify_one();
        }
    }

    /// Whether `generation` is new (a reconnect since the last look).
    pub fn new_generation(&self, generation: u64) -> bool {
        self.generation.swap(generation, Ordering::Relaxed) != generation
    }
}

pub fn start(watches: &Arc<Watches>, stop: CancellationToken, bus_generation: u64) {
    // What the bus is at now is what the watches start from: a reconnect
    // before the first look is still a reconnect.
    watches
        .feed
        .generation
        .store(bus_generation, Ordering::Relaxed);
    let background = watches.router.background().clone();
    background.spawn(announcer(watches.clone(), stop.clone()));
    background.spawn(refresher(watches.clone(), stop.clone()));
    background.spawn(timer(watches.clone(), stop));
}

/// Waits for `wake` (or `stop`: `false`), then lets ready tasks add theirs.
async fn woken(wake: &Notify, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = wake.notified() => {}
        () = stop.cancelled() => return false,
    }
    tokio::task::yield_now().await;
    true
}

async fn announcer(watches: Arc<Watches>, stop: CancellationToken) {
    let feed = &watches.feed;
    while woken(&feed.announce_wake, &stop).await {
        let changed: Vec<ClientId> = feed.announce.locked().drain().collect();
        for chunk in changed.chunks(BATCH) {
            let nodes = match watches.ports.store.watchers(chunk).await {
                Ok(nodes) => nodes,
                Err(e) => {
                    tracing::debug!(error = %e, "watchers not read; trying again");
                    feed.announce.locked().extend(chunk.iter().cloned());
                    tokio::time::sleep(RETRY).await;
                    feed.announce_wake.notify_one();
                    break;
                }
            };
            let me = watches.me();
            // A node the liveness view holds dead hears nothing (its
            // entries are forgotten by whoever sweeps it).
            let liveness = watches.router.liveness();
            let alive = |n: &NodeId| *n != *me && liveness.is_alive(n);
            let mut by_node: HashMap<&NodeId, Vec<ClientId>> = HashMap::new();
            for (client, nodes) in chunk.iter().zip(&nodes) {
                for node in nodes.iter().filter(|n| alive(n)) {
                    by_node.entry(node).or_default().push(client.clone());
                }
            }
            let courier = watches.router.courier();
            for (node, clients) in by_node {
                let hop = encode_hop(&Hop::Watched(WatchedHop { clients }));
                // A courier that stopped (the node is going) takes no more.
                if courier.send(node.clone(), Parcel::Note(hop)).await.is_ok() {
                    watches.router.metrics().presence_hop();
                }
            }
        }
    }
}

async fn refresher(watches: Arc<Watches>, stop: CancellationToken) {
    let feed = &watches.feed;
    while woken(&feed.dirty_wake, &stop).await {
        let (plain, urgent) = std::mem::take(&mut *feed.dirty.locked());
        let urgent: Vec<ClientId> = urgent.into_iter().collect();
        let plain: Vec<ClientId> = plain.into_iter().filter(|c| !urgent.contains(c)).collect();
        for (clients, at_once) in [(urgent, true), (plain, false)] {
            for chunk in clients.chunks(BATCH) {
                match watches.read(chunk).await {
                    Ok(states) => {
                        for (client, state) in chunk.iter().zip(states) {
                            watches.show(client, state, at_once);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "watched clients not read; trying again");
                        feed.dirty(chunk.to_vec(), at_once);
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        }
    }
}

async fn timer(watches: Arc<Watches>, stop: CancellationToken) {
    let feed = &watches.feed;
    loop {
        let next = feed.timers.locked().peek().map(|Reverse((due, _, _))| *due);
        tokio::select! {
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            () = feed.timer_wake.notified() => continue,
            () = stop.cancelled() => return,
        }
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut timers = feed.timers.locked();
            while timers.peek().is_some_and(|Reverse((d, _, _))| *d <= now) {
                let Reverse((_, client, session)) = timers.pop().expect("just seen");
                due.push((client, session));
            }
        }
        watches.send_due(due, now);
    }
}

impl Watches {
    /// `client`'s state was read: its watchers here see it, at once or
    /// when their window ends.
    fn show(&self, client: &ClientId, state: State, urgent: bool) {
        let window = self.settings.coalesce;
        let metrics = self.router.metrics().clone();
        let now = Instant::now();
        let mut registry = self.registry.locked();
        let epoch = registry.epoch();
        let Some(watched) = registry.targets.get(client) else {
            return;
        };
        if watched.shown.as_ref() == Some(&state) {
            return;
        }
        // One frame, shared by every watcher's queue.
        let frame = Utf8Bytes::from(state.frame(client));
        let (mut at_once, mut later) = (Vec::new(), Vec::new());
        for (session, watcher) in &watched.watchers {
            let sent = registry.sent_at(watcher);
            let since = sent.map(|at| now.saturating_duration_since(at));
            if urgent || since.is_none_or(|s| s >= window) {
                at_once.push(*session);
            } else if !watcher.pending {
                later.push((*session, sent.expect("sent before") + window));
            }
        }
        let (sent, coalesced) = (at_once.len(), watched.watchers.len() - at_once.len());
        for session in &at_once {
            registry.queue(*session, client, &frame);
        }
        let watched = registry.targets.get_mut(client).expect("seen above");
        watched.shown = Some(state);
        for session in &at_once {
            if let Some(watcher) = watched.watchers.get_mut(session) {
                Registry::mark_sent(epoch, watcher, now);
            }
        }
        for (session, due) in later {
            if let Some(watcher) = watched.watchers.get_mut(&session) {
                watcher.pending = true;
            }
            self.feed.later(due, client.clone(), session);
        }
        drop(registry);
        metrics.presence_frames(true, sent as u64);
        metrics.presence_frames(false, coalesced as u64);
    }

    /// Windows that ended: each watcher kept waiting gets the state of now.
    fn send_due(&self, due: Vec<(ClientId, Uuid)>, now: Instant) {
        let mut registry = self.registry.locked();
        let mut sent = 0;
        // One frame per client, however many of its watchers' windows end.
        let mut frames: HashMap<ClientId, Utf8Bytes> = HashMap::new();
        for (client, session) in due {
            let Some(watched) = registry.targets.get(&client) else {
                continue;
            };
            if !watched.watchers.get(&session).is_some_and(|w| w.pending) {
                continue;
            }
            let frame = match frames.get(&client) {
                Some(frame) => frame.clone(),
                None => {
                    let Some(state) = &watched.shown else {
                        continue;
                    };
                    let frame = Utf8Bytes::from(state.frame(&client));
                    frames.insert(client.clone(), frame.clone());
                    frame
                }
            };
            registry.push(session, &client, &frame, now);
            sent += 1;
        }
        drop(registry);
        self.router.metrics().presence_frames(true, sent);
    }
}
