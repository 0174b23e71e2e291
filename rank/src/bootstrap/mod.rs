//! Bootstrap: how this process learns its rank, the number of ranks, the job token and
//! how to reach rank 0 — chosen by `--bootstrap auto|mpi|slurm|local` and printed.
//!
//! - [`slurm`]: a task of an `srun` step without MPI: rank and size from the step's
//!   environment (through [`SlurmContext`]), rank 0 on the step's first node, a
//!   rendezvous port derived from the job and step ids ([`rendezvous::derived_port`]).
//! - [`local`]: `cohort launch --local N`: N ranks on this machine, rank 0 on loopback.
//! - `mpi` (`--features mpi`): under `mpirun` or `srun --mpi=pmix`, rank and size from
//!   MPI's world communicator, rank 0's token and address broadcast to the others.
//!   Without the feature, `--bootstrap mpi` is an error saying how to build it.
//!
//! [`resolve`] is a pure function of the request and an environment map: it reads no
//! process environment itself, so every rule here is tested without Slurm. Only the MPI
//! bootstrap does more (initialises MPI, talks to the other ranks, finalises MPI).

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod rendezvous;
pub mod slurm;
pub mod token;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use cohort_slurm::context::ContextError;
use cohort_slurm::{ProcessKind, SlurmContext};

pub use rendezvous::{retry, Backoff, RetryError};
pub use token::{JobToken, TokenError};

/// The environment variables bootstrap reads, in one place.
pub mod vars {
    /// Path of the job token file (mode 0600), written by the job script.
    pub const JOB_TOKEN_FILE: &str = "COHORT_JOB_TOKEN_FILE";
    /// The job token itself, when no file is used (never pass it on a command line).
    pub const JOB_TOKEN: &str = "COHORT_JOB_TOKEN";
    /// Overrides the rendezvous port derived from the job and step ids.
    pub const RENDEZVOUS_PORT: &str = "COHORT_RENDEZVOUS_PORT";
    /// Set by `cohort launch --local N` for the ranks it starts: this rank.
    pub const LOCAL_RANK: &str = "COHORT_LOCAL_RANK";
    /// Set by `cohort launch --local N` for the ranks it starts: N.
    pub const LOCAL_SIZE: &str = "COHORT_LOCAL_SIZE";
    /// Set by `cohort launch --local N` for the ranks it starts: rank 0's `host:port`.
    pub const LOCAL_RENDEZVOUS: &str = "COHORT_LOCAL_RENDEZVOUS";
    /// Variables an MPI launcher sets (Open MPI's `mpirun`, PMIx under `srun --mpi=pmix`,
    /// MPICH's PMI): their presence means "started by an MPI launcher".
    pub const MPI_MARKERS: &[&str] = &["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"];
}

/// `--bootstrap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// MPI under an MPI launcher, else the Slurm step, else local.
    #[default]
    Auto,
    Mpi,
    Slurm,
    Local,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "mpi" => Ok(Self::Mpi),
            "slurm" => Ok(Self::Slurm),
            "local" => Ok(Self::Local),
            _ => Err(format!(
                "`{s}` is not a bootstrap; use auto, mpi, slurm or local"
            )),
        }
    }
}

/// The bootstrap in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Mpi,
    Slurm,
    Local,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mpi => "mpi",
            Self::Slurm => "slurm",
            Self::Local => "local",
        })
    }
}

/// What the command line asked for; the environment is passed to [`resolve`] separately.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--bootstrap`.
    pub mode: Mode,
    /// `--local N`: this process starts N ranks on this machine and is rank 0.
    pub local_ranks: Option<u32>,
    /// `--rendezvous-port`: wins over [`vars::RENDEZVOUS_PORT`] and the derived port.
    pub rendezvous_port: Option<u16>,
    /// `--token-file`: wins over [`vars::JOB_TOKEN_FILE`].
    pub token_file: Option<PathBuf>,
}

/// Where rank 0's coordinator listens, as the other ranks dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// A host name (Slurm's node name) or an IP address.
    pub host: String,
    /// 0 for a local run's rank 0 before it binds: the OS picks one, which it hands to
    /// the ranks it starts.
    pub port: u16,
    /// Where the port came from, for the printed bootstrap line.
    pub port_origin: &'static str,
}

/// The outcome of bootstrap for this process.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub method: Method,
    /// Why this method was chosen (printed at start).
    pub reason: String,
    /// This process's rank, `0..size`.
    pub rank: u32,
    /// The number of ranks.
    pub size: u32,
    /// This rank's node name.
    pub node: String,
    /// How to reach rank 0.
    pub rendezvous: Rendezvous,
    pub token: JobToken,
}

impl Bootstrap {
    /// Whether this process is rank 0 (runs the coordinator).
    pub fn is_rank0(&self) -> bool {
        self.rank == 0
    }
}

impl fmt::Display for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bootstrap {}: rank {}/{} on `{}`, rank 0 at {}:{} (port {}); {}",
            self.method,
            self.rank,
            self.size,
            self.node,
            self.rendezvous.host,
            self.rendezvous.port,
            self.rendezvous.port_origin,
            self.reason
        )
    }
}

