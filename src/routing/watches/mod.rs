//! Presence for clients (v3): the [`Watches`] service. A session watches
//! other clients (`watch`) and gets a `presence` frame whenever one's
//! state or device set changes; `visibility` makes a client look offline.
//!
//! **Who may watch whom** is the application's: a client may watch its
//! contacts ([`ContactStore`]), the members of the groups it is in, and
//! its own devices; with authentication off, anyone. A watch the
//! application later takes away (a contact or a membership removed) ends
//! within a second: the watcher gets one last `offline` frame for that
//! client, and no more ([`Watches::revalidate`]).
//!
//! **Propagation costs one bus message per interested node.** A node
//! records itself in the store as a watcher of every client its sessions
//! watch ([`WatchStore`]). The node that sees a client's presence change
//! (a session opened or ended there, a visibility change) reads which
//! nodes watch it and sends each of them one `watched` hop naming the
//! client ([`feed`]); a node with no watcher of it receives nothing. The
//! receiving node reads the client's current state once, whatever its
//! number of watchers, and hands each watcher a frame. Reading instead of
//! trusting what the hop says keeps every watcher right when changes race
//! on several nodes: the last frame is always the store's current state.
//!
//! **Coalescing**: at most one frame per `--presence-coalesce-ms` per
//! watching session and watched client. The first change goes at once;
//! later ones within the window wait for its end and go as one frame with
//! the state of that moment. A revoked watch's last frame, and a crashed
//! node's clients going offline, go at once.
//!
//! **No ghosts**: when the liveness view sees a node die, every client
//! watched here with a device on it is read again at once
//! ([`Watches::node_lost`]); the dead node's records are no longer
//! believed, so they turn `offline` within the liveness bound. A bus that
//! reconnected may have missed `watched` hops: every watched client is read
//! again, and every watch's permission checked again.

mod feed;
mod registry;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::feed::Feed;
use self::registry::{Registry, State, Via};
use super::Router;
use crate::hub::SessionHandle;
use crate::lock::Locked;
use crate::presence::{ContactStore, GroupStore, LastSeenStore, PresenceError, WatchStore};
use crate::protocol::{ClientId, NodeId, WatchedHop, now_ms};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// How many times a check of watches whose permission may have changed is
/// tried while the store does not answer (a few seconds in all).
const REVALIDATE_ATTEMPTS: usize = 25;

/// The ports watching reads and writes.
#[derive(Clone)]
pub struct WatchPorts {
    pub store: Arc<dyn WatchStore>,
    pub contacts: Arc<dyn ContactStore>,
    pub groups: Arc<dyn GroupStore>,
    pub last_seen: Arc<dyn LastSeenStore>,
}

/// How watching behaves: from the node's configuration.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// `--presence-coalesce-ms`.
    pub coalesce: Duration,
    /// `--max-watched` clients per session.
    pub max_watched: usize,
    /// Authentication is off: anyone may watch anyone.
    pub open: bool,
    /// How long an invisible flag is kept (the last-seen TTL).
    pub invisible_ttl: Duration,
}

/// Why a `watch` was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "a session watches at most {max} clients (--max-watched); this one would watch {would}"
    )]
    TooMany { max: usize, would: usize },
    #[error(transparent)]
    Store(#[from] PresenceError),
}

/// A watch held here: the watching session, the watched client, and why
/// it is allowed.
type Held = (uuid::Uuid, ClientId, Via);

/// Which watches to check again.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Those of these watching clients (their contacts changed).
    Watchers(&'a [ClientId]),
    /// Those allowed by a shared group (some group's members changed).
    Groups,
    /// Every one (the bus reconnected: changes may have been missed).
    All,
}

/// The answer to a `watch`: who is watched now, who is denied, and the
/// current state of each watched one (its `presence` frame), in order.
#[derive(Debug, Default)]
pub struct Watching {
    pub clients: Vec<ClientId>,
    pub denied: Vec<ClientId>,
    pub frames: Vec<String>,
}

pub struct Watches {
    router: Arc<Router>,
    ports: WatchPorts,
    settings: WatchSettings,
    registry: Mutex<Registry>,
    feed: Feed,
}

