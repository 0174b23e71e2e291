//! The set of workers (by dense slot number) holding one block, sized to its population:
//! most blocks are held by one to three workers, a shared system prompt by hundreds.

/// Workers stored inline before spilling to the heap.
const INLINE: usize = 3;
/// Largest unsorted list before switching to a bitset (a bitset over 1,000 workers is
/// 128 bytes, the size of a 32-entry list).
pub(crate) const LIST_MAX: usize = 32;

/// A set of worker slots. 16 bytes inline.
#[derive(Debug, Clone)]
pub(crate) enum WorkerSet {
    Inline { len: u8, ids: [u32; INLINE] },
    Heap(Box<HeapSet>),
}

#[derive(Debug, Clone)]
pub(crate) enum HeapSet {
    /// Unsorted, `INLINE < len <= LIST_MAX` (shrinks back lazily).
    List(Vec<u32>),
    /// One bit per slot; `count` bits set.
    Bits { words: Vec<u64>, count: u32 },
}

/// A read-only view used by the matcher.
pub(crate) enum View<'a> {
    Few(&'a [u32]),
    Bits(&'a [u64]),
}

impl Default for WorkerSet {
    /// The empty set (only as a placeholder in empty table slots).
    fn default() -> Self {
        WorkerSet::Inline {
            len: 0,
            ids: [0; INLINE],
        }
    }
}

impl WorkerSet {
    pub(crate) fn single(slot: u32) -> Self {
        WorkerSet::Inline {
            len: 1,
            ids: [slot, 0, 0],
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            WorkerSet::Inline { len, .. } => *len as usize,
            WorkerSet::Heap(h) => match &**h {
                HeapSet::List(v) => v.len(),
                HeapSet::Bits { count, .. } => *count as usize,
            },
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn view(&self) -> View<'_> {
        match self {
            WorkerSet::Inline { len, ids } => View::Few(&ids[..*len as usize]),
            WorkerSet::Heap(h) => match &**h {
                HeapSet::List(v) => View::Few(v),
                HeapSet::Bits { words, .. } => View::Bits(words),
            },
        }
    }

    #[inline]
    pub(crate) fn contains(&self, slot: u32) -> bool {
        match self.view() {
            View::Few(ids) => ids.contains(&slot),
            View::Bits(words) => bit(words, slot),
        }
    }

    /// Adds `slot`; false if it was already there.
    pub(crate) fn insert(&mut self, slot: u32) -> bool {
        match self {
            WorkerSet::Inline { len, ids } => {
                let n = *len as usize;
                if ids[..n].contains(&slot) {
                    return false;
                }
                if n < INLINE {
                    ids[n] = slot;
                    *len += 1;
                } else {
                    let mut v = Vec::with_capacity(2 * INLINE);
                    v.extend_from_slice(ids);
                    v.push(slot);
                    *self = WorkerSet::Heap(Box::new(HeapSet::List(v)));
                }
                true
            }
            WorkerSet::Heap(h) => match &mut **h {
                HeapSet::List(v) => {
                    if v.contains(&slot) {
                        return false;
                    }
                    if v.len() < LIST_MAX {
                        v.push(slot);
                    } else {
                        let max = v.iter().copied().max().unwrap_or(0).max(slot);
                        let mut words = vec![0u64; max as usize / 64 + 1];
                        for &s in v.iter().chain(std::iter::once(&slot)) {
                            set_bit(&mut words, s);
                        }
                        **h = HeapSet::Bits {
                            words,
                            count: LIST_MAX as u32 + 1,
                        };
                    }
                    true
                }
                HeapSet::Bits { words, count } => {
                    let w = slot as usize / 64;
                    if w >= words.len() {
                        words.resize(w + 1, 0);
                    }
                    if bit(words, slot) {
                        return false;
                    }
                    set_bit(words, slot);
                    *count += 1;
                    true
                }
            },
        }
    }

    /// Removes `slot`; false if it was not there.
    pub(crate) fn remove(&mut self, slot: u32) -> bool {
        match self {
            WorkerSet::Inline { len, ids } => {
                let n = *len as usize;
                match ids[..n].iter().position(|&s| s == slot) {
                    Some(i) => {
                        ids[i] = ids[n - 1];
                        *len -= 1;
                        true
                    }
                    None => false,
                }
            }
            WorkerSet::Heap(h) => {
                let removed = match &mut **h {
                    HeapSet::List(v) => match v.iter().position(|&s| s == slot) {
                        Some(i) => {
                            v.swap_remove(i);
                            true
                        }
                        None => false,
                    },
                    HeapSet::Bits { words, count } => {
                        if bit(words, slot) {
                            words[slot as usize / 64] &= !(1u64 << (slot % 64));
                            *count -= 1;
                            true
                        } else {
                            false
                        }
                    }
                };
                if removed {
                    self.shrink();
                }
                removed
            }
        }
    }

    /// Moves back to a smaller representation with hysteresis (half the threshold), so
    /// a set hovering at a threshold does not convert on every change.
    fn shrink(&mut self) {
        let WorkerSet::Heap(h) = self else { return };
        match &mut **h {
            HeapSet::List(v) if v.len() <= INLINE => {
                let mut ids = [0u32; INLINE];
                ids[..v.len()].copy_from_slice(v);
                *self = WorkerSet::Inline {
                    len: v.len() as u8,
                    ids,
                };
            }
            HeapSet::Bits { words, count } if (*count as usize) <= LIST_MAX / 2 => {
                let v = iter_bits(words).collect();
                **h = HeapSet::List(v);
            }
            _ => {}
        }
    }

    /// All slots, in no particular order.
    #[cfg(test)]
    pub(crate) fn for_each(&self, mut f: impl FnMut(u32)) {
        match self.view() {
            View::Few(ids) => ids.iter().copied().for_each(f),
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

    proptest! {
        /// The set behaves like a `BTreeSet` through every representation change.
        #[test]
        fn matches_btreeset(ops in prop::collection::vec((any::<bool>(), 0u32..200), 0..400)) {
            let mut s = WorkerSet::single(7);
            let mut m = BTreeSet::from([7u32]);
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
                for probe in [0u32, 7, 63, 64, 150, 199] {
                    prop_assert_eq!(s.contains(probe), m.contains(&probe));
                }
            }
        }
    }

    #[test]
    fn is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<WorkerSet>(), 16);
    }
}
