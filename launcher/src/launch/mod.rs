//! `cohort launch`: one batch job (or serving session) from bootstrap to results.
//!
//! Every rank runs the same command. The flow (see `docs/launch.md`):
//! bootstrap → discover this node → join rank 0 → (rank 0) preflight, plan, publish →
//! every rank starts its instances → (rank 0) readiness → frontend → benchmark or serve
//! → drain → stop → results and an exit status that says what happened.
//!
//! - [`node`]: what a rank says about its node when it joins (real or emulated).
//! - [`wire`]: the plan as rank 0 publishes it: which rank starts which instance.
//! - [`agent`]: every rank's part: start its instances, report them, obey stop.
//! - [`rank0`]: the coordinator's part: plan, readiness, frontend, benchmark, endings.
//! - [`local`]: `--local N`: the ranks 1..N as child processes.
//! - [`results`]: the results directory and `summary.md`.
//! - [`signals`]: SIGUSR1/SIGTERM/SIGINT: the first drains, the second stops at once.

mod agent;
mod args;
mod local;
mod node;
mod preview;
mod rank0;
mod results;
mod signals;
mod wire;

use std::io::Write as _;
use std::process::ExitCode;

pub(crate) use args::LaunchArgs;
pub(crate) use preview::{commands, Wrapping};

/// How a launch ended; the process exit status says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Everything ran: exit 0.
    Completed,
    /// Stopped early by a signal (time limit, `scancel`, Ctrl-C); results are marked
    /// partial: exit 3.
    Stopped,
    /// Bootstrap, joining or the control plane failed: exit 10.
    Bootstrap,
    /// A preflight check failed: exit 11.
    Preflight,
    /// No plan: exit 12.
    Plan,
    /// An engine did not start or become ready: exit 13.
    EngineStart,
    /// Engines died while serving and a role has none left: exit 14.
    EngineDied,
    /// A rank disappeared: exit 15.
    RankLost,
    /// The benchmark failed: exit 16.
    Bench,
}

impl Ending {
    /// The process exit status.
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Completed => 0,
            Self::Stopped => 3,
            Self::Bootstrap => 10,
            Self::Preflight => 11,
            Self::Plan => 12,
            Self::EngineStart => 13,
            Self::EngineDied => 14,
            Self::RankLost => 15,
            Self::Bench => 16,
        }
    }

    /// One word for summaries.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Stopped => "stopped early (partial results)",
            Self::Bootstrap => "failed: bootstrap",
            Self::Preflight => "failed: preflight",
            Self::Plan => "failed: plan",
            Self::EngineStart => "failed: engine start",
            Self::EngineDied => "failed: engine died",
            Self::RankLost => "failed: rank lost",
            Self::Bench => "failed: benchmark",
        }
    }
}

/// A launch that ended before its end: which kind, and the message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) ending: Ending,
    pub(crate) error: anyhow::Error,
}

impl Failure {
    pub(crate) fn new(ending: Ending, error: impl Into<anyhow::Error>) -> Self {
        Self {
            ending,
            error: error.into(),
        }
    }
}

/// Extends results with the ending their failure means.
pub(crate) trait EndingExt<T> {
    fn ending(self, ending: Ending) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> EndingExt<T> for Result<T, E> {
    fn ending(self, ending: Ending) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(ending, e))
    }
}

/// Runs `cohort launch` and turns its ending into the exit status.
pub(crate) fn run(args: &LaunchArgs) -> ExitCode {
    let ending = match args::start(args) {
        Ok(ending) => ending,
        Err(f) => {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "error: {}", f.error);
            for cause in f.error.chain().skip(1) {
                let _ = writeln!(stderr, "  caused by: {cause}");
            }
            let _ = writeln!(
                stderr,
                "cohort launch: {} (exit {})",
                f.ending.name(),
                f.ending.code()
            );
            f.ending
        }
    };
    ExitCode::from(ending.code())
}
