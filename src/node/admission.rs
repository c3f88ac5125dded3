//! Admission of new sessions (`--max-connect-rate`, v3): how many a
//! second this node takes on, and how long a refused client should wait
//! (the `Retry-After` of a 503 `busy`). See docs/protocol.md, "Storms".

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::lock::Locked;
use crate::rate::TokenBucket;

/// The node's admission of new sessions (`--max-connect-rate`, v3): a
/// token bucket of a tenth of a second's worth, and for each refusal how long the
/// client should wait. The wait is jittered over the backlog: the
/// refusals of the last second, served at the rate, so that a storm of
/// refused clients comes back spread over about the time the node needs
/// for them, not all after the same second.
pub struct ConnectLimiter {
    rate: u32,
    state: Mutex<ConnectState>,
}

struct ConnectState {
    bucket: TokenBucket,
    /// Refusals since `since`, a window of about a second.
    refused: u64,
    since: Instant,
}

/// The burst admitted at once is a tenth of a second's worth: a whole
/// second's worth at once queues on the node for most of a second (a storm
/// measured p99 connect times of 1.4 s at 2,000/s per node so), while a
/// tenth keeps the admitted ones arriving at the pace they are served.
const BURST_PER_SECOND: u32 = 10;

/// The burst for `rate`: a tenth of a second's worth, but at least the
/// smaller of a second's worth and 10 (a bucket of one token refuses most
/// of a small rate's randomly timed arrivals).
fn burst(rate: u32) -> u32 {
    (rate / BURST_PER_SECOND).max(rate.min(10)).max(1)
}

/// The longest Retry-After given, in seconds.
pub const MAX_RETRY_AFTER_S: u64 = 60;

impl ConnectLimiter {
    /// `rate == 0`: every session is admitted.
    pub fn new(rate: u32) -> Self {
        Self {
            rate,
            state: Mutex::new(ConnectState {
                bucket: TokenBucket::new(rate, burst(rate)),
                refused: 0,
                since: Instant::now(),
            }),
        }
    }

    /// Admits a new session, or answers in how many seconds its client
    /// should try again (`jitter` in [0, 1) picks within the backlog).
    pub fn admit(&self, jitter: f64) -> Result<(), u64> {
        self.admit_at(Instant::now(), jitter)
    }

    pub fn admit_at(&self, now: Instant, jitter: f64) -> Result<(), u64> {
        if self.rate == 0 {
            return Ok(());
        }
        let mut state = self.state.locked();
        if state.bucket.allow_at(now) {
            return Ok(());
        }
        if now.saturating_duration_since(state.since) >= Duration::from_secs(1) {
            state.refused = 0;
            state.since = now;
        }
        state.refused += 1;
        // Seconds the node needs for everyone refused lately, at the rate.
        let backlog = state.refused.div_ceil(u64::from(self.rate));
        let wait = 1 + (jitter.clamp(0.0, 0.999) * (backlog + 1) as f64) as u64;
        Err(wait.min(MAX_RETRY_AFTER_S))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_beyond_the_rate_wait_over_the_backlog() {
        let now = Instant::now();
        let limiter = ConnectLimiter::new(50);
        for _ in 0..10 {
            assert_eq!(
                limiter.admit_at(now, 0.5),
                Ok(()),
                "a burst's worth at once"
            );
        }
        // 450 more in the same instant: 9 seconds of backlog at 50/s.
        let waits: Vec<u64> = (0..450)
            .map(|i| limiter.admit_at(now, f64::from(i) / 450.0).unwrap_err())
            .collect();
        assert!(waits.iter().all(|w| (1..=11).contains(w)), "{waits:?}");
        assert_eq!(waits[0], 1, "the first refused waits a second");
        assert!(
            *waits.last().unwrap() >= 8,
            "the last ones spread over the backlog: {waits:?}"
        );
        // A second later there is room again.
        assert_eq!(limiter.admit_at(now + Duration::from_secs(1), 0.0), Ok(()));
        assert_eq!(
            ConnectLimiter::new(0).admit_at(now, 0.0),
            Ok(()),
            "0: no limit"
        );
    }
}
