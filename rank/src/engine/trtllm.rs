//! TensorRT-LLM: `trtllm-serve MODEL --host … --port … --tp_size …`.
//!
//! Flags follow TensorRT-LLM 1.3/1.4 (`tensorrt_llm/commands/serve.py`: `--tp_size` is
//! the alias of `--tensor_parallel_size`, `--config` of `--extra_llm_api_options`) and
//! `docs/source/features/disagg-serving.md`.
//!
//! Disaggregated instances need LLM-API options that have no flag
//! (`cache_transceiver_config`), and `trtllm-serve` reads them only from a file it opens
//! by path. The adapter stays pure — it runs nothing and writes nothing — so the command
//! it returns is a `/bin/sh -c` that writes the options (JSON, which YAML reads) from
//! [`COHORT_TRTLLM_CONFIG`] to `<config_dir>/<instance>-<port>.trtllm.yaml` on the node
//! the instance runs on, then `exec`s `trtllm-serve … --config <that file>`: the engine
//! replaces the shell, so signals and the exit status are the engine's own.
//!
//! Single node only: a multi-node TensorRT-LLM instance is an MPI job
//! (`trtllm-llmapi-launch` under `srun`), which cohort does not start. No KV events.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::vllm::{default_ready_s, http_endpoints};
use super::{Endpoints, Engine, EngineContext, Handshake, LaunchSpec, Role};

/// The LLM-API options the wrapper shell writes to the config file.
pub const COHORT_TRTLLM_CONFIG: &str = "COHORT_TRTLLM_CONFIG";

/// `$1` is the file, the rest the engine's command.
const WRITE_THEN_EXEC: &str =
    r#"printf '%s\n' "$COHORT_TRTLLM_CONFIG" > "$1" && shift && exec "$@""#;

/// Starts each instance as `trtllm-serve MODEL --host … --port … --tp_size …`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrtllmEngine {
    /// The `trtllm-serve` executable. Default `trtllm-serve`.
    #[serde(default = "default_program")]
    pub program: PathBuf,
    /// Seconds to wait for `/health` after start. Default 1800: weights, then the
    /// PyTorch backend's autotuning and CUDA graph capture.
    #[serde(default = "default_ready_s")]
    pub ready_deadline_s: f64,
    /// `cache_transceiver_config.backend` of prefill and decode instances: `DEFAULT`,
    /// `UCX`, `NIXL` or `MPI`. Default `DEFAULT` (TensorRT-LLM picks; UCX today).
    #[serde(default = "default_backend")]
    pub cache_transceiver_backend: String,
    /// LLM-API options for every instance, over the adapter's (a key given here
    /// replaces the adapter's whole value for that key). Default none.
    #[serde(default)]
    pub llm_api_options: Map<String, Value>,
    /// Where the options file is written. The launcher sets the job's log directory so
    /// the file sits beside the instance's log. Default `/tmp`.
    #[serde(default)]
    pub config_dir: Option<PathBuf>,
    /// Extra environment for every instance, set last. Default none.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_program() -> PathBuf {
    "trtllm-serve".into()
}
fn default_backend() -> String {
    "DEFAULT".into()
}

impl Default for TrtllmEngine {
    fn default() -> Self {
        Self {
            program: default_program(),
            ready_deadline_s: default_ready_s(),
            cache_transceiver_backend: default_backend(),
            llm_api_options: Map::new(),
            config_dir: None,
            env: BTreeMap::new(),
        }
    }
}

impl TrtllmEngine {
    /// The LLM-API options of an instance; `None` when it needs none.
    pub fn llm_api_options(&self, role: Role) -> Option<Map<String, Value>> {
        let mut options = Map::new();
        if role != Role::Aggregated {
            options.insert(
                "cache_transceiver_config".into(),
                serde_json::json!({ "backend": self.cache_transceiver_backend }),
            );
        }
        if role == Role::Prefill {
            // Context-only requests do not run with the overlap scheduler (the
            // disaggregated-serving docs' context-server configuration).
            options.insert("disable_overlap_scheduler".into(), Value::Bool(true));
        }
        options.extend(self.llm_api_options.clone());
        (!options.is_empty()).then_some(options)
    }

    /// The file an instance's options are written to.
    pub fn config_path(&self, instance: &str, port: u16) -> PathBuf {
        let dir = self.config_dir.as_deref().unwrap_or(Path::new("/tmp"));
        // The port too: jobs sharing a node (and `/tmp`) may both have a `prefill-0`.
        dir.join(format!("{instance}-{port}.trtllm.yaml"))
    }
}

impl Engine for TrtllmEngine {
    fn name(&self) -> &'static str {
        "trtllm"
    }

    fn launch(&self, ctx: &EngineContext<'_>) -> Option<LaunchSpec> {
        let i = ctx.instance;
        let mut serve: Vec<String> = vec![
            i.model.clone(),
            "--host".into(),
            i.host.clone(),
            "--port".into(),
            i.port.to_string(),
            "--tp_size".into(),
            i.tp.to_string(),
        ];
        let mut env = BTreeMap::new();
        let (program, args) = match self.llm_api_options(i.role) {
            None => {
                serve.extend(i.extra_args.iter().cloned());
                (self.program.clone(), serve)
            }
            Some(options) => {
                let path = self.config_path(&i.id, i.port).display().to_string();
                serve.extend(["--config".into(), path.clone()]);
                serve.extend(i.extra_args.iter().cloned());
                env.insert(
                    COHORT_TRTLLM_CONFIG.to_owned(),
                    Value::Object(options).to_string(),
                );
                let mut args: Vec<String> = vec![
                    "-c".into(),
                    WRITE_THEN_EXEC.into(),
                    // `$0`, what `ps` shows until the `exec`.
                    "cohort-trtllm".into(),
                    path,
                    self.program.display().to_string(),
                ];
                args.extend(serve);
                (PathBuf::from("/bin/sh"), args)
            }
        };
        env.extend(self.env.clone());
        Some(LaunchSpec {
            program,
            args,
            env: env.into_iter().collect(),
        })
    }

    /// `/health` answers once the model is loaded (the server starts listening only
    /// then). `trtllm-serve`'s `/metrics` is JSON iteration statistics, not Prometheus,
    /// so none is given; and it publishes no KV events.
    fn endpoints(&self, ctx: &EngineContext<'_>) -> Endpoints {
        http_endpoints(ctx.instance, None, "/health", None, false)
    }

    fn ready_deadline(&self, _ctx: &EngineContext<'_>) -> Duration {
        Duration::from_secs_f64(self.ready_deadline_s.max(0.0))
    }

    fn handshake(&self) -> Handshake {
        Handshake::TrtllmDisaggregatedParams
    }
}
