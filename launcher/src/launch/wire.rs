//! The plan as rank 0 publishes it to every rank: the job's results directory, the
//! engine, and each instance with the rank that starts it — everything a rank needs,
//! so that no rank re-derives what rank 0 decided.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use cohort_rank::engine::container::{Contained, Container, ContainerHost};
use cohort_rank::engine::{self, Engine, InstanceSpec, MultiNode};
use serde::{Deserialize, Serialize};

use super::args::EngineChoice;
use super::node::NodeInfo;
use crate::plan::{Plan, Role};
use crate::recipe::{EngineKind, Recipe, RoleArgs};

/// The published plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WirePlan {
    /// The job id (Slurm's, or `local-…`).
    pub(crate) job: String,
    /// The job's results directory; ranks put engine logs under `logs/<node>/`.
    pub(crate) results: PathBuf,
    /// The engine of every instance.
    pub(crate) engine: WireEngine,
    /// TERM → KILL grace for engines, milliseconds.
    pub(crate) stop_grace_ms: u64,
    /// The image real engines run from (`[engine.container]`); none for the simulator.
    #[serde(default)]
    pub(crate) container: Option<Container>,
    /// Every instance, with the rank that starts it.
    pub(crate) instances: Vec<Assigned>,
}

/// The engine, as ranks build it (each with its own path to the cohort binary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum WireEngine {
    Sim { hardware: String, speedup: String },
    Vllm(engine::vllm::VllmEngine),
    Sglang(engine::sglang::SglangEngine),
    Trtllm(engine::trtllm::TrtllmEngine),
}

impl WireEngine {
    /// The engine for `c`; a TensorRT-LLM options file goes beside the logs in `results`.
    pub(crate) fn from_choice(c: &EngineChoice, results: &std::path::Path) -> Self {
        match c {
            EngineChoice::Sim { hardware, speedup } => Self::Sim {
                hardware: hardware.clone(),
                speedup: speedup.clone(),
            },
            EngineChoice::Real(EngineKind::Sglang) => Self::Sglang(Default::default()),
            EngineChoice::Real(EngineKind::Trtllm) => Self::Trtllm(engine::trtllm::TrtllmEngine {
                config_dir: Some(results.join("logs")),
                ..Default::default()
            }),
            EngineChoice::Real(_) => Self::Vllm(Default::default()),
        }
    }

    /// Whether the engines speak SGLang's bootstrap handshake.
    pub(crate) fn is_sglang(&self) -> bool {
        matches!(self, Self::Sglang(_))
    }

    /// The prefill→decode handshake the frontend speaks to these engines.
    pub(crate) fn handshake(&self) -> cohort_router::settings::HandshakeKind {
        use cohort_router::settings::HandshakeKind;
        match self {
            Self::Sglang(_) => HandshakeKind::Sglang,
            Self::Trtllm(_) => HandshakeKind::Trtllm,
            Self::Sim { .. } | Self::Vllm(_) => HandshakeKind::Vllm,
        }
    }

    /// The engine as summaries name it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Sim { hardware, speedup } => {
                format!("sim (simulating {hardware}, speedup {speedup})")
            }
            Self::Vllm(e) => format!("vllm (`{}`)", e.program.display()),
            Self::Sglang(e) => format!("sglang (`{} -m sglang.launch_server`)", e.python.display()),
            Self::Trtllm(e) => format!("trtllm (`{}`)", e.program.display()),
        }
    }

    /// The engine adapter on this rank.
    pub(crate) fn build(&self, exe: PathBuf) -> engine::EngineConfig {
        match self {
            Self::Sim { hardware, speedup } => {
                let mut sim = engine::sim::SimEngine::new(exe);
                sim.hardware.clone_from(hardware);
                sim.speedup.clone_from(speedup);
                engine::EngineConfig::Sim(sim)
            }
            Self::Vllm(e) => engine::EngineConfig::Vllm(e.clone()),
            Self::Sglang(e) => engine::EngineConfig::Sglang(e.clone()),
            Self::Trtllm(e) => engine::EngineConfig::Trtllm(e.clone()),
        }
    }
}

impl WirePlan {
    /// The engine as a rank on `node` (Slurm's name for it) starts it: the adapter,
    /// run from the recipe's container when it names one.
    pub(crate) fn engine_on(
        &self,
        exe: PathBuf,
        node: &str,
    ) -> Result<Arc<dyn Engine>, engine::container::ContainerError> {
        let bare = self.engine.build(exe).build();
        let Some(c) = &self.container else {
            return Ok(bare);
        };
        let host = ContainerHost {
            node: Some(node.to_owned()),
            results_dir: Some(self.results.clone()),
        };
        Ok(Arc::new(Contained::new(bare, c.clone(), host)?))
    }
}

