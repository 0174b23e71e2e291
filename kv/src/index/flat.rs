//! Open-addressing hash tables keyed by `u64`, for the index's two big maps: block hash →
//! workers (the block table), and each worker's engine id → block hash.
//!
//! Why not `std`'s / hashbrown's map: their control bytes and entries live in two
//! arrays, so a lookup in a table far larger than the caches costs two memory misses.
//! Here the key and its value sit side by side in one entry that never straddles a cache
//! line (linear probing: one miss for most lookups), and the home slot of a key is known
//! before the lookup, so a batch can [`prefetch`](FlatTable::prefetch) all its slots
//! first and let the memory system fetch them in parallel.
//!
//! The home slot is `key × capacity / 2⁶⁴` (a multiply, not a mask), so the capacity
//! need not be a power of two and the table grows by half rather than doubling. Keys
//! that may be small or sequential (engine ids) are first spread by one folded multiply;
//! block hashes are XXH3 outputs, already uniform, and are used as they are. Key 0 is
//! kept apart so that a zero key can mean "empty". Deletion shifts the following
//! entries back (no tombstones), so probe lengths stay those of the load.

/// An entry of a [`FlatTable`]: its key, and whether keys need mixing.
pub(crate) trait Entry: Default {
    /// Spread keys with a multiply before placing them: for keys that may be small or
    /// sequential. Not needed for keys that are already uniform hashes.
    const MIX: bool;
    /// Largest load before growing, in 1/16ths.
    const MAX_LOAD_16THS: usize;
    /// The entry's key; 0 in an empty slot.
    fn key(&self) -> u64;
}

/// The position of an entry, from [`FlatTable::find`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos(usize);

/// The position of key 0's entry.
const ZERO: Pos = Pos(usize::MAX);

const MIN_CAPACITY: usize = 8;

/// Hints the CPU to load the cache line at `p`. Used before a batch of independent
/// lookups, so that their memory misses overlap instead of coming one after another.
/// (A plain load would do the same but hold up the instructions after it until the data
/// arrives; a prefetch retires at once.)
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is only a hint: it reads nothing into the program, writes
    // nothing, and never faults, whatever the address (even a dangling one).
    #[allow(unsafe_code)]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[inline]
fn mix(key: u64) -> u64 {
    let m = u128::from(key) * 0x9e37_79b9_7f4a_7c15_u128;
    (m as u64) ^ ((m >> 64) as u64)
}

/// An open-addressing table of `E`s (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct FlatTable<E> {
    /// Entries; an empty slot has key 0. Any length (0 before the first insert).
    slots: Vec<E>,
    /// The entry of key 0, which cannot live in `slots`.
    zero: Option<E>,
    /// Entries in `slots`.
    len: usize,
}

impl<E> Default for FlatTable<E> {
    fn default() -> Self {
        FlatTable {
            slots: Vec::new(),
            zero: None,
            len: 0,
        }
    }
}

impl<E: Entry> FlatTable<E> {
    /// Entries, key 0's included.
    pub(crate) fn len(&self) -> usize {
        self.len + usize::from(self.zero.is_some())
    }

    /// Slots, empty ones included.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        let k = if E::MIX { mix(key) } else { key };
        ((u128::from(k) * self.slots.len() as u128) >> 64) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// Starts loading `key`'s home slot (see [`prefetch`]).
    #[inline]
    pub(crate) fn prefetch(&self, key: u64) {
        if let Some(s) = self.slots.get(self.home(key)) {
            prefetch(s);
        }
    }

    /// The position of `key`'s entry, if any.
    #[inline]
    pub(crate) fn find(&self, key: u64) -> Option<Pos> {
        if key == 0 {
            return self.zero.as_ref().map(|_| ZERO);
        }
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.home(key);
        loop {
            let k = self.slots[i].key();
            if k == key {
                return Some(Pos(i));
            }
            if k == 0 {
                return None;
            }
            i = self.next(i);
        }
    }

    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<&E> {
        let p = self.find(key)?;
        Some(self.at(p))
    }

    /// The entry at `p` (from [`find`](Self::find), with no change since).
    #[inline]
    pub(crate) fn at(&self, p: Pos) -> &E {
        if p == ZERO {
            self.zero.as_ref().expect("key 0 present")
        } else {
            &self.slots[p.0]
        }
    }

