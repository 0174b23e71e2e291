//! The set of workers (by dense slot number) holding one block, sized to its population:
//! most blocks are held by a few workers, a shared system prompt by hundreds.
//!
//! 24 bytes, so that a block-table entry (hash + set) is 32 bytes, two per cache line.
//! Up to 11 slots below 65,536 fit inline as `u16`s: in the Mooncake replay over 1,000
//! workers that covers 98 % of the blocks and about 90 % of the (worker, block) entries,
//! so that most updates and lookups touch one cache line and allocate nothing.

/// Slots stored inline (as `u16`) before spilling to the heap.
const INLINE: usize = 11;
/// A heap list shrinks back inline at this size (hysteresis: not at `INLINE`, so that a
/// set hovering at the threshold does not convert on every change).
const INLINE_AGAIN: usize = 6;
/// Largest unsorted list before switching to a bitset (a bitset over 1,000 workers is
/// 128 bytes, the size of a 32-entry list).
pub(crate) const LIST_MAX: usize = 32;
/// A bitset shrinks back to a list at this count.
const LIST_AGAIN: usize = LIST_MAX / 2;

/// Where `s` is among the first `len` of `ids`. No branch depends on the ids: which one
/// matches is unpredictable, and comparing all eleven costs less than a mispredicted
/// branch.
#[inline]
fn small_position(ids: &[u16; INLINE], len: usize, s: u16) -> Option<usize> {
    let mut m = 0u32;
    for (i, &x) in ids.iter().enumerate() {
        m |= u32::from(x == s) << i;
    }
    m &= (1u32 << len) - 1;
    (m != 0).then(|| m.trailing_zeros() as usize)
}

/// A set of worker slots. 24 bytes.
#[derive(Debug, Clone)]
pub(crate) enum WorkerSet {
    /// `ids[..len]`, unsorted; every slot below 65,536.
    Small { len: u8, ids: [u16; INLINE] },
    /// `ids[..len]`, unsorted, `len <= LIST_MAX`; the rest of `ids` is spare capacity.
    List { len: u32, ids: Box<[u32]> },
    /// One bit per slot; `count` bits set.
    Bits { count: u32, words: Box<[u64]> },
}

