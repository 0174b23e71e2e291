//! The paged KV cache's block pool, as vLLM v1's `BlockPool`: reference-counted blocks,
//! a map from chained block hash to cached block, and a free queue that doubles as the
//! LRU of evictable cached blocks.
//!
//! A block whose reference count drops to zero goes to the tail of the free queue but
//! keeps its hash, so a later request with the same prefix can take it back ("touch").
//! Allocation pops the head of the free queue; if that block still has a hash, the hash
//! is evicted then (a `BlockRemoved` event). Requests free their blocks tail first, so
//! the ends of sequences are evicted before their shared prefixes.

use std::collections::HashMap;

/// A block's index in the pool.
pub type BlockId = u32;

const NIL: u32 = u32::MAX;

/// A KV-cache event, as vLLM publishes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// Blocks became cached: consecutive blocks of one sequence.
    Stored {
        /// The blocks' hashes, in sequence order.
        hashes: Vec<u64>,
        /// The hash of the block before the first one (`None` at the sequence start).
        parent: Option<u64>,
        /// The tokens of the blocks, `hashes.len() × block_size` of them.
        tokens: Vec<u32>,
    },
    /// Cached blocks were evicted.
    Removed {
        /// Their hashes.
        hashes: Vec<u64>,
    },
    /// The whole prefix cache was dropped.
    AllCleared,
}

/// Chained hash of a full block: its parent's hash and its tokens.
pub fn block_hash(parent: Option<u64>, tokens: &[u32]) -> u64 {
    let mut h = super::vocab::mix(parent.unwrap_or(0x0c0a_0e07)); // distinct root seed
    for &t in tokens {
        h = super::vocab::mix(h ^ t as u64);
    }
    h
}

/// The pool of KV blocks of one engine.
#[derive(Debug)]
pub struct BlockPool {
    ref_cnt: Vec<u32>,
    hash: Vec<Option<u64>>,
    prev: Vec<u32>,
    next: Vec<u32>,
    head: u32,
    tail: u32,
    num_free: u32,
    cached: HashMap<u64, BlockId>,
    events: Option<Vec<KvEvent>>,
}

impl BlockPool {
    /// A pool of `n` free blocks; `events` records [`KvEvent`]s for [`Self::take_events`].
    pub fn new(n: u32, events: bool) -> Self {
        let mut p = BlockPool {
            ref_cnt: vec![0; n as usize],
            hash: vec![None; n as usize],
            prev: vec![NIL; n as usize],
            next: vec![NIL; n as usize],
            head: NIL,
            tail: NIL,
            num_free: 0,
            cached: HashMap::new(),
            events: events.then(Vec::new),
        };
        for b in 0..n {
            p.push_back(b);
        }
        p
    }

    /// Blocks in the pool.
    pub fn capacity(&self) -> u32 {
        self.ref_cnt.len() as u32
    }

    /// Blocks with no reference (free, cached or not): what allocation can use.
    pub fn num_free(&self) -> u32 {
        self.num_free
    }

    /// Fraction of blocks in use, as vLLM's `kv_cache_usage_perc`.
    pub fn usage(&self) -> f64 {
        if self.capacity() == 0 {
            return 0.0;
        }
        1.0 - self.num_free as f64 / self.capacity() as f64
    }

    /// The reference count of `b`.
    pub fn ref_count(&self, b: BlockId) -> u32 {
        self.ref_cnt[b as usize]
    }

    /// Hashes currently cached.
    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    /// The free blocks from head (evicted first) to tail.
    pub fn free_order(&self) -> Vec<BlockId> {
        let mut out = Vec::with_capacity(self.num_free as usize);
        let mut b = self.head;
        while b != NIL {
            out.push(b);
            b = self.next[b as usize];
        }
        out
    }

    /// The cached block holding `hash`, if any.
    pub fn lookup(&self, hash: u64) -> Option<BlockId> {
        self.cached.get(&hash).copied()
    }

    /// Takes a reference on a cached block found by [`Self::lookup`].
    pub fn touch(&mut self, b: BlockId) {
        if self.ref_cnt[b as usize] == 0 {
            self.unlink(b);
        }
        self.ref_cnt[b as usize] += 1;
    }

