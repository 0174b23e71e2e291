//! `cohort sim`'s arguments and their resolution into a checked [`SimConfig`].
//!
//! [`SimArgs`] only parses; [`SimArgs::resolve`] reads the model, checks every value
//! once and derives the KV-cache size. Nothing after it reads the environment.

use super::hardware::{self, Hardware};
use super::model::{Dtype, ModelSpec};
use super::scheduler::SchedConfig;
use super::timing::{TimingConfig, TimingModel};
use super::tokenizer::Tokenizer;
use super::SimError;
use std::path::PathBuf;
use std::sync::Arc;

/// The role of an instance in disaggregated serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Prefill and decode (accepts both halves of the handshake, like vLLM's `kv_both`).
    Aggregated,
    /// Prefill only: requests with `do_remote_decode`.
    Prefill,
    /// Decode only: requests with `do_remote_prefill`.
    Decode,
}

/// `--speedup`: a factor, or `inf` for no simulated time at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speedup(pub f64);

impl std::str::FromStr for Speedup {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("inf") {
            return Ok(Speedup(f64::INFINITY));
        }
        match s.parse::<f64>() {
            Ok(v) if v > 0.0 => Ok(Speedup(v)),
            _ => Err(format!("a positive number or `inf`; given `{s}`")),
        }
    }
}

/// Arguments of `cohort sim`: a vLLM-like OpenAI-compatible engine with simulated timing.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the (first) instance; 0 picks a free port.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Independent engines in this process, on ports `--port-base`, `--port-base + 1`, …
    #[arg(long, default_value_t = 1)]
    pub instances: u32,
    /// First port with `--instances` (default: `--port`).
    #[arg(long)]
    pub port_base: Option<u16>,
    /// Disaggregation role.
    #[arg(long, value_enum, default_value_t = Role::Aggregated)]
    pub role: Role,
    /// Model preset (llama-3.1-8b, llama-3.1-70b, qwen3-32b, deepseek-r1) or, with
    /// `--model-dir`, the name to serve it under.
    #[arg(long, default_value = "llama-3.1-8b")]
    pub model: String,
    /// A Hugging Face model directory: its `config.json` gives the architecture, and its
    /// `tokenizer.json`, if any, the tokenizer (needs the `hf` feature; default: the
    /// built-in vocabulary).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Name requests must give as `model` (default: `--model`).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// GPU: h100-sxm, h200, b200, gb200, gb300.
    #[arg(long, default_value = "h100-sxm")]
    pub hardware: String,
    /// Tensor-parallel size (GPUs per instance).
    #[arg(long, default_value_t = 1)]
    pub tp: u32,
    /// Weight precision (default: the model's; FP8 for DeepSeek-R1, else BF16).
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// KV-cache precision.
    #[arg(long, value_enum, default_value_t = Dtype::Bf16)]
    pub kv_cache_dtype: Dtype,
    /// Fraction of HBM the engine may use (weights + KV cache + activations).
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// Activation and CUDA-graph memory reserved per GPU, GiB.
    #[arg(long, default_value_t = 2.0)]
    pub activation_reserve_gib: f64,
    /// KV blocks in the cache (default: from memory).
    #[arg(long)]
    pub num_gpu_blocks: Option<u32>,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    pub block_size: u32,
    /// Longest sequence, tokens (default: the model's, capped by the cache).
    #[arg(long)]
    pub max_model_len: Option<u32>,
    /// Most requests running at once.
    #[arg(long, default_value_t = 1024)]
    pub max_num_seqs: u32,
    /// Most tokens per step.
    #[arg(long, default_value_t = 8192)]
    pub max_num_batched_tokens: u32,
    /// Turn prefix caching off.
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// Fraction of peak FLOP/s reached.
    #[arg(long, default_value_t = 0.6)]
    pub eff_compute: f64,
    /// Fraction of HBM bandwidth reached.
    #[arg(long, default_value_t = 0.8)]
    pub eff_memory: f64,
    /// Fixed cost per step, milliseconds.
    #[arg(long, default_value_t = 1.0)]
    pub step_overhead_ms: f64,
    /// Latency of one TP all-reduce, microseconds.
    #[arg(long, default_value_t = 10.0)]
    pub allreduce_latency_us: f64,
    /// Divide simulated time by this; `inf` runs steps back to back.
    #[arg(long, default_value = "1")]
    pub speedup: Speedup,
    /// Mean output length before an end-of-sequence token, for requests without
    /// `ignore_eos` (geometric); 0 never stops early.
    #[arg(long, default_value_t = 256.0)]
    pub eos_mean_tokens: f64,
    /// NVLink domain of this instance: KV transfers inside a domain use NVLink, across
    /// domains the NIC.
    #[arg(long, default_value = "local")]
    pub nvlink_domain: String,
    /// Host named in `kv_transfer_params.remote_host` (default: `--host`).
    #[arg(long)]
    pub advertise_host: Option<String>,
    /// Seconds a prefill instance holds blocks for a decode instance to pull.
    #[arg(long, default_value_t = 480.0)]
    pub kv_hold_timeout_s: f64,
    /// Publish KV events (ZMQ PUB, vLLM's format) on this port (+ instance index).
    #[arg(long)]
    pub kv_events_port: Option<u16>,
    /// Runtime worker threads (default: the machine's cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl Default for SimArgs {
    fn default() -> Self {
        <SimArgs as clap::Parser>::parse_from(["sim"])
    }
}

