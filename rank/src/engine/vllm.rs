//! vLLM: `vllm serve MODEL …`, one OpenAI server per instance.
//!
//! Flags follow vLLM 0.32 (the version `cohort-kv` decodes KV events of), checked against
//! its source: `vllm/config/{parallel,kv_events}.py`, `vllm/distributed/kv_events.py`,
//! `vllm/distributed/kv_transfer/kv_connector/v1/nixl_connector.py`, and the docs
//! `serving/parallelism_scaling.md`, `features/nixl_connector_usage.md`.
//!
//! | what | how |
//! |---|---|
//! | KV events | `--kv-events-config` (ZMQ PUB bound on `tcp://*:<port + 1>`) |
//! | prefill/decode | `--kv-transfer-config` NixlConnector, `kv_producer` (prefill) or `kv_consumer` (decode); side channel on `<host>:<port + 2>` |
//! | multi-node | `--nnodes/--node-rank/--master-addr/--master-port` (`<leader>:<leader port + 3>`), followers `--headless` |
//! | ready | `GET /health` 200 |

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    port_offset, Endpoints, Engine, EngineContext, Handshake, InstanceSpec, LaunchSpec, MultiNode,
    Role,
};

/// The host NIXL's side channel advertises to decode instances in `kv_transfer_params`
/// (vLLM's default, `localhost`, is unreachable from other nodes).
pub const VLLM_NIXL_SIDE_CHANNEL_HOST: &str = "VLLM_NIXL_SIDE_CHANNEL_HOST";
/// The side channel's port (vLLM adds the data-parallel rank; cohort runs DP 1).
pub const VLLM_NIXL_SIDE_CHANNEL_PORT: &str = "VLLM_NIXL_SIDE_CHANNEL_PORT";
/// NCCL over multi-node NVLink: `1` forces it (NCCL's default, `2`, only tries). Set for
/// an instance whose GPUs span nodes of one NVLink domain (GB200 NVL72 trays), so a
/// tensor-parallel group that silently fell back to the network fails loudly instead.
pub const NCCL_MNNVL_ENABLE: &str = "NCCL_MNNVL_ENABLE";

/// Starts each instance as `vllm serve MODEL --host … --port … --tensor-parallel-size …`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VllmEngine {
    /// The `vllm` executable (found on `PATH` unless a path is given). Default `vllm`.
    #[serde(default = "default_program")]
    pub program: PathBuf,
    /// Seconds to wait for `/health` after start. Default 1800: weights of a large model
    /// over a shared filesystem, and CUDA graph capture, take many minutes.
    #[serde(default = "default_ready_s")]
    pub ready_deadline_s: f64,
    /// ZMQ topic of the KV events. Default empty, vLLM's default, which cohort's
    /// subscriber matches.
    #[serde(default)]
    pub kv_events_topic: String,
    /// Extra environment for every instance, set last (it overrides the adapter's own
    /// variables). Default none.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_program() -> PathBuf {
    "vllm".into()
}
pub(super) fn default_ready_s() -> f64 {
    1800.0
}

impl Default for VllmEngine {
    fn default() -> Self {
        Self {
            program: default_program(),
            ready_deadline_s: default_ready_s(),
            kv_events_topic: String::new(),
            env: BTreeMap::new(),
        }
    }
}

