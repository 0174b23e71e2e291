//! Launch-to-ready at rack scale: `cohort launch --local 18` over one emulated GB200
//! NVL72 rack, 72 simulated one-GPU instances (48 prefill, 24 decode), a short benchmark,
//! and the stop. Target: every instance ready within 5 s.
//!
//! `cargo bench -p cohort --bench launch` (release build); `LAUNCH_RUNS=N` (default 5).
//! For each run it reports, from the job's own `events.jsonl` and `summary.json`: rank 0
//! start → all 18 ranks joined, → all 72 instances ready, and the whole job's wall time
//! (start, benchmark of 256 requests, stop of 72 engines and 17 ranks, results).

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn event_time(events: &str, kind: &str, nth_last: bool) -> Option<f64> {
    let needle = format!("\"event\":\"{kind}\"");
    let mut hits = events.lines().filter(|l| l.contains(&needle));
    let line = if nth_last {
        hits.next_back()
    } else {
        hits.next()
    }?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["t"].as_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("LAUNCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let recipe = root.join("recipes/gb200-nvl72-rehearsal.toml");
    let out = std::env::temp_dir().join(format!("cohort-launch-bench-{}", std::process::id()));
    let (mut joined, mut ready, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let results = out.join(run.to_string());
        let started = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args([
                "launch",
                "--local",
                "18",
                "--speedup",
                "inf",
                "--frontend-port",
                "0",
            ])
            .args(["--progress", "lines", "--recipe"])
            .arg(&recipe)
            .arg("--results")
            .arg(&results)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run cohort launch");
        let elapsed = started.elapsed().as_secs_f64();
        assert!(status.success(), "run {run}: {status}");
        let job: PathBuf = std::fs::read_dir(&results)
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path();
        let events = std::fs::read_to_string(job.join("events.jsonl")).unwrap();
        let j = event_time(&events, "joined", true).unwrap();
        let r = event_time(&events, "all_ready", false).unwrap();
        println!(
            "run {run}: 18 ranks joined {j:.3} s, 72 instances ready {r:.3} s, whole job {elapsed:.2} s"
        );
        joined.push(j);
        ready.push(r);
        wall.push(elapsed);
    }
    let _ = std::fs::remove_dir_all(&out);
    println!(
        "median of {runs}: joined {:.3} s, ready {:.3} s (target ≤ 5 s), whole job {:.2} s",
        median(&mut joined),
        median(&mut ready),
        median(&mut wall)
    );
}
