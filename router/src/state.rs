//! What every request handler shares: settings, registry, policy, KV index, client,
//! tokenizer, admission queue, metrics.

use crate::admission::Admission;
use crate::disagg::Handshake;
use crate::kv::KvIndex;
use crate::log::Log;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::registry::Registry;
use crate::settings::Settings;
use crate::tokenizer::Tokenizer;
use crate::upstream::Client;
use cohort_kv::BlockHasher;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The frontend's shared state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub settings: Settings,
    pub model: String,
    pub created: u64,
    pub registry: Registry,
    pub policy: Arc<dyn Policy>,
    pub handshake: Arc<dyn Handshake>,
    pub kv: KvIndex,
    pub hasher: BlockHasher,
    pub client: Client,
    pub tokenizer: Arc<dyn Tokenizer>,
    pub admission: Admission,
    pub metrics: Metrics,
    pub log: Log,
    pub next_id: AtomicU64,
    /// Owns every request task (streams) and the health checker.
    pub tasks: TaskTracker,
    /// Cancelled at shutdown.
    pub cancel: CancellationToken,
}
