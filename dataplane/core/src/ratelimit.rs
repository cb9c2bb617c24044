//! A token bucket driven by the caller's clock (no clock reads of its own).

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    rate_per_second: u64,
    burst: u64,
    /// Tokens in millionths, so that small rates refill smoothly.
    micro_tokens: u64,
    last: Duration,
}

const MICRO: u64 = 1_000_000;

impl TokenBucket {
    /// A bucket that starts full. A rate of 0 refuses everything.
    pub fn new(rate_per_second: u64, burst: u64) -> TokenBucket {
        TokenBucket {
            rate_per_second,
            burst,
            micro_tokens: burst.saturating_mul(MICRO),
            last: Duration::ZERO,
        }
    }

    /// Takes one token if there is one at time `now`.
    pub fn try_take(&mut self, now: Duration) -> bool {
        self.try_take_n(1, now)
    }

    /// Takes `n` tokens if there are that many at time `now` (a byte-rate bucket takes a packet's
    /// length).
    pub fn try_take_n(&mut self, n: u64, now: Duration) -> bool {
        if now > self.last {
            let elapsed_us = u64::try_from((now - self.last).as_micros()).unwrap_or(u64::MAX);
            let refill = elapsed_us.saturating_mul(self.rate_per_second);
            self.micro_tokens = self
                .micro_tokens
                .saturating_add(refill)
                .min(self.burst.saturating_mul(MICRO));
            self.last = now;
        }
        let needed = n.saturating_mul(MICRO);
        if self.micro_tokens >= needed {
            self.micro_tokens -= needed;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut bucket = TokenBucket::new(1000, 5);
        let start = Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| bucket.try_take(start)).count(), 5);
        // 10 ms at 1000/s refills 10 tokens, capped at the burst of 5.
        assert_eq!(
            (0..10)
                .filter(|_| bucket.try_take(start + Duration::from_millis(10)))
                .count(),
            5
        );
        // 2 ms later: 2 tokens.
        assert_eq!(
            (0..10)
                .filter(|_| bucket.try_take(start + Duration::from_millis(12)))
                .count(),
            2
        );
    }

    #[test]
    fn zero_rate_refuses_after_burst() {
        let mut bucket = TokenBucket::new(0, 1);
        assert!(bucket.try_take(Duration::ZERO));
        assert!(!bucket.try_take(Duration::from_secs(100)));
    }
}
