//! Model facts: architecture numbers from a preset or a Hugging Face `config.json`, and
//! what follows from them (parameter counts, KV bytes per token, attention FLOPs).

use serde::Deserialize;
use std::path::Path;

/// Numeric precision of weights or KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dtype {
    /// 2 bytes per value, BF16 tensor cores.
    Bf16,
    /// 1 byte per value, FP8 tensor cores.
    Fp8,
}

impl Dtype {
    /// Bytes per value.
    pub fn bytes(self) -> f64 {
        match self {
            Dtype::Bf16 => 2.0,
            Dtype::Fp8 => 1.0,
        }
    }
}

/// Mixture-of-experts facts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moe {
    /// Routed experts per MoE layer.
    pub experts: u32,
    /// Routed experts each token uses.
    pub active: u32,
    /// Shared experts per MoE layer (always used).
    pub shared: u32,
    /// Intermediate size of one expert.
    pub intermediate: u32,
    /// Leading layers with a dense MLP instead of experts.
    pub first_dense_layers: u32,
}

/// Multi-head latent attention (DeepSeek): the KV cache holds a latent vector per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mla {
    /// Rank of the compressed KV (the latent).
    pub kv_lora_rank: u32,
    /// Rank of the compressed query (0: no compression).
    pub q_lora_rank: u32,
    /// Per-head dimension with rotary embedding (cached alongside the latent).
    pub qk_rope_head_dim: u32,
    /// Per-head dimension without rotary embedding.
    pub qk_nope_head_dim: u32,
    /// Per-head value dimension.
    pub v_head_dim: u32,
}

/// The architecture numbers the timing model and the KV cache need.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Served name (what `/v1/models` lists and requests must give).
    pub name: String,
    /// Transformer layers.
    pub layers: u32,
    /// Hidden size.
    pub hidden: u32,
    /// Attention (query) heads.
    pub heads: u32,
    /// KV heads (grouped-query attention); equal to `heads` for MHA.
    pub kv_heads: u32,
    /// Per-head dimension.
    pub head_dim: u32,
    /// Dense MLP intermediate size.
    pub intermediate: u32,
    /// Vocabulary size.
    pub vocab: u32,
    /// Longest context the model supports.
    pub max_position: u32,
    /// Input embedding and LM head share weights.
    pub tie_embeddings: bool,
    /// Experts, for a MoE model.
    pub moe: Option<Moe>,
    /// Latent attention, for DeepSeek-style models.
    pub mla: Option<Mla>,
    /// The precision its weights are published in.
    pub weight_dtype: Dtype,
}

/// Why a model could not be described.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No preset of that name.
    #[error("unknown model preset `{given}`; known presets: {known}")]
    UnknownPreset {
        /// The name given.
        given: String,
        /// The presets.
        known: String,
    },
    /// `config.json` could not be read.
    #[error("cannot read `{path}`")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not what a Hugging Face causal LM config looks like.
    #[error("`{path}` is not a usable Hugging Face `config.json`")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A field that must be positive is zero.
    #[error("`{path}`: `{field}` must be positive")]
    Zero {
        /// The file.
        path: String,
        /// The field.
        field: &'static str,
    },
}

/// The presets `--model` accepts.
pub const PRESETS: &[&str] = &["llama-3.1-8b", "llama-3.1-70b", "qwen3-32b", "deepseek-r1"];

fn dense(name: &str, l: u32, h: u32, heads: u32, kv: u32, inter: u32, vocab: u32) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        layers: l,
        hidden: h,
        heads,
        kv_heads: kv,
        head_dim: 128,
        intermediate: inter,
        vocab,
        max_position: 131_072,
        tie_embeddings: false,
        moe: None,
        mla: None,
        weight_dtype: Dtype::Bf16,
    }
}

