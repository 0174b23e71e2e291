//! The frontend on rank 0: the OpenAI HTTP API and its wire types (the one definition
//! every crate uses), tokenisation and chat templates, the worker registry, routing
//! policies, prefill→decode orchestration, retries and migration, Prometheus metrics.
//!
//! The main type is [`Frontend`]: started from checked [`Settings`] (from
//! [`ServeArgs::resolve`]), it serves until [`Frontend::shutdown`]; its
//! [`RouterHandle`] adds, removes and updates workers while it runs (the launcher feeds
//! it from the plan; `cohort serve` from its flags).
//!
//! It sees workers as URLs with a role, a load and a KV index; it knows nothing of Slurm
//! or of how engine processes are started. Prompts go to engines as token ids through
//! `/v1/completions` whatever API the client used, so one stream can move between
//! workers and the router's block hashes match the engines' caches.

pub mod openai;

mod admission;
mod body;
pub mod breaker;
pub mod disagg;
mod error;
mod generate;
mod health;
pub mod kv;
mod log;
pub mod metrics;
pub mod policy;
pub mod registry;
mod render;
mod request;
mod server;
pub mod settings;
mod state;
pub mod tokenizer;
pub mod upstream;

pub use breaker::{BreakerConfig, BreakerState};
pub use error::{ApiError, ErrorType};
pub use registry::{Role, WorkerId, WorkerSpec};
pub use settings::{ServeArgs, Settings, SettingsError};

use crate::log::Log;
use crate::settings::LogLevel;
use crate::state::Shared;
use cohort_kv::{ApproxConfig, BlockHasher, Salt};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the frontend could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A flag's value is wrong.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The tokenizer could not be loaded.
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    /// A worker was refused.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// The listener could not be bound.
    #[error("cannot listen on `{addr}`")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The served model name could not be learnt.
    #[error("cannot learn the model name from `{url}/v1/models` (give `--model`): {message}")]
    Model {
        /// The engine asked.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// No `--model` and no engine to ask.
    #[error("give `--model`, or at least one engine (`--worker`, or `--prefill` and `--decode`)")]
    NoModel,
    /// The runtime could not be built or a signal handler installed.
    #[error("cannot start the runtime")]
    Runtime(#[source] std::io::Error),
}

/// A running frontend.
#[derive(Debug)]
pub struct Frontend {
    addr: SocketAddr,
    sh: Arc<Shared>,
}

/// Adds, removes and updates workers of a running frontend; cheap to clone.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    sh: Arc<Shared>,
}

impl RouterHandle {
    /// Registers a worker (and follows its KV events when it names a publisher). Its
    /// `block_size` becomes the frontend's: prompts are hashed in those blocks, so the
    /// worker's KV events must be too, or none would ever match.
    pub fn add_worker(&self, spec: WorkerSpec) -> Result<WorkerId, registry::RegistryError> {
        let w = self.sh.registry.add(self.in_our_blocks(spec))?;
        self.sh.kv.add_worker(&w);
        self.sh.log.write(
            LogLevel::Info,
            format_args!(
                "worker {} added: `{}` ({:?})",
                w.id.0, w.spec.url, w.spec.role
            ),
        );
        Ok(w.id)
    }

    /// `spec` with the frontend's KV block size.
    fn in_our_blocks(&self, mut spec: WorkerSpec) -> WorkerSpec {
        spec.block_size = self.sh.settings.block_size;
        spec
    }

    /// Removes a worker: no new requests; streams on it finish, or migrate if it dies.
    pub fn remove_worker(&self, id: WorkerId) -> Result<(), registry::RegistryError> {
        let w = self.sh.registry.remove(id)?;
        self.sh.kv.remove_worker(id);
        self.sh.log.write(
            LogLevel::Info,
            format_args!("worker {} removed: `{}`", id.0, w.spec.url),
        );
        Ok(())
    }

    /// Replaces a worker's spec, keeping its id (and so its KV index entries).
    pub fn update_worker(
        &self,
        id: WorkerId,
        spec: WorkerSpec,
    ) -> Result<(), registry::RegistryError> {
        let events_changed = self
            .sh
            .registry
            .snapshot()
            .iter()
            .find(|w| w.id == id)
            .is_some_and(|w| w.spec.kv_events != spec.kv_events);
        let w = self.sh.registry.update(id, self.in_our_blocks(spec))?;
        if events_changed {
            self.sh.kv.remove_worker(id);
            self.sh.kv.add_worker(&w);
        }
        Ok(())
    }

    /// The registered workers.
    pub fn workers(&self) -> Vec<(WorkerId, WorkerSpec)> {
        self.sh
            .registry
            .snapshot()
            .iter()
            .map(|w| (w.id, w.spec.clone()))
            .collect()
    }

