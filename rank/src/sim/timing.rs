//! The roofline timing model: how long one engine step takes on the given hardware.
//!
//! ```text
//! step = max(compute, memory) + communication + overhead
//! compute = (2 · active_params · tokens + attn_flops_per_pair · Σ pairs) / (tp · peak · eff_compute)
//! memory  = (weight_bytes_per_gpu + kv_bytes_per_token_per_gpu · Σ context) / (hbm_bw · eff_memory)
//! ```
//! `docs/sim.md` states every term, its default and why.

use super::hardware::Hardware;
use super::model::{Dtype, ModelSpec};

/// What the timing model needs to know about one step's batch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepShape {
    /// Tokens computed in the step (prefill chunks + one per decoding sequence).
    pub tokens: u64,
    /// Σ over scheduled sequences of (query tokens × context tokens each attends to):
    /// for `q` new tokens after `c` computed ones, `q·c + q·(q+1)/2`.
    pub attn_pairs: f64,
    /// Σ over scheduled sequences of the context tokens whose KV is read.
    pub kv_read_tokens: u64,
    /// Sequences in the step.
    pub seqs: u32,
}

impl StepShape {
    /// Adds one sequence computing `q` tokens after `c` already computed.
    pub fn add(&mut self, q: u32, c: u32) {
        let (qf, cf) = (q as f64, c as f64);
        self.tokens += q as u64;
        self.attn_pairs += qf * cf + qf * (qf + 1.0) / 2.0;
        self.kv_read_tokens += (c + q) as u64;
        self.seqs += 1;
    }
}

/// Knobs of the timing model (all have documented defaults, see `SimArgs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimingConfig {
    /// Tensor-parallel size.
    pub tp: u32,
    /// Weight precision.
    pub weight_dtype: Dtype,
    /// KV-cache precision.
    pub kv_dtype: Dtype,
    /// Fraction of peak FLOP/s reached.
    pub eff_compute: f64,
    /// Fraction of HBM bandwidth reached.
    pub eff_memory: f64,
    /// Fixed cost of a step (scheduling, launches, sampling), seconds.
    pub step_overhead_s: f64,
    /// Latency of one all-reduce (TP > 1), seconds.
    pub allreduce_latency_s: f64,
}

/// One step's time and its parts, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepTime {
    /// FLOP-bound time.
    pub compute: f64,
    /// HBM-bound time.
    pub memory: f64,
    /// Tensor-parallel all-reduces.
    pub comm: f64,
    /// The whole step.
    pub total: f64,
}

/// A model on a piece of hardware, ready to time steps.
#[derive(Debug, Clone)]
pub struct TimingModel {
    cfg: TimingConfig,
    hw: Hardware,
    flops_per_token: f64,
    attn_flops_per_pair: f64,
    dense_weight_bytes_gpu: f64,
    /// (MoE layers, routed experts, active experts, bytes of one expert per GPU).
    experts: Option<(f64, f64, f64, f64)>,
    kv_bytes_per_token_gpu: f64,
    layers: f64,
    hidden_bytes: f64,
}

impl TimingModel {
    /// Prepares the constants of `model` on `hw` under `cfg`.
    pub fn new(model: &ModelSpec, hw: &Hardware, cfg: TimingConfig) -> Self {
        let tp = cfg.tp as f64;
        let wb = cfg.weight_dtype.bytes();
        TimingModel {
            flops_per_token: 2.0 * model.active_params(),
            attn_flops_per_pair: model.attn_flops_per_pair(),
            dense_weight_bytes_gpu: model.dense_params() * wb / tp,
            experts: model
                .moe
                .zip(model.expert_layers())
                .map(|(m, (layers, per))| {
                    (layers, m.experts as f64, m.active as f64, per * wb / tp)
                }),
            kv_bytes_per_token_gpu: model.kv_bytes_per_token(cfg.tp, cfg.kv_dtype),
            layers: model.layers as f64,
            hidden_bytes: model.hidden as f64 * 2.0,
            hw: *hw,
            cfg,
        }
    }

    /// KV bytes per token on one GPU.
    pub fn kv_bytes_per_token(&self) -> f64 {
        self.kv_bytes_per_token_gpu
    }

    /// Weight bytes held by one GPU.
    pub fn weight_bytes_per_gpu(&self) -> f64 {
        self.dense_weight_bytes_gpu + self.experts.map_or(0.0, |(l, e, _, b)| l * e * b)
    }

    /// The hardware it runs on.
    pub fn hardware(&self) -> &Hardware {
        &self.hw
    }

    fn peak_flops(&self) -> f64 {
        match self.cfg.weight_dtype {
            Dtype::Bf16 => self.hw.bf16_flops,
            Dtype::Fp8 => self.hw.fp8_flops,
        }
    }

    /// Expected weight bytes a step of `tokens` reads on one GPU: the dense part, and for
    /// MoE the routed experts at least one token uses, `E·(1 − (1 − k/E)^tokens)` per layer
    /// (tokens routed independently and uniformly).
    pub fn weight_bytes_read(&self, tokens: u64) -> f64 {
        let experts = self.experts.map_or(0.0, |(layers, e, k, bytes)| {
            let touched = e * (1.0 - (1.0 - k / e).powf(tokens as f64));
            layers * touched * bytes
        });
        self.dense_weight_bytes_gpu + experts
    }