impl ModelSpec {
    /// A preset by name (case-insensitive; the Hugging Face repo name also works, e.g.
    /// `meta-llama/Llama-3.1-8B-Instruct`).
    pub fn preset(name: &str) -> Result<ModelSpec, ModelError> {
        let key = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
        let key = key.trim_end_matches("-instruct");
        let spec = match key {
            "llama-3.1-8b" | "meta-llama-3.1-8b" => dense(name, 32, 4096, 32, 8, 14336, 128_256),
            "llama-3.1-70b" | "meta-llama-3.1-70b" => dense(name, 80, 8192, 64, 8, 28672, 128_256),
            "qwen3-32b" => ModelSpec {
                max_position: 40_960,
                ..dense(name, 64, 5120, 64, 8, 25600, 151_936)
            },
            "deepseek-r1" | "deepseek-v3" => ModelSpec {
                layers: 61,
                hidden: 7168,
                heads: 128,
                kv_heads: 128,
                head_dim: 192,
                intermediate: 18432,
                vocab: 129_280,
                max_position: 163_840,
                tie_embeddings: false,
                moe: Some(Moe {
                    experts: 256,
                    active: 8,
                    shared: 1,
                    intermediate: 2048,
                    first_dense_layers: 3,
                }),
                mla: Some(Mla {
                    kv_lora_rank: 512,
                    q_lora_rank: 1536,
                    qk_rope_head_dim: 64,
                    qk_nope_head_dim: 128,
                    v_head_dim: 128,
                }),
                weight_dtype: Dtype::Fp8,
                name: name.into(),
            },
            _ => {
                return Err(ModelError::UnknownPreset {
                    given: name.into(),
                    known: PRESETS.join(", "),
                })
            }
        };
        Ok(spec)
    }

    /// Reads `dir/config.json` (a Hugging Face model directory); `name` is the served name.
    pub fn from_hf_dir(dir: &Path, name: &str) -> Result<ModelSpec, ModelError> {
        let path = dir.join("config.json");
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_hf_json(&text, &shown, name)
    }

    /// Parses the text of a Hugging Face `config.json`; `path` is for messages.
    pub fn from_hf_json(text: &str, path: &str, name: &str) -> Result<ModelSpec, ModelError> {
        let c: HfConfig = serde_json::from_str(text).map_err(|source| ModelError::Parse {
            path: path.into(),
            source,
        })?;
        let zero = |field| ModelError::Zero {
            path: path.into(),
            field,
        };
        if c.num_hidden_layers == 0 {
            return Err(zero("num_hidden_layers"));
        }
        if c.hidden_size == 0 {
            return Err(zero("hidden_size"));
        }
        if c.num_attention_heads == 0 {
            return Err(zero("num_attention_heads"));
        }
        let mla = c.kv_lora_rank.map(|kv_lora_rank| Mla {
            kv_lora_rank,
            q_lora_rank: c.q_lora_rank.unwrap_or(0),
            qk_rope_head_dim: c.qk_rope_head_dim.unwrap_or(64),
            qk_nope_head_dim: c.qk_nope_head_dim.unwrap_or(128),
            v_head_dim: c.v_head_dim.unwrap_or(128),
        });
        let experts = c.n_routed_experts.or(c.num_experts).or(c.num_local_experts);
        let moe = experts.filter(|&e| e > 0).map(|experts| Moe {
            experts,
            active: c.num_experts_per_tok.unwrap_or(1),
            shared: c.n_shared_experts.unwrap_or(0),
            intermediate: c.moe_intermediate_size.unwrap_or(c.intermediate_size),
            first_dense_layers: c.first_k_dense_replace.unwrap_or(0),
        });
        let head_dim = match (&mla, c.head_dim) {
            (Some(m), _) => m.qk_nope_head_dim + m.qk_rope_head_dim,
            (None, Some(d)) => d,
            (None, None) => c.hidden_size / c.num_attention_heads,
        };
        let fp8 = c
            .quantization_config
            .as_ref()
            .and_then(|q| q.get("quant_method"))
            .and_then(|m| m.as_str())
            .is_some_and(|m| m.eq_ignore_ascii_case("fp8"));
        Ok(ModelSpec {
            name: name.into(),
            layers: c.num_hidden_layers,
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim,
            intermediate: c.intermediate_size,
            vocab: c.vocab_size,
            max_position: c.max_position_embeddings.unwrap_or(4096),
            tie_embeddings: c.tie_word_embeddings.unwrap_or(false),
            moe,
            mla,
            weight_dtype: if fp8 { Dtype::Fp8 } else { Dtype::Bf16 },
        })
    }