/// Bootstrap cannot say who this process is.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("`--bootstrap mpi` needs a cohort built with `--features mpi`; this one was not (use `--bootstrap slurm` under `srun`)")]
    MpiNotBuilt,
    #[error("`--bootstrap slurm` needs a task of an `srun` step, but this process is {found}; start cohort with `srun cohort launch …`")]
    NotAStepTask { found: &'static str },
    #[error("the Slurm environment cannot be read")]
    Slurm(#[source] ContextError),
    #[error("`{var}` is `{value}`: {problem}")]
    Invalid {
        var: &'static str,
        value: String,
        problem: String,
    },
    #[error("the job has {value} ranks, more than cohort supports ({max})", max = u32::MAX)]
    TooLarge { value: u64 },
    #[error("no job token: set `{file}` to a file of mode 0600 that the job script writes (`cohort sbatch` does), or `{var}`", file = vars::JOB_TOKEN_FILE, var = vars::JOB_TOKEN)]
    NoToken,
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Only with `--features mpi`.
    #[cfg(feature = "mpi")]
    #[error(transparent)]
    Mpi(#[from] mpi::MpiError),
}

fn kind_name(kind: ProcessKind) -> &'static str {
    match kind {
        ProcessKind::Outside => "outside any Slurm job",
        ProcessKind::BatchShell => "the batch script of the job (not a task)",
        ProcessKind::AllocationShell => "a shell in the allocation (not a task)",
        ProcessKind::StepTask => "a step task",
    }
}

/// Chooses the bootstrap and reads what it needs from `env` (pass `std::env::vars()`
/// collected at the program's edge).
///
/// With `--features mpi`, under an MPI launcher this is collective: every rank must call
/// it, from the thread that will be its only MPI user, before any other MPI use (see the
/// `mpi` module); MPI is finalised again before it returns.
pub fn resolve(req: &Request, env: &BTreeMap<String, String>) -> Result<Bootstrap, BootstrapError> {
    let mpi_marker = vars::MPI_MARKERS.iter().find(|v| env.contains_key(**v));
    match req.mode {
        #[cfg(feature = "mpi")]
        Mode::Mpi => return mpi::resolve(req, env, true),
        #[cfg(not(feature = "mpi"))]
        Mode::Mpi => return Err(BootstrapError::MpiNotBuilt),
        Mode::Local => return local::resolve(req, env, "asked for with `--bootstrap local`"),
        Mode::Slurm => {
            let ctx = SlurmContext::from_map(env).map_err(BootstrapError::Slurm)?;
            return slurm::resolve(req, env, &ctx, "asked for with `--bootstrap slurm`".into());
        }
        Mode::Auto => {}
    }
    if req.local_ranks.is_some() {
        return local::resolve(req, env, "`--local` given");
    }
    if env.contains_key(vars::LOCAL_RANK) {
        return local::resolve(req, env, "started by `cohort launch --local`");
    }
    // Before the Slurm step: under `mpirun` in an allocation, `SLURM_PROCID` numbers the
    // launcher's daemons, not the ranks.
    #[cfg(feature = "mpi")]
    if mpi_marker.is_some() {
        return mpi::resolve(req, env, false);
    }
    let ctx = SlurmContext::from_map(env).map_err(BootstrapError::Slurm)?;
    match ctx.kind {
        ProcessKind::StepTask => {
            let reason = match mpi_marker {
                Some(var) => format!(
                    "a Slurm step task; `{var}` says an MPI launcher started it, but this \
                     cohort was built without the `mpi` feature"
                ),
                None => "a Slurm step task".to_owned(),
            };
            slurm::resolve(req, env, &ctx, reason)
        }
        ProcessKind::Outside if mpi_marker.is_none() => {
            local::resolve(req, env, "outside Slurm and MPI: one local rank")
        }
        ProcessKind::Outside => Err(BootstrapError::MpiNotBuilt),
        kind => Err(BootstrapError::NotAStepTask {
            found: kind_name(kind),
        }),
    }
}

/// The token from `--token-file`, [`vars::JOB_TOKEN_FILE`] or [`vars::JOB_TOKEN`], in
/// that order; `None` when none is set.
fn read_token(
    req: &Request,
    env: &BTreeMap<String, String>,
) -> Result<Option<JobToken>, BootstrapError> {
    let file = req.token_file.clone().or_else(|| {
        env.get(vars::JOB_TOKEN_FILE)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = file {
        return Ok(Some(JobToken::from_file(&path)?));
    }
    match env.get(vars::JOB_TOKEN).filter(|v| !v.is_empty()) {
        Some(text) => Ok(Some(JobToken::new(
            text,
            &format!("`{}`", vars::JOB_TOKEN),
        )?)),
        None => Ok(None),
    }
}

fn parse_var<T: std::str::FromStr>(
    env: &BTreeMap<String, String>,
    var: &'static str,
    what: &str,
) -> Result<Option<T>, BootstrapError> {
    let Some(value) = env.get(var).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| BootstrapError::Invalid {
            var,
            value: value.clone(),
            problem: format!("expected {what}"),
        })
}

#[cfg(test)]
mod tests;
