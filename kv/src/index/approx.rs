//! Approximate mode, for engines that publish no KV events: the router records where it
//! sent each request as if that worker had cached the request's blocks, for a while.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::table::{BlockTable, MatchScratch, U64Map};
use super::{OverlapScores, WorkerId};
use crate::hash::BlockHash;

/// Settings of the approximate index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApproxConfig {
    /// How long a routed block is assumed cached after its last use. Default: 120 s
    /// (engines evict under pressure; a guess that outlives the cache misroutes).
    pub ttl: Duration,
    /// Most blocks assumed cached per worker; the least recently routed go first.
    /// Default: 16,384 (set it to the engine's KV capacity in blocks when known).
    pub max_blocks_per_worker: usize,
}

impl Default for ApproxConfig {
    fn default() -> Self {
        ApproxConfig {
            ttl: Duration::from_secs(120),
            max_blocks_per_worker: 16_384,
        }
    }
}

#[derive(Debug)]
struct ApproxWorker {
    id: WorkerId,
    /// Block → expiry of its latest use. The authority on what is held.
    expiry: U64Map<BlockHash, Instant>,
    /// Uses in time order; entries superseded by a later use are skipped when popped.
    queue: VecDeque<(BlockHash, Instant)>,
}

/// An index of blocks the router believes workers hold because it sent them requests,
/// with a time-to-live and a per-worker size bound (least recently used first out).
#[derive(Debug)]
pub struct ApproxIndexer {
    config: ApproxConfig,
    table: BlockTable,
    slots: Vec<Option<ApproxWorker>>,
    by_id: U64Map<u64, u32>,
    free: Vec<u32>,
    scratch: MatchScratch,
}

impl ApproxIndexer {
    /// An empty approximate index.
    pub fn new(config: ApproxConfig) -> Self {
        ApproxIndexer {
            config,
            table: BlockTable::default(),
            slots: Vec::new(),
            by_id: U64Map::default(),
            free: Vec::new(),
            scratch: MatchScratch::default(),
        }
    }

