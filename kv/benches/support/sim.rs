//! A simulated fleet replaying the Mooncake trace: N workers, each a prefix cache of
//! fixed capacity in blocks with LRU eviction, emitting the events vLLM would.
//!
//! Requests are routed uniformly at random (seeded), so popular prefixes end up on
//! many workers. The trace is replayed in passes; each pass is salted (a different
//! tenant), so blocks of different passes are different, and the fleet fills up and
//! then evicts in steady state.

use std::collections::HashMap;

use cohort_kv::hash::{chain, BlockHash, EngineBlockHash, LocalBlockHash, Salt};
use cohort_kv::{EventBatch, KvOp, StoredBlock, StoredBlocks, WorkerId};
use xxhash_rust::xxh3::xxh3_64_with_seed;

pub(crate) const TRACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/traces/mooncake_synthetic.jsonl"
);

/// The trace's requests as lists of 512-token block ids.
pub(crate) fn load_trace() -> Vec<Vec<u64>> {
    std::fs::read_to_string(TRACE)
        .expect("read the Mooncake trace")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("trace line is JSON");
            v["hash_ids"]
                .as_array()
                .expect("hash_ids")
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect()
        })
        .collect()
}

/// The local hash standing for block `id`'s 512 tokens in pass `pass`.
pub(crate) fn local(pass: u64, id: u64) -> LocalBlockHash {
    LocalBlockHash(xxh3_64_with_seed(&id.to_le_bytes(), pass))
}

/// The block hashes the router computes for a request of pass `pass`.
pub(crate) fn query(pass: u64, ids: &[u64]) -> Vec<BlockHash> {
    let mut parent = None;
    ids.iter()
        .map(|&id| {
            let h = chain(parent, Salt::NONE, local(pass, id));
            parent = Some(h);
            h
        })
        .collect()
}

/// One worker's cache: an LRU list over a slab.
struct Cache {
    slot_of: HashMap<u64, u32>,
    key: Vec<u64>,
    prev: Vec<u32>,
    next: Vec<u32>,
    head: u32, // most recent
    tail: u32, // least recent
    next_event_id: u64,
}

const NIL: u32 = u32::MAX;

impl Cache {
    fn new() -> Self {
        Cache {
            slot_of: HashMap::new(),
            key: Vec::new(),
            prev: Vec::new(),
            next: Vec::new(),
            head: NIL,
            tail: NIL,
            next_event_id: 0,
        }
    }
    fn unlink(&mut self, s: u32) {
        let (p, n) = (self.prev[s as usize], self.next[s as usize]);
        if p != NIL {
            self.next[p as usize] = n
        } else {
            self.head = n
        }
        if n != NIL {
            self.prev[n as usize] = p
        } else {
            self.tail = p
        }
    }
    fn push_front(&mut self, s: u32) {
        self.prev[s as usize] = NIL;
        self.next[s as usize] = self.head;
        if self.head != NIL {
            self.prev[self.head as usize] = s
        } else {
            self.tail = s
        }
        self.head = s;
    }
}

/// The fleet.
pub(crate) struct Fleet {
    caches: Vec<Cache>,
    capacity: usize,
    trace: Vec<Vec<u64>>,
    rng: u64,
    /// Next request: (pass, index in trace).
    pos: (u64, usize),
    pub(crate) stored: u64,
    pub(crate) removed: u64,
}

impl Fleet {
    pub(crate) fn new(workers: usize, capacity: usize, trace: Vec<Vec<u64>>) -> Self {
        Fleet {
            caches: (0..workers).map(|_| Cache::new()).collect(),
            capacity,
            trace,
            rng: 0x9e37_79b9_7f4a_7c15,
            pos: (0, 0),
            stored: 0,
            removed: 0,
        }
    }

    /// The pass of the next request.
    pub(crate) fn pass(&self) -> u64 {
        self.pos.0
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Serves the next request of the trace: the events its worker publishes (one batch:
    /// evictions, then the store of the blocks it did not have).
    pub(crate) fn next_batch(&mut self) -> (WorkerId, EventBatch) {
        let (pass, i) = self.pos;
        self.pos = if i + 1 == self.trace.len() {
            (pass + 1, 0)
        } else {
            (pass, i + 1)
        };
        let w = (self.rand() % self.caches.len() as u64) as usize;
        let ids = std::mem::take(&mut self.trace[i]);
        let batch = self.serve(w, pass, &ids);
        self.trace[i] = ids;
        (WorkerId(w as u64), batch)
    }

    fn serve(&mut self, w: usize, pass: u64, ids: &[u64]) -> EventBatch {
        let capacity = self.capacity;
        let c = &mut self.caches[w];
        let mut engine = pass.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut parent: Option<EngineBlockHash> = None;
        let mut new_blocks = Vec::new();
        let mut removed = Vec::new();
        let mut touched = Vec::with_capacity(ids.len());
        for &id in ids {
            engine = xxh3_64_with_seed(&id.to_le_bytes(), engine);
            match c.slot_of.get(&engine) {
                Some(&s) => {
                    // Parents are always more recent than their children (see below), so
                    // a cached block never follows a miss.
                    debug_assert!(new_blocks.is_empty());
                    touched.push(s);
                    parent = Some(EngineBlockHash(engine));
                }
                None => {
                    let s = if c.slot_of.len() < capacity {
                        c.key.push(engine);
                        c.prev.push(NIL);
                        c.next.push(NIL);
                        (c.key.len() - 1) as u32
                    } else {
                        let victim = c.tail;
                        c.unlink(victim);
                        let old = c.key[victim as usize];
                        c.slot_of.remove(&old);
                        removed.push(EngineBlockHash(old));
                        c.key[victim as usize] = engine;
                        victim
                    };
                    c.slot_of.insert(engine, s);
                    c.push_front(s);
                    touched.push(s);
                    new_blocks.push(StoredBlock {
                        engine_hash: EngineBlockHash(engine),
                        local_hash: local(pass, id),
                    });
                }
            }
        }
        // Touch in reverse so the request's first block is the most recent: tails are
        // evicted before the prefixes they extend, as in vLLM.
        for &s in touched.iter().rev() {
            c.unlink(s);
            c.push_front(s);
        }
        self.stored += new_blocks.len() as u64;
        self.removed += removed.len() as u64;
        let mut ops = Vec::with_capacity(2);
        if !removed.is_empty() {
            ops.push(KvOp::Removed(removed));
        }
        if !new_blocks.is_empty() {
            ops.push(KvOp::Stored(StoredBlocks {
                parent,
                salt: Salt::NONE,
                blocks: new_blocks,
            }));
        }
        let event_id = c.next_event_id;
        c.next_event_id += 1;
        EventBatch { event_id, ops }
    }

    /// Whether every worker's cache is full.
    pub(crate) fn full(&self) -> bool {
        self.caches.iter().all(|c| c.slot_of.len() >= self.capacity)
    }
}

/// Block events (stored + removed blocks) in a batch.
pub(crate) fn block_events(b: &EventBatch) -> u64 {
    b.ops
        .iter()
        .map(|op| match op {
            KvOp::Stored(s) => s.blocks.len() as u64,
            KvOp::Removed(r) => r.len() as u64,
            KvOp::Cleared => 1,
        })
        .sum()
}
