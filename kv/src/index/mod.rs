//! The indexers: [`KvIndexer`] fed by engine events, [`ApproxIndexer`] fed by the
//! router's own decisions. Both answer `find_matches` from the same [`table`].

mod approx;
mod flat;
mod table;
mod worker_set;

pub use approx::{ApproxConfig, ApproxIndexer};
pub use table::MatchScratch;

use crate::event::{EventBatch, KvOp, StoredBlocks};
use crate::hash::{chain, BlockHash};
use flat::FlatMap;
use table::{BlockTable, U64Map};

/// A worker (one engine instance, or one data-parallel rank of it), as the router names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u64);

/// The answer of `find_matches`: for each worker holding at least the first block, how
/// many leading blocks of the query it holds. Workers holding none are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlapScores {
    /// `(worker, leading blocks held)`, in no particular order, each worker once.
    pub scores: Vec<(WorkerId, u32)>,
}

impl OverlapScores {
    /// Leading blocks `worker` holds (0 if absent).
    pub fn get(&self, worker: WorkerId) -> u32 {
        self.scores
            .iter()
            .find(|(w, _)| *w == worker)
            .map_or(0, |(_, n)| *n)
    }

    /// The best score, 0 when no worker matched.
    pub fn max(&self) -> u32 {
        self.scores.iter().map(|(_, n)| *n).max().unwrap_or(0)
    }
}

/// What applying one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied; counts of what was done.
    Applied(ApplyStats),
    /// The batch's id is below the next expected one: already applied (e.g. it arrived
    /// both live and by replay). Nothing was done.
    Duplicate {
        /// The id expected next.
        expected: u64,
    },
    /// Batches `expected..got` were missed. Nothing was done: the caller must replay the
    /// missing batches, or give up on them with [`KvIndexer::reset_worker`].
    Gap {
        /// The first missing id.
        expected: u64,
        /// The id received.
        got: u64,
    },
}

/// Counters of one applied batch. Anomalies are counted, not errors: an index that
/// forgets or ignores a block only costs routing quality, never correctness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyStats {
    /// Blocks stored.
    pub stored: u32,
    /// Blocks removed.
    pub removed: u32,
    /// Removals of blocks this worker was not known to hold (ignored).
    pub unknown_removed: u32,
    /// Stores whose parent this worker was not known to hold (skipped: the prefix the
    /// blocks extend is unknown, so their hashes cannot be computed).
    pub unknown_parent: u32,
}

/// One worker's state: the engine's ids of its blocks, mapped to our hashes.
#[derive(Debug)]
struct WorkerState {
    id: WorkerId,
    /// Engine block id → our block hash: needed to apply later removals.
    blocks: FlatMap,
    /// Our hashes held under more than one engine id (e.g. engine ids that also cover
    /// multimodal inputs we do not hash), with the count of extra holders. Almost always
    /// empty.
    aliases: U64Map<BlockHash, u32>,
    /// The next expected batch id; `None` accepts any (fresh or reset worker).
    next_event_id: Option<u64>,
}

/// The index of which worker holds which blocks, fed by engine events.
///
/// Not thread-safe by design: one task owns it (the router's indexer actor) and applies
/// events and queries in turn, so neither pays for locks.
#[derive(Debug, Default)]
pub struct KvIndexer {
    table: BlockTable,
    slots: Vec<Option<WorkerState>>,
    by_id: U64Map<u64, u32>,
    free: Vec<u32>,
    entries: usize,
    scratch: MatchScratch,
    /// Block-table changes of the batch being applied, in order (reused buffer).
    pending: Vec<TableChange>,
}

/// A change to the block table, recorded while a batch's worker-map changes are made
/// and applied after them (see [`KvIndexer::apply`]).
#[derive(Debug, Clone, Copy)]
enum TableChange {
    /// The worker now holds this block (under one more engine id).
    Add(BlockHash),
    /// The worker holds this block under one engine id fewer.
    Release(BlockHash),
}

impl KvIndexer {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `worker` (no-op if known). Workers are also registered by their first
    /// event.
    pub fn add_worker(&mut self, worker: WorkerId) {
        self.slot_of(worker);
    }

    fn slot_of(&mut self, worker: WorkerId) -> u32 {
        if let Some(&s) = self.by_id.get(&worker.0) {
            return s;
        }
        let state = WorkerState {
            id: worker,
            blocks: FlatMap::default(),
            aliases: U64Map::default(),
            next_event_id: None,
        };
        // Reuse the lowest-numbered free slot last freed: keeps slots dense, which keeps
        // bitsets short.
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(state);
                s
            }
            None => {
                self.slots.push(Some(state));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_id.insert(worker.0, slot);
        slot
    }

    /// Forgets `worker` and its blocks; false if unknown.
    pub fn remove_worker(&mut self, worker: WorkerId) -> bool {
        let Some(slot) = self.by_id.remove(&worker.0) else {
            return false;
        };
        self.clear_slot(slot);
        self.slots[slot as usize] = None;
        self.free.push(slot);
        true
    }

