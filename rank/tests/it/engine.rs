//! Engine supervision with real child processes: small stand-in programs (`sh`,
//! `python3`) for process groups, signals, log tails and the environment, and the real
//! `cohort sim` for readiness when the launcher binary has been built.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cohort_rank::engine::supervisor::MemoryBinding;
use cohort_rank::engine::{
    Endpoints, Engine, EngineContext, Handshake, InstanceEvent, InstanceSpec, LaunchSpec, Role,
    Supervisor, SupervisorConfig,
};
use tokio::sync::mpsc::UnboundedReceiver;

/// A generous cap on waiting for an event: only a broken supervisor reaches it.
const EVENT_CAP: Duration = Duration::from_secs(20);

/// An engine that runs a shell script (or any program) and probes a given URL.
#[derive(Debug)]
struct StandIn {
    program: String,
    args: Vec<String>,
    health_url: String,
    deadline: Duration,
}

impl StandIn {
    fn sh(script: &str) -> Self {
        Self {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            // Nothing listens on port 1: never ready.
            health_url: "http://127.0.0.1:1/health".into(),
            deadline: Duration::from_secs(300),
        }
    }
}

impl Engine for StandIn {
    fn name(&self) -> &'static str {
        "stand-in"
    }
    fn launch(&self, _ctx: &EngineContext<'_>) -> Option<LaunchSpec> {
        Some(LaunchSpec {
            program: self.program.clone().into(),
            args: self.args.clone(),
            env: vec![("FROM_ENGINE".into(), "yes".into())],
        })
    }
    fn endpoints(&self, _ctx: &EngineContext<'_>) -> Endpoints {
        Endpoints {
            url: String::new(),
            health_url: self.health_url.clone(),
            metrics_url: None,
            kv_events_url: None,
        }
    }
    fn ready_deadline(&self, _ctx: &EngineContext<'_>) -> Duration {
        self.deadline
    }
    fn handshake(&self) -> Handshake {
        Handshake::None
    }
}

fn spec(id: &str) -> InstanceSpec {
    InstanceSpec {
        id: id.into(),
        role: Role::Aggregated,
        host: "127.0.0.1".into(),
        port: 0,
        kv_events_port: None,
        gpus: vec![],
        cpus: None,
        mem_nodes: vec![],
        model: "llama-3.1-8b".into(),
        tp: 1,
        nvlink_domain: String::new(),
        extra_args: vec![],
        env: vec![],
        served_model_name: None,
        multi_node: None,
    }
}

fn log_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cohort-engine-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn supervisor(
    test: &str,
    engine: impl Engine + 'static,
    base_env: Vec<(String, String)>,
) -> (Supervisor, UnboundedReceiver<InstanceEvent>) {
    let mut config = SupervisorConfig::new(log_dir(test), base_env);
    config.stop_grace = Duration::from_millis(300);
    Supervisor::new(Arc::new(engine), config)
}

fn own_env() -> Vec<(String, String)> {
    std::env::vars().collect()
}

/// The next event for which `keep` is true (others are skipped).
async fn next_event(
    rx: &mut UnboundedReceiver<InstanceEvent>,
    keep: impl Fn(&InstanceEvent) -> bool,
) -> InstanceEvent {
    let wait = async {
        loop {
            let event = rx.recv().await.expect("the supervisor ended");
            if keep(&event) {
                return event;
            }
        }
    };
    tokio::time::timeout(EVENT_CAP, wait)
        .await
        .expect("no such event within the cap")
}

fn is_exit(e: &InstanceEvent) -> bool {
    matches!(e, InstanceEvent::Exited { .. })
}

/// Live (not zombie) processes of a process group, from `/proc`.
fn live_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the `(comm)`: state ppid pgrp …
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

