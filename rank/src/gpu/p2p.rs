//! Peer-to-peer copy bandwidth between GPUs that exchange KV: what a probe measured
//! ([`P2pMeasurement`], filled by `probe_p2p` with the `cuda` feature) and how it is
//! judged against the link's expected bandwidth ([`judge_p2p`], pure).

use serde::{Deserialize, Serialize};

use super::check::gpu_ref;
use super::reading::GpuReading;
use super::report::{drain, Check, Finding, Severity};
use super::requirements::{P2pPair, Requirements};

/// One probe: `copies` copies of `bytes` each from `src` to `dst`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P2pMeasurement {
    /// NVML index of the sender.
    pub src: u32,
    /// NVML index of the receiver.
    pub dst: u32,
    /// Whether CUDA reported direct peer access (`cuDeviceCanAccessPeer`) and it was
    /// enabled; without it, copies are staged through host memory.
    pub peer_access: bool,
    /// Bytes per copy.
    pub bytes: u64,
    /// Timed copies (after one untimed warm-up).
    pub copies: u32,
    /// Achieved bandwidth, in GB/s (10⁹ bytes a second).
    pub gbps: f64,
}

/// The smallest bandwidth that passes: `expected × fraction`, with the fraction held to
/// (0, 1] (anything else means the default).
pub fn p2p_threshold(expected_gbps: f64, fraction: f64) -> f64 {
    let fraction = if fraction > 0.0 && fraction <= 1.0 {
        fraction
    } else {
        super::requirements::DEFAULT_P2P_MIN_FRACTION
    };
    expected_gbps * fraction
}

/// Whether a measured bandwidth passes. A NaN measurement fails.
pub fn p2p_meets(measured_gbps: f64, expected_gbps: f64, fraction: f64) -> bool {
    measured_gbps >= p2p_threshold(expected_gbps, fraction)
}

/// A finding for each required pair whose measurement falls short or had no peer
/// access. Pairs without a measurement are not judged (the caller notes why).
pub fn judge_p2p(
    node: &str,
    gpus: &[GpuReading],
    measured: &[P2pMeasurement],
    reqs: &Requirements,
) -> Vec<Finding> {
    let fraction = reqs.p2p_fraction();
    let mut out = Vec::new();
    for pair in &reqs.p2p {
        let Some(m) = measured
            .iter()
            .find(|m| m.src == pair.src && m.dst == pair.dst)
        else {
            continue;
        };
        let short = !p2p_meets(m.gbps, pair.expected_gbps, fraction);
        if m.peer_access && !short {
            continue;
        }
        let threshold = p2p_threshold(pair.expected_gbps, fraction);
        let measured = if m.peer_access {
            format!("{:.1} GB/s from GPU {} to GPU {}", m.gbps, m.src, m.dst)
        } else {
            format!(
                "no direct peer access from GPU {} to GPU {} (copies staged through host \
                 memory: {:.1} GB/s)",
                m.src, m.dst, m.gbps
            )
        };
        out.push(Finding {
            severity: Severity::Error,
            node: node.to_owned(),
            gpu: Some(gpu_ref(gpus, pair.src)),
            check: Check::P2pBandwidth,
            measured,
            expected: format!(
                "at least {threshold:.1} GB/s ({:.0}% of the link's {:.1} GB/s)",
                p2p_threshold(100.0, fraction),
                pair.expected_gbps
            ),
            fix: p2p_fix(node, pair),
        });
    }
    out
}

fn p2p_fix(node: &str, pair: &P2pPair) -> String {
    let (a, b) = (pair.src, pair.dst);
    format!(
        "look at the link with `nvidia-smi topo -m` and `nvidia-smi nvlink --status -i {a}` \
         (inactive links, lower speed) and `nvidia-smi nvlink -e -i {a}` (error counters); \
         over PCIe, PCIe ACS or an IOMMU can block P2P (`lspci -vvv | grep ACSCtl`); \
         until fixed, drain the node: {}",
        drain(node, &format!("GPU {a}->{b} P2P bandwidth low"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_hold_the_fraction_to_its_range() {
        assert_eq!(p2p_threshold(450.0, 0.5), 225.0);
        assert_eq!(p2p_threshold(450.0, 0.0), 225.0, "0 means the default");
        assert_eq!(p2p_threshold(450.0, 1.5), 225.0);
        assert_eq!(p2p_threshold(450.0, 1.0), 450.0);
        assert!(p2p_meets(380.0, 450.0, 0.5));
        assert!(!p2p_meets(200.0, 450.0, 0.5));
        assert!(!p2p_meets(f64::NAN, 450.0, 0.5));
    }
}
