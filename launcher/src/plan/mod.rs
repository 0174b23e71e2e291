//! The placement planner: a topology and a recipe's `[deploy]` become a [`Plan`] of
//! engine instances — role, nodes, GPUs, NUMA-local CPU sets, memory binding, ports —
//! and which decode instances each prefill instance feeds.
//!
//! Rules, in the order they are applied:
//! 1. An instance's GPUs lie in one NVLink domain, on one node unless it needs more GPUs
//!    than a node has, then on adjacent nodes of the domain ([`place`]).
//! 2. Prefill and decode are placed in groups of the recipe's ratio, each group inside
//!    one domain, so that KV transfers stay inside it; leftovers are said to cross.
//! 3. CPU sets are the cores local to the instance's GPUs, split fairly between the
//!    instances sharing a NUMA node, after cores kept for cohort (and the frontend on
//!    rank 0) ([`bind`]); ports are blocks that never collide on a node.
//!
//! The planner is a pure function: the same inputs give the same plan on every rank. An
//! infeasible request is an error with the reason in numbers, never a partial plan.

mod bind;
mod place;
mod render;
mod svg;

use std::collections::BTreeSet;

use cohort_rank::topology::{CpuSet, Topology};
use serde::Serialize;

use crate::recipe::{Deploy, Mode};

pub use render::write_table;
pub use svg::render as render_svg;

/// What an instance does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Prompt processing; hands its KV cache to a decode instance.
    Prefill,
    /// Token generation.
    Decode,
    /// Both.
    Aggregated,
}

impl Role {
    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Prefill => "prefill",
            Self::Decode => "decode",
            Self::Aggregated => "aggregated",
        }
    }
}

/// A placement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The instances, prefill first, then decode (or aggregated), numbered per role.
    pub instances: Vec<Instance>,
    /// The frontend on rank 0.
    pub frontend: FrontendPlacement,
    /// CPUs kept for cohort itself, per node with instances (and rank 0's node).
    pub reserved: Vec<NodeCpus>,
    /// Per NVLink domain: what it holds.
    pub domains: Vec<DomainSummary>,
    /// Prefill → decode transfers that must cross NVLink domains, and why.
    pub cross_domain: Vec<String>,
    /// Nodes left out (`--exclude`).
    pub excluded: Vec<String>,
    /// Totals.
    pub summary: Summary,
}

/// One engine instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    /// `prefill-0`, `decode-3`, `aggregated-1`.
    pub id: String,
    /// Its role.
    pub role: Role,
    /// The label of its NVLink domain.
    pub domain: String,
    /// Its part on each node, in node order (several only for multi-node instances).
    pub shards: Vec<Shard>,
    /// The first port of its block (HTTP); the block is `port..port + port_stride`.
    pub port: u16,
    /// For a prefill instance: the decode instances it feeds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<String>,
}

impl Instance {
    /// GPUs in all.
    pub fn gpu_count(&self) -> usize {
        self.shards.iter().map(|s| s.gpus.len()).sum()
    }
}

/// An instance's GPUs, CPUs and memory binding on one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shard {
    /// The host name.
    pub node: String,
    /// GPU indices on that node (PCI order), for `CUDA_VISIBLE_DEVICES`.
    pub gpus: Vec<u32>,
    /// The CPUs to bind to: cores of the GPUs' NUMA nodes.
    pub cpus: CpuSet,
    /// NUMA nodes to bind memory to (`numactl --membind`).
    pub mem_nodes: Vec<u32>,
}

/// Where the frontend runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontendPlacement {
    /// Rank 0's node.
    pub node: String,
    /// Its port.
    pub port: u16,
    /// Its CPUs.
    pub cpus: CpuSet,
}

/// CPUs on one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeCpus {
    /// The host name.
    pub node: String,
    /// The CPUs.
    pub cpus: CpuSet,
}

/// One NVLink domain's share of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainSummary {
    /// Compressed hostlist of its nodes (or the node, or node/bus for a lone GPU).
    pub label: String,
    /// GPUs in it (excluded nodes left out).
    pub gpus: usize,
    /// Instances per role.
    pub prefill: usize,
    /// Decode instances.
    pub decode: usize,
    /// Aggregated instances.
    pub aggregated: usize,
    /// GPUs not used.
    pub idle_gpus: usize,
}

/// Totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// GPUs in the allocation, excluded nodes left out.
    pub gpus: usize,
    /// GPUs given to prefill instances.
    pub prefill_gpus: usize,
    /// GPUs given to decode instances.
    pub decode_gpus: usize,
    /// GPUs given to aggregated instances.
    pub aggregated_gpus: usize,
    /// GPUs not used.
    pub idle_gpus: usize,
    /// Share of prefill GPUs whose decode partners are in the same domain (1.0 when
    /// there is no prefill).
    pub prefill_local_share: f64,
}

/// Why there is no plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The request cannot be met; the message gives the numbers.
    #[error("{0}")]
    Infeasible(String),
    /// `--exclude` names a node the topology does not have.
    #[error("`--exclude` names `{0}`, which is not a node of the topology")]
    UnknownNode(String),
}

/// Plans `deploy` on `topology`, without the nodes in `exclude`.
pub fn plan(topology: &Topology, deploy: &Deploy, exclude: &[String]) -> Result<Plan, PlanError> {
    let names: BTreeSet<&str> = topology.nodes.iter().map(|n| n.hostname.as_str()).collect();
    if let Some(bad) = exclude.iter().find(|e| !names.contains(e.as_str())) {
        return Err(PlanError::UnknownNode(bad.clone()));
    }
    let excluded: BTreeSet<&str> = exclude.iter().map(String::as_str).collect();
    let rank0 = topology
        .nodes
        .iter()
        .position(|n| !excluded.contains(n.hostname.as_str()))
        .ok_or_else(|| {
            PlanError::Infeasible(match topology.nodes.len() {
                0 => "the topology has 0 nodes".to_owned(),
                n => format!("all {n} nodes of the topology are excluded"),
            })
        })?;
    let mut domains = place::Domains::new(topology, &excluded);
    let requests = match deploy.mode {
        Mode::Disaggregated => vec![
            (Role::Prefill, deploy.prefill.clone()),
            (Role::Decode, deploy.decode.clone()),
        ],
        Mode::Aggregated => vec![(Role::Aggregated, deploy.aggregated.clone())],
    };
    let requests: Vec<place::Request> = requests
        .into_iter()
        .filter_map(|(role, s)| {
            let s = s?;
            Some(place::Request {
                role,
                gpus: s.gpus as usize,
                count: s.count.map(|c| c as usize),
                per_domain: s.per_domain.map(|c| c as usize),
            })
        })
        .collect();
    let placed = domains.place_all(&requests)?;
    let mut instances = place::number(placed, &domains);
    let cross_domain = place::wire_pools(&mut instances, &domains, &requests);
    let (reserved, frontend_cpus) = bind::bind_cpus(topology, &mut instances, deploy, rank0)?;
    let frontend = FrontendPlacement {
        node: topology.nodes[rank0].hostname.clone(),
        port: deploy.frontend.port,
        cpus: frontend_cpus,
    };
    bind::assign_ports(&mut instances, deploy, &frontend)?;
    let domain_summaries = domains.summaries(&instances);
    let summary = summarise(&instances, domains.total_gpus());
    Ok(Plan {
        instances,
        frontend,
        reserved,
        domains: domain_summaries,
        cross_domain,
        excluded: exclude.to_vec(),
        summary,
    })
}

fn summarise(instances: &[Instance], gpus: usize) -> Summary {
    let used = |r: Role| -> usize {
        instances
            .iter()
            .filter(|i| i.role == r)
            .map(Instance::gpu_count)
            .sum()
    };
    let (p, d, a) = (
        used(Role::Prefill),
        used(Role::Decode),
        used(Role::Aggregated),
    );
    let domain_of: std::collections::BTreeMap<&str, &str> = instances
        .iter()
        .map(|i| (i.id.as_str(), i.domain.as_str()))
        .collect();
    let local: usize = instances
        .iter()
        .filter(|i| i.role == Role::Prefill)
        .filter(|i| {
            !i.feeds.is_empty()
                && i.feeds
                    .iter()
                    .all(|f| domain_of.get(f.as_str()) == Some(&i.domain.as_str()))
        })
        .map(Instance::gpu_count)
        .sum();
    Summary {
        gpus,
        prefill_gpus: p,
        decode_gpus: d,
        aggregated_gpus: a,
        idle_gpus: gpus - p - d - a,
        prefill_local_share: if p == 0 { 1.0 } else { local as f64 / p as f64 },
    }
}

#[cfg(test)]
mod tests;
