//! A circuit breaker per worker: after `threshold` consecutive failures (connection
//! errors, 5xx, timeouts, broken streams) the worker gets no requests for `cooldown`;
//! then it is half-open: requests go through again, and the first failure reopens it at
//! once while a success closes it. Lock-free: routing checks every candidate's breaker.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds since the first call: a cheap monotonic clock for atomics.
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Settings of the breakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker. Default: 3.
    pub threshold: u32,
    /// How long an open breaker keeps the worker out. Default: 5 s.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 3,
            cooldown: Duration::from_secs(5),
        }
    }
}

/// The state, as a metric value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed = 0,
    /// Cooling down: no requests.
    Open = 1,
    /// Cooled down after failures: requests flow, one more failure reopens it.
    HalfOpen = 2,
}

/// One worker's breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    failures: AtomicU32,
    /// `now_ms()` until which it is open; 0 when never opened since the last success.
    open_until: AtomicU64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    /// The state at `now` (from [`now_ms`]).
    pub fn state_at(&self, now: u64) -> BreakerState {
        match self.open_until.load(Relaxed) {
            0 => BreakerState::Closed,
            t if now < t => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether requests may go to the worker now.
    pub fn allows(&self) -> bool {
        self.state_at(now_ms()) != BreakerState::Open
    }

    /// Records a success: closes the breaker.
    pub fn success(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        if self.open_until.load(Relaxed) != 0 {
            self.open_until.store(0, Relaxed);
        }
    }

    /// Records a failure; true when it opened (or reopened) the breaker.
    pub fn failure(&self) -> bool {
        self.failure_at(now_ms())
    }

    fn failure_at(&self, now: u64) -> bool {
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        let half_open = self.state_at(now) == BreakerState::HalfOpen;
        if n >= self.config.threshold.max(1) || half_open {
            let until = now + self.config.cooldown.as_millis() as u64;
            self.open_until.store(until.max(1), Relaxed);
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
    fn opens_after_threshold_and_half_opens_after_cooldown() {
        let b = Breaker::new(BreakerConfig {
            threshold: 2,
            cooldown: Duration::from_millis(100),
        });
        assert_eq!(b.state_at(1000), BreakerState::Closed);
        assert!(!b.failure_at(1000));
        assert_eq!(b.state_at(1000), BreakerState::Closed);
        assert!(b.failure_at(1000));
        assert_eq!(b.state_at(1050), BreakerState::Open);
        assert_eq!(b.state_at(1100), BreakerState::HalfOpen);
        // One failure while half-open reopens it.
        assert!(b.failure_at(1100));
        assert_eq!(b.state_at(1150), BreakerState::Open);
        // A success closes it and forgets the count.
        b.success();
        assert_eq!(b.state_at(1150), BreakerState::Closed);
        assert!(!b.failure_at(2000));
    }
}
