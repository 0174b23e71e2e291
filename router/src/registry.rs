//! The worker registry: which engines exist, their role, NVLink domain and block size,
//! and their live load and health, as lock-free counters that routing reads.
//!
//! Readers take a snapshot (an `Arc` of the list, swapped whole on every change), so a
//! routing decision never waits for a registration. Load is the router's own in-flight
//! accounting ([`LoadGuard`], released on drop), corrected by what the health checker
//! scrapes from the engines' `/metrics`.

use crate::breaker::{now_ms, Breaker, BreakerConfig, BreakerState};
use crate::metrics::{gauge_header, sample};
pub use cohort_kv::WorkerId;
use hyper::http::uri::{Authority, Scheme};
use hyper::Uri;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

/// A worker's part in disaggregated serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Prefill and decode.
    Aggregated,
    /// Prefill only.
    Prefill,
    /// Decode only.
    Decode,
}

/// What the launcher (or `cohort serve`'s flags) says about a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Base URL of its OpenAI server, `http://host:port` (no path).
    pub url: String,
    /// Its role.
    pub role: Role,
    /// NVLink domain (clique), when known: prefill→decode pairs inside one are preferred.
    pub nvlink_domain: Option<String>,
    /// Tokens per KV block (the engine's `--block-size`). Default: 16; a running
    /// frontend gives every worker it registers its own `--block-size`.
    pub block_size: u32,
    /// Its KV event publisher (ZMQ, vLLM's format), e.g. `tcp://host:5557`.
    pub kv_events: Option<String>,
    /// SGLang's disaggregation bootstrap port (prefill workers; SGLang handshake only).
    pub bootstrap_port: Option<u16>,
}

impl WorkerSpec {
    /// An aggregated worker at `url` with block size 16.
    pub fn new(url: impl Into<String>, role: Role) -> Self {
        WorkerSpec {
            url: url.into(),
            role,
            nvlink_domain: None,
            block_size: 16,
            kv_events: None,
            bootstrap_port: None,
        }
    }
}

/// Why a worker was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The URL is not `http://host:port`.
    #[error("worker URL `{url}`: {message}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// `block_size` is 0.
    #[error("worker `{url}`: `block_size` must be at least 1")]
    BadBlockSize {
        /// The worker's URL.
        url: String,
    },
    /// No worker has that id.
    #[error("no worker with id {0}")]
    Unknown(u64),
}

/// Active health: the last `/health` probe's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Not probed yet: routable (so a fresh router serves at once), but not "ready".
    Unknown = 0,
    /// The last probe passed.
    Up = 1,
    /// The last probe failed: not routable.
    Down = 2,
}

/// A worker's load, as policies see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Load {
    /// Requests in flight (router's count, or the engine's running + waiting if higher).
    pub requests: u64,
    /// Prompt tokens sent and not yet prefilled (no first token yet).
    pub prefill_tokens: u64,
    /// KV blocks of requests decoding (router's estimate, or the engine's usage if higher).
    pub decode_blocks: u64,
}

/// One registered worker.
#[derive(Debug)]
pub struct Worker {
    /// Its id (stable across updates; the KV index's key).
    pub id: WorkerId,
    /// What it is.
    pub spec: WorkerSpec,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    inflight: AtomicU64,
    prefill_tokens: AtomicU64,
    decode_blocks: AtomicU64,
    engine_requests: AtomicU64,
    engine_blocks: AtomicU64,
    probe: AtomicU8,
    routed: AtomicU64,
    pub(crate) breaker: Breaker,
}

