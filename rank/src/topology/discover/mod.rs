//! Discovery of this node: sysfs for NUMA nodes, CPUs and NICs, `sched_getaffinity` for
//! the CPUs this process may use, NVML for GPUs and their multi-node fabric membership.
//!
//! `CUDA_VISIBLE_DEVICES` (which Slurm sets from its GPU binding) is honoured: only the
//! GPUs it names are in the topology, renumbered in PCI order; the binding is reported.
//! Nothing here fails: a fact that cannot be read is left out and said in a note.

pub(crate) mod fabric;
pub(crate) mod nvml;
mod sysfs;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::{CpuSet, Gpu, Node, NvlinkDomain, Topology, FORMAT_VERSION};

pub use nvml::NVML_LIBRARIES;

/// Environment variables discovery reads (through [`GpuEnv`], filled by the caller).
pub mod vars {
    /// GPUs CUDA may use: indices (read in PCI bus order) or `GPU-` UUID prefixes.
    pub const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";
    /// The node-level GPU indices Slurm bound to this step (`--gpus*`, gres.conf order).
    pub const SLURM_STEP_GPUS: &str = "SLURM_STEP_GPUS";
    /// The node-level GPU indices of the job, in a batch script.
    pub const SLURM_JOB_GPUS: &str = "SLURM_JOB_GPUS";
}

/// What the environment says about GPU visibility.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GpuEnv {
    /// `CUDA_VISIBLE_DEVICES`, if set.
    pub cuda_visible_devices: Option<String>,
    /// `SLURM_STEP_GPUS`, else `SLURM_JOB_GPUS`, if set.
    pub slurm_gpus: Option<String>,
}

impl GpuEnv {
    /// Reads the variables from `(name, value)` pairs (the process environment).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let map: BTreeMap<String, String> = vars.into_iter().collect();
        Self {
            cuda_visible_devices: map.get(vars::CUDA_VISIBLE_DEVICES).cloned(),
            slurm_gpus: map
                .get(vars::SLURM_STEP_GPUS)
                .or_else(|| map.get(vars::SLURM_JOB_GPUS))
                .cloned(),
        }
    }
}

/// What to read.
#[derive(Debug, Clone)]
pub struct Options {
    /// The file-system root holding `sys/` and `proc/` (`/` on a node).
    pub root: PathBuf,
    /// GPU visibility from the environment.
    pub env: GpuEnv,
    /// Whether to try NVML at all.
    pub nvml: bool,
}

/// This node, and how GPU visibility was settled.
#[derive(Debug, Clone, Serialize)]
pub struct Discovery {
    /// A one-node topology.
    pub topology: Topology,
    /// How `CUDA_VISIBLE_DEVICES` and Slurm's binding were applied.
    pub gpu_binding: GpuBinding,
    /// Facts that could not be read, and why (one line each).
    pub notes: Vec<String>,
}

/// GPU visibility as applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GpuBinding {
    /// The environment as read.
    #[serde(flatten)]
    pub env: GpuEnv,
    /// GPUs NVML reports on the node (before `CUDA_VISIBLE_DEVICES`).
    pub gpus_on_node: usize,
    /// NVML indices of the GPUs kept, in PCI order.
    pub visible_nvml_indices: Vec<u32>,
}

/// Reads this node.
pub fn discover(opts: &Options) -> Discovery {
    let mut notes = Vec::new();
    let hostname = sysfs::hostname(&opts.root)
        .or_else(|| nix::unistd::gethostname().ok()?.into_string().ok())
        .unwrap_or_else(|| {
            notes.push("host name unreadable; using `localhost`".to_owned());
            "localhost".to_owned()
        });
    let numa_nodes = sysfs::numa_nodes(&opts.root);
    let mut nics = sysfs::nics(&opts.root);
    let addresses = addresses(&mut nics);
    let usable_cpus = match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => Some(CpuSet::from_cpus(
            (0..nix::sched::CpuSet::count())
                .filter(|&i| set.is_set(i).unwrap_or(false))
                .filter_map(|i| u32::try_from(i).ok()),
        )),
        Err(e) => {
            notes.push(format!(
                "sched_getaffinity failed ({e}); assuming every CPU is usable"
            ));
            None
        }
    };
    let raw = if opts.nvml {
        match nvml::gpus() {
            Ok((raw, more)) => {
                notes.extend(more);
                raw
            }
            Err(e) => {
                notes.push(e.to_string());
                Vec::new()
            }
        }
    } else {
        notes.push("NVML not tried (disabled)".to_owned());
        Vec::new()
    };
    let root = opts.root.clone();
    let numa_of = |g: &nvml::RawGpu| {
        let sysfs = sysfs::pci_numa_node(&root, &g.pci_bus_id);
        gpu_numa(&numa_nodes, sysfs, g.cpu_affinity.as_ref())
    };
    let (gpus, binding, more) = settle_gpus(&hostname, &raw, &opts.env, numa_of);
    notes.extend(more);
    Discovery {
        topology: Topology {
            version: FORMAT_VERSION,
            source: "discovered".to_owned(),
            nodes: vec![Node {
                hostname,
                addresses,
                numa_nodes,
                usable_cpus,
                gpus,
                nics,
            }],
        },
        gpu_binding: binding,
        notes,
    }
}

