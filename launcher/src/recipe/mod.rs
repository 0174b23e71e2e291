//! Recipes: one TOML file says what to run — the model, the engine, how instances are
//! shaped and deployed — checked strictly: unknown keys, wrong types and impossible
//! values are errors with the file, line, column, key, value and a suggestion.
//!
//! The format is documented in `docs/planner.md`; `cohort recipe check FILE` runs
//! [`load`]. `[bench]` is the batch job's benchmark ([`bench`]).

pub mod bench;
mod error;
pub mod slurm;

use std::collections::BTreeMap;
use std::path::Path;

use cohort_rank::engine::container::Container;
use serde::{Deserialize, Serialize};

pub use error::RecipeError;

/// A whole recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// A short name, used in job names and result folders.
    pub name: String,
    /// One line for people.
    #[serde(default)]
    pub description: Option<String>,
    /// What is served.
    pub model: Model,
    /// What serves it.
    pub engine: Engine,
    /// How instances are shaped and placed.
    pub deploy: Deploy,
    /// The benchmark a batch job runs (`cohort launch` without `--serve`).
    #[serde(default)]
    pub bench: Option<bench::Bench>,
    /// What `cohort sbatch` asks Slurm for ([`slurm`]).
    #[serde(default)]
    pub slurm: Option<slurm::Slurm>,
}

/// A table whose keys are not defined yet: any key is an error, not silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reserved {}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Hugging Face id or a display name.
    pub name: String,
    /// Local weights directory, if not downloaded by the engine.
    #[serde(default)]
    pub path: Option<String>,
    /// A Hugging Face `config.json` (relative to the recipe) to read `layers`,
    /// `kv_heads` and `head_dim` from; keys written here win.
    #[serde(default)]
    pub config: Option<String>,
    /// Total parameters, in billions.
    #[serde(default)]
    pub params_b: Option<f64>,
    /// Parameters active per token (MoE), in billions; defaults to `params_b`.
    #[serde(default)]
    pub active_params_b: Option<f64>,
    /// Transformer layers.
    #[serde(default)]
    pub layers: Option<u32>,
    /// KV heads per layer.
    #[serde(default)]
    pub kv_heads: Option<u32>,
    /// Head size, in elements.
    #[serde(default)]
    pub head_dim: Option<u32>,
    /// Weight data type. Default `bf16`.
    #[serde(default)]
    pub dtype: Dtype,
}

/// Weight data types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// bfloat16 (the default).
    #[default]
    Bf16,
    /// float16.
    Fp16,
    /// 8-bit float.
    Fp8,
    /// NVIDIA 4-bit float.
    Nvfp4,
    /// 8-bit integer.
    Int8,
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Engine {
    /// Which engine.
    pub kind: EngineKind,
    /// Arguments for every instance.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment for every instance.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra arguments/environment for prefill instances.
    #[serde(default)]
    pub prefill: Option<RoleArgs>,
    /// Extra arguments/environment for decode instances.
    #[serde(default)]
    pub decode: Option<RoleArgs>,
    /// Extra arguments/environment for aggregated instances.
    #[serde(default)]
    pub aggregated: Option<RoleArgs>,
    /// `[engine.container]`: start the engines from a container image with pyxis, enroot
    /// or Apptainer (`docs/containers.md`). Default none: the engine as installed on the
    /// nodes.
    #[serde(default)]
    pub container: Option<Container>,
}

/// Engines cohort can start (or, for `external`, attach to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// The built-in simulator.
    Sim,
    /// vLLM.
    Vllm,
    /// SGLang.
    Sglang,
    /// TensorRT-LLM.
    Trtllm,
    /// Already running servers.
    External,
}

impl EngineKind {
    /// The name as written in recipes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Vllm => "vllm",
            Self::Sglang => "sglang",
            Self::Trtllm => "trtllm",
            Self::External => "external",
        }
    }
}

