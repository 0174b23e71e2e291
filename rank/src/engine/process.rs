//! One engine process: spawned into its own process group with its log file and CPU
//! set, stopped with TERM → grace → KILL, and killed with its group when dropped.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::topology::CpuSet;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// Its exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
}

impl From<std::process::ExitStatus> for ExitInfo {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Self {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(s) => write!(f, "killed by signal {sig} ({})", s.as_str()),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// A process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create the log file `{}`", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind to CPUs `{cpus}` (are they in this job's cgroup? see `taskset -pc $$`)")]
    Affinity {
        cpus: CpuSet,
        #[source]
        source: nix::Error,
    },
    #[error("cannot run `{}`", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The process group of a started engine: killed with SIGKILL when dropped, so no engine
/// outlives the task that owns it.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    pgid: i32,
}

impl ProcessGroup {
    pub(crate) fn id(&self) -> i32 {
        self.pgid
    }

    /// Sends `signal` to every process of the group; a group already gone is not an error.
    pub(crate) fn signal(&self, signal: Signal) {
        let _ = kill_group(self.pgid, signal);
    }
}

/// Sends `signal` to the process group `pgid`, ignoring a group that no longer exists.
pub(crate) fn kill_group(pgid: i32, signal: Signal) -> nix::Result<()> {
    match killpg(Pid::from_raw(pgid), signal) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// What to start.
#[derive(Debug)]
pub(crate) struct SpawnSpec<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [String],
    /// The complete environment (nothing is inherited).
    pub(crate) env: &'a [(String, String)],
    /// stdout and stderr go here (created or truncated).
    pub(crate) log: &'a Path,
    pub(crate) cpus: Option<&'a CpuSet>,
}

/// A started process and its group.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: tokio::process::Child,
    pub(crate) group: ProcessGroup,
    pub(crate) pid: u32,
}

/// Starts the process in a new process group. The CPU set is applied by spawning from a
/// fresh thread whose own affinity is that set: the child inherits it from its first
/// instruction, with no window in which its threads run elsewhere and no `unsafe`
/// `pre_exec`.
pub(crate) async fn spawn(spec: SpawnSpec<'_>) -> Result<Spawned, SpawnError> {
    let log_err = |source| SpawnError::Log {
        path: spec.log.to_owned(),
        source,
    };
    let out = std::fs::File::create(spec.log).map_err(log_err)?;
    let err = out.try_clone().map_err(log_err)?;
    let mut cmd = tokio::process::Command::new(spec.program);
    cmd.args(spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    let cpus = spec.cpus.cloned();
    let program = spec.program.to_owned();
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cohort-spawn".into())
        .spawn(move || {
            let _entered = runtime.enter();
            let result = bind_this_thread(cpus.as_ref()).and_then(|()| {
                cmd.spawn()
                    .map_err(|source| SpawnError::Spawn { program, source })
            });
            let _ = tx.send(result);
        })
        .map_err(|source| SpawnError::Spawn {
            program: spec.program.to_owned(),
            source,
        })?;
    let child = rx.await.map_err(|_| SpawnError::Spawn {
        program: spec.program.to_owned(),
        source: std::io::Error::other("the spawning thread panicked"),
    })??;
    let pid = child.id().unwrap_or_default();
    let pgid = i32::try_from(pid).unwrap_or_default();
    Ok(Spawned {
        child,
        group: ProcessGroup { pgid },
        pid,
    })
}

fn bind_this_thread(cpus: Option<&CpuSet>) -> Result<(), SpawnError> {
    let Some(cpus) = cpus.filter(|c| !c.is_empty()) else {
        return Ok(());
    };
    let affinity_err = |source| SpawnError::Affinity {
        cpus: cpus.clone(),
        source,
    };
    let mut set = nix::sched::CpuSet::new();
    for &cpu in cpus.cpus() {
        set.set(cpu as usize).map_err(affinity_err)?;
    }
    // Pid 0 is the calling thread only: the rest of cohort keeps its affinity.
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set).map_err(affinity_err)
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stopped {
    pub exit: ExitInfo,
    /// Whether the group ignored TERM for the grace period and was killed.
    pub escalated: bool,
}

/// TERM to the group, up to `grace` for the leader to exit, then KILL; finally KILL to
/// whatever is left of the group (workers the engine forked and did not reap).
pub(crate) async fn stop(spawned: &mut Spawned, grace: Duration) -> Stopped {
    spawned.group.signal(Signal::SIGTERM);
    let (status, escalated) = match tokio::time::timeout(grace, spawned.child.wait()).await {
        Ok(status) => (status, false),
        Err(_) => {
            spawned.group.signal(Signal::SIGKILL);
            (spawned.child.wait().await, true)
        }
    };
    spawned.group.signal(Signal::SIGKILL);
    let exit = status.map(ExitInfo::from).unwrap_or(ExitInfo {
        code: None,
        signal: None,
    });
    Stopped { exit, escalated }
}
