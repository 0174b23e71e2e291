//! MPI bootstrap under a real `mpirun` (Open MPI): four ranks on this machine.
//!
//! The test binary runs itself under `mpirun`: with [`CHILD`] set, the ignored test
//! [`mpi_rank_child`] bootstraps and prints one JSON line per rank, which the parent
//! tests collect and compare. Run with `cargo test -p cohort-rank --features mpi --test mpi`.
#![cfg(feature = "mpi")]

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cohort_rank::bootstrap::{self, vars, Method, Mode, Request};
use serde_json::{json, Value};

/// Marks a process started by these tests under `mpirun`.
const CHILD: &str = "COHORT_MPI_TEST_CHILD";
/// `mpi` makes the child ask for `--bootstrap mpi`; otherwise it uses `auto`.
const CHILD_MODE: &str = "COHORT_MPI_TEST_MODE";
/// What each child's line starts with.
const PREFIX: &str = "cohort-mpi-test ";
/// Far above a healthy run (about a second); a rank stuck in a collective hits it.
const TIMEOUT: Duration = Duration::from_secs(90);
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A token's fingerprint: the lines compare tokens without printing them.
fn fingerprint(token: &str) -> String {
    let mut h = DefaultHasher::new();
    token.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// One rank of a run started by [`mpirun`]; does nothing otherwise (hence ignored).
#[test]
#[ignore = "a rank of the other tests' `mpirun`, not a test by itself"]
fn mpi_rank_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let mode = match env.get(CHILD_MODE).map(String::as_str) {
        Some("mpi") => Mode::Mpi,
        _ => Mode::Auto,
    };
    let req = Request {
        mode,
        ..Request::default()
    };
    let line = match bootstrap::resolve(&req, &env) {
        Ok(b) => json!({
            "rank": b.rank,
            "size": b.size,
            "method": b.method.to_string(),
            "node": b.node,
            "rendezvous": format!("{}:{}", b.rendezvous.host, b.rendezvous.port),
            "port_origin": b.rendezvous.port_origin,
            "token": fingerprint(b.token.expose()),
            "reason": b.reason,
        }),
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            json!({ "rank": env.get("OMPI_COMM_WORLD_RANK"), "error": text })
        }
    };
    #[allow(clippy::print_stdout)] // the parent reads it
    {
        println!("{PREFIX}{line}");
    }
}