/// Per-role engine arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleArgs {
    /// Appended to `engine.args`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Merged over `engine.env`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `[deploy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// `disaggregated` (prefill + decode) or `aggregated`.
    pub mode: Mode,
    /// Prefill instances (disaggregated).
    #[serde(default)]
    pub prefill: Option<Shape>,
    /// Decode instances (disaggregated).
    #[serde(default)]
    pub decode: Option<Shape>,
    /// Aggregated instances.
    #[serde(default)]
    pub aggregated: Option<Shape>,
    /// First port of instance blocks on each node. Default 30000.
    #[serde(default = "default_base_port")]
    pub base_port: u16,
    /// Ports per instance block (HTTP, KV events, bootstrap, …). Default 10.
    #[serde(default = "default_port_stride")]
    pub port_stride: u16,
    /// CPUs left on every node for cohort itself. Default 2.
    #[serde(default = "default_reserved_cpus")]
    pub reserved_cpus: u32,
    /// Plan without nodes whose GPUs fail the health check at join (uncorrectable ECC
    /// errors, missing GPUs, fabric incomplete, memory in use), rather than ending the
    /// job. Default `false`: a job runs on the nodes it was given or not at all.
    #[serde(default)]
    pub exclude_unhealthy: bool,
    /// The frontend on rank 0.
    #[serde(default)]
    pub frontend: Frontend,
    /// An emulated topology (relative to the recipe) to plan on when `--topology` is
    /// not given; without either, `cohort plan` plans on this node as discovered.
    #[serde(default)]
    pub topology: Option<String>,
}

fn default_base_port() -> u16 {
    30_000
}
fn default_port_stride() -> u16 {
    10
}
fn default_reserved_cpus() -> u32 {
    2
}

/// Disaggregated or aggregated serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Separate prefill and decode instances.
    Disaggregated,
    /// Each instance does both.
    Aggregated,
}

/// `[deploy.frontend]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    /// OpenAI HTTP port on rank 0. Default 8000.
    #[serde(default = "default_frontend_port")]
    pub port: u16,
    /// CPUs kept for the frontend on rank 0's node, beside `reserved_cpus`. Default 8.
    #[serde(default = "default_frontend_cpus")]
    pub cpus: u32,
    /// Tokens per KV block, as the engines are configured (vLLM `--block-size`, SGLang
    /// `--page-size`): the router hashes prompts in blocks of this size to match the
    /// blocks engines report in their KV events. Default 16, vLLM's on GPUs.
    #[serde(default = "default_kv_block_size")]
    pub kv_block_size: u32,
    /// Disaggregated: a request whose prompt has fewer uncached tokens than this on the
    /// chosen decode instance is prefilled there, skipping the prefill instance (a short
    /// prefill costs less than a KV transfer). `0` sends every request through a
    /// prefill instance. Default 256.
    #[serde(default = "default_disagg_threshold")]
    pub disagg_threshold: u32,
}

fn default_frontend_port() -> u16 {
    8000
}
fn default_frontend_cpus() -> u32 {
    8
}
fn default_kv_block_size() -> u32 {
    16
}
fn default_disagg_threshold() -> u32 {
    256
}

impl Default for Frontend {
    fn default() -> Self {
        Self {
            port: default_frontend_port(),
            cpus: default_frontend_cpus(),
            kv_block_size: default_kv_block_size(),
            disagg_threshold: default_disagg_threshold(),
        }
    }
}

/// `[deploy.prefill]`, `[deploy.decode]`, `[deploy.aggregated]`: one instance's shape
/// and how many.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// GPUs per instance.
    pub gpus: u32,
    /// Tensor parallelism. Default: `gpus`.
    #[serde(default)]
    pub tp: Option<u32>,
    /// Data parallelism (attention DP for MoE engines). Default 1.
    #[serde(default = "one")]
    pub dp: u32,
    /// Expert parallelism. Default 1.
    #[serde(default = "one")]
    pub ep: u32,
    /// Instances in all. Exactly one of `count` and `per_domain`.
    #[serde(default)]
    pub count: Option<u32>,
    /// Instances in every NVLink domain: the prefill:decode ratio per domain.
    #[serde(default)]
    pub per_domain: Option<u32>,
}