/// Non-loopback, non-link-local addresses, attached to their NIC where it is listed.
fn addresses(nics: &mut [super::Nic]) -> Vec<String> {
    let mut all = Vec::new();
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return all;
    };
    for ifa in ifaddrs {
        let Some(addr) = ifa.address else { continue };
        let ip: std::net::IpAddr = if let Some(v4) = addr.as_sockaddr_in() {
            v4.ip().into()
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            v6.ip().into()
        } else {
            continue;
        };
        let link_local =
            matches!(ip, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        if ip.is_loopback() || link_local {
            continue;
        }
        let text = ip.to_string();
        if let Some(nic) = nics.iter_mut().find(|n| n.name == ifa.interface_name) {
            nic.addresses.push(text.clone());
        }
        if !all.contains(&text) {
            all.push(text);
        }
    }
    all
}

/// A GPU's CPU-bearing NUMA node: sysfs's, if it names one; else the one sharing most
/// CPUs with NVML's affinity mask; else the only one there is.
fn gpu_numa(
    numa_nodes: &[super::NumaNode],
    sysfs: Option<u32>,
    affinity: Option<&CpuSet>,
) -> Option<u32> {
    if let Some(n) = sysfs.filter(|n| numa_nodes.iter().any(|m| m.id == *n)) {
        return Some(n);
    }
    let by_affinity = affinity.and_then(|a| {
        numa_nodes
            .iter()
            .map(|m| (m.cpus.intersection(a).len(), std::cmp::Reverse(m.id)))
            .filter(|(overlap, _)| *overlap > 0)
            .max()
            .map(|(_, std::cmp::Reverse(id))| id)
    });
    by_affinity.or(match numa_nodes {
        [only] => Some(only.id),
        _ => None,
    })
}

