//! The outcome of a node's GPU preflight: [`Finding`]s, one per failed check, each
//! naming the node and GPU, what was measured, what was expected and what to do; one
//! line each for people ([`Report`]'s `Display`), JSON for results (serde).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::p2p::P2pMeasurement;
use super::reading::Clique;

/// Whether a finding stops the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The node cannot run its part of the plan.
    Error,
    /// The node can run, but someone should look.
    Warning,
}

/// Which check a finding comes from; the names are stable (JSON, log searches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// No GPU facts at all: NVML is missing or failed.
    Nvml,
    /// The node has fewer (or more) GPUs than its kind should.
    GpuCount,
    /// A GPU the plan uses is not there.
    GpuMissing,
    /// A GPU is there but NVML cannot read it (lost, fallen off the bus).
    GpuUnreadable,
    /// Uncorrectable ECC errors since the driver loaded.
    EccVolatile,
    /// Uncorrectable ECC errors over the GPU's lifetime.
    EccAggregate,
    /// Pages wait for a reboot to be retired.
    RetiredPages,
    /// A row remap is pending, or one failed.
    RowRemap,
    /// Fabric registration is not complete and successful.
    Fabric,
    /// An instance's GPUs are not in one clique, or not in the expected one.
    Clique,
    /// Too little free memory.
    FreeMemory,
    /// No IMEX channel.
    ImexChannel,
    /// No GPUDirect RDMA path (`nvidia_peermem` or DMA-BUF).
    GpudirectRdma,
    /// P2P copy bandwidth below what the link should give, or no P2P at all.
    P2pBandwidth,
}

impl Check {
    /// The stable name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nvml => "nvml",
            Self::GpuCount => "gpu_count",
            Self::GpuMissing => "gpu_missing",
            Self::GpuUnreadable => "gpu_unreadable",
            Self::EccVolatile => "ecc_volatile",
            Self::EccAggregate => "ecc_aggregate",
            Self::RetiredPages => "retired_pages",
            Self::RowRemap => "row_remap",
            Self::Fabric => "fabric",
            Self::Clique => "clique",
            Self::FreeMemory => "free_memory",
            Self::ImexChannel => "imex_channel",
            Self::GpudirectRdma => "gpudirect_rdma",
            Self::P2pBandwidth => "p2p_bandwidth",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A GPU a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuRef {
    /// NVML index (`nvidia-smi -i`).
    pub index: u32,
    /// `GPU-…`, where NVML could say (not for a missing GPU).
    pub uuid: Option<String>,
}

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// Whether it stops the job.
    pub severity: Severity,
    /// The node's host name.
    pub node: String,
    /// The GPU, for a per-GPU check; `None` for node-wide ones (IMEX, GPUDirect RDMA).
    pub gpu: Option<GpuRef>,
    /// Which check.
    pub check: Check,
    /// What was found.
    pub measured: String,
    /// What was needed.
    pub expected: String,
    /// What to do about it, commands included.
    pub fix: String,
}

impl fmt::Display for Finding {
    /// `node GPU 3 (GPU-…): error ecc_volatile: <measured>; expected …; fix: …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.node)?;
        match &self.gpu {
            Some(GpuRef {
                index,
                uuid: Some(uuid),
            }) => write!(f, " GPU {index} ({uuid})")?,
            Some(GpuRef { index, uuid: None }) => write!(f, " GPU {index}")?,
            None => {}
        }
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            ": {severity} {}: {}; expected {}; fix: {}",
            self.check, self.measured, self.expected, self.fix
        )
    }
}

/// The clique an instance's GPUs on this node were found in, for the comparison
/// across nodes ([`super::compare_cliques`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceClique {
    /// The instance.
    pub instance: String,
    /// The clique most of its GPUs here are in.
    pub clique: Clique,
    /// NVML indices of its GPUs here that are in it.
    pub gpus: Vec<u32>,
}

/// A node's GPU preflight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The node's host name.
    pub node: String,
    /// Where the GPU facts came from (`nvml:libnvidia-ml.so.1`, a fixture).
    pub source: String,
    /// Every failed check, errors first, then by GPU.
    pub findings: Vec<Finding>,
    /// Cliques the instances' GPUs were found in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cliques: Vec<InstanceClique>,
    /// P2P copies measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub p2p: Vec<P2pMeasurement>,
    /// What could not be checked, and why; how GPUDirect RDMA is provided.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report for `node`.
    pub fn new(node: &str, source: &str) -> Self {
        Self {
            node: node.to_owned(),
            source: source.to_owned(),
            findings: Vec::new(),
            cliques: Vec::new(),
            p2p: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// No finding stops the job (warnings may remain).
    pub fn passed(&self) -> bool {
        self.errors().next().is_none()
    }

    /// The findings that stop the job.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    /// Orders findings: errors first, then node-wide before per-GPU, then by GPU and
    /// check. Stable, so the order within one GPU and check is kept.
    pub(crate) fn sort(&mut self) {
        self.findings
            .sort_by_key(|f| (f.severity, f.gpu.as_ref().map(|g| g.index), f.check));
    }
}

impl fmt::Display for Report {
    /// One line per finding; a passing report says so in one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.findings.is_empty() {
            return writeln!(f, "{}: GPU preflight passed ({})", self.node, self.source);
        }
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        Ok(())
    }
}

/// `scontrol` taking the node out of service, with the reason Slurm will show.
pub(crate) fn drain(node: &str, reason: &str) -> String {
    format!("`scontrol update nodename={node} state=drain reason=\"cohort preflight: {reason}\"`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(severity: Severity, gpu: Option<u32>, check: Check) -> Finding {
        Finding {
            severity,
            node: "n1".into(),
            gpu: gpu.map(|index| GpuRef {
                index,
                uuid: Some(format!("GPU-{index}")),
            }),
            check,
            measured: "m".into(),
            expected: "e".into(),
            fix: "f".into(),
        }
    }

    #[test]
    fn lines_put_node_and_gpu_first_and_errors_sort_first() {
        let mut r = Report::new("n1", "fixture");
        assert!(r.passed());
        assert_eq!(r.to_string(), "n1: GPU preflight passed (fixture)\n");
        r.findings = vec![
            finding(Severity::Warning, Some(0), Check::EccAggregate),
            finding(Severity::Error, Some(3), Check::EccVolatile),
            finding(Severity::Error, None, Check::ImexChannel),
        ];
        assert!(!r.passed());
        r.sort();
        let text = r.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "n1: error imex_channel: m; expected e; fix: f",
                "n1 GPU 3 (GPU-3): error ecc_volatile: m; expected e; fix: f",
                "n1 GPU 0 (GPU-0): warning ecc_aggregate: m; expected e; fix: f",
            ]
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["findings"][1]["check"], "ecc_volatile");
        assert_eq!(json["findings"][1]["gpu"]["index"], 3);
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn check_names_match_serde() {
        for c in [
            Check::Nvml,
            Check::GpudirectRdma,
            Check::P2pBandwidth,
            Check::RowRemap,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.name());
        }
    }
}
