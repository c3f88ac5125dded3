//! What `/readyz` reports: whether this node can do its job. One owner of
//! the flags, each set by the part of the node that finds out, read by the
//! HTTP layer.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

#[derive(Debug)]
pub struct Health {
    /// Whether the presence store answered the last heartbeat or
    /// registration. While it does not, new sessions are refused (503): a
    /// session that cannot be registered would be unreachable.
    presence_reachable: AtomicBool,
    /// Set if the bus ever stops delivering this node's inbox: the node
    /// can no longer receive hops, so it must not report itself ready.
    inbox_closed: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            presence_reachable: AtomicBool::new(true),
            inbox_closed: AtomicBool::new(false),
        }
    }
}

impl Health {
    /// The presence store answered (a heartbeat went through).
    pub fn presence_answered(&self) {
        self.presence_reachable.store(true, Relaxed);
    }

    /// The presence store did not answer a heartbeat or a registration.
    pub fn presence_failed(&self) {
        self.presence_reachable.store(false, Relaxed);
    }

    pub fn presence_reachable(&self) -> bool {
        self.presence_reachable.load(Relaxed)
    }

    /// The bus closed this node's inbox for good.
    pub fn inbox_closed(&self) {
        self.inbox_closed.store(true, Relaxed);
    }

    pub fn receiving(&self) -> bool {
        !self.inbox_closed.load(Relaxed)
    }
}
