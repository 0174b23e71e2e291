//! The simulated engine (`cohort sim`): a vLLM-like OpenAI-compatible server whose step
//! times come from a roofline model of the hardware and the model.
//!
//! It speaks vLLM's wire protocols — the OpenAI API with vLLM's extensions, the
//! `kv_transfer_params` disaggregation handshake, KV events over ZMQ — and schedules like
//! vLLM v1 (continuous batching, chunked prefill, paged KV with prefix caching, LRU
//! eviction, preemption by recompute). Output tokens are deterministic per request.
//!
//! Entry points: [`SimArgs`] (clap) → [`SimArgs::resolve`] → [`SimServer::start`], or
//! [`run`] / [`run_blocking`] for the whole command. It does not load weights or run
//! kernels. Text is tokenised with the model's `tokenizer.json` (`--model-dir`, feature
//! `hf`), else the built-in vocabulary stands in (see [`tokenizer`], [`vocab`]).
//! `docs/sim.md` states the timing formulas and their defaults.

mod blocks;
mod body;
mod config;
mod disagg;
mod engine;
mod error;
pub mod events;
pub mod hardware;
mod http;
mod metrics;
pub mod model;
pub mod scheduler;
mod server;
pub mod timing;
pub mod tokenizer;
pub mod vocab;

#[cfg(test)]
mod scheduler_tests;

pub use blocks::{block_hash, BlockId, BlockPool, KvEvent};
pub use config::{Role, SimArgs, SimConfig, Speedup};
pub use model::ModelError;
pub use server::{InstanceInfo, SimServer};

/// Why `cohort sim` could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A flag's value is wrong.
    #[error("`{field}`: {message}")]
    Config {
        /// The flag.
        field: &'static str,
        /// What is wrong and what would be right.
        message: String,
    },
    /// The model could not be described.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A listener could not be bound.
    #[error("cannot listen on `{addr}`")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The KV-event socket could not be bound.
    #[error("cannot publish KV events on `{endpoint}`: {message}")]
    KvEvents {
        /// The ZMQ endpoint.
        endpoint: String,
        /// The ZMQ error.
        message: String,
    },
    /// The model's `tokenizer.json` could not be read or parsed.
    #[error("cannot load the tokenizer `{}`", path.display())]
    Tokenizer {
        /// The `tokenizer.json`.
        path: std::path::PathBuf,
        /// Why (the `tokenizers` crate's error).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The async runtime could not be built or a signal handler installed.
    #[error("cannot start the runtime")]
    Runtime(#[source] std::io::Error),
}

/// Runs `cohort sim` until Ctrl-C or SIGTERM, on the current Tokio runtime. Prints one
/// line per instance (`listening` with its URL) to stderr.
pub async fn run(args: SimArgs) -> Result<(), SimError> {
    let cfg = args.resolve()?;
    let summary = format!(
        "model `{}` on {} × TP{}: {} KV blocks of {} tokens, max_model_len {}, speedup {}, \
         tokenizer {}",
        cfg.served_name,
        cfg.hardware.name,
        cfg.tp,
        cfg.sched.num_blocks,
        cfg.sched.block_size,
        cfg.sched.max_model_len,
        cfg.speedup,
        cfg.tokenizer.describe()
    );
    let role = cfg.role;
    // Handlers go in before the `listening` lines: whoever reads those lines may signal
    // at once, and a TERM before the handler exists would kill the process uncleanly.
    let signals = Signals::install()?;
    let server = SimServer::start(cfg).await?;
    #[allow(clippy::print_stderr)]
    {
        eprintln!("cohort sim: {summary}");
        for i in server.instances() {
            let ev = i
                .kv_events_port
                .map(|p| format!(", KV events on tcp port {p}"))
                .unwrap_or_default();
            eprintln!(
                "cohort sim: {role:?} engine `{}` listening on http://{}{ev}",
                i.engine_id, i.addr
            );
        }
    }
    signals.wait().await;
    server.shutdown().await;
    Ok(())
}

/// [`run`] on a runtime of its own (`--threads` workers; one thread runs everything
/// when `--threads 1`).
pub fn run_blocking(args: SimArgs) -> Result<(), SimError> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(SimError::Runtime)?;
    rt.block_on(run(args))
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, SimError> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(SimError::Runtime)?,
            int: signal(SignalKind::interrupt()).map_err(SimError::Runtime)?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
