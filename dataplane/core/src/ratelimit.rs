//! A token bucket driven by the caller's clock (no clock reads of its own).

use std::time::Duration;

/// Tokens are counted in millionths, so that small rates refill smoothly; the balance may go
/// negative (a debt) when a byte bucket admits a packet larger than what is left, and refills
/// repay it, so the long-run rate holds whatever the packet sizes.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    rate_per_second: u64,
    burst: u64,
    micro_tokens: i128,
    last: Duration,
}

const MICRO: i128 = 1_000_000;

impl TokenBucket {
    /// A bucket that starts full. A rate of 0 refuses everything after the burst.
    pub fn new(rate_per_second: u64, burst: u64) -> TokenBucket {
        TokenBucket::with_tokens(rate_per_second, burst, burst)
    }

    /// A bucket that starts with `tokens` (at most `burst`).
    pub fn with_tokens(rate_per_second: u64, burst: u64, tokens: u64) -> TokenBucket {
        TokenBucket {
            rate_per_second,
            burst,
            micro_tokens: i128::from(tokens.min(burst)) * MICRO,
            last: Duration::ZERO,
        }
    }

    fn refill(&mut self, now: Duration) {
        if now > self.last {
            let elapsed_us = (now - self.last).as_micros() as i128;
            let full = i128::from(self.burst) * MICRO;
            self.micro_tokens =
                (self.micro_tokens + elapsed_us * i128::from(self.rate_per_second)).min(full);
            self.last = now;
        }
    }

    /// Whether `n` tokens are there at time `now`.
    pub fn has(&mut self, n: u64, now: Duration) -> bool {
        self.refill(now);
        self.micro_tokens >= i128::from(n) * MICRO
    }

    /// Whether any token is there at `now` (a byte bucket admits a packet then, in debt if need be).
    pub fn has_any(&mut self, now: Duration) -> bool {
        self.refill(now);
        self.micro_tokens > 0
    }

    /// Takes `n` tokens, going into debt if there are fewer (call after [`TokenBucket::has`]).
    pub fn take(&mut self, n: u64) {
        self.micro_tokens -= i128::from(n) * MICRO;
    }

    /// Takes one token if there is one at time `now`.
    pub fn try_take(&mut self, now: Duration) -> bool {
        let available = self.has(1, now);
        if available {
            self.take(1);
        }
        available
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

    #[test]
    fn a_debt_is_repaid_before_the_next_admission() {
        // 12 500 bytes/s (100 kbit/s) with a 1000-byte burst: a 1500-byte packet is admitted
        // into debt, and the next one only once the 500-byte debt and more are repaid.
        let mut bytes = TokenBucket::new(12_500, 1_000);
        let start = Duration::from_secs(1);
        assert!(bytes.has_any(start));
        bytes.take(1500);
        assert!(
            !bytes.has_any(start + Duration::from_millis(40)),
            "-500 + 500 is not positive yet"
        );
        assert!(bytes.has_any(start + Duration::from_millis(41)));
    }

    #[test]
    fn a_partial_start_gives_only_what_it_holds() {
        let mut bucket = TokenBucket::with_tokens(10, 100, 1);
        assert!(bucket.try_take(Duration::ZERO));
        assert!(!bucket.try_take(Duration::ZERO));
    }
}