/// One instance and who starts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Assigned {
    /// The rank on the instance's first node (its leader).
    pub(crate) rank: u32,
    /// That node's name.
    pub(crate) node: String,
    /// Its part on each other node it spans (multi-node instances), started by that
    /// node's rank.
    #[serde(default)]
    pub(crate) followers: Vec<Follower>,
    /// For a prefill instance: the decode instances it feeds.
    #[serde(default)]
    pub(crate) feeds: Vec<String>,
    pub(crate) spec: InstanceSpec,
}

impl Assigned {
    /// GPUs of the instance over all its nodes.
    pub(crate) fn gpu_count(&self) -> usize {
        self.spec.gpus.len()
            + self
                .followers
                .iter()
                .map(|f| f.spec.gpus.len())
                .sum::<usize>()
    }
}

/// A follower node's part of a multi-node instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Follower {
    /// The rank on that node.
    pub(crate) rank: u32,
    pub(crate) node: String,
    /// The same instance id and port block as the leader's; this node's address and
    /// GPUs; `multi_node` says its place.
    pub(crate) spec: InstanceSpec,
}

/// Why the plan cannot be laid onto the ranks.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("instance `{instance}` is placed on node `{node}`, which no rank plays")]
    NoRank { instance: String, node: String },
    #[error("instance `{instance}` spans {nodes} nodes, and cohort cannot start a TensorRT-LLM instance across nodes yet (it is one MPI job, `trtllm-llmapi-launch` under `srun`); give it at most one node's GPUs (`tp` × `pp` ≤ GPUs per node)")]
    TrtllmMultiNode { instance: String, nodes: usize },
    #[error("the ports of node address {address} run out: {count} instances from port {base} with a stride of {stride} pass 65535; lower `deploy.base_port` or `deploy.port_stride`")]
    Ports {
        address: IpAddr,
        count: usize,
        base: u16,
        stride: u16,
    },
}

/// The published plan for `plan` on the ranks that joined (`nodes[rank]`).
pub(crate) fn build(
    plan: &Plan,
    nodes: &[NodeInfo],
    recipe: &Recipe,
    engine: &EngineChoice,
    job: &str,
    results: PathBuf,
    stop_grace_ms: u64,
) -> Result<WirePlan, WireError> {
    let rank_of: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(r, n)| (n.node.hostname.as_str(), r))
        .collect();
    let ports = unique_ports(plan, nodes, recipe, &rank_of)?;
    let mut instances = Vec::with_capacity(plan.instances.len());
    for (i, inst) in plan.instances.iter().enumerate() {
        let leader = &inst.shards[0];
        let rank_on = |node: &str| {
            rank_of.get(node).copied().ok_or_else(|| WireError::NoRank {
                instance: inst.id.clone(),
                node: node.to_owned(),
            })
        };
        let rank = rank_on(&leader.node)?;
        if inst.shards.len() > 1 && *engine == EngineChoice::Real(EngineKind::Trtllm) {
            return Err(WireError::TrtllmMultiNode {
                instance: inst.id.clone(),
                nodes: inst.shards.len(),
            });
        }
        let info = &nodes[rank];
        let (args, env) = engine_args(recipe, inst.role, engine);
        let shape = match inst.role {
            Role::Prefill => recipe.deploy.prefill.as_ref(),
            Role::Decode => recipe.deploy.decode.as_ref(),
            Role::Aggregated => recipe.deploy.aggregated.as_ref(),
        };
        let port = ports[i];
        let (model, served_model_name) = served_model(recipe, engine);
        let spec = InstanceSpec {
            id: inst.id.clone(),
            role: match inst.role {
                Role::Prefill => engine::Role::Prefill,
                Role::Decode => engine::Role::Decode,
                Role::Aggregated => engine::Role::Aggregated,
            },
            host: info.address.to_string(),
            port,
            kv_events_port: Some(port + 1),
            gpus: leader.gpus.clone(),
            // An emulated node's CPUs and NUMA nodes are not this machine's.
            cpus: (!info.emulated).then(|| leader.cpus.clone()),
            mem_nodes: if info.emulated {
                Vec::new()
            } else {
                leader.mem_nodes.clone()
            },
            model,
            served_model_name,
            tp: shape.map_or(inst.gpu_count() as u32, |s| s.tp()),
            nvlink_domain: inst.domain.clone(),
            extra_args: args,
            env,
            multi_node: None,
        };
        let nnodes = inst.shards.len() as u32;
        let place = |node_rank: usize| MultiNode {
            nnodes,
            node_rank: node_rank as u32,
            leader_host: spec.host.clone(),
            leader_port: port,
        };
        let mut followers = Vec::with_capacity(inst.shards.len() - 1);
        for (k, shard) in inst.shards.iter().enumerate().skip(1) {
            let r = rank_on(&shard.node)?;
            let here = &nodes[r];
            followers.push(Follower {
                rank: r as u32,
                node: shard.node.clone(),
                spec: InstanceSpec {
                    host: here.address.to_string(),
                    gpus: shard.gpus.clone(),
                    cpus: (!here.emulated).then(|| shard.cpus.clone()),
                    mem_nodes: if here.emulated {
                        Vec::new()
                    } else {
                        shard.mem_nodes.clone()
                    },
                    multi_node: Some(place(k)),
                    ..spec.clone()
                },
            });
        }
        let leader_place = (nnodes > 1).then(|| place(0));
        let spec = InstanceSpec {
            multi_node: leader_place,
            ..spec
        };
        instances.push(Assigned {
            rank: rank as u32,
            node: leader.node.clone(),
            followers,
            feeds: inst.feeds.clone(),
            spec,
        });
    }
    Ok(WirePlan {
        job: job.to_owned(),
        engine: WireEngine::from_choice(engine, &results),
        results,
        stop_grace_ms,
        container: match engine {
            EngineChoice::Real(_) => recipe.engine.container.clone(),
            EngineChoice::Sim { .. } => None,
        },
        instances,
    })
}

