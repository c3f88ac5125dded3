//! Who watches whom on this node, and what each watcher was last shown.
//!
//! Two maps, kept in step under one lock: by watched client (its watchers
//! here, keyed by session, and the state last read for it), and by
//! watching session (its handle and the clients it watches). A watch costs
//! a 32-byte entry in the first and a client id (an `Arc<str>`, 16 bytes)
//! in the second, with their tables' slack: about 80 bytes.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use smallvec::SmallVec;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use crate::hub::SessionHandle;
use crate::protocol::watch::{PresenceOut, Shown, encode_presence};
use crate::protocol::{ClientId, DeviceId, NodeId, now_ms};

/// Why a watcher may watch a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Authentication is off: anyone may watch anyone.
    Open,
    /// Its own devices.
    Own,
    /// A contact.
    Contact,
    /// A shared group.
    Group,
}

/// A watched client's state, as its watchers are shown it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub online: bool,
    /// Sorted, without repeats; empty when offline.
    pub devices: Vec<DeviceId>,
    /// The nodes its devices are on (so that a node's death is seen here).
    pub nodes: SmallVec<[NodeId; 2]>,
    pub last_seen: Option<u64>,
}

impl State {
    /// The `presence` frame showing it, stamped now.
    pub fn frame(&self, client: &ClientId) -> String {
        encode_presence(&PresenceOut {
            client_id: client,
            state: if self.online {
                Shown::Online
            } else {
                Shown::Offline
            },
            devices: &self.devices,
            last_seen: self.last_seen,
            ts: now_ms(),
        })
    }

    /// The frame of a watch that ended (revoked): offline, and nothing
    /// more revealed.
    pub fn ended(client: &ClientId) -> String {
        encode_presence(&PresenceOut {
            client_id: client,
            state: Shown::Offline,
            devices: &[],
            last_seen: None,
            ts: now_ms(),
        })
    }
}

/// One session's watch of one client, keyed by the session in
/// [`Watched::watchers`]: 16 bytes, so that a node can hold millions.
#[derive(Debug, Clone, Copy)]
pub struct Watcher {
    pub via: Via,
    /// A change waits for the coalescing window to end.
    pub pending: bool,
    /// When its last frame for this client went out, in ms since the
    /// registry's epoch (`None`: never).
    sent_ms: Option<NonZeroU64>,
}

impl Watcher {
    fn new(via: Via) -> Self {
        Self {
            via,
            pending: false,
            sent_ms: None,
        }
    }
}

/// A client watched here.
#[derive(Debug, Default)]
pub struct Watched {
    /// By watching session: a change's fan-out and its window's end find
    /// a watcher without a scan, however many there are.
    pub watchers: HashMap<Uuid, Watcher>,
    /// The state last read for it; `None` until the first read.
    pub shown: Option<State>,
}

/// A session here that watches.
pub struct Watching {
    pub handle: Arc<SessionHandle>,
    pub targets: Vec<ClientId>,
}

pub struct Registry {
    pub targets: HashMap<ClientId, Watched>,
    pub sessions: HashMap<Uuid, Watching>,
    /// What `Watcher` times count from.
    epoch: Instant,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            targets: HashMap::new(),
            sessions: HashMap::new(),
            epoch: Instant::now(),
        }
    }
}

impl Registry {
    /// Watches held here.
    pub fn len(&self) -> usize {
        self.sessions.values().map(|w| w.targets.len()).sum()
    }

    /// How many clients `session` watches.
    pub fn count(&self, session: Uuid) -> usize {
        self.sessions.get(&session).map_or(0, |w| w.targets.len())
    }

    pub fn watches(&self, session: Uuid, target: &ClientId) -> bool {
        self.targets
            .get(target)
            .is_some_and(|w| w.watchers.contains_key(&session))
    }

    /// When `watcher` last got a frame.
    pub fn sent_at(&self, watcher: &Watcher) -> Option<Instant> {
        watcher
            .sent_ms
            .map(|ms| self.epoch + std::time::Duration::from_millis(ms.get()))
    }

    /// Notes that `watcher` got a frame `at` (its window starts).
    pub fn mark_sent(epoch: Instant, watcher: &mut Watcher, at: Instant) {
        let ms = at.saturating_duration_since(epoch).as_millis() as u64;
        // 0 stands for "never": a frame in the epoch's first millisecond
        // counts as sent at 1.
        watcher.sent_ms = NonZeroU64::new(ms.max(1));
        watcher.pending = false;
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Adds the watch (or updates why it is allowed); answers whether the
    /// target was not watched here before.
    pub fn add(&mut self, handle: &Arc<SessionHandle>, target: &ClientId, via: Via) -> bool {
        let watching = self.sessions.entry(handle.id).or_insert_with(|| Watching {
            handle: handle.clone(),
            targets: Vec::new(),
        });
        let new_target = !self.targets.contains_key(target);
        let watched = self.targets.entry(target.clone()).or_default();
        match watched.watchers.get_mut(&handle.id) {
            Some(watcher) => watcher.via = via,
            None => {
                watched.watchers.insert(handle.id, Watcher::new(via));
                watching.targets.push(target.clone());
            }
        }
        new_target
    }

    /// Removes the watch; answers whether the target has no watcher here
    /// left (and was forgotten).
    pub fn remove(&mut self, session: Uuid, target: &ClientId) -> bool {
        if let Some(watching) = self.sessions.get_mut(&session) {
            watching.targets.retain(|t| t != target);
            if watching.targets.is_empty() {
                self.sessions.remove(&session);
            }
        }
        let Some(watched) = self.targets.get_mut(target) else {
            return false;
        };
        watched.watchers.remove(&session);
        if watched.watchers.is_empty() {
            self.targets.remove(target);
            return true;
        }
        false
    }

    /// Removes every watch of `session`; returns the targets with no
    /// watcher here left.
    pub fn remove_session(&mut self, session: Uuid) -> Vec<ClientId> {
        let Some(watching) = self.sessions.remove(&session) else {
            return Vec::new();
        };
        let mut forgotten = Vec::new();
        for target in watching.targets {
            if let Some(watched) = self.targets.get_mut(&target) {
                watched.watchers.remove(&session);
                if watched.watchers.is_empty() {
                    self.targets.remove(&target);
                    forgotten.push(target);
                }
            }
        }
        forgotten
    }

    /// Queues `frame` for `session` (its frame about `target`; a newer one
    /// replaces one still waiting). Answers whether the session took it.
    pub fn queue(&self, session: Uuid, target: &ClientId, frame: &Utf8Bytes) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|w| w.handle.outbox.put_presence(target, frame.clone()))
    }

    /// [`queue`](Self::queue), and marks the watch's window as started.
    pub fn push(
        &mut self,
        session: Uuid,
        target: &ClientId,
        frame: &Utf8Bytes,
        now: Instant,
    ) -> bool {
        let queued = self.queue(session, target, frame);
        let epoch = self.epoch;
        if let Some(watcher) = self
            .targets
            .get_mut(target)
            .and_then(|w| w.watchers.get_mut(&session))
        {
            Self::mark_sent(epoch, watcher, now);
        }
        queued
    }
}
