//! Every Prometheus metric of the frontend, declared here and nowhere else.
//!
//! Names follow `cohort_router_<thing>_{total,seconds}` (gauges carry no suffix); label
//! values come from fixed enums ([`ErrorType`], [`Api`], [`Disagg`], [`Migration`]) or
//! from the registry's own worker ids, never from request content. Rendering is
//! hand-written text exposition: a scrape is rare, an increment is an atomic add.

use crate::error::ErrorType;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Which API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

impl Api {
    fn idx(self) -> usize {
        self as usize
    }
    fn as_str(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Completion => "completion",
        }
    }
}

/// How a request was served with respect to disaggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disagg {
    /// One aggregated worker did both.
    Aggregated,
    /// Prefill on a prefill worker, decode on a decode worker.
    Remote,
    /// Prefill skipped (short uncached part, or prefill failed): the decode worker did both.
    Local,
}

impl Disagg {
    const ALL: [Disagg; 3] = [Disagg::Aggregated, Disagg::Remote, Disagg::Local];
    fn as_str(self) -> &'static str {
        match self {
            Disagg::Aggregated => "aggregated",
            Disagg::Remote => "remote",
            Disagg::Local => "local",
        }
    }
}

/// What happened when a stream broke after its first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migration {
    /// Continued on another worker.
    Resumed,
    /// The limit (`--max-migrations`) or the candidates ran out: the client got an error.
    Exhausted,
}

impl Migration {
    const ALL: [Migration; 2] = [Migration::Resumed, Migration::Exhausted];
    fn as_str(self) -> &'static str {
        match self {
            Migration::Resumed => "resumed",
            Migration::Exhausted => "exhausted",
        }
    }
}

/// Upper bounds of the latency histograms, seconds.
const BOUNDS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|&b| s <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in BOUNDS.iter().zip(&self.buckets) {
            cum += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The frontend's counters and histograms (per-worker gauges are rendered by the
/// registry, from its workers' own atomics, with [`gauge_header`] and [`sample`]).
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; 2]; 2],
    errors: [AtomicU64; ErrorType::ALL.len()],
    /// Client arrival to the first token sent.
    pub ttft: Histogram,
    /// Between two tokens sent to a client.
    pub itl: Histogram,
    /// Time waiting for an admission slot.
    pub queue: Histogram,
    /// Body read to upstream request sent: parsing, tokenising, routing.
    pub routing: Histogram,
    /// Whole requests.
    pub e2e: Histogram,
    output_tokens: AtomicU64,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    kv_query_blocks: AtomicU64,
    kv_hit_blocks: AtomicU64,
    retries: AtomicU64,
    migrations: [AtomicU64; 2],
    disagg: [AtomicU64; 3],
    journal: std::sync::Mutex<Vec<MigrationRecord>>,
}

/// One stream moved (or failing to move) to another worker: which request, from where,
/// after how many tokens. The launcher puts these in a job's results.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationRecord {
    /// The response id the client saw (`cmpl-cohort-…`, `chatcmpl-cohort-…`).
    pub request: String,
    /// The worker whose stream broke.
    pub from: String,
    /// Tokens generated before it broke.
    pub tokens: u32,
    /// `resumed` or `exhausted`.
    pub outcome: &'static str,
}

