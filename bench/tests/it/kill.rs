//! A sweep killed mid-way leaves valid files for the points it finished.

use crate::fixtures::{read_json, ServerThread};
use cohort_bench::testserver::ServerConfig;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigint_mid_sweep_keeps_finished_points_and_marks_the_current_one_partial() {
    let server = ServerThread::start(ServerConfig {
        ttft: std::time::Duration::from_millis(5),
        itl: std::time::Duration::from_millis(5),
        ..ServerConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // c1 and c2 finish quickly (40 requests of ~25 ms); c3 would take ~30 s.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort-bench"))
        .args([
            "--url",
            &server.url,
            "--concurrency",
            "1,2,3",
            "--requests",
            "40",
        ])
        .args([
            "--input-len",
            "16",
            "--output-len",
            "5",
            "--progress",
            "off",
            "--quiet",
        ])
        .arg("--output")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until c2 is written in full and c3 has started.
    let start = Instant::now();
    let mut ready = false;
    while start.elapsed() < Duration::from_secs(30) {
        let c2_done = std::fs::read(out.join("c2.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["partial"] == false);
        if c2_done && out.join("c3.requests.jsonl").exists() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the sweep did not reach its third point in 30 s");
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the harness did not stop within 20 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "an interrupted run exits non-zero");
    assert!(
        stderr.contains("interrupted: 2 sweep point(s) finished"),
        "{stderr}"
    );

    for label in ["c1", "c2"] {
        let p = read_json(&out.join(format!("{label}.json")));
        assert_eq!(p["partial"], false, "{label}");
        assert_eq!(p["completed"], 40, "{label}");
    }
    let c3 = read_json(&out.join("c3.json"));
    assert_eq!(c3["partial"], true);
    assert!(c3["completed"].as_u64().unwrap() < 40);
    // The sweep files list the finished points only, and are complete.
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let all = read_json(&out.join("results.json"));
    assert_eq!(all["points"].as_array().unwrap().len(), 2);
    assert!(std::fs::read_to_string(out.join("pareto.svg"))
        .unwrap()
        .trim_end()
        .ends_with("</svg>"));
    // Every logged request line of the cut point is whole JSON.
    let log = std::fs::read_to_string(out.join("c3.requests.jsonl")).unwrap();
    for l in log.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
    // No temporary file is left behind.
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "{name}");
    }
}

/// A partial checkpoint that cannot be written for a while (here: a directory stands
/// where its temporary file goes, as a full disk would) is warned about and the run goes
/// on; once writing works again, the point's final file is complete.
#[test]
fn a_checkpoint_that_fails_for_a_while_does_not_end_the_run() {
    let server = ServerThread::start(ServerConfig {
        ttft: std::time::Duration::from_millis(5),
        itl: std::time::Duration::from_millis(5),
        ..ServerConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Blocks every write of c1.json until removed.
    let blocker = out.join(".c1.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    // ~5 s of load: at least two checkpoints (every 2 s) fail.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort-bench"))
        .args([
            "--url",
            &server.url,
            "--concurrency",
            "1",
            "--duration",
            "5s",
        ])
        .args([
            "--input-len",
            "16",
            "--output-len",
            "5",
            "--progress",
            "lines",
        ])
        .args(["--quiet", "--output"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(4_500));
    std::fs::remove_dir(&blocker).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run did not end within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("partial checkpoint not written"),
        "the failure is said: {stderr}"
    );
    let c1 = read_json(&out.join("c1.json"));
    assert_eq!(c1["partial"], false, "{c1}");
    assert!(c1["completed"].as_u64().unwrap() > 10, "{c1}");
}
