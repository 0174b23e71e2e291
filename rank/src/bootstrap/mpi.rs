//! Bootstrap through MPI (`--features mpi`, rsmpi): under `mpirun`, `srun --mpi=pmix` or
//! another PMI launcher.
//!
//! Rank and size are the world communicator's. Every rank allgathers its node name; rank
//! 0 decides the job token, its own address and the rendezvous port, and broadcasts them
//! (or its error) to the others as one length-prefixed byte buffer.
//!
//! - **Node names.** A rank's name is Slurm's name for its node (`SLURMD_NODENAME`) when
//!   Slurm started it, else `MPI_Get_processor_name`. Where several ranks share one name
//!   (`mpirun -n 4` on one machine), each becomes `<name>-r<rank>`, so node names stay
//!   unique across the job: the control plane and the planner key nodes by name.
//! - **Rank 0's host.** `127.0.0.1` when every rank has the same name (one machine), else
//!   rank 0's name, which `control::listen` resolves to the address it listens on.
//! - **The port.** `--rendezvous-port`, `COHORT_RENDEZVOUS_PORT`, the port derived from
//!   the Slurm job and step ids when in a Slurm job, else a free port rank 0 finds by
//!   binding port 0 and releasing it.
//! - **The token.** Rank 0's `--token-file`, `COHORT_JOB_TOKEN_FILE` or
//!   `COHORT_JOB_TOKEN`, else a generated one; the other ranks need none of them. It
//!   crosses the job's own MPI transport, as the control plane later carries it.
//!
//! **MPI lives only inside `resolve`.** It initialises MPI, runs the two collectives and
//! finalises before returning; the launcher then talks gRPC and MPI is never used again.
//! Keeping MPI up for the life of the process would make the exit a hazard: Open MPI's
//! `mpirun` treats a rank that exits without `MPI_Finalize` as a failure and kills the
//! job, and `MPI_Finalize` is a fence over every rank, so a rank that exits while a peer
//! is gone (lost, hung stopping its engines, killed outside the launcher's view) would
//! wait for it until the time limit. Finalising here, where every rank has just
//! completed the same broadcast, meets all of them, and the engines cohort forks later
//! inherit no MPI state (the supervisor strips the launcher's PMIx/MPI variables too).
//! When rank 0 fails (an unreadable token file, say), it still broadcasts — its error —
//! so no rank is left waiting in a collective. One trace of MPI stays: Open MPI leaves its
//! fatal-signal handlers installed, so a later crash (`SIGABRT`, `SIGFPE`) also prints its
//! backtrace; the exit status is unchanged.

use std::collections::BTreeMap;
use std::net::TcpListener;

use ::mpi::datatype::PartitionMut;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::{Communicator, CommunicatorCollectives, Root};
use ::mpi::{Count, Threading};
use cohort_slurm::context::vars::SLURMD_NODENAME;
use cohort_slurm::SlurmContext;

use super::local::LOOPBACK;
use super::rendezvous::derived_port;
use super::{
    parse_var, read_token, vars, Bootstrap, BootstrapError, JobToken, Method, Rendezvous, Request,
};

/// Set by Open MPI's `mpirun` (and `prterun`) for every rank: the job's size.
const OMPI_COMM_WORLD_SIZE: &str = "OMPI_COMM_WORLD_SIZE";
/// Set by a PMIx server: Slurm's `--mpi=pmix`, Open MPI 5's `mpirun`.
const PMIX_RANK: &str = "PMIX_RANK";
/// Set by a PMI-1/2 launcher: MPICH's Hydra `mpiexec`, Slurm's `--mpi=pmi2`.
const PMI_SIZE: &str = "PMI_SIZE";
const PMI_RANK: &str = "PMI_RANK";

