//! The checks: readings and files against requirements, into a [`Report`]. Pure but
//! for the files read below the root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::files::{self, GpuDirect, IMEX_CHANNELS_DIR};
use super::reading::{Clique, FabricState, GpuReading, Readings};
use super::report::{drain, Check, Finding, GpuRef, InstanceClique, Report, Severity};
use super::requirements::{CliqueGroup, Requirements};

/// Checks `readings` (this node's GPUs) and the files below `root` against `reqs`.
/// Every GPU `reqs` names anywhere (its `gpus`, clique groups, P2P pairs) is checked
/// for health. P2P bandwidth is judged apart ([`super::judge_p2p`]), since measuring
/// it needs CUDA.
pub fn check(node: &str, readings: &Readings, root: &Path, reqs: &Requirements) -> Report {
    let mut report = Report::new(node, &readings.source);
    report.notes.extend(readings.notes.iter().cloned());
    let mut out = Out {
        node,
        report: &mut report,
    };
    let gpus = &readings.gpus;
    if let Some(want) = reqs.gpus_on_node {
        if gpus.len() != want as usize {
            out.error(
                None,
                Check::GpuCount,
                format!("NVML sees {} GPUs ({})", gpus.len(), indices(gpus)),
                format!("{want} GPUs on this node"),
                missing_fix(node, "GPU count"),
            );
        }
    }
    for index in required(reqs) {
        match gpus.iter().find(|g| g.index == index) {
            None => out.error(
                Some(GpuRef { index, uuid: None }),
                Check::GpuMissing,
                format!("NVML sees {} GPUs ({})", gpus.len(), indices(gpus)),
                format!("GPU {index}, which the plan uses"),
                missing_fix(node, &format!("GPU {index} missing")),
            ),
            Some(g) => health(&mut out, g, reqs),
        }
    }
    for group in &reqs.cliques {
        cliques(&mut out, gpus, group);
    }
    if reqs.needs_imex {
        imex(&mut out, root);
    }
    if reqs.needs_gpudirect_rdma {
        gpudirect(&mut out, root);
    }
    report.sort();
    report
}

/// Where findings and notes go, with the node they are about.
struct Out<'a> {
    node: &'a str,
    report: &'a mut Report,
}

impl Out<'_> {
    fn push(
        &mut self,
        severity: Severity,
        gpu: Option<GpuRef>,
        check: Check,
        measured: String,
        expected: String,
        fix: String,
    ) {
        self.report.findings.push(Finding {
            severity,
            node: self.node.to_owned(),
            gpu,
            check,
            measured,
            expected,
            fix,
        });
    }

    fn error(&mut self, gpu: Option<GpuRef>, check: Check, m: String, e: String, fix: String) {
        self.push(Severity::Error, gpu, check, m, e, fix);
    }

    fn note(&mut self, note: String) {
        self.report.notes.push(note);
    }
}

/// The GPU a finding is about, with its uuid where NVML gave one.
pub(super) fn gpu_ref(gpus: &[GpuReading], index: u32) -> GpuRef {
    GpuRef {
        index,
        uuid: gpus
            .iter()
            .find(|g| g.index == index && !g.uuid.is_empty())
            .map(|g| g.uuid.clone()),
    }
}

fn own_ref(g: &GpuReading) -> GpuRef {
    GpuRef {
        index: g.index,
        uuid: (!g.uuid.is_empty()).then(|| g.uuid.clone()),
    }
}

/// Every GPU the requirements mention, once, in order.
fn required(reqs: &Requirements) -> BTreeSet<u32> {
    let mut all: BTreeSet<u32> = reqs.gpus.iter().copied().collect();
    all.extend(reqs.cliques.iter().flat_map(|c| c.gpus.iter().copied()));
    all.extend(reqs.p2p.iter().flat_map(|p| [p.src, p.dst]));
    all
}

/// `0-6` style list of the indices NVML sees.
fn indices(gpus: &[GpuReading]) -> String {
    if gpus.is_empty() {
        return "none".to_owned();
    }
    let list: Vec<String> = gpus.iter().map(|g| g.index.to_string()).collect();
    format!("indices {}", list.join(", "))
}

fn missing_fix(node: &str, reason: &str) -> String {
    format!(
        "`nvidia-smi -L` lists the GPUs the driver sees and `dmesg | grep -i xid` why one \
         is gone (Xid 79: fallen off the bus); it needs a node reboot or hardware service: {}",
        drain(node, reason)
    )
}