    /// Forgets `worker`'s blocks and accepts any next batch id: the resync of last resort
    /// after a gap that cannot be replayed. Under-reporting a worker's cache only costs
    /// routing quality; over-reporting would misroute.
    pub fn reset_worker(&mut self, worker: WorkerId) {
        let slot = self.slot_of(worker);
        self.clear_slot(slot);
        if let Some(ws) = self.slots[slot as usize].as_mut() {
            ws.next_event_id = None;
        }
    }

    /// The batch id `worker` expects next (`None`: any, or unknown worker).
    pub fn next_event_id(&self, worker: WorkerId) -> Option<u64> {
        let slot = *self.by_id.get(&worker.0)?;
        self.slots[slot as usize].as_ref()?.next_event_id
    }

    /// Applies one batch of `worker`'s events, after checking its id for gaps and
    /// duplicates (see [`ApplyOutcome`]).
    pub fn apply(&mut self, worker: WorkerId, batch: &EventBatch) -> ApplyOutcome {
        let slot = self.slot_of(worker);
        let ws = self.slots[slot as usize]
            .as_mut()
            .expect("slot of a live worker");
        if let Some(expected) = ws.next_event_id {
            if batch.event_id < expected {
                return ApplyOutcome::Duplicate { expected };
            }
            if batch.event_id > expected {
                return ApplyOutcome::Gap {
                    expected,
                    got: batch.event_id,
                };
            }
        }
        ws.next_event_id = Some(batch.event_id.wrapping_add(1));
        let mut stats = ApplyStats::default();
        self.apply_ops(slot, &batch.ops, &mut stats);
        ApplyOutcome::Applied(stats)
    }

    /// Applies one op without sequence checks (for sources without sequence numbers).
    pub fn apply_op(&mut self, worker: WorkerId, op: &KvOp) -> ApplyStats {
        let slot = self.slot_of(worker);
        let mut stats = ApplyStats::default();
        self.apply_ops(slot, std::slice::from_ref(op), &mut stats);
        stats
    }

    /// Applies `ops` to the worker in `slot`, in passes so that the memory accesses of
    /// the whole batch overlap (both maps are far larger than the caches):
    ///
    /// 1. start loading the worker-map line of every engine id in the batch;
    /// 2. look at those lines, and start loading the next line where the probe for an
    ///    id goes on past a full one;
    /// 3. make the worker-map changes in order, computing the block hashes; record the
    ///    block-table changes they imply, and start loading those table lines;
    /// 4. look at those lines: start loading the heap parts of large worker sets, or the
    ///    next line where the probe goes on;
    /// 5. make the block-table changes in order.
    ///
    /// Passes 1, 2 and 4 only hint the memory system. The result is that of applying
    /// the ops one by one: the worker map is only changed in pass 3, the table only in
    /// pass 5, and each keeps the order. (A `Cleared` op touches both: the changes
    /// pending before it are made first.)
    fn apply_ops(&mut self, slot: u32, ops: &[KvOp], stats: &mut ApplyStats) {
        let ws = self.slots[slot as usize].as_mut().expect("live slot");
        let table = &mut self.table;
        let held_before = ws.blocks.len();
        for_each_engine_id(ops, |e| ws.blocks.prefetch(e));
        for_each_engine_id(ops, |e| {
            ws.blocks.prefetch_run(e);
        });
        let mut pending = std::mem::take(&mut self.pending);
        pending.clear();
        for op in ops {
            match op {
                KvOp::Stored(s) => store(ws, table, &mut pending, s, stats),
                KvOp::Removed(engine_ids) => {
                    for e in engine_ids {
                        match ws.blocks.remove(e.0) {
                            Some(h) => {
                                table.prefetch(BlockHash(h));
                                pending.push(TableChange::Release(BlockHash(h)));
                                stats.removed += 1;
                            }
                            None => stats.unknown_removed += 1,
                        }
                    }
                }
                KvOp::Cleared => {
                    apply_changes(table, ws, slot, &mut pending);
                    clear(table, ws, slot);
                }
            }
        }
        apply_changes(table, ws, slot, &mut pending);
        self.pending = pending;
        self.entries = self.entries + ws.blocks.len() - held_before;
    }

    fn clear_slot(&mut self, slot: u32) {
        let Some(ws) = self.slots[slot as usize].as_mut() else {
            return;
        };
        self.entries -= ws.blocks.len();
        clear(&mut self.table, ws, slot);
    }

    /// For each worker holding the first block of `hashes`, how many leading blocks it
    /// holds. Stops at the first block no remaining worker holds.
    pub fn find_matches(&mut self, hashes: &[BlockHash]) -> OverlapScores {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut out = OverlapScores::default();
        self.find_matches_with(hashes, &mut scratch, &mut out);
        self.scratch = scratch;
        out
    }

