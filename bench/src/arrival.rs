//! Arrival schedules of the open loop: when each request is due.

use crate::rng::Rng;
use crate::settings::Arrival;
use std::time::Duration;

/// Due times at `rate` requests/s, optionally ramped linearly from 0 to `rate` over
/// `ramp` (the instantaneous rate grows with time, so the count of arrivals by `t` is
/// exactly the integral of the ramp).
#[derive(Debug, Clone)]
pub struct Schedule {
    rate: f64,
    arrival: Arrival,
    rng: Rng,
    /// Arrival time at full rate, in seconds, before the ramp's time warp.
    t: f64,
    started: bool,
    ramp_s: f64,
}

impl Schedule {
    /// A schedule; the first request is due at 0.
    pub fn new(rate: f64, arrival: Arrival, ramp: Option<Duration>, seed: u64) -> Schedule {
        Schedule {
            rate,
            arrival,
            rng: Rng::derive(seed, 0x4152_5256),
            t: 0.0,
            started: false,
            ramp_s: ramp.map_or(0.0, |r| r.as_secs_f64()),
        }
    }

    /// The next due time, from the point's origin.
    pub fn next_due(&mut self) -> Duration {
        if self.started {
            let mean = 1.0 / self.rate;
            self.t += match self.arrival {
                Arrival::Constant => mean,
                Arrival::Poisson => self.rng.exp1() * mean,
                Arrival::Gamma(shape) => self.rng.gamma(shape) * mean / shape,
            };
        }
        self.started = true;
        Duration::from_secs_f64(warp(self.t, self.ramp_s))
    }
}

/// Maps an arrival time at full rate to the time it has under a linear ramp of `ramp`
/// seconds: by time τ < ramp a ramp has issued `rate·τ²/(2·ramp)` requests.
fn warp(t: f64, ramp: f64) -> f64 {
    if ramp <= 0.0 {
        t
    } else if t < ramp / 2.0 {
        (2.0 * ramp * t).sqrt()
    } else {
        t + ramp / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(mut s: Schedule, n: usize) -> Vec<f64> {
        let d: Vec<f64> = (0..=n).map(|_| s.next_due().as_secs_f64()).collect();
        d.windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn mean_cv(x: &[f64]) -> (f64, f64) {
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        let sd = (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt();
        (m, sd / m)
    }

    #[test]
    fn constant_is_exact_and_starts_at_zero() {
        let mut s = Schedule::new(5000.0, Arrival::Constant, None, 1);
        assert_eq!(s.next_due(), Duration::ZERO);
        let d: Vec<Duration> = (0..5000).map(|_| s.next_due()).collect();
        // No millisecond quantisation: 200 µs apart, 5,000 in the first second.
        assert_eq!(d[0], Duration::from_micros(200));
        assert!((d[4999].as_secs_f64() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn poisson_and_gamma_have_the_rate_and_burstiness() {
        let (m, cv) = mean_cv(&gaps(
            Schedule::new(100.0, Arrival::Poisson, None, 3),
            100_000,
        ));
        assert!(
            (m - 0.01).abs() < 2e-4 && (cv - 1.0).abs() < 0.02,
            "{m} {cv}"
        );
        // Gamma shape k: coefficient of variation 1/sqrt(k).
        let (m, cv) = mean_cv(&gaps(
            Schedule::new(100.0, Arrival::Gamma(0.25), None, 3),
            100_000,
        ));
        assert!(
            (m - 0.01).abs() < 3e-4 && (cv - 2.0).abs() < 0.06,
            "{m} {cv}"
        );
        let (m, cv) = mean_cv(&gaps(
            Schedule::new(100.0, Arrival::Gamma(4.0), None, 3),
            100_000,
        ));
        assert!(
            (m - 0.01).abs() < 2e-4 && (cv - 0.5).abs() < 0.02,
            "{m} {cv}"
        );
    }

    #[test]
    fn a_ramp_issues_half_as_many_during_itself() {
        let mut s = Schedule::new(100.0, Arrival::Constant, Some(Duration::from_secs(10)), 0);
        let d: Vec<f64> = (0..2000).map(|_| s.next_due().as_secs_f64()).collect();
        let in_ramp = d.iter().filter(|&&t| t < 10.0).count();
        // ∫0..10 of 100·t/10 dt = 500 arrivals during the ramp, then 100/s.
        assert!((in_ramp as i64 - 500).abs() <= 1, "{in_ramp}");
        let after = d.iter().filter(|&&t| (10.0..11.0).contains(&t)).count();
        assert!((after as i64 - 100).abs() <= 1, "{after}");
    }
}
