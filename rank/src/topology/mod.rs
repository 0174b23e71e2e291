//! The hardware of an allocation as cohort sees it: nodes with their CPU-bearing NUMA
//! nodes, GPUs (in PCI bus order, with their NVLink domain) and NICs.
//!
//! A [`Topology`] comes from one of two places: [`discover`] reads this node (NVML,
//! sysfs, `sched_getaffinity`); [`emulated`] builds whole racks from a short
//! description (`recipes/topologies/*.toml`), so that plans can be made and rehearsed
//! without the hardware. Both serialise to the same versioned JSON.
//!
//! This module does not place anything: the planner (in `cohort`) reads a topology.

pub mod cpuset;
pub mod discover;
pub mod emulated;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use cpuset::{CpuSet, CpuSetError};

/// The version of the topology format written by this build; files with another
/// version are refused rather than misread.
pub const FORMAT_VERSION: u32 = 1;

/// The nodes of an allocation (or of one node, when discovered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Always [`FORMAT_VERSION`].
    pub version: u32,
    /// Where the description came from: `discovered` or `emulated:<file>`.
    pub source: String,
    /// The nodes, in allocation order (rank 0's node first).
    pub nodes: Vec<Node>,
}

/// One host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The host name as Slurm knows it.
    pub hostname: String,
    /// IP addresses of the host, without the loopback ones.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// CPU-bearing NUMA nodes only: on GB200 without CDMM, GPU memory shows up as
    /// CPU-less NUMA nodes, which must never be used for binding.
    pub numa_nodes: Vec<NumaNode>,
    /// The CPUs this process may run on (Slurm's cgroup restricts them); `None` means
    /// all CPUs of the NUMA nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usable_cpus: Option<CpuSet>,
    /// GPUs in PCI bus order; `index` is the position in this list.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// Network interfaces, InfiniBand and Ethernet, without loopback and virtual ones.
    #[serde(default)]
    pub nics: Vec<Nic>,
}

/// A CPU-bearing NUMA node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumaNode {
    /// The kernel's NUMA node id (`/sys/devices/system/node/node<id>`).
    pub id: u32,
    /// Its logical CPUs.
    pub cpus: CpuSet,
    /// Its memory, in MiB.
    pub memory_mib: u64,
    /// Hardware threads that share a physical core, one set per core with more than one
    /// thread (empty without SMT). Lets CPU sets be split by core, not by thread.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub smt_siblings: Vec<CpuSet>,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// Position in PCI bus order on its node (what `CUDA_DEVICE_ORDER=PCI_BUS_ID` uses).
    pub index: u32,
    /// `GPU-…` as NVML and `nvidia-smi -L` print it.
    pub uuid: String,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total memory, in MiB.
    pub memory_mib: u64,
    /// `0000:18:00.0` (domain:bus:device.function, lower case).
    pub pci_bus_id: String,
    /// The CPU-bearing NUMA node closest to it, if known.
    pub numa_node: Option<u32>,
    /// The NVLink domain (see [`NvlinkDomain`]).
    pub nvlink_domain: NvlinkDomain,
}

/// The set of GPUs that can reach each other over NVLink, as NCCL sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NvlinkDomain {
    /// Multi-node NVLink (NVL72): same fabric `clusterUuid` and `cliqueId`, fabric state
    /// COMPLETED.
    Fabric {
        /// The fabric cluster UUID.
        cluster_uuid: String,
        /// The clique inside the cluster.
        clique_id: u32,
    },
    /// GPUs joined by NVLink or NVSwitch inside one node.
    Node {
        /// The node's host name.
        hostname: String,
    },
    /// A GPU with no NVLink peer: its own domain.
    Single {
        /// The node's host name.
        hostname: String,
        /// The GPU's PCI bus id.
        pci_bus_id: String,
    },
}

impl std::fmt::Display for NvlinkDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fabric {
                cluster_uuid,
                clique_id,
            } => write!(f, "fabric {cluster_uuid}/{clique_id}"),
            Self::Node { hostname } => write!(f, "{hostname}"),
            Self::Single {
                hostname,
                pci_bus_id,
            } => write!(f, "{hostname}/{pci_bus_id}"),
        }
    }
}

/// What a NIC speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NicKind {
    /// InfiniBand (`/sys/class/infiniband`, link layer InfiniBand).
    Infiniband,
    /// Ethernet, including RoCE devices.
    Ethernet,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// `ib0`, `mlx5_0`, `eth0`, …
    pub name: String,
    /// InfiniBand or Ethernet.
    pub kind: NicKind,
    /// Its NUMA node, if the device reports one.
    pub numa_node: Option<u32>,
    /// Link speed in Mbit/s, if known (and the link is up).
    pub speed_mbps: Option<u64>,
    /// Its IP addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// A topology that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// Written by another version of cohort.
    #[error("topology format version {found} is not supported; this cohort reads version {FORMAT_VERSION}")]
    Version {
        /// The version in the file.
        found: u32,
    },
    /// Not valid JSON for a topology.
    #[error("`{file}` is not a valid topology")]
    Json {
        /// The file.
        file: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// Internally inconsistent.
    #[error("node `{node}`: {problem}")]
    Invalid {
        /// The node's host name.
        node: String,
        /// What is wrong.
        problem: String,
    },
}

