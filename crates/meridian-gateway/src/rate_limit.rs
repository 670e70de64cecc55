//! Per-client token buckets: each client may make `rate` requests per second on
//! average, with bursts up to `burst`. Pure logic; the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Clients remembered at most; idle buckets (full again) are dropped beyond it.
const MAX_CLIENTS: usize = 100_000;

/// One client's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by client identity.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    /// `rate` requests per second with bursts of `burst`; a rate of 0 disables
    /// limiting.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `client` at `now`, or says how long until one is free.
    pub fn acquire(&mut self, client: &str, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        if self.buckets.len() >= MAX_CLIENTS && !self.buckets.contains_key(client) {
            self.evict_full(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.buckets.entry(client.to_string()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    fn evict_full(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, bucket| {
            let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
            bucket.tokens + elapsed * rate < burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 3);
        for _ in 0..3 {
            assert!(limiter.acquire("a", start).is_ok());
        }
        let wait = limiter.acquire("a", start).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Another client has its own bucket.
        assert!(limiter.acquire("b", start).is_ok());
        // 100 ms later one token is back.
        assert!(
            limiter
                .acquire("a", start + Duration::from_millis(100))
                .is_ok()
        );
        assert!(
            limiter
                .acquire("a", start + Duration::from_millis(100))
                .is_err()
        );
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let mut limiter = RateLimiter::new(0, 0);
        let now = Instant::now();
        for _ in 0..10_000 {
            assert!(limiter.acquire("a", now).is_ok());
        }
    }
}