/// The per-GPU checks of one GPU the plan uses.
fn health(out: &mut Out<'_>, g: &GpuReading, reqs: &Requirements) {
    let node = out.node;
    let i = g.index;
    if let Some(fault) = &g.fault {
        out.error(
            Some(own_ref(g)),
            Check::GpuUnreadable,
            format!("NVML cannot read it: {fault}"),
            "a GPU NVML can read".to_owned(),
            missing_fix(node, &format!("GPU {i} unreadable")),
        );
        return;
    }
    let mut unchecked = Vec::new();
    match g.ecc_uncorrected_volatile {
        Some(n) if n > 0 => out.error(
            Some(own_ref(g)),
            Check::EccVolatile,
            format!("{n} uncorrectable ECC error(s) since the driver loaded (volatile)"),
            "0".to_owned(),
            format!(
                "see `nvidia-smi -q -i {i} -d ECC,ROW_REMAPPER` and `dmesg | grep -i xid` \
                 (Xid 48, 63, 64, 94, 95); memory contents may be corrupt: reset the idle GPU \
                 (`nvidia-smi -r -i {i}`) or reboot, and drain the node until then: {}",
                drain(node, &format!("GPU {i} uncorrectable ECC"))
            ),
        ),
        Some(_) => {}
        None => unchecked.push("ECC counts (ECC off or unsupported)"),
    }
    let volatile_seen = g.ecc_uncorrected_volatile.is_some_and(|v| v > 0);
    if let Some(n) = g.ecc_uncorrected_aggregate {
        if n > 0 && !volatile_seen {
            out.push(
                Severity::Warning,
                Some(own_ref(g)),
                Check::EccAggregate,
                format!(
                    "{n} uncorrectable ECC error(s) over the GPU's lifetime (aggregate), \
                     none since the driver loaded"
                ),
                "0".to_owned(),
                format!(
                    "past errors were contained; check that no row remap is pending or \
                     failed (`nvidia-smi -q -i {i} -d ROW_REMAPPER,PAGE_RETIREMENT`); a GPU \
                     whose count keeps growing is a candidate for replacement"
                ),
            );
        }
    }
    if g.retired_pages_pending == Some(true) {
        out.error(
            Some(own_ref(g)),
            Check::RetiredPages,
            "pages are pending retirement".to_owned(),
            "no page pending retirement".to_owned(),
            format!(
                "retirement takes effect at the next GPU reset: reset the idle GPU \
                 (`nvidia-smi -r -i {i}`) or reboot the node; until then: {}",
                drain(node, &format!("GPU {i} page retirement pending"))
            ),
        );
    }
    match g.remapped_rows {
        Some(r) if r.failure => out.error(
            Some(own_ref(g)),
            Check::RowRemap,
            format!(
                "a row remapping failed ({} rows remapped for uncorrectable errors): \
                 a bank has no spare row left",
                r.uncorrectable
            ),
            "no remapping failure".to_owned(),
            format!(
                "the GPU can no longer repair memory errors (`nvidia-smi -q -i {i} -d \
                 ROW_REMAPPER`): drain the node and have the GPU replaced: {}",
                drain(node, &format!("GPU {i} row remapping failure"))
            ),
        ),
        Some(r) if r.pending => out.error(
            Some(own_ref(g)),
            Check::RowRemap,
            format!(
                "a row remap is pending ({} rows remapped for uncorrectable errors)",
                r.uncorrectable
            ),
            "no pending remap".to_owned(),
            format!(
                "the remap takes effect at the next GPU reset: reset the idle GPU \
                 (`nvidia-smi -r -i {i}`) or reboot the node; until then: {}",
                drain(node, &format!("GPU {i} row remap pending"))
            ),
        ),
        Some(_) => {}
        None if g.retired_pages_pending.is_none() => {
            unchecked.push("row remapping and page retirement")
        }
        None => {}
    }
    if let Some(f) = &g.fabric {
        if f.state != FabricState::NotSupported && !f.is_complete() {
            out.error(
                Some(own_ref(g)),
                Check::Fabric,
                format!(
                    "fabric registration {}, status {}",
                    f.state,
                    f.status_text()
                ),
                "state completed, status success".to_owned(),
                format!(
                    "`nvidia-smi -q -i {i}` shows it under `Fabric`; `in progress` right \
                     after boot settles within minutes, so run again; if it stays, the \
                     rack's NVLink fabric manager (on the switch trays) did not register \
                     this GPU: have it checked, and drain the node: {}",
                    drain(node, &format!("GPU {i} NVLink fabric {}", f.state))
                ),
            );
        }
    }
    free_memory(out, g, reqs, &mut unchecked);
    if !unchecked.is_empty() {
        out.note(format!(
            "GPU {i}: not reported by NVML, so not checked: {}",
            unchecked.join("; ")
        ));
    }
}