/// Where rank 0's port came from, by the index that travels in the broadcast.
const PORT_ORIGINS: [&str; 4] = [
    "from `--rendezvous-port`",
    "from `COHORT_RENDEZVOUS_PORT`",
    "derived from the job and step ids",
    "found free by rank 0 at bootstrap (bound, then released)",
];

/// MPI bootstrap cannot say who this process is.
#[derive(Debug, thiserror::Error)]
pub enum MpiError {
    #[error("`--bootstrap mpi` needs a process started by an MPI launcher, but none of {markers} is set; start cohort with `mpirun …` or `srun --mpi=pmix …`, or use `--bootstrap slurm` or `--bootstrap local`")]
    NoLauncher { markers: String },
    #[error("MPI is already initialised in this process; bootstrap must be its first MPI user")]
    AlreadyInitialized,
    #[error("rank 0 could not bootstrap, so rank {rank} cannot either; rank 0 said: {message}")]
    Rank0Failed { rank: u32, message: String },
    #[error("the bootstrap message from rank 0 is malformed ({problem}); do all ranks run the same cohort build?")]
    Malformed { problem: &'static str },
    #[error(
        "rank 0 cannot find a free port for its coordinator on `{host}`; pass `--rendezvous-port`"
    )]
    FreePort {
        host: String,
        #[source]
        source: std::io::Error,
    },
}

/// What rank 0 decides and broadcasts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rank0 {
    token: JobToken,
    host: String,
    port: u16,
    /// An index into [`PORT_ORIGINS`].
    origin: u8,
}

/// Bootstrap through MPI; `asked` is whether `--bootstrap mpi` chose it (else `auto` did,
/// seeing an MPI launcher's variables). Collective: every rank of the job must call it.
pub(super) fn resolve(
    req: &Request,
    env: &BTreeMap<String, String>,
    asked: bool,
) -> Result<Bootstrap, BootstrapError> {
    if !vars::MPI_MARKERS.iter().any(|v| env.contains_key(*v)) {
        let markers = vars::MPI_MARKERS
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(MpiError::NoLauncher { markers }.into());
    }
    let launcher = launcher(env);
    let reason = if asked {
        format!("asked for with `--bootstrap mpi`, {launcher}")
    } else {
        launcher
    };
    // Funneled: only this thread calls MPI, and only until `resolve` returns.
    let (universe, _provided) = ::mpi::initialize_with_threading(Threading::Funneled)
        .ok_or(MpiError::AlreadyInitialized)?;
    let world = universe.world();
    let outcome = exchange(&world, req, env);
    // MPI_Finalize, reached by every rank right after the same broadcast (module docs).
    drop(world);
    drop(universe);
    let Exchanged {
        rank,
        size,
        names,
        rank0,
    } = outcome?;
    let node = unique_node_names(&names).swap_remove(rank as usize);
    Ok(Bootstrap {
        method: Method::Mpi,
        reason,
        rank,
        size,
        node,
        rendezvous: Rendezvous {
            host: rank0.host,
            port: rank0.port,
            port_origin: PORT_ORIGINS[usize::from(rank0.origin)],
        },
        token: rank0.token,
    })
}

/// What the collectives tell this rank.
#[derive(Debug)]
struct Exchanged {
    rank: u32,
    size: u32,
    /// Every rank's name, in rank order.
    names: Vec<String>,
    rank0: Rank0,
}

/// The collectives. Every rank makes the same calls whatever fails, so none is left
/// waiting: only rank 0 can fail before the broadcast, and it broadcasts its error.
fn exchange(
    world: &SimpleCommunicator,
    req: &Request,
    env: &BTreeMap<String, String>,
) -> Result<Exchanged, BootstrapError> {
    // MPI ranks and sizes are non-negative `c_int`s.
    let rank = u32::try_from(world.rank()).unwrap_or_default();
    let size = u32::try_from(world.size()).unwrap_or_default();
    let names = all_gather_names(world, &own_name(env));
    let root = world.process_at_rank(0);
    if rank == 0 {
        let decided = decide(req, env, &names);
        let mut message = encode(&decided);
        broadcast_bytes(&root, &mut message);
        return decided.map(|rank0| Exchanged {
            rank,
            size,
            names,
            rank0,
        });
    }
    let mut message = Vec::new();
    broadcast_bytes(&root, &mut message);
    let rank0 = decode(&message, rank)?;
    Ok(Exchanged {
        rank,
        size,
        names,
        rank0,
    })
}