    fn slot_of(&mut self, worker: WorkerId) -> u32 {
        if let Some(&s) = self.by_id.get(&worker.0) {
            return s;
        }
        let w = ApproxWorker {
            id: worker,
            expiry: U64Map::default(),
            queue: VecDeque::new(),
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(w);
                s
            }
            None => {
                self.slots.push(Some(w));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_id.insert(worker.0, slot);
        slot
    }

    /// Records that a request with block hashes `hashes` was routed to `worker` at `now`:
    /// its blocks count as cached there until `now + ttl` (refreshed by later uses).
    /// Also expires that worker's stale blocks and enforces the size bound.
    pub fn record(&mut self, worker: WorkerId, hashes: &[BlockHash], now: Instant) {
        let slot = self.slot_of(worker);
        let until = now + self.config.ttl;
        let w = self.slots[slot as usize].as_mut().expect("live slot");
        for &h in hashes {
            if w.expiry.insert(h, until).is_none() {
                self.table.add(h, slot);
            }
            w.queue.push_back((h, until));
        }
        expire_worker(
            &mut self.table,
            w,
            slot,
            now,
            self.config.max_blocks_per_worker,
        );
    }

    /// Drops every block whose time-to-live has passed at `now`. Call it periodically
    /// (or before queries) so stale guesses stop attracting requests.
    pub fn expire(&mut self, now: Instant) {
        let max = self.config.max_blocks_per_worker;
        for (slot, w) in self.slots.iter_mut().enumerate() {
            if let Some(w) = w {
                expire_worker(&mut self.table, w, slot as u32, now, max);
            }
        }
    }

    /// Forgets `worker`; false if unknown.
    pub fn remove_worker(&mut self, worker: WorkerId) -> bool {
        let Some(slot) = self.by_id.remove(&worker.0) else {
            return false;
        };
        if let Some(w) = self.slots[slot as usize].take() {
            for h in w.expiry.keys() {
                self.table.remove(*h, slot);
            }
        }
        self.free.push(slot);
        true
    }

    /// Same as [`KvIndexer::find_matches`](super::KvIndexer::find_matches), over the
    /// recorded blocks not yet expired by [`expire`](Self::expire) or `record`.
    pub fn find_matches(&mut self, hashes: &[BlockHash]) -> OverlapScores {
        self.table.find_matches(hashes, &mut self.scratch);
        let scores = self
            .scratch
            .out
            .iter()
            .map(|&(slot, n)| (self.slots[slot as usize].as_ref().expect("live slot").id, n))
            .collect();
        OverlapScores { scores }
    }

    /// Blocks currently assumed cached on `worker`.
    pub fn worker_blocks(&self, worker: WorkerId) -> usize {
        self.by_id
            .get(&worker.0)
            .and_then(|&s| self.slots[s as usize].as_ref())
            .map_or(0, |w| w.expiry.len())
    }
}

fn expire_worker(
    table: &mut BlockTable,
    w: &mut ApproxWorker,
    slot: u32,
    now: Instant,
    max: usize,
) {
    while let Some(&(h, until)) = w.queue.front() {
        let over = w.expiry.len() > max;
        if until > now && !over {
            break;
        }
        w.queue.pop_front();
        // Only the entry of the latest use removes the block.
        if w.expiry.get(&h) == Some(&until) {
            w.expiry.remove(&h);
            table.remove(h, slot);
        }
    }
    // Superseded entries pile up when the same blocks are reused again and again within
    // the ttl; compact so the queue stays proportional to what is held.
    if w.queue.len() > 2 * w.expiry.len() + 64 {
        let expiry = &w.expiry;
        w.queue.retain(|(h, until)| expiry.get(h) == Some(until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(r: std::ops::Range<u64>) -> Vec<BlockHash> {
        r.map(BlockHash).collect()
    }

    #[test]
    fn routed_blocks_match_until_ttl() {
        let t0 = Instant::now();
        let mut idx = ApproxIndexer::new(ApproxConfig {
            ttl: Duration::from_secs(10),
            max_blocks_per_worker: 100,
        });
        idx.record(WorkerId(1), &hashes(0..4), t0);
        assert_eq!(idx.find_matches(&hashes(0..6)).get(WorkerId(1)), 4);
        // Reuse of the first two refreshes them.
        idx.record(WorkerId(1), &hashes(0..2), t0 + Duration::from_secs(8));
        idx.expire(t0 + Duration::from_secs(11));
        assert_eq!(idx.find_matches(&hashes(0..6)).get(WorkerId(1)), 2);
        idx.expire(t0 + Duration::from_secs(19));
        assert_eq!(idx.find_matches(&hashes(0..6)).get(WorkerId(1)), 0);
        assert_eq!(idx.worker_blocks(WorkerId(1)), 0);
    }

    #[test]
    fn size_bound_evicts_least_recently_routed() {
        let t0 = Instant::now();
        let mut idx = ApproxIndexer::new(ApproxConfig {
            ttl: Duration::from_secs(100),
            max_blocks_per_worker: 5,
        });
        idx.record(WorkerId(1), &hashes(0..4), t0);
        idx.record(WorkerId(1), &hashes(0..1), t0 + Duration::from_secs(1));
        idx.record(WorkerId(1), &hashes(10..13), t0 + Duration::from_secs(2));
        // 7 distinct blocks, bound 5: blocks 1 and 2 (oldest uses) go; block 0 was reused.
        assert_eq!(idx.worker_blocks(WorkerId(1)), 5);
        assert_eq!(idx.find_matches(&hashes(0..4)).get(WorkerId(1)), 1);
        assert_eq!(idx.find_matches(&[BlockHash(3)]).get(WorkerId(1)), 1);
        assert_eq!(idx.find_matches(&hashes(10..13)).get(WorkerId(1)), 3);
    }

    #[test]
    fn queue_stays_bounded_under_constant_reuse() {
        let t0 = Instant::now();
        let mut idx = ApproxIndexer::new(ApproxConfig::default());
        for i in 0..10_000u64 {
            idx.record(WorkerId(1), &hashes(0..8), t0 + Duration::from_millis(i));
        }
        let w = idx.slots[0].as_ref().unwrap();
        assert!(
            w.queue.len() <= 2 * 8 + 64 + 8,
            "queue grew to {}",
            w.queue.len()
        );
        assert!(idx.remove_worker(WorkerId(1)));
        assert_eq!(idx.find_matches(&hashes(0..8)), OverlapScores::default());
    }
}
