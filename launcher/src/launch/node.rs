//! What a rank says about its node when it joins: the node as the planner sees it, and
//! the address its engines bind to and rank 0 reaches them at.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use cohort_rank::bootstrap::Method;
use cohort_rank::control::listen::{self, ListenScope};
use cohort_rank::gpu;
use cohort_rank::topology::{discover, Node};
use serde::{Deserialize, Serialize};

use super::args::Launch;

/// The `topology_json` of a join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeInfo {
    /// The node as planned on (an emulated one keeps its emulated name).
    pub(crate) node: Node,
    /// Where this rank's engines listen.
    pub(crate) address: IpAddr,
    /// Whether `node` is emulated (no CPU or memory binding is applied then: its CPUs
    /// are not this machine's).
    pub(crate) emulated: bool,
    /// The node's GPU health when it joined (`docs/preflight.md`): every GPU present,
    /// no uncorrectable ECC error or pending retirement, fabric complete, memory free.
    /// `None` where not checked (no GPU, emulated without a fixture, the simulator).
    #[serde(default)]
    pub(crate) gpu_health: Option<gpu::Report>,
}

/// A GPU fixture file read in place of NVML, `{node}` standing for the node's name: to
/// rehearse GPU failures on emulated nodes (`rank/tests/fixtures/gpu/` has examples).
pub(crate) const GPU_FIXTURE_VAR: &str = "COHORT_GPU_FIXTURE";

/// Free memory a GPU must have before a real engine starts on it: vLLM and SGLang take
/// about 90 % of it by default, so a GPU already half full (a leftover process of an
/// earlier job) fails at start — after minutes of loading weights — or runs short of KV
/// cache.
pub(crate) const GPU_MIN_FREE_FRACTION: f64 = 0.8;

/// The node's GPU health, checked before it joins: from `COHORT_GPU_FIXTURE` when set,
/// else from NVML on a real node with GPUs when real engines will run.
fn gpu_health(launch: &Launch, node: &Node, emulated: bool) -> anyhow::Result<Option<gpu::Report>> {
    let source: Box<dyn gpu::GpuSource> = match launch.env.get(GPU_FIXTURE_VAR) {
        Some(p) => {
            let path = PathBuf::from(p.replace("{node}", &node.hostname));
            Box::new(gpu::FixtureSource::from_file(&path).with_context(|| {
                format!(
                    "`{GPU_FIXTURE_VAR}`: cannot read the GPU fixture `{}`",
                    path.display()
                )
            })?)
        }
        None if emulated || node.gpus.is_empty() => return Ok(None),
        None if matches!(launch.engine, super::args::EngineChoice::Sim { .. }) => return Ok(None),
        None => match gpu::NvmlSource::open() {
            Ok(s) => Box::new(s),
            // Discovery found GPUs through NVML; if it cannot be opened now, the
            // check before engines start says so.
            Err(_) => return Ok(None),
        },
    };
    let reqs = gpu::Requirements {
        gpus: node.gpus.iter().map(|g| g.index).collect(),
        gpus_on_node: Some(node.gpus.len() as u32),
        min_free_fraction: Some(GPU_MIN_FREE_FRACTION),
        ..gpu::Requirements::default()
    };
    Ok(Some(gpu::preflight(
        &node.hostname,
        &*source,
        std::path::Path::new("/"),
        &reqs,
    )))
}

/// Whether NVML sees a GPU on this node.
pub(crate) fn has_gpus() -> bool {
    !discover::discover(&discover_options()).topology.nodes[0]
        .gpus
        .is_empty()
}

fn discover_options() -> discover::Options {
    crate::commands::topo::discover_options()
}

/// This rank's node and address.
pub(crate) fn describe(launch: &Launch) -> anyhow::Result<NodeInfo> {
    let boot = &launch.boot;
    let (node, emulated) = match &launch.emulated {
        Some(t) => (t.nodes[boot.rank as usize].clone(), true),
        None => {
            let mut d = discover::discover(&discover_options());
            let mut node = d.topology.nodes.swap_remove(0);
            // Plans and logs name nodes as Slurm does.
            node.hostname.clone_from(&boot.node);
            (node, false)
        }
    };
    Ok(NodeInfo {
        address: address(launch)?,
        gpu_health: gpu_health(launch, &node, emulated)?,
        node,
        emulated,
    })
}

/// The address engines bind to: `--listen-address`, loopback for local runs, else the
/// address the node's name resolves to among this node's own.
pub(crate) fn address(launch: &Launch) -> anyhow::Result<IpAddr> {
    let scope = match (launch.listen, launch.boot.method) {
        (Some(ip), _) => ListenScope::Explicit(ip),
        (None, Method::Local) => ListenScope::Loopback,
        // MPI bootstrap chose loopback because every rank runs on this one machine.
        (None, Method::Mpi) if launch.boot.rendezvous.host == "127.0.0.1" => ListenScope::Loopback,
        (None, _) => {
            let own = discover::discover(&discover_options()).topology.nodes[0]
                .addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect();
            ListenScope::Cluster {
                node: launch.boot.node.clone(),
                resolved: listen::resolve_host(&launch.boot.node),
                local: own,
            }
        }
    };
    let choice = listen::choose(&scope).context("choosing this node's address")?;
    Ok(choice.ip)
}