    /// [`find_matches`](Self::find_matches) into caller-owned buffers: no allocation
    /// once they have grown, and `&self`, so queries can share the index.
    pub fn find_matches_with(
        &self,
        hashes: &[BlockHash],
        scratch: &mut MatchScratch,
        out: &mut OverlapScores,
    ) {
        self.table.find_matches(hashes, scratch);
        out.scores.clear();
        out.scores.extend(scratch.out.iter().map(|&(slot, n)| {
            let ws = self.slots[slot as usize]
                .as_ref()
                .expect("matched slot is live");
            (ws.id, n)
        }));
    }

    /// Registered workers.
    pub fn num_workers(&self) -> usize {
        self.by_id.len()
    }

    /// Distinct blocks held by at least one worker.
    pub fn num_blocks(&self) -> usize {
        self.table.len()
    }

    /// (worker, engine block) pairs indexed: the sum of every worker's cached blocks.
    pub fn num_entries(&self) -> usize {
        self.entries
    }

    /// The distinct block hashes `worker` holds, sorted (copies the worker's map: for
    /// tests and debugging, not for the hot path).
    pub fn worker_block_hashes(&self, worker: WorkerId) -> Vec<BlockHash> {
        let Some(ws) = self
            .by_id
            .get(&worker.0)
            .and_then(|&s| self.slots[s as usize].as_ref())
        else {
            return Vec::new();
        };
        let mut v: Vec<BlockHash> = ws.blocks.iter().map(|p| BlockHash(p.value)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Blocks `worker` is known to hold.
    pub fn worker_blocks(&self, worker: WorkerId) -> usize {
        self.by_id
            .get(&worker.0)
            .and_then(|&s| self.slots[s as usize].as_ref())
            .map_or(0, |w| w.blocks.len())
    }
}

/// Calls `f` with every engine id `ops` look up: stored blocks, their parents, removed
/// blocks.
#[inline]
fn for_each_engine_id(ops: &[KvOp], mut f: impl FnMut(u64)) {
    for op in ops {
        match op {
            KvOp::Stored(s) => {
                if let Some(p) = s.parent {
                    f(p.0);
                }
                for b in &s.blocks {
                    f(b.engine_hash.0);
                }
            }
            KvOp::Removed(r) => {
                for e in r {
                    f(e.0);
                }
            }
            KvOp::Cleared => {}
        }
    }
}

/// Pass 3 of [`KvIndexer::apply_ops`] for one store: chains the blocks' hashes onto the
/// parent's, maps their engine ids, and records (and prefetches) the table changes.
fn store(
    ws: &mut WorkerState,
    table: &BlockTable,
    pending: &mut Vec<TableChange>,
    s: &StoredBlocks,
    stats: &mut ApplyStats,
) {
    let mut parent = match s.parent {
        None => None,
        Some(p) => match ws.blocks.get_value(p.0) {
            Some(h) => Some(BlockHash(h)),
            None => {
                stats.unknown_parent += 1;
                return;
            }
        },
    };
    ws.blocks.reserve(s.blocks.len());
    for b in &s.blocks {
        let h = chain(parent, s.salt, b.local_hash);
        parent = Some(h);
        match ws.blocks.insert(b.engine_hash.0, h.0) {
            // A duplicate store of the same block: nothing changes.
            Some(old) if old == h.0 => continue,
            // The engine reused an id for other content: drop the old mapping.
            Some(old) => {
                table.prefetch(BlockHash(old));
                pending.push(TableChange::Release(BlockHash(old)));
            }
            None => {}
        }
        table.prefetch(h);
        pending.push(TableChange::Add(h));
        stats.stored += 1;
    }
}

/// Passes 4 and 5 of [`KvIndexer::apply_ops`]: makes the recorded table changes, in
/// order, after starting to load what they will read beyond the lines pass 3 loaded.
fn apply_changes(
    table: &mut BlockTable,
    ws: &mut WorkerState,
    slot: u32,
    pending: &mut Vec<TableChange>,
) {
    for change in pending.iter() {
        let (TableChange::Add(h) | TableChange::Release(h)) = *change;
        table.prefetch_run(h);
    }
    for change in pending.drain(..) {
        match change {
            TableChange::Add(h) => {
                if !table.add(h, slot) {
                    *ws.aliases.entry(h).or_insert(0) += 1;
                }
            }
            TableChange::Release(h) => release(table, &mut ws.aliases, slot, h),
        }
    }
}

/// Forgets every block of the worker in `slot` (its map keeps its allocation: a cleared
/// worker usually refills; a removed one frees it with its state).
fn clear(table: &mut BlockTable, ws: &mut WorkerState, slot: u32) {
    ws.blocks.drain_with(|e| {
        table.remove(BlockHash(e.value), slot);
    });
    ws.aliases.clear();
}

/// Drops one holding of `h` by `slot`, keeping it while another engine id still maps to it.
#[inline]
fn release(table: &mut BlockTable, aliases: &mut U64Map<BlockHash, u32>, slot: u32, h: BlockHash) {
    if !aliases.is_empty() {
        if let Some(n) = aliases.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                aliases.remove(&h);
            }
            return;
        }
    }
    table.remove(h, slot);
}
