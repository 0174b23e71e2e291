//! GPU preflight: before engines start, each node checks the GPUs the plan gives it, so
//! that a bad node fails in seconds with the node and GPU named, instead of burning the
//! allocation on engines that hang or crash.
//!
//! A [`GpuSource`] says what NVML reports per GPU ([`NvmlSource`] on a node,
//! [`FixtureSource`] from JSON where there is no GPU); [`Requirements`] says what the
//! plan needs of this node; [`preflight`] reads the source, runs [`check`] (GPU count,
//! ECC, page retirement and row remapping, fabric registration and cliques, free memory,
//! IMEX channel, GPUDirect RDMA) and, with the `cuda` feature, measures P2P copy
//! bandwidth (`probe_p2p`) and judges it ([`judge_p2p`]). The [`Report`] lists every
//! failed check as a [`Finding`]: one line each for people, JSON for results. After
//! every node has reported, [`compare_cliques`] checks instances that span nodes.
//!
//! Nothing here drains nodes or stops jobs: the launcher prints the report and decides.
//! `docs/preflight.md` describes each check.

mod check;
mod files;
mod fixture;
mod nvml;
mod p2p;
#[cfg(feature = "cuda")]
mod probe;
mod reading;
mod report;
mod requirements;

use std::path::Path;

pub use check::{check, compare_cliques};
pub use fixture::FixtureSource;
pub use nvml::NvmlSource;
pub use p2p::{judge_p2p, p2p_meets, p2p_threshold, P2pMeasurement};
#[cfg(feature = "cuda")]
pub use probe::{probe_p2p, ProbeError, ProbeOptions};
pub use reading::{
    Clique, FabricReading, FabricState, GpuReading, GpuSource, GpuSourceError, Readings,
    RemappedRows, READINGS_VERSION,
};
pub use report::{Check, Finding, GpuRef, InstanceClique, Report, Severity};
pub use requirements::{CliqueGroup, P2pPair, Requirements, DEFAULT_P2P_MIN_FRACTION};

/// The whole preflight of node `node`: reads `source`, checks it and the files below
/// `root` (`/` on a node) against `reqs`, and measures and judges `reqs.p2p` where built
/// with `cuda`. A source that cannot be read is a finding when `reqs` needs GPUs, and a
/// note otherwise; the node-wide file checks run either way.
pub fn preflight(node: &str, source: &dyn GpuSource, root: &Path, reqs: &Requirements) -> Report {
    let readings = match source.read() {
        Ok(r) => r,
        Err(e) => return unreadable(node, &e, root, reqs),
    };
    let mut report = check(node, &readings, root, reqs);
    if !reqs.p2p.is_empty() {
        p2p(&mut report, &readings, reqs);
        report.sort();
    }
    report
}

/// The report when no GPU could be read: the node-wide checks, and the failure.
fn unreadable(node: &str, e: &GpuSourceError, root: &Path, reqs: &Requirements) -> Report {
    let node_wide = Requirements {
        needs_imex: reqs.needs_imex,
        needs_gpudirect_rdma: reqs.needs_gpudirect_rdma,
        ..Requirements::default()
    };
    let empty = Readings {
        version: READINGS_VERSION,
        source: "none".to_owned(),
        gpus: Vec::new(),
        notes: Vec::new(),
    };
    let mut report = check(node, &empty, root, &node_wide);
    let mut chain = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        chain.push_str(&format!(": {c}"));
        cause = c.source();
    }
    let needs_gpus = reqs.gpus_on_node.is_some()
        || !reqs.gpus.is_empty()
        || !reqs.cliques.is_empty()
        || !reqs.p2p.is_empty();
    if !needs_gpus {
        report.notes.push(format!("no GPU facts: {chain}"));
        return report;
    }
    report.findings.push(Finding {
        severity: Severity::Error,
        node: node.to_owned(),
        gpu: None,
        check: Check::Nvml,
        measured: chain,
        expected: "NVML answering for the GPUs the plan uses".to_owned(),
        fix: "`nvidia-smi` must work on this node; in a container the NVIDIA runtime must \
              bring in the driver's libraries (Apptainer `--nv`, enroot/pyxis with \
              `NVIDIA_VISIBLE_DEVICES`); after a driver upgrade without a reboot, NVML's \
              `Driver/library version mismatch` needs the reboot"
            .to_owned(),
    });
    report.sort();
    report
}

/// Measures each pair (where both GPUs passed their checks) and judges the results.
#[cfg(feature = "cuda")]
fn p2p(report: &mut Report, readings: &Readings, reqs: &Requirements) {
    let broken = |i: u32| {
        report
            .errors()
            .any(|f| f.gpu.as_ref().map(|g| g.index) == Some(i))
    };
    let find = |i: u32| readings.gpus.iter().find(|g| g.index == i);
    let opts = ProbeOptions::default();
    let mut measured = Vec::new();
    let mut failed = Vec::new();
    for pair in &reqs.p2p {
        let (Some(src), Some(dst)) = (find(pair.src), find(pair.dst)) else {
            continue; // a missing GPU is reported already
        };
        if broken(pair.src) || broken(pair.dst) {
            continue;
        }
        match probe_p2p(src, dst, &opts) {
            Ok(m) => measured.push(m),
            Err(e) => failed.push(Finding {
                severity: Severity::Warning,
                node: report.node.clone(),
                gpu: Some(GpuRef {
                    index: src.index,
                    uuid: Some(src.uuid.clone()),
                }),
                check: Check::P2pBandwidth,
                measured: format!(
                    "not measured from GPU {} to GPU {}: {e}",
                    src.index, dst.index
                ),
                expected: "a P2P copy to time".to_owned(),
                fix: "run the probe again; if CUDA keeps failing here, engines will too: \
                      check `nvidia-smi` and the driver"
                    .to_owned(),
            }),
        }
    }
    let judged = judge_p2p(&report.node, &readings.gpus, &measured, reqs);
    report.findings.extend(judged);
    report.findings.extend(failed);
    report.p2p = measured;
}

/// Without CUDA nothing is measured; the report says so.
#[cfg(not(feature = "cuda"))]
fn p2p(report: &mut Report, _: &Readings, reqs: &Requirements) {
    report.notes.push(format!(
        "P2P bandwidth of {} GPU pair(s) not measured: this cohort was built without the \
         `cuda` feature",
        reqs.p2p.len()
    ));
}