/// Runs `mpirun` with `apps` (`-n N [env VAR=…] <this binary>` each, `:`-separated), in
/// child mode with `mode`, and returns every rank's line, in rank order of arrival.
fn mpirun(mode: &str, apps: &[(u32, &[&str])]) -> Vec<Value> {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe"]);
    for (i, (n, env)) in apps.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(["-n", &n.to_string()]);
        if !env.is_empty() {
            cmd.arg("env").args(*env);
        }
        cmd.arg(&exe).args([
            "--exact",
            "mpi_rank_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ]);
    }
    for var in [
        vars::JOB_TOKEN,
        vars::JOB_TOKEN_FILE,
        vars::RENDEZVOUS_PORT,
        vars::LOCAL_RANK,
        vars::LOCAL_SIZE,
        vars::LOCAL_RENDEZVOUS,
    ] {
        cmd.env_remove(var);
    }
    cmd.env(CHILD, "1")
        .env(CHILD_MODE, mode)
        // Containers often forbid the cross-memory attach Open MPI's shared memory
        // transport tries first; it would warn on every rank.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd
        .spawn()
        .expect("cannot start `mpirun`: is Open MPI installed (`openmpi-bin`)?");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out: Output = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // mpirun forwards TERM to its ranks; the group kill catches what remains.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            std::thread::sleep(Duration::from_secs(3));
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("`mpirun` did not finish within {TIMEOUT:?}: a rank is stuck in bootstrap");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`mpirun` failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
        .lines()
        // Found anywhere in a line: `mpirun` may put another rank's libtest progress
        // dot (printed without a newline) before it.
        .filter_map(|l| l.find(PREFIX).map(|at| &l[at + PREFIX.len()..]))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The lines sorted by rank, after checking there are `n`, without errors.
fn by_rank(mut lines: Vec<Value>, n: usize) -> Vec<Value> {
    assert_eq!(lines.len(), n, "{lines:#?}");
    for l in &lines {
        assert!(l.get("error").is_none(), "{l}");
    }
    lines.sort_by_key(|l| l["rank"].as_u64());
    lines
}

#[test]
fn four_ranks_agree_under_mpirun() {
    let lines = by_rank(mpirun("auto", &[(4, &[])]), 4);
    let ranks: Vec<_> = lines.iter().map(|l| l["rank"].as_u64().unwrap()).collect();
    assert_eq!(ranks, vec![0, 1, 2, 3]);
    let nodes: std::collections::BTreeSet<_> =
        lines.iter().map(|l| l["node"].to_string()).collect();
    assert_eq!(nodes.len(), 4, "node names must be distinct: {nodes:?}");
    for l in &lines {
        assert_eq!(l["size"], 4);
        assert_eq!(l["method"], "mpi");
        // One machine: rank 0 on loopback, each node `<host>-r<rank>`.
        assert!(
            l["rendezvous"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{l}"
        );
        let suffix = format!("-r{}", l["rank"]);
        assert!(l["node"].as_str().unwrap().ends_with(&suffix), "{l}");
        for same in ["token", "rendezvous", "port_origin", "reason"] {
            assert_eq!(
                l[same], lines[0][same],
                "rank {} differs in {same}",
                l["rank"]
            );
        }
    }
    assert_eq!(
        lines[0]["reason"],
        "under `mpirun` (Open MPI, OMPI_COMM_WORLD_SIZE=4)"
    );
    // A generated token: one per run, so two runs differ.
    let again = by_rank(mpirun("auto", &[(2, &[])]), 2);
    assert_ne!(again[0]["token"], lines[0]["token"]);
}

#[test]
fn the_token_and_port_given_to_rank0_reach_every_rank() {
    let token_var = format!("{}={TOKEN}", vars::JOB_TOKEN);
    let port_var = format!("{}=23456", vars::RENDEZVOUS_PORT);
    let rank0_env = [token_var.as_str(), port_var.as_str()];
    let lines = by_rank(mpirun("mpi", &[(1, &rank0_env), (2, &[])]), 3);
    for l in &lines {
        assert_eq!(l["token"], fingerprint(TOKEN), "{l}");
        assert_eq!(l["rendezvous"], "127.0.0.1:23456", "{l}");
        assert_eq!(l["port_origin"], "from `COHORT_RENDEZVOUS_PORT`", "{l}");
        assert!(
            l["reason"]
                .as_str()
                .unwrap()
                .starts_with("asked for with `--bootstrap mpi`, under `mpirun`"),
            "{l}"
        );
    }
}

#[test]
fn rank0s_failure_ends_every_rank_with_its_reason() {
    let bad_port = format!("{}=port", vars::RENDEZVOUS_PORT);
    let lines = mpirun("auto", &[(1, &[bad_port.as_str()]), (3, &[])]);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for l in &lines {
        let err = l["error"].as_str().unwrap_or_else(|| panic!("{l}"));
        assert!(
            err.contains("COHORT_RENDEZVOUS_PORT") && err.contains("`port`"),
            "{err}"
        );
    }
    let relayed = lines
        .iter()
        .filter(|l| {
            l["error"]
                .as_str()
                .unwrap()
                .contains("rank 0 could not bootstrap")
        })
        .count();
    assert_eq!(relayed, 3, "{lines:#?}");
}

#[test]
fn auto_without_mpi_launcher_variables_does_not_pick_mpi() {
    // No launcher variables: one local rank, and MPI is never initialised.
    let b = bootstrap::resolve(&Request::default(), &BTreeMap::new()).unwrap();
    assert_eq!(b.method, Method::Local);
    // Asking for MPI without a launcher says how to start one, rather than running a
    // one-rank MPI job.
    let req = Request {
        mode: Mode::Mpi,
        ..Request::default()
    };
    let err = bootstrap::resolve(&req, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PMIX_RANK") && err.contains("mpirun") && err.contains("srun --mpi=pmix"),
        "{err}"
    );
}
