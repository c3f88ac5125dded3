//! The in-memory stores' own clock: what Redis's `TIME` is to the Redis
//! stores. Expiries (heartbeats, last-seen, stored messages, inbox claims)
//! are judged by it.
//!
//! It reads wall-clock time once, when the store is made, and counts on
//! from there with tokio's monotonic clock: so it never jumps back when
//! the system's clock is set, and it follows paused time in tests, where
//! a node's TTL or an inbox's can pass in a moment without sleeping.

use tokio::time::Instant;

use crate::protocol::now_ms;

#[derive(Debug, Clone, Copy)]
pub struct StoreClock {
    wall_ms: u64,
    at: Instant,
}

impl Default for StoreClock {
    fn default() -> Self {
        Self {
            wall_ms: now_ms(),
            at: Instant::now(),
        }
    }
}

impl StoreClock {
    /// Now, in ms since the Unix epoch, by this clock.
    pub fn now_ms(&self) -> u64 {
        self.wall_ms + self.at.elapsed().as_millis() as u64
    }
}
