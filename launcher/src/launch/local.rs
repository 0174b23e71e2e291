//! `cohort launch --local N`: rank 0 starts ranks 1..N as child processes of itself,
//! with the same arguments and their identity in the environment
//! (`cohort_rank::bootstrap::local::child_env`). Each child dies with rank 0
//! (`PR_SET_PDEATHSIG`); rank 0 reaps every one it started before it exits.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use cohort_rank::bootstrap::local::child_env;
use tokio::process::{Child, Command};

use super::args::Launch;

/// The ranks this process started.
#[derive(Debug, Default)]
pub(crate) struct LocalRanks {
    children: Vec<(u32, Child)>,
}

impl LocalRanks {
    /// Starts ranks 1..size, which join rank 0 at `rank0`. Must run on the thread that
    /// outlives them (the launcher's main thread): the kernel's parent-death signal
    /// follows the thread that forked.
    pub(crate) fn spawn(launch: &Launch, rank0: SocketAddr) -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut ranks = Self::default();
        for rank in 1..launch.boot.size {
            let mut cmd = Command::new(&launch.exe);
            cmd.args(&args)
                .envs(child_env(rank, launch.boot.size, rank0, &launch.boot.token))
                .kill_on_drop(true);
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start local rank {rank}"))?;
            ranks.children.push((rank, child));
        }
        Ok(ranks)
    }

    /// The first rank to exit, with its status; pending forever when none does (or
    /// there are none).
    pub(crate) async fn first_exit(&mut self) -> (u32, std::process::ExitStatus) {
        if self.children.is_empty() {
            return std::future::pending().await;
        }
        loop {
            for (rank, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    return (*rank, status);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `grace` for every rank to exit; ranks still there are woken and sent
    /// TERM together (so that they stop their engines), then KILL 5 s later. Returns the
    /// ranks that had to be told.
    pub(crate) async fn reap(&mut self, grace: Duration) -> Vec<u32> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let deadline = tokio::time::Instant::now() + grace;
        let mut told = Vec::new();
        for (rank, child) in &mut self.children {
            if tokio::time::timeout_at(deadline, child.wait())
                .await
                .is_err()
            {
                told.push(*rank);
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
            }
        }
        let last = tokio::time::Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut self.children {
            if tokio::time::timeout_at(last, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        told
    }
}