impl VllmEngine {
    /// The command for one node of the instance: `node` is `None` for an instance on one
    /// node, else this node's place in it.
    pub fn launch_node(&self, ctx: &EngineContext<'_>, node: Option<&MultiNode>) -> LaunchSpec {
        let i = ctx.instance;
        let mut args: Vec<String> = vec![
            "serve".into(),
            i.model.clone(),
            "--host".into(),
            i.host.clone(),
            "--port".into(),
            i.port.to_string(),
            "--tensor-parallel-size".into(),
            i.tp.to_string(),
        ];
        if let Some(name) = &i.served_model_name {
            // vLLM 0.32 `--served-model-name`: the name `/v1/models` lists and requests
            // use, instead of the weights' path.
            args.extend(["--served-model-name".into(), name.clone()]);
        }
        let mut env = BTreeMap::new();
        if let Some(n) = node {
            // Multi-node with the multiprocessing executor (vLLM 0.32,
            // `ParallelConfig.nnodes/node_rank/master_addr/master_port`): every node runs
            // `vllm serve` with the same sizes, the followers `--headless` (workers only).
            args.extend([
                "--nnodes".into(),
                n.nnodes.to_string(),
                "--node-rank".into(),
                n.node_rank.to_string(),
                "--master-addr".into(),
                n.leader_host.clone(),
                "--master-port".into(),
                (n.leader_port + port_offset::DIST_INIT).to_string(),
                "--distributed-executor-backend".into(),
                "mp".into(),
            ]);
            if !n.is_leader() {
                args.push("--headless".into());
            }
            if !i.nvlink_domain.is_empty() {
                env.insert(NCCL_MNNVL_ENABLE.to_owned(), "1".to_owned());
            }
        }
        // Only the leader runs the scheduler, which is what publishes KV events.
        let leader = node.is_none_or(MultiNode::is_leader);
        if let (Some(port), true) = (i.kv_events_port, leader) {
            args.extend([
                "--kv-events-config".into(),
                kv_events_config(port, &self.kv_events_topic),
            ]);
        }
        if i.role != Role::Aggregated {
            // vLLM 0.32 `KVTransferConfig`: the NixlConnector with the instance's side;
            // 0.32 warns that `kv_both` for it is deprecated (seen running it).
            let role = if i.role == Role::Prefill {
                "kv_producer"
            } else {
                "kv_consumer"
            };
            args.extend([
                "--kv-transfer-config".into(),
                format!(r#"{{"kv_connector":"NixlConnector","kv_role":"{role}"}}"#),
            ]);
            env.insert(VLLM_NIXL_SIDE_CHANNEL_HOST.to_owned(), i.host.clone());
            env.insert(
                VLLM_NIXL_SIDE_CHANNEL_PORT.to_owned(),
                (i.port + port_offset::KV_TRANSFER).to_string(),
            );
        }
        args.extend(i.extra_args.iter().cloned());
        env.extend(self.env.clone());
        LaunchSpec {
            program: self.program.clone(),
            args,
            env: env.into_iter().collect(),
        }
    }

    /// Where the instance is reached; a follower answers with its leader's URLs (it
    /// serves nothing itself, and it is ready when the instance is).
    pub fn endpoints_node(&self, ctx: &EngineContext<'_>, node: Option<&MultiNode>) -> Endpoints {
        http_endpoints(ctx.instance, node, "/health", Some("/metrics"), true)
    }
}

/// `--kv-events-config` for vLLM 0.32 (`KVEventsConfig`); SGLang's has the same fields.
///
/// The endpoint is `tcp://*:PORT` because the publisher binds only when the endpoint
/// has a `*` (or `::`, or is `ipc://`/`inproc://`) and *connects* otherwise — a concrete
/// address would make it dial out and nobody could subscribe. `*` binds every interface
/// of the node.
pub(super) fn kv_events_config(port: u16, topic: &str) -> String {
    serde_json::json!({
        "enable_kv_cache_events": true,
        "publisher": "zmq",
        "endpoint": format!("tcp://*:{port}"),
        "topic": topic,
    })
    .to_string()
}

/// The URLs of an instance served at `host:port` (the leader's for a follower).
pub(super) fn http_endpoints(
    i: &InstanceSpec,
    node: Option<&MultiNode>,
    health: &str,
    metrics: Option<&str>,
    kv_events: bool,
) -> Endpoints {
    let (host, port, kv_port) = match node {
        Some(n) if !n.is_leader() => (
            n.leader_host.as_str(),
            n.leader_port,
            i.kv_events_port
                .map(|_| n.leader_port + port_offset::KV_EVENTS),
        ),
        _ => (i.host.as_str(), i.port, i.kv_events_port),
    };
    let url = format!("http://{host}:{port}");
    Endpoints {
        health_url: format!("{url}{health}"),
        metrics_url: metrics.map(|m| format!("{url}{m}")),
        kv_events_url: kv_port
            .filter(|_| kv_events)
            .map(|p| format!("tcp://{host}:{p}")),
        url,
    }
}

impl Engine for VllmEngine {
    fn name(&self) -> &'static str {
        "vllm"
    }

    fn launch(&self, ctx: &EngineContext<'_>) -> Option<LaunchSpec> {
        Some(self.launch_node(ctx, ctx.instance.multi_node.as_ref()))
    }

    fn endpoints(&self, ctx: &EngineContext<'_>) -> Endpoints {
        self.endpoints_node(ctx, ctx.instance.multi_node.as_ref())
    }

    fn ready_deadline(&self, _ctx: &EngineContext<'_>) -> Duration {
        Duration::from_secs_f64(self.ready_deadline_s.max(0.0))
    }

    fn handshake(&self) -> Handshake {
        Handshake::VllmKvTransferParams
    }
}