/// This rank's node name: Slurm's for its node when Slurm started it (what the rest of
/// cohort and `control::listen` use), else MPI's processor name.
fn own_name(env: &BTreeMap<String, String>) -> String {
    if let Some(name) = env.get(SLURMD_NODENAME).filter(|n| !n.is_empty()) {
        return name.clone();
    }
    match ::mpi::environment::processor_name() {
        Ok(name) if !name.is_empty() => name,
        _ => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".to_owned()),
    }
}

/// Every rank's name, in rank order.
fn all_gather_names(world: &SimpleCommunicator, mine: &str) -> Vec<String> {
    let size = usize::try_from(world.size()).unwrap_or_default();
    // Host and node names are short (64 bytes on Linux, 256 for MPI's processor name).
    let bytes = &mine.as_bytes()[..mine.len().min(4096)];
    let len = Count::try_from(bytes.len()).unwrap_or_default();
    let mut lens: Vec<Count> = vec![0; size];
    world.all_gather_into(&len, &mut lens[..]);
    let displs: Vec<Count> = lens
        .iter()
        .scan(0, |offset, &n| {
            let at = *offset;
            *offset += n;
            Some(at)
        })
        .collect();
    let total = lens.iter().map(|&n| n as usize).sum();
    let mut all = vec![0u8; total];
    {
        let mut partition = PartitionMut::new(&mut all[..], &lens[..], &displs[..]);
        world.all_gather_varcount_into(bytes, &mut partition);
    }
    lens.iter()
        .zip(&displs)
        .map(|(&n, &at)| {
            let at = at as usize;
            String::from_utf8_lossy(&all[at..at + n as usize]).into_owned()
        })
        .collect()
}

/// Broadcasts rank 0's `message` (its length, then its bytes); the others pass an empty
/// vector and get rank 0's.
fn broadcast_bytes(root: &impl Root, message: &mut Vec<u8>) {
    let mut len = message.len() as u64;
    root.broadcast_into(&mut len);
    message.resize(usize::try_from(len).unwrap_or_default(), 0);
    root.broadcast_into(&mut message[..]);
}

/// Rank 0's decisions: the token, its host and the port.
fn decide(
    req: &Request,
    env: &BTreeMap<String, String>,
    names: &[String],
) -> Result<Rank0, BootstrapError> {
    let token = match read_token(req, env)? {
        Some(token) => token,
        None => JobToken::generate()?,
    };
    let host = rank0_host(names);
    let port_var = parse_var::<u16>(env, vars::RENDEZVOUS_PORT, "a port number")?;
    // A Slurm environment that cannot be read only costs the derived port: MPI, not
    // Slurm, is the bootstrap here.
    let slurm_ids = SlurmContext::from_map(env)
        .ok()
        .and_then(|ctx| Some((ctx.job?.id, ctx.step?.id)));
    let (port, origin) = match (req.rendezvous_port, port_var, slurm_ids) {
        (Some(port), _, _) => (port, 0),
        (None, Some(port), _) => (port, 1),
        (None, None, Some((job, step))) => (derived_port(job, step), 2),
        (None, None, None) => (free_port(&host)?, 3),
    };
    Ok(Rank0 {
        token,
        host,
        port,
        origin,
    })
}

/// `127.0.0.1` when every rank is on one machine (has the same name), else rank 0's name.
fn rank0_host(names: &[String]) -> String {
    match names.first() {
        Some(first) if names.iter().any(|n| n != first) => first.clone(),
        _ => LOOPBACK.to_owned(),
    }
}

