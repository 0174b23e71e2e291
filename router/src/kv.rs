//! What the KV-aware policy knows about workers' caches: an approximate index of the
//! router's own decisions (always), and an index fed by engines' KV events for workers
//! that publish them (`--kv-events`). A query asks both and keeps, per worker, the
//! larger answer; a worker with an event stream is only ever recorded by its events.

use crate::registry::Worker;
use cohort_kv::service::{IndexerConfig, IndexerHandle, IndexerService};
use cohort_kv::subscriber::{Subscriber, SubscriberConfig};
use cohort_kv::{ApproxConfig, ApproxIndexer, BlockHash, KvIndexer, OverlapScores, WorkerId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The indexes and the subscribers that feed the event-driven one.
#[derive(Debug)]
pub struct KvIndex {
    approx: Mutex<ApproxIndexer>,
    events: Mutex<Option<Events>>,
    with_events: Mutex<HashSet<WorkerId>>,
}

#[derive(Debug)]
struct Events {
    service: IndexerService,
    handle: IndexerHandle,
    subscribers: HashMap<WorkerId, Subscriber>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl KvIndex {
    /// Empty indexes; the approximate one with `approx`.
    pub fn new(approx: ApproxConfig) -> Self {
        KvIndex {
            approx: Mutex::new(ApproxIndexer::new(approx)),
            events: Mutex::new(None),
            with_events: Mutex::new(HashSet::new()),
        }
    }

    /// Starts following `w`'s KV events when its spec names a publisher (needs a tokio
    /// runtime).
    pub fn add_worker(&self, w: &Worker) {
        let Some(endpoint) = &w.spec.kv_events else {
            return;
        };
        let mut ev = lock(&self.events);
        let ev = ev.get_or_insert_with(|| {
            let service = IndexerService::spawn(KvIndexer::new(), IndexerConfig::default());
            let handle = service.handle();
            Events {
                service,
                handle,
                subscribers: HashMap::new(),
            }
        });
        let cfg = SubscriberConfig::new(
            w.id,
            endpoint.clone(),
            None,
            cohort_kv::decode::Dialect::Vllm,
            w.spec.block_size,
        );
        let sub = Subscriber::spawn(cfg, ev.handle.clone());
        if let Some(old) = ev.subscribers.insert(w.id, sub) {
            old.handle().cancel();
        }
        lock(&self.with_events).insert(w.id);
    }

    /// Forgets `id` in both indexes and stops its subscriber.
    pub fn remove_worker(&self, id: WorkerId) {
        lock(&self.approx).remove_worker(id);
        lock(&self.with_events).remove(&id);
        if let Some(ev) = lock(&self.events).as_mut() {
            if let Some(sub) = ev.subscribers.remove(&id) {
                sub.handle().cancel();
            }
            let h = ev.handle.clone();
            tokio::spawn(async move {
                let _ = h.remove_worker(id).await;
            });
        }
    }

    /// Leading blocks of `hashes` each worker holds.
    pub async fn find_matches(&self, hashes: &[BlockHash]) -> OverlapScores {
        let mut scores = lock(&self.approx).find_matches(hashes);
        let handle = lock(&self.events).as_ref().map(|e| e.handle.clone());
        if let Some(h) = handle {
            if let Ok(ev) = h.find_matches(hashes.to_vec()).await {
                for (w, n) in ev.scores {
                    match scores.scores.iter_mut().find(|(x, _)| *x == w) {
                        Some((_, m)) => *m = (*m).max(n),
                        None => scores.scores.push((w, n)),
                    }
                }
            }
        }
        scores
    }

    /// Records that `worker` was sent a prompt with `hashes` (unless its own events say
    /// what it caches).
    pub fn record(&self, worker: WorkerId, hashes: &[BlockHash]) {
        if hashes.is_empty() || lock(&self.with_events).contains(&worker) {
            return;
        }
        let mut a = lock(&self.approx);
        let now = Instant::now();
        a.expire(now);
        a.record(worker, hashes, now);
    }

    /// Blocks the event-fed index holds for `worker` (tests and debugging).
    pub async fn event_blocks(&self, worker: WorkerId) -> Option<usize> {
        let h = lock(&self.events).as_ref().map(|e| e.handle.clone())?;
        h.worker_blocks(worker).await.ok().map(|b| b.len())
    }

    /// Stops every subscriber and the indexer task, and waits for them.
    pub async fn shutdown(&self) {
        let ev = lock(&self.events).take();
        if let Some(ev) = ev {
            for (_, sub) in ev.subscribers {
                sub.stop().await;
            }
            ev.service.shutdown().await;
        }
    }
}

/// Shared ownership, as the router's parts hold it.
pub type SharedKvIndex = Arc<KvIndex>;