    /// Requests routed to each worker so far.
    pub fn routed(&self) -> Vec<(WorkerId, u64)> {
        self.sh
            .registry
            .snapshot()
            .iter()
            .map(|w| (w.id, w.routed()))
            .collect()
    }

    /// The frontend's metrics.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.sh.metrics
    }

    /// Blocks the event-fed KV index holds for `id` (`None` without event sources).
    pub async fn kv_event_blocks(&self, id: WorkerId) -> Option<usize> {
        self.sh.kv.event_blocks(id).await
    }
}

/// Asks an engine for its served model name, retrying for up to 30 s (engines may
/// still be starting).
async fn learn_model(client: &upstream::Client, url: &str) -> Result<String, ServeError> {
    use http_body_util::BodyExt;
    let err = |message: String| ServeError::Model {
        url: url.to_owned(),
        message,
    };
    let uri: hyper::Uri = format!("{url}/v1/models")
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| err(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let req = hyper::Request::get(uri.clone())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .map_err(|e| err(e.to_string()))?;
        let last = match client.request(req).await {
            Ok(r) if r.status().is_success() => {
                let b = r
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| err(e.to_string()))?
                    .to_bytes();
                let list: openai::ModelList<'_> =
                    serde_json::from_slice(&b).map_err(|e| err(e.to_string()))?;
                return list
                    .data
                    .into_iter()
                    .next()
                    .map(|m| m.id.into_owned())
                    .ok_or_else(|| err("it lists no model".into()));
            }
            Ok(r) => format!("status {}", r.status()),
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(err(last));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Frontend {
    /// Binds, registers the settings' workers and starts serving on the current runtime.
    pub async fn start(settings: Settings) -> Result<Frontend, ServeError> {
        let tokenizer = tokenizer::load(settings.model_dir.as_deref())?;
        let client = upstream::client(settings.connect_timeout);
        let model = match &settings.model {
            Some(m) => m.clone(),
            None => {
                let first = settings.workers.first().ok_or(ServeError::NoModel)?;
                learn_model(&client, &first.url).await?
            }
        };
        let addr = format!("{}:{}", settings.host, settings.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let sh = Arc::new(Shared {
            model,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            registry: registry::Registry::new(settings.breaker),
            policy: settings.policy.build(),
            handshake: disagg::build(settings.handshake),
            kv: kv::KvIndex::new(ApproxConfig::default()),
            hasher: BlockHasher::new(settings.block_size as usize, Salt::NONE),
            client,
            tokenizer,
            admission: admission::Admission::new(
                settings.max_inflight,
                settings.queue_size,
                settings.queue_timeout,
            ),
            metrics: metrics::Metrics::default(),
            log: Log {
                level: settings.log_level,
            },
            next_id: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            settings,
        });
        let handle = RouterHandle { sh: sh.clone() };
        for spec in sh.settings.workers.clone() {
            handle.add_worker(spec)?;
        }
        sh.tasks.spawn(server::accept_loop(listener, sh.clone()));
        if let Some(interval) = sh.settings.health_interval {
            sh.tasks.spawn(health::run(sh.clone(), interval));
        }
        Ok(Frontend { addr: local, sh })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The served model name.
    pub fn model(&self) -> &str {
        &self.sh.model
    }

    /// The handle to its workers.
    pub fn handle(&self) -> RouterHandle {
        RouterHandle {
            sh: self.sh.clone(),
        }
    }

    /// Stops admitting, ends streams with an error event, closes connections, stops the
    /// health checker and the KV subscribers, and waits for every task.
    pub async fn shutdown(self) {
        self.sh.admission.close();
        self.sh.cancel.cancel();
        self.sh.tasks.close();
        self.sh.tasks.wait().await;
        self.sh.kv.shutdown().await;
    }
}

/// Runs `cohort serve` until Ctrl-C or SIGTERM on the current runtime; prints the URL
/// on stderr.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let settings = args.resolve(|k| std::env::var(k).ok())?;
    // Handlers go in before the URL is printed: whoever reads that line may signal at
    // once, and a TERM before the handler exists would kill the frontend uncleanly.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Runtime)?;
    let fe = Frontend::start(settings).await?;
    let log = fe.sh.log;
    let policy = fe.sh.policy.name();
    log.write(
        LogLevel::Error,
        format_args!(
            "serving `{}` on http://{} ({} workers, policy {policy}, tokenizer {})",
            fe.model(),
            fe.addr(),
            fe.sh.registry.snapshot().len(),
            fe.sh.tokenizer.name()
        ),
    );
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    fe.shutdown().await;
    Ok(())
}

/// [`run`] on a runtime of its own (`--threads` workers).
pub fn run_blocking(args: ServeArgs) -> Result<(), ServeError> {
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
    .map_err(ServeError::Runtime)?;
    rt.block_on(run(args))
}
