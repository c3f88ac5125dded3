//! The `--max-sessions` cap.
//!
//! A slot is taken when an upgrade is accepted, before the handshake
//! finishes, and given back when the session's task ends: counting only
//! registered sessions would let a burst of handshakes overshoot the cap
//! and run the process out of file descriptors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Session slots of one node.
pub struct Slots {
    max: usize,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    used: AtomicUsize,
    /// Woken when the last slot is given back.
    emptied: Notify,
}

/// One taken slot; dropping it gives it back.
pub struct Slot(Arc<Shared>);

impl Slots {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            shared: Arc::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot, or `None` when all are taken.
    pub fn take(&self) -> Option<Slot> {
        self.shared
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.max).then_some(used + 1)
            })
            .ok()
            .map(|_| Slot(self.shared.clone()))
    }

    /// Returns once every slot is given back: every session (and every
    /// upgrade on its way to becoming one) has ended.
    pub async fn all_returned(&self) {
        loop {
            let emptied = self.shared.emptied.notified();
            if self.shared.used.load(Ordering::Acquire) == 0 {
                return;
            }
            emptied.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.used.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.emptied.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_run_out_and_come_back() {
        let slots = Slots::new(2);
        let a = slots.take().unwrap();
        let b = slots.take().unwrap();
        assert!(slots.take().is_none());
        drop(a);
        let c = slots.take().unwrap();
        let all_returned = slots.all_returned();
        tokio::pin!(all_returned);
        assert!(futures_util::poll!(&mut all_returned).is_pending());
        drop((b, c));
        all_returned.await;
    }
}
