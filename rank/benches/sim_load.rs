//! The simulator's own cost, measured: `cargo bench -p cohort-rank --bench sim_load`.
//!
//! One thread runs `cohort sim --speedup inf` (a current-thread runtime: one core),
//! another runs a closed-loop load generator (hyper client, keep-alive connections) that
//! sends streamed completions with `ignore_eos` and reads every byte. Reported per
//! scenario: requests/s, and the sim thread's CPU time (from
//! `/proc/thread-self/schedstat`) per request; the CPU per streamed token is the slope
//! between the scenarios with 1 and 128 output tokens.
//!
//! `-- predict …` runs the timing model alone on a fixed batch (for `docs/sim.md`).
//! `-- serve [cohort sim flags]` runs the simulator itself (handy before the CLI has it).
//! Environment: `SIM_BENCH_SECS` (default 4) per scenario, `SIM_BENCH_CONNS` (default 64).

use bytes::Bytes;
use clap::Parser;
use cohort_rank::sim::scheduler::{NewRequest, Remote, Scheduler};
use cohort_rank::sim::vocab::Sampler;
use cohort_rank::sim::{SimArgs, SimServer};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

struct Outcome {
    requests: u64,
    tokens_checked: bool,
    wall: Duration,
    sim_cpu_ns: u64,
}

async fn one_connection(
    addr: SocketAddr,
    body: Bytes,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> bool {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    let work = async {
        let mut ok = true;
        while !stop.load(Ordering::Relaxed) {
            let req = hyper::Request::post("/v1/completions")
                .header("host", "sim")
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .expect("request");
            let Ok(resp) = sender.send_request(req).await else {
                return false;
            };
            let Ok(all) = resp.into_body().collect().await else {
                return false;
            };
            let all = all.to_bytes();
            ok &= all.ends_with(b"data: [DONE]\n\n");
            done.fetch_add(1, Ordering::Relaxed);
        }
        ok
    };
    tokio::select! {
        ok = work => ok,
        _ = conn => false,
    }
}

fn scenario(max_tokens: u32, secs: f64, conns: usize) -> Outcome {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sim = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let args = SimArgs::parse_from(["sim", "--port", "0", "--speedup", "inf"]);
            let server = SimServer::start(args.resolve().expect("config"))
                .await
                .expect("start");
            addr_tx.send(server.instances()[0].addr).expect("send addr");
            let _ = stop_rx.await;
            let cpu = thread_cpu_ns();
            server.shutdown().await;
            cpu
        })
    });
    let addr = addr_rx.recv().expect("sim address");
    let body = Bytes::from(format!(
        r#"{{"model":"llama-3.1-8b","prompt":"the cluster serves a batch of tokens","max_tokens":{max_tokens},"ignore_eos":true,"stream":true}}"#
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..conns {
            set.spawn(one_connection(
                addr,
                body.clone(),
                stop.clone(),
                done.clone(),
            ));
        }
        // warm-up, then measure
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r0 = done.load(Ordering::Relaxed);
        let t0 = Instant::now();
        (r0, t0, stop, done, set)
    });
    // The sim thread's CPU is read by the sim thread itself; take a start reading via a
    // second scenario phase: measure total CPU at the end and the share spent in warm-up
    // is subtracted by proportion of requests.
    let (r0, t0, stop, done, mut set) = out;
    rt.block_on(async { tokio::time::sleep(Duration::from_secs_f64(secs)).await });
    let r1 = done.load(Ordering::Relaxed);
    let wall = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all_ok = true;
    rt.block_on(async {
        while let Some(r) = set.join_next().await {
            all_ok &= r.unwrap_or(false);
        }
    });
    let total_requests = done.load(Ordering::Relaxed);
    let _ = stop_tx.send(());
    let sim_cpu_total = sim.join().expect("sim thread");
    let requests = r1 - r0;
    // CPU per request over the whole run (warm-up included), scaled to the measured window.
    let sim_cpu_ns = (sim_cpu_total as f64 * requests as f64 / total_requests.max(1) as f64) as u64;
    Outcome {
        requests,
        tokens_checked: all_ok,
        wall,
        sim_cpu_ns,
    }
}

