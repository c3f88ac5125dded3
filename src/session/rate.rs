//! A per-session token bucket for sends.

use std::time::Instant;

/// Allows `rate` sends per second on average and bursts of up to `burst`.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate == 0` means unlimited.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3);
        bucket.last = start;
        assert!((0..3).all(|_| bucket.allow_at(start)));
        assert!(!bucket.allow_at(start));
        // 100 ms at 10/s refills one token.
        assert!(bucket.allow_at(start + Duration::from_millis(100)));
        assert!(!bucket.allow_at(start + Duration::from_millis(100)));
        // Refill stops at the burst size.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| bucket.allow_at(later)));
        assert!(!bucket.allow_at(later));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let mut bucket = TokenBucket::new(0, 1);
        assert!((0..10_000).all(|_| bucket.allow()));
    }
}