    /// Takes a free block (evicting its cached hash), or `None` when none is free.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let b = self.head;
        if b == NIL {
            return None;
        }
        self.unlink(b);
        if let Some(h) = self.hash[b as usize].take() {
            self.cached.remove(&h);
            if let Some(ev) = &mut self.events {
                ev.push(KvEvent::Removed { hashes: vec![h] });
            }
        }
        self.ref_cnt[b as usize] = 1;
        Some(b)
    }

    /// Drops one reference on each of `blocks`, last block first (so a sequence's tail
    /// is evicted before its prefix).
    pub fn free(&mut self, blocks: &[BlockId]) {
        for &b in blocks.iter().rev() {
            let rc = &mut self.ref_cnt[b as usize];
            debug_assert!(*rc > 0, "block {b} freed with no reference");
            *rc = rc.saturating_sub(1);
            if *rc == 0 {
                self.push_back(b);
            }
        }
    }

    /// Registers full block `b` (held by the caller) under `hash`; a no-op when another
    /// block already holds that hash. Returns whether `b` became cached.
    pub fn cache(&mut self, b: BlockId, hash: u64, parent: Option<u64>, tokens: &[u32]) -> bool {
        if self.hash[b as usize].is_some() || self.cached.contains_key(&hash) {
            return false;
        }
        self.hash[b as usize] = Some(hash);
        self.cached.insert(hash, b);
        if let Some(ev) = &mut self.events {
            match ev.last_mut() {
                Some(KvEvent::Stored {
                    hashes, tokens: t, ..
                }) if hashes.last() == parent.as_ref() => {
                    hashes.push(hash);
                    t.extend_from_slice(tokens);
                }
                _ => ev.push(KvEvent::Stored {
                    hashes: vec![hash],
                    parent,
                    tokens: tokens.to_vec(),
                }),
            }
        }
        true
    }

    /// Drops every cached hash of free blocks, as vLLM's `reset_prefix_cache`; refused
    /// (false) while any block is in use.
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.num_free != self.capacity() {
            return false;
        }
        self.cached.clear();
        self.hash.iter_mut().for_each(|h| *h = None);
        if let Some(ev) = &mut self.events {
            ev.push(KvEvent::AllCleared);
        }
        true
    }

    /// The events recorded since the last call.
    pub fn take_events(&mut self) -> Vec<KvEvent> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Whether events are waiting.
    pub fn has_events(&self) -> bool {
        self.events.as_ref().is_some_and(|e| !e.is_empty())
    }

    fn push_back(&mut self, b: BlockId) {
        self.prev[b as usize] = self.tail;
        self.next[b as usize] = NIL;
        if self.tail == NIL {
            self.head = b;
        } else {
            self.next[self.tail as usize] = b;
        }
        self.tail = b;
        self.num_free += 1;
    }

    fn unlink(&mut self, b: BlockId) {
        let (p, n) = (self.prev[b as usize], self.next[b as usize]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[b as usize] = NIL;
        self.next[b as usize] = NIL;
        self.num_free -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_free_and_lru_eviction_order() {
        let mut p = BlockPool::new(4, true);
        let a: Vec<_> = (0..3).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(a, vec![0, 1, 2]);
        assert_eq!(p.num_free(), 1);
        let h0 = block_hash(None, &[1, 2]);
        let h1 = block_hash(Some(h0), &[3, 4]);
        assert!(p.cache(0, h0, None, &[1, 2]));
        assert!(p.cache(1, h1, Some(h0), &[3, 4]));
        assert!(
            !p.cache(2, h1, Some(h0), &[3, 4]),
            "duplicate hash is not cached twice"
        );
        assert_eq!(
            p.take_events(),
            vec![KvEvent::Stored {
                hashes: vec![h0, h1],
                parent: None,
                tokens: vec![1, 2, 3, 4]
            }]
        );
        p.free(&a);
        // freed tail first: 2, then 1, then 0 — after the never-used block 3
        assert_eq!(p.free_order(), vec![3, 2, 1, 0]);
        // a prefix hit takes block 0 back out of the free queue
        assert_eq!(p.lookup(h0), Some(0));
        p.touch(0);
        assert_eq!(p.ref_count(0), 1);
        assert_eq!(p.free_order(), vec![3, 2, 1]);
        // allocation evicts in LRU order; evicting a cached block emits BlockRemoved
        assert_eq!(p.allocate(), Some(3));
        assert_eq!(p.allocate(), Some(2));
        assert!(p.take_events().is_empty(), "2 was never cached");
        assert_eq!(p.allocate(), Some(1));
        assert_eq!(p.take_events(), vec![KvEvent::Removed { hashes: vec![h1] }]);
        assert_eq!(p.lookup(h1), None);
        assert_eq!(p.allocate(), None);
        assert_eq!(p.usage(), 1.0);
    }

    #[test]
    fn reset_only_when_idle() {
        let mut p = BlockPool::new(2, true);
        let b = p.allocate().unwrap();
        p.cache(b, 7, None, &[1]);
        assert!(!p.reset_prefix_cache());
        p.free(&[b]);
        assert!(p.reset_prefix_cache());
        assert_eq!(p.lookup(7), None);
        assert_eq!(p.take_events().last(), Some(&KvEvent::AllCleared));
    }
}
