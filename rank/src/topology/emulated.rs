//! Emulated topologies: whole racks described by a kind, counts and a hostlist, so that
//! plans can be made and rehearsed without the hardware.
//!
//! A file in `recipes/topologies/` lists systems:
//!
//! ```toml
//! version = 1
//! [[system]]
//! kind = "gb200-nvl72"            # see `Kind`
//! hosts = "gb200-r[1-2]-n[01-18]" # a Slurm hostlist; one node per name
//! racks = 2                       # optional check: NVL72 kinds have 18 nodes a rack
//! ```
//!
//! Figures (CPUs, memory, PCI bus ids) follow the vendors' reference systems (DGX H100,
//! DGX B200, GB200/GB300 NVL72 compute trays); UUIDs are made up, but stable.

use serde::Deserialize;

use super::{CpuSet, Gpu, Nic, NicKind, Node, NumaNode, NvlinkDomain, Topology, FORMAT_VERSION};

/// The kinds of system an emulated topology can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// GB200 NVL72: 18 compute trays a rack, each 2 Grace CPUs (72 cores, one NUMA node
    /// each) and 4 B200 GPUs (0–1 on NUMA 0, 2–3 on NUMA 1); one NVLink domain a rack.
    Gb200Nvl72,
    /// GB300 NVL72: as GB200 NVL72 with B300 GPUs and ConnectX-8 NICs.
    Gb300Nvl72,
    /// HGX H100: 8 GPUs behind NVSwitch, 2 sockets (GPUs 0–3 / 4–7), 8 InfiniBand NICs.
    HgxH100,
    /// HGX H200: as HGX H100 with H200 GPUs.
    HgxH200,
    /// HGX B200: as HGX H100 with B200 GPUs.
    HgxB200,
    /// A host without GPUs (a login node, a laptop).
    Cpu,
}

/// Nodes in one NVL72 rack.
pub const NVL72_NODES_PER_RACK: usize = 18;

/// CPU shape of a `cpu` system: NUMA nodes and cores per NUMA node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuShape {
    /// CPU-bearing NUMA nodes.
    pub numa_nodes: u32,
    /// Cores (one thread each) per NUMA node.
    pub cores_per_numa: u32,
}

impl Default for CpuShape {
    fn default() -> Self {
        Self {
            numa_nodes: 2,
            cores_per_numa: 32,
        }
    }
}

/// One `[[system]]` of a topology file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct System {
    kind: Kind,
    hosts: String,
    #[serde(default)]
    racks: Option<usize>,
    #[serde(default)]
    numa_nodes: Option<u32>,
    #[serde(default)]
    cores_per_numa: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    system: Vec<System>,
}

/// A topology file that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum EmulatedError {
    /// Not valid TOML, or not this shape.
    #[error("{file}: {source}")]
    Toml {
        /// The file.
        file: String,
        /// The parser's complaint, with line and column.
        #[source]
        source: toml::de::Error,
    },
    /// Another format version.
    #[error("{file}: `version` is {found}; this cohort reads version {FORMAT_VERSION}")]
    Version {
        /// The file.
        file: String,
        /// The version in the file.
        found: u32,
    },
    /// A bad `hosts` hostlist.
    #[error("{file}: system {system}: `hosts`")]
    Hosts {
        /// The file.
        file: String,
        /// 1-based position of the `[[system]]`.
        system: usize,
        /// The hostlist error.
        #[source]
        source: cohort_slurm::hostlist::HostlistError,
    },
    /// Counts that do not add up.
    #[error("{file}: system {system}: {problem}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based position of the `[[system]]`.
        system: usize,
        /// What is wrong, with the numbers.
        problem: String,
    },
}

