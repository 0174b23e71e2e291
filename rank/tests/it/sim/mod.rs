//! The simulated engine over real sockets: the OpenAI API with a Rust client and with
//! the official `openai` Python package, the disaggregation handshake between two
//! instances, KV events decoded by `cohort-kv`'s vLLM decoder, and `--instances`.
//!
//! Every test starts its servers on port 0 of 127.0.0.1 and shuts them down.

mod api;
mod disagg;
mod events;
mod python;

use bytes::Bytes;
use clap::Parser;
use cohort_rank::sim::{SimArgs, SimServer};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// Starts a simulator with `cohort sim` flags (port 0 and `--speedup inf` unless given).
pub(crate) async fn start(flags: &[&str]) -> SimServer {
    let mut argv = vec!["sim", "--port", "0"];
    if !flags.contains(&"--speedup") {
        argv.extend(["--speedup", "inf"]);
    }
    argv.extend_from_slice(flags);
    let cfg = SimArgs::parse_from(argv).resolve().expect("valid flags");
    SimServer::start(cfg).await.expect("simulator starts")
}

/// One HTTP/1.1 exchange; returns the status and the whole body. Bounded to 10 s.
pub(crate) async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (StatusCode, Bytes) {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let body = body
            .map(|b| serde_json::to_vec(b).expect("json"))
            .unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let work = async move {
            let resp = sender.send_request(req).await.expect("send");
            let status = resp.status();
            (
                status,
                resp.into_body().collect().await.expect("body").to_bytes(),
            )
        };
        tokio::select! {
            r = work => r,
            _ = conn => panic!("connection closed early"),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("answer within 10 s")
}

/// POSTs JSON and parses the JSON answer.
pub(crate) async fn post(
    addr: SocketAddr,
    path: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let (status, bytes) = call(addr, "POST", path, Some(&body)).await;
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    (status, v)
}

/// The value of a metric line starting with `prefix` in `/metrics`.
pub(crate) async fn metric(addr: SocketAddr, prefix: &str) -> f64 {
    let (_, body) = call(addr, "GET", "/metrics", None).await;
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric `{prefix}` in:\n{text}"))
}
