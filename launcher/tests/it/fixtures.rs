//! Shared fixtures: the `cohort` binary, temporary directories, and a local Slurm cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Set to skip the tests that need a local Slurm cluster (the README's test command
/// installs Slurm and never sets it).
pub(crate) const SKIP_VAR: &str = "COHORT_SKIP_SLURM_TESTS";

pub(crate) fn cohort() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A directory removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cohort-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running local Slurm cluster; `down` stops exactly the daemons `up` started.
pub(crate) struct Cluster {
    dir: TempDir,
    conf: PathBuf,
}

fn script() -> PathBuf {
    repo_root().join("tests/slurm/cluster.sh")
}

impl Cluster {
    /// Brings up a cluster: `nodes == 0` is one node named after this host, otherwise
    /// `node[1-N]` emulated nodes. Returns `None` when told to skip.
    pub(crate) fn up(tag: &str, nodes: u32, port_base: u16) -> Option<Self> {
        if std::env::var_os(SKIP_VAR).is_some() {
            eprintln!("SKIPPED: {SKIP_VAR} is set");
            return None;
        }
        let dir = TempDir::new(tag);
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(script())
            .args(["up", "--dir"])
            .arg(dir.path())
            .args([
                "--nodes",
                &nodes.to_string(),
                "--port-base",
                &port_base.to_string(),
            ])
            .output()
            .expect("run tests/slurm/cluster.sh");
        let cluster = Self {
            conf: dir.path().join("slurm.conf"),
            dir,
        };
        assert!(
            out.status.success(),
            "bringing up the local Slurm cluster failed (run the README's test command to \
             install Slurm, or set {SKIP_VAR}=1):\n{}",
            stderr(&out)
        );
        eprintln!("{tag}: Slurm cluster up in {:.1?}", started.elapsed());
        Some(cluster)
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A Slurm client command (`sbatch`, `scontrol`, …) aimed at this cluster.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// Submits a batch script and returns the job id.
    pub(crate) fn sbatch(&self, script: &str) -> u64 {
        let path = self.dir().join("job.sbatch");
        std::fs::write(&path, script).expect("write job script");
        let out = self
            .command("sbatch")
            .arg("--parsable")
            .arg("--chdir")
            .arg(self.dir())
            .arg(&path)
            .output()
            .expect("run sbatch");
        assert!(out.status.success(), "sbatch failed: {}", stderr(&out));
        let text = stdout(&out);
        let id = text.trim().split(';').next().unwrap_or_default();
        id.parse()
            .unwrap_or_else(|_| panic!("sbatch printed `{text}`, not a job id"))
    }

    /// Polls `scontrol show job` until the job ends (not `sbatch --wait`, which is slow)
    /// and returns its final state. Gives up after `limit`, cancelling the job.
    pub(crate) fn wait(&self, job: u64, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let out = self
                .command("scontrol")
                .args(["show", "job", "-o", &job.to_string()])
                .output()
                .expect("run scontrol");
            let text = stdout(&out);
            let state = text
                .split_whitespace()
                .find_map(|field| field.strip_prefix("JobState="))
                .unwrap_or("UNKNOWN")
                .to_owned();
            let running = matches!(
                state.as_str(),
                "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING" | "UNKNOWN"
            );
            if !running {
                return state;
            }
            if Instant::now() > deadline {
                let _ = self.command("scancel").arg(job.to_string()).status();
                panic!(
                    "job {job} still {state} after {limit:?}:\n{text}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn log_tail(&self) -> String {
        let log = self.dir().join("log/slurmctld.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(script())
            .args(["down", "--dir"])
            .arg(self.dir())
            .output();
        if let Ok(out) = out {
            if !out.status.success() {
                eprintln!("cluster.sh down failed: {}", stderr(&out));
            }
        }
    }
}