fn one() -> u32 {
    1
}

impl Shape {
    /// Tensor parallelism, `gpus` when not given.
    pub fn tp(&self) -> u32 {
        self.tp.unwrap_or(self.gpus)
    }
}

/// Reads and checks a recipe file.
pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| RecipeError {
        source: Some(Box::new(e)),
        ..RecipeError::file(&file, "cannot read the recipe".to_owned())
    })?;
    let mut recipe = parse(&file, &text)?;
    if let Some(config) = recipe.model.config.clone() {
        let p = path.parent().unwrap_or(Path::new(".")).join(&config);
        read_hf_config(&file, &text, &p, &mut recipe.model)?;
    }
    Ok(recipe)
}

/// Parses and checks recipe text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Recipe, RecipeError> {
    let recipe: Recipe =
        toml::from_str(text).map_err(|e| RecipeError::from_toml(file, text, &e))?;
    validate(file, text, &recipe)?;
    Ok(recipe)
}

fn validate(file: &str, text: &str, r: &Recipe) -> Result<(), RecipeError> {
    let err = |table: &str, key: &str, message: String| {
        Err(RecipeError::at_key(file, text, table, key, message))
    };
    let d = &r.deploy;
    let roles: [(&str, &Option<Shape>); 3] = [
        ("prefill", &d.prefill),
        ("decode", &d.decode),
        ("aggregated", &d.aggregated),
    ];
    let wanted: &[&str] = match d.mode {
        Mode::Disaggregated => &["prefill", "decode"],
        Mode::Aggregated => &["aggregated"],
    };
    for (role, shape) in roles {
        let mode = match d.mode {
            Mode::Disaggregated => "disaggregated",
            Mode::Aggregated => "aggregated",
        };
        match (wanted.contains(&role), shape) {
            (true, None) => {
                return err(
                    "deploy",
                    "mode",
                    format!("`deploy.mode = \"{mode}\"` needs a `[deploy.{role}]` table"),
                )
            }
            (false, Some(_)) => {
                return err(
                    "deploy",
                    role,
                    format!(
                        "`[deploy.{role}]` does not apply to `deploy.mode = \"{mode}\"`; \
                         remove it or change `deploy.mode`"
                    ),
                )
            }
            _ => {}
        }
        let Some(s) = shape else { continue };
        let t = format!("deploy.{role}");
        if s.gpus == 0 {
            return err(
                &t,
                "gpus",
                format!("`{t}.gpus` must be at least 1; given 0"),
            );
        }
        let tp = s.tp();
        if tp == 0 || s.gpus % tp != 0 {
            return err(
                &t,
                "tp",
                format!("`{t}.tp` must divide `{t}.gpus` ({}); given {tp}", s.gpus),
            );
        }
        for (k, v) in [("dp", s.dp), ("ep", s.ep)] {
            if v == 0 || s.gpus % v != 0 {
                return err(
                    &t,
                    k,
                    format!("`{t}.{k}` must divide `{t}.gpus` ({}); given {v}", s.gpus),
                );
            }
        }
        match (s.count, s.per_domain) {
            (Some(_), Some(_)) => {
                return err(
                    &t,
                    "per_domain",
                    format!("`{t}` takes `count` or `per_domain`, not both"),
                )
            }
            (None, None) => {
                return err(
                    &t,
                    "gpus",
                    format!("`{t}` needs `count` (instances in all) or `per_domain` (instances per NVLink domain)"),
                )
            }
            (Some(0), _) | (_, Some(0)) => {
                return err(&t, if s.count.is_some() { "count" } else { "per_domain" },
                    format!("`{t}` must ask for at least 1 instance; given 0"))
            }
            _ => {}
        }
    }
    if let (Some(p), Some(dd)) = (&d.prefill, &d.decode) {
        if p.count.is_some() != dd.count.is_some() {
            return err(
                "deploy.decode",
                if dd.count.is_some() {
                    "count"
                } else {
                    "per_domain"
                },
                "`deploy.prefill` and `deploy.decode` must both use `count` or both `per_domain`, \
                 so that their ratio is defined"
                    .to_owned(),
            );
        }
    }
    if !(1..=4096).contains(&d.frontend.kv_block_size) {
        return err(
            "deploy.frontend",
            "kv_block_size",
            format!(
                "`deploy.frontend.kv_block_size` must be 1 to 4096 tokens, the engines' KV block \
                 size (vLLM `--block-size`, SGLang `--page-size`); given {}",
                d.frontend.kv_block_size
            ),
        );
    }
    if d.port_stride == 0 {
        return err(
            "deploy",
            "port_stride",
            "`deploy.port_stride` must be at least 1; given 0".to_owned(),
        );
    }
    if d.base_port < 1024 {
        return err(
            "deploy",
            "base_port",
            format!(
                "`deploy.base_port` must be 1024 or more (unprivileged); given {}",
                d.base_port
            ),
        );
    }
    if let (Some(p), Some(a)) = (r.model.params_b, r.model.active_params_b) {
        if a > p || a <= 0.0 {
            return err(
                "model",
                "active_params_b",
                format!("`model.active_params_b` must be above 0 and at most `model.params_b` ({p}); given {a}"),
            );
        }
    }
    if let Some(s) = &r.slurm {
        slurm::validate(file, text, s)?;
    }
    if let Some(c) = &r.engine.container {
        validate_container(file, text, r, c)?;
    }
    Ok(())
}

