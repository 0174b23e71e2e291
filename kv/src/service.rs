//! The indexer actor: one task owns the [`KvIndexer`]; subscribers send it batches and
//! the router asks it `find_matches`, both over channels.
//!
//! Why an actor and not an `Arc<RwLock<KvIndexer>>`: applying events is a stream of
//! small writes (≈16 µs per engine message) from hundreds of engines. Under a lock every
//! one of them contends with every query; in the actor they are applied by one thread
//! with no lock at all, and queries are answered between two batches, ahead of any
//! queued batch (they have their own channel, checked after every batch). A query thus
//! waits at most one batch plus the channel hop. See docs/kv.md for the measured cost.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::event::EventBatch;
use crate::hash::BlockHash;
use crate::index::{ApplyOutcome, KvIndexer, MatchScratch, OverlapScores, WorkerId};

/// Settings of the indexer actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexerConfig {
    /// Updates (batches, resets) queued before senders wait. Default: 4,096 messages:
    /// bounded so that a slow indexer slows the subscribers (whose engines' replay
    /// buffers then cover the delay) instead of growing memory without limit.
    pub update_queue: usize,
    /// Queries queued before callers wait. Default: 1,024.
    pub query_queue: usize,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        IndexerConfig {
            update_queue: 4_096,
            query_queue: 1_024,
        }
    }
}

/// The indexer task has ended (shut down, or every handle's sender was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the KV indexer task has stopped")]
pub struct IndexerGone;

/// Counters of what the actor applied, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexerStats {
    /// Registered workers.
    pub workers: usize,
    /// Distinct blocks indexed.
    pub blocks: usize,
    /// (worker, block) entries indexed.
    pub entries: usize,
    /// Batches applied.
    pub batches: u64,
    /// Batches refused as duplicates or gaps (subscribers check sequence numbers first,
    /// so these only come from other senders).
    pub refused: u64,
}

enum Update {
    Apply(WorkerId, EventBatch),
    Reset(WorkerId),
    Remove(WorkerId),
    /// Answered once every earlier update is applied.
    Blocks(WorkerId, oneshot::Sender<Vec<BlockHash>>),
    Stats(oneshot::Sender<IndexerStats>),
}

struct Query {
    hashes: Arc<[BlockHash]>,
    reply: oneshot::Sender<OverlapScores>,
}

/// A cloneable handle to the indexer actor.
#[derive(Debug, Clone)]
pub struct IndexerHandle {
    updates: mpsc::Sender<Update>,
    queries: mpsc::Sender<Query>,
}

impl std::fmt::Debug for Update {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Update")
    }
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Query")
    }
}

impl IndexerHandle {
    /// Queues `batch` of `worker`'s events (sequence checks as in [`KvIndexer::apply`]).
    pub async fn apply(&self, worker: WorkerId, batch: EventBatch) -> Result<(), IndexerGone> {
        self.update(Update::Apply(worker, batch)).await
    }

    /// Queues [`KvIndexer::reset_worker`].
    pub async fn reset_worker(&self, worker: WorkerId) -> Result<(), IndexerGone> {
        self.update(Update::Reset(worker)).await
    }

    /// Queues [`KvIndexer::remove_worker`].
    pub async fn remove_worker(&self, worker: WorkerId) -> Result<(), IndexerGone> {
        self.update(Update::Remove(worker)).await
    }

    /// [`KvIndexer::find_matches`], answered ahead of queued updates.
    pub async fn find_matches(
        &self,
        hashes: impl Into<Arc<[BlockHash]>>,
    ) -> Result<OverlapScores, IndexerGone> {
        let (reply, rx) = oneshot::channel();
        self.queries
            .send(Query {
                hashes: hashes.into(),
                reply,
            })
            .await
            .map_err(|_| IndexerGone)?;
        rx.await.map_err(|_| IndexerGone)
    }

    /// The block hashes `worker` holds, sorted, once every update queued before this
    /// call is applied (for tests and debugging: it copies the worker's whole map).
    pub async fn worker_blocks(&self, worker: WorkerId) -> Result<Vec<BlockHash>, IndexerGone> {
        let (reply, rx) = oneshot::channel();
        self.update(Update::Blocks(worker, reply)).await?;
        rx.await.map_err(|_| IndexerGone)
    }

