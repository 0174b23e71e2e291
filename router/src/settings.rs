//! `cohort serve`'s arguments ([`ServeArgs`], clap only parses) and their resolution
//! into checked [`Settings`]: one `resolve()` merges flags and environment and validates
//! everything once; nothing after it reads `std::env`.

use crate::breaker::BreakerConfig;
use crate::policy::{KvAwareConfig, PolicyConfig};
use crate::registry::{Role, WorkerSpec};
use std::path::PathBuf;
use std::time::Duration;

/// Environment variables the frontend reads (in [`ServeArgs::resolve`] only).
pub mod env {
    /// API keys clients must present as `Authorization: Bearer KEY`, comma-separated.
    /// Added to those of `--api-key-file`. Never logged.
    pub const API_KEYS: &str = "COHORT_API_KEYS";
}

/// Which disaggregation handshake the engines speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandshakeKind {
    /// vLLM's `kv_transfer_params` (NixlConnector); also the simulator's.
    Vllm,
    /// SGLang's `bootstrap_host`/`bootstrap_port`/`bootstrap_room`, sent to both sides.
    Sglang,
    /// TensorRT-LLM's `disaggregated_params` (`trtllm-serve disaggregated`, 1.3/1.4):
    /// `context_only` to the prefill side, its answer's params as `generation_only` to
    /// the decode side.
    Trtllm,
}

/// Where a streamed answer's text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Detokenize {
    /// The engine's `text` (works with any tokenizer pairing).
    Engine,
    /// The router decodes the engine's token ids itself, incrementally (the engine must
    /// use the router's tokenizer).
    Router,
}

/// Log verbosity on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Start, stop, workers going up and down.
    Info,
    /// Also every routing decision with its scores.
    Debug,
}

/// Arguments of `cohort serve`: an OpenAI-compatible frontend with KV-aware routing in
/// front of engines that are already running.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port; 0 picks a free one (printed on stderr).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Routing policy.
    #[arg(long, default_value = "kv-aware", value_parser = clap::builder::PossibleValuesParser::new(PolicyConfig::NAMES))]
    pub policy: String,
    /// KV-aware: weight of the blocks to prefill against the blocks decoding.
    #[arg(long, default_value_t = 1.0)]
    pub overlap_weight: f64,
    /// KV-aware: softmax temperature over normalised costs (0: lowest cost wins).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// An aggregated engine's base URL (`http://host:port`); repeat for more.
    #[arg(long = "worker", value_name = "URL")]
    pub workers: Vec<String>,
    /// A prefill engine's base URL; repeat for more.
    #[arg(long = "prefill", value_name = "URL")]
    pub prefill: Vec<String>,
    /// A decode engine's base URL; repeat for more.
    #[arg(long = "decode", value_name = "URL")]
    pub decode: Vec<String>,
    /// KV-event publisher (ZMQ, vLLM's format) of each engine, in the order the engines
    /// were given (`--worker`s, then `--prefill`s, then `--decode`s); `-` for none.
    /// Without any, the KV-aware policy remembers its own decisions instead.
    #[arg(long = "kv-events", value_name = "ENDPOINT")]
    pub kv_events: Vec<String>,
    /// NVLink domain of an engine, `URL=DOMAIN`; prefill→decode pairs inside a domain
    /// are preferred.
    #[arg(long = "nvlink-domain", value_name = "URL=DOMAIN")]
    pub nvlink_domains: Vec<String>,
    /// Tokens per KV block, as the engines are configured.
    #[arg(long, default_value_t = 16)]
    pub block_size: u32,
    /// Name clients give as `model` (default: the first engine's, from its `/v1/models`).
    #[arg(long)]
    pub model: Option<String>,
    /// A Hugging Face model directory: `tokenizer.json` and the chat template (needs
    /// the `hf` feature); without it, the built-in byte-level tokenizer.
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Disaggregation handshake of the engines.
    #[arg(long, value_enum, default_value_t = HandshakeKind::Vllm)]
    pub handshake: HandshakeKind,
    /// Prefill on the decode worker when fewer prompt tokens than this are uncached there.
    #[arg(long, default_value_t = 256)]
    pub disagg_threshold: u32,
    /// A file of API keys, one per line (`#` comments); clients must send one as
    /// `Authorization: Bearer KEY`. Also read: the `COHORT_API_KEYS` environment variable.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Requests served at once; more wait in the admission queue.
    #[arg(long, default_value_t = 4096)]
    pub max_inflight: usize,
    /// Requests that may wait for a slot; beyond, 429.
    #[arg(long, default_value_t = 4096)]
    pub queue_size: usize,
    /// Longest wait in the admission queue, seconds (then 504).
    #[arg(long, default_value_t = 60.0)]
    pub queue_timeout_s: f64,
    /// Largest request body, bytes (then 413).
    #[arg(long, default_value_t = 32 << 20)]
    pub max_body_bytes: usize,
    /// Attempts on other workers for a request that has produced no token yet.
    #[arg(long, default_value_t = 2)]
    pub max_retries: u32,
    /// Times one stream may move to another worker after its first token.
    #[arg(long, default_value_t = 3)]
    pub max_migrations: u32,
    /// Seconds between `/health` (and `/metrics`) probes of each engine; 0 turns probing off.
    #[arg(long, default_value_t = 2.0)]
    pub health_interval_s: f64,
    /// Consecutive failures that open a worker's circuit breaker.
    #[arg(long, default_value_t = 3)]
    pub breaker_threshold: u32,
    /// Seconds an open breaker keeps a worker out.
    #[arg(long, default_value_t = 5.0)]
    pub breaker_cooldown_s: f64,
    /// Seconds to connect to an engine.
    #[arg(long, default_value_t = 2.0)]
    pub connect_timeout_s: f64,
    /// Seconds to wait for an engine's response head (a non-streamed prefill included).
    #[arg(long, default_value_t = 600.0)]
    pub upstream_timeout_s: f64,
    /// Seconds an engine's stream may stay silent before it counts as broken.
    #[arg(long, default_value_t = 120.0)]
    pub stream_idle_timeout_s: f64,
    /// Header that carries the session key for `--policy session` (else the `user` field).
    #[arg(long, default_value = "x-session-id")]
    pub session_header: String,
    /// Where streamed text comes from.
    #[arg(long, value_enum, default_value_t = Detokenize::Engine)]
    pub detokenize: Detokenize,
    /// Log verbosity on stderr (`debug` logs every routing decision with its scores).
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// Runtime worker threads (default: the machine's cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl Default for ServeArgs {
    fn default() -> Self {
        <ServeArgs as clap::Parser>::parse_from(["serve"])
    }
}

