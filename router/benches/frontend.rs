//! The frontend's cost: CPU time per proxied request streaming 16 tokens, and the rate
//! it sustains in front of a fast engine — next to the same figures for a bare hyper
//! proxy that forwards the same stream chunk by chunk (the floor).
//!
//! `cargo bench -p cohort-router --bench frontend [-- --secs S --concurrency C]`
//!
//! The binary runs itself three times as child processes: a stand-in engine (answers
//! every `/v1/completions` with 16 SSE chunks plus usage and `[DONE]`, one frame each,
//! at once), then each proxy in turn (one runtime thread each), while this process
//! drives a closed loop of streaming clients. CPU time is the proxy process's
//! user + system time (`/proc/PID/stat`, 100 ticks per second) over the measured window,
//! divided by the requests completed in it.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKENS: usize = 16;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    match arg("--role").as_deref() {
        Some("engine") => engine(),
        Some("bare") => bare(arg("--upstream").expect("--upstream")),
        Some("frontend") => frontend(arg("--upstream").expect("--upstream")),
        _ => driver(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// Serves `svc` on 127.0.0.1:0 (TCP_NODELAY); prints the address on stdout.
async fn serve<F, Fut>(svc: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<BoxBody>, std::convert::Infallible>>
        + Send
        + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", l.local_addr().unwrap());
    loop {
        let (s, _) = l.accept().await.unwrap();
        let _ = s.set_nodelay(true);
        let svc = svc.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), service_fn(svc))
                .await;
        });
    }
}

fn engine() {
    rt().block_on(serve(|req: Request<Incoming>| async move {
        let path = req.uri().path().to_owned();
        let _ = req.into_body().collect().await;
        if path != "/v1/completions" {
            let b = r#"{"object":"list","data":[{"id":"bench","object":"model","created":0,"owned_by":"x"}]}"#;
            return Ok(Response::new(Full::new(Bytes::from(b)).map_err(|e| match e {}).boxed()));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(TOKENS + 2);
        for i in 0..TOKENS {
            let finish = if i + 1 == TOKENS { "\"length\"" } else { "null" };
            let ev = format!(
                "data: {{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":0,\"model\":\"bench\",\"choices\":[{{\"index\":0,\"text\":\" tok{i}\",\"logprobs\":null,\"finish_reason\":{finish},\"stop_reason\":null,\"token_ids\":[{i}]}}]}}\n\n"
            );
            let _ = tx.try_send(Bytes::from(ev));
        }
        let tail = "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":0,\"model\":\"bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"total_tokens\":66,\"completion_tokens\":16}}\n\ndata: [DONE]\n\n";
        let _ = tx.try_send(Bytes::from(tail));
        drop(tx);
        let mut r = Response::new(BodyExt::boxed(ChanBody(rx)));
        r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
        Ok(r)
    }));
}

/// Frames from a channel, as a body.
struct ChanBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChanBody {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// The floor: forwards the request as it is and the response frame by frame.
fn bare(upstream: String) {
    rt().block_on(async move {
        let mut c = hyper_util::client::legacy::connect::HttpConnector::new();
        c.set_nodelay(true);
        let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build(c);
        let upstream: Arc<str> = upstream.into();
        serve(move |req: Request<Incoming>| {
            let client = client.clone();
            let upstream = upstream.clone();
            async move {
                let (mut parts, body) = req.into_parts();
                parts.uri = format!("http://{upstream}{}", parts.uri.path())
                    .parse()
                    .unwrap();
                let resp = client
                    .request(Request::from_parts(parts, body))
                    .await
                    .unwrap();
                let (parts, body) = resp.into_parts();
                Ok(Response::from_parts(parts, body.boxed()))
            }
        })
        .await
    });
}

fn frontend(upstream: String) {
    rt().block_on(async move {
        use clap::Parser;
        let url = format!("http://{upstream}");
        let args = cohort_router::ServeArgs::parse_from([
            "serve",
            "--port",
            "0",
            "--worker",
            &url,
            "--model",
            "bench",
            "--health-interval-s",
            "0",
            "--log-level",
            "error",
        ]);
        let fe = cohort_router::Frontend::start(args.resolve(|_| None).unwrap())
            .await
            .unwrap();
        println!("{}", fe.addr());
        std::future::pending::<()>().await;
    });
}

struct Kid(Child, String);

impl Kid {
    fn start(args: &[&str]) -> Kid {
        let exe = std::env::current_exe().unwrap();
        let mut c = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(c.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        Kid(c, line.trim().to_owned())
    }

    /// User + system CPU seconds so far.
    fn cpu(&self) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap();
        let after = &s[s.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        // Fields 14 and 15 (utime, stime), counted from after the command name.
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn load(addr: &str, secs: f64, concurrency: usize, proxy: &Kid) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = hyper_util::client::legacy::connect::HttpConnector::new();
        c.set_nodelay(true);
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(c);
        let prompt = "the rack holds eight nodes of four GPUs each; ".repeat(4);
        let body = Bytes::from(format!(
            r#"{{"model":"bench","prompt":"{prompt}","max_tokens":{TOKENS},"stream":true}}"#
        ));
        let url: hyper::Uri = format!("http://{addr}/v1/completions").parse().unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (client, body, url, done, stop) = (
                client.clone(),
                body.clone(),
                url.clone(),
                done.clone(),
                stop.clone(),
            );
            tasks.spawn(async move {
                while !stop.load(Relaxed) {
                    let req = Request::post(url.clone())
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))
                        .unwrap();
                    let r = client.request(req).await.unwrap();
                    assert!(r.status().is_success());
                    let b = r.into_body().collect().await.unwrap().to_bytes();
                    assert!(b.ends_with(b"data: [DONE]\n\n"));
                    done.fetch_add(1, Relaxed);
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
        let (n0, c0, t0) = (done.load(Relaxed), proxy.cpu(), Instant::now());
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let (n1, c1, t1) = (done.load(Relaxed), proxy.cpu(), Instant::now());
        stop.store(true, Relaxed);
        while tasks.join_next().await.is_some() {}
        let n = (n1 - n0) as f64;
        let rate = n / (t1 - t0).as_secs_f64();
        let cpu_us = (c1 - c0) / n * 1e6;
        (rate, cpu_us)
    })
}

fn driver() {
    let secs: f64 = arg("--secs").map_or(5.0, |s| s.parse().unwrap());
    let conc: usize = arg("--concurrency").map_or(16, |s| s.parse().unwrap());
    let engine = Kid::start(&["--role", "engine"]);
    println!("16-token streams, {conc} concurrent clients, {secs} s per proxy, one runtime thread per process");
    println!(
        "{:<28} {:>12} {:>18}",
        "proxy", "requests/s", "CPU µs/request"
    );
    let mut rows = Vec::new();
    for role in ["bare", "frontend"] {
        let p = Kid::start(&["--role", role, "--upstream", &engine.1]);
        let (rate, cpu) = load(&p.1, secs, conc, &p);
        let name = if role == "bare" {
            "bare hyper proxy (floor)"
        } else {
            "cohort frontend (kv-aware)"
        };
        println!("{name:<28} {rate:>12.0} {cpu:>18.1}");
        rows.push(cpu);
    }
    println!("frontend / floor CPU: {:.2}×", rows[1] / rows[0]);
}
