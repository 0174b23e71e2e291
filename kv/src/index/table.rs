//! The shared core of both indexers: block hash → set of worker slots, and the matcher.
//!
//! Because block hashes are chained, a block hash names a whole prefix, so the radix
//! tree over token blocks collapses into one flat table: the children of a node are just
//! the entries whose hash chains from it. `find_matches` walks the query's hashes in
//! order, intersecting the set of workers still matching with each block's holders,
//! and stops as soon as no worker is left.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::flat::{Entry, FlatTable};
use super::worker_set::{bit, iter_bits, set_bit, View, WorkerSet, LIST_MAX};
use crate::hash::BlockHash;

/// A hasher for keys that are already 64-bit hashes or engine ids: one folded multiply,
/// which spreads even sequential ids over both the low (bucket) and high (tag) bits.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        let m = u128::from(self.0) * 0x9e37_79b9_7f4a_7c15_u128;
        (m as u64) ^ ((m >> 64) as u64)
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with this hasher; keep a correct fallback anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A `HashMap` keyed by a 64-bit hash or id (for the small maps: workers by id, aliases).
pub(crate) type U64Map<K, V> = HashMap<K, V, BuildHasherDefault<U64Hasher>>;

/// Per-query scratch space, reused across calls so a query does not allocate.
#[derive(Debug, Default, Clone)]
pub struct MatchScratch {
    list: Vec<u32>,
    next_list: Vec<u32>,
    words: Vec<u64>,
    pub(crate) out: Vec<(u32, u32)>,
}

/// A block-table entry: a block hash and the workers holding it. 32 bytes, aligned so
/// that it never straddles a cache line: a lookup that finds its key in its home slot
/// costs one memory access.
#[derive(Debug, Default)]
#[repr(C, align(32))]
struct Node {
    hash: u64,
    set: WorkerSet,
}

impl Entry for Node {
    // XXH3 outputs: uniform already.
    const MIX: bool = false;
    // Up to 1/2 full, between 1/3 and 1/2 once grown. With two entries to a line,
    // 15–25 % of the lines are then full (Poisson estimate), against over 40 % at 3/4,
    // and a probe that meets a full line reads a second one. Applying events is about
    // 1.4× faster than at 3/4 for this and the worker maps' lower load together, for
    // half as much memory again (docs/kv.md).
    const MAX_LOAD_16THS: usize = 8;
    #[inline]
    fn key(&self) -> u64 {
        self.hash
    }
}

/// How many blocks ahead `find_matches` starts loading an entry, and the heap part of
/// its set of workers (once the entry is there): enough to cover a memory access's
/// latency with the work of the blocks in between.
const AHEAD: usize = 32;
const HOLDERS_AHEAD: usize = 12;

/// Block hash → workers holding it: an open-addressing table of 32-byte entries (see
/// [`super::flat`]).
#[derive(Debug, Default)]
pub(crate) struct BlockTable {
    nodes: FlatTable<Node, 2>,
}

impl BlockTable {
    /// Records that `slot` holds `hash`; false if it already did.
    #[inline]
    pub(crate) fn add(&mut self, hash: BlockHash, slot: u32) -> bool {
        let (node, created) = self.nodes.get_or_insert_with(hash.0, |hash| Node {
            hash,
            set: WorkerSet::single(slot),
        });
        created || node.set.insert(slot)
    }

    /// Records that `slot` no longer holds `hash`; false if it did not.
    #[inline]
    pub(crate) fn remove(&mut self, hash: BlockHash, slot: u32) -> bool {
        let Some(p) = self.nodes.find(hash.0) else {
            return false;
        };
        let node = self.nodes.at_mut(p);
        let removed = node.set.remove(slot);
        if node.set.is_empty() {
            self.nodes.remove_at(p);
        }
        removed
    }

    /// Starts loading `hash`'s entry: called for a batch of hashes before using them, it
    /// lets their cache misses overlap.
    #[inline]
    pub(crate) fn prefetch(&self, hash: BlockHash) {
        self.nodes.prefetch(hash.0);
    }

    /// After [`prefetch`](Self::prefetch), once the entry's line has arrived: starts
    /// loading what a change to `hash` will read next, the heap part of its set, or
    /// the next line when `hash` is not in its full home line (see
    /// [`FlatTable::prefetch_run`]).
    #[inline]
    pub(crate) fn prefetch_run(&self, hash: BlockHash) {
        if let Some(node) = self.nodes.prefetch_run(hash.0) {
            node.set.prefetch_heap();
        }
    }