impl clap::Parser for ServeArgs {}

impl clap::CommandFactory for ServeArgs {
    fn command() -> clap::Command {
        <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"))
    }
    fn command_for_update() -> clap::Command {
        <ServeArgs as clap::Args>::augment_args_for_update(clap::Command::new("serve"))
    }
}

/// Checked settings of a frontend.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub host: String,
    /// Listen port (0: any).
    pub port: u16,
    /// The routing policy.
    pub policy: PolicyConfig,
    /// Workers to register at start.
    pub workers: Vec<WorkerSpec>,
    /// Served model name (`None`: ask the first worker).
    pub model: Option<String>,
    /// Model directory for the tokenizer.
    pub model_dir: Option<PathBuf>,
    /// Hashing block size.
    pub block_size: u32,
    /// Handshake.
    pub handshake: HandshakeKind,
    /// Conditional disaggregation threshold, tokens.
    pub disagg_threshold: u32,
    /// Accepted API keys (empty: no authentication).
    pub api_keys: Vec<String>,
    /// Slots.
    pub max_inflight: usize,
    /// Waiting places.
    pub queue_size: usize,
    /// Longest queue wait.
    pub queue_timeout: Duration,
    /// Largest body.
    pub max_body_bytes: usize,
    /// Retries before the first token.
    pub max_retries: u32,
    /// Migrations after it.
    pub max_migrations: u32,
    /// Probe period (`None`: no probes).
    pub health_interval: Option<Duration>,
    /// Breakers.
    pub breaker: BreakerConfig,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response head timeout.
    pub upstream_timeout: Duration,
    /// Stream silence timeout.
    pub stream_idle_timeout: Duration,
    /// Session header name (lower case).
    pub session_header: String,
    /// Text source.
    pub detokenize: Detokenize,
    /// Log level.
    pub log_level: LogLevel,
    /// Runtime threads.
    pub threads: Option<usize>,
}