impl clap::Parser for SimArgs {}

impl clap::CommandFactory for SimArgs {
    fn command() -> clap::Command {
        <SimArgs as clap::Args>::augment_args(clap::Command::new("sim"))
    }
    fn command_for_update() -> clap::Command {
        <SimArgs as clap::Args>::augment_args_for_update(clap::Command::new("sim"))
    }
}

/// Everything one engine instance needs, checked.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Listen address.
    pub host: String,
    /// Ports, one per instance (0: any free port).
    pub ports: Vec<u16>,
    /// KV-event ports, one per instance.
    pub kv_events_ports: Option<Vec<u16>>,
    /// Role.
    pub role: Role,
    /// Served model name.
    pub served_name: String,
    /// Model facts.
    pub model: ModelSpec,
    /// Turns prompt text into ids and output ids into text.
    pub tokenizer: Arc<Tokenizer>,
    /// Hardware row.
    pub hardware: Hardware,
    /// Timing model.
    pub timing: TimingModel,
    /// Scheduler and cache limits.
    pub sched: SchedConfig,
    /// Time divisor (∞: no simulated time).
    pub speedup: f64,
    /// Mean natural output length (`None`: never stop early).
    pub eos_mean: Option<f64>,
    /// NVLink domain.
    pub nvlink_domain: String,
    /// Host advertised to decode instances.
    pub advertise_host: String,
    /// Hold timeout, seconds.
    pub hold_timeout_s: f64,
    /// Tensor-parallel size.
    pub tp: u32,
    /// Runtime threads (`None`: one per core).
    pub threads: Option<usize>,
}

fn bad(field: &'static str, message: String) -> SimError {
    SimError::Config { field, message }
}