    /// Counters, once every update queued before this call is applied.
    pub async fn stats(&self) -> Result<IndexerStats, IndexerGone> {
        let (reply, rx) = oneshot::channel();
        self.update(Update::Stats(reply)).await?;
        rx.await.map_err(|_| IndexerGone)
    }

    async fn update(&self, u: Update) -> Result<(), IndexerGone> {
        self.updates.send(u).await.map_err(|_| IndexerGone)
    }
}

/// The running indexer actor: owns its task. [`shutdown`](Self::shutdown) stops it and
/// gives the index back; dropping it cancels the task.
#[derive(Debug)]
pub struct IndexerService {
    handle: IndexerHandle,
    cancel: CancellationToken,
    task: Option<JoinHandle<KvIndexer>>,
}

impl IndexerService {
    /// Starts the actor on the current tokio runtime, owning `index`.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(index: KvIndexer, config: IndexerConfig) -> Self {
        let (updates, updates_rx) = mpsc::channel(config.update_queue.max(1));
        let (queries, queries_rx) = mpsc::channel(config.query_queue.max(1));
        let cancel = CancellationToken::new();
        let actor = Actor {
            index,
            scratch: MatchScratch::default(),
            updates: updates_rx,
            queries: queries_rx,
            stats: IndexerStats::default(),
        };
        let task = tokio::spawn(actor.run(cancel.clone()));
        IndexerService {
            handle: IndexerHandle { updates, queries },
            cancel,
            task: Some(task),
        }
    }

    /// A handle for subscribers and the router.
    pub fn handle(&self) -> IndexerHandle {
        self.handle.clone()
    }

    /// Stops the actor once the updates already queued are applied, and returns the
    /// index. `None` if the task panicked.
    pub async fn shutdown(mut self) -> Option<KvIndexer> {
        self.cancel.cancel();
        let task = self.task.take()?;
        task.await.ok()
    }
}

impl Drop for IndexerService {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Actor {
    index: KvIndexer,
    scratch: MatchScratch,
    updates: mpsc::Receiver<Update>,
    queries: mpsc::Receiver<Query>,
    stats: IndexerStats,
}

/// Updates taken from the channel at once: amortises the channel's synchronisation.
const UPDATE_CHUNK: usize = 64;

impl Actor {
    async fn run(mut self, cancel: CancellationToken) -> KvIndexer {
        let mut buf = Vec::with_capacity(UPDATE_CHUNK);
        let (mut updates_open, mut queries_open) = (true, true);
        while updates_open || queries_open {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                q = self.queries.recv(), if queries_open => match q {
                    Some(q) => self.answer(q),
                    None => queries_open = false,
                },
                n = self.updates.recv_many(&mut buf, UPDATE_CHUNK), if updates_open => {
                    if n == 0 {
                        updates_open = false;
                    }
                    for u in buf.drain(..) {
                        self.update(u);
                        // Queries go ahead of the rest of the queue.
                        while let Ok(q) = self.queries.try_recv() {
                            self.answer(q);
                        }
                    }
                }
            }
        }
        // Apply what was queued before the shutdown, so that nothing sent is lost.
        self.updates.close();
        while let Ok(u) = self.updates.try_recv() {
            self.update(u);
        }
        self.index
    }

    fn answer(&mut self, q: Query) {
        let mut out = OverlapScores::default();
        self.index
            .find_matches_with(&q.hashes, &mut self.scratch, &mut out);
        // The caller may have given up waiting; nothing to do then.
        let _ = q.reply.send(out);
    }

    fn update(&mut self, u: Update) {
        match u {
            Update::Apply(worker, batch) => match self.index.apply(worker, &batch) {
                ApplyOutcome::Applied(_) => self.stats.batches += 1,
                ApplyOutcome::Duplicate { .. } | ApplyOutcome::Gap { .. } => {
                    self.stats.refused += 1
                }
            },
            Update::Reset(worker) => self.index.reset_worker(worker),
            Update::Remove(worker) => {
                self.index.remove_worker(worker);
            }
            Update::Blocks(worker, reply) => {
                let _ = reply.send(self.index.worker_block_hashes(worker));
            }
            Update::Stats(reply) => {
                let _ = reply.send(IndexerStats {
                    workers: self.index.num_workers(),
                    blocks: self.index.num_blocks(),
                    entries: self.index.num_entries(),
                    ..self.stats
                });
            }
        }
    }
}