    /// Attention parameters of one layer.
    fn attn_params(&self) -> f64 {
        let (h, n) = (self.hidden as f64, self.heads as f64);
        match self.mla {
            Some(m) => {
                let qk = (m.qk_nope_head_dim + m.qk_rope_head_dim) as f64;
                let q = if m.q_lora_rank > 0 {
                    h * m.q_lora_rank as f64 + m.q_lora_rank as f64 * n * qk
                } else {
                    h * n * qk
                };
                let kv_a = h * (m.kv_lora_rank + m.qk_rope_head_dim) as f64;
                let kv_b = m.kv_lora_rank as f64 * n * (m.qk_nope_head_dim + m.v_head_dim) as f64;
                q + kv_a + kv_b + n * m.v_head_dim as f64 * h
            }
            None => {
                let d = self.head_dim as f64;
                let kv = self.kv_heads as f64;
                h * n * d * 2.0 + h * kv * d * 2.0
            }
        }
    }

    /// Parameters of one expert (or of one dense MLP of `inter`).
    fn mlp_params(&self, inter: u32) -> f64 {
        3.0 * self.hidden as f64 * inter as f64
    }

    /// Parameters in every layer except routed experts, plus the LM head: what every
    /// step reads and every token multiplies by.
    pub fn dense_params(&self) -> f64 {
        let l = self.layers as f64;
        let mut p = l * self.attn_params();
        match self.moe {
            Some(m) => {
                let dense_l = m.first_dense_layers as f64;
                p += dense_l * self.mlp_params(self.intermediate);
                p += (l - dense_l) * (m.shared as f64 * self.mlp_params(m.intermediate));
                p += (l - dense_l) * self.hidden as f64 * m.experts as f64; // router
            }
            None => p += l * self.mlp_params(self.intermediate),
        }
        p + self.vocab as f64 * self.hidden as f64 // LM head
    }

    /// Layers with routed experts, and the parameters of one routed expert.
    pub fn expert_layers(&self) -> Option<(f64, f64)> {
        self.moe.map(|m| {
            (
                (self.layers - m.first_dense_layers) as f64,
                self.mlp_params(m.intermediate),
            )
        })
    }

    /// All parameters (including the input embedding).
    pub fn total_params(&self) -> f64 {
        let experts = self.moe.map_or(0.0, |m| {
            let (layers, per) = self.expert_layers().unwrap_or_default();
            layers * m.experts as f64 * per
        });
        let embed = if self.tie_embeddings {
            0.0
        } else {
            self.vocab as f64 * self.hidden as f64
        };
        self.dense_params() + experts + embed
    }

    /// Parameters one token multiplies by (dense part + its routed experts).
    pub fn active_params(&self) -> f64 {
        let experts = self.moe.map_or(0.0, |m| {
            let (layers, per) = self.expert_layers().unwrap_or_default();
            layers * m.active as f64 * per
        });
        self.dense_params() + experts
    }

    /// KV-cache values stored per token per layer on one GPU under tensor parallelism
    /// `tp`: the latent for MLA (replicated on every rank), else K and V of the rank's
    /// share of KV heads (at least one head: heads are replicated when `tp > kv_heads`).
    pub fn kv_values_per_token_layer(&self, tp: u32) -> f64 {
        match self.mla {
            Some(m) => (m.kv_lora_rank + m.qk_rope_head_dim) as f64,
            None => {
                let heads = (self.kv_heads as f64 / tp as f64).max(1.0);
                2.0 * heads * self.head_dim as f64
            }
        }
    }

    /// KV bytes per token on one GPU.
    pub fn kv_bytes_per_token(&self, tp: u32, kv_dtype: Dtype) -> f64 {
        self.layers as f64 * self.kv_values_per_token_layer(tp) * kv_dtype.bytes()
    }

    /// Attention FLOPs (whole model, all GPUs) for one query token against one context
    /// token: QKᵀ and PV, 2 FLOPs per multiply-add.
    pub fn attn_flops_per_pair(&self) -> f64 {
        let per_head = match self.mla {
            Some(m) => (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim) as f64,
            None => 2.0 * self.head_dim as f64,
        };
        2.0 * self.layers as f64 * self.heads as f64 * per_head
    }
}