/// Builds the topology a file describes. `file` names it in errors and in `source`.
pub fn from_toml(file: &str, text: &str) -> Result<Topology, EmulatedError> {
    let parsed: File = toml::from_str(text).map_err(|source| EmulatedError::Toml {
        file: file.to_owned(),
        source,
    })?;
    if parsed.version != FORMAT_VERSION {
        return Err(EmulatedError::Version {
            file: file.to_owned(),
            found: parsed.version,
        });
    }
    let mut nodes = Vec::new();
    for (i, sys) in parsed.system.iter().enumerate() {
        let invalid = |problem: String| EmulatedError::Invalid {
            file: file.to_owned(),
            system: i + 1,
            problem,
        };
        let hosts =
            cohort_slurm::hostlist::expand(&sys.hosts).map_err(|source| EmulatedError::Hosts {
                file: file.to_owned(),
                system: i + 1,
                source,
            })?;
        if hosts.is_empty() {
            return Err(invalid("`hosts` names no host".to_owned()));
        }
        if let Some(racks) = sys.racks {
            if !sys.kind.is_nvl72() {
                return Err(invalid(format!(
                    "`racks` applies to NVL72 kinds only; `{:?}` nodes are counted by `hosts`",
                    sys.kind
                )));
            }
            if hosts.len() != racks * NVL72_NODES_PER_RACK {
                return Err(invalid(format!(
                    "`racks = {racks}` needs {} host names ({racks} × {NVL72_NODES_PER_RACK}); `hosts` names {}",
                    racks * NVL72_NODES_PER_RACK,
                    hosts.len()
                )));
            }
        }
        let shape = match (sys.kind, sys.numa_nodes, sys.cores_per_numa) {
            (Kind::Cpu, n, c) => {
                let d = CpuShape::default();
                let shape = CpuShape {
                    numa_nodes: n.unwrap_or(d.numa_nodes),
                    cores_per_numa: c.unwrap_or(d.cores_per_numa),
                };
                if shape.numa_nodes == 0 || shape.cores_per_numa == 0 {
                    return Err(invalid(
                        "`numa_nodes` and `cores_per_numa` must be at least 1".to_owned(),
                    ));
                }
                Some(shape)
            }
            (_, None, None) => None,
            _ => {
                return Err(invalid(
                    "`numa_nodes` and `cores_per_numa` apply to `kind = \"cpu\"` only".to_owned(),
                ))
            }
        };
        nodes.extend(sys.kind.build(&hosts, shape).nodes);
    }
    let topo = Topology {
        version: FORMAT_VERSION,
        source: format!("emulated:{file}"),
        nodes,
    };
    topo.validate().map_err(|e| EmulatedError::Invalid {
        file: file.to_owned(),
        system: 0,
        problem: e.to_string(),
    })?;
    Ok(topo)
}

struct GpuModel {
    name: &'static str,
    memory_mib: u64,
}

impl Kind {
    fn is_nvl72(self) -> bool {
        matches!(self, Self::Gb200Nvl72 | Self::Gb300Nvl72)
    }

    fn gpu(self) -> Option<GpuModel> {
        let (name, memory_mib) = match self {
            Self::Gb200Nvl72 => ("NVIDIA GB200", 189_471),
            Self::Gb300Nvl72 => ("NVIDIA GB300", 284_208),
            Self::HgxH100 => ("NVIDIA H100 80GB HBM3", 81_559),
            Self::HgxH200 => ("NVIDIA H200", 143_771),
            Self::HgxB200 => ("NVIDIA B200", 183_359),
            Self::Cpu => return None,
        };
        Some(GpuModel { name, memory_mib })
    }

