//! Every metric the simulator exposes, declared here and rendered as Prometheus text.
//!
//! Engine metrics carry vLLM's names and labels (`model_name`, `engine`), so dashboards
//! and the router read a simulator as they read vLLM. What vLLM has no name for (the
//! simulated KV transfers, HTTP errors by type) follows cohort's
//! `cohort_<layer>_<thing>_{total,seconds}` scheme. Times are simulated seconds (wall
//! seconds × `--speedup`), i.e. what the real engine would report.

use cohort_router::openai::{ErrorKind, FinishReason};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// vLLM's buckets for time to first token, seconds.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's buckets for inter-token latency, seconds.
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's buckets for request latency, seconds.
const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// Buckets for simulated KV transfers, seconds.
const XFER_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A Prometheus histogram with fixed buckets.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub(crate) fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
    }
}

/// Metrics the engine actor owns and updates.
#[derive(Debug, Clone)]
pub(crate) struct EngineMetrics {
    /// Time to first token.
    pub ttft: Histogram,
    /// Time between consecutive output tokens.
    pub itl: Histogram,
    /// Arrival to last token.
    pub e2e: Histogram,
    /// Prompt tokens of finished requests.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub generation_tokens: u64,
    /// Finished requests by reason (stop, length, abort).
    pub finished: [u64; 3],
    /// KV blocks received from prefill instances.
    pub kv_transfer_blocks: u64,
    /// KV bytes received (per GPU).
    pub kv_transfer_bytes: u64,
    /// Simulated transfer times.
    pub kv_transfer_time: Histogram,
    /// Pulls that failed (unknown or expired blocks, unreachable instance).
    pub kv_transfer_failures: u64,
    /// Held prefill blocks pulled by a decode instance.
    pub kv_pulls_served: u64,
    /// Held prefill blocks freed by the timeout.
    pub kv_holds_expired: u64,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(E2E_BUCKETS),
            prompt_tokens: 0,
            generation_tokens: 0,
            finished: [0; 3],
            kv_transfer_blocks: 0,
            kv_transfer_bytes: 0,
            kv_transfer_time: Histogram::new(XFER_BUCKETS),
            kv_transfer_failures: 0,
            kv_pulls_served: 0,
            kv_holds_expired: 0,
        }
    }
}

impl EngineMetrics {
    /// Counts a finished request.
    pub(crate) fn finish(&mut self, reason: FinishReason) {
        let i = match reason {
            FinishReason::Stop => 0,
            FinishReason::Length => 1,
            FinishReason::Abort => 2,
        };
        self.finished[i] += 1;
    }
}

/// Gauges read from the scheduler when rendering.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Gauges {
    /// Requests running.
    pub running: usize,
    /// Requests waiting.
    pub waiting: usize,
    /// Fraction of KV blocks in use.
    pub kv_usage: f64,
    /// Prefix-cache tokens queried.
    pub prefix_queries: u64,
    /// Prefix-cache tokens hit.
    pub prefix_hits: u64,
    /// Preemptions.
    pub preemptions: u64,
    /// KV blocks in the cache.
    pub num_blocks: u32,
    /// Prefill blocks held for remote decode now.
    pub held_blocks: u64,
}

/// Counters the HTTP handlers update (shared by every connection).
#[derive(Debug, Default)]
pub(crate) struct HttpStats {
    errors: [AtomicU64; 5],
}

impl HttpStats {
    /// Counts an error response.
    pub(crate) fn error(&self, kind: ErrorKind) {
        let i = ErrorKind::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Error responses of `kind` so far.
    pub(crate) fn errors(&self, kind: ErrorKind) -> u64 {
        let i = ErrorKind::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        self.errors[i].load(Ordering::Relaxed)
    }
}

fn gauge(out: &mut String, name: &str, help: &str, labels: &str, v: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {v}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, labels: &str, v: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name}_total {help}\n# TYPE {name} counter\n{name}_total{{{labels}}} {v}"
    );
}

