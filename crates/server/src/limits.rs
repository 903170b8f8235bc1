//! Rate limiting. The bucket is given the time; it never reads a clock, so
//! its tests step through time without sleeping.

use std::time::{Duration, Instant};

/// A token bucket: holds up to `burst` tokens, refills at `rate` per second,
/// and every message takes one.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Tokens, in millionths, so refills of a fraction of a token add up.
    micro_tokens: u64,
    burst_micro: u64,
    rate_per_sec: u64,
    last: Instant,
}

const MICRO: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket. A `rate_per_sec` of 0 never limits.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst_micro = u64::from(burst.max(1)) * MICRO;
        TokenBucket {
            micro_tokens: burst_micro,
            burst_micro,
            rate_per_sec: u64::from(rate_per_sec),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.rate_per_sec == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        // Whole microseconds times tokens per second is millionths of tokens.
        let refill = micros(elapsed).saturating_mul(self.rate_per_sec);
        self.micro_tokens = self.micro_tokens.saturating_add(refill).min(self.burst_micro);
        self.last = self.last.max(now);
        if self.micro_tokens >= MICRO {
            self.micro_tokens -= MICRO;
            true
        } else {
            false
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, 200, t0);
        let taken = (0..300).filter(|_| bucket.try_take(t0)).count();
        assert_eq!(taken, 200, "the burst");
        // 10 ms later exactly one more token has dripped in.
        let t1 = t0 + Duration::from_millis(10);
        assert!(bucket.try_take(t1));
        assert!(!bucket.try_take(t1));
        // One second of quiet refills 100, not more than the burst.
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!((0..300).filter(|_| bucket.try_take(t2)).count(), 100);
        let t3 = t2 + Duration::from_secs(3600);
        assert_eq!((0..300).filter(|_| bucket.try_take(t3)).count(), 200);
    }

    #[test]
    fn fractions_of_a_token_add_up() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3, 5, t0);
        assert_eq!((0..10).filter(|_| bucket.try_take(t0)).count(), 5);
        let mut t = t0;
        let mut taken = 0;
        for _ in 0..1000 {
            t += Duration::from_millis(1);
            taken += usize::from(bucket.try_take(t));
        }
        assert_eq!(taken, 3);
    }

    #[test]
    fn zero_rate_never_limits_and_time_going_back_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut off = TokenBucket::new(0, 1, t0);
        assert!((0..10_000).all(|_| off.try_take(t0)));
        let mut bucket = TokenBucket::new(10, 1, t0);
        assert!(bucket.try_take(t0));
        assert!(!bucket.try_take(t0 - Duration::from_secs(5)));
    }
}
