//! The health checker: every `--health-interval-s`, each worker's `/health` (up or
//! down) and `/metrics` (requests running and waiting, KV blocks in use — the engine's
//! side of the load accounting). One task, owned by the frontend; the probes of one
//! round run concurrently and are all awaited before the next.

use crate::registry::{Probe, Worker};
use crate::settings::LogLevel;
use crate::state::Shared;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

type ProbeClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<bytes::Bytes>,
>;

/// Runs until the frontend is cancelled.
pub(crate) async fn run(sh: Arc<Shared>, interval: Duration) {
    let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(sh.settings.connect_timeout));
    let client: ProbeClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(conn);
    let timeout = interval.min(Duration::from_secs(5));
    loop {
        let mut round = JoinSet::new();
        for w in sh.registry.snapshot().iter() {
            let w = w.clone();
            let client = client.clone();
            let sh = sh.clone();
            round.spawn(async move { probe(&sh, &client, &w, timeout).await });
        }
        tokio::select! {
            _ = async { while round.join_next().await.is_some() {} } => {}
            _ = sh.cancel.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = sh.cancel.cancelled() => return,
        }
    }
}

async fn get(
    client: &ProbeClient,
    w: &Worker,
    path: &str,
    timeout: Duration,
) -> Option<bytes::Bytes> {
    let req = Request::get(w.uri(path)).body(Empty::new()).ok()?;
    let fut = async {
        let r = client.request(req).await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.into_body().collect().await.ok().map(|b| b.to_bytes())
    };
    tokio::time::timeout(timeout, fut).await.ok().flatten()
}

async fn probe(sh: &Shared, client: &ProbeClient, w: &Worker, timeout: Duration) {
    let up = get(client, w, "/health", timeout).await.is_some();
    let before = w.probe();
    w.set_probe(if up { Probe::Up } else { Probe::Down });
    if before != w.probe() && !(before == Probe::Unknown && up) {
        sh.log.write(
            LogLevel::Info,
            format_args!(
                "worker {} (`{}`) is {}",
                w.id.0,
                w.spec.url,
                if up { "up" } else { "down" }
            ),
        );
    }
    if !up {
        return;
    }
    if let Some(text) = get(client, w, "/metrics", timeout).await {
        if let Some((requests, blocks)) = engine_load(&String::from_utf8_lossy(&text)) {
            w.set_engine_load(requests, blocks);
        }
    }
}

/// (running + waiting requests, KV blocks in use) from vLLM's metric names; `None` when
/// the engine exports neither.
pub(crate) fn engine_load(text: &str) -> Option<(u64, u64)> {
    let mut running = None;
    let mut waiting = None;
    let mut usage = None;
    let mut blocks = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut parts = line.rsplitn(2, ' ');
        let (Some(v), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(v) = v.parse::<f64>() else { continue };
        let name = name.split('{').next().unwrap_or(name);
        let slot = match name {
            "vllm:num_requests_running" => &mut running,
            "vllm:num_requests_waiting" => &mut waiting,
            "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" => &mut usage,
            "vllm:num_gpu_blocks" => &mut blocks,
            _ => continue,
        };
        // Data-parallel ranks add up; the two usage names are one figure (take the max).
        let is_usage = name.ends_with("_usage_perc");
        *slot = Some(match *slot {
            Some(old) if is_usage => f64::max(old, v),
            Some(old) => old + v,
            None => v,
        });
    }
    if running.is_none() && waiting.is_none() {
        return None;
    }
    let requests = (running.unwrap_or(0.0) + waiting.unwrap_or(0.0)) as u64;
    let used = match (usage, blocks) {
        (Some(u), Some(b)) => (u.min(1.0) * b) as u64,
        _ => 0,
    };
    Some((requests, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vllm_load_metrics() {
        let text = "# HELP x\nvllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3\n\
                    vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 2\n\
                    vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25\n\
                    vllm:gpu_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25\n\
                    vllm:num_gpu_blocks{engine=\"0\",model_name=\"m\"} 1000\n";
        // The two usage names are the same figure, counted once.
        assert_eq!(engine_load(text), Some((5, 250)));
        assert_eq!(engine_load("other_metric 1\n"), None);
    }
}