fn free_memory(out: &mut Out<'_>, g: &GpuReading, reqs: &Requirements, unchecked: &mut Vec<&str>) {
    if reqs.min_free_fraction.is_none() && reqs.min_free_mib.is_none() {
        return;
    }
    let (Some(total), Some(free)) = (g.memory_total_mib, g.memory_free_mib) else {
        unchecked.push("free memory");
        return;
    };
    let by_fraction = reqs
        .min_free_fraction
        .map(|f| (f.clamp(0.0, 1.0) * total as f64).ceil() as u64);
    let need = by_fraction.max(reqs.min_free_mib).unwrap_or(0);
    if free >= need {
        return;
    }
    let i = g.index;
    let pct = |mib: u64| 100.0 * mib as f64 / total.max(1) as f64;
    let why = match (reqs.min_free_fraction, by_fraction) {
        (Some(f), Some(b)) if b == need => format!(" ({:.0}% of the total)", f * 100.0),
        _ => String::new(),
    };
    out.error(
        Some(own_ref(g)),
        Check::FreeMemory,
        format!("{free} MiB free of {total} MiB ({:.0}%)", pct(free)),
        format!("at least {need} MiB free{why}"),
        format!(
            "another process holds memory on it: `nvidia-smi --query-compute-apps=pid,\
             process_name,used_memory --format=csv -i {i}`; usually an engine left over from \
             an earlier job on this node: end it, or give the engine less memory \
             (`--gpu-memory-utilization`)"
        ),
    );
}

/// One instance's GPUs on this node must share one clique: the planned one, or else
/// the one most of them are in.
fn cliques(out: &mut Out<'_>, gpus: &[GpuReading], group: &CliqueGroup) {
    let node = out.node;
    let members: Vec<&GpuReading> = group
        .gpus
        .iter()
        .filter_map(|i| gpus.iter().find(|g| g.index == *i && g.fault.is_none()))
        .collect();
    // Count per clique, remembering the lowest GPU index in each to break ties.
    let mut tally: BTreeMap<Clique, (usize, std::cmp::Reverse<u32>)> = BTreeMap::new();
    for g in &members {
        if let Some(c) = g.fabric.as_ref().and_then(|f| f.clique()) {
            let e = tally.entry(c).or_insert((0, std::cmp::Reverse(g.index)));
            e.0 += 1;
            e.1 = e.1.max(std::cmp::Reverse(g.index));
        }
    }
    let majority = tally
        .iter()
        .max_by_key(|(_, v)| **v)
        .map(|(c, _)| c.clone());
    if let Some(c) = &majority {
        out.report.cliques.push(InstanceClique {
            instance: group.instance.clone(),
            clique: c.clone(),
            gpus: members
                .iter()
                .filter(|g| g.fabric.as_ref().and_then(|f| f.clique()).as_ref() == Some(c))
                .map(|g| g.index)
                .collect(),
        });
    }
    let (reference, whose) = match (&group.expected, &majority) {
        (Some(e), _) => (Some(e), "the plan's".to_owned()),
        (None, Some(m)) => (
            Some(m),
            format!("most of instance `{}`'s GPUs here", group.instance),
        ),
        (None, None) => (None, String::new()),
    };
    let expected = match reference {
        Some(c) => format!("clique {c} ({whose})"),
        None => format!(
            "one fabric clique for all of instance `{}`'s GPUs",
            group.instance
        ),
    };
    for g in members {
        let i = g.index;
        let found = match &g.fabric {
            // Registration under way or failed: the fabric finding says so already.
            Some(f) if f.state != FabricState::NotSupported && !f.is_complete() => continue,
            Some(f) => match f.clique() {
                Some(c) if Some(&c) == reference => continue,
                Some(c) => format!("clique {c}"),
                None => "no clique (not in any fabric cluster)".to_owned(),
            },
            None => "no NVLink fabric registration (NVML reports none)".to_owned(),
        };
        out.error(
            Some(own_ref(g)),
            Check::Clique,
            format!("{found}, for instance `{}`", group.instance),
            expected.clone(),
            format!(
                "compare `nvidia-smi -q | grep -E 'ClusterUUID|CliqueId'` over the instance's \
                 GPUs; a GPU in another clique sits in another NVLink partition, which the \
                 rack's fabric manager sets: re-plan without this node, or have the partition \
                 fixed; until then: {}",
                drain(node, &format!("GPU {i} in the wrong NVLink clique"))
            ),
        );
    }
}