/// The fields of a Hugging Face `config.json` the simulator reads.
#[derive(Debug, Deserialize)]
struct HfConfig {
    num_hidden_layers: u32,
    hidden_size: u32,
    num_attention_heads: u32,
    #[serde(default)]
    num_key_value_heads: Option<u32>,
    #[serde(default)]
    head_dim: Option<u32>,
    #[serde(default)]
    intermediate_size: u32,
    #[serde(default)]
    vocab_size: u32,
    #[serde(default)]
    max_position_embeddings: Option<u32>,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    n_routed_experts: Option<u32>,
    #[serde(default)]
    num_experts: Option<u32>,
    #[serde(default)]
    num_local_experts: Option<u32>,
    #[serde(default)]
    num_experts_per_tok: Option<u32>,
    #[serde(default)]
    n_shared_experts: Option<u32>,
    #[serde(default)]
    moe_intermediate_size: Option<u32>,
    #[serde(default)]
    first_k_dense_replace: Option<u32>,
    #[serde(default)]
    kv_lora_rank: Option<u32>,
    #[serde(default)]
    q_lora_rank: Option<u32>,
    #[serde(default)]
    qk_rope_head_dim: Option<u32>,
    #[serde(default)]
    qk_nope_head_dim: Option<u32>,
    #[serde(default)]
    v_head_dim: Option<u32>,
    #[serde(default)]
    quantization_config: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        ((a - b) / b).abs() < rel
    }

    #[test]
    fn preset_parameter_counts_match_the_published_sizes() {
        let p = |n| ModelSpec::preset(n).unwrap();
        assert!(close(p("llama-3.1-8b").total_params(), 8.03e9, 0.01));
        assert!(close(p("llama-3.1-70b").total_params(), 70.6e9, 0.01));
        assert!(close(p("qwen3-32b").total_params(), 32.8e9, 0.02));
        let r1 = p("deepseek-r1");
        assert!(
            close(r1.total_params(), 671e9, 0.01),
            "{}",
            r1.total_params()
        );
        assert!(
            close(r1.active_params(), 37e9, 0.03),
            "{}",
            r1.active_params()
        );
    }

    #[test]
    fn kv_bytes_per_token_by_hand() {
        let l8 = ModelSpec::preset("meta-llama/Llama-3.1-8B-Instruct").unwrap();
        // 2 (K,V) × 32 layers × 8 heads × 128 × 2 bytes
        assert_eq!(l8.kv_bytes_per_token(1, Dtype::Bf16), 131_072.0);
        assert_eq!(l8.kv_bytes_per_token(8, Dtype::Bf16), 16_384.0);
        assert_eq!(l8.kv_bytes_per_token(16, Dtype::Bf16), 16_384.0); // heads replicated
        let r1 = ModelSpec::preset("deepseek-r1").unwrap();
        // 61 layers × (512 + 64) × 1 byte, the same on every TP rank
        assert_eq!(r1.kv_bytes_per_token(8, Dtype::Fp8), 35_136.0);
    }

    #[test]
    fn hf_config_round_trip() {
        let text = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":4096,"intermediate_size":14336,
            "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,
            "max_position_embeddings":131072,"tie_word_embeddings":false,"rope_theta":500000.0}"#;
        let m = ModelSpec::from_hf_json(text, "config.json", "llama-3.1-8b").unwrap();
        assert_eq!(m, ModelSpec::preset("llama-3.1-8b").unwrap());
        let ds = r#"{"hidden_size":7168,"intermediate_size":18432,"num_hidden_layers":61,
            "num_attention_heads":128,"num_key_value_heads":128,"vocab_size":129280,
            "max_position_embeddings":163840,"n_routed_experts":256,"num_experts_per_tok":8,
            "n_shared_experts":1,"moe_intermediate_size":2048,"first_k_dense_replace":3,
            "kv_lora_rank":512,"q_lora_rank":1536,"qk_rope_head_dim":64,"qk_nope_head_dim":128,
            "v_head_dim":128,"quantization_config":{"quant_method":"fp8"}}"#;
        let m = ModelSpec::from_hf_json(ds, "config.json", "deepseek-r1").unwrap();
        assert_eq!(m, ModelSpec::preset("deepseek-r1").unwrap());
        let err =
            ModelSpec::from_hf_json(r#"{"hidden_size":1}"#, "x/config.json", "m").unwrap_err();
        assert!(err.to_string().contains("x/config.json"));
        assert!(ModelSpec::preset("gpt-5")
            .unwrap_err()
            .to_string()
            .contains("deepseek-r1"));
    }
}