    /// The entry at `p`, mutable; its key must not change.
    #[inline]
    pub(crate) fn at_mut(&mut self, p: Pos) -> &mut E {
        if p == ZERO {
            self.zero.as_mut().expect("key 0 present")
        } else {
            &mut self.slots[p.0]
        }
    }

    /// The entry of `key`, created by `make(key)` if absent; and whether it was created.
    #[inline]
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: u64,
        make: impl FnOnce(u64) -> E,
    ) -> (&mut E, bool) {
        if key == 0 {
            let inserted = self.zero.is_none();
            return (self.zero.get_or_insert_with(|| make(0)), inserted);
        }
        self.reserve(1);
        let mut i = self.home(key);
        loop {
            let k = self.slots[i].key();
            if k == key {
                return (&mut self.slots[i], false);
            }
            if k == 0 {
                self.slots[i] = make(key);
                debug_assert_eq!(self.slots[i].key(), key, "`make` must set the key");
                self.len += 1;
                return (&mut self.slots[i], true);
            }
            i = self.next(i);
        }
    }

    /// Removes the entry at `p` (from [`find`](Self::find), with no change since).
    pub(crate) fn remove_at(&mut self, p: Pos) -> E {
        if p == ZERO {
            return self.zero.take().expect("key 0 present");
        }
        // Backward-shift deletion: move into the hole every following entry (up to the
        // next empty slot) that may not sit after it, i.e. whose home is not in (hole, j].
        let mut hole = p.0;
        let entry = std::mem::take(&mut self.slots[hole]);
        self.len -= 1;
        let mut j = hole;
        loop {
            j = self.next(j);
            let k = self.slots[j].key();
            if k == 0 {
                return entry;
            }
            let home = self.home(k);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots.swap(hole, j);
                hole = j;
            }
        }
    }

    /// Makes room for `additional` more entries without exceeding the maximum load.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let need = self.len + additional;
        if need * 16 <= self.slots.len() * E::MAX_LOAD_16THS {
            return;
        }
        // Grow by half (and to at least the needed size), not by doubling: a table that
        // stops growing then sits between 2/3 of the maximum load and the maximum.
        let cap = (need * 16 / E::MAX_LOAD_16THS + 1)
            .max(self.slots.len() + self.slots.len() / 2)
            .max(MIN_CAPACITY);
        self.rehash(cap);
    }

    fn rehash(&mut self, cap: usize) {
        let mut fresh: Vec<E> = Vec::with_capacity(cap);
        fresh.resize_with(cap, E::default);
        let old = std::mem::replace(&mut self.slots, fresh);
        for e in old {
            let k = e.key();
            if k == 0 {
                continue;
            }
            let mut i = self.home(k);
            while self.slots[i].key() != 0 {
                i = self.next(i);
            }
            self.slots[i] = e;
        }
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &E> + '_ {
        self.zero
            .iter()
            .chain(self.slots.iter().filter(|e| e.key() != 0))
    }

    /// Removes every entry, giving each to `f`; keeps the allocation.
    pub(crate) fn drain_with(&mut self, mut f: impl FnMut(E)) {
        if let Some(e) = self.zero.take() {
            f(e);
        }
        if self.len > 0 {
            for e in &mut self.slots {
                if e.key() != 0 {
                    f(std::mem::take(e));
                }
            }
        }
        self.len = 0;
    }
}

/// An entry of a `u64 → u64` map. 16 bytes, aligned so that it never straddles a cache
/// line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, align(16))]
pub(crate) struct Pair {
    pub(crate) key: u64,
    pub(crate) value: u64,
}

impl Entry for Pair {
    const MIX: bool = true;
    // Up to 3/4 full: an insert's (unsuccessful) probe is then about 8.5 slots at the
    // worst, 2.5 at half load, within one to three cache lines of four entries.
    const MAX_LOAD_16THS: usize = 12;
    #[inline]
    fn key(&self) -> u64 {
        self.key
    }
}

/// A `u64 → u64` map (a worker's engine id → block hash).
pub(crate) type FlatMap = FlatTable<Pair>;

