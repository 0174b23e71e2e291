//! `cohort launch`'s arguments and their resolution into [`Launch`], once, at the edge.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cohort_bench::settings::parse_duration;
use cohort_rank::bootstrap::{self, Bootstrap};
use cohort_rank::topology::Topology;

use super::{agent, node, rank0, Ending, EndingExt as _, Failure};
use crate::recipe::{self, EngineKind, Recipe};

/// Arguments of `cohort launch` (parsed only; [`start`] resolves them).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # rehearse a disaggregated deployment on this machine: 4 emulated nodes, simulated engines
  cohort launch --local 4 --recipe recipes/hgx-h100-disagg.toml --engine sim

  # in a batch job (see `cohort sbatch`): one task per node
  srun --kill-on-bad-exit=1 --ntasks-per-node=1 cohort launch --recipe R.toml

  # interactive serving in an allocation; Ctrl-C tears everything down
  srun --ntasks-per-node=1 cohort launch --recipe R.toml --serve

Exit status: 0 completed; 3 stopped early by a signal (results marked partial);
10 bootstrap, 11 preflight, 12 plan, 13 engine start, 14 engines died, 15 rank lost,
16 benchmark failed; 1 bad arguments or recipe.")]
pub(crate) struct LaunchArgs {
    /// The recipe: model, engine, deployment and benchmark
    #[arg(long)]
    recipe: PathBuf,
    /// Run N ranks on this machine, each one node of the recipe's emulated topology
    #[arg(long, value_name = "N")]
    local: Option<u32>,
    /// Serve until stopped instead of benchmarking (prints the URL)
    #[arg(long)]
    serve: bool,
    /// An emulated topology (`recipes/topologies/*.toml`); default: the recipe's
    /// `deploy.topology` when this node has no GPU, else this node as discovered
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Run the recipe's deployment with this engine instead (`sim`: rehearse with the
    /// built-in simulator)
    #[arg(long, value_name = "ENGINE", value_parser = ["sim"])]
    engine: Option<String>,
    /// Simulated engines: simulated time divided by this (`inf`: no simulated time)
    #[arg(long, default_value = "1")]
    speedup: String,
    /// Where results go: `<DIR>/<job id>/`
    #[arg(long, value_name = "DIR", default_value = "results")]
    results: PathBuf,
    /// How ranks find each other: auto, mpi, slurm or local
    #[arg(long, default_value = "auto")]
    bootstrap: bootstrap::Mode,
    /// The job token file (mode 0600); also `COHORT_JOB_TOKEN_FILE`
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Rank 0's control-plane port [default: derived from the job and step ids]
    #[arg(long, env = "COHORT_RENDEZVOUS_PORT")]
    rendezvous_port: Option<u16>,
    /// The address rank 0 listens on and engines bind to [default: the address the
    /// node's name resolves to]
    #[arg(long, env = "COHORT_LISTEN_ADDRESS")]
    listen_address: Option<IpAddr>,
    /// The frontend's port [default: the recipe's `deploy.frontend.port`; 0 picks one]
    #[arg(long)]
    frontend_port: Option<u16>,
    /// Leave these nodes out of the plan (a hostlist)
    #[arg(long, value_name = "NODES")]
    exclude: Vec<String>,
    /// After a stop signal, how long in-flight requests may finish
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    drain_grace: Duration,
    /// Engines get this long between TERM and KILL
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    stop_grace: Duration,
    /// How long rank 0 waits for every rank to join
    #[arg(long, value_parser = parse_duration, default_value = "300s")]
    join_timeout: Duration,
    /// Readiness display: bars on a terminal, else a line every 10 s
    #[arg(long, value_parser = ["auto", "lines"], default_value = "auto")]
    progress: String,
}

/// The engine the instances run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EngineChoice {
    /// The built-in simulator, simulating `hardware`.
    Sim { hardware: String, speedup: String },
    /// A real engine (vLLM, SGLang, TensorRT-LLM) with its adapter's defaults.
    Real(EngineKind),
}

/// Everything a rank needs, read and checked.
#[derive(Debug)]
pub(crate) struct Launch {
    pub(crate) recipe: Recipe,
    pub(crate) recipe_path: PathBuf,
    /// The emulated topology this job plays, if any (rank r plays its node r).
    pub(crate) emulated: Option<Topology>,
    pub(crate) engine: EngineChoice,
    pub(crate) boot: Bootstrap,
    pub(crate) serve: bool,
    pub(crate) results_root: PathBuf,
    pub(crate) listen: Option<IpAddr>,
    pub(crate) frontend_port: Option<u16>,
    pub(crate) exclude: Vec<String>,
    pub(crate) drain_grace: Duration,
    pub(crate) stop_grace: Duration,
    pub(crate) join_timeout: Duration,
    pub(crate) bars: bool,
    /// This binary, to start simulated engines and local ranks.
    pub(crate) exe: PathBuf,
    /// The environment at start (engines inherit it, sanitised).
    pub(crate) env: BTreeMap<String, String>,
}

