//! Open-addressing hash tables keyed by `u64`, for the index's two big maps: block hash →
//! workers (the block table), and each worker's engine id → block hash.
//!
//! Why not `std`'s / hashbrown's map: their control bytes and entries live in two
//! arrays, so a lookup in a table far larger than the caches costs two memory misses.
//! Here the entries themselves are grouped in cache lines (four 16-byte entries, or two
//! 32-byte ones, per 64-byte line) and a key belongs to one home line, so a lookup reads
//! one line in most cases. The home line is known before the lookup, so a batch can
//! [`prefetch`](FlatTable::prefetch) all its lines first and let the memory system fetch
//! them in parallel.
//!
//! Probing is linear over lines: a key sits in its home line or, when that line was full,
//! in a later one, with every line in between full. So a lookup stops at the first line
//! that holds the key or has a free slot, and a removal refills its hole from the lines
//! after it (backward shift, line by line, no tombstones), up to the first line that was
//! not full. Within a line, entries are unordered, and a line is compared whole, with no
//! branch on which slot matches (that branch would be mispredicted half the time).
//! Compared with probing slot by slot, a run never straddles a line boundary by
//! accident, and a removal does not walk the rest of a cluster.
//!
//! The home line is `key × lines / 2⁶⁴` (a multiply, not a mask), so the number of lines
//! need not be a power of two and the table grows by half rather than doubling. Keys
//! that may be small or sequential (engine ids) are first spread by one folded multiply;
//! block hashes are XXH3 outputs, already uniform, and are used as they are. Key 0 is
//! kept apart so that a zero key can mean "empty".

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

/// `N` entries in one 64-byte aligned cache line.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
pub(crate) struct Line<E, const N: usize>([E; N]);

impl<E: Default, const N: usize> Default for Line<E, N> {
    fn default() -> Self {
        Line(std::array::from_fn(|_| E::default()))
    }
}

/// The position of an entry, from [`FlatTable::find`]: line × N + slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos(usize);

/// The position of key 0's entry.
const ZERO: Pos = Pos(usize::MAX);

const MIN_LINES: usize = 2;

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

/// An open-addressing table of `E`s, `N` to a cache line (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct FlatTable<E, const N: usize> {
    /// The lines; an empty slot has key 0. Any number of lines (0 before the first
    /// insert).
    lines: Vec<Line<E, N>>,
    /// The entry of key 0, which cannot live in `lines`.
    zero: Option<E>,
    /// Entries in `lines`.
    len: usize,
}

impl<E, const N: usize> Default for FlatTable<E, N> {
    fn default() -> Self {
        FlatTable {
            lines: Vec::new(),
            zero: None,
            len: 0,
        }
    }
}

impl<E: Entry, const N: usize> FlatTable<E, N> {
    /// Entries, key 0's included.
    pub(crate) fn len(&self) -> usize {
        self.len + usize::from(self.zero.is_some())
    }

    /// Slots, empty ones included.
    pub(crate) fn capacity(&self) -> usize {
        self.lines.len() * N
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        let k = if E::MIX { mix(key) } else { key };
        ((u128::from(k) * self.lines.len() as u128) >> 64) as usize
    }

    #[inline]
    fn next(&self, line: usize) -> usize {
        if line + 1 == self.lines.len() {
            0
        } else {
            line + 1
        }
    }

    /// Lines from `from` forward to `to` (0 when equal), wrapping around.
    #[inline]
    fn distance(&self, from: usize, to: usize) -> usize {
        if from <= to {
            to - from
        } else {
            to + self.lines.len() - from
        }
    }

    /// Starts loading `key`'s home line (see [`prefetch`]).
    #[inline]
    pub(crate) fn prefetch(&self, key: u64) {
        if let Some(l) = self.lines.get(self.home(key)) {
            prefetch(l);
        }
    }

    /// Which slots of line `l` hold `key`, and which are empty, as bit masks. No
    /// branch depends on the keys: which slot matches is unpredictable, and a
    /// mispredicted branch costs more than comparing every slot of the line.
    #[inline]
    fn scan(&self, l: usize, key: u64) -> (u32, u32) {
        let (mut hit, mut empty) = (0u32, 0u32);
        for (s, e) in self.lines[l].0.iter().enumerate() {
            let k = e.key();
            hit |= u32::from(k == key) << s;
            empty |= u32::from(k == 0) << s;
        }
        (hit, empty)
    }

