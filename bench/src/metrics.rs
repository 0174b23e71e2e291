//! Per-point metrics: records are folded into HdrHistograms (percentiles) and exact sums
//! (means, standard deviations, throughputs) as they arrive; no record is kept.

use crate::record::{ErrorType, RequestRecord};
use crate::settings::Slo;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// The percentiles every report lists.
pub const PERCENTILES: [f64; 5] = [50.0, 90.0, 95.0, 99.0, 99.9];

/// One latency metric: a histogram of microseconds plus exact moments.
#[derive(Debug, Clone)]
pub struct Series {
    hist: Histogram<u64>,
    n: u64,
    sum: f64,
    sum_sq: f64,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            // Three significant digits (0.1% resolution) from 1 µs to 1 hour; longer values
            // saturate.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|_| unreachable!("the bounds and 3 significant digits are valid")),
            n: 0,
            sum: 0.0,
            sum_sq: 0.0,
        }
    }
}

impl Series {
    /// Adds one value in microseconds.
    pub fn record(&mut self, us: f64) {
        let us = us.max(0.0);
        self.hist.saturating_record(us.round() as u64);
        self.n += 1;
        self.sum += us;
        self.sum_sq += us * us;
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Mean in milliseconds (0 when empty).
    pub fn mean_ms(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64 / 1e3
        }
    }

    /// Population standard deviation in milliseconds (as numpy's `std`, which `vllm bench`
    /// uses).
    pub fn std_ms(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let n = self.n as f64;
        let mean = self.sum / n;
        ((self.sum_sq / n - mean * mean).max(0.0)).sqrt() / 1e3
    }

    /// The value at percentile `p` (0–100) in milliseconds (0 when empty).
    pub fn pct_ms(&self, p: f64) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.hist.value_at_percentile(p) as f64 / 1e3
        }
    }

    /// The largest value in milliseconds.
    pub fn max_ms(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.hist.max() as f64 / 1e3
        }
    }
}

/// Everything one sweep point measured.
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    /// Time to first token.
    pub ttft: Series,
    /// Time per output token.
    pub tpot: Series,
    /// Inter-token latency (every gap).
    pub itl: Series,
    /// End-to-end latency.
    pub e2el: Series,
    /// Send lag behind the schedule.
    pub lag: Series,
    /// Requests that finished with tokens.
    pub completed: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Requests cut by a stop of the run.
    pub cancelled: u64,
    /// Warm-up requests seen (not measured).
    pub warmup: u64,
    /// Failures by type.
    pub errors: BTreeMap<ErrorType, u64>,
    /// Prompt tokens of completed requests.
    pub input_tokens: u64,
    /// Output tokens of completed requests.
    pub output_tokens: u64,
    /// Prompt tokens served from the server's prefix cache.
    pub cached_tokens: u64,
    /// Completed requests whose counts came from usage.
    pub usage_reported: u64,
    /// Completed requests meeting every SLO.
    pub good: u64,
    /// Sum of per-request output rates after the first token (tokens/s).
    pub user_rate_sum: f64,
    /// Requests contributing to `user_rate_sum`.
    pub user_rate_n: u64,
    /// Earliest send of a measured request (µs from the point's origin).
    pub first_sent_us: Option<u64>,
    /// Latest end of a measured request.
    pub last_end_us: u64,
    /// Sum of end-to-end latencies of measured requests (for achieved concurrency).
    pub busy_us: f64,
}