    #[inline]
    fn get(&self, hash: BlockHash) -> Option<&WorkerSet> {
        self.nodes.get(hash.0).map(|n| &n.set)
    }

    /// Distinct blocks held by at least one worker.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Fills `scratch.out` with `(slot, leading blocks held)` for every slot holding at
    /// least the first block of `hashes`.
    pub(crate) fn find_matches(&self, hashes: &[BlockHash], scratch: &mut MatchScratch) {
        scratch.out.clear();
        // The lookups are independent: start loading the first blocks' entries now, and
        // each later one `AHEAD` blocks before it is needed, so the memory accesses
        // overlap (the table is far larger than the caches) instead of paying one memory
        // latency per block. At most `AHEAD` entries are loaded in vain.
        for h in hashes.iter().take(AHEAD) {
            self.prefetch(*h);
        }
        for h in hashes.iter().take(HOLDERS_AHEAD) {
            self.prefetch_run(*h);
        }
        let Some(set) = hashes.first().and_then(|h| self.get(*h)) else {
            return;
        };
        // Two representations of the workers still matching: a short list (the common
        // case, cheap to filter) or a bitset (when hundreds share a prefix, so that each
        // further block costs one AND per 64 workers rather than one probe per worker).
        let mut bits_mode = false;
        scratch.list.clear();
        scratch.words.clear();
        match set.view() {
            View::Small(ids) => scratch.list.extend(ids.iter().map(|&s| u32::from(s))),
            View::List(ids) => scratch.list.extend_from_slice(ids),
            View::Bits(words) => {
                scratch.words.extend_from_slice(words);
                bits_mode = true;
            }
        }
        if !bits_mode {
            let max = scratch.list.iter().copied().max().unwrap_or(0);
            scratch.words.resize(max as usize / 64 + 1, 0);
            for &s in &scratch.list {
                set_bit(&mut scratch.words, s);
            }
        }
        for (i, h) in hashes.iter().enumerate().skip(1) {
            if let Some(ahead) = hashes.get(i + AHEAD) {
                self.prefetch(*ahead);
            }
            if let Some(ahead) = hashes.get(i + HOLDERS_AHEAD) {
                self.prefetch_run(*ahead);
            }
            let depth = i as u32;
            let Some(set) = self.get(*h) else {
                return flush(scratch, bits_mode, depth);
            };
            if bits_mode {
                bits_mode = step_bits(scratch, set, depth);
                if bits_mode && scratch.words.is_empty() {
                    return;
                }
            } else {
                step_list(scratch, set, depth);
                if scratch.list.is_empty() {
                    return;
                }
            }
        }
        flush(scratch, bits_mode, hashes.len() as u32);
    }
}

/// Emits every still-matching slot with `depth`.
fn flush(scratch: &mut MatchScratch, bits_mode: bool, depth: u32) {
    if bits_mode {
        scratch
            .out
            .extend(iter_bits(&scratch.words).map(|s| (s, depth)));
    } else {
        scratch.out.extend(scratch.list.iter().map(|&s| (s, depth)));
    }
}

/// One block in list mode: keep the slots `set` holds, emit the others at `depth`.
///
/// In list mode `scratch.words` mirrors `scratch.list` as a bitset, so that when both
/// the list and the block's set are long (a prefix shared by a few dozen workers), the
/// intersection costs one bit test per member of the set rather than one scan of the
/// set per listed slot. A block that every listed slot holds, the common case along a
/// shared prefix, then changes nothing.
#[inline]
fn step_list(scratch: &mut MatchScratch, set: &WorkerSet, depth: u32) {
    let survivors = &mut scratch.next_list;
    survivors.clear();
    match set.view() {
        View::Small(ids) => survivors.extend(
            ids.iter()
                .map(|&s| u32::from(s))
                .filter(|&s| bit(&scratch.words, s)),
        ),
        View::List(ids) => {
            survivors.extend(ids.iter().copied().filter(|&s| bit(&scratch.words, s)))
        }
        View::Bits(_) => {
            survivors.extend(scratch.list.iter().copied().filter(|&s| set.contains(s)))
        }
    }
    if survivors.len() == scratch.list.len() {
        return;
    }
    // Emit and unmark the slots that are not survivors: unmark the survivors first, so
    // that the bits left among the listed slots are exactly the dropped ones.
    for &s in survivors.iter() {
        clear_bit(&mut scratch.words, s);
    }
    for &s in &scratch.list {
        if bit(&scratch.words, s) {
            scratch.out.push((s, depth));
            clear_bit(&mut scratch.words, s);
        }
    }
    for &s in survivors.iter() {
        set_bit(&mut scratch.words, s);
    }
    std::mem::swap(&mut scratch.list, &mut scratch.next_list);
}

