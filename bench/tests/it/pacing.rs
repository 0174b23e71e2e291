//! Open-loop pacing: the schedule is kept without millisecond quantisation.

use crate::fixtures::{f, read_json, settings, ServerThread};
use cohort_bench::settings::{Arrival, DatasetSpec, LengthDist, Load};
use cohort_bench::testserver::ServerConfig;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constant_rate_is_delivered_without_timer_quantisation() {
    let server = ServerThread::start(ServerConfig::default());
    let dir = tempfile::tempdir().unwrap();
    // 1,500 requests/s: 667 µs apart. A millisecond timer could deliver at most 1,000/s.
    let load = Load::Open {
        rates: vec![1500.0],
        arrival: Arrival::Constant,
        max_concurrency: None,
    };
    let mut s = settings(&server.url, dir.path(), load, 1500);
    s.dataset = DatasetSpec::Random {
        input: LengthDist::Fixed(8),
        output: LengthDist::Fixed(1),
    };
    cohort_bench::run(&s, CancellationToken::new())
        .await
        .unwrap();
    let p = read_json(&dir.path().join("r1500.json"));
    assert_eq!(f(&p, "completed"), 1500.0);
    let log = std::fs::read_to_string(dir.path().join("r1500.requests.jsonl")).unwrap();
    let mut recs: Vec<(u64, u64)> = log
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["due_us"].as_u64().unwrap(),
                v["sent_us"].as_u64().unwrap(),
            )
        })
        .collect();
    recs.sort_unstable();
    // The schedule itself is exact: request i is due at i / 1500 s.
    for (i, (due, _)) in recs.iter().enumerate() {
        let want = (i as f64 * 1e6 / 1500.0) as u64;
        assert!(
            due.abs_diff(want) <= 1,
            "request {i} due at {due} µs, want {want}"
        );
    }
    // What was delivered: sends span the schedule's 1 s within 5%, so the rate holds.
    let span = (recs[1499].1 - recs[0].1) as f64 / 1e6;
    let rate = 1499.0 / span;
    assert!(
        (rate - 1500.0).abs() / 1500.0 < 0.05,
        "delivered {rate:.0} requests/s"
    );
    // The generator kept up: the median send is within a millisecond of its due time.
    let lag = f(&p, "median_lag_ms");
    assert!(lag < 1.0, "median lag {lag} ms");
    assert!(p.get("p99_lag_ms").is_some());
}
