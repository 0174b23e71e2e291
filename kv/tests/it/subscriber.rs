//! The subscriber against a real libzmq peer: a Python (pyzmq) stand-in for vLLM's
//! publisher (`fake_vllm_publisher.py`) replays the captured vLLM frames over PUB and
//! serves vLLM's replay protocol over ROUTER, on 127.0.0.1.
//!
//! Needs `python3` with `pyzmq`; without it these tests fail, unless
//! `COHORT_SKIP_PYTHON_TESTS` is set.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cohort_kv::decode::{decode_payload, Dialect};
use cohort_kv::service::{IndexerConfig, IndexerService};
use cohort_kv::subscriber::{BackoffConfig, Subscriber, SubscriberConfig, SubscriberStats};
use cohort_kv::{to_ops, BlockHash, EventBatch, KvIndexer, WorkerId};

use crate::support::{captured_frames, FRAMES_DIR};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/fake_vllm_publisher.py"
);
const WORKER: WorkerId = WorkerId(3);
const WAIT: Duration = Duration::from_secs(15);

/// The Python publisher; killed (by PID) and reaped on drop.
struct PyEngine {
    child: Child,
    pub_port: u16,
    router_port: u16,
}

/// What the stand-in does with the captured frames.
#[derive(Clone, Copy)]
struct Script<'a> {
    /// Frames `first..count` are published, numbered from 0.
    first: usize,
    count: usize,
    live_skip: &'a str,
    buffer_skip: &'a str,
}

impl PyEngine {
    /// `None` when Python tests are skipped (`COHORT_SKIP_PYTHON_TESTS`).
    fn start(s: Script<'_>, ports: (u16, u16)) -> Option<PyEngine> {
        if !python_available() {
            return None;
        }
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .arg(FRAMES_DIR)
            .arg(s.count.to_string())
            .arg(ports.0.to_string())
            .arg(ports.1.to_string())
            .arg(s.live_skip)
            .arg(s.buffer_skip)
            .arg(s.first.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // A thread that reads one line and ends (with the pipe) when the child does.
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut engine = PyEngine {
            child,
            pub_port: 0,
            router_port: 0,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the publisher prints its ports within 20 s");
        let ports: Vec<u16> = line
            .strip_prefix("ports ")
            .unwrap_or_else(|| panic!("unexpected publisher output {line:?}"))
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        (engine.pub_port, engine.router_port) = (ports[0], ports[1]);
        Some(engine)
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        // Reap it; `kill` is SIGKILL, so this returns at once.
        let _ = self.child.wait();
    }
}

impl Drop for PyEngine {
    fn drop(&mut self) {
        self.kill();
    }
}

fn python_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import zmq"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var_os("COHORT_SKIP_PYTHON_TESTS").is_some() {
        return false;
    }
    panic!(
        "these tests need `python3` with `pyzmq` (a libzmq peer): `pip install pyzmq`, \
         or set COHORT_SKIP_PYTHON_TESTS=1 to skip them"
    );
}

/// The index one worker ends with when `frames` (payloads, numbered by `seq`) are
/// applied directly.
fn direct(frames: impl IntoIterator<Item = usize>, renumber_from: Option<usize>) -> Vec<BlockHash> {
    let all = captured_frames();
    let mut idx = KvIndexer::new();
    for (k, i) in frames.into_iter().enumerate() {
        let payload = decode_payload(&all[i].1[2], Dialect::Vllm).unwrap();
        let seq = renumber_from.map_or(i, |_| k) as u64;
        let ops = to_ops(&payload.events, 32).unwrap();
        idx.apply(WORKER, &EventBatch { event_id: seq, ops });
    }
    idx.worker_block_hashes(WORKER)
}

fn config(pub_port: u16, router_port: u16) -> SubscriberConfig {
    let mut c = SubscriberConfig::new(
        WORKER,
        format!("tcp://127.0.0.1:{pub_port}"),
        Some(format!("tcp://127.0.0.1:{router_port}")),
        Dialect::Vllm,
        32,
    );
    c.connect_timeout = Duration::from_millis(500);
    c.replay_timeout = Duration::from_secs(2);
    c.backoff = BackoffConfig {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        jitter: 0.5,
    };
    c
}

async fn wait_for(
    sub: &Subscriber,
    what: &str,
    f: impl FnMut(&SubscriberStats) -> bool,
) -> SubscriberStats {
    match tokio::time::timeout(WAIT, sub.handle().wait_for(f)).await {
        Ok(Some(s)) => s,
        _ => panic!(
            "subscriber: {what} within {WAIT:?}; stats {:?}",
            sub.handle().stats()
        ),
    }
}

/// The worker's blocks once they equal `want`, or what they are after `WAIT`. The index
/// answers queries ahead of queued updates, so the subscriber's stats can say a message
/// was applied while its update still waits in the indexer's queue.
async fn settled_blocks(service: &IndexerService, want: &[BlockHash]) -> Vec<BlockHash> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = service.handle().worker_blocks(WORKER).await.unwrap();
        if got == want || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Frame 5 is not delivered live; the gap at 6 is seen, replay serves 5 onwards, and