impl Accumulator {
    /// Folds in one record; warm-up and cancelled records only count as such.
    pub fn add(&mut self, r: &RequestRecord, slo: &Slo) {
        if r.warmup {
            self.warmup += 1;
            return;
        }
        if r.cancelled {
            self.cancelled += 1;
            return;
        }
        if let Some(lag) = r.lag_us() {
            self.lag.record(lag as f64);
        }
        self.first_sent_us = Some(self.first_sent_us.map_or(r.sent_us, |f| f.min(r.sent_us)));
        self.last_end_us = self.last_end_us.max(r.sent_us + r.e2el_us);
        self.busy_us += r.e2el_us as f64;
        if let Some(e) = &r.error {
            self.failed += 1;
            *self.errors.entry(e.kind).or_default() += 1;
            return;
        }
        self.completed += 1;
        self.input_tokens += u64::from(r.input_tokens);
        self.output_tokens += u64::from(r.output_tokens);
        self.cached_tokens += u64::from(r.cached_tokens);
        self.usage_reported += u64::from(r.usage_reported);
        if let Some(t) = r.ttft_us {
            self.ttft.record(t as f64);
        }
        let tpot = r.tpot_us();
        if let Some(t) = tpot {
            self.tpot.record(t);
            if t > 0.0 {
                self.user_rate_sum += 1e6 / t;
                self.user_rate_n += 1;
            }
        }
        for &g in &r.itl_us {
            self.itl.record(g as f64);
        }
        self.e2el.record(r.e2el_us as f64);
        let within = |v: Option<f64>, lim: Option<std::time::Duration>| match lim {
            None => true,
            Some(l) => v.is_some_and(|v| v <= l.as_secs_f64() * 1e6),
        };
        // A one-token answer has no TPOT; it cannot miss a TPOT objective.
        let tpot_ok = slo.tpot.is_none() || tpot.is_none() || within(tpot, slo.tpot);
        if within(r.ttft_us.map(|t| t as f64), slo.ttft)
            && tpot_ok
            && within(Some(r.e2el_us as f64), slo.e2el)
        {
            self.good += 1;
        }
    }

    /// Seconds from the first measured send to the last measured end.
    pub fn duration_s(&self) -> f64 {
        match self.first_sent_us {
            Some(f) => self.last_end_us.saturating_sub(f) as f64 / 1e6,
            None => 0.0,
        }
    }

    /// Completed requests per second.
    pub fn request_throughput(&self) -> f64 {
        per_s(self.completed as f64, self.duration_s())
    }

    /// Output tokens per second.
    pub fn output_throughput(&self) -> f64 {
        per_s(self.output_tokens as f64, self.duration_s())
    }

    /// Prompt plus output tokens per second.
    pub fn total_token_throughput(&self) -> f64 {
        per_s(
            (self.input_tokens + self.output_tokens) as f64,
            self.duration_s(),
        )
    }

    /// Requests meeting every SLO per second.
    pub fn request_goodput(&self) -> f64 {
        per_s(self.good as f64, self.duration_s())
    }

    /// Mean output tokens/s each user saw after the first token (mean of 1 / TPOT).
    pub fn output_throughput_per_user(&self) -> f64 {
        if self.user_rate_n == 0 {
            0.0
        } else {
            self.user_rate_sum / self.user_rate_n as f64
        }
    }

    /// Mean requests in flight (Little's law: busy time over wall time).
    pub fn achieved_concurrency(&self) -> f64 {
        per_s(self.busy_us / 1e6, self.duration_s())
    }
}