/// Renders every metric of one engine as Prometheus text.
pub(crate) fn render(
    m: &EngineMetrics,
    g: &Gauges,
    http: &HttpStats,
    model: &str,
    engine: u32,
) -> String {
    let mut o = String::with_capacity(8192);
    let l = format!("engine=\"{engine}\",model_name=\"{model}\"");
    gauge(
        &mut o,
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        &l,
        g.running,
    );
    gauge(
        &mut o,
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        &l,
        g.waiting,
    );
    gauge(
        &mut o,
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        &l,
        g.kv_usage,
    );
    gauge(
        &mut o,
        "vllm:gpu_cache_usage_perc",
        "GPU KV-cache usage (older name). 1 means 100 percent usage.",
        &l,
        g.kv_usage,
    );
    gauge(
        &mut o,
        "vllm:num_gpu_blocks",
        "KV blocks in the cache.",
        &l,
        g.num_blocks,
    );
    counter(
        &mut o,
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        &l,
        g.prefix_queries,
    );
    counter(
        &mut o,
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        &l,
        g.prefix_hits,
    );
    counter(
        &mut o,
        "vllm:num_preemptions",
        "Cumulative number of preemption from the engine.",
        &l,
        g.preemptions,
    );
    counter(
        &mut o,
        "vllm:prompt_tokens",
        "Number of prefill tokens processed.",
        &l,
        m.prompt_tokens,
    );
    counter(
        &mut o,
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        &l,
        m.generation_tokens,
    );
    let _ = writeln!(o, "# HELP vllm:request_success_total Count of successfully processed requests.\n# TYPE vllm:request_success counter");
    for (i, r) in [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::Abort,
    ]
    .iter()
    .enumerate()
    {
        let _ = writeln!(
            o,
            "vllm:request_success_total{{{l},finished_reason=\"{}\"}} {}",
            r.as_str(),
            m.finished[i]
        );
    }
    m.ttft.render(
        &mut o,
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &l,
    );
    m.itl.render(
        &mut o,
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        &l,
    );
    m.itl.render(
        &mut o,
        "vllm:time_per_output_token_seconds",
        "Histogram of time per output token in seconds (older name).",
        &l,
    );
    m.e2e.render(
        &mut o,
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        &l,
    );
    counter(
        &mut o,
        "cohort_sim_kv_transfer_blocks",
        "KV blocks pulled from prefill instances.",
        &l,
        m.kv_transfer_blocks,
    );
    counter(
        &mut o,
        "cohort_sim_kv_transfer_bytes",
        "KV bytes pulled from prefill instances, per GPU.",
        &l,
        m.kv_transfer_bytes,
    );
    counter(
        &mut o,
        "cohort_sim_kv_transfer_failures",
        "Pulls of remote KV that failed.",
        &l,
        m.kv_transfer_failures,
    );
    m.kv_transfer_time.render(
        &mut o,
        "cohort_sim_kv_transfer_seconds",
        "Simulated KV transfer time.",
        &l,
    );
    counter(
        &mut o,
        "cohort_sim_kv_pulls_served",
        "Held prefill KV pulled by decode instances.",
        &l,
        m.kv_pulls_served,
    );
    counter(
        &mut o,
        "cohort_sim_kv_holds_expired",
        "Held prefill KV freed by the timeout.",
        &l,
        m.kv_holds_expired,
    );
    gauge(
        &mut o,
        "cohort_sim_kv_held_blocks",
        "KV blocks held for remote decode.",
        &l,
        g.held_blocks,
    );
    let _ = writeln!(o, "# HELP cohort_sim_http_errors_total HTTP error responses by type.\n# TYPE cohort_sim_http_errors counter");
    for k in ErrorKind::ALL {
        let _ = writeln!(
            o,
            "cohort_sim_http_errors_total{{{l},type=\"{}\"}} {}",
            k.type_str(),
            http.errors(k)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut m = EngineMetrics::default();
        m.ttft.observe(0.003);
        m.ttft.observe(0.003);
        m.ttft.observe(5000.0);
        let text = render(&m, &Gauges::default(), &HttpStats::default(), "m", 0);
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",model_name=\"m\",le=\"0.001\"} 0"
        ));
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",model_name=\"m\",le=\"0.005\"} 2"
        ));
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",model_name=\"m\",le=\"2560\"} 2"
        ));
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",model_name=\"m\",le=\"+Inf\"} 3"
        ));
        assert!(text
            .contains("vllm:time_to_first_token_seconds_count{engine=\"0\",model_name=\"m\"} 3"));
    }
}
