//! GPUs through NVML, loaded at run time (`nvml-wrapper` uses `libloading`): a node
//! without an NVIDIA driver is a node without GPUs, never a crash.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use nvml_wrapper::Nvml;

use super::fabric::{self, Fabric};
use crate::topology::CpuSet;

/// One GPU as NVML reports it, before domains and visibility are settled.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RawGpu {
    pub(super) nvml_index: u32,
    pub(super) uuid: String,
    pub(super) name: String,
    pub(super) memory_mib: u64,
    pub(super) pci_bus_id: String,
    /// Remote ends of active NVLinks, as normalised PCI bus ids (GPUs or NVSwitches).
    pub(super) nvlink_peers: Vec<String>,
    /// The CPUs NVML calls close to the GPU (what `nvidia-smi topo -m` prints), used
    /// when sysfs has no NUMA node for the device (virtual machines report -1).
    pub(super) cpu_affinity: Option<CpuSet>,
    /// Multi-node NVLink fabric membership, where the GPU registered with one.
    pub(super) fabric: Option<Fabric>,
}

/// Words of the CPU mask asked of NVML: 64 × 64 = 4,096 CPUs.
const AFFINITY_WORDS: usize = 64;

fn mask_to_cpus(words: &[std::os::raw::c_ulong]) -> CpuSet {
    let bits = std::os::raw::c_ulong::BITS as usize;
    CpuSet::from_cpus(words.iter().enumerate().flat_map(|(w, word)| {
        (0..bits)
            .filter(move |b| word >> b & 1 == 1)
            .filter_map(move |b| u32::try_from(w * bits + b).ok())
    }))
}

/// The library names tried, in order: the versioned name exists wherever the driver is
/// installed; the bare name only where the development symlink is.
pub const NVML_LIBRARIES: [&str; 2] = ["libnvidia-ml.so.1", "libnvidia-ml.so"];

/// NVLink links per GPU that NVML can report (`NVML_NVLINK_MAX_LINKS`).
const MAX_LINKS: u32 = 18;

/// Why no GPU list came back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NvmlUnavailable {
    /// No library could be loaded.
    #[error("found no NVIDIA library ({tried}): no GPUs on this node")]
    NoLibrary {
        /// What was tried and why it failed.
        tried: String,
    },
    /// The library loaded but NVML failed.
    #[error("NVML failed: {0}")]
    Failed(#[source] nvml_wrapper::error::NvmlError),
}

/// NVML, and the library name it was loaded by.
pub(crate) fn load() -> Result<(Nvml, &'static str), NvmlUnavailable> {
    let mut last = String::new();
    for lib in NVML_LIBRARIES {
        match Nvml::builder().lib_path(OsStr::new(lib)).init() {
            Ok(nvml) => return Ok((nvml, lib)),
            Err(nvml_wrapper::error::NvmlError::LibloadingError(e)) => last = e.to_string(),
            Err(e) => return Err(NvmlUnavailable::Failed(e)),
        }
    }
    Err(NvmlUnavailable::NoLibrary {
        tried: format!("tried `{}`: {last}", NVML_LIBRARIES.join("`, `")),
    })
}

/// `00000000:18:00.0` (NVML) and `0000:18:00.0` (sysfs) both become `0000:18:00.0`.
pub(crate) fn normalise_bus_id(id: &str) -> String {
    let id = id.trim().to_ascii_lowercase();
    match id.split_once(':') {
        Some((domain, rest)) if domain.len() > 4 => {
            let d = &domain[domain.len() - 4..];
            format!("{d}:{rest}")
        }
        _ => id,
    }
}