impl Worker {
    fn new(id: WorkerId, spec: WorkerSpec, breaker: BreakerConfig) -> Result<Self, RegistryError> {
        let bad = |message: &str| RegistryError::BadUrl {
            url: spec.url.clone(),
            message: message.to_owned(),
        };
        if spec.block_size == 0 {
            return Err(RegistryError::BadBlockSize {
                url: spec.url.clone(),
            });
        }
        let uri: Uri = spec
            .url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| bad("needs `http://`"))?;
        if scheme != Scheme::HTTP {
            return Err(bad("only `http://` is supported"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("needs a host and port"))?;
        if !matches!(uri.path(), "" | "/") {
            return Err(bad("give the server's root, without a path"));
        }
        Ok(Worker {
            id,
            spec,
            scheme,
            authority,
            inflight: AtomicU64::new(0),
            prefill_tokens: AtomicU64::new(0),
            decode_blocks: AtomicU64::new(0),
            engine_requests: AtomicU64::new(0),
            engine_blocks: AtomicU64::new(0),
            probe: AtomicU8::new(Probe::Unknown as u8),
            routed: AtomicU64::new(0),
            breaker: Breaker::new(breaker),
        })
    }

    /// The URI of `path` on this worker.
    pub fn uri(&self, path: &str) -> Uri {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .unwrap_or_default()
    }

    /// The host part of its URL.
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// Whether requests may go to it now (probe not failed, breaker not open).
    pub fn routable(&self) -> bool {
        self.probe() != Probe::Down && self.breaker.allows()
    }

    /// The last probe's result.
    pub fn probe(&self) -> Probe {
        match self.probe.load(Relaxed) {
            1 => Probe::Up,
            2 => Probe::Down,
            _ => Probe::Unknown,
        }
    }

    pub(crate) fn set_probe(&self, p: Probe) {
        self.probe.store(p as u8, Relaxed);
    }

    /// Its load, corrected by the engine's own figures where those are higher (requests
    /// from other clients, or blocks the router did not count).
    pub fn load(&self) -> Load {
        Load {
            requests: self
                .inflight
                .load(Relaxed)
                .max(self.engine_requests.load(Relaxed)),
            prefill_tokens: self.prefill_tokens.load(Relaxed),
            decode_blocks: self
                .decode_blocks
                .load(Relaxed)
                .max(self.engine_blocks.load(Relaxed)),
        }
    }

    /// Stores what the engine's `/metrics` said: requests running + waiting, KV blocks used.
    pub(crate) fn set_engine_load(&self, requests: u64, blocks: u64) {
        self.engine_requests.store(requests, Relaxed);
        self.engine_blocks.store(blocks, Relaxed);
    }

    /// Requests routed to it so far.
    pub fn routed(&self) -> u64 {
        self.routed.load(Relaxed)
    }

    /// Accounts a request sent to it: `prefill_tokens` to compute, `blocks` to hold while
    /// decoding. The guard gives them back (prefill at the first token, the rest on drop).
    pub fn start(self: &Arc<Self>, prefill_tokens: u64, blocks: u64) -> LoadGuard {
        self.routed.fetch_add(1, Relaxed);
        self.inflight.fetch_add(1, Relaxed);
        self.prefill_tokens.fetch_add(prefill_tokens, Relaxed);
        self.decode_blocks.fetch_add(blocks, Relaxed);
        LoadGuard {
            worker: self.clone(),
            prefill_tokens,
            blocks,
        }
    }
}

/// A request's share of a worker's load; released on drop.
#[derive(Debug)]
pub struct LoadGuard {
    worker: Arc<Worker>,
    prefill_tokens: u64,
    blocks: u64,
}

impl LoadGuard {
    /// The worker.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// The prompt is prefilled (first token seen): its prefill no longer loads the worker.
    pub fn prefilled(&mut self) {
        let p = std::mem::take(&mut self.prefill_tokens);
        if p > 0 {
            self.worker.prefill_tokens.fetch_sub(p, Relaxed);
        }
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.prefilled();
        self.worker.decode_blocks.fetch_sub(self.blocks, Relaxed);
        self.worker.inflight.fetch_sub(1, Relaxed);
        // The last scrape of the engine's metrics may have been taken while this request
        // ran; it is older than what the router now knows, and would keep counting the
        // finished request (and its KV blocks) until the next scrape, penalising exactly
        // the worker that holds the prefix. Forget it; the next scrape says what is true.
        self.worker.set_engine_load(0, 0);
    }
}

/// The registered workers.
#[derive(Debug)]
pub struct Registry {
    workers: RwLock<Arc<[Arc<Worker>]>>,
    next_id: AtomicU64,
    breaker: BreakerConfig,
}

impl Registry {
    /// An empty registry whose workers get breakers configured by `breaker`.
    pub fn new(breaker: BreakerConfig) -> Self {
        Registry {
            workers: RwLock::new(Arc::from(Vec::new())),
            next_id: AtomicU64::new(0),
            breaker,
        }
    }

