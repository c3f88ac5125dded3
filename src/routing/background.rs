//! Background work of the routing core: re-routes of hops whose recipient
//! moved, deletes of stale records, inbox deletes, last-seen reads. It
//! runs on the node's one task tracker (so that shutdown waits for it),
//! and the part that a flood of traffic could multiply is bounded: past
//! [`MAX_BACKGROUND`] tasks at once, the caller answers at once instead
//! of queueing more work (an undeliverable hop is answered `offline`, a
//! stale record is left for the next lookup to delete).

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// How many bounded background tasks may run at once.
pub const MAX_BACKGROUND: usize = 1024;

/// Where routing's background work runs. Cheap to clone.
#[derive(Clone)]
pub struct Background {
    tasks: TaskTracker,
    permits: Arc<Semaphore>,
}

impl Background {
    pub fn new(tasks: TaskTracker) -> Self {
        Self {
            tasks,
            permits: Arc::new(Semaphore::new(MAX_BACKGROUND)),
        }
    }

    /// Runs `work` if fewer than [`MAX_BACKGROUND`] bounded tasks are
    /// running; gives it back otherwise, for the caller to answer without
    /// it.
    pub fn try_spawn<F>(&self, work: F) -> Result<(), F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.tasks.spawn(async move {
                    let _permit = permit;
                    work.await;
                });
                Ok(())
            }
            Err(_) => Err(work),
        }
    }

    /// Runs `work` on the tracker, unbounded: for work whose number is
    /// already bounded by something else (one task per batch, per
    /// session).
    pub fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(work);
    }

    /// The node's task tracker.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tasks
    }
}
