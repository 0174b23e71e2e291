//! Stop signals: `SIGUSR1` (`sbatch --signal=B:USR1@N`, forwarded to the step by the
//! job script), `SIGTERM` (time limit, preemption, `scancel`) and `SIGINT` (Ctrl-C).
//! The first one drains; a second stops at once.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The stop signals, installed once at start.
#[derive(Debug)]
pub(crate) struct Signals {
    usr1: Signal,
    term: Signal,
    int: Signal,
    received: u32,
}

impl Signals {
    /// Installs the handlers (before anything is announced: a signal that arrives
    /// before them would kill the process without cleaning up).
    pub(crate) fn install() -> std::io::Result<Self> {
        Ok(Self {
            usr1: signal(SignalKind::user_defined1())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            received: 0,
        })
    }

    /// The next stop signal's name.
    pub(crate) async fn next(&mut self) -> &'static str {
        let name = tokio::select! {
            _ = self.usr1.recv() => "SIGUSR1",
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        };
        self.received += 1;
        name
    }

    /// Signals received so far.
    pub(crate) fn received(&self) -> u32 {
        self.received
    }
}