/// Every GPU NVML sees, sorted by PCI bus id, plus notes about facts it could not read.
pub(super) fn gpus() -> Result<(Vec<RawGpu>, Vec<String>), NvmlUnavailable> {
    let (nvml, lib) = load()?;
    let count = nvml.device_count().map_err(NvmlUnavailable::Failed)?;
    let devices = (0..count)
        .map(|i| nvml.device_by_index(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(NvmlUnavailable::Failed)?;
    let mut notes = Vec::new();
    let fabric = fabric::read(OsStr::new(lib), &devices, &mut notes);
    let mut gpus = Vec::new();
    for ((i, dev), fabric) in (0..).zip(&devices).zip(fabric) {
        let pci = dev.pci_info().map_err(NvmlUnavailable::Failed)?;
        let memory_mib = dev
            .memory_info()
            .map(|m| m.total / (1024 * 1024))
            .unwrap_or_else(|e| {
                notes.push(format!("GPU {i}: memory size unreadable: {e}"));
                0
            });
        let mut peers = Vec::new();
        for link in 0..MAX_LINKS {
            let l = dev.link_wrapper_for(link);
            if matches!(l.is_active(), Ok(true)) {
                if let Ok(remote) = l.remote_pci_info() {
                    peers.push(normalise_bus_id(&remote.bus_id));
                }
            }
        }
        gpus.push(RawGpu {
            nvml_index: i,
            uuid: dev.uuid().map_err(NvmlUnavailable::Failed)?,
            name: dev.name().map_err(NvmlUnavailable::Failed)?,
            memory_mib,
            pci_bus_id: normalise_bus_id(&pci.bus_id),
            nvlink_peers: peers,
            cpu_affinity: dev
                .cpu_affinity(AFFINITY_WORDS)
                .ok()
                .map(|w| mask_to_cpus(&w))
                .filter(|c| !c.is_empty()),
            fabric,
        });
    }
    gpus.sort_by(|a, b| a.pci_bus_id.cmp(&b.pci_bus_id));
    Ok((gpus, notes))
}

/// Groups GPUs joined by NVLink, directly or through a shared NVSwitch: a union-find over
/// GPUs and remote bus ids. Returns a group number per GPU (in input order); a GPU with
/// no active link gets `None`.
pub(super) fn nvlink_groups(gpus: &[RawGpu]) -> Vec<Option<usize>> {
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for g in gpus {
        let n = ids.len();
        ids.entry(g.pci_bus_id.as_str()).or_insert(n);
    }
    for g in gpus {
        for p in &g.nvlink_peers {
            let n = ids.len();
            ids.entry(p.as_str()).or_insert(n);
        }
    }
    let mut parent: Vec<usize> = (0..ids.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for g in gpus {
        let a = ids[g.pci_bus_id.as_str()];
        for peer in &g.nvlink_peers {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, ids[peer.as_str()]));
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    gpus.iter()
        .map(|g| {
            (!g.nvlink_peers.is_empty()).then(|| find(&mut parent, ids[g.pci_bus_id.as_str()]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(bus: &str, peers: &[&str]) -> RawGpu {
        RawGpu {
            nvml_index: 0,
            uuid: String::new(),
            name: String::new(),
            memory_mib: 0,
            pci_bus_id: bus.to_owned(),
            nvlink_peers: peers.iter().map(|p| (*p).to_owned()).collect(),
            cpu_affinity: None,
            fabric: None,
        }
    }

    #[test]
    fn affinity_masks_become_cpu_sets() {
        assert_eq!(mask_to_cpus(&[0b1011, 0]).to_string(), "0-1,3");
        assert_eq!(mask_to_cpus(&[0, 1]).to_string(), "64");
    }

    #[test]
    fn bus_ids_are_normalised() {
        assert_eq!(normalise_bus_id("00000000:1B:00.0"), "0000:1b:00.0");
        assert_eq!(normalise_bus_id("0009:01:00.0"), "0009:01:00.0");
    }

    #[test]
    fn switch_pairs_and_lone_gpus() {
        // a, b share switch s1; c-d are bridged directly; e has no link.
        let gpus = [
            gpu("a", &["s1", "s2"]),
            gpu("b", &["s1"]),
            gpu("c", &["d"]),
            gpu("d", &["c"]),
            gpu("e", &[]),
        ];
        let g = nvlink_groups(&gpus);
        assert_eq!(g[0], g[1]);
        assert_eq!(g[2], g[3]);
        assert_ne!(g[0], g[2]);
        assert_eq!(g[4], None);
    }
}
