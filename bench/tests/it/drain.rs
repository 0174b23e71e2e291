//! `cohort bench` stopped by a signal drains: requests in flight finish within
//! `--drain-grace`, a second signal cuts them at once.

use crate::fixtures::{read_json, ServerThread};
use cohort_bench::testserver::ServerConfig;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Streams of 20 tokens 100 ms apart (~2 s each), or `itl` apart.
fn slow_server(itl: Duration) -> ServerThread {
    ServerThread::start(ServerConfig {
        ttft: Duration::from_millis(100),
        itl,
        ..ServerConfig::default()
    })
}

/// `cohort-bench` at concurrency 4 with `--drain-grace grace`, far more requests than it
/// can finish before it is signalled.
fn spawn(url: &str, out: &Path, grace: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cohort-bench"))
        .args(["--url", url, "--concurrency", "4", "--requests", "10000"])
        .args([
            "--input-len",
            "16",
            "--output-len",
            "20",
            "--drain-grace",
            grace,
        ])
        .args(["--progress", "off", "--quiet"])
        .arg("--output")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (bounded) until the point has started, then a little longer: requests are in
/// flight and, with 2 s streams, none has finished.
fn wait_for_requests_in_flight(child: &mut Child, out: &Path) {
    let start = Instant::now();
    while !out.join("c4.requests.jsonl").exists() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the point did not start in 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits (bounded) for the exit; returns its success and stderr.
fn wait(mut child: Child, within: Duration) -> (bool, String) {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the harness did not exit within {within:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

fn log(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("c4.requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn sigterm_lets_requests_in_flight_finish_within_the_grace() {
    let server = slow_server(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = spawn(&server.url, &out, "60s");
    wait_for_requests_in_flight(&mut child, &out);
    signal(&child, "-TERM");
    let (ok, stderr) = wait(child, Duration::from_secs(40));
    assert!(!ok, "a stopped run exits non-zero");
    assert!(stderr.contains("may finish for 60s"), "{stderr}");
    assert!(!stderr.contains("cutting"), "{stderr}");

    // The four requests in flight at the signal finished in full; none was issued after.
    let lines = log(&out);
    assert_eq!(lines.len(), 4, "{lines:?}");
    for l in &lines {
        assert!(l.get("cancelled").is_none(), "{l}");
        assert!(l.get("error").is_none(), "{l}");
        assert_eq!(l["output_tokens"], 20, "{l}");
        assert_eq!(l["itl_us"].as_array().unwrap().len(), 19, "{l}");
    }
    let p = read_json(&out.join("c4.json"));
    assert_eq!(p["partial"], true);
    assert_eq!(p["completed"], 4);
    assert_eq!(p["cancelled"], 0);
}

#[test]
fn a_second_signal_cuts_requests_in_flight_at_once() {
    // 20 tokens 1 s apart: ~20 s streams, far longer than the test waits.
    let server = slow_server(Duration::from_secs(1));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = spawn(&server.url, &out, "10m");
    wait_for_requests_in_flight(&mut child, &out);
    signal(&child, "-INT");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-INT");
    let (ok, stderr) = wait(child, Duration::from_secs(15));
    assert!(!ok);
    assert!(
        stderr.contains("second SIGINT: cutting the requests still in flight"),
        "{stderr}"
    );
    let lines = log(&out);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines.iter().all(|l| l["cancelled"] == true), "{lines:?}");
    let p = read_json(&out.join("c4.json"));
    assert_eq!(p["partial"], true);
    assert_eq!(p["completed"], 0);
    assert_eq!(p["cancelled"], 4);
}

#[test]
fn no_grace_cuts_at_the_first_signal() {
    let server = slow_server(Duration::from_secs(1));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = spawn(&server.url, &out, "0s");
    wait_for_requests_in_flight(&mut child, &out);
    signal(&child, "-INT");
    let (ok, _) = wait(child, Duration::from_secs(15));
    assert!(!ok);
    let lines = log(&out);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines.iter().all(|l| l["cancelled"] == true), "{lines:?}");
}
