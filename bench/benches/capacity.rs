//! Capacity of the harness itself, next to `wrk` on the same server (issue 7, item 8).
//!
//! Runs the trivially fast test server pinned to CPU 0 and, pinned to CPU 1 one after
//! the other, `cohort-bench --threads 1` and `wrk -t1`, and prints a Markdown table:
//! requests/s, CPU per request and (open loop) schedule lag. Needs `taskset` (util-linux)
//! and, for the comparison rows, `wrk` (Debian's package); rows whose tool is missing are
//! skipped with a note.
//!
//! `cargo bench -p cohort-bench --bench capacity` (`BENCH_SECONDS`, default 5, per row).
//! `BENCH_HARNESS=/path/to/cohort-bench` measures another build of the harness (a saved
//! copy of an earlier commit's, say) against the same server: run the two alternately,
//! since a shared machine's figures drift by tens of percent.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SERVER: &str = env!("CARGO_BIN_EXE_cohort-bench-server");
const HARNESS: &str = env!("CARGO_BIN_EXE_cohort-bench");
/// Environment: the harness binary to measure instead of this build's.
const ENV_HARNESS: &str = "BENCH_HARNESS";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cmd` pinned to `cpu` when taskset exists.
fn pinned(cpu: u32, prog: &str) -> Command {
    if have("taskset") {
        let mut c = Command::new("taskset");
        c.args(["-c", &cpu.to_string(), prog]);
        c
    } else {
        Command::new(prog)
    }
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start() -> Server {
        let mut child = pinned(0, SERVER)
            .args(["--threads", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the test server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("its URL");
        Server {
            child,
            url: line.trim().to_owned(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

struct Row {
    what: String,
    tool: &'static str,
    req_s: f64,
    cpu_us: Option<f64>,
    lag_p99_ms: Option<f64>,
    note: String,
}

/// Runs the harness for one point and reads its JSON.
fn harness(url: &str, secs: u64, tokens: u32, load: &[&str]) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("cohort-capacity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let harness = std::env::var(ENV_HARNESS).unwrap_or_else(|_| HARNESS.to_owned());
    let status = pinned(1, &harness)
        .args([
            "--url",
            url,
            "--model",
            "test-model",
            "--threads",
            "1",
            "--quiet",
            "--progress",
            "off",
        ])
        .args([
            "--input-len",
            "16",
            "--output-len",
            &tokens.to_string(),
            "--no-request-log",
        ])
        .args(["--duration", &format!("{secs}s"), "--requests", "100000000"])
        .args(load)
        .arg("--output")
        .arg(&dir)
        .status()
        .expect("run the harness");
    assert!(status.success(), "the harness failed");
    let all: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).expect("results.json"))
            .expect("JSON");
    let _ = std::fs::remove_dir_all(&dir);
    all["points"][0].clone()
}

/// Runs wrk with a POST of the same body; returns requests/s and CPU µs per request.
fn wrk(url: &str, secs: u64, conns: u32, tokens: u32) -> Option<(f64, f64)> {
    let ids: Vec<String> = (0..16).map(|i| (1000 + i).to_string()).collect();
    let body = format!(
        "{{\"model\":\"test-model\",\"prompt\":[{}],\"max_tokens\":{tokens},\"min_tokens\":{tokens},\"ignore_eos\":true,\"stream\":true,\"stream_options\":{{\"include_usage\":true}}}}",
        ids.join(",")
    );
    let script = std::env::temp_dir().join(format!("cohort-wrk-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        format!("wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"),
    )
    .ok()?;
    let taskset = if have("taskset") { "taskset -c 1 " } else { "" };
    let cmd = format!(
        "{taskset}wrk -t1 -c{conns} -d{secs}s -s {} {url}/v1/completions; times",
        script.display()
    );
    let out = Command::new("bash").args(["-c", &cmd]).output().ok()?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    let req_s: f64 = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let total: f64 = text
        .lines()
        .find(|l| l.trim_start().starts_with("Requests/sec:"))
        .and(text.lines().find(|l| l.contains(" requests in ")))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // `times`: the shell's then the children's user and system time.
    let child_times = text
        .lines()
        .rfind(|l| l.contains('m') && l.ends_with('s'))?;
    let secs_of = |t: &str| -> Option<f64> {
        let (m, s) = t.trim_end_matches('s').split_once('m')?;
        Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
    };
    let mut it = child_times.split_whitespace();
    let cpu = secs_of(it.next()?)? + secs_of(it.next()?)?;
    Some((req_s, cpu * 1e6 / total))
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let server = Server::start();
    std::thread::sleep(Duration::from_millis(200));
    let have_wrk = have("wrk");
    let mut rows = Vec::new();
    for (tokens, conc) in [(16u32, 16u32), (1, 16), (1, 64)] {
        let p = harness(
            &server.url,
            secs,
            tokens,
            &["--concurrency", &conc.to_string()],
        );
        rows.push(Row {
            what: format!("closed loop, c={conc}, {tokens}-token streams"),
            tool: "cohort bench",
            req_s: p["request_throughput"].as_f64().unwrap_or(0.0),
            cpu_us: p["harness_cpu_per_request_us"].as_f64(),
            lag_p99_ms: None,
            note: format!(
                "p50 TTFT {:.3} ms, failed {}",
                p["median_ttft_ms"].as_f64().unwrap_or(0.0),
                p["failed"]
            ),
        });
        if have_wrk {
            if let Some((r, c)) = wrk(&server.url, secs, conc, tokens) {
                rows.push(Row {
                    what: format!("closed loop, c={conc}, {tokens}-token streams"),
                    tool: "wrk",
                    req_s: r,
                    cpu_us: Some(c),
                    lag_p99_ms: None,
                    note: "bytes only".to_owned(),
                });
            }
        }
    }
    for (rate, tokens) in [(5000.0f64, 16u32), (10000.0, 16), (40000.0, 1)] {
        let p = harness(
            &server.url,
            secs,
            tokens,
            // Bounded in flight: a generator (or server) that falls behind an unbounded
            // open loop opens ever more connections until file descriptors run out.
            &[
                "--rate",
                &rate.to_string(),
                "--arrival",
                "constant",
                "--max-concurrency",
                "1024",
            ],
        );
        rows.push(Row {
            what: format!(
                "open loop, {rate} req/s constant, {tokens}-token streams, ≤ 1024 in flight"
            ),
            tool: "cohort bench",
            req_s: p["request_throughput"].as_f64().unwrap_or(0.0),
            cpu_us: p["harness_cpu_per_request_us"].as_f64(),
            lag_p99_ms: p["p99_lag_ms"].as_f64(),
            note: format!(
                "lag p50 {:.3} ms, max {:.1} ms, failed {}",
                p["median_lag_ms"].as_f64().unwrap_or(0.0),
                p["max_lag_ms"].as_f64().unwrap_or(0.0),
                p["failed"]
            ),
        });
    }
    drop(server);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "| load | tool | requests/s | CPU µs/request | lag p99 ms | notes |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} |",
            r.what,
            r.tool,
            r.req_s,
            r.cpu_us.map_or("-".to_owned(), |c| format!("{c:.1}")),
            r.lag_p99_ms.map_or("-".to_owned(), |l| format!("{l:.3}")),
            r.note
        );
    }
    if !have_wrk {
        let _ = writeln!(
            out,
            "\n(wrk not installed: `apt-get install -y wrk` for the comparison rows)"
        );
    }
}
