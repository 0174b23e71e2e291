//! Engines and their supervision.
//!
//! An [`Engine`] says how to start one instance of the plan (command, arguments,
//! environment), where it is ready, its metrics and KV-event endpoints, and its
//! prefill→decode handshake. Adapters, one file each: [`sim`] (`cohort sim`) and
//! [`external`] (attach to running servers, start nothing). The real engines come later
//! with the same trait.
//!
//! The [`Supervisor`] actor starts instances: a sanitised environment, the plan's GPUs
//! and CPUs, its own process group and log file; readiness by the health endpoint with a
//! deadline; exits reported with their status and log tail; stop is TERM to the group,
//! a grace period, then KILL; dropping the supervisor kills every group it started.
//!
//! [`container`] wraps any engine's command for pyxis, enroot or Apptainer.

pub mod container;
pub mod external;
mod logtail;
mod probe;
mod process;
pub mod sglang;
pub mod sim;
pub mod supervisor;
pub mod trtllm;
pub mod vllm;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::topology::CpuSet;

pub use process::ExitInfo;
pub use supervisor::{preview, InstanceEvent, StartError, Supervisor, SupervisorConfig};

/// What an instance does in disaggregated serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Prefill,
    Decode,
    Aggregated,
}

impl Role {
    /// The lower-case name, as engines' flags spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Prefill => "prefill",
            Self::Decode => "decode",
            Self::Aggregated => "aggregated",
        }
    }
}

/// One instance of the plan as this rank starts it: the launcher fills it from its plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// `prefill-0`, `decode-3`: names its log file and its events.
    pub id: String,
    pub role: Role,
    /// The address the engine listens on and is reached at.
    pub host: String,
    /// Its HTTP port.
    pub port: u16,
    /// Where it publishes KV events, if it does.
    #[serde(default)]
    pub kv_events_port: Option<u16>,
    /// GPU indices on this node in PCI bus order (`CUDA_VISIBLE_DEVICES` with
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID`).
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// CPUs to bind it to; `None` leaves the inherited affinity.
    #[serde(default)]
    pub cpus: Option<CpuSet>,
    /// NUMA nodes for its memory (`numactl --membind`), when `numactl` is installed.
    #[serde(default)]
    pub mem_nodes: Vec<u32>,
    /// The model to serve: a Hugging Face id, or a local weights directory.
    pub model: String,
    /// The name clients use for it when `model` is a local path (`--served-model-name`);
    /// `None` serves it under `model`.
    #[serde(default)]
    pub served_model_name: Option<String>,
    /// Tensor-parallel size.
    #[serde(default = "one")]
    pub tp: u32,
    /// Its NVLink domain label.
    #[serde(default)]
    pub nvlink_domain: String,
    /// Engine arguments from the recipe, appended as given.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Environment from the recipe, set after sanitising.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// This node's place in an instance that spans several nodes; `None` for an
    /// instance on one node. Every node of such an instance gets its own spec.
    #[serde(default)]
    pub multi_node: Option<MultiNode>,
}

impl InstanceSpec {
    /// Whether this spec is a follower's part of a multi-node instance: it serves no
    /// HTTP and is ready when its leader is.
    pub fn is_follower(&self) -> bool {
        self.multi_node.as_ref().is_some_and(|n| !n.is_leader())
    }
}

fn one() -> u32 {
    1
}

/// Offsets in an instance's block of ports, `port..port + port_stride` (stride 10 by
/// default): what the real engines' adapters bind where. `+0` is the HTTP port.
pub mod port_offset {
    /// ZMQ PUB of KV events (`InstanceSpec::kv_events_port` from the launcher).
    pub const KV_EVENTS: u16 = 1;
    /// vLLM's NIXL side channel; SGLang's disaggregation bootstrap server (prefill).
    pub const KV_TRANSFER: u16 = 2;
    /// Multi-node rendezvous on the leader: vLLM's `--master-port`, SGLang's
    /// `--dist-init-addr` port. SGLang also takes the next six (`+4..=+9`) on the leader
    /// for its own ZMQ sockets.
    pub const DIST_INIT: u16 = 3;
}

/// Where one node stands in an instance that spans several nodes.
///
/// Every node of such an instance runs one engine process; the leader (`node_rank` 0)
/// serves HTTP and publishes KV events, the followers join it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiNode {
    /// Nodes the instance spans (≥ 2).
    pub nnodes: u32,
    /// This node's rank in the instance; 0 is the leader.
    pub node_rank: u32,
    /// The leader's cluster-facing address (its `InstanceSpec::host`).
    pub leader_host: String,
    /// The leader's HTTP port: the start of the port block its rendezvous is in.
    pub leader_port: u16,
}

impl MultiNode {
    /// Whether this node serves the instance's HTTP API.
    pub fn is_leader(&self) -> bool {
        self.node_rank == 0
    }
}

/// What an engine method is asked about.
#[derive(Debug, Clone, Copy)]
pub struct EngineContext<'a> {
    pub instance: &'a InstanceSpec,
}

/// How to start an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Set on top of the sanitised environment and the GPU variables.
    pub env: Vec<(String, String)>,
}

/// Where an instance is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoints {
    /// The OpenAI-compatible base URL, `http://host:port`.
    pub url: String,
    /// Answers 200 once the engine serves.
    pub health_url: String,
    /// Prometheus metrics, if any.
    pub metrics_url: Option<String>,
    /// KV events (`tcp://host:port`, ZMQ PUB), if any.
    pub kv_events_url: Option<String>,
}

/// The prefill→decode handshake an engine speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handshake {
    /// vLLM's `kv_transfer_params` (the simulator speaks it too).
    VllmKvTransferParams,
    /// SGLang's `bootstrap_host/port/room`.
    SglangBootstrap,
    /// TensorRT-LLM's `disaggregated_params`.
    TrtllmDisaggregatedParams,
    /// Aggregated serving only.
    None,
}

/// An inference engine, as cohort starts and reaches it.
pub trait Engine: Send + Sync + fmt::Debug {
    /// `sim`, `external`, …
    fn name(&self) -> &'static str;
    /// How to start the instance; `None` when there is nothing to start.
    fn launch(&self, ctx: &EngineContext<'_>) -> Option<LaunchSpec>;
    /// Where the instance is reached.
    fn endpoints(&self, ctx: &EngineContext<'_>) -> Endpoints;
    /// How long it may take to become ready after it starts.
    fn ready_deadline(&self, ctx: &EngineContext<'_>) -> Duration;
    /// Its disaggregation handshake.
    fn handshake(&self) -> Handshake;
}

/// An engine as a recipe or the launcher configures it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EngineConfig {
    Sim(sim::SimEngine),
    External(external::ExternalEngine),
    Vllm(vllm::VllmEngine),
    Sglang(sglang::SglangEngine),
    Trtllm(trtllm::TrtllmEngine),
}

impl EngineConfig {
    /// The engine this configuration describes.
    pub fn build(self) -> Arc<dyn Engine> {
        match self {
            Self::Sim(e) => Arc::new(e),
            Self::External(e) => Arc::new(e),
            Self::Vllm(e) => Arc::new(e),
            Self::Sglang(e) => Arc::new(e),
            Self::Trtllm(e) => Arc::new(e),
        }
    }
}