/// `-- predict --batch B --isl I --osl O [cohort sim flags]`: B requests of I prompt
/// and O output tokens submitted at once, run through the scheduler and the timing
/// model without any I/O; prints the output tokens/s and the mean time per output token.
fn predict(rest: &[String]) {
    let mut batch = 1u32;
    let mut isl = 128u32;
    let mut osl = 128u32;
    let mut sim_args = vec!["sim".to_string(), "--no-prefix-caching".to_string()];
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse().ok()).expect("a number");
        match a.as_str() {
            "--batch" => batch = num(),
            "--isl" => isl = num(),
            "--osl" => osl = num(),
            other => sim_args.push(other.to_string()),
        }
    }
    let cfg = SimArgs::parse_from(&sim_args)
        .resolve()
        .expect("valid flags");
    let mut s: Scheduler<()> = Scheduler::new(cfg.sched);
    for i in 0..batch {
        let prompt: Vec<u32> = (0..isl).map(|t| (i * isl + t) % 30_000 + 1).collect();
        let sampler = Sampler::new(Some(i as u64), &prompt);
        s.add(NewRequest {
            prompt,
            max_tokens: osl,
            stop_at: None,
            sampler,
            remote: Remote::Local,
            ctx: (),
        });
    }
    let (mut t, mut steps, mut decode_t, mut decode_steps) = (0.0, 0u64, 0.0, 0u64);
    while s.has_work() {
        let r = s.step();
        let dt = cfg.timing.step_time(&r.shape).total;
        t += dt;
        steps += 1;
        if r.shape.tokens == r.shape.seqs as u64 {
            decode_t += dt;
            decode_steps += 1;
        }
    }
    #[allow(clippy::print_stdout)]
    {
        println!(
            "predict batch={batch} isl={isl} osl={osl}: {:.0} output tokens/s, {:.2} s total, {steps} steps, mean decode step {:.2} ms, KV blocks {}",
            (batch as f64 * osl as f64) / t,
            t,
            decode_t / decode_steps.max(1) as f64 * 1e3,
            cfg.sched.num_blocks
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "predict") {
        predict(&args[pos + 1..]);
        return;
    }
    if let Some(pos) = args.iter().position(|a| a == "serve") {
        let mut sim_args = vec!["sim".to_string()];
        sim_args.extend(args[pos + 1..].iter().cloned());
        if let Err(e) = cohort_rank::sim::run_blocking(SimArgs::parse_from(sim_args)) {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {e}");
            }
            std::process::exit(1);
        }
        return;
    }
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --benches` runs benches as tests: nothing to check here
    }
    let secs: f64 = std::env::var("SIM_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4.0);
    let conns: usize = std::env::var("SIM_BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut per_req = Vec::new();
    #[allow(clippy::print_stdout)]
    for max_tokens in [1u32, 16, 128] {
        let o = scenario(max_tokens, secs, conns);
        let rps = o.requests as f64 / o.wall.as_secs_f64();
        let cpu_us = o.sim_cpu_ns as f64 / 1e3 / o.requests.max(1) as f64;
        per_req.push((max_tokens, cpu_us));
        println!(
            "sim_load max_tokens={max_tokens:<4} conns={conns} requests/s={rps:>8.0} sim CPU/request={cpu_us:>7.1} µs complete_streams={}",
            o.tokens_checked
        );
    }
    let (a, b) = (per_req[0], per_req[2]);
    #[allow(clippy::print_stdout)]
    {
        println!(
            "sim_load CPU per streamed token = {:.2} µs (slope between {} and {} tokens)",
            (b.1 - a.1) / (b.0 - a.0) as f64,
            a.0,
            b.0
        );
    }
}