    /// Builds one node per host name. NVL72 kinds put each run of 18 hosts in one
    /// NVLink domain (a last, shorter run is a partly allocated rack).
    pub fn build(self, hosts: &[String], cpu: Option<CpuShape>) -> Topology {
        let nodes = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| match self {
                Self::Gb200Nvl72 | Self::Gb300Nvl72 => {
                    let rack = i / NVL72_NODES_PER_RACK;
                    let head = &hosts[rack * NVL72_NODES_PER_RACK];
                    self.nvl72_node(h, head)
                }
                Self::HgxH100 | Self::HgxH200 | Self::HgxB200 => self.hgx_node(h),
                Self::Cpu => cpu_node(h, cpu.unwrap_or_default()),
            })
            .collect();
        Topology {
            version: FORMAT_VERSION,
            source: "emulated".to_owned(),
            nodes,
        }
    }

    fn nvl72_node(self, host: &str, rack_head: &str) -> Node {
        let model = self.gpu().expect("NVL72 kinds have GPUs");
        let domain = NvlinkDomain::Fabric {
            cluster_uuid: fake_uuid(rack_head, 0xFAB),
            clique_id: 1,
        };
        // Grace: 72 Neoverse V2 cores, no SMT, ~240 GB LPDDR5X each.
        let numa_nodes = (0..2)
            .map(|n| NumaNode {
                id: n,
                cpus: CpuSet::range(n * 72, 72),
                memory_mib: 245_760,
                smt_siblings: Vec::new(),
            })
            .collect();
        let buses = [
            "0008:01:00.0",
            "0009:01:00.0",
            "0018:01:00.0",
            "0019:01:00.0",
        ];
        let gpus = buses
            .iter()
            .enumerate()
            .map(|(i, bus)| Gpu {
                index: i as u32,
                uuid: fake_uuid(host, i as u64),
                name: model.name.to_owned(),
                memory_mib: model.memory_mib,
                pci_bus_id: (*bus).to_owned(),
                numa_node: Some(if i < 2 { 0 } else { 1 }),
                nvlink_domain: domain.clone(),
            })
            .collect();
        let speed = if self == Self::Gb300Nvl72 {
            800_000
        } else {
            400_000
        };
        let mut nics: Vec<Nic> = (0..4)
            .map(|i| ib(&format!("mlx5_{i}"), if i < 2 { 0 } else { 1 }, speed))
            .collect();
        nics.push(eth("enP6p3s0f0np0", 0));
        Node {
            hostname: host.to_owned(),
            addresses: vec![fake_ip(host)],
            numa_nodes,
            usable_cpus: None,
            gpus,
            nics,
        }
    }

    fn hgx_node(self, host: &str) -> Node {
        let model = self.gpu().expect("HGX kinds have GPUs");
        // Two 56-core sockets with SMT: core c of socket s is CPU s*56+c, its sibling
        // that plus 112 (how Linux numbers x86 threads).
        let numa_nodes = (0..2)
            .map(|n| NumaNode {
                id: n,
                cpus: CpuSet::range(n * 56, 56).union(&CpuSet::range(112 + n * 56, 56)),
                memory_mib: 1_048_576,
                smt_siblings: (0..56)
                    .map(|c| CpuSet::from_cpus([n * 56 + c, 112 + n * 56 + c]))
                    .collect(),
            })
            .collect();
        let buses = ["18", "2a", "3a", "5d", "9a", "ab", "ba", "db"];
        let gpus = buses
            .iter()
            .enumerate()
            .map(|(i, bus)| Gpu {
                index: i as u32,
                uuid: fake_uuid(host, i as u64),
                name: model.name.to_owned(),
                memory_mib: model.memory_mib,
                pci_bus_id: format!("0000:{bus}:00.0"),
                numa_node: Some(if i < 4 { 0 } else { 1 }),
                nvlink_domain: NvlinkDomain::Node {
                    hostname: host.to_owned(),
                },
            })
            .collect();
        let mut nics: Vec<Nic> = (0..8)
            .map(|i| ib(&format!("mlx5_{i}"), if i < 4 { 0 } else { 1 }, 400_000))
            .collect();
        nics.push(eth("eno1", 0));
        Node {
            hostname: host.to_owned(),
            addresses: vec![fake_ip(host)],
            numa_nodes,
            usable_cpus: None,
            gpus,
            nics,
        }
    }
}

fn cpu_node(host: &str, shape: CpuShape) -> Node {
    Node {
        hostname: host.to_owned(),
        addresses: vec![fake_ip(host)],
        numa_nodes: (0..shape.numa_nodes)
            .map(|n| NumaNode {
                id: n,
                cpus: CpuSet::range(n * shape.cores_per_numa, shape.cores_per_numa),
                memory_mib: 262_144,
                smt_siblings: Vec::new(),
            })
            .collect(),
        usable_cpus: None,
        gpus: Vec::new(),
        nics: vec![eth("eth0", 0)],
    }
}