impl FlatTable<Pair> {
    #[inline]
    pub(crate) fn get_value(&self, key: u64) -> Option<u64> {
        self.get(key).map(|p| p.value)
    }

    /// Inserts `key → value`; returns the previous value.
    #[inline]
    pub(crate) fn insert(&mut self, key: u64, value: u64) -> Option<u64> {
        let (e, inserted) = self.get_or_insert_with(key, |key| Pair { key, value });
        if inserted {
            None
        } else {
            Some(std::mem::replace(&mut e.value, value))
        }
    }

    /// Removes `key`; returns its value.
    #[inline]
    pub(crate) fn remove(&mut self, key: u64) -> Option<u64> {
        let p = self.find(key)?;
        Some(self.remove_at(p).value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// An entry with unmixed keys, to exercise that path (and clustering: small keys all
    /// have home slot 0).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    struct Raw {
        key: u64,
        value: u64,
    }

    impl Entry for Raw {
        const MIX: bool = false;
        const MAX_LOAD_16THS: usize = 14;
        fn key(&self) -> u64 {
            self.key
        }
    }

    #[test]
    fn pair_is_sixteen_aligned_bytes() {
        assert_eq!(std::mem::size_of::<Pair>(), 16);
        assert_eq!(std::mem::align_of::<Pair>(), 16);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Behaves like `HashMap` through inserts, removals (with back-shifts across
        /// the wrap-around) and growth, including key 0 and colliding small keys.
        #[test]
        fn matches_hashmap(ops in prop::collection::vec((0u8..4, 0u64..300), 0..1500)) {
            let mut m = FlatMap::default();
            let mut r: HashMap<u64, u64> = HashMap::new();
            for (n, (op, k)) in ops.into_iter().enumerate() {
                match op {
                    0 | 1 => prop_assert_eq!(m.insert(k, n as u64), r.insert(k, n as u64)),
                    2 => prop_assert_eq!(m.remove(k), r.remove(&k)),
                    _ => prop_assert_eq!(m.get_value(k), r.get(&k).copied()),
                }
                prop_assert_eq!(m.len(), r.len());
                prop_assert!(m.len * 16 <= m.capacity() * Pair::MAX_LOAD_16THS);
            }
            for k in 0..64 {
                prop_assert_eq!(m.get_value(k), r.get(&k).copied());
            }
            let mut all: Vec<(u64, u64)> = m.iter().map(|p| (p.key, p.value)).collect();
            all.sort_unstable();
            let mut want: Vec<(u64, u64)> = r.into_iter().collect();
            want.sort_unstable();
            prop_assert_eq!(&all, &want);
            let mut drained = Vec::new();
            m.drain_with(|p| drained.push((p.key, p.value)));
            drained.sort_unstable();
            prop_assert_eq!(drained, want);
            prop_assert_eq!(m.len(), 0);
        }

        /// The same with unmixed keys: spread ones (as block hashes are) and clustered
        /// ones (long probe runs that wrap around).
        #[test]
        fn unmixed_matches_hashmap(
            ops in prop::collection::vec((0u8..3, 0u64..200, any::<bool>()), 0..1000),
        ) {
            let mut m: FlatTable<Raw> = FlatTable::default();
            let mut r: HashMap<u64, u64> = HashMap::new();
            for (n, (op, k, spread)) in ops.into_iter().enumerate() {
                let key = if spread { k.wrapping_mul(0x9e37_79b9_7f4a_7c15) } else { k };
                match op {
                    0 => {
                        let (e, inserted) = m.get_or_insert_with(key, |key| Raw { key, value: 0 });
                        let old = (!inserted).then_some(e.value);
                        e.value = n as u64;
                        prop_assert_eq!(old, r.insert(key, n as u64));
                    }
                    1 => {
                        let got = m.find(key).map(|p| m.remove_at(p).value);
                        prop_assert_eq!(got, r.remove(&key));
                    }
                    _ => prop_assert_eq!(m.get(key).map(|e| e.value), r.get(&key).copied()),
                }
                prop_assert_eq!(m.len(), r.len());
            }
            for (k, v) in &r {
                prop_assert_eq!(m.get(*k).map(|e| e.value), Some(*v));
            }
        }
    }
}