/// the index equals the one from applying every frame directly. (Frames 0..10: later
/// ones evict every earlier block, which would hide a lost frame.)
#[test]
fn gap_is_filled_by_replay_from_a_libzmq_publisher() {
    let script = Script {
        first: 0,
        count: 10,
        live_skip: "5",
        buffer_skip: "-",
    };
    let Some(engine) = PyEngine::start(script, (0, 0)) else {
        return;
    };
    let want = direct(0..10, None);
    // The test can fail: without frame 5 the index differs.
    assert_ne!(want, direct((0..10).filter(|&i| i != 5), None));
    runtime().block_on(async {
        let service = IndexerService::spawn(KvIndexer::new(), IndexerConfig::default());
        let sub = Subscriber::spawn(
            config(engine.pub_port, engine.router_port),
            service.handle(),
        );
        let s = wait_for(&sub, "apply 10 messages, receive 9", |s| {
            s.next_seq == Some(10) && s.live == 9
        })
        .await;
        assert_eq!(settled_blocks(&service, &want).await, want);
        let s = SubscriberStats {
            last_error: None,
            ..s
        };
        // One replay at start (empty buffer), one for the gap: 5..9 replayed (4 is the
        // anchor), live 6..9 skipped as already applied.
        assert_eq!(
            (s.gaps, s.replays, s.replayed, s.resets, s.bad_messages),
            (1, 2, 5, 0, 0),
            "{s:?}"
        );
        assert_eq!((s.live, s.duplicates, s.applied), (9, 4, 10), "{s:?}");
        sub.stop().await;
        let idx = service.shutdown().await.unwrap();
        assert_eq!(idx.worker_block_hashes(WORKER), want);
    });
    engine.stop();
}

/// Frame 5 is lost for good (not in the replay buffer either): the worker is reset
/// and rebuilt from frame 6 on.
#[test]
fn gap_replay_cannot_cover_resets_the_worker() {
    let script = Script {
        first: 0,
        count: 10,
        live_skip: "5",
        buffer_skip: "5",
    };
    let Some(engine) = PyEngine::start(script, (0, 0)) else {
        return;
    };
    let want = direct(6..10, None);
    assert_ne!(want, direct(0..10, None));
    runtime().block_on(async {
        let service = IndexerService::spawn(KvIndexer::new(), IndexerConfig::default());
        let sub = Subscriber::spawn(
            config(engine.pub_port, engine.router_port),
            service.handle(),
        );
        let s = wait_for(&sub, "apply up to 9", |s| s.next_seq == Some(10)).await;
        assert_eq!(settled_blocks(&service, &want).await, want);
        assert_eq!((s.gaps, s.resets), (1, 1), "{s:?}");
        sub.stop().await;
        service.shutdown().await.unwrap();
    });
    engine.stop();
}

/// The subscriber starts before the engine (connection refused: it backs off and
/// retries), then the engine restarts: numbers start again at 0 with other payloads,
/// and the worker is reset and rebuilt from the new engine's stream.
#[test]
fn waits_for_the_engine_and_follows_its_restart() {
    if !python_available() {
        return;
    }
    let ports = (free_port(), free_port());
    let want_first = direct(0..9, None);
    let want_second = direct(9..16, Some(0));
    runtime().block_on(async {
        let service = IndexerService::spawn(KvIndexer::new(), IndexerConfig::default());
        let mut c = config(ports.0, ports.1);
        c.idle_probe = Duration::from_millis(300);
        let sub = Subscriber::spawn(c, service.handle());
        wait_for(&sub, "fail to connect", |s| s.connect_failures >= 1).await;
        let script = Script {
            first: 0,
            count: 9,
            live_skip: "-",
            buffer_skip: "-",
        };
        let engine = PyEngine::start(script, ports).expect("python checked above");
        wait_for(&sub, "apply 9 messages", |s| s.next_seq == Some(9)).await;
        assert_eq!(settled_blocks(&service, &want_first).await, want_first);
        engine.stop();

        let script = Script {
            first: 9,
            count: 16,
            live_skip: "-",
            buffer_skip: "-",
        };
        let engine = PyEngine::start(script, ports).expect("python checked above");
        let s = wait_for(&sub, "follow the restarted engine", |s| {
            s.resets >= 1 && s.next_seq == Some(7)
        })
        .await;
        assert_eq!(
            settled_blocks(&service, &want_second).await,
            want_second,
            "{s:?}"
        );
        assert!(s.connects >= 2, "{s:?}");
        sub.stop().await;
        service.shutdown().await.unwrap();
        engine.stop();
    });
}

/// A port nothing listens on right now (the OS picks it; the listener is closed).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
