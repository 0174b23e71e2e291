//! End to end against the controlled-timing server.

use crate::fixtures::{f, read_json, settings, ServerThread};
use cohort_bench::settings::{DatasetSpec, Endpoint, LengthDist, Load, Slo};
use cohort_bench::testserver::ServerConfig;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_servers_ttft_and_itl_within_a_millisecond() {
    let server = ServerThread::start(ServerConfig {
        ttft: Duration::from_millis(50),
        itl: Duration::from_millis(10),
        ..ServerConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(
        &server.url,
        dir.path(),
        Load::Closed {
            concurrencies: vec![1, 2],
        },
        24,
    );
    s.dataset = DatasetSpec::Random {
        input: LengthDist::Fixed(100),
        output: LengthDist::Fixed(12),
    };
    s.warmup = 2;
    s.gpus = Some(2);
    s.slo = Slo {
        ttft: Some(Duration::from_millis(500)),
        ..Slo::default()
    };
    let out = cohort_bench::run(&s, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.model, "test-model", "the model comes from /v1/models");
    assert_eq!(out.points.len(), 2);
    for label in ["c1", "c2"] {
        let p = read_json(&dir.path().join(format!("{label}.json")));
        assert_eq!(p["partial"], false);
        assert_eq!(f(&p, "completed"), 24.0, "warm-up excluded");
        assert_eq!(f(&p, "failed"), 0.0);
        assert_eq!(f(&p, "total_output_tokens"), 24.0 * 12.0);
        assert_eq!(f(&p, "total_input_tokens"), 24.0 * 100.0);
        // The tolerance: the harness reports the server's timing within 1 ms.
        for (k, want) in [
            ("median_ttft_ms", 50.0),
            ("median_itl_ms", 10.0),
            ("mean_itl_ms", 10.0),
            ("median_tpot_ms", 10.0),
        ] {
            let got = f(&p, k);
            assert!(
                (got - want).abs() <= 1.0,
                "{label} {k}: {got} ms, want {want} ± 1"
            );
        }
        let e2e = f(&p, "median_e2el_ms");
        assert!((e2e - 160.0).abs() <= 2.0, "{label} e2el {e2e}");
        // Per GPU is output throughput over --gpus; goodput counts all (TTFT < 500 ms).
        assert!(
            (f(&p, "output_throughput_per_gpu") * 2.0 - f(&p, "output_throughput")).abs() < 1e-6
        );
        assert!((f(&p, "request_goodput") - f(&p, "request_throughput")).abs() < 1e-9);
        let user = f(&p, "output_throughput_per_user");
        assert!((user - 100.0).abs() < 10.0, "{label} tok/s/user {user}");
        // Every request is in the log, warm-up marked.
        let log =
            std::fs::read_to_string(dir.path().join(format!("{label}.requests.jsonl"))).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 26);
        assert_eq!(lines.iter().filter(|l| l["warmup"] == true).count(), 2);
        assert!(lines
            .iter()
            .all(|l| l["itl_us"].as_array().unwrap().len() == 11));
    }
    // Achieved concurrency is Little's law over the measured requests.
    let c2 = read_json(&dir.path().join("c2.json"));
    let log = std::fs::read_to_string(dir.path().join("c2.requests.jsonl")).unwrap();
    let (mut busy, mut first, mut last) = (0u64, u64::MAX, 0u64);
    for l in log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
    {
        if l["warmup"] == false {
            let (s, e) = (
                l["sent_us"].as_u64().unwrap(),
                l["e2el_us"].as_u64().unwrap(),
            );
            busy += e;
            first = first.min(s);
            last = last.max(s + e);
        }
    }
    let want = busy as f64 / (last - first) as f64;
    assert!((f(&c2, "achieved_concurrency") - want).abs() < 1e-9);
    assert!(want > 1.5 && want <= 2.0, "{want}");
    let csv = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.starts_with("label,load,concurrency"));
    let pareto = std::fs::read_to_string(dir.path().join("pareto.svg")).unwrap();
    assert!(
        pareto.contains("<svg")
            && pareto.lines().any(|l| l.trim() == "c2")
            && pareto.contains("per GPU")
    );
    let latency = std::fs::read_to_string(dir.path().join("latency.svg")).unwrap();
    assert!(latency.contains("Time to first token") && latency.contains("Inter-token latency"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_type_and_chat_works() {
    let server = ServerThread::start(ServerConfig {
        fail_every: Some(4),
        ..ServerConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(
        &server.url,
        dir.path(),
        Load::Closed {
            concurrencies: vec![2],
        },
        40,
    );
    s.endpoint = Endpoint::Chat;
    s.model = Some("test-model".to_owned());
    cohort_bench::run(&s, CancellationToken::new())
        .await
        .unwrap();
    let p = read_json(&dir.path().join("c2.json"));
    assert_eq!(f(&p, "completed"), 30.0);
    assert_eq!(f(&p, "failed"), 10.0);
    assert_eq!(p["errors_by_type"]["http_server_error"], 10);
    assert_eq!(p["backend"], "openai-chat");
    let log = std::fs::read_to_string(dir.path().join("c2.requests.jsonl")).unwrap();
    let failed: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("error").is_some())
        .collect();
    assert_eq!(failed.len(), 10);
    assert_eq!(failed[0]["error"]["status"], 503);
    assert!(failed[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ServiceUnavailableError"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_connect_error() {
    // Bind then drop a listener: the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(
        &format!("http://127.0.0.1:{port}"),
        dir.path(),
        Load::Closed {
            concurrencies: vec![1],
        },
        3,
    );
    s.model = Some("m".to_owned());
    cohort_bench::run(&s, CancellationToken::new())
        .await
        .unwrap();
    let p = read_json(&dir.path().join("c1.json"));
    assert_eq!(p["errors_by_type"]["connect"], 3);
    assert_eq!(f(&p, "completed"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_replays_at_its_timestamps_with_shared_prefixes() {
    let server = ServerThread::start(ServerConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    // Three requests 100 ms apart (trace time), replayed at speed 2: due at 0, 50, 100 ms.
    std::fs::write(
        &trace,
        "{\"timestamp\": 1000, \"input_length\": 600, \"output_length\": 3, \"hash_ids\": [7, 8]}\n\
         {\"timestamp\": 1100, \"input_length\": 520, \"output_length\": 2, \"hash_ids\": [7, 9]}\n\
         {\"timestamp\": 1200, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut s = settings(
        &server.url,
        &out,
        Load::Replay {
            speed: 2.0,
            max_concurrency: None,
        },
        1,
    );
    s.limit.requests = None;
    s.dataset = DatasetSpec::Mooncake {
        path: trace,
        block_size: 512,
    };
    cohort_bench::run(&s, CancellationToken::new())
        .await
        .unwrap();
    let p = read_json(&out.join("replay-x2.json"));
    assert_eq!(f(&p, "completed"), 3.0);
    assert_eq!(f(&p, "total_input_tokens"), 1130.0);
    assert_eq!(f(&p, "total_output_tokens"), 6.0);
    let log = std::fs::read_to_string(out.join("replay-x2.requests.jsonl")).unwrap();
    let mut due: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["due_us"]
                .as_u64()
                .unwrap()
        })
        .collect();
    due.sort_unstable();
    assert_eq!(due, vec![0, 50_000, 100_000]);
}
