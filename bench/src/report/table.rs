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

#[cfg(test)]
mod tests {
    //! The tables' layout, reviewed once and kept stable: a change of a column, a width
    //! or a key shows up as a snapshot diff.

    use super::*;
    use crate::metrics::Accumulator;
    use crate::record::{ErrorType, RequestError, RequestRecord};
    use crate::report::{point_json, RunInfo};
    use crate::runner::{PointKind, PointSpec};
    use crate::settings::{Arrival, Endpoint, Slo};
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object literal"),
        }
    }

    /// A closed-loop point with goodput, GPUs, errors and harness CPU.
    fn closed() -> Map<String, Value> {
        map(json!({
            "label": "c64", "partial": false,
            "completed": 4990, "failed": 10, "duration": 61.2345,
            "request_throughput": 81.4907, "request_goodput": 77.125,
            "output_throughput": 10430.8, "total_token_throughput": 93876.44,
            "output_throughput_per_user": 41.27, "output_throughput_per_gpu": 1303.85,
            "achieved_concurrency": 63.71,
            "mean_ttft_ms": 412.5, "median_ttft_ms": 388.0, "p90_ttft_ms": 601.25,
            "p95_ttft_ms": 702.0, "p99_ttft_ms": 955.5, "p99.9_ttft_ms": 1210.0,
            "mean_tpot_ms": 24.2, "median_tpot_ms": 23.9, "p90_tpot_ms": 27.0,
            "p95_tpot_ms": 28.4, "p99_tpot_ms": 31.75, "p99.9_tpot_ms": 40.0,
            "mean_itl_ms": 24.3, "median_itl_ms": 22.1, "p90_itl_ms": 30.0,
            "p95_itl_ms": 35.5, "p99_itl_ms": 61.0, "p99.9_itl_ms": 120.125,
            "mean_e2el_ms": 3490.0, "median_e2el_ms": 3420.5, "p90_e2el_ms": 4010.0,
            "p95_e2el_ms": 4200.0, "p99_e2el_ms": 4800.0, "p99.9_e2el_ms": 5100.0,
            "errors_by_type": {"http_server_error": 7, "timeout": 3},
            "harness_cpu_per_request_us": 18.44,
        }))
    }

    /// An open-loop point stopped early: lag rows, no SLO, no GPUs, a missing metric.
    fn open_partial() -> Map<String, Value> {
        map(json!({
            "label": "r50", "partial": true,
            "completed": 1200, "failed": 0, "duration": 24.0,
            "request_throughput": 50.0, "request_goodput": null,
            "output_throughput": 6400.0, "total_token_throughput": 57600.0,
            "output_throughput_per_user": 55.5, "output_throughput_per_gpu": null,
            "achieved_concurrency": 9.5,
            "mean_ttft_ms": 80.0, "median_ttft_ms": 75.0, "p90_ttft_ms": 110.0,
            "p95_ttft_ms": 120.0, "p99_ttft_ms": 150.0, "p99.9_ttft_ms": 190.0,
            "mean_itl_ms": 18.0, "median_itl_ms": 17.5, "p90_itl_ms": 21.0,
            "p95_itl_ms": 22.0, "p99_itl_ms": 25.0, "p99.9_itl_ms": 33.0,
            "mean_e2el_ms": 2400.0, "median_e2el_ms": 2350.0, "p90_e2el_ms": 2700.0,
            "p95_e2el_ms": 2800.0, "p99_e2el_ms": 3000.0, "p99.9_e2el_ms": 3300.0,
            "mean_lag_ms": 0.081, "median_lag_ms": 0.062, "p90_lag_ms": 0.15,
            "p95_lag_ms": 0.21, "p99_lag_ms": 0.584, "p99.9_lag_ms": 1.19,
            "errors_by_type": {},
        }))
    }

    #[test]
    fn point_table_of_a_closed_loop_point() {
        insta::assert_snapshot!(point_table(&closed()));
    }

    #[test]
    fn point_table_of_a_partial_open_loop_point() {
        insta::assert_snapshot!(point_table(&open_partial()));
    }

    #[test]
    fn summary_table_of_a_sweep() {
        let mut unlabelled = open_partial();
        unlabelled.remove("label");
        insta::assert_snapshot!(summary_table(&[closed(), open_partial(), unlabelled]));
    }

    /// The table of a point JSON as the reporter builds it from records: every key the
    /// table reads is one `point_json` writes (a renamed key would show as `-`).
    #[test]
    fn point_table_reads_the_keys_point_json_writes() {
        let slo = Slo {
            ttft: Some(std::time::Duration::from_millis(50)),
            ..Slo::default()
        };
        let mut acc = Accumulator::default();
        for i in 0..10u64 {
            acc.add(
                &RequestRecord {
                    index: i,
                    warmup: false,
                    due_us: Some(i * 10_000),
                    sent_us: i * 10_000 + 100 + i * 10,
                    ttft_us: Some(20_000 + i * 4_000),
                    e2el_us: 20_000 + i * 4_000 + 3 * 5_000,
                    itl_us: vec![5_000; 3],
                    input_tokens: 100,
                    output_tokens: 4,
                    cached_tokens: 0,
                    usage_reported: true,
                    error: (i == 9).then(|| RequestError {
                        kind: ErrorType::StreamCut,
                        status: None,
                        message: "cut".to_owned(),
                    }),
                    cancelled: false,
                },
                &slo,
            );
        }
        let info = RunInfo {
            model: "m".to_owned(),
            endpoint: Endpoint::Completions,
            url: "http://127.0.0.1:8000".to_owned(),
            dataset: "random".to_owned(),
            gpus: Some(2),
            warmup: 0,
            seed: 0,
            slo: json!({"ttft_ms": 50.0, "tpot_ms": null, "e2el_ms": null}),
        };
        let spec = PointSpec {
            label: "r100".to_owned(),
            kind: PointKind::Rate {
                rate: 100.0,
                arrival: Arrival::Constant,
                max_concurrency: None,
            },
        };
        let m = point_json(&info, &spec, &acc, Some(0.0025), false);
        insta::assert_snapshot!(point_table(&m));
    }
}