    /// The time of one step of `shape`; zero for an empty step.
    pub fn step_time(&self, shape: &StepShape) -> StepTime {
        if shape.tokens == 0 {
            return StepTime::default();
        }
        let tp = self.cfg.tp as f64;
        let flops = self.flops_per_token * shape.tokens as f64
            + self.attn_flops_per_pair * shape.attn_pairs;
        let compute = flops / (tp * self.peak_flops() * self.cfg.eff_compute);
        let bytes = self.weight_bytes_read(shape.tokens)
            + self.kv_bytes_per_token_gpu * shape.kv_read_tokens as f64;
        let memory = bytes / (self.hw.hbm_bw * self.cfg.eff_memory);
        let comm = if self.cfg.tp > 1 {
            // Two ring all-reduces of the activations per layer over NVLink (one direction).
            let per = 2.0 * (tp - 1.0) / tp * shape.tokens as f64 * self.hidden_bytes;
            2.0 * self.layers * (self.cfg.allreduce_latency_s + per / (self.hw.nvlink_bw / 2.0))
        } else {
            0.0
        };
        let total = compute.max(memory) + comm + self.cfg.step_overhead_s;
        StepTime {
            compute,
            memory,
            comm,
            total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::hardware::lookup;

    fn cfg(tp: u32, wd: Dtype) -> TimingConfig {
        TimingConfig {
            tp,
            weight_dtype: wd,
            kv_dtype: Dtype::Bf16,
            eff_compute: 0.5,
            eff_memory: 0.8,
            step_overhead_s: 0.001,
            allreduce_latency_s: 10e-6,
        }
    }

    #[test]
    fn decode_of_one_sequence_is_memory_bound_by_hand() {
        let m = ModelSpec::preset("llama-3.1-8b").unwrap();
        let t = TimingModel::new(&m, lookup("h100").unwrap(), cfg(1, Dtype::Bf16));
        let mut s = StepShape::default();
        s.add(1, 999); // one token after 999: reads 1000 tokens of KV
        let st = t.step_time(&s);
        let weights = m.dense_params() * 2.0;
        let mem = (weights + 1000.0 * 131_072.0) / (3.35e12 * 0.8);
        assert!((st.memory - mem).abs() < 1e-12, "{} vs {mem}", st.memory);
        assert!(st.compute < st.memory);
        assert!((st.total - (mem + 0.001)).abs() < 1e-12);
        // ≈ 6.0 ms of weights+KV + 1 ms overhead
        assert!((0.0065..0.0075).contains(&st.total), "{}", st.total);
    }

    #[test]
    fn big_prefill_is_compute_bound_by_hand() {
        let m = ModelSpec::preset("llama-3.1-8b").unwrap();
        let t = TimingModel::new(&m, lookup("h100").unwrap(), cfg(1, Dtype::Bf16));
        let mut s = StepShape::default();
        s.add(8192, 0);
        let st = t.step_time(&s);
        let pairs = 8192.0 * 8193.0 / 2.0;
        let flops = 2.0 * m.active_params() * 8192.0 + 2.0 * 32.0 * 32.0 * 256.0 * pairs;
        let want = flops / (989e12 * 0.5);
        assert!((st.compute - want).abs() / want < 1e-12);
        assert!(st.compute > st.memory);
    }

    #[test]
    fn tp_adds_allreduces_and_splits_weights() {
        let m = ModelSpec::preset("llama-3.1-70b").unwrap();
        let h = lookup("h100").unwrap();
        let t1 = TimingModel::new(&m, h, cfg(1, Dtype::Bf16));
        let t8 = TimingModel::new(&m, h, cfg(8, Dtype::Bf16));
        assert!((t1.weight_bytes_per_gpu() / t8.weight_bytes_per_gpu() - 8.0).abs() < 1e-9);
        let mut s = StepShape::default();
        s.add(1, 0);
        let st = t8.step_time(&s);
        // 160 all-reduces × 10 µs, plus a negligible payload
        let payload = 2.0 * 7.0 / 8.0 * 8192.0 * 2.0 / 450e9;
        assert!(
            (st.comm - 160.0 * (10e-6 + payload)).abs() < 1e-12,
            "{}",
            st.comm
        );
    }

    #[test]
    fn moe_reads_only_touched_experts() {
        let m = ModelSpec::preset("deepseek-r1").unwrap();
        let t = TimingModel::new(&m, lookup("gb200").unwrap(), cfg(8, Dtype::Fp8));
        let one = t.weight_bytes_read(1);
        let (layers, per) = m.expert_layers().unwrap();
        let want = m.dense_params() / 8.0 + layers * 8.0 * per / 8.0;
        assert!((one - want).abs() / want < 1e-9);
        // a huge batch touches every expert: all weights
        assert!((t.weight_bytes_read(1 << 20) / t.weight_bytes_per_gpu() - 1.0).abs() < 1e-6);
        assert_eq!(t.step_time(&StepShape::default()).total, 0.0);
    }
}