/// A port free on `host` now, found by binding port 0 there (or on every address, if
/// `host` is not one of this machine's) and releasing it. Another process may take it
/// before the coordinator binds; a fixed `--rendezvous-port` avoids that race.
fn free_port(host: &str) -> Result<u16, MpiError> {
    let err = |source| MpiError::FreePort {
        host: host.to_owned(),
        source,
    };
    let listener = TcpListener::bind((host, 0))
        .or_else(|_| TcpListener::bind(("0.0.0.0", 0)))
        .map_err(err)?;
    Ok(listener.local_addr().map_err(err)?.port())
}

/// Each rank's node name, made unique as `<name>-r<rank>` where ranks share one.
fn unique_node_names(names: &[String]) -> Vec<String> {
    let mut count = BTreeMap::<&str, usize>::new();
    for name in names {
        *count.entry(name).or_default() += 1;
    }
    names
        .iter()
        .enumerate()
        .map(|(rank, name)| match count[name.as_str()] {
            1 => name.clone(),
            _ => format!("{name}-r{rank}"),
        })
        .collect()
}

/// Which launcher started this process, for the printed reason.
fn launcher(env: &BTreeMap<String, String>) -> String {
    let slurm_step = SlurmContext::from_map(env)
        .ok()
        .and_then(|ctx| Some((ctx.job?.id, ctx.step?.id)));
    let in_step = |what: &str| match slurm_step {
        Some((job, step)) => format!("{what} (job {job}, step {step})"),
        None => what.to_owned(),
    };
    if let Some(size) = env.get(OMPI_COMM_WORLD_SIZE) {
        format!("under `mpirun` (Open MPI, {OMPI_COMM_WORLD_SIZE}={size})")
    } else if env.contains_key(PMIX_RANK) && slurm_step.is_some() {
        in_step("under `srun --mpi=pmix`")
    } else if env.contains_key(PMIX_RANK) {
        format!("under a PMIx launcher (`{PMIX_RANK}` set)")
    } else if env.contains_key(PMI_RANK) && slurm_step.is_some() {
        in_step("under `srun --mpi=pmi2`")
    } else {
        let size = env.get(PMI_SIZE).map_or("?", String::as_str);
        format!("under a PMI launcher such as MPICH's `mpiexec` ({PMI_SIZE}={size})")
    }
}

const OK: u8 = 0;
const FAILED: u8 = 1;

/// `[OK, port (2 bytes, big-endian), origin, host length (4), host, token length (4),
/// token]`, or `[FAILED, rank 0's error and its causes as text]`.
fn encode(decided: &Result<Rank0, BootstrapError>) -> Vec<u8> {
    let rank0 = match decided {
        Ok(rank0) => rank0,
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            let mut out = vec![FAILED];
            out.extend_from_slice(text.as_bytes());
            return out;
        }
    };
    let mut out = vec![OK];
    out.extend_from_slice(&rank0.port.to_be_bytes());
    out.push(rank0.origin);
    for field in [rank0.host.as_bytes(), rank0.token.expose().as_bytes()] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// Reads rank 0's message on rank `rank`.
fn decode(message: &[u8], rank: u32) -> Result<Rank0, MpiError> {
    let malformed = |problem| MpiError::Malformed { problem };
    let (&status, rest) = message.split_first().ok_or(malformed("empty"))?;
    match status {
        OK => {}
        FAILED => {
            return Err(MpiError::Rank0Failed {
                rank,
                message: String::from_utf8_lossy(rest).into_owned(),
            })
        }
        _ => return Err(malformed("unknown status")),
    }
    let mut reader = Reader(rest);
    let port = u16::from_be_bytes(reader.array().ok_or(malformed("no port"))?);
    let [origin] = reader.array().ok_or(malformed("no port origin"))?;
    if usize::from(origin) >= PORT_ORIGINS.len() {
        return Err(malformed("unknown port origin"));
    }
    let host = reader.field().ok_or(malformed("no host"))?;
    let token = reader.field().ok_or(malformed("no token"))?;
    if !reader.0.is_empty() {
        return Err(malformed("trailing bytes"));
    }
    let host = String::from_utf8(host.to_vec()).map_err(|_| malformed("host is not UTF-8"))?;
    let token = std::str::from_utf8(token)
        .ok()
        .and_then(|t| JobToken::new(t, "rank 0's broadcast").ok())
        .ok_or(malformed("invalid token"))?;
    Ok(Rank0 {
        token,
        host,
        port,
        origin,
    })
}

