//! SGLang: `python3 -m sglang.launch_server --model-path MODEL …`.
//!
//! Flags follow SGLang 0.5.23 (the version `cohort-kv` decodes KV events of), checked
//! against its source (`python/sglang/srt/server_args.py`,
//! `python/sglang/srt/disaggregation/kv_events.py`, `entrypoints/http_server.py`) and
//! `docs/advanced_features/pd_disaggregation.md`.
//!
//! | what | how |
//! |---|---|
//! | KV events | `--kv-events-config` (ZMQ PUB bound on `tcp://*:<port + 1>`) |
//! | prefill/decode | `--disaggregation-mode`; the prefill's bootstrap server on `<port + 2>` |
//! | multi-node | `--dist-init-addr <leader>:<leader port + 3> --nnodes --node-rank` |
//! | ready | `GET /health` 200 |
//! | metrics | `--enable-metrics`, `GET /metrics` |

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::vllm::{default_ready_s, http_endpoints, kv_events_config, NCCL_MNNVL_ENABLE};
use super::{
    port_offset, Endpoints, Engine, EngineContext, Handshake, LaunchSpec, MultiNode, Role,
};

/// Mooncake moves KV blocks over multi-node NVLink instead of RDMA (`True`).
pub const MC_FORCE_MNNVL: &str = "MC_FORCE_MNNVL";
/// SGLang allocates the KV cache from a pool Mooncake can export over NVLink (`True`);
/// needed with [`MC_FORCE_MNNVL`].
pub const SGLANG_MOONCAKE_CUSTOM_MEM_POOL: &str = "SGLANG_MOONCAKE_CUSTOM_MEM_POOL";

/// Starts each instance as `python3 -m sglang.launch_server --model-path … --tp-size …`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SglangEngine {
    /// The Python that has `sglang` installed. Default `python3`.
    #[serde(default = "default_python")]
    pub python: PathBuf,
    /// Seconds to wait for `/health` after start. Default 1800: weights, then SGLang's
    /// CUDA graph capture and warm-up request.
    #[serde(default = "default_ready_s")]
    pub ready_deadline_s: f64,
    /// `--disaggregation-transfer-backend` (`mooncake`, `nixl`, …). Default: not given,
    /// SGLang's own default (Mooncake).
    #[serde(default)]
    pub transfer_backend: Option<String>,
    /// Mooncake over multi-node NVLink: sets `MC_FORCE_MNNVL=True` and
    /// `SGLANG_MOONCAKE_CUSTOM_MEM_POOL=True` on prefill and decode instances. Turn it on
    /// only when every prefill and decode instance is in one NVLink domain (one GB200
    /// NVL72 rack), with the Mooncake backend: a transfer between domains then fails.
    /// Default `false` (RDMA).
    #[serde(default)]
    pub mooncake_mnnvl: bool,
    /// ZMQ topic of the KV events. Default empty.
    #[serde(default)]
    pub kv_events_topic: String,
    /// Extra environment for every instance, set last (it overrides the adapter's own
    /// variables). Default none.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_python() -> PathBuf {
    "python3".into()
}

impl Default for SglangEngine {
    fn default() -> Self {
        Self {
            python: default_python(),
            ready_deadline_s: default_ready_s(),
            transfer_backend: None,
            mooncake_mnnvl: false,
            kv_events_topic: String::new(),
            env: BTreeMap::new(),
        }
    }
}