/// Migrations kept in [`Metrics::migration_journal`]; later ones are only counted.
pub const JOURNAL_CAP: usize = 10_000;

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, api: Api, ok: bool) {
        self.requests[api.idx()][usize::from(!ok)].fetch_add(1, Relaxed);
    }

    /// Requests of `api` counted so far (ok and errors).
    pub fn requests(&self, api: Api) -> u64 {
        self.requests[api.idx()]
            .iter()
            .map(|c| c.load(Relaxed))
            .sum()
    }

    /// Counts an error answer.
    pub fn error(&self, kind: ErrorType) {
        if let Some(i) = ErrorType::ALL.iter().position(|&k| k == kind) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Errors of `kind` so far.
    pub fn errors(&self, kind: ErrorType) -> u64 {
        ErrorType::ALL
            .iter()
            .position(|&k| k == kind)
            .map_or(0, |i| self.errors[i].load(Relaxed))
    }

    /// Counts tokens sent to clients.
    pub fn output_tokens(&self, n: u64) {
        self.output_tokens.fetch_add(n, Relaxed);
    }

    /// Counts a finished request's prompt and the part the engine served from its cache.
    pub fn prompt(&self, prompt: u64, cached: u64) {
        self.prompt_tokens.fetch_add(prompt, Relaxed);
        self.cached_tokens.fetch_add(cached, Relaxed);
    }

    /// Counts a KV-aware decision: blocks of the prompt, and those the chosen worker holds.
    pub fn kv_decision(&self, query_blocks: u64, hit_blocks: u64) {
        self.kv_query_blocks.fetch_add(query_blocks, Relaxed);
        self.kv_hit_blocks.fetch_add(hit_blocks, Relaxed);
    }

    /// Counts a retry before the first token.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// Counts a migration attempt's outcome.
    pub fn migration(&self, m: Migration) {
        self.migrations[m as usize].fetch_add(1, Relaxed);
    }

    /// Records a migration with its request (bounded by [`JOURNAL_CAP`]).
    pub fn journal_migration(&self, record: MigrationRecord) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if j.len() < JOURNAL_CAP {
            j.push(record);
        }
    }

    /// The migrations recorded so far, in order.
    pub fn migration_journal(&self) -> Vec<MigrationRecord> {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Migrations with outcome `m` so far.
    pub fn migrations(&self, m: Migration) -> u64 {
        self.migrations[m as usize].load(Relaxed)
    }

    /// Counts how a request was disaggregated.
    pub fn disagg(&self, d: Disagg) {
        self.disagg[d as usize].fetch_add(1, Relaxed);
    }

    /// Requests served with disaggregation path `d` so far.
    pub fn disaggs(&self, d: Disagg) -> u64 {
        self.disagg[d as usize].load(Relaxed)
    }

    /// Appends the exposition of every counter and histogram.
    pub fn render(&self, out: &mut String) {
        let name = "cohort_router_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests answered, by API and outcome.\n# TYPE {name} counter"
        );
        for api in [Api::Chat, Api::Completion] {
            for (i, outcome) in ["ok", "error"].iter().enumerate() {
                let v = self.requests[api.idx()][i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "{name}{{api=\"{}\",outcome=\"{outcome}\"}} {v}",
                    api.as_str()
                );
            }
        }
        let name = "cohort_router_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Error answers, by the error body's type.\n# TYPE {name} counter"
        );
        for (k, c) in ErrorType::ALL.iter().zip(&self.errors) {
            let _ = writeln!(out, "{name}{{type=\"{}\"}} {}", k.as_str(), c.load(Relaxed));
        }
        self.ttft.render(
            out,
            "cohort_router_ttft_seconds",
            "Time to first token sent.",
        );
        self.itl.render(
            out,
            "cohort_router_inter_token_seconds",
            "Time between two tokens sent.",
        );
        self.queue.render(
            out,
            "cohort_router_queue_seconds",
            "Time waiting for an admission slot.",
        );
        self.routing.render(
            out,
            "cohort_router_routing_seconds",
            "Frontend overhead before the upstream request: parse, tokenise, route.",
        );
        self.e2e
            .render(out, "cohort_router_request_seconds", "Whole requests.");
        for (name, help, c) in [
            (
                "cohort_router_output_tokens_total",
                "Tokens sent to clients.",
                &self.output_tokens,
            ),
            (
                "cohort_router_prompt_tokens_total",
                "Prompt tokens of finished requests.",
                &self.prompt_tokens,
            ),
            (
                "cohort_router_cached_tokens_total",
                "Prompt tokens the engines served from their prefix cache.",
                &self.cached_tokens,
            ),
            (
                "cohort_router_kv_query_blocks_total",
                "Prompt blocks of KV-aware decisions.",
                &self.kv_query_blocks,
            ),
            (
                "cohort_router_kv_hit_blocks_total",
                "Prompt blocks the chosen worker held, as the index predicted.",
                &self.kv_hit_blocks,
            ),
            (
                "cohort_router_retries_total",
                "Upstream attempts retried before the first token.",
                &self.retries,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Relaxed)
            );
        }
        let name = "cohort_router_migrations_total";
        let _ = writeln!(
            out,
            "# HELP {name} Streams broken after their first token, by outcome.\n# TYPE {name} counter"
        );
        for m in Migration::ALL {
            let _ = writeln!(
                out,
                "{name}{{outcome=\"{}\"}} {}",
                m.as_str(),
                self.migrations(m)
            );
        }
        let name = "cohort_router_disagg_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests by prefill path.\n# TYPE {name} counter"
        );
        for d in Disagg::ALL {
            let _ = writeln!(out, "{name}{{path=\"{}\"}} {}", d.as_str(), self.disaggs(d));
        }
    }
}

/// Writes a metric's `HELP` and `TYPE` lines.
pub fn gauge_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes one sample with a `worker` label.
pub fn sample(out: &mut String, name: &str, worker: u64, v: impl std::fmt::Display) {
    let _ = writeln!(out, "{name}{{worker=\"{worker}\"}} {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let mut s = String::new();
        h.render(&mut s, "x_seconds", "x");
        assert!(s.contains("x_seconds_bucket{le=\"0.0001\"} 1\n"), "{s}");
        assert!(s.contains("x_seconds_bucket{le=\"0.005\"} 2\n"), "{s}");
        assert!(s.contains("x_seconds_bucket{le=\"60\"} 2\n"), "{s}");
        assert!(s.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_seconds_count 3\n"), "{s}");
    }

    #[test]
    fn errors_are_labelled_by_type() {
        let m = Metrics::default();
        m.error(ErrorType::QueueFull);
        m.error(ErrorType::QueueFull);
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("cohort_router_errors_total{type=\"RateLimitError\"} 2\n"));
        assert!(s.contains("cohort_router_errors_total{type=\"BadRequestError\"} 0\n"));
    }
}
