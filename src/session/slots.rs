//! The `--max-sessions` cap.
//!
//! A slot is taken when an upgrade is accepted, before the handshake
//! finishes, and given back when the session's task ends: counting only
//! registered sessions would let a burst of handshakes overshoot the cap
//! and run the process out of file descriptors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Session slots of one node.
pub struct Slots {
    max: usize,
    used: Arc<AtomicUsize>,
}

/// One taken slot; dropping it gives it back.
pub struct Slot(Arc<AtomicUsize>);

impl Slots {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            used: Arc::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot, or `None` when all are taken.
    pub fn take(&self) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.max).then_some(used + 1)
            })
            .ok()
            .map(|_| Slot(self.used.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_and_come_back() {
        let slots = Slots::new(2);
        let a = slots.take().unwrap();
        let _b = slots.take().unwrap();
        assert!(slots.take().is_none());
        drop(a);
        assert!(slots.take().is_some());
    }
}
