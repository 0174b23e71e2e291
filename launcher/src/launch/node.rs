//! What a rank says about its node when it joins: the node as the planner sees it, and
//! the address its engines bind to and rank 0 reaches them at.

use std::net::IpAddr;

use anyhow::Context as _;
use cohort_rank::bootstrap::Method;
use cohort_rank::control::listen::{self, ListenScope};
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