/// `[engine.container]`: its own fields, and what the container must be able to mount.
fn validate_container(
    file: &str,
    text: &str,
    r: &Recipe,
    c: &Container,
) -> Result<(), RecipeError> {
    const TABLE: &str = "engine.container";
    if r.engine.kind == EngineKind::External {
        return Err(RecipeError::at_key(
            file,
            text,
            "engine",
            "container",
            "`[engine.container]` does not apply to `engine.kind = \"external\"`, which starts \
             nothing; remove it"
                .to_owned(),
        ));
    }
    if let Err(e) = c.check() {
        return Err(RecipeError::at_key(
            file,
            text,
            TABLE,
            e.field,
            format!("`{TABLE}.{}` {}; given `{}`", e.field, e.problem, e.value),
        ));
    }
    // The engine is given `model.path` as is, inside the container: cohort mounts it
    // there at the same path, which needs an absolute path every runtime can mount.
    if let Some(path) = &r.model.path {
        let mountable = path.starts_with('/')
            && !path
                .chars()
                .any(|ch| ch == ',' || ch == ':' || ch.is_whitespace() || ch.is_control());
        if !mountable {
            return Err(RecipeError::at_key(
                file,
                text,
                "model",
                "path",
                format!(
                    "`model.path` must be an absolute path without `,`, `:` or blanks with \
                     `[engine.container]`, which mounts it at the same path; given `{path}`"
                ),
            ));
        }
    }
    Ok(())
}

/// Fills `layers`, `kv_heads` and `head_dim` from a Hugging Face `config.json`.
fn read_hf_config(file: &str, text: &str, path: &Path, m: &mut Model) -> Result<(), RecipeError> {
    let fail =
        |message: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| RecipeError {
            source,
            ..RecipeError::at_key(file, text, "model", "config", message)
        };
    let json = std::fs::read_to_string(path).map_err(|e| {
        fail(
            format!("cannot read `model.config` `{}`", path.display()),
            Some(Box::new(e)),
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| {
        fail(
            format!("`model.config` `{}` is not JSON", path.display()),
            Some(Box::new(e)),
        )
    })?;
    let get = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    m.layers = m.layers.or_else(|| get("num_hidden_layers"));
    m.kv_heads = m
        .kv_heads
        .or_else(|| get("num_key_value_heads"))
        .or_else(|| get("num_attention_heads"));
    m.head_dim = m
        .head_dim
        .or_else(|| get("head_dim"))
        .or_else(|| Some(get("hidden_size")? / get("num_attention_heads").filter(|h| *h > 0)?));
    Ok(())
}

#[cfg(test)]
mod tests;
