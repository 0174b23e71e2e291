//! What sysfs says about this node: CPU-bearing NUMA nodes with their CPUs, memory and
//! SMT siblings, NICs (network interfaces and RDMA devices) and PCI NUMA affinity.
//!
//! Every path is read below a root (`/` on a real node, a directory tree in tests), and
//! a missing or unreadable file is a missing fact, never an error: containers hide parts
//! of sysfs.

use std::collections::BTreeMap;
use std::path::Path;

use crate::topology::{CpuSet, Nic, NicKind, NumaNode};

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn list_dir(root: &Path, rel: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join(rel))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort_by_key(|a| natural_key(a));
    names
}

/// Sorts `node10` after `node9`.
fn natural_key(s: &str) -> (String, u64) {
    let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = s.split_at(s.len() - digits);
    (head.to_owned(), tail.parse().unwrap_or(0))
}

/// The CPU-bearing NUMA nodes. Without `/sys/devices/system/node` (some containers),
/// one node 0 holding every online CPU.
pub(super) fn numa_nodes(root: &Path) -> Vec<NumaNode> {
    let mut nodes = Vec::new();
    for name in list_dir(root, "sys/devices/system/node") {
        let Some(id) = name
            .strip_prefix("node")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = format!("sys/devices/system/node/{name}");
        let cpus: CpuSet = read(root, &format!("{dir}/cpulist"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        if cpus.is_empty() {
            // GPU memory on GB200 (without CDMM) and CXL memory: never bind to these.
            continue;
        }
        let memory_mib = read(root, &format!("{dir}/meminfo"))
            .and_then(|m| meminfo_total_kib(&m))
            .map_or(0, |kib| kib / 1024);
        nodes.push(NumaNode {
            id,
            smt_siblings: smt_siblings(root, &cpus),
            cpus,
            memory_mib,
        });
    }
    if nodes.is_empty() {
        let cpus: CpuSet = read(root, "sys/devices/system/cpu/online")
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        let memory_mib = read(root, "proc/meminfo")
            .and_then(|m| meminfo_total_kib(&m))
            .map_or(0, |kib| kib / 1024);
        nodes.push(NumaNode {
            id: 0,
            smt_siblings: smt_siblings(root, &cpus),
            cpus,
            memory_mib,
        });
    }
    nodes
}

/// `MemTotal` in KiB from a node's `meminfo` (`Node 0 MemTotal: 123 kB`) or
/// `/proc/meminfo` (`MemTotal: 123 kB`).
fn meminfo_total_kib(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains("MemTotal:"))?;
    let after = line.split("MemTotal:").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

fn smt_siblings(root: &Path, cpus: &CpuSet) -> Vec<CpuSet> {
    let mut seen = BTreeMap::new();
    for &cpu in cpus.cpus() {
        let rel = format!("sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
        if let Some(set) = read(root, &rel).and_then(|s| s.parse::<CpuSet>().ok()) {
            let set = set.intersection(cpus);
            if set.len() > 1 {
                seen.entry(set.cpus()[0]).or_insert(set);
            }
        }
    }
    seen.into_values().collect()
}

/// The NUMA node of a PCI device (`0000:18:00.0`), if the platform reports one.
pub(super) fn pci_numa_node(root: &Path, bus_id: &str) -> Option<u32> {
    read(root, &format!("sys/bus/pci/devices/{bus_id}/numa_node"))?
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

/// Physical network interfaces (those with a `device` link: not `lo`, bridges, `ifb`)
/// and RDMA devices (`mlx5_0`: what NCCL's `NCCL_IB_HCA` names).
pub(super) fn nics(root: &Path) -> Vec<Nic> {
    let mut nics = Vec::new();
    for name in list_dir(root, "sys/class/net") {
        let dir = format!("sys/class/net/{name}");
        if !root.join(&dir).join("device").exists() {
            continue;
        }
        // ARPHRD_INFINIBAND is 32 (IPoIB); everything else here is Ethernet-like.
        let kind = match read(root, &format!("{dir}/type")).as_deref() {
            Some("32") => NicKind::Infiniband,
            _ => NicKind::Ethernet,
        };
        let speed_mbps = read(root, &format!("{dir}/speed"))
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0);
        nics.push(Nic {
            numa_node: numa_of(root, &format!("{dir}/device/numa_node")),
            name,
            kind,
            speed_mbps,
            addresses: Vec::new(),
        });
    }
    for name in list_dir(root, "sys/class/infiniband") {
        let dir = format!("sys/class/infiniband/{name}");
        let kind = match read(root, &format!("{dir}/ports/1/link_layer")).as_deref() {
            Some("Ethernet") => NicKind::Ethernet,
            _ => NicKind::Infiniband,
        };
        // `400 Gb/sec (4X NDR)`
        let speed_mbps = read(root, &format!("{dir}/ports/1/rate"))
            .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
            .map(|gbps| (gbps * 1000.0) as u64)
            .filter(|s| *s > 0);
        nics.push(Nic {
            numa_node: numa_of(root, &format!("{dir}/device/numa_node")),
            name,
            kind,
            speed_mbps,
            addresses: Vec::new(),
        });
    }
    nics
}

fn numa_of(root: &Path, rel: &str) -> Option<u32> {
    read(root, rel)?
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

/// The host name from `/proc/sys/kernel/hostname`.
pub(super) fn hostname(root: &Path) -> Option<String> {
    read(root, "proc/sys/kernel/hostname").filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree(std::path::PathBuf);
    impl Tree {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("cohort-sysfs-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }
        fn file(&self, rel: &str, text: &str) -> &Self {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
            self
        }
    }
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn cpu_less_numa_nodes_are_skipped_and_siblings_read() {
        let t = Tree::new("numa");
        t.file("sys/devices/system/node/node0/cpulist", "0-1,4-5\n")
            .file(
                "sys/devices/system/node/node0/meminfo",
                "Node 0 MemTotal:  2097152 kB\n",
            )
            .file("sys/devices/system/node/node1/cpulist", "2-3,6-7\n")
            .file("sys/devices/system/node/node10/cpulist", "\n")
            .file(
                "sys/devices/system/node/node10/meminfo",
                "Node 10 MemTotal: 99 kB\n",
            )
            .file(
                "sys/devices/system/cpu/cpu0/topology/thread_siblings_list",
                "0,4\n",
            )
            .file(
                "sys/devices/system/cpu/cpu4/topology/thread_siblings_list",
                "0,4\n",
            )
            .file(
                "sys/devices/system/cpu/cpu1/topology/thread_siblings_list",
                "1,5\n",
            );
        let nodes = numa_nodes(&t.0);
        assert_eq!(nodes.len(), 2, "{nodes:?}");
        assert_eq!(nodes[0].memory_mib, 2048);
        assert_eq!(nodes[0].cpus.to_string(), "0-1,4-5");
        let sib: Vec<String> = nodes[0]
            .smt_siblings
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(sib, ["0,4", "1,5"]);
        assert_eq!(nodes[1].id, 1);
    }

    #[test]
    fn without_numa_directory_one_node_holds_every_cpu() {
        let t = Tree::new("flat");
        t.file("sys/devices/system/cpu/online", "0-7\n")
            .file("proc/meminfo", "MemTotal:       1048576 kB\n");
        let nodes = numa_nodes(&t.0);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].cpus.len(), 8);
        assert_eq!(nodes[0].memory_mib, 1024);
    }

    #[test]
    fn nics_physical_and_rdma() {
        let t = Tree::new("nics");
        t.file("sys/class/net/lo/type", "772\n")
            .file("sys/class/net/eth0/type", "1\n")
            .file("sys/class/net/eth0/speed", "25000\n")
            .file("sys/class/net/eth0/device/numa_node", "1\n")
            .file("sys/class/net/ib0/type", "32\n")
            .file("sys/class/net/ib0/speed", "-1\n")
            .file("sys/class/net/ib0/device/numa_node", "-1\n")
            .file(
                "sys/class/infiniband/mlx5_0/ports/1/link_layer",
                "InfiniBand\n",
            )
            .file(
                "sys/class/infiniband/mlx5_0/ports/1/rate",
                "400 Gb/sec (4X NDR)\n",
            )
            .file("sys/class/infiniband/mlx5_0/device/numa_node", "0\n");
        let nics = nics(&t.0);
        let names: Vec<&str> = nics.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["eth0", "ib0", "mlx5_0"]);
        assert_eq!(nics[0].speed_mbps, Some(25_000));
        assert_eq!(nics[0].numa_node, Some(1));
        assert_eq!(nics[1].kind, NicKind::Infiniband);
        assert_eq!(nics[1].speed_mbps, None);
        assert_eq!(nics[1].numa_node, None);
        assert_eq!(nics[2].speed_mbps, Some(400_000));
    }
}