fn imex(out: &mut Out<'_>, root: &Path) {
    let channels = files::imex_channels(root);
    if let Some(first) = channels.first() {
        out.note(format!("IMEX channel: `/{IMEX_CHANNELS_DIR}/{first}`"));
        return;
    }
    let dir = root.join(IMEX_CHANNELS_DIR);
    let driver = match files::imex_device_registered(root) {
        Some(false) => {
            "; the driver registered no `nvidia-caps-imex-channels` device (`/proc/devices`): \
             it predates IMEX or is not the one NVL72 needs"
        }
        _ => "",
    };
    out.error(
        None,
        Check::ImexChannel,
        format!("no `channel*` in `{}`{driver}", dir.display()),
        "an IMEX channel (`channel0`), for NVLink memory shared across nodes".to_owned(),
        "create channel 0 as root: `mkdir -p /dev/nvidia-caps-imex-channels && mknod \
         /dev/nvidia-caps-imex-channels/channel0 c $(awk '$2==\"nvidia-caps-imex-channels\" \
         {print $1}' /proc/devices) 0`, or load the driver with `NVreg_CreateImexChannel0=1` \
         (either way again after each reboot); Slurm's `switch/nvidia_imex` plugin makes one \
         per job; the `nvidia-imex` service must run too (`systemctl status nvidia-imex`)"
            .to_owned(),
    );
}

fn gpudirect(out: &mut Out<'_>, root: &Path) {
    let (kernel, open_module) = match files::gpudirect(root) {
        GpuDirect::PeerMemory(path) => {
            out.note(format!(
                "GPUDirect RDMA: peer memory module loaded (`/{path}`)"
            ));
            return;
        }
        GpuDirect::DmaBuf { kernel } => {
            out.note(format!(
                "GPUDirect RDMA: DMA-BUF assumed (NVIDIA open kernel module, Linux {kernel}); \
                 `nvidia_peermem` is not loaded"
            ));
            return;
        }
        GpuDirect::Missing {
            kernel,
            open_module,
        } => (kernel, open_module),
    };
    let kernel = kernel.as_deref().unwrap_or("unknown");
    let module = if open_module {
        "open"
    } else {
        "proprietary (or unknown)"
    };
    out.error(
        None,
        Check::GpudirectRdma,
        format!(
            "`nvidia_peermem` not loaded (no `/sys/module/nvidia_peermem`), and no DMA-BUF \
             (NVIDIA kernel module: {module}; Linux {kernel})"
        ),
        "`nvidia_peermem` loaded, or DMA-BUF: the NVIDIA open kernel module on Linux 5.12 \
         or later"
            .to_owned(),
        "load the module that ships with the driver: `sudo modprobe nvidia-peermem` (and list \
         it in `/etc/modules-load.d/` for reboots), or move to the open kernel modules for \
         DMA-BUF; without GPUDirect RDMA, KV crossing nodes is staged through host memory, \
         several times slower"
            .to_owned(),
    );
}

/// Checks, across the nodes' reports, that each instance's GPUs are in one clique:
/// the one holding most of its GPUs (ties: the first node's). One finding per node whose
/// GPUs of the instance are elsewhere. For rank 0, once every node has reported.
pub fn compare_cliques(reports: &[Report]) -> Vec<Finding> {
    let mut by_instance: BTreeMap<&str, Vec<(&str, &InstanceClique)>> = BTreeMap::new();
    for r in reports {
        for c in &r.cliques {
            by_instance
                .entry(c.instance.as_str())
                .or_default()
                .push((r.node.as_str(), c));
        }
    }
    let mut out = Vec::new();
    for (instance, seen) in by_instance {
        let mut tally: Vec<(&Clique, usize, Vec<&str>)> = Vec::new();
        for (node, c) in &seen {
            match tally.iter_mut().find(|(k, _, _)| *k == &c.clique) {
                Some(t) => {
                    t.1 += c.gpus.len();
                    t.2.push(*node);
                }
                None => tally.push((&c.clique, c.gpus.len(), vec![*node])),
            }
        }
        // `max_by_key` keeps the last of equals; reversing keeps the first node's.
        let Some((reference, _, holders)) = tally.iter().rev().max_by_key(|t| t.1) else {
            continue;
        };
        for (node, c) in seen.iter().filter(|(_, c)| &c.clique != *reference) {
            let list: Vec<String> = c.gpus.iter().map(u32::to_string).collect();
            out.push(Finding {
                severity: Severity::Error,
                node: (*node).to_owned(),
                gpu: None,
                check: Check::Clique,
                measured: format!(
                    "GPUs {} of instance `{instance}` are in clique {}",
                    list.join(", "),
                    c.clique
                ),
                expected: format!(
                    "clique {reference}, like its GPUs on `{}`",
                    holders.join("`, `")
                ),
                fix: format!(
                    "an instance must stay within one NVLink partition: re-plan without \
                     this node, or have the rack's partition fixed; until then: {}",
                    drain(
                        node,
                        &format!("instance {instance} split across NVLink cliques")
                    )
                ),
            });
        }
    }
    out
}