/// Each instance's HTTP port (its KV events use the next one). The planner gives every
/// node the same blocks; where several nodes share an address (local runs, emulated
/// clusters, `mpirun` on one host), the instances on that address are renumbered so
/// that none collide.
fn unique_ports(
    plan: &Plan,
    nodes: &[NodeInfo],
    recipe: &Recipe,
    rank_of: &BTreeMap<&str, usize>,
) -> Result<Vec<u16>, WireError> {
    let mut per_address: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
    for (i, inst) in plan.instances.iter().enumerate() {
        if let Some(&r) = rank_of.get(inst.shards[0].node.as_str()) {
            per_address.entry(nodes[r].address).or_default().push(i);
        }
    }
    let mut ports: Vec<u16> = plan.instances.iter().map(|i| i.port).collect();
    let (base, stride) = (recipe.deploy.base_port, recipe.deploy.port_stride.max(2));
    for (address, list) in per_address {
        let nodes_here: std::collections::BTreeSet<&str> = list
            .iter()
            .map(|&i| plan.instances[i].shards[0].node.as_str())
            .collect();
        if nodes_here.len() < 2 {
            continue;
        }
        for (k, &i) in list.iter().enumerate() {
            let port = u32::from(base) + k as u32 * u32::from(stride);
            ports[i] =
                u16::try_from(port)
                    .ok()
                    .filter(|p| *p < u16::MAX)
                    .ok_or(WireError::Ports {
                        address,
                        count: list.len(),
                        base,
                        stride,
                    })?;
        }
    }
    Ok(ports)
}

/// What the engine loads and the name it serves it under: a recipe's local weights
/// (`model.path`) are loaded from there and served as `model.name`. The simulator has no
/// weights: it always takes the name.
fn served_model(recipe: &Recipe, engine: &EngineChoice) -> (String, Option<String>) {
    let m = &recipe.model;
    match (&m.path, engine) {
        (Some(path), EngineChoice::Real(_)) => (path.clone(), Some(m.name.clone())),
        _ => (m.name.clone(), None),
    }
}

/// Arguments and environment of a role's instances. The recipe's engine arguments are
/// for its own engine: a rehearsal with the simulator (`--engine sim` over a vLLM or
/// SGLang recipe) leaves them out.
fn engine_args(
    recipe: &Recipe,
    role: Role,
    engine: &EngineChoice,
) -> (Vec<String>, Vec<(String, String)>) {
    let e = &recipe.engine;
    let own = match engine {
        EngineChoice::Sim { .. } => e.kind == EngineKind::Sim,
        EngineChoice::Real(kind) => *kind == e.kind,
    };
    let role_args: Option<&RoleArgs> = match role {
        Role::Prefill => e.prefill.as_ref(),
        Role::Decode => e.decode.as_ref(),
        Role::Aggregated => e.aggregated.as_ref(),
    };
    let mut env = e.env.clone();
    let mut args = Vec::new();
    if own {
        args.extend(e.args.iter().cloned());
        if let Some(r) = role_args {
            args.extend(r.args.iter().cloned());
        }
    }
    if let Some(r) = role_args {
        env.extend(r.env.clone());
    }
    (args, env.into_iter().collect())
}