fn ib(name: &str, numa: u32, speed_mbps: u64) -> Nic {
    Nic {
        name: name.to_owned(),
        kind: NicKind::Infiniband,
        numa_node: Some(numa),
        speed_mbps: Some(speed_mbps),
        addresses: Vec::new(),
    }
}

fn eth(name: &str, numa: u32) -> Nic {
    Nic {
        name: name.to_owned(),
        kind: NicKind::Ethernet,
        numa_node: Some(numa),
        speed_mbps: Some(100_000),
        addresses: Vec::new(),
    }
}

/// FNV-1a: stable across builds and platforms, unlike `std`'s hasher.
fn fnv(text: &str, salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn fake_uuid(host: &str, salt: u64) -> String {
    let a = fnv(host, salt);
    let b = fnv(host, salt.wrapping_add(0x9e37_79b9));
    format!(
        "GPU-{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn fake_ip(host: &str) -> String {
    let h = fnv(host, 7);
    format!(
        "10.{}.{}.{}",
        (h >> 16) & 0xff,
        (h >> 8) & 0xff,
        (h & 0xfd) + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_nvl72_racks_from_a_hostlist() {
        let text = "version = 1\n[[system]]\nkind = \"gb200-nvl72\"\nhosts = \"r[1-2]-n[01-18]\"\nracks = 2\n";
        let topo = from_toml("t.toml", text).unwrap();
        assert_eq!(topo.nodes.len(), 36);
        assert_eq!(topo.gpu_count(), 144);
        let n = &topo.nodes[0];
        assert_eq!(n.hostname, "r1-n01");
        assert_eq!(n.numa_nodes.len(), 2);
        let numas: Vec<_> = n.gpus.iter().map(|g| g.numa_node).collect();
        assert_eq!(numas, [Some(0), Some(0), Some(1), Some(1)]);
        assert_eq!(topo.domains().len(), 2);
        assert_ne!(
            topo.nodes[17].gpus[0].nvlink_domain,
            topo.nodes[18].gpus[0].nvlink_domain
        );
    }

    #[test]
    fn hgx_has_two_sockets_and_one_domain_per_node() {
        let topo = Kind::HgxH200.build(&["a".into(), "b".into()], None);
        assert_eq!(topo.domains().len(), 2);
        let n = &topo.nodes[0];
        assert_eq!(n.gpus.len(), 8);
        assert_eq!(n.gpus[3].numa_node, Some(0));
        assert_eq!(n.gpus[4].numa_node, Some(1));
        assert_eq!(n.numa_nodes[0].cpus.to_string(), "0-55,112-167");
        assert_eq!(n.numa_nodes[1].smt_siblings[0].to_string(), "56,168");
        assert_eq!(
            n.nics
                .iter()
                .filter(|n| n.kind == NicKind::Infiniband)
                .count(),
            8
        );
        assert!(n.gpus.iter().all(|g| g.name == "NVIDIA H200"));
    }

    #[test]
    fn counts_that_do_not_add_up_are_refused_with_numbers() {
        let text =
            "version = 1\n[[system]]\nkind = \"gb300-nvl72\"\nhosts = \"n[1-20]\"\nracks = 2\n";
        let err = from_toml("t.toml", text).unwrap_err().to_string();
        assert!(
            err.contains("needs 36 host names") && err.contains("names 20"),
            "{err}"
        );
        let text = "version = 1\n[[system]]\nkind = \"hgx-h100\"\nhosts = \"n[1-2]\"\ncores_per_numa = 4\n";
        assert!(from_toml("t.toml", text).is_err());
        let text = "version = 1\n[[system]]\nkind = \"dgx-a100\"\nhosts = \"n1\"\n";
        let err = from_toml("t.toml", text).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("dgx-a100"), "{err}");
        let text = "version = 1\n[[system]]\nkind = \"cpu\"\nhosts = \"n1,n1\"\n";
        assert!(from_toml("t.toml", text)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn uuids_are_stable_and_distinct() {
        assert_eq!(fake_uuid("n1", 0), fake_uuid("n1", 0));
        assert_ne!(fake_uuid("n1", 0), fake_uuid("n1", 1));
        assert_eq!(fake_uuid("n1", 0).len(), 40);
    }
}