/// A read-only view used by the matcher.
pub(crate) enum View<'a> {
    Small(&'a [u16]),
    List(&'a [u32]),
    Bits(&'a [u64]),
}

impl Default for WorkerSet {
    /// The empty set (as a placeholder in empty table slots).
    fn default() -> Self {
        WorkerSet::Small {
            len: 0,
            ids: [0; INLINE],
        }
    }
}

impl WorkerSet {
    pub(crate) fn single(slot: u32) -> Self {
        let mut s = WorkerSet::default();
        s.insert(slot);
        s
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            WorkerSet::Small { len, .. } => *len as usize,
            WorkerSet::List { len, .. } => *len as usize,
            WorkerSet::Bits { count, .. } => *count as usize,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub(crate) fn view(&self) -> View<'_> {
        match self {
            WorkerSet::Small { len, ids } => View::Small(&ids[..*len as usize]),
            WorkerSet::List { len, ids } => View::List(&ids[..*len as usize]),
            WorkerSet::Bits { words, .. } => View::Bits(words),
        }
    }

    /// Starts loading the heap part of a large set, if any (see [`super::flat::prefetch`]).
    #[inline]
    pub(crate) fn prefetch_heap(&self) {
        match self {
            WorkerSet::Small { .. } => {}
            WorkerSet::List { ids, .. } => super::flat::prefetch(ids.as_ptr()),
            WorkerSet::Bits { words, .. } => super::flat::prefetch(words.as_ptr()),
        }
    }

    #[inline]
    pub(crate) fn contains(&self, slot: u32) -> bool {
        match self {
            WorkerSet::Small { len, ids } => {
                u16::try_from(slot).is_ok_and(|s| small_position(ids, *len as usize, s).is_some())
            }
            WorkerSet::List { len, ids } => ids[..*len as usize].contains(&slot),
            WorkerSet::Bits { words, .. } => bit(words, slot),
        }
    }

    /// Adds `slot`; false if it was already there.
    pub(crate) fn insert(&mut self, slot: u32) -> bool {
        if self.contains(slot) {
            return false;
        }
        match self {
            WorkerSet::Small { len, ids } => {
                let n = *len as usize;
                match u16::try_from(slot) {
                    Ok(s) if n < INLINE => {
                        ids[n] = s;
                        *len += 1;
                    }
                    _ => {
                        let mut v = vec![0u32; (2 * (n + 1)).clamp(4, LIST_MAX)];
                        for (d, &s) in v.iter_mut().zip(&ids[..n]) {
                            *d = u32::from(s);
                        }
                        v[n] = slot;
                        *self = WorkerSet::List {
                            len: n as u32 + 1,
                            ids: v.into_boxed_slice(),
                        };
                    }
                }
            }
            WorkerSet::List { len, ids } => {
                let n = *len as usize;
                if n < LIST_MAX {
                    if n == ids.len() {
                        let mut v = vec![0u32; (2 * n).clamp(4, LIST_MAX)];
                        v[..n].copy_from_slice(ids);
                        *ids = v.into_boxed_slice();
                    }
                    ids[n] = slot;
                    *len += 1;
                } else {
                    let max = ids.iter().copied().max().unwrap_or(0).max(slot);
                    let mut words = vec![0u64; max as usize / 64 + 1];
                    for &s in ids.iter().chain(std::iter::once(&slot)) {
                        set_bit(&mut words, s);
                    }
                    *self = WorkerSet::Bits {
                        count: LIST_MAX as u32 + 1,
                        words: words.into_boxed_slice(),
                    };
                }
            }
            WorkerSet::Bits { count, words } => {
                let w = slot as usize / 64;
                if w >= words.len() {
                    let mut v = words.to_vec();
                    v.resize(w + 1, 0);
                    *words = v.into_boxed_slice();
                }
                set_bit(words, slot);
                *count += 1;
            }
        }
        true
    }

    /// Removes `slot`; false if it was not there.
    pub(crate) fn remove(&mut self, slot: u32) -> bool {
        match self {
            WorkerSet::Small { len, ids } => {
                let n = *len as usize;
                let Ok(s) = u16::try_from(slot) else {
                    return false;
                };
                match small_position(ids, n, s) {
                    Some(i) => {
                        ids[i] = ids[n - 1];
                        *len -= 1;
                        true
                    }
                    None => false,
                }
            }
            WorkerSet::List { len, ids } => {
                let n = *len as usize;
                let Some(i) = ids[..n].iter().position(|&x| x == slot) else {
                    return false;
                };
                ids[i] = ids[n - 1];
                *len -= 1;
                let n = n - 1;
                if n <= INLINE_AGAIN && ids[..n].iter().all(|&s| s <= u32::from(u16::MAX)) {
                    let mut small = [0u16; INLINE];
                    for (d, &s) in small.iter_mut().zip(&ids[..n]) {
                        *d = s as u16;
                    }
                    *self = WorkerSet::Small {
                        len: n as u8,
                        ids: small,
                    };
                }
                true
            }
            WorkerSet::Bits { count, words } => {
                if !bit(words, slot) {
                    return false;
                }
                words[slot as usize / 64] &= !(1u64 << (slot % 64));
                *count -= 1;
                if *count as usize <= LIST_AGAIN {
                    let mut v = vec![0u32; LIST_MAX];
                    let mut n = 0;
                    for (d, s) in v.iter_mut().zip(iter_bits(words)) {
                        *d = s;
                        n += 1;
                    }
                    *self = WorkerSet::List {
                        len: n,
                        ids: v.into_boxed_slice(),
                    };
                }
                true
            }
        }
    }

    /// All slots, in no particular order.
    #[cfg(test)]
    pub(crate) fn for_each(&self, mut f: impl FnMut(u32)) {
        match self.view() {
            View::Small(ids) => ids.iter().map(|&s| u32::from(s)).for_each(f),
            View::List(ids) => ids.iter().copied().for_each(f),
            View::Bits(words) => iter_bits(words).for_each(&mut f),
        }
    }
}

#[inline]
pub(crate) fn bit(words: &[u64], slot: u32) -> bool {
    words
        .get(slot as usize / 64)
        .is_some_and(|w| w & (1u64 << (slot % 64)) != 0)
}

#[inline]
pub(crate) fn set_bit(words: &mut [u64], slot: u32) {
    words[slot as usize / 64] |= 1u64 << (slot % 64);
}

/// The set bits of `words`, ascending.
pub(crate) fn iter_bits(words: &[u64]) -> impl Iterator<Item = u32> + '_ {
    words.iter().enumerate().flat_map(|(i, &w)| {
        let mut w = w;
        std::iter::from_fn(move || {
            if w == 0 {
                return None;
            }
            let b = w.trailing_zeros();
            w &= w - 1;
            Some(i as u32 * 64 + b)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Slots mostly small, some past the `u16` range (which never go inline).
    fn slot() -> impl Strategy<Value = u32> {
        prop_oneof![9 => 0u32..200, 1 => 65_530u32..65_540]
    }

    proptest! {
        /// The set behaves like a `BTreeSet` through every representation change.
        #[test]
        fn matches_btreeset(first in slot(), ops in prop::collection::vec((any::<bool>(), slot()), 0..400)) {
            let mut s = WorkerSet::single(first);
            let mut m = BTreeSet::from([first]);
            for (add, slot) in ops {
                if add {
                    prop_assert_eq!(s.insert(slot), m.insert(slot));
                } else {
                    prop_assert_eq!(s.remove(slot), m.remove(&slot));
                }
                prop_assert_eq!(s.len(), m.len());
                let mut got = Vec::new();
                s.for_each(|x| got.push(x));
                got.sort_unstable();
                prop_assert_eq!(got, m.iter().copied().collect::<Vec<_>>());
                for probe in [0u32, 7, 63, 64, 150, 199, 65_535, 65_536] {
                    prop_assert_eq!(s.contains(probe), m.contains(&probe));
                }
            }
        }
    }

    #[test]
    fn is_twenty_four_bytes() {
        assert_eq!(std::mem::size_of::<WorkerSet>(), 24);
    }
}