#[inline]
fn clear_bit(words: &mut [u64], slot: u32) {
    words[slot as usize / 64] &= !(1u64 << (slot % 64));
}

/// One block in bitset mode; returns whether to stay in bitset mode. Empties
/// `scratch.words` when no slot is left.
fn step_bits(scratch: &mut MatchScratch, set: &WorkerSet, depth: u32) -> bool {
    let ids: &mut dyn Iterator<Item = u32> = match set.view() {
        View::Bits(words) => {
            let mut remaining = 0u32;
            for (i, w) in scratch.words.iter_mut().enumerate() {
                let keep = words.get(i).copied().unwrap_or(0);
                let mut dropped = *w & !keep;
                while dropped != 0 {
                    scratch
                        .out
                        .push((i as u32 * 64 + dropped.trailing_zeros(), depth));
                    dropped &= dropped - 1;
                }
                *w &= keep;
                remaining += w.count_ones();
            }
            if remaining == 0 {
                scratch.words.clear();
            } else if remaining as usize <= LIST_MAX {
                scratch.list.clear();
                scratch.list.extend(iter_bits(&scratch.words));
                return false;
            }
            return true;
        }
        View::Small(ids) => &mut ids.iter().map(|&s| u32::from(s)),
        View::List(ids) => &mut ids.iter().copied(),
    };
    // At most LIST_MAX survivors: they are `ids` ∩ active.
    scratch.next_list.clear();
    for s in ids {
        if bit(&scratch.words, s) {
            scratch.next_list.push(s);
            clear_bit(&mut scratch.words, s);
        }
    }
    // What is left in the bitset dropped out at this block.
    scratch
        .out
        .extend(iter_bits(&scratch.words).map(|s| (s, depth)));
    std::mem::swap(&mut scratch.list, &mut scratch.next_list);
    if scratch.list.is_empty() {
        scratch.words.clear();
        return true;
    }
    // List mode from here: the bitset mirrors the list.
    scratch.words.fill(0);
    for &s in &scratch.list {
        set_bit(&mut scratch.words, s);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]

        /// The matcher against brute force over a chain of blocks with arbitrary holder
        /// sets, from none to hundreds of workers: every transition between list and
        /// bitset mode.
        #[test]
        fn matcher_equals_brute_force(
            holders in prop::collection::vec(
                prop_oneof![
                    1 => Just(None),
                    6 => (0.0f64..1.0).prop_flat_map(|density| {
                        prop::collection::vec(prop::bool::weighted(density), 0..200)
                    }).prop_map(Some),
                ],
                1..8,
            ),
        ) {
            let mut table = BlockTable::default();
            let hashes: Vec<BlockHash> = (0..holders.len() as u64).map(|i| BlockHash(i * 7919 + 1)).collect();
            for (h, set) in hashes.iter().zip(&holders) {
                for (slot, held) in set.iter().flatten().enumerate() {
                    if *held {
                        table.add(*h, slot as u32);
                    }
                }
            }
            let mut want = BTreeMap::new();
            for slot in 0..200usize {
                let n = holders
                    .iter()
                    .take_while(|s| s.as_ref().is_some_and(|s| s.get(slot).copied().unwrap_or(false)))
                    .count();
                if n > 0 {
                    want.insert(slot as u32, n as u32);
                }
            }
            let mut scratch = MatchScratch::default();
            table.find_matches(&hashes, &mut scratch);
            let got: BTreeMap<u32, u32> = scratch.out.iter().copied().collect();
            prop_assert_eq!(scratch.out.len(), got.len(), "a slot reported twice");
            prop_assert_eq!(got, want);
        }
    }
}