/// Applies `CUDA_VISIBLE_DEVICES`, assigns NVLink domains and NUMA nodes.
fn settle_gpus(
    hostname: &str,
    raw: &[nvml::RawGpu],
    env: &GpuEnv,
    numa_of: impl Fn(&nvml::RawGpu) -> Option<u32>,
) -> (Vec<Gpu>, GpuBinding, Vec<String>) {
    let mut notes = Vec::new();
    let keep: Vec<bool> = match &env.cuda_visible_devices {
        None => vec![true; raw.len()],
        Some(list) => {
            let mut keep = vec![false; raw.len()];
            // CUDA stops at the first entry it cannot use; so does this.
            for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let hit = if let Ok(i) = entry.parse::<usize>() {
                    (i < raw.len()).then_some(i)
                } else if entry.starts_with("GPU-") {
                    let found: Vec<usize> = (0..raw.len())
                        .filter(|&i| raw[i].uuid.starts_with(entry))
                        .collect();
                    (found.len() == 1).then(|| found[0])
                } else {
                    None
                };
                match hit {
                    Some(i) => keep[i] = true,
                    None => {
                        notes.push(format!(
                            "`{}` entry `{entry}` matches no GPU of this node (or is a MIG device); \
                             it and the entries after it are ignored, as CUDA does",
                            vars::CUDA_VISIBLE_DEVICES
                        ));
                        break;
                    }
                }
            }
            keep
        }
    };
    let groups = nvml::nvlink_groups(raw);
    let mut gpus = Vec::new();
    let mut visible = Vec::new();
    for (i, g) in raw.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        let nvlink_domain = if let Some(f) = &g.fabric {
            NvlinkDomain::Fabric {
                cluster_uuid: f.cluster_uuid.clone(),
                clique_id: f.clique_id,
            }
        } else if groups[i].is_some() && groups.iter().filter(|x| **x == groups[i]).count() > 1 {
            // One NVLink/NVSwitch island per node in practice; split islands get the
            // bus id of their first GPU so they stay apart.
            let first = groups.iter().position(|x| *x == groups[i]).unwrap_or(i);
            if groups.iter().flatten().any(|x| Some(*x) != groups[i]) {
                NvlinkDomain::Single {
                    hostname: hostname.to_owned(),
                    pci_bus_id: raw[first].pci_bus_id.clone(),
                }
            } else {
                NvlinkDomain::Node {
                    hostname: hostname.to_owned(),
                }
            }
        } else {
            NvlinkDomain::Single {
                hostname: hostname.to_owned(),
                pci_bus_id: g.pci_bus_id.clone(),
            }
        };
        visible.push(g.nvml_index);
        gpus.push(Gpu {
            index: gpus.len() as u32,
            uuid: g.uuid.clone(),
            name: g.name.clone(),
            memory_mib: g.memory_mib,
            pci_bus_id: g.pci_bus_id.clone(),
            numa_node: numa_of(g),
            nvlink_domain,
        });
    }
    let binding = GpuBinding {
        env: env.clone(),
        gpus_on_node: raw.len(),
        visible_nvml_indices: visible,
    };
    (gpus, binding, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(n: usize, switch: bool) -> Vec<nvml::RawGpu> {
        (0..n)
            .map(|i| nvml::RawGpu {
                nvml_index: i as u32,
                uuid: format!("GPU-{i}aaa"),
                name: "NVIDIA H200".into(),
                memory_mib: 143_771,
                pci_bus_id: format!("0000:{:02x}:00.0", 0x18 + i),
                nvlink_peers: if switch {
                    vec!["0000:99:00.0".into()]
                } else {
                    vec![]
                },
                cpu_affinity: None,
                fabric: None,
            })
            .collect()
    }

    #[test]
    fn gpu_numa_falls_back_to_affinity_then_the_only_node() {
        let node = |id: u32, cpus: &str| super::super::NumaNode {
            id,
            cpus: cpus.parse().unwrap(),
            memory_mib: 1,
            smt_siblings: vec![],
        };
        let two = [node(0, "0-7"), node(1, "8-15")];
        assert_eq!(gpu_numa(&two, Some(1), None), Some(1));
        assert_eq!(
            gpu_numa(&two, Some(5), None),
            None,
            "a CPU-less node is not used"
        );
        let aff: CpuSet = "8-15".parse().unwrap();
        assert_eq!(gpu_numa(&two, None, Some(&aff)), Some(1));
        assert_eq!(gpu_numa(&two, None, None), None);
        // The captured H200 VM: sysfs says -1, one NUMA node, nvidia-smi says NUMA 0.
        assert_eq!(gpu_numa(&[node(0, "0-15")], None, None), Some(0));
    }

    #[test]
    fn visible_devices_filter_and_renumber() {
        let env = GpuEnv {
            cuda_visible_devices: Some("2,GPU-3".into()),
            slurm_gpus: Some("2,3".into()),
        };
        let (gpus, b, notes) = settle_gpus("h", &raw(4, true), &env, |_| Some(0));
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(b.visible_nvml_indices, [2, 3]);
        assert_eq!(b.gpus_on_node, 4);
        assert_eq!(gpus.len(), 2);
        assert_eq!((gpus[0].index, gpus[1].index), (0, 1));
        assert_eq!(gpus[0].pci_bus_id, "0000:1a:00.0");
        assert_eq!(
            gpus[0].nvlink_domain,
            NvlinkDomain::Node {
                hostname: "h".into()
            }
        );
    }

    #[test]
    fn a_bad_entry_stops_the_list_like_cuda() {
        let env = GpuEnv {
            cuda_visible_devices: Some("1,7,0".into()),
            slurm_gpus: None,
        };
        let (gpus, _, notes) = settle_gpus("h", &raw(2, false), &env, |_| None);
        assert_eq!(gpus.len(), 1);
        assert!(notes[0].contains("`7`"), "{notes:?}");
        assert!(matches!(gpus[0].nvlink_domain, NvlinkDomain::Single { .. }));
        let empty = GpuEnv {
            cuda_visible_devices: Some(String::new()),
            slurm_gpus: None,
        };
        assert!(settle_gpus("h", &raw(2, false), &empty, |_| None)
            .0
            .is_empty());
    }

    #[test]
    fn fabric_membership_wins() {
        let mut raw = raw(2, true);
        raw[0].fabric = Some(fabric::Fabric {
            cluster_uuid: "c".into(),
            clique_id: 7,
        });
        let (gpus, _, _) = settle_gpus("h", &raw, &GpuEnv::default(), |_| None);
        assert!(matches!(
            gpus[0].nvlink_domain,
            NvlinkDomain::Fabric { clique_id: 7, .. }
        ));
        assert!(matches!(gpus[1].nvlink_domain, NvlinkDomain::Node { .. }));
    }

    #[test]
    fn this_machine_is_discovered_without_crashing() {
        let d = discover(&Options {
            root: "/".into(),
            env: GpuEnv::default(),
            nvml: true,
        });
        let node = &d.topology.nodes[0];
        assert!(!node.numa_nodes.is_empty());
        assert!(node.numa_nodes.iter().all(|n| !n.cpus.is_empty()));
        d.topology.validate().unwrap();
        let usable = node
            .usable_cpus
            .as_ref()
            .expect("sched_getaffinity works on Linux");
        assert!(!usable.is_empty());
    }
}
