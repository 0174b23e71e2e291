//! `cohort launch --local`: whole jobs on this machine with simulated engines — the
//! benchmark runs and results are complete; an engine killed mid-benchmark has its
//! streams migrated; SIGUSR1 gives partial results and exit 3; an engine that fails at
//! start ends the job fast with its name, node and log; no process is left behind.
//!
//! Every job gets a marker in its environment, which its engines inherit: after the job,
//! no process on the machine may still carry it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::{cohort, repo_root, TempDir};

/// A job started in the background, its output going to files.
struct Job {
    child: Child,
    dir: PathBuf,
    marker: String,
    started: Instant,
}

const MARK_VAR: &str = "COHORT_TEST_JOB_MARK";

/// Writes a recipe: 4 emulated HGX H100 nodes, one prefill and one decode instance of 4
/// GPUs per node, simulated; `engine_args` go to every instance, `bench` is the table.
fn recipe(dir: &Path, base_port: u16, engine_args: &str, bench: &str) -> PathBuf {
    let topo = repo_root().join("recipes/topologies/hgx-h100-4nodes.toml");
    let text = format!(
        r#"name = "test-disagg"

[model]
name = "meta-llama/Llama-3.1-8B-Instruct"

[engine]
kind = "sim"
args = [{engine_args}]

[deploy]
mode = "disaggregated"
topology = "{}"
base_port = {base_port}

[deploy.prefill]
gpus = 4
per_domain = 1

[deploy.decode]
gpus = 4
per_domain = 1

[bench]
{bench}
"#,
        topo.display()
    );
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

impl Job {
    fn start(dir: &Path, recipe: &Path, extra: &[&str]) -> Job {
        Self::start_ranks(dir, recipe, 4, extra, &[])
    }

    /// `ranks` local ranks, `env` added to their environment.
    fn start_ranks(
        dir: &Path,
        recipe: &Path,
        ranks: u32,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Job {
        let marker = format!("{}-{}", std::process::id(), dir.display());
        let out = std::fs::File::create(dir.join("stdout")).unwrap();
        let err = std::fs::File::create(dir.join("stderr")).unwrap();
        let child = cohort()
            .args(["launch", "--local"])
            .arg(ranks.to_string())
            .args(["--frontend-port", "0", "--results"])
            .arg(dir.join("results"))
            .arg("--recipe")
            .arg(recipe)
            .args(["--progress", "lines", "--stop-grace", "2s"])
            .args(extra)
            .env(MARK_VAR, &marker)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Job {
            child,
            dir: dir.to_owned(),
            marker,
            started: Instant::now(),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    /// The job's results directory (there is one job per test directory).
    fn results(&self) -> PathBuf {
        let root = self.dir.join("results");
        let entries: Vec<PathBuf> = std::fs::read_dir(&root)
            .map(|it| it.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert_eq!(entries.len(), 1, "one job directory in {}", root.display());
        entries[0].clone()
    }

    /// Waits until `events.jsonl` has an event of `kind`, up to `limit`.
    fn wait_event(&self, kind: &str, limit: Duration) {
        let needle = format!("\"event\":\"{kind}\"");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let root = self.dir.join("results");
            let found = std::fs::read_dir(&root)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    std::fs::read_to_string(e.path().join("events.jsonl"))
                        .is_ok_and(|t| t.contains(&needle))
                });
            if found {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no `{kind}` event after {limit:?}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Waits for the exit, killing the job (and failing) after `limit`.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                kill_marked(&self.marker);
                panic!(
                    "the job did not end within {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Processes still carrying this job's marker (there must be none after it ends).
    fn leftovers(&self) -> Vec<u32> {
        marked(&self.marker)
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {signal}");
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        kill_marked(&self.marker);
    }
}

/// Pids of the processes whose environment holds `MARK_VAR=marker`.
fn marked(marker: &str) -> Vec<u32> {
    let needle = format!("{MARK_VAR}={marker}");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(e.path().join("environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn kill_marked(marker: &str) {
    for pid in marked(marker) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

/// Waits (bounded) for the marked processes to go: a process the kernel has not reaped
/// yet may show for a moment after its parent exits.
fn assert_no_leftovers(job: &Job) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !job.leftovers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(job.leftovers(), Vec::<u32>::new(), "processes left behind");
}

/// An instance's HTTP port, from `instances.json`.
fn instance_port(job: &Job, instance: &str) -> u16 {
    let wire: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(job.results().join("instances.json")).unwrap(),
    )
    .unwrap();
    wire["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["spec"]["id"] == instance)
        .and_then(|a| a["spec"]["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap()
}

/// Requests an engine runs now (`vllm:num_requests_running` from its `/metrics`); 0 when
/// it cannot be read.
fn running(port: u16) -> u64 {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find(|l| l.starts_with("vllm:num_requests_running"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The pid of a simulated engine by instance id, from `instances.json` and `/proc`.
fn engine_pid(job: &Job, instance: &str) -> u32 {
    let port = instance_port(job, instance);
    let arg = format!("--port\0{port}\0");
    marked(&job.marker)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.windows(arg.len()).any(|w| w == arg.as_bytes())
                    && c.windows(4).any(|w| w == b"sim\0")
            })
        })
        .unwrap_or_else(|| panic!("no process for `{instance}` on port {port}"))
}

fn summary(job: &Job) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(job.results().join("summary.json")).unwrap())
        .unwrap()
}

#[test]
fn a_local_disaggregated_job_benchmarks_and_leaves_complete_results() {
    let tmp = TempDir::new("launch-ok");
    let r = recipe(
        tmp.path(),
        31_000,
        "",
        "concurrency = [2, 4]\nrequests = 12\ninput_len = 256\noutput_len = 16",
    );
    let mut job = Job::start(tmp.path(), &r, &["--speedup", "inf"]);
    let status = job.wait(Duration::from_secs(120));
    let err = job.stderr();
    assert_eq!(status.code(), Some(0), "stderr:\n{err}");
    eprintln!("local job ended after {:?}", job.started.elapsed());
    assert!(err.contains("ranks joined 4/4"), "{err}");
    assert!(err.contains("instances ready 8/8"), "{err}");
    let results = job.results();
    for file in [
        "summary.md",
        "summary.json",
        "events.jsonl",
        "recipe.toml",
        "topology.json",
        "plan.json",
        "plan.svg",
        "instances.json",
        "bench/c2.json",
        "bench/c4.json",
        "bench/sweep.csv",
        "bench/pareto.svg",
        "logs/h100-001/prefill-0.log",
        "logs/h100-004/decode-3.log",
    ] {
        assert!(
            results.join(file).is_file(),
            "{file} missing in {}",
            results.display()
        );
    }
    let s = summary(&job);
    assert_eq!(s["exit_status"], 0);
    assert_eq!(s["partial"], false);
    assert_eq!(s["instances"], 8);
    let points = s["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    for p in points {
        assert_eq!(p["completed"], 12, "{p}");
        assert_eq!(p["failed"], 0, "{p}");
    }
    let md = std::fs::read_to_string(results.join("summary.md")).unwrap();
    assert!(
        md.contains("completed") && md.contains("Nothing went wrong"),
        "{md}"
    );
    // The benchmark's table is the last thing on stdout.
    assert!(job.stdout().contains("== summary"), "{}", job.stdout());
    // Every rank's instances were placed where the plan said, ports unique per address.
    let wire: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("instances.json")).unwrap())
            .unwrap();
    let mut ports: Vec<u64> = wire["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["spec"]["port"].as_u64().unwrap())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 8, "ports collide: {ports:?}");
    assert_no_leftovers(&job);
}

#[test]
fn an_engine_that_fails_at_start_ends_the_job_fast_naming_it() {
    let tmp = TempDir::new("launch-badengine");
    let r = recipe(tmp.path(), 31_100, "\"--no-such-flag\"", "requests = 4");
    let mut job = Job::start(tmp.path(), &r, &[]);
    let status = job.wait(Duration::from_secs(60));
    let err = job.stderr();
    assert_eq!(status.code(), Some(13), "stderr:\n{err}");
    assert!(
        job.started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        job.started.elapsed()
    );
    // The instance, its node and its log's last lines.
    assert!(err.contains("before it was ready"), "{err}");
    assert!(err.contains("on node `h100-00"), "{err}");
    assert!(
        err.contains("--no-such-flag"),
        "the log tail is shown: {err}"
    );
    let s = summary(&job);
    assert_eq!(s["exit_status"], 13);
    assert_eq!(s["ending"], "failed: engine start");
    assert_no_leftovers(&job);
}

/// An instance wider than a node (TP 8 over two 4-GPU GB200 trays) is laid onto both
/// nodes' ranks: the leader's spec and the follower's, each with its place in the
/// instance, and GPUs counted over both.
#[test]
fn an_instance_spanning_two_trays_gets_a_part_on_each_node() {
    let tmp = TempDir::new("launch-multinode");
    let topo = tmp.path().join("trays.toml");
    std::fs::write(
        &topo,
        "version = 1\n[[system]]\nkind = \"gb200-nvl72\"\nhosts = \"gb200-n[01-04]\"\n",
    )
    .unwrap();
    let recipe = tmp.path().join("recipe.toml");
    std::fs::write(
        &recipe,
        format!(
            r#"name = "test-multinode"
[model]
name = "meta-llama/Llama-3.1-70B-Instruct"
[engine]
kind = "sim"
[deploy]
mode = "disaggregated"
topology = "{}"
base_port = 31_700
[deploy.prefill]
gpus = 4
count = 2
[deploy.decode]
gpus = 8
count = 1
[bench]
concurrency = [4]
requests = 12
input_len = 256
output_len = 16
"#,
            topo.display()
        ),
    )
    .unwrap();
    let mut job = Job::start(tmp.path(), &recipe, &["--speedup", "inf"]);
    let status = job.wait(Duration::from_secs(120));
    let err = job.stderr();
    assert_eq!(status.code(), Some(0), "stderr:\n{err}");
    assert!(err.contains("instances ready 3/3"), "{err}");
    let wire: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(job.results().join("instances.json")).unwrap(),
    )
    .unwrap();
    let decode = wire["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["spec"]["id"] == "decode-0")
        .expect("decode-0 in instances.json");
    let leader = &decode["spec"]["multi_node"];
    assert_eq!(leader["nnodes"], 2, "{decode}");
    assert_eq!(leader["node_rank"], 0, "{decode}");
    let followers = decode["followers"].as_array().unwrap();
    assert_eq!(followers.len(), 1, "{decode}");
    let f = &followers[0];
    assert_ne!(f["rank"], decode["rank"], "{decode}");
    assert_ne!(f["node"], decode["node"], "{decode}");
    assert_eq!(f["spec"]["multi_node"]["node_rank"], 1, "{decode}");
    assert_eq!(
        f["spec"]["multi_node"]["leader_port"], decode["spec"]["port"],
        "{decode}"
    );
    assert_eq!(f["spec"]["gpus"].as_array().unwrap().len(), 4, "{decode}");
    let s = summary(&job);
    assert_eq!(s["gpus"], 16);
    assert_eq!(s["points"][0]["completed"], 12);
    assert_no_leftovers(&job);
}

/// Two emulated H100 nodes whose GPU state comes from fixtures (`COHORT_GPU_FIXTURE`):
/// node 2 has uncorrectable ECC errors on GPU 3. `exclude_unhealthy` says whether the
/// job plans without it or ends naming it.
fn unhealthy_node_job(tag: &str, base_port: u16, exclude_unhealthy: bool) -> (Job, TempDir) {
    let tmp = TempDir::new(tag);
    let fixtures = repo_root().join("rank/tests/fixtures/gpu");
    let gpu = tmp.path().join("gpu");
    std::fs::create_dir_all(&gpu).unwrap();
    std::fs::copy(fixtures.join("h100-healthy.json"), gpu.join("h100-01.json")).unwrap();
    std::fs::copy(
        fixtures.join("h100-ecc-gpu3.json"),
        gpu.join("h100-02.json"),
    )
    .unwrap();
    let topo = tmp.path().join("nodes.toml");
    std::fs::write(
        &topo,
        "version = 1\n[[system]]\nkind = \"hgx-h100\"\nhosts = \"h100-[01-02]\"\n",
    )
    .unwrap();
    let recipe = tmp.path().join("recipe.toml");
    std::fs::write(
        &recipe,
        format!(
            r#"name = "test-gpu-health"
[model]
name = "meta-llama/Llama-3.1-8B-Instruct"
[engine]
kind = "sim"
[deploy]
mode = "aggregated"
topology = "{}"
base_port = {base_port}
exclude_unhealthy = {exclude_unhealthy}
[deploy.aggregated]
gpus = 4
per_domain = 1
[bench]
concurrency = [2]
requests = 6
input_len = 64
output_len = 8
"#,
            topo.display()
        ),
    )
    .unwrap();
    let fixture = gpu.join("{node}.json").display().to_string();
    let job = Job::start_ranks(
        tmp.path(),
        &recipe,
        2,
        &["--speedup", "inf"],
        &[("COHORT_GPU_FIXTURE", fixture.as_str())],
    );
    (job, tmp)
}

#[test]
fn a_node_with_failed_gpus_ends_the_job_naming_it() {
    let (mut job, _tmp) = unhealthy_node_job("launch-gpu-fail", 31_800, false);
    let status = job.wait(Duration::from_secs(60));
    let err = job.stderr();
    assert_eq!(status.code(), Some(11), "stderr:\n{err}");
    assert!(
        err.contains("GPU health check failed on 1 node(s): h100-02"),
        "{err}"
    );
    assert!(err.contains("h100-02 GPU 3"), "the GPU is named: {err}");
    assert!(
        err.contains("exclude_unhealthy"),
        "the way out is named: {err}"
    );
    assert!(job.results().join("gpu-health.json").is_file());
    assert_no_leftovers(&job);
}

#[test]
fn a_node_with_failed_gpus_is_left_out_when_the_recipe_allows() {
    let (mut job, _tmp) = unhealthy_node_job("launch-gpu-exclude", 31_900, true);
    let status = job.wait(Duration::from_secs(60));
    let err = job.stderr();
    assert_eq!(status.code(), Some(0), "stderr:\n{err}");
    assert!(err.contains("planning without it"), "{err}");
    let s = summary(&job);
    assert_eq!(s["instances"], 1, "{s}");
    assert_eq!(s["points"][0]["completed"], 6, "{s}");
    let wire = std::fs::read_to_string(job.results().join("instances.json")).unwrap();
    assert!(!wire.contains("h100-02"), "{wire}");
    assert_no_leftovers(&job);
}

/// A benchmark long enough to act on while it runs: simulated time in real time.
const LONG_BENCH: &str = "concurrency = [8]\nrequests = 48\ninput_len = 128\noutput_len = 384";

#[test]
fn an_engine_killed_mid_benchmark_has_its_streams_migrated() {
    let tmp = TempDir::new("launch-kill");
    let r = recipe(tmp.path(), 31_200, "", LONG_BENCH);
    let mut job = Job::start(tmp.path(), &r, &[]);
    job.wait_event("bench_start", Duration::from_secs(60));
    // Kill it while it streams: wait until its own metrics say it runs requests.
    let port = instance_port(&job, "decode-1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while running(port) < 2 {
        assert!(
            Instant::now() < deadline,
            "decode-1 never ran 2 requests at once"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let victim = engine_pid(&job, "decode-1");
    let ok = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = job.wait(Duration::from_secs(120));
    let err = job.stderr();
    assert_eq!(status.code(), Some(0), "stderr:\n{err}");
    let s = summary(&job);
    let incidents = s["incidents"].to_string();
    assert!(
        incidents.contains("decode-1") && incidents.contains("while serving"),
        "{incidents}"
    );
    let migrations = s["migrations"].as_array().unwrap();
    assert!(!migrations.is_empty(), "no stream migrated: {s}");
    let ids: Vec<&str> = migrations
        .iter()
        .map(|m| m["request"].as_str().unwrap())
        .collect();
    eprintln!("migrated after decode-1 was killed: {ids:?}");
    assert!(
        ids.iter().all(|id| id.starts_with("cmpl-cohort-")),
        "{ids:?}"
    );
    let point = &s["points"][0];
    assert_eq!(point["completed"], 48, "{point}");
    let md = std::fs::read_to_string(job.results().join("summary.md")).unwrap();
    assert!(md.contains(ids[0]), "{md}");
    assert_no_leftovers(&job);
}

#[test]
fn sigusr1_mid_benchmark_gives_partial_results_and_exit_3() {
    let tmp = TempDir::new("launch-usr1");
    let r = recipe(tmp.path(), 31_300, "", LONG_BENCH);
    let mut job = Job::start(tmp.path(), &r, &["--drain-grace", "1s"]);
    job.wait_event("bench_start", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let sent = Instant::now();
    job.signal("USR1");
    let status = job.wait(Duration::from_secs(60));
    let err = job.stderr();
    assert_eq!(status.code(), Some(3), "stderr:\n{err}");
    eprintln!("SIGUSR1 to exit: {:?}", sent.elapsed());
    let s = summary(&job);
    assert_eq!(s["partial"], true, "{s}");
    assert_eq!(s["ending"], "stopped early (partial results)");
    assert_eq!(s["points"][0]["partial"], true, "{s}");
    let md = std::fs::read_to_string(job.results().join("summary.md")).unwrap();
    assert!(md.contains("PARTIAL") && md.contains("SIGUSR1"), "{md}");
    assert_no_leftovers(&job);
}

/// One completion through the frontend, over plain HTTP/1.1.
fn complete(port: u16, model: &str) -> String {
    use std::io::{Read as _, Write as _};
    let body = format!(r#"{{"model":"{model}","prompt":"hello there","max_tokens":4}}"#);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serve_mode_answers_until_sigterm_then_stops_everything() {
    let tmp = TempDir::new("launch-serve");
    let r = recipe(tmp.path(), 31_400, "", "");
    let mut job = Job::start(tmp.path(), &r, &["--serve", "--speedup", "inf"]);
    job.wait_event("frontend", Duration::from_secs(60));
    let events = std::fs::read_to_string(job.results().join("events.jsonl")).unwrap();
    let url = events
        .lines()
        .find(|l| l.contains("\"event\":\"frontend\""))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["url"].as_str().map(str::to_owned))
        .unwrap();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let answer = complete(port, "meta-llama/Llama-3.1-8B-Instruct");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"completion_tokens\":4"), "{answer}");
    job.signal("TERM");
    let status = job.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", job.stderr());
    assert!(job
        .stderr()
        .contains("serving `meta-llama/Llama-3.1-8B-Instruct`"));
    assert_no_leftovers(&job);
}

/// The pid of local rank `rank` of a job (from its environment).
fn rank_pid(job: &Job, rank: u32) -> u32 {
    let needle = format!("COHORT_LOCAL_RANK={rank}");
    marked(&job.marker)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .unwrap_or_else(|| panic!("no process for local rank {rank}"))
}

#[test]
fn a_rank_that_stops_answering_is_detected_and_the_job_ends() {
    let tmp = TempDir::new("launch-lost");
    let r = recipe(tmp.path(), 31_500, "", LONG_BENCH);
    let mut job = Job::start(tmp.path(), &r, &[]);
    job.wait_event("bench_start", Duration::from_secs(60));
    let victim = rank_pid(&job, 2);
    // A hung node: the process is there, its heartbeats stop.
    let ok = Command::new("kill")
        .args(["-STOP", &victim.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let stopped = Instant::now();
    let status = job.wait(Duration::from_secs(90));
    let err = job.stderr();
    assert_eq!(status.code(), Some(15), "stderr:\n{err}");
    eprintln!("rank 2 stopped → job ended after {:?}", stopped.elapsed());
    let s = summary(&job);
    assert!(
        s["incidents"]
            .to_string()
            .contains("rank 2 is lost: no heartbeat"),
        "{s}"
    );
    assert_eq!(s["ending"], "failed: rank lost");
    // Rank 0 woke the hung rank and told it to stop: its engines are gone too.
    assert_no_leftovers(&job);
}

#[test]
fn a_real_engine_that_is_not_installed_ends_the_job_fast_naming_it() {
    let tmp = TempDir::new("launch-novllm");
    let topo = repo_root().join("recipes/topologies/hgx-h100-4nodes.toml");
    let r = tmp.path().join("recipe.toml");
    std::fs::write(
        &r,
        format!(
            "name = \"vllm-missing\"\n[model]\nname = \"meta-llama/Llama-3.1-8B-Instruct\"\n\
             [engine]\nkind = \"vllm\"\n[deploy]\nmode = \"disaggregated\"\ntopology = \"{}\"\n\
             base_port = 31700\n[deploy.prefill]\ngpus = 4\nper_domain = 1\n\
             [deploy.decode]\ngpus = 4\nper_domain = 1\n",
            topo.display()
        ),
    )
    .unwrap();
    let mut job = Job::start(tmp.path(), &r, &[]);
    // PATH without any `vllm`: the adapter's command cannot be found.
    let status = job.wait(Duration::from_secs(60));
    let err = job.stderr();
    assert_eq!(status.code(), Some(13), "stderr:\n{err}");
    assert!(
        err.contains("engine-start") && err.contains("(vllm)"),
        "{err}"
    );
    assert_no_leftovers(&job);
}