impl Launch {
    /// How this rank prefixes its lines: nothing on rank 0, `[rank N node]` elsewhere.
    pub(crate) fn say(&self, line: impl std::fmt::Display) {
        use std::io::Write as _;
        // One write per line: stderr is unbuffered, and formatting straight into it
        // writes piece by piece, which interleaves with the other ranks' lines where
        // they share an output (`mpirun`, `srun`, `--local`).
        let text = if self.boot.is_rank0() {
            format!("{line}\n")
        } else {
            format!("[rank {} {}] {line}\n", self.boot.rank, self.boot.node)
        };
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// Resolves the arguments, bootstraps, and runs this rank's part.
pub(crate) fn start(args: &LaunchArgs) -> Result<Ending, Failure> {
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let request = bootstrap::Request {
        mode: args.bootstrap,
        local_ranks: args.local,
        rendezvous_port: args.rendezvous_port,
        token_file: args.token_file.clone(),
    };
    let boot = bootstrap::resolve(&request, &env).ending(Ending::Bootstrap)?;
    let launch = resolve(args, boot, env).ending(Ending::Preflight)?;
    launch.say(&launch.boot);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .ending(Ending::Bootstrap)?;
    let ending = if launch.boot.is_rank0() {
        rt.block_on(rank0::run(&launch))
    } else {
        rt.block_on(agent::run_rank(&launch))
    };
    // Tasks still parked on the network (a session to a rank 0 that is gone) must not
    // hold the exit: everything that matters has been stopped and written by now.
    rt.shutdown_timeout(Duration::from_secs(2));
    ending
}

fn resolve(
    args: &LaunchArgs,
    boot: Bootstrap,
    env: BTreeMap<String, String>,
) -> anyhow::Result<Launch> {
    let recipe_path = std::path::absolute(&args.recipe)
        .with_context(|| format!("`{}`", args.recipe.display()))?;
    let recipe = recipe::load(&recipe_path)?;
    let recipe_dir = recipe_path.parent().unwrap_or(Path::new("/")).to_owned();
    let topology_path = match (&args.topology, &recipe.deploy.topology) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(t)) => Some(recipe_dir.join(t)),
        (None, None) => None,
    };
    let emulated = match topology_path {
        // A recipe's own topology applies only where there is no GPU to discover.
        Some(p) if args.topology.is_some() || !node::has_gpus() => {
            let t = crate::commands::plan::load_topology(&p)?;
            if t.nodes.len() != boot.size as usize {
                anyhow::bail!(
                    "the topology `{}` has {} nodes but this job has {} ranks; each rank plays \
                     one node: launch with {} ranks (`--local {}`, or `srun -N {}`)",
                    p.display(),
                    t.nodes.len(),
                    boot.size,
                    t.nodes.len(),
                    t.nodes.len(),
                    t.nodes.len()
                );
            }
            Some(t)
        }
        _ => None,
    };
    let engine = match (args.engine.as_deref(), recipe.engine.kind) {
        (Some("sim"), _) | (None, EngineKind::Sim) => EngineChoice::Sim {
            hardware: sim_hardware(emulated.as_ref()),
            speedup: args.speedup.clone(),
        },
        (_, kind @ (EngineKind::Vllm | EngineKind::Sglang | EngineKind::Trtllm)) => {
            EngineChoice::Real(kind)
        }
        (Some(other), _) => {
            anyhow::bail!("`--engine {other}`: only `sim` can stand in for a recipe's engine")
        }
        (None, EngineKind::External) => anyhow::bail!(
            "the recipe's engine is `external` (servers cohort does not start): serve them \
             with `cohort serve --worker URL …`, or rehearse the deployment with `--engine sim`"
        ),
    };
    let mut exclude = Vec::new();
    for e in &args.exclude {
        exclude
            .extend(cohort_slurm::hostlist::expand(e).with_context(|| format!("`--exclude {e}`"))?);
    }
    let exe = std::env::current_exe().context("cannot find the cohort binary itself")?;
    let bars = args.progress == "auto" && std::io::IsTerminal::is_terminal(&std::io::stderr());
    Ok(Launch {
        recipe,
        recipe_path,
        emulated,
        engine,
        boot,
        serve: args.serve,
        results_root: args.results.clone(),
        listen: args.listen_address,
        frontend_port: args.frontend_port,
        exclude,
        drain_grace: args.drain_grace,
        stop_grace: args.stop_grace,
        join_timeout: args.join_timeout,
        bars,
        exe,
        env,
    })
}

/// The simulator's `--hardware` for the topology's GPUs (H100 SXM without one).
pub(crate) fn sim_hardware(topology: Option<&Topology>) -> String {
    let name = topology
        .and_then(|t| t.nodes.iter().flat_map(|n| &n.gpus).next())
        .map(|g| g.name.to_ascii_lowercase())
        .unwrap_or_default();
    let known = ["gb300", "gb200", "b200", "h200"];
    known
        .iter()
        .find(|k| name.contains(*k))
        .map_or("h100-sxm", |k| k)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_rank::topology::emulated;

    #[test]
    fn simulated_hardware_follows_the_topology() {
        let t = |kind: &str| {
            emulated::from_toml(
                "t.toml",
                &format!("version = 1\n[[system]]\nkind = \"{kind}\"\nhosts = \"n[1-2]\"\n"),
            )
            .unwrap()
        };
        assert_eq!(sim_hardware(Some(&t("hgx-h100"))), "h100-sxm");
        assert_eq!(sim_hardware(Some(&t("hgx-h200"))), "h200");
        assert_eq!(sim_hardware(None), "h100-sxm");
    }
}
