//! Exponential reconnect backoff, bounded, with jitter.

use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Settings of the reconnect backoff: delay `n` (from 0) is
/// `min(max, initial × 2ⁿ)`, scaled by a random factor in `[1 − jitter, 1]` so that
/// subscribers of engines that died together do not reconnect in lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// First delay. Default: 100 ms.
    pub initial: Duration,
    /// Largest delay. Default: 5 s (an engine restart takes longer than that, so the
    /// subscriber is back within 5 s of the engine).
    pub max: Duration,
    /// Fraction of the delay that is random, 0 to 1. Default: 0.5.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            jitter: 0.5,
        }
    }
}

/// The delays of one run of failures; [`reset`](Self::reset) after a success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// `seed` decorrelates the jitter of different subscribers (e.g. the worker id).
    pub(crate) fn new(config: BackoffConfig, seed: u64) -> Self {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Backoff {
            config,
            attempt: 0,
            seed: seed ^ clock,
        }
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self
            .config
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.config.max);
        self.attempt = self.attempt.saturating_add(1);
        let r = xxh3_64_with_seed(&self.attempt.to_le_bytes(), self.seed);
        // A uniform fraction in [0, 1).
        let u = (r >> 11) as f64 / (1u64 << 53) as f64;
        let jitter = self.config.jitter.clamp(0.0, 1.0);
        base.mul_f64(1.0 - jitter * u)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_bound_with_jitter_below() {
        let config = BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            jitter: 0.5,
        };
        let mut b = Backoff::new(config, 7);
        let mut distinct = std::collections::BTreeSet::new();
        for n in 0..40u32 {
            let d = b.next_delay();
            let base = Duration::from_millis(100)
                .saturating_mul(1 << n.min(20))
                .min(config.max);
            assert!(d <= base && d >= base / 2, "attempt {n}: {d:?} vs {base:?}");
            distinct.insert(d);
        }
        // Jittered: not all the capped delays are equal.
        assert!(distinct.len() > 10, "{distinct:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn no_jitter_is_exact() {
        let mut b = Backoff::new(
            BackoffConfig {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(35),
                jitter: 0.0,
            },
            1,
        );
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [10, 20, 35, 35]);
    }
}