    /// The current workers (a snapshot; later changes do not alter it).
    pub fn snapshot(&self) -> Arc<[Arc<Worker>]> {
        self.workers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn swap(&self, f: impl FnOnce(&mut Vec<Arc<Worker>>)) {
        let mut w = self.workers.write().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<Arc<Worker>> = w.iter().cloned().collect();
        f(&mut list);
        *w = Arc::from(list);
    }

    /// Registers a worker; returns it with its new id.
    pub fn add(&self, spec: WorkerSpec) -> Result<Arc<Worker>, RegistryError> {
        let id = WorkerId(self.next_id.fetch_add(1, Relaxed));
        let w = Arc::new(Worker::new(id, spec, self.breaker)?);
        self.swap(|l| l.push(w.clone()));
        Ok(w)
    }

    /// Removes a worker; requests in flight on it finish (or migrate when it dies).
    pub fn remove(&self, id: WorkerId) -> Result<Arc<Worker>, RegistryError> {
        let mut removed = None;
        self.swap(|l| {
            if let Some(i) = l.iter().position(|w| w.id == id) {
                removed = Some(l.remove(i));
            }
        });
        removed.ok_or(RegistryError::Unknown(id.0))
    }

    /// Replaces a worker's spec (same id, so its KV index entries stay). Load counters
    /// start afresh; requests in flight release the old ones.
    pub fn update(&self, id: WorkerId, spec: WorkerSpec) -> Result<Arc<Worker>, RegistryError> {
        let w = Arc::new(Worker::new(id, spec, self.breaker)?);
        let mut found = false;
        self.swap(|l| {
            if let Some(slot) = l.iter_mut().find(|x| x.id == id) {
                w.set_probe(slot.probe());
                *slot = w.clone();
                found = true;
            }
        });
        if found {
            Ok(w)
        } else {
            Err(RegistryError::Unknown(id.0))
        }
    }

    /// Per-worker gauges and counters, for `/metrics`.
    pub fn render(&self, out: &mut String) {
        let ws = self.snapshot();
        let now = now_ms();
        type Get = fn(&Worker, u64) -> u64;
        let rows: [(&str, &str, &str, Get); 6] = [
            (
                "cohort_router_worker_inflight",
                "gauge",
                "Requests in flight, as the router counts them.",
                |w, _| w.inflight.load(Relaxed),
            ),
            (
                "cohort_router_worker_prefill_tokens",
                "gauge",
                "Prompt tokens sent and not yet prefilled.",
                |w, _| w.prefill_tokens.load(Relaxed),
            ),
            (
                "cohort_router_worker_decode_blocks",
                "gauge",
                "KV blocks of decoding requests (the larger of the router's and the engine's figure).",
                |w, _| w.load().decode_blocks,
            ),
            (
                "cohort_router_worker_healthy",
                "gauge",
                "1 when routable (probe not failed and breaker not open).",
                |w, _| u64::from(w.routable()),
            ),
            (
                "cohort_router_worker_breaker_state",
                "gauge",
                "Circuit breaker: 0 closed, 1 open, 2 half-open.",
                |w, now| match w.breaker.state_at(now) {
                    BreakerState::Closed => 0,
                    BreakerState::Open => 1,
                    BreakerState::HalfOpen => 2,
                },
            ),
            (
                "cohort_router_worker_routed_total",
                "counter",
                "Requests routed to the worker.",
                |w, _| w.routed(),
            ),
        ];
        for (name, kind, help, get) in rows {
            gauge_header(out, name, kind, help);
            for w in ws.iter() {
                sample(out, name, w.id.0, get(w, now));
            }
        }
        let name = "cohort_router_worker_info";
        gauge_header(out, name, "gauge", "Workers: their URL and role (value 1).");
        for w in ws.iter() {
            let role = match w.spec.role {
                Role::Aggregated => "aggregated",
                Role::Prefill => "prefill",
                Role::Decode => "decode",
            };
            // The URL comes from the operator's configuration, never from a request.
            out.push_str(&format!(
                "{name}{{worker=\"{}\",url=\"{}\",role=\"{role}\"}} 1\n",
                w.id.0,
                w.spec.url.replace(['"', '\\', '\n'], "_")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_update_remove_keep_ids_and_snapshots() {
        let r = Registry::new(BreakerConfig::default());
        let a = r
            .add(WorkerSpec::new("http://127.0.0.1:1", Role::Prefill))
            .unwrap();
        let b = r
            .add(WorkerSpec::new("http://127.0.0.1:2", Role::Decode))
            .unwrap();
        let before = r.snapshot();
        let mut spec = b.spec.clone();
        spec.nvlink_domain = Some("d0".into());
        r.update(b.id, spec).unwrap();
        assert_eq!(before[1].spec.nvlink_domain, None);
        assert_eq!(r.snapshot()[1].spec.nvlink_domain.as_deref(), Some("d0"));
        r.remove(a.id).unwrap();
        assert_eq!(r.snapshot().len(), 1);
        assert_eq!(r.snapshot()[0].id, b.id);
        assert_eq!(r.remove(a.id).unwrap_err(), RegistryError::Unknown(a.id.0));
        assert_eq!(
            r.snapshot()[0].uri("/v1/models").to_string(),
            "http://127.0.0.1:2/v1/models"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let r = Registry::new(BreakerConfig::default());
        for url in [
            "127.0.0.1:8000",
            "https://x:1",
            "http://x:1/v1",
            "not a url",
        ] {
            let e = r.add(WorkerSpec::new(url, Role::Aggregated)).unwrap_err();
            assert!(e.to_string().contains(url), "{e}");
        }
    }

    #[test]
    fn a_finished_request_invalidates_an_older_engine_scrape() {
        let r = Registry::new(BreakerConfig::default());
        let w = r
            .add(WorkerSpec::new("http://127.0.0.1:1", Role::Aggregated))
            .unwrap();
        let g = w.start(100, 7);
        // Scraped while the request ran: one request, its 96 blocks.
        w.set_engine_load(1, 96);
        assert_eq!(w.load().requests, 1);
        assert_eq!(w.load().decode_blocks, 96);
        drop(g);
        assert_eq!(w.load().requests, 0, "the scrape predates the completion");
        assert_eq!(w.load().decode_blocks, 0);
        // A later scrape (other clients' load) counts again.
        w.set_engine_load(2, 10);
        assert_eq!(w.load().requests, 2);
    }

    #[test]
    fn load_guard_releases_on_drop_and_prefill_at_first_token() {
        let r = Registry::new(BreakerConfig::default());
        let w = r
            .add(WorkerSpec::new("http://127.0.0.1:1", Role::Aggregated))
            .unwrap();
        let mut g = w.start(100, 7);
        assert_eq!(
            w.load(),
            Load {
                requests: 1,
                prefill_tokens: 100,
                decode_blocks: 7
            }
        );
        g.prefilled();
        assert_eq!(w.load().prefill_tokens, 0);
        drop(g);
        assert_eq!(w.load(), Load::default());
        // The engine's figures win when higher.
        w.set_engine_load(5, 40);
        assert_eq!(w.load().requests, 5);
        assert_eq!(w.load().decode_blocks, 40);
    }
}