impl SglangEngine {
    /// The command for one node of the instance: `node` is `None` for an instance on one
    /// node, else this node's place in it. Every node gets the same arguments but its
    /// `--node-rank` and `--host`, as SGLang's multi-node examples do.
    pub fn launch_node(&self, ctx: &EngineContext<'_>, node: Option<&MultiNode>) -> LaunchSpec {
        let i = ctx.instance;
        let mut args: Vec<String> = vec![
            "-m".into(),
            "sglang.launch_server".into(),
            "--model-path".into(),
            i.model.clone(),
            "--host".into(),
            i.host.clone(),
            "--port".into(),
            i.port.to_string(),
            "--tp-size".into(),
            i.tp.to_string(),
            // `/metrics` exists only with it.
            "--enable-metrics".into(),
        ];
        if let Some(name) = &i.served_model_name {
            // SGLang 0.5 `--served-model-name`, as vLLM's.
            args.extend(["--served-model-name".into(), name.clone()]);
        }
        let mut env = BTreeMap::new();
        // The leader's block: the rendezvous and the bootstrap server are the leader's,
        // and every node must name the same ones.
        let base = node.map_or(i.port, |n| n.leader_port);
        if let Some(n) = node {
            args.extend([
                "--dist-init-addr".into(),
                format!("{}:{}", n.leader_host, base + port_offset::DIST_INIT),
                "--nnodes".into(),
                n.nnodes.to_string(),
                "--node-rank".into(),
                n.node_rank.to_string(),
            ]);
            if !i.nvlink_domain.is_empty() {
                env.insert(NCCL_MNNVL_ENABLE.to_owned(), "1".to_owned());
            }
        }
        if let Some(port) = i.kv_events_port.filter(|_| !dp_attention(i)) {
            // Same fields as vLLM's.
            args.extend([
                "--kv-events-config".into(),
                kv_events_config(port, &self.kv_events_topic),
            ]);
        }
        match i.role {
            Role::Prefill => args.extend([
                "--disaggregation-mode".into(),
                "prefill".into(),
                "--disaggregation-bootstrap-port".into(),
                (base + port_offset::KV_TRANSFER).to_string(),
            ]),
            Role::Decode => args.extend(["--disaggregation-mode".into(), "decode".into()]),
            Role::Aggregated => {}
        }
        if i.role != Role::Aggregated {
            if let Some(backend) = &self.transfer_backend {
                args.extend(["--disaggregation-transfer-backend".into(), backend.clone()]);
            }
            if self.mooncake_mnnvl {
                env.insert(MC_FORCE_MNNVL.to_owned(), "True".to_owned());
                env.insert(
                    SGLANG_MOONCAKE_CUSTOM_MEM_POOL.to_owned(),
                    "True".to_owned(),
                );
            }
        }
        args.extend(i.extra_args.iter().cloned());
        env.extend(self.env.clone());
        LaunchSpec {
            program: self.python.clone(),
            args,
            env: env.into_iter().collect(),
        }
    }

    /// Where the instance is reached; a follower answers with its leader's URLs.
    ///
    /// Readiness is `/health`, not `/health_generate`: in SGLang 0.5 both run the same
    /// handler, which answers 503 until the server has finished its warm-up and then
    /// generates one token (unless `SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=false`), so
    /// `/health` already proves the scheduler works; older versions' `/health` only
    /// proved the HTTP server was up, and is still the one every version has.
    pub fn endpoints_node(&self, ctx: &EngineContext<'_>, node: Option<&MultiNode>) -> Endpoints {
        let events = !dp_attention(ctx.instance);
        http_endpoints(ctx.instance, node, "/health", Some("/metrics"), events)
    }
}

/// Whether the instance runs attention data-parallel (`--enable-dp-attention`, the wide
/// expert-parallel deployments). Its KV events are then not asked for: SGLang 0.5 binds
/// one publisher per DP rank at `port + rank`, on the rank's own node, which collides
/// with the instance's rendezvous (`+3`) and SGLang's own sockets (`+4..+9`) on the
/// leader, and, past 9 ranks, with the next instance's block. The router then tracks
/// such instances by its own routing decisions (approximate mode).
fn dp_attention(i: &super::InstanceSpec) -> bool {
    i.extra_args.iter().any(|a| a == "--enable-dp-attention")
}

impl Engine for SglangEngine {
    fn name(&self) -> &'static str {
        "sglang"
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
        Handshake::SglangBootstrap
    }
}