impl Watches {
    pub fn new(router: Arc<Router>, ports: WatchPorts, settings: WatchSettings) -> Arc<Self> {
        Arc::new(Self {
            router,
            ports,
            settings,
            registry: Mutex::default(),
            feed: Feed::default(),
        })
    }

    /// Forgets the watches this node's earlier run left in the store, before
    /// any session of this run watches: they would only cost hops.
    pub async fn forget_earlier_runs(&self) {
        if let Err(e) = self.ports.store.forget_watcher(self.me()).await {
            tracing::warn!(error = %crate::cause::chain(&e),
                "watches of this node's earlier run not forgotten; each costs a hop per change");
        }
    }

    /// Starts the tasks that tell other nodes of changes and show watchers
    /// theirs; they end with `stop`. `bus_generation` is the bus's
    /// connection generation now (see [`follow_bus`](Self::follow_bus)).
    pub fn start(self: &Arc<Self>, stop: CancellationToken, bus_generation: u64) {
        feed::start(self, stop, bus_generation);
    }

    fn me(&self) -> &NodeId {
        self.router.node()
    }

    /// Watches held here.
    pub fn len(&self) -> usize {
        self.registry.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The clients `session` watches (for a session handed to another
    /// node).
    pub fn watched_by(&self, session: uuid::Uuid) -> Vec<ClientId> {
        let registry = self.registry.locked();
        let watching = registry.sessions.get(&session);
        watching.map(|w| w.targets.clone()).unwrap_or_default()
    }

    /// `handle`'s session watches `clients`: refused as a whole beyond
    /// `--max-watched`; those it may not watch are denied (nothing is
    /// revealed about them); the others are watched, and their current
    /// state comes back as frames.
    pub async fn watch(
        self: &Arc<Self>,
        handle: &Arc<SessionHandle>,
        clients: Vec<ClientId>,
    ) -> Result<Watching, WatchError> {
        let already = {
            let registry = self.registry.locked();
            let new = clients
                .iter()
                .filter(|c| !registry.watches(handle.id, c))
                .count();
            registry.count(handle.id) + new
        };
        let max = self.settings.max_watched;
        if already > max {
            return Err(WatchError::TooMany {
                max,
                would: already,
            });
        }
        let vias = self.permit(&handle.client, &clients).await?;
        let mut answer = Watching::default();
        let mut allowed = Vec::new();
        for (client, via) in clients.into_iter().zip(vias) {
            match via {
                Some(via) => allowed.push((client, via)),
                None => answer.denied.push(client),
            }
        }
        let new_here: Vec<ClientId> = {
            let mut registry = self.registry.locked();
            let new = allowed
                .iter()
                .filter(|(client, via)| registry.add(handle, client, *via))
                .map(|(client, _)| client.clone())
                .collect();
            self.router.metrics().watches_changed(allowed.len() as i64);
            new
        };
        // This node is a watcher in the store before the states are read:
        // a change after the read is then told to this node.
        if let Err(e) = self.ports.store.add_watcher(self.me(), &new_here).await {
            self.unwatch(handle, allowed.iter().map(|(c, _)| c.clone()).collect());
            return Err(e.into());
        }
        answer.clients = allowed.into_iter().map(|(client, _)| client).collect();
        let states = match self.read(&answer.clients).await {
            Ok(states) => states,
            Err(e) => {
                self.unwatch(handle, answer.clients);
                return Err(e.into());
            }
        };
        let now = Instant::now();
        let mut registry = self.registry.locked();
        let epoch = registry.epoch();
        for (client, state) in answer.clients.iter().zip(states) {
            answer.frames.push(state.frame(client));
            if let Some(watched) = registry.targets.get_mut(client) {
                watched.shown = Some(state);
                if let Some(watcher) = watched.watchers.get_mut(&handle.id) {
                    Registry::mark_sent(epoch, watcher, now);
                }
            }
        }
        Ok(answer)
    }

    /// `handle`'s session stops watching `clients` (those it did not watch
    /// are ignored).
    pub fn unwatch(self: &Arc<Self>, handle: &SessionHandle, clients: Vec<ClientId>) {
        let forgotten: Vec<ClientId> = {
            let mut registry = self.registry.locked();
            let before = registry.count(handle.id);
            let forgotten = clients
                .into_iter()
                .filter(|c| registry.remove(handle.id, c))
                .collect();
            let removed = before - registry.count(handle.id);
            self.router.metrics().watches_changed(-(removed as i64));
            forgotten
        };
        self.forget(forgotten);
    }

    /// A session ended: its watches end with it.
    pub fn session_ended(self: &Arc<Self>, session: uuid::Uuid) {
        let forgotten = {
            let mut registry = self.registry.locked();
            let before = registry.count(session);
            let forgotten = registry.remove_session(session);
            self.router.metrics().watches_changed(-(before as i64));
            forgotten
        };
        self.forget(forgotten);
    }

    /// This node no longer watches `clients` (in the background: nothing
    /// waits for it, and a stale entry only costs a hop that finds no
    /// watcher).
    fn forget(self: &Arc<Self>, clients: Vec<ClientId>) {
        if clients.is_empty() {
            return;
        }
        let watches = self.clone();
        self.router.background().spawn(async move {
            let (store, me) = (&watches.ports.store, watches.me());
            if let Err(e) = store.remove_watcher(me, &clients).await {
                tracing::debug!(error = %e, "watches not removed from the store yet");
                return;
            }
            // A session here may have started watching one of them while
            // this removal was on its way, its own add written first and
            // now undone: those are added back, and read again (a change
            // told meanwhile did not come here).
            let again: Vec<ClientId> = {
                let registry = watches.registry.locked();
                clients
                    .into_iter()
                    .filter(|c| registry.targets.contains_key(c))
                    .collect()
            };
            if again.is_empty() {
                return;
            }
            if let Err(e) = store.add_watcher(me, &again).await {
                tracing::warn!(error = %e, "watches not written back; changes of those clients may not reach this node until the bus reconnects");
            }
            watches.feed.dirty(again, false);
        });
    }

    /// Writes this node's watcher entries back into the store: routinely
    /// (with the session records, so that entries the store lost come
    /// back within a refresh), and after the store lost data or could not
    /// be reached (`reread`: every watched client is then read again,
    /// since changes told meanwhile did not come here). Answers how many
    /// watched clients were written.
    pub async fn restore(&self, reread: bool) -> Result<usize, PresenceError> {
        let all: Vec<ClientId> = self.registry.locked().targets.keys().cloned().collect();
        for chunk in all.chunks(feed::BATCH) {
            self.ports.store.add_watcher(self.me(), chunk).await?;
        }
        if reread {
            self.feed.dirty(all.clone(), false);
        }
        Ok(all.len())
    }

    /// After this node wrote its session records back into a store that
    /// lost them (or missed changes while away): every client with a
    /// session here is told to the nodes that watch it, which read it
    /// again. With [`restore`](Self::restore) on every node this leaves no
    /// watcher behind, in whichever order the nodes restore: a node that
    /// wrote its entries back after this announcement rereads what it
    /// watches itself.
    pub fn announce_local(&self) {
        let mut clients: Vec<ClientId> = self
            .router
            .hub()
            .all()
            .into_iter()
            .map(|s| s.client.clone())
            .collect();
        clients.sort_unstable();
        clients.dedup();
        for client in clients {
            self.feed.announce(client);
        }
    }

    /// A session taken back after a resume: it gets the current state of
    /// every client it watches (presence frames are not kept while
    /// detached).
    pub async fn resend(&self, handle: &Arc<SessionHandle>) {
        let targets = self.watched_by(handle.id);
        if targets.is_empty() {
            return;
        }
        match self.read(&targets).await {
            Ok(states) => {
                let now = Instant::now();
                let mut registry = self.registry.locked();
                for (client, state) in targets.iter().zip(states) {
                    let frame = Utf8Bytes::from(state.frame(client));
                    registry.push(handle.id, client, &frame, now);
                    if let Some(watched) = registry.targets.get_mut(client) {
                        watched.shown = Some(state);
                    }
                }
            }
            // The feed shows them as soon as the store answers again.
            Err(_) => self.feed.dirty(targets, true),
        }
    }

    /// `client` (of a session here) goes invisible or visible again.
    pub async fn visibility(&self, client: &ClientId, visible: bool) -> Result<(), PresenceError> {
        let since = (!visible).then(now_ms);
        let ttl = self.settings.invisible_ttl;
        self.ports.store.set_invisible(client, since, ttl).await?;
        self.changed(client.clone());
        Ok(())
    }

    /// `client`'s presence changed here (a session of it opened or ended,
    /// or its visibility changed): its watchers, here and on other nodes,
    /// are shown its new state.
    pub fn changed(&self, client: ClientId) {
        if self.registry.locked().targets.contains_key(&client) {
            self.feed.dirty(vec![client.clone()], false);
        }
        self.feed.announce(client);
    }

    /// Another node saw these clients' presence change.
    pub fn accept_watched(&self, hop: WatchedHop) {
        let registry = self.registry.locked();
        let here: Vec<ClientId> = hop
            .clients
            .into_iter()
            .filter(|c| registry.targets.contains_key(c))
            .collect();
        drop(registry);
        self.feed.dirty(here, false);
    }

    /// The liveness view saw `node` die or restart: every client watched
    /// here with a device on it is read again at once (its records there
    /// are no longer believed).
    pub fn node_lost(&self, node: &NodeId) {
        let registry = self.registry.locked();
        let affected: Vec<ClientId> = registry
            .targets
            .iter()
            .filter(|(_, w)| w.shown.as_ref().is_some_and(|s| s.nodes.contains(node)))
            .map(|(client, _)| client.clone())
            .collect();
        drop(registry);
        self.feed.dirty(affected, true);
    }

    /// Follows the bus connection: after a reconnect, `watched` hops may
    /// have been missed, and changes of contacts and groups too; every
    /// watched client is read again and every watch checked again.
    pub async fn follow_bus(self: &Arc<Self>, generation: u64) {
        if !self.feed.new_generation(generation) {
            return;
        }
        let all: Vec<ClientId> = self.registry.locked().targets.keys().cloned().collect();
        self.feed.dirty(all, false);
        self.revalidate(Scope::All).await;
    }

    /// Contacts of `contacts` changed, and (`groups`) members of some
    /// group, on another node: the watches they may have ended are
    /// checked, in the background (within the second the protocol allows).
    pub fn membership_changed(self: &Arc<Self>, contacts: Vec<ClientId>, groups: bool) {
        if contacts.is_empty() && !groups {
            return;
        }
        let watches = self.clone();
        self.router.background().spawn(async move {
            if !contacts.is_empty() {
                watches.revalidate(Scope::Watchers(&contacts)).await;
            }
            if groups {
                watches.revalidate(Scope::Groups).await;
            }
        });
    }

    /// Checks again the watches in `scope`: a watch no longer allowed ends,
    /// its last frame `offline`. Called when contacts or group members
    /// changed. A watch is never ended on a guess: while the store cannot
    /// answer, the check is tried again for a while.
    pub async fn revalidate(self: &Arc<Self>, scope: Scope<'_>) {
        let mut checks = self.checks(scope);
        for _ in 0..REVALIDATE_ATTEMPTS {
            let mut failed = Vec::new();
            for (client, watches) in checks {
                let targets: Vec<ClientId> = watches.iter().map(|(_, t, _)| t.clone()).collect();
                match self.permit(&client, &targets).await {
                    Ok(vias) => self.apply(watches, vias),
                    Err(_) => failed.push((client, watches)),
                }
            }
            if failed.is_empty() {
                return;
            }
            checks = failed;
            tokio::time::sleep(feed::RETRY).await;
        }
        tracing::warn!(
            watchers = checks.len(),
            "watches not checked again: the store did not answer; they are checked when the bus reconnects"
        );
    }

    /// The watches in `scope`, by watching client: each with its session
    /// and why it is allowed now.
    fn checks(&self, scope: Scope<'_>) -> Vec<(ClientId, Vec<Held>)> {
        let mut checks: HashMap<ClientId, Vec<Held>> = HashMap::new();
        let registry = self.registry.locked();
        for (session, watching) in &registry.sessions {
            let client = &watching.handle.client;
            if let Scope::Watchers(watchers) = scope
                && !watchers.contains(client)
            {
                continue;
            }
            for target in &watching.targets {
                let via = registry
                    .targets
                    .get(target)
                    .and_then(|w| w.watchers.get(session))
                    .map(|w| w.via);
                let checked = match scope {
                    Scope::Groups => matches!(via, Some(Via::Group)),
                    _ => matches!(via, Some(Via::Contact | Via::Group)),
                };
                if let (true, Some(via)) = (checked, via) {
                    let entry = checks.entry(client.clone()).or_default();
                    entry.push((*session, target.clone(), via));
                }
            }
        }
        checks.into_iter().collect()
    }

    /// Ends the watches that are no longer allowed, and notes why the
    /// others still are.
    fn apply(self: &Arc<Self>, watches: Vec<Held>, vias: Vec<Option<Via>>) {
        let mut forgotten = Vec::new();
        let mut registry = self.registry.locked();
        for ((session, target, _), via) in watches.into_iter().zip(vias) {
            match via {
                Some(via) => {
                    let watched = registry.targets.get_mut(&target);
                    if let Some(watcher) = watched.and_then(|w| w.watchers.get_mut(&session)) {
                        watcher.via = via;
                    }
                }
                None => {
                    let frame = Utf8Bytes::from(State::ended(&target));
                    registry.push(session, &target, &frame, Instant::now());
                    let before = registry.count(session);
                    if registry.remove(session, &target) {
                        forgotten.push(target);
                    }
                    let removed = before - registry.count(session);
                    self.router.metrics().watches_changed(-(removed as i64));
                }
            }
        }
        drop(registry);
        self.forget(forgotten);
    }

    /// Why `watcher` may watch each of `targets` (`None`: it may not).
    async fn permit(
        &self,
        watcher: &ClientId,
        targets: &[ClientId],
    ) -> Result<Vec<Option<Via>>, PresenceError> {
        if self.settings.open {
            return Ok(targets.iter().map(|_| Some(Via::Open)).collect());
        }
        let contacts: HashSet<ClientId> = self
            .ports
            .contacts
            .contacts(watcher)
            .await?
            .into_iter()
            .collect();
        // The index of the watcher's groups may lag: each is checked in the
        // group's members before it counts.
        let mut shared = Vec::new();
        for group in self.ports.groups.groups_of(watcher).await? {
            let members = self.router.groups().members(&group).await?;
            if members.binary_search(watcher).is_ok() {
                shared.push(members);
            }
        }
        Ok(targets
            .iter()
            .map(|target| {
                if target == watcher {
                    Some(Via::Own)
                } else if contacts.contains(target) {
                    Some(Via::Contact)
                } else if shared.iter().any(|m| m.binary_search(target).is_ok()) {
                    Some(Via::Group)
                } else {
                    None
                }
            })
            .collect())
    }

    /// The current state of each of `clients`, read in a few round trips:
    /// their records (only believed devices), who is invisible, and the
    /// last-seen of those offline.
    async fn read(&self, clients: &[ClientId]) -> Result<Vec<State>, PresenceError> {
        if clients.is_empty() {
            return Ok(Vec::new());
        }
        let records = self.router.locator().lookup_many(clients).await?;
        let invisible = self.ports.store.invisible(clients).await?;
        let offline: Vec<ClientId> = clients
            .iter()
            .zip(records.iter().zip(&invisible))
            .filter(|(_, (records, invisible))| records.is_empty() && invisible.is_none())
            .map(|(client, _)| client.clone())
            .collect();
        let mut seen = if offline.is_empty() {
            Vec::new()
        } else {
            self.ports.last_seen.last_seen_many(&offline).await?
        }
        .into_iter();
        Ok(records
            .iter()
            .zip(invisible)
            .map(|(records, invisible)| match invisible {
                Some(since) => State {
                    online: false,
                    devices: Vec::new(),
                    nodes: Default::default(),
                    last_seen: Some(since),
                },
                None if records.is_empty() => State {
                    online: false,
                    devices: Vec::new(),
                    nodes: Default::default(),
                    last_seen: seen.next().flatten().map(|s| s.at),
                },
                None => {
                    let mut devices: Vec<_> =
                        records.iter().map(|d| d.record.device.clone()).collect();
                    devices.sort_unstable();
                    devices.dedup();
                    let mut nodes: smallvec::SmallVec<[NodeId; 2]> =
                        records.iter().map(|d| d.record.node.clone()).collect();
                    nodes.sort_unstable();
                    nodes.dedup();
                    State {
                        online: true,
                        devices,
                        nodes,
                        last_seen: None,
                    }
                }
            })
            .collect())
    }
}
