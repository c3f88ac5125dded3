//! Who watches whom on this node, and what each watcher was last shown.
//!
//! Two maps, kept in step under one lock: by watched client (its watchers
//! here and the state last read for it), and by watching session (its
//! handle and the clients it watches). A watch costs a `Watcher` in the
//! first and a client id (an `Arc<str>`) in the second: about 60 bytes.

use std::collections::HashMap;
use std::sync::Arc;

use smallvec::SmallVec;
use tokio::time::Instant;
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

/// One session watching one client.
#[derive(Debug)]
pub struct Watcher {
    pub session: Uuid,
    pub via: Via,
    /// When its last frame for this client went out.
    pub sent_at: Option<Instant>,
    /// A change waits for the coalescing window to end.
    pub pending: bool,
}

/// A client watched here.
#[derive(Debug, Default)]
pub struct Watched {
    pub watchers: Vec<Watcher>,
    /// The state last read for it; `None` until the first read.
    pub shown: Option<State>,
}

/// A session here that watches.
pub struct Watching {
    pub handle: Arc<SessionHandle>,
    pub targets: Vec<ClientId>,
}

#[derive(Default)]
pub struct Registry {
    pub targets: HashMap<ClientId, Watched>,
    pub sessions: HashMap<Uuid, Watching>,
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
        self.sessions
            .get(&session)
            .is_some_and(|w| w.targets.contains(target))
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
        match watched.watchers.iter_mut().find(|w| w.session == handle.id) {
            Some(watcher) => watcher.via = via,
            None => {
                watched.watchers.push(Watcher {
                    session: handle.id,
                    via,
                    sent_at: None,
                    pending: false,
                });
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
        watched.watchers.retain(|w| w.session != session);
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
                watched.watchers.retain(|w| w.session != session);
                if watched.watchers.is_empty() {
                    self.targets.remove(&target);
                    forgotten.push(target);
                }
            }
        }
        forgotten
    }

    /// Queues `frame` for `session`'s watch of `target`; marks it sent.
    pub fn push(&mut self, session: Uuid, target: &ClientId, frame: &str, now: Instant) -> bool {
        let Some(watching) = self.sessions.get(&session) else {
            return false;
        };
        let queued = watching.handle.outbox.put_presence(target, frame.into());
        if let Some(watcher) = self
            .targets
            .get_mut(target)
            .and_then(|w| w.watchers.iter_mut().find(|w| w.session == session))
        {
            watcher.sent_at = Some(now);
            watcher.pending = false;
        }
        queued
    }
}
