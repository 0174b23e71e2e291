//! Shared fixtures: a test server on its own thread and runtime, and settings.

use cohort_bench::settings::{
    DatasetSpec, Endpoint, LengthDist, Limit, Load, ProgressMode, Settings, Slo, Target,
};
use cohort_bench::testserver::{ServerConfig, TestServer};
use std::path::Path;
use std::time::Duration;

/// A [`TestServer`] on a thread of its own (its own runtime, so the harness under test
/// does not share a scheduler with it); stopped and joined on drop.
pub(crate) struct ServerThread {
    pub(crate) url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    pub(crate) fn start(cfg: ServerConfig) -> ServerThread {
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = TestServer::start(cfg, 0).await.unwrap();
                url_tx.send(server.url()).unwrap();
                let _ = stop_rx.await;
                server.stop().await;
            });
        });
        let url = url_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        ServerThread {
            url,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Settings for a closed-loop random workload against `url`, results in `out`.
pub(crate) fn settings(url: &str, out: &Path, load: Load, requests: u64) -> Settings {
    Settings {
        target: Target::parse(url, None).unwrap(),
        model: None,
        endpoint: Endpoint::Completions,
        load,
        limit: Limit {
            requests: Some(requests),
            duration: None,
        },
        warmup: 0,
        ramp_up: None,
        dataset: DatasetSpec::Random {
            input: LengthDist::Fixed(64),
            output: LengthDist::Fixed(8),
        },
        seed: 1,
        slo: Slo::default(),
        gpus: None,
        enforce_output_len: true,
        request_timeout: Duration::from_secs(20),
        output: out.to_owned(),
        request_log: true,
        progress: ProgressMode::Off,
        print_tables: false,
        threads: 0,
        drain_grace: Duration::ZERO,
        model_dir: None,
        vocab_size: None,
    }
}

pub(crate) fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub(crate) fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("`{k}` missing in {v}"))
}