/// A flag's value is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`--{flag}`: {message}")]
pub struct SettingsError {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// What is wrong and what would be right.
    pub message: String,
}

fn bad(flag: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError {
        flag,
        message: message.into(),
    }
}

fn secs(flag: &'static str, v: f64) -> Result<Duration, SettingsError> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(bad(
            flag,
            format!("must be a positive number of seconds; given {v}"),
        ))
    }
}

impl ServeArgs {
    /// Checks every value and reads the environment (`env` gives a variable's value;
    /// the CLI passes `std::env::var`).
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let policy = match PolicyConfig::from_name(&self.policy) {
            Some(PolicyConfig::KvAware(_)) => {
                if !(self.overlap_weight.is_finite() && self.overlap_weight >= 0.0) {
                    return Err(bad(
                        "overlap-weight",
                        format!("must be ≥ 0; given {}", self.overlap_weight),
                    ));
                }
                if !(self.temperature.is_finite() && self.temperature >= 0.0) {
                    return Err(bad(
                        "temperature",
                        format!("must be ≥ 0; given {}", self.temperature),
                    ));
                }
                PolicyConfig::KvAware(KvAwareConfig {
                    overlap_weight: self.overlap_weight,
                    temperature: self.temperature,
                })
            }
            Some(p) => p,
            None => {
                return Err(bad(
                    "policy",
                    format!(
                        "unknown policy `{}`; one of {}",
                        self.policy,
                        PolicyConfig::NAMES.join(", ")
                    ),
                ))
            }
        };
        if self.block_size == 0 {
            return Err(bad("block-size", "must be at least 1"));
        }
        let mut workers: Vec<WorkerSpec> = Vec::new();
        for (urls, role) in [
            (&self.workers, Role::Aggregated),
            (&self.prefill, Role::Prefill),
            (&self.decode, Role::Decode),
        ] {
            for url in urls {
                let mut spec = WorkerSpec::new(url.trim_end_matches('/'), role);
                spec.block_size = self.block_size;
                workers.push(spec);
            }
        }
        if self.prefill.is_empty() != self.decode.is_empty() {
            return Err(bad(
                if self.prefill.is_empty() {
                    "prefill"
                } else {
                    "decode"
                },
                "disaggregated serving needs both `--prefill` and `--decode` engines",
            ));
        }
        if !self.kv_events.is_empty() {
            if self.kv_events.len() != workers.len() {
                return Err(bad(
                    "kv-events",
                    format!(
                        "give one endpoint (or `-`) per engine, in the order `--worker`s, \
                         `--prefill`s, `--decode`s: {} engines, {} endpoints",
                        workers.len(),
                        self.kv_events.len()
                    ),
                ));
            }
            for (w, e) in workers.iter_mut().zip(&self.kv_events) {
                if e != "-" {
                    if !e.starts_with("tcp://") {
                        return Err(bad(
                            "kv-events",
                            format!("`{e}` is not a ZMQ endpoint like `tcp://host:5557`"),
                        ));
                    }
                    w.kv_events = Some(e.clone());
                }
            }
        }
        for nd in &self.nvlink_domains {
            let Some((url, domain)) = nd.split_once('=') else {
                return Err(bad("nvlink-domain", format!("`{nd}` is not `URL=DOMAIN`")));
            };
            let url = url.trim_end_matches('/');
            let Some(w) = workers.iter_mut().find(|w| w.url == url) else {
                return Err(bad(
                    "nvlink-domain",
                    format!("`{url}` is not one of the engines given"),
                ));
            };
            w.nvlink_domain = Some(domain.to_owned());
        }
        let mut api_keys = Vec::new();
        if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                bad(
                    "api-key-file",
                    format!("cannot read `{}`: {e}", path.display()),
                )
            })?;
            api_keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
            if api_keys.is_empty() {
                return Err(bad(
                    "api-key-file",
                    format!("`{}` holds no key", path.display()),
                ));
            }
        }
        if let Some(v) = env(env::API_KEYS) {
            api_keys.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned),
            );
        }
        if self.max_inflight == 0 {
            return Err(bad("max-inflight", "must be at least 1"));
        }
        let session_header = self.session_header.to_ascii_lowercase();
        if hyper::header::HeaderName::from_bytes(session_header.as_bytes()).is_err() {
            return Err(bad(
                "session-header",
                format!("`{}` is not a header name", self.session_header),
            ));
        }
        Ok(Settings {
            host: self.host.clone(),
            port: self.port,
            policy,
            workers,
            model: self.model.clone(),
            model_dir: self.model_dir.clone(),
            block_size: self.block_size,
            handshake: self.handshake,
            disagg_threshold: self.disagg_threshold,
            api_keys,
            max_inflight: self.max_inflight,
            queue_size: self.queue_size,
            queue_timeout: secs("queue-timeout-s", self.queue_timeout_s)?,
            max_body_bytes: self.max_body_bytes,
            max_retries: self.max_retries,
            max_migrations: self.max_migrations,
            health_interval: if self.health_interval_s == 0.0 {
                None
            } else {
                Some(secs("health-interval-s", self.health_interval_s)?)
            },
            breaker: BreakerConfig {
                threshold: self.breaker_threshold.max(1),
                cooldown: secs("breaker-cooldown-s", self.breaker_cooldown_s)?,
            },
            connect_timeout: secs("connect-timeout-s", self.connect_timeout_s)?,
            upstream_timeout: secs("upstream-timeout-s", self.upstream_timeout_s)?,
            stream_idle_timeout: secs("stream-idle-timeout-s", self.stream_idle_timeout_s)?,
            session_header,
            detokenize: self.detokenize,
            log_level: self.log_level,
            threads: self.threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(a: &[&str]) -> ServeArgs {
        ServeArgs::parse_from(std::iter::once("serve").chain(a.iter().copied()))
    }

    #[test]
    fn resolves_workers_roles_events_and_domains() {
        let s = args(&[
            "--prefill",
            "http://127.0.0.1:1/",
            "--decode",
            "http://127.0.0.1:2",
            "--kv-events",
            "tcp://127.0.0.1:5557",
            "--kv-events",
            "-",
            "--nvlink-domain",
            "http://127.0.0.1:2=clique-0",
        ])
        .resolve(|_| None)
        .unwrap();
        assert_eq!(s.workers.len(), 2);
        assert_eq!(s.workers[0].url, "http://127.0.0.1:1");
        assert_eq!(s.workers[0].role, Role::Prefill);
        assert_eq!(
            s.workers[0].kv_events.as_deref(),
            Some("tcp://127.0.0.1:5557")
        );
        assert_eq!(s.workers[1].kv_events, None);
        assert_eq!(s.workers[1].nvlink_domain.as_deref(), Some("clique-0"));
        assert!(matches!(s.policy, PolicyConfig::KvAware(_)));
    }

    #[test]
    fn errors_name_the_flag() {
        let e = args(&["--prefill", "http://a:1"])
            .resolve(|_| None)
            .unwrap_err();
        assert_eq!(e.flag, "decode");
        let e = args(&[
            "--worker",
            "http://a:1",
            "--kv-events",
            "x",
            "--kv-events",
            "y",
        ])
        .resolve(|_| None)
        .unwrap_err();
        assert_eq!(e.flag, "kv-events");
        let e = args(&["--queue-timeout-s=-1"])
            .resolve(|_| None)
            .unwrap_err();
        assert!(e.to_string().starts_with("`--queue-timeout-s`"), "{e}");
    }

    #[test]
    fn handshakes_are_named_alike_on_the_command_line_and_in_files() {
        for (name, kind) in [
            ("vllm", HandshakeKind::Vllm),
            ("sglang", HandshakeKind::Sglang),
            ("trtllm", HandshakeKind::Trtllm),
        ] {
            let s = args(&["--handshake", name]).resolve(|_| None).unwrap();
            assert_eq!(s.handshake, kind);
            let parsed: HandshakeKind = serde_json::from_value(name.into()).unwrap();
            assert_eq!(parsed, kind);
        }
    }

    #[test]
    fn api_keys_come_from_the_environment_too() {
        let s = args(&[])
            .resolve(|k| (k == env::API_KEYS).then(|| "k1, k2,".to_owned()))
            .unwrap();
        assert_eq!(s.api_keys, ["k1", "k2"]);
    }
}
