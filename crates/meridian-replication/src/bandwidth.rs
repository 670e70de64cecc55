//! The configured cap on the bytes a node ships (replication, and the DR
//! restore and backup streams, each with its own cap).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket on the bytes a node ships (the configured bandwidth cap).
#[derive(Debug)]
pub struct BandwidthCap {
    bytes_per_second: u64,
    /// Tokens available and when they were last topped up.
    state: Mutex<(f64, Instant)>,
}

impl BandwidthCap {
    /// A cap of `bytes_per_second` (0: none).
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second,
            state: Mutex::new((bytes_per_second as f64, Instant::now())),
        }
    }

    /// How long to wait before `bytes` may be sent (taking them now).
    fn reserve(&self, bytes: usize) -> Duration {
        if self.bytes_per_second == 0 {
            return Duration::ZERO;
        }
        let rate = self.bytes_per_second as f64;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refilled = (state.0 + now.duration_since(state.1).as_secs_f64() * rate).min(rate);
        // Tokens may go negative: a batch larger than the bucket still goes,
        // and later batches wait for the debt to be paid.
        *state = (refilled - bytes as f64, now);
        if state.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.0 / rate)
        }
    }

    /// Waits until `bytes` may be sent.
    pub async fn take(&self, bytes: usize) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bandwidth_cap_spaces_batches() {
        let cap = BandwidthCap::new(1_000);
        assert_eq!(
            cap.reserve(600),
            Duration::ZERO,
            "a burst of a second's worth"
        );
        let wait = cap.reserve(900);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        let none = BandwidthCap::new(0);
        assert_eq!(none.reserve(usize::MAX), Duration::ZERO);
    }
}
