//! One way to take a plain mutex: [`Locked::locked`].
//!
//! A `std::sync::Mutex` is poisoned when a thread panics while holding it.
//! Every critical section in this crate is a few map or queue operations
//! that leave the data whole at each step, so a poisoned lock still guards
//! consistent data, and taking it anyway is safe. Refusing it instead would
//! turn one panicked task into a node that can no longer route.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`], recovering from poisoning (see the module comment).
pub trait Locked<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// [`Locked`] for a `RwLock`: a read or a write guard, recovering from
/// poisoning.
pub trait RwLocked<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> RwLocked<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