    /// Looks at `key`'s home line, which an earlier [`prefetch`](Self::prefetch) started
    /// loading: returns the key's entry if it is there. If the line is full without it,
    /// starts loading the next line, which the lookup, insert or removal of `key` will
    /// then read. Changes nothing; a stale answer only costs a miss.
    #[inline]
    pub(crate) fn prefetch_run(&self, key: u64) -> Option<&E> {
        if self.lines.is_empty() || key == 0 {
            return None;
        }
        let l = self.home(key);
        let (hit, empty) = self.scan(l, key);
        if hit != 0 {
            return Some(&self.lines[l].0[hit.trailing_zeros() as usize]);
        }
        if empty == 0 {
            prefetch(&self.lines[self.next(l)]);
        }
        None
    }

    /// Where `key` is: `Ok(position)`, or `Err(first free slot of its probe run)`.
    /// Needs at least one line.
    #[inline]
    fn probe(&self, key: u64) -> Result<Pos, Pos> {
        debug_assert!(key != 0 && !self.lines.is_empty());
        let mut l = self.home(key);
        loop {
            let (hit, empty) = self.scan(l, key);
            if hit != 0 {
                return Ok(Pos(l * N + hit.trailing_zeros() as usize));
            }
            if empty != 0 {
                return Err(Pos(l * N + empty.trailing_zeros() as usize));
            }
            // The table is never full (load ≤ MAX_LOAD_16THS < 16), so some line has a
            // free slot and the walk ends.
            l = self.next(l);
        }
    }

    /// The position of `key`'s entry, if any.
    #[inline]
    pub(crate) fn find(&self, key: u64) -> Option<Pos> {
        if key == 0 {
            return self.zero.as_ref().map(|_| ZERO);
        }
        if self.lines.is_empty() {
            return None;
        }
        self.probe(key).ok()
    }

    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<&E> {
        let p = self.find(key)?;
        Some(self.at(p))
    }

    #[inline]
    fn slot(&self, p: Pos) -> &E {
        &self.lines[p.0 / N].0[p.0 % N]
    }

    #[inline]
    fn slot_mut(&mut self, p: Pos) -> &mut E {
        &mut self.lines[p.0 / N].0[p.0 % N]
    }

    /// The entry at `p` (from [`find`](Self::find), with no change since).
    #[inline]
    pub(crate) fn at(&self, p: Pos) -> &E {
        if p == ZERO {
            self.zero.as_ref().expect("key 0 present")
        } else {
            self.slot(p)
        }
    }