/// Reads the broadcast's fields front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A field after its 4-byte big-endian length.
    fn field(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.array()?);
        self.take(usize::try_from(len).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    fn rank0() -> Rank0 {
        Rank0 {
            token: JobToken::new("0123456789abcdef0123", "test").unwrap(),
            host: "gpu07".into(),
            port: 20051,
            origin: 2,
        }
    }

    #[test]
    fn ranks_sharing_a_name_get_distinct_node_names() {
        assert_eq!(
            unique_node_names(&names(&["a", "a", "b", "a"])),
            names(&["a-r0", "a-r1", "b", "a-r3"])
        );
        assert_eq!(
            unique_node_names(&names(&["gpu07", "gpu08"])),
            names(&["gpu07", "gpu08"])
        );
    }

    #[test]
    fn rank0_is_on_loopback_only_when_every_rank_shares_its_machine() {
        assert_eq!(rank0_host(&names(&["box", "box", "box"])), LOOPBACK);
        assert_eq!(rank0_host(&names(&["gpu07", "gpu07", "gpu08"])), "gpu07");
        assert_eq!(rank0_host(&names(&["gpu08", "gpu07"])), "gpu08");
    }

    #[test]
    fn the_broadcast_round_trips() {
        let message = encode(&Ok(rank0()));
        assert_eq!(decode(&message, 1).unwrap(), rank0());
    }

    #[test]
    fn rank0s_error_reaches_the_other_ranks_with_its_causes() {
        let failed: Result<Rank0, BootstrapError> = Err(MpiError::FreePort {
            host: "gpu07".into(),
            source: std::io::Error::other("no ports left"),
        }
        .into());
        let err = decode(&encode(&failed), 3).unwrap_err().to_string();
        assert!(
            err.contains("rank 3") && err.contains("gpu07") && err.contains("no ports left"),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_or_padded_message_is_refused() {
        let message = encode(&Ok(rank0()));
        for cut in 0..message.len() {
            assert!(decode(&message[..cut], 1).is_err(), "cut at {cut}");
        }
        let mut padded = message.clone();
        padded.push(0);
        assert!(decode(&padded, 1).is_err());
    }

    #[test]
    fn the_reason_names_the_launcher() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            launcher(&env(&[(OMPI_COMM_WORLD_SIZE, "4"), (PMIX_RANK, "1")])),
            "under `mpirun` (Open MPI, OMPI_COMM_WORLD_SIZE=4)"
        );
        let step = env(&[
            ("SLURM_JOB_ID", "4242"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
            ("SLURM_STEP_ID", "3"),
            ("SLURM_STEP_NODELIST", "gpu[07-08]"),
            ("SLURM_STEP_NUM_TASKS", "2"),
            ("SLURM_STEP_TASKS_PER_NODE", "1(x2)"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NODEID", "1"),
            ("SLURMD_NODENAME", "gpu08"),
            (PMIX_RANK, "1"),
        ]);
        assert_eq!(
            launcher(&step),
            "under `srun --mpi=pmix` (job 4242, step 3)"
        );
        assert!(launcher(&env(&[(PMI_RANK, "0"), (PMI_SIZE, "2")])).contains("PMI_SIZE=2"));
    }
}