/// Waits until the group has no live member; panics naming them at the cap.
async fn assert_group_gone(pgid: i32) {
    let deadline = tokio::time::Instant::now() + EVENT_CAP;
    while !live_members(pgid).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process group {pgid} still has {:?}",
            live_members(pgid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_child_that_dies_at_start_is_reported_with_status_and_log_tail() {
    let engine = StandIn::sh("echo loading weights; echo 'fatal: CUDA out of memory' >&2; exit 3");
    let (sup, mut events) = supervisor("dies", engine, own_env());
    sup.start(spec("decode-0")).await.unwrap();
    let InstanceEvent::Exited {
        instance,
        exit,
        was_ready,
        log_tail,
    } = next_event(&mut events, is_exit).await
    else {
        unreachable!()
    };
    assert_eq!(instance, "decode-0");
    assert_eq!(exit.code, Some(3));
    assert!(!was_ready);
    assert!(
        log_tail.contains("loading weights") && log_tail.contains("fatal: CUDA out of memory"),
        "{log_tail}"
    );
    assert_eq!(exit.to_string(), "exit code 3");
}

#[tokio::test]
async fn term_is_escalated_to_kill_for_a_child_that_ignores_it() {
    // `trap '' TERM` is inherited by the loop's `sleep`s: the whole group ignores TERM.
    let engine = StandIn::sh("trap '' TERM; echo up; while :; do sleep 1; done");
    let (sup, mut events) = supervisor("ignores-term", engine, own_env());
    sup.start(spec("prefill-0")).await.unwrap();
    let InstanceEvent::Started { log, .. } =
        next_event(&mut events, |e| matches!(e, InstanceEvent::Started { .. })).await
    else {
        unreachable!()
    };
    // TERM before the shell has run `trap` would end it at once: wait for `up`.
    let deadline = tokio::time::Instant::now() + EVENT_CAP;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("up")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the script never printed `up`"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pgid = sup.process_groups()["prefill-0"];
    let stopped = sup.stop("prefill-0").await.expect("it was running");
    assert!(stopped.escalated, "{stopped:?}");
    assert_eq!(stopped.exit.signal, Some(9));
    assert_group_gone(pgid).await;
    assert!(sup.process_groups().is_empty());
    assert!(sup.stop("prefill-0").await.is_none(), "stopped twice");
}

#[tokio::test]
async fn a_child_that_honours_term_is_not_killed() {
    let engine = StandIn::sh("exec sleep 300");
    let (sup, mut events) = supervisor("honours-term", engine, own_env());
    sup.start(spec("decode-1")).await.unwrap();
    next_event(&mut events, |e| matches!(e, InstanceEvent::Started { .. })).await;
    let stopped = sup.stop("decode-1").await.unwrap();
    assert!(!stopped.escalated, "{stopped:?}");
    assert_eq!(stopped.exit.signal, Some(15));
}

#[tokio::test]
async fn dropping_the_supervisor_leaves_no_process_of_the_group() {
    let engine = StandIn::sh("sleep 300 & sleep 300 & echo forked; wait");
    let (sup, mut events) = supervisor("drop", engine, own_env());
    sup.start(spec("aggregated-0")).await.unwrap();
    next_event(&mut events, |e| matches!(e, InstanceEvent::Started { .. })).await;
    let pgid = sup.process_groups()["aggregated-0"];
    // The shell and both sleeps, once the shell has forked them.
    let deadline = tokio::time::Instant::now() + EVENT_CAP;
    while live_members(pgid).len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never had 3 processes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(sup);
    assert_group_gone(pgid).await;
}

#[tokio::test]
async fn the_child_environment_is_sanitised_and_carries_the_gpus() {
    let mut base = own_env();
    base.retain(|(k, _)| !k.starts_with("SLURM_") && k != "CUDA_VISIBLE_DEVICES");
    base.extend(
        [
            ("SLURM_JOB_ID", "77"),
            ("SLURM_CPU_BIND", "quiet,mask_cpu:0x1"),
            ("SLURM_PROCID", "3"),
            ("SLURM_CPUS_PER_TASK", "8"),
            ("PMIX_RANK", "3"),
            ("CUDA_VISIBLE_DEVICES", "7"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let (sup, mut events) = supervisor("env", StandIn::sh("env; exit 0"), base);
    let mut s = spec("prefill-1");
    s.gpus = vec![2, 0];
    s.mem_nodes = vec![1];
    s.env = vec![("NCCL_DEBUG".into(), "INFO".into())];
    sup.start(s).await.unwrap();
    let InstanceEvent::Started { log, memory, .. } =
        next_event(&mut events, |e| matches!(e, InstanceEvent::Started { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(
        memory,
        MemoryBinding::NotApplied(vec![1]),
        "no numactl configured"
    );
    next_event(&mut events, is_exit).await;
    let env = std::fs::read_to_string(log).unwrap();
    let lines: Vec<&str> = env.lines().collect();
    for kept in [
        "SLURM_JOB_ID=77",
        "CUDA_VISIBLE_DEVICES=0,2",
        "CUDA_DEVICE_ORDER=PCI_BUS_ID",
        "NCCL_DEBUG=INFO",
        "FROM_ENGINE=yes",
    ] {
        assert!(lines.contains(&kept), "`{kept}` missing from:\n{env}");
    }
    for removed in [
        "SLURM_CPU_BIND=",
        "SLURM_PROCID=",
        "SLURM_CPUS_PER_TASK=",
        "PMIX_RANK=",
    ] {
        assert!(!env.contains(removed), "`{removed}` leaked into:\n{env}");
    }
}

#[tokio::test]
async fn the_child_runs_on_the_plan_cpus() {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    let cpu = (0..nix::sched::CpuSet::count())
        .rev()
        .find(|&c| allowed.is_set(c).unwrap_or(false))
        .unwrap();
    let engine = StandIn::sh("grep Cpus_allowed_list /proc/self/status");
    let (sup, mut events) = supervisor("cpus", engine, own_env());
    let mut s = spec("decode-2");
    s.cpus = Some(cohort_rank::topology::CpuSet::from_cpus([cpu as u32]));
    sup.start(s).await.unwrap();
    let InstanceEvent::Exited { log_tail, .. } = next_event(&mut events, is_exit).await else {
        unreachable!()
    };
    assert_eq!(log_tail.trim(), format!("Cpus_allowed_list:\t{cpu}"));
    // This process's own affinity is untouched.
    let after = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    assert_eq!(after, allowed);
}

#[tokio::test]
async fn an_engine_that_never_answers_is_reported_not_ready_and_stopped() {
    let mut engine = StandIn::sh("echo waiting for a GPU that never comes; exec sleep 300");
    engine.deadline = Duration::from_millis(300);
    let (sup, mut events) = supervisor("not-ready", engine, own_env());
    sup.start(spec("decode-3")).await.unwrap();
    next_event(&mut events, |e| matches!(e, InstanceEvent::Started { .. })).await;
    let pgid = sup.process_groups()["decode-3"];
    let InstanceEvent::NotReady {
        last_probe,
        log_tail,
        ..
    } = next_event(&mut events, |e| matches!(e, InstanceEvent::NotReady { .. })).await
    else {
        unreachable!()
    };
    assert!(last_probe.contains("127.0.0.1:1"), "{last_probe}");
    assert!(log_tail.contains("never comes"), "{log_tail}");
    assert_group_gone(pgid).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const HEALTH_SERVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[tokio::test]
async fn readiness_then_a_later_death_is_reported() {
    let port = free_port();
    let engine = StandIn {
        program: "python3".into(),
        args: vec!["-c".into(), HEALTH_SERVER.into(), port.to_string()],
        health_url: format!("http://127.0.0.1:{port}/health"),
        deadline: Duration::from_secs(20),
    };
    let (sup, mut events) = supervisor("ready", engine, own_env());
    sup.start(spec("aggregated-1")).await.unwrap();
    let InstanceEvent::Started { pid, .. } =
        next_event(&mut events, |e| matches!(e, InstanceEvent::Started { .. })).await
    else {
        unreachable!()
    };
    let ready = next_event(&mut events, |e| !matches!(e, InstanceEvent::Started { .. })).await;
    assert!(matches!(ready, InstanceEvent::Ready { .. }), "{ready:?}");
    // Kill it from outside, as the OOM killer would.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let InstanceEvent::Exited {
        exit,
        was_ready,
        log_tail,
        ..
    } = next_event(&mut events, is_exit).await
    else {
        unreachable!()
    };
    assert!(was_ready);
    assert_eq!(exit.signal, Some(9));
    assert!(log_tail.contains("serving"), "{log_tail}");
}

#[tokio::test]
async fn a_duplicate_or_unsafe_instance_id_is_refused() {
    let (sup, _events) = supervisor("ids", StandIn::sh("exec sleep 300"), own_env());
    sup.start(spec("decode-4")).await.unwrap();
    let err = sup.start(spec("decode-4")).await.unwrap_err().to_string();
    assert!(err.contains("already running"), "{err}");
    let err = sup.start(spec("../etc")).await.unwrap_err().to_string();
    assert!(err.contains("log file"), "{err}");
    sup.shutdown().await;
    assert!(sup.process_groups().is_empty());
}

#[tokio::test]
async fn a_missing_program_is_a_start_error_naming_it() {
    let engine = StandIn {
        program: "/nonexistent/vllm".into(),
        ..StandIn::sh("")
    };
    let (sup, _events) = supervisor("missing", engine, own_env());
    let err = sup.start(spec("prefill-9")).await.unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.contains("prefill-9") && chain.contains("/nonexistent/vllm"),
        "{chain}"
    );
}

/// The `cohort` binary: `COHORT_BIN`, else `target/<profile>/cohort` beside this test's
/// `deps/` directory (built by `cargo build -p cohort`).
fn cohort_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COHORT_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("cohort");
    candidate.is_file().then_some(candidate)
}

#[tokio::test]
async fn cohort_sim_becomes_ready_and_stops_on_term() {
    let Some(bin) = cohort_bin() else {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "SKIPPED cohort_sim_becomes_ready_and_stops_on_term: no `cohort` binary \
                 (set COHORT_BIN or run `cargo build -p cohort` first)"
            );
        }
        return;
    };
    let engine = cohort_rank::engine::sim::SimEngine::new(bin);
    let (sup, mut events) = supervisor("sim", engine, own_env());
    let mut s = spec("aggregated-0");
    s.port = free_port();
    s.extra_args = vec!["--threads".into(), "1".into()];
    sup.start(s).await.unwrap();
    let event = next_event(&mut events, |e| !matches!(e, InstanceEvent::Started { .. })).await;
    let InstanceEvent::Ready { endpoints, .. } = event else {
        panic!("not ready: {event:?}");
    };
    assert!(endpoints.health_url.ends_with("/health"));
    let stopped = sup.stop("aggregated-0").await.unwrap();
    assert!(
        !stopped.escalated,
        "the simulator ignored TERM: {stopped:?}"
    );
}

#[tokio::test]
async fn an_external_engine_is_attached_not_started() {
    // A health endpoint standing in for a server someone else started.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf).await;
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let engine = cohort_rank::engine::external::ExternalEngine::default();
    let (sup, mut events) = supervisor("external", engine, own_env());
    let mut s = spec("aggregated-7");
    s.port = port;
    sup.start(s).await.unwrap();
    let first = next_event(&mut events, |_| true).await;
    let InstanceEvent::Ready { endpoints, .. } = first else {
        panic!("expected ready without a process start: {first:?}");
    };
    assert_eq!(endpoints.url, format!("http://127.0.0.1:{port}"));
    assert!(
        sup.process_groups().is_empty(),
        "an external engine has no process"
    );
    assert!(sup.stop("aggregated-7").await.is_none());
    server.abort();
}