    /// The entry at `p`, mutable; its key must not change.
    #[inline]
    pub(crate) fn at_mut(&mut self, p: Pos) -> &mut E {
        if p == ZERO {
            self.zero.as_mut().expect("key 0 present")
        } else {
            self.slot_mut(p)
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
        match self.probe(key) {
            Ok(p) => (self.slot_mut(p), false),
            Err(p) => {
                let e = self.slot_mut(p);
                *e = make(key);
                debug_assert_eq!(e.key(), key, "`make` must set the key");
                self.len += 1;
                (self.slot_mut(p), true)
            }
        }
    }

    /// Removes the entry at `p` (from [`find`](Self::find), with no change since).
    pub(crate) fn remove_at(&mut self, p: Pos) -> E {
        if p == ZERO {
            return self.zero.take().expect("key 0 present");
        }
        let entry = std::mem::take(self.slot_mut(p));
        self.len -= 1;
        // Refill the hole: an entry of a later line whose home is at or before the
        // hole's line may only sit there because that line was full. Move one such
        // entry into the hole, and refill its place the same way. Past a line that was
        // not full, no entry can depend on the lines before it.
        let mut hole = p;
        let mut line = p.0 / N;
        if self.scan(line, 0).1.count_ones() > 1 {
            // The line was not full: no entry of a later line depends on it.
            return entry;
        }
        loop {
            line = self.next(line);
            let hole_line = hole.0 / N;
            debug_assert!(line != hole_line, "a table always has a free slot");
            let to_hole = self.distance(hole_line, line);
            let mut open = false;
            let mut mover = None;
            for (s, e) in self.lines[line].0.iter().enumerate() {
                let k = e.key();
                if k == 0 {
                    open = true;
                } else if mover.is_none() && self.distance(self.home(k), line) >= to_hole {
                    mover = Some(s);
                }
            }
            if let Some(s) = mover {
                let from = Pos(line * N + s);
                let moved = std::mem::take(self.slot_mut(from));
                *self.slot_mut(hole) = moved;
                hole = from;
            }
            if open {
                return entry;
            }
        }
    }

    /// Makes room for `additional` more entries without exceeding the maximum load.
    #[inline]
    pub(crate) fn reserve(&mut self, additional: usize) {
        let need = self.len + additional;
        if need * 16 > self.capacity() * E::MAX_LOAD_16THS {
            self.grow(need);
        }
    }

    #[cold]
    fn grow(&mut self, need: usize) {
        // Grow by half (and to at least the needed size), not by doubling: a table that
        // stops growing then sits between 2/3 of the maximum load and the maximum.
        let lines = (need * 16 / E::MAX_LOAD_16THS / N + 1)
            .max(self.lines.len() + self.lines.len() / 2)
            .max(MIN_LINES);
        self.rehash(lines);
    }

    fn rehash(&mut self, lines: usize) {
        let mut fresh: Vec<Line<E, N>> = Vec::with_capacity(lines);
        fresh.resize_with(lines, Line::default);
        let old = std::mem::replace(&mut self.lines, fresh);
        for e in old.into_iter().flat_map(|l| l.0) {
            let k = e.key();
            if k == 0 {
                continue;
            }
            match self.probe(k) {
                Err(p) => *self.slot_mut(p) = e,
                Ok(_) => unreachable!("keys are distinct"),
            }
        }
    }

    /// Checks the probing invariant: every entry sits in its home line or after a run of
    /// full lines that starts there. Panics naming the first entry that does not.
    #[cfg(test)]
    pub(crate) fn check_invariant(&self) {
        let full = |l: usize| self.lines[l].0.iter().all(|e| e.key() != 0);
        for (c, line) in self.lines.iter().enumerate() {
            for e in line.0.iter().filter(|e| e.key() != 0) {
                let mut l = self.home(e.key());
                while l != c {
                    assert!(
                        full(l),
                        "key {:#x} in line {c}: line {l} before it is not full",
                        e.key()
                    );
                    l = self.next(l);
                }
            }
        }
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &E> + '_ {
        self.zero.iter().chain(
            self.lines
                .iter()
                .flat_map(|l| l.0.iter())
                .filter(|e| e.key() != 0),
        )
    }

    /// Removes every entry, giving each to `f`; keeps the allocation.
    pub(crate) fn drain_with(&mut self, mut f: impl FnMut(E)) {
        if let Some(e) = self.zero.take() {
            f(e);
        }
        if self.len > 0 {
            for e in self.lines.iter_mut().flat_map(|l| l.0.iter_mut()) {
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
    // Up to 1/2 full, between 1/3 and 1/2 once grown: 5–15 % of the lines of four are
    // then full (Poisson estimate), against over a third at 3/4, so nearly every
    // lookup, insert and removal reads one line (see the block table's load).
    const MAX_LOAD_16THS: usize = 8;
    #[inline]
    fn key(&self) -> u64 {
        self.key
    }
}

/// A `u64 → u64` map (a worker's engine id → block hash).
pub(crate) type FlatMap = FlatTable<Pair, 4>;

impl FlatMap {
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
    fn lines_are_cache_lines() {
        assert_eq!(std::mem::size_of::<Line<Pair, 4>>(), 64);
        assert_eq!(std::mem::align_of::<Line<Pair, 4>>(), 64);
        assert_eq!(std::mem::size_of::<Line<Raw, 4>>(), 64);
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
                m.check_invariant();
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
            let mut m: FlatTable<Raw, 4> = FlatTable::default();
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
                m.check_invariant();
            }
            for (k, v) in &r {
                prop_assert_eq!(m.get(*k).map(|e| e.value), Some(*v));
            }
        }
    }
}
