//! Circuit breakers per shard: after `threshold` consecutive failures a shard's
//! breaker opens and calls fail at once for `open_for`; then one trial call is let
//! through (half-open) — success closes the breaker, failure opens it again.
//! A trial that never reports (its call was cancelled) counts as failed once
//! `open_for` has passed, so the breaker cannot stick half-open.
//! Pure logic; the caller passes the time.

use std::time::{Duration, Instant};

/// The state of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; counts consecutive failures.
    Closed {
        /// Failures in a row so far.
        failures: u32,
    },
    /// Calls are refused until `until`.
    Open {
        /// When a trial may be made.
        until: Instant,
    },
    /// One trial call is in flight; if it has not reported by `until`, it
    /// counts as failed and another trial may go.
    HalfOpen {
        /// When an unreported trial is given up.
        until: Instant,
    },
}

/// One shard's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    /// A closed breaker opening after `threshold` failures for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            state: BreakerState::Closed { failures: 0 },
            threshold: threshold.max(1),
            open_for,
        }
    }

    /// Whether a call may go out now; `Err` carries how long the breaker stays
    /// open.
    pub fn allow(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until } | BreakerState::HalfOpen { until } if now >= until => {
                self.state = BreakerState::HalfOpen {
                    until: now + self.open_for,
                };
                Ok(())
            }
            // Only one trial at a time.
            BreakerState::Open { until } | BreakerState::HalfOpen { until } => Err(until - now),
        }
    }

    /// Records a call's outcome.
    pub fn record(&mut self, success: bool, now: Instant) {
        self.state = match (self.state, success) {
            (_, true) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, false) if failures + 1 < self.threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => BreakerState::Open {
                until: now + self.open_for,
            },
        };
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_half_opens() {
        let start = Instant::now();
        let mut breaker = Breaker::new(3, Duration::from_secs(2));
        for _ in 0..2 {
            assert!(breaker.allow(start).is_ok());
            breaker.record(false, start);
        }
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 2 });
        breaker.record(false, start);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        assert!(breaker.allow(start + Duration::from_secs(1)).is_err());
        // After the cool-down one trial goes through; others still wait.
        assert!(breaker.allow(start + Duration::from_secs(2)).is_ok());
        assert!(breaker.allow(start + Duration::from_secs(2)).is_err());
        breaker.record(true, start + Duration::from_secs(2));
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn a_trial_that_never_reports_does_not_stick() {
        let start = Instant::now();
        let open_for = Duration::from_secs(1);
        let mut breaker = Breaker::new(1, open_for);
        breaker.record(false, start);
        // The trial goes out and its caller goes away without a verdict.
        assert!(breaker.allow(start + open_for).is_ok());
        assert!(breaker.allow(start + open_for).is_err());
        // Once the trial's time is up, it counts as failed: a new trial goes.
        assert!(breaker.allow(start + open_for * 2).is_ok());
        breaker.record(true, start + open_for * 2);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn a_failed_trial_reopens_and_success_resets_the_count() {
        let start = Instant::now();
        let mut breaker = Breaker::new(2, Duration::from_secs(1));
        breaker.record(false, start);
        breaker.record(true, start);
        breaker.record(false, start);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 1 });
        breaker.record(false, start);
        let later = start + Duration::from_secs(1);
        assert!(breaker.allow(later).is_ok());
        breaker.record(false, later);
        assert!(breaker.allow(later).is_err());
    }
}