impl Topology {
    /// Reads a topology as `cohort topo --json` writes it, and checks it.
    pub fn from_json(file: &str, text: &str) -> Result<Self, TopologyError> {
        // Read the version first so that a newer file says so instead of failing on a
        // field this build does not know.
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let json = |source| TopologyError::Json {
            file: file.to_owned(),
            source,
        };
        let v: Version = serde_json::from_str(text).map_err(json)?;
        if v.version != FORMAT_VERSION {
            return Err(TopologyError::Version { found: v.version });
        }
        let topo: Topology = serde_json::from_str(text).map_err(json)?;
        topo.validate()?;
        Ok(topo)
    }

    /// Checks what the planner relies on: unique host names, GPU indices in order,
    /// GPUs' NUMA nodes among the node's CPU-bearing ones, no CPU in two NUMA nodes.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let mut seen = std::collections::BTreeSet::new();
        for node in &self.nodes {
            let bad = |problem: String| TopologyError::Invalid {
                node: node.hostname.clone(),
                problem,
            };
            if !seen.insert(node.hostname.as_str()) {
                return Err(bad("the host name appears twice".to_owned()));
            }
            for (i, gpu) in node.gpus.iter().enumerate() {
                if gpu.index as usize != i {
                    return Err(bad(format!(
                        "GPU {} is at position {i}; GPUs must be listed in index order 0, 1, …",
                        gpu.index
                    )));
                }
                if let Some(n) = gpu.numa_node {
                    if !node.numa_nodes.iter().any(|m| m.id == n) {
                        return Err(bad(format!(
                            "GPU {i} is on NUMA node {n}, which is not a CPU-bearing NUMA node of this node"
                        )));
                    }
                }
            }
            for (i, a) in node.numa_nodes.iter().enumerate() {
                for b in &node.numa_nodes[i + 1..] {
                    if a.id == b.id || !a.cpus.is_disjoint(&b.cpus) {
                        return Err(bad(format!(
                            "NUMA nodes {} and {} overlap (same id or shared CPUs)",
                            a.id, b.id
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The total number of GPUs.
    pub fn gpu_count(&self) -> usize {
        self.nodes.iter().map(|n| n.gpus.len()).sum()
    }

    /// NVLink domains and, for each, the `(node index, GPU index)` pairs in it, in node
    /// then PCI order. Deterministic: domains are ordered by their first GPU.
    pub fn domains(&self) -> Vec<(NvlinkDomain, Vec<(usize, u32)>)> {
        let mut order: Vec<NvlinkDomain> = Vec::new();
        let mut members: BTreeMap<&NvlinkDomain, Vec<(usize, u32)>> = BTreeMap::new();
        for (ni, node) in self.nodes.iter().enumerate() {
            for gpu in &node.gpus {
                let entry = members.entry(&gpu.nvlink_domain).or_default();
                if entry.is_empty() {
                    order.push(gpu.nvlink_domain.clone());
                }
                entry.push((ni, gpu.index));
            }
        }
        order
            .into_iter()
            .map(|d| {
                let m = members.remove(&d).unwrap_or_default();
                (d, m)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_version_is_checked() {
        let topo = emulated::Kind::HgxH100.build(&["h1".to_owned()], None);
        let json = serde_json::to_string(&topo).unwrap();
        assert_eq!(Topology::from_json("t.json", &json).unwrap(), topo);
        let newer = json.replacen("\"version\":1", "\"version\":2", 1);
        let err = Topology::from_json("t.json", &newer).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn validate_names_the_node_and_the_problem() {
        let mut topo = emulated::Kind::HgxH100.build(&["h1".to_owned()], None);
        topo.nodes[0].gpus[3].numa_node = Some(7);
        let err = topo.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("node `h1`: GPU 3 is on NUMA node 7"),
            "{err}"
        );
        topo.nodes[0].gpus[3].numa_node = Some(0);
        topo.nodes[0].gpus.swap(1, 2);
        assert!(topo.validate().is_err());
    }

    #[test]
    fn domains_group_by_nvlink_domain_in_order() {
        let hosts: Vec<String> = (1..=36).map(|i| format!("n{i:02}")).collect();
        let topo = emulated::Kind::Gb200Nvl72.build(&hosts, None);
        let domains = topo.domains();
        assert_eq!(domains.len(), 2);
        assert_eq!(domains[0].1.len(), 72);
        assert_eq!(domains[0].1[0], (0, 0));
        assert_eq!(domains[1].1[0], (18, 0));
    }
}