fn per_s(x: f64, s: f64) -> f64 {
    if s > 0.0 {
        x / s
    } else {
        0.0
    }
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`
/// (`None` off Linux). Resolution is the kernel's 10 ms tick: meaningful over seconds.
pub fn process_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // /proc reports in USER_HZ, 100 on every Linux architecture.
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64, ttft: u64, e2e: u64, out: u32, itl: Vec<u64>) -> RequestRecord {
        RequestRecord {
            index: i,
            warmup: false,
            due_us: Some(i * 1000),
            sent_us: i * 1000 + i % 7,
            ttft_us: Some(ttft),
            e2el_us: e2e,
            itl_us: itl,
            input_tokens: 10,
            output_tokens: out,
            cached_tokens: 2,
            usage_reported: true,
            error: None,
            cancelled: false,
        }
    }

    /// numpy-style nearest-rank percentile for comparison.
    fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
        let k = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize - 1;
        sorted[k.min(sorted.len() - 1)]
    }

    #[test]
    fn moments_percentiles_and_throughput_match_direct_computation() {
        let mut acc = Accumulator::default();
        let slo = Slo {
            ttft: Some(std::time::Duration::from_micros(60_000)),
            tpot: None,
            e2el: None,
        };
        let mut ttfts = Vec::new();
        let mut tpots = Vec::new();
        let mut itls = Vec::new();
        for i in 0..997u64 {
            let ttft = 20_000 + (i * 7919) % 50_000;
            let out = 1 + (i % 17) as u32;
            let gaps: Vec<u64> = (1..out)
                .map(|k| 900 + (i * 31 + u64::from(k) * 97) % 20_000)
                .collect();
            let e2e = ttft + gaps.iter().sum::<u64>();
            ttfts.push(ttft as f64 / 1e3);
            if out > 1 {
                tpots.push((e2e - ttft) as f64 / f64::from(out - 1) / 1e3);
            }
            itls.extend(gaps.iter().map(|&g| g as f64 / 1e3));
            acc.add(&rec(i, ttft, e2e, out, gaps), &slo);
        }
        let mut warm = rec(2000, 1, 1, 1, vec![]);
        warm.warmup = true;
        acc.add(&warm, &slo);
        assert_eq!((acc.completed, acc.warmup), (997, 1));

        for (series, values) in [
            (&acc.ttft, &mut ttfts),
            (&acc.tpot, &mut tpots),
            (&acc.itl, &mut itls),
        ] {
            values.sort_by(f64::total_cmp);
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            assert_eq!(series.count(), values.len() as u64);
            assert!(
                (series.mean_ms() - mean).abs() < 1e-6,
                "{} vs {mean}",
                series.mean_ms()
            );
            assert!(
                (series.std_ms() - std).abs() < 1e-6,
                "{} vs {std}",
                series.std_ms()
            );
            for p in PERCENTILES {
                let want = nearest_rank(values, p);
                let got = series.pct_ms(p);
                // HdrHistogram at 3 digits: within 0.1% (plus the µs rounding).
                assert!(
                    (got - want).abs() <= want * 1e-3 + 1e-3,
                    "p{p}: {got} vs {want}"
                );
            }
        }
        let first = 0.0;
        let last_end = (0..997u64)
            .map(|i| {
                let ttft = 20_000 + (i * 7919) % 50_000;
                let out = 1 + (i % 17) as u32;
                let e2e = ttft
                    + (1..out)
                        .map(|k| 900 + (i * 31 + u64::from(k) * 97) % 20_000)
                        .sum::<u64>();
                (i * 1000 + i % 7 + e2e) as f64
            })
            .fold(0.0, f64::max);
        let dur = (last_end - first) / 1e6;
        assert!((acc.duration_s() - dur).abs() < 1e-9);
        assert!((acc.request_throughput() - 997.0 / dur).abs() < 1e-9);
        let out_tokens: u64 = (0..997u64).map(|i| 1 + i % 17).sum();
        assert_eq!(acc.output_tokens, out_tokens);
        assert!((acc.total_token_throughput() - (out_tokens + 9970) as f64 / dur).abs() < 1e-6);
        let good = ttfts.iter().filter(|&&t| t <= 60.0).count() as u64;
        assert_eq!(acc.good, good);
        let user = tpots.iter().map(|t| 1e3 / t).sum::<f64>() / tpots.len() as f64;
        assert!((acc.output_throughput_per_user() - user).abs() < 1e-6);
        // Lag: sent - due = i % 7 µs.
        let lag_mean = (0..997u64).map(|i| (i % 7) as f64).sum::<f64>() / 997.0 / 1e3;
        assert!((acc.lag.mean_ms() - lag_mean).abs() < 1e-9);
    }

    #[test]
    fn failures_are_counted_by_type_and_excluded_from_latency() {
        let mut acc = Accumulator::default();
        let mut r = rec(0, 5, 10, 3, vec![1, 2]);
        r.error = Some(crate::record::RequestError {
            kind: ErrorType::HttpServerError,
            status: Some(503),
            message: String::new(),
        });
        acc.add(&r, &Slo::default());
        let mut c = rec(1, 5, 10, 3, vec![]);
        c.cancelled = true;
        acc.add(&c, &Slo::default());
        assert_eq!((acc.completed, acc.failed, acc.cancelled), (0, 1, 1));
        assert_eq!(acc.errors[&ErrorType::HttpServerError], 1);
        assert_eq!(acc.ttft.count(), 0);
        assert_eq!(acc.ttft.pct_ms(99.0), 0.0);
    }

    #[test]
    fn cpu_time_is_readable_and_grows() {
        let a = process_cpu_seconds().unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until the counter moves (bounded): it must move when we burn CPU.
        while process_cpu_seconds().unwrap() < a + 0.03 && t.elapsed().as_secs() < 20 {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
            }
        }
        assert!(process_cpu_seconds().unwrap() >= a + 0.03);
    }
}
