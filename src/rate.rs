//! Rate limits: a token bucket, the per-session limiter that tells a
//! burst from sustained abuse, and a throttle for log lines.

use std::time::Duration;

use tokio::time::Instant;

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

    pub fn allow_at(&mut self, now: Instant) -> bool {
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

/// A refusal this close to the previous one continues an abuse streak;
/// a longer pause ends it.
pub const ABUSE_GAP: Duration = Duration::from_secs(1);

/// What a session's limiter says about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the rate: refuse this frame (`rate_limited`).
    Refuse,
    /// Refused without a pause for the whole abuse window: close (1008).
    Abuse,
}

/// A session's frame limiter. A client that bursts past its rate now and
/// then just has those frames refused; one that stays over it, with no
/// pause of [`ABUSE_GAP`] between refusals for the whole `abuse_window`,
/// is costing the node work for nothing and is closed.
pub struct Limiter {
    bucket: TokenBucket,
    abuse_window: Option<Duration>,
    /// First and latest refusal of the current streak.
    streak: Option<(Instant, Instant)>,
}

impl Limiter {
    pub fn new(rate: u32, burst: u32, abuse_window: Option<Duration>) -> Self {
        Self {
            bucket: TokenBucket::new(rate, burst),
            abuse_window,
            streak: None,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.bucket.allow_at(now) {
            return Verdict::Allow;
        }
        let start = match self.streak {
            Some((start, last)) if now.saturating_duration_since(last) < ABUSE_GAP => start,
            _ => now,
        };
        self.streak = Some((start, now));
        match self.abuse_window {
            Some(window) if now.saturating_duration_since(start) >= window => Verdict::Abuse,
            _ => Verdict::Refuse,
        }
    }
}

/// Lets one log line through per period and counts the rest.
pub struct LogThrottle {
    period: Duration,
    last: Option<Instant>,
    skipped: u64,
}

impl LogThrottle {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            skipped: 0,
        }
    }

    /// `Some(lines skipped since the last one)` when a line may be logged.
    pub fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.period)
        {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_refused_and_sustained_excess_is_abuse() {
        let start = Instant::now();
        let mut limiter = Limiter::new(1, 1, Some(Duration::from_secs(3)));
        limiter.bucket.last = start;
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(limiter.check(at(0)), Verdict::Allow);
        assert_eq!(limiter.check(at(0)), Verdict::Refuse);
        // A pause longer than the gap ends that streak; a new one starts.
        assert_eq!(limiter.check(at(1500)), Verdict::Allow);
        assert_eq!(limiter.check(at(1500)), Verdict::Refuse);
        // Two frames every half second at 1/s: refusals never pause long
        // enough, so three seconds into the streak it is abuse.
        for t in (2000..=4500).step_by(500) {
            let verdicts = [limiter.check(at(t)), limiter.check(at(t))];
            assert!(verdicts.contains(&Verdict::Refuse) || verdicts.contains(&Verdict::Abuse));
            assert_eq!(
                verdicts[1] == Verdict::Abuse,
                t == 4500,
                "at {t} ms: {verdicts:?}"
            );
        }
        let mut never = Limiter::new(1, 1, None);
        assert!((0..1000).all(|_| never.check(at(0)) != Verdict::Abuse));
    }

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
