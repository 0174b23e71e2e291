//! What the plan needs of one node's GPUs: the input of [`super::check`].

use serde::{Deserialize, Serialize};

use super::reading::Clique;

/// The share of a link's expected bandwidth a P2P copy must reach unless
/// [`Requirements::p2p_min_fraction`] says otherwise. A cudaMemcpyPeer-style copy
/// reaches about 80–90% of NVLink's nominal one-way rate on a healthy HGX H100 or
/// GB200; half of it means lanes or links are down, or the copy is staged through the
/// host.
pub const DEFAULT_P2P_MIN_FRACTION: f64 = 0.5;

/// What one node must offer, built by the launcher from the plan. Every field defaults
/// to "not checked"; GPUs are named by NVML index (what `nvidia-smi -i` takes; the
/// topology's `GpuBinding::visible_nvml_indices` maps a topology index to it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Requirements {
    /// NVML indices of the GPUs this node's engine instances use. Each must be present
    /// and healthy. Default: none.
    pub gpus: Vec<u32>,
    /// How many GPUs the node has in all (8 on an HGX H100, 4 on a GB200 compute tray):
    /// fewer means a GPU fell off the bus even where the plan does not use it. Default:
    /// not checked.
    pub gpus_on_node: Option<u32>,
    /// Free memory each required GPU must have, as a fraction of its total, in (0, 1]
    /// (an engine's `--gpu-memory-utilization`). Default: not checked.
    pub min_free_fraction: Option<f64>,
    /// Free memory each required GPU must have, in MiB. Default: not checked.
    pub min_free_mib: Option<u64>,
    /// Engine instances whose GPUs talk over the multi-node NVLink fabric (NVL72): the
    /// GPUs of each must sit in one clique. Default: none.
    pub cliques: Vec<CliqueGroup>,
    /// An instance or a KV transfer crosses nodes over NVLink, which needs an IMEX
    /// channel (`/dev/nvidia-caps-imex-channels/channel*`). Default: `false`.
    pub needs_imex: bool,
    /// KV crosses nodes over InfiniBand/RoCE, which needs GPUDirect RDMA
    /// (`nvidia_peermem`, or DMA-BUF). Default: `false`.
    pub needs_gpudirect_rdma: bool,
    /// Pairs of GPUs of this node that exchange KV, with the bandwidth their link
    /// should give. Measured only with the `cuda` feature. Default: none.
    pub p2p: Vec<P2pPair>,
    /// The share of [`P2pPair::expected_gbps`] a measured copy must reach, in (0, 1].
    /// Default: [`DEFAULT_P2P_MIN_FRACTION`].
    pub p2p_min_fraction: Option<f64>,
}

/// The GPUs of one engine instance that must share one NVLink clique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliqueGroup {
    /// The instance, as the plan names it (`decode-0`).
    pub instance: String,
    /// NVML indices of its GPUs on this node.
    pub gpus: Vec<u32>,
    /// The clique the planner placed it in, where known ([`Clique::of`] the topology's
    /// NVLink domain). Without it, this node's GPUs of the instance must agree with
    /// each other, and [`super::compare_cliques`] checks across nodes.
    #[serde(default)]
    pub expected: Option<Clique>,
}

/// Two GPUs of this node that exchange KV, `src` sending to `dst`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P2pPair {
    /// NVML index of the sender (a prefill instance's GPU).
    pub src: u32,
    /// NVML index of the receiver (a decode instance's GPU).
    pub dst: u32,
    /// The link's nominal one-way bandwidth, in GB/s (10⁹ bytes a second): 450 for
    /// NVLink 4 (H100 SXM), 900 for NVLink 5 (GB200), about 64 for PCIe 5 ×16.
    pub expected_gbps: f64,
}

impl Requirements {
    /// The P2P threshold in effect.
    pub fn p2p_fraction(&self) -> f64 {
        self.p2p_min_fraction.unwrap_or(DEFAULT_P2P_MIN_FRACTION)
    }
}
