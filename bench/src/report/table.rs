//! Console tables (stdout): one per point and a summary of the sweep.

use serde_json::{Map, Value};
use std::fmt::Write;

fn num(m: &Map<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

fn f(m: &Map<String, Value>, k: &str, prec: usize) -> String {
    num(m, k).map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
}

/// The table of one point.
pub fn point_table(m: &Map<String, Value>) -> String {
    let mut s = String::new();
    let label = m.get("label").and_then(Value::as_str).unwrap_or("?");
    let partial = if m.get("partial").and_then(Value::as_bool) == Some(true) {
        " (PARTIAL: stopped before its limit)"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "== {label}: {} completed, {} failed in {} s{partial}",
        f(m, "completed", 0),
        f(m, "failed", 0),
        f(m, "duration", 2)
    );
    let _ = writeln!(
        s,
        "   throughput  {} req/s   {} output tok/s   {} total tok/s   goodput {}",
        f(m, "request_throughput", 2),
        f(m, "output_throughput", 1),
        f(m, "total_token_throughput", 1),
        num(m, "request_goodput")
            .map_or_else(|| "- (no --slo)".to_owned(), |g| format!("{g:.2} req/s")),
    );
    let _ = writeln!(
        s,
        "   per user    {} tok/s   per GPU {}   achieved concurrency {}",
        f(m, "output_throughput_per_user", 1),
        num(m, "output_throughput_per_gpu")
            .map_or_else(|| "- (no --gpus)".to_owned(), |g| format!("{g:.1} tok/s")),
        f(m, "achieved_concurrency", 2),
    );
    let _ = writeln!(
        s,
        "   {:<9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}   (ms)",
        "", "mean", "p50", "p90", "p95", "p99", "p99.9"
    );
    for (name, key) in [
        ("TTFT", "ttft"),
        ("TPOT", "tpot"),
        ("ITL", "itl"),
        ("E2EL", "e2el"),
        ("lag", "lag"),
    ] {
        if num(m, &format!("mean_{key}_ms")).is_none() {
            continue;
        }
        let _ = write!(s, "   {name:<9}{:>10}", f(m, &format!("mean_{key}_ms"), 2));
        for p in ["median", "p90", "p95", "p99", "p99.9"] {
            let _ = write!(s, "{:>10}", f(m, &format!("{p}_{key}_ms"), 2));
        }
        s.push('\n');
    }
    if let Some(Value::Object(e)) = m.get("errors_by_type") {
        if !e.is_empty() {
            let list: Vec<String> = e.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(s, "   errors      {}", list.join(", "));
        }
    }
    if let Some(c) = num(m, "harness_cpu_per_request_us") {
        let _ = writeln!(s, "   harness     {c:.1} µs CPU per request");
    }
    s
}

/// One row per point.
pub fn summary_table(points: &[Map<String, Value>]) -> String {
    let cols: [(&str, &str, usize); 11] = [
        ("done", "completed", 0),
        ("fail", "failed", 0),
        ("req/s", "request_throughput", 2),
        ("out tok/s", "output_throughput", 1),
        ("tok/s/user", "output_throughput_per_user", 1),
        ("tok/s/GPU", "output_throughput_per_gpu", 1),
        ("TTFT p50", "median_ttft_ms", 2),
        ("TTFT p99", "p99_ttft_ms", 2),
        ("ITL p50", "median_itl_ms", 2),
        ("ITL p99", "p99_itl_ms", 2),
        ("lag p99", "p99_lag_ms", 3),
    ];
    let mut s = String::from("== summary (latencies in ms)\n");
    let _ = write!(s, "{:<14}", "point");
    for (h, _, _) in cols {
        let _ = write!(s, "{h:>11}");
    }
    s.push('\n');
    for m in points {
        let label = m.get("label").and_then(Value::as_str).unwrap_or("?");
        let _ = write!(s, "{label:<14}");
        for (_, k, p) in cols {
            let _ = write!(s, "{:>11}", f(m, k, p));
        }
        s.push('\n');
    }
    s
}