impl SimArgs {
    /// Checks the arguments and derives the configuration.
    pub fn resolve(&self) -> Result<SimConfig, SimError> {
        let served = self
            .served_model_name
            .clone()
            .unwrap_or_else(|| self.model.clone());
        let model = match &self.model_dir {
            Some(dir) => ModelSpec::from_hf_dir(dir, &served)?,
            None => ModelSpec {
                name: served.clone(),
                ..ModelSpec::preset(&self.model)?
            },
        };
        let tokenizer = Arc::new(Tokenizer::load(self.model_dir.as_deref(), model.vocab)?);
        let hw = *hardware::lookup(&self.hardware).ok_or_else(|| {
            bad(
                "--hardware",
                format!(
                    "unknown GPU `{}`; known: {}",
                    self.hardware,
                    hardware::names()
                ),
            )
        })?;
        if self.tp == 0 {
            return Err(bad("--tp", "must be at least 1; given 0".into()));
        }
        if self.block_size == 0 || self.block_size > 1024 {
            return Err(bad(
                "--block-size",
                format!("must be in 1..=1024; given {}", self.block_size),
            ));
        }
        if self.instances == 0 {
            return Err(bad("--instances", "must be at least 1; given 0".into()));
        }
        for (field, v) in [
            ("--eff-compute", self.eff_compute),
            ("--eff-memory", self.eff_memory),
            ("--gpu-memory-utilization", self.gpu_memory_utilization),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(bad(field, format!("must be in (0, 1]; given {v}")));
            }
        }
        if self.max_num_seqs == 0 || self.max_num_batched_tokens == 0 {
            return Err(bad("--max-num-seqs", "limits must be at least 1".into()));
        }
        let weight_dtype = self.dtype.unwrap_or(model.weight_dtype);
        let timing = TimingModel::new(
            &model,
            &hw,
            TimingConfig {
                tp: self.tp,
                weight_dtype,
                kv_dtype: self.kv_cache_dtype,
                eff_compute: self.eff_compute,
                eff_memory: self.eff_memory,
                step_overhead_s: self.step_overhead_ms / 1e3,
                allreduce_latency_s: self.allreduce_latency_us / 1e6,
            },
        );
        let num_blocks = match self.num_gpu_blocks {
            Some(n) => n,
            None => {
                let budget = hw.hbm_bytes * self.gpu_memory_utilization
                    - timing.weight_bytes_per_gpu()
                    - self.activation_reserve_gib * (1u64 << 30) as f64;
                let per_block = timing.kv_bytes_per_token() * self.block_size as f64;
                if budget < per_block {
                    return Err(bad(
                        "--tp",
                        format!(
                            "`{}` needs {:.1} GB of weights per GPU at TP {}; a {} has {:.0} GB \
                             ({:.0}% usable): raise `--tp` or use larger GPUs",
                            model.name,
                            timing.weight_bytes_per_gpu() / 1e9,
                            self.tp,
                            hw.name,
                            hw.hbm_bytes / 1e9,
                            self.gpu_memory_utilization * 100.0
                        ),
                    ));
                }
                (budget / per_block).floor().min(u32::MAX as f64 / 2.0) as u32
            }
        };
        if num_blocks == 0 {
            return Err(bad(
                "--num-gpu-blocks",
                "must be at least 1; given 0".into(),
            ));
        }
        let cache_tokens = num_blocks as u64 * self.block_size as u64;
        let max_model_len = match self.max_model_len {
            Some(n) if n as u64 > cache_tokens => {
                return Err(bad(
                    "--max-model-len",
                    format!(
                        "{n} tokens do not fit in the KV cache ({num_blocks} blocks × {} = \
                         {cache_tokens} tokens); lower it or give more memory",
                        self.block_size
                    ),
                ))
            }
            Some(0) => return Err(bad("--max-model-len", "must be at least 1; given 0".into())),
            Some(n) => n,
            None => (model.max_position as u64).min(cache_tokens) as u32,
        };
        let base = self.port_base.unwrap_or(self.port);
        let ports = (0..self.instances)
            .map(|i| {
                if base == 0 {
                    Ok(0)
                } else {
                    u16::try_from(base as u32 + i)
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                bad(
                    "--port-base",
                    format!("{base} + {} instances passes 65535", self.instances),
                )
            })?;
        let kv_events_ports = self
            .kv_events_port
            .map(|p| {
                (0..self.instances)
                    .map(|i| {
                        if p == 0 {
                            Ok(0)
                        } else {
                            u16::try_from(p as u32 + i)
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|_| bad("--kv-events-port", "port + instances passes 65535".into()))?;
        Ok(SimConfig {
            host: self.host.clone(),
            ports,
            kv_events_ports,
            role: self.role,
            served_name: served,
            sched: SchedConfig {
                max_num_seqs: self.max_num_seqs,
                max_num_batched_tokens: self.max_num_batched_tokens,
                block_size: self.block_size,
                num_blocks,
                max_model_len,
                prefix_caching: !self.no_prefix_caching,
                kv_events: self.kv_events_port.is_some(),
            },
            model,
            tokenizer,
            hardware: hw,
            timing,
            speedup: self.speedup.0,
            eos_mean: (self.eos_mean_tokens > 0.0).then_some(self.eos_mean_tokens),
            nvlink_domain: self.nvlink_domain.clone(),
            advertise_host: self
                .advertise_host
                .clone()
                .unwrap_or_else(|| self.host.clone()),
            hold_timeout_s: self.kv_hold_timeout_s,
            tp: self.tp,
            threads: self.threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_resolve_to_a_sane_cache() {
        let c = SimArgs::default().resolve().unwrap();
        // (80 GB × 0.9 − 16.06 GB − 2 GiB) / (128 KiB × 16) ≈ 25,600 blocks
        assert!(
            (25_000..26_500).contains(&c.sched.num_blocks),
            "{}",
            c.sched.num_blocks
        );
        assert_eq!(c.sched.max_model_len, 131_072);
        assert_eq!(c.ports, vec![8000]);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = SimArgs::parse_from(["sim", "--model", "deepseek-r1", "--tp", "1"])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("--tp"), "{e}");
        let e = SimArgs::parse_from(["sim", "--hardware", "tpu"])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("gb300"), "{e}");
        let e = SimArgs::parse_from(["sim", "--num-gpu-blocks", "4", "--max-model-len", "100"])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("--max-model-len"), "{e}");
        assert!(SimArgs::try_parse_from(["sim", "--speedup", "0"]).is_err());
        let c = SimArgs::parse_from([
            "sim",
            "--speedup",
            "inf",
            "--instances",
            "3",
            "--port-base",
            "9000",
        ])
        .resolve()
        .unwrap();
        assert!(c.speedup.is_infinite());
        assert_eq!(c.ports, vec![9000, 9001, 9002]);
    }
}
