//! An open-addressing hash map keyed by `u64`, for the index's two big maps (block hash →
//! workers, and each worker's engine id → block hash).
//!
//! Why not `std`'s / hashbrown's map: their control bytes and entries live in two
//! arrays, so a lookup in a table far larger than the caches costs two memory misses.
//! Here key and value sit side by side (linear probing, one miss for most lookups), and
//! the home slot of a key is known before the lookup, so a batch can [`touch`](FlatMap::touch)
//! all its slots first and let the CPU overlap the misses (software prefetch without
//! `unsafe`: a plain load whose result is folded into a value the caller passes to
//! `black_box`).
//!
//! Keys are spread by one folded multiply (engine ids may be small sequential numbers).
//! Key 0 is kept apart so that an all-zero slot can mean "empty". Deletion shifts the
//! following entries back (no tombstones), so probe lengths stay those of the load.

/// Largest load before growing: 3/4 keeps an insert's (unsuccessful) probe at about 8.5
/// slots on average at the worst, 2.5 at half load, within one or two cache lines.
const MAX_LOAD_NUM: usize = 3;
const MAX_LOAD_DEN: usize = 4;
const MIN_CAPACITY: usize = 8;

#[derive(Debug, Clone)]
pub(crate) struct FlatMap<V> {
    /// `(key, value)`; key 0 marks an empty slot. Length: a power of two, or 0.
    slots: Vec<(u64, V)>,
    /// The value of key 0, which cannot live in `slots`.
    zero: Option<V>,
    /// Entries in `slots`.
    len: usize,
    /// `64 - log2(slots.len())`: the shift that maps a mixed key to its home slot.
    shift: u32,
}

impl<V> Default for FlatMap<V> {
    fn default() -> Self {
        FlatMap {
            slots: Vec::new(),
            zero: None,
            len: 0,
            shift: 64,
        }
    }
}

#[inline]
fn mix(key: u64) -> u64 {
    let m = u128::from(key) * 0x9e37_79b9_7f4a_7c15_u128;
    (m as u64) ^ ((m >> 64) as u64)
}

impl<V: Default> FlatMap<V> {
    pub(crate) fn len(&self) -> usize {
        self.len + usize::from(self.zero.is_some())
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        // High bits of the mix: `shift` is 64 for an empty table, where this is unused.
        (mix(key).checked_shr(self.shift).unwrap_or(0)) as usize
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Loads `key`'s home slot and returns its key: call it for a batch of keys before
    /// using them, fold the results and `black_box` them, so that their cache misses
    /// overlap.
    #[inline]
    pub(crate) fn touch(&self, key: u64) -> u64 {
        match self.slots.get(self.home(key)) {
            Some(s) => s.0,
            None => 0,
        }
    }

    /// The slot holding `key` (non-zero), if any.
    #[inline]
    fn find(&self, key: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let k = self.slots[i].0;
            if k == key {
                return Some(i);
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<&V> {
        if key == 0 {
            return self.zero.as_ref();
        }
        self.find(key).map(|i| &self.slots[i].1)
    }

    /// The value of `key`, inserted with `f` if absent; and whether it was inserted.
    #[inline]
    pub(crate) fn get_or_insert_with(&mut self, key: u64, f: impl FnOnce() -> V) -> (&mut V, bool) {
        if key == 0 {
            let inserted = self.zero.is_none();
            return (self.zero.get_or_insert_with(f), inserted);
        }
        self.reserve(1);
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let k = self.slots[i].0;
            if k == key {
                return (&mut self.slots[i].1, false);
            }
            if k == 0 {
                self.slots[i] = (key, f());
                self.len += 1;
                return (&mut self.slots[i].1, true);
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts `key → value`; returns the previous value.
    #[inline]
    pub(crate) fn insert(&mut self, key: u64, value: V) -> Option<V> {
        let mut value = Some(value);
        let (slot, inserted) = self.get_or_insert_with(key, || value.take().expect("once"));
        if inserted {
            None
        } else {
            Some(std::mem::replace(slot, value.take().expect("not used")))
        }
    }

    /// Removes `key`; returns its value.
    #[inline]
    pub(crate) fn remove(&mut self, key: u64) -> Option<V> {
        if key == 0 {
            return self.zero.take();
        }
        let i = self.find(key)?;
        Some(self.remove_at(i))
    }

    /// Empties slot `i`, shifting back the entries after it that would otherwise be
    /// unreachable (backward-shift deletion).
    fn remove_at(&mut self, mut i: usize) -> V {
        let mask = self.mask();
        let value = std::mem::take(&mut self.slots[i].1);
        self.slots[i].0 = 0;
        self.len -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let k = self.slots[j].0;
            if k == 0 {
                return value;
            }
            let home = self.home(k);
            // Entry j may move to the hole at i if its home is not within (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.slots.swap(i, j);
                i = j;
            }
        }
    }

    /// Makes room for `additional` more entries without exceeding the maximum load.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let need = self.len + additional;
        if need * MAX_LOAD_DEN <= self.slots.len() * MAX_LOAD_NUM {
            return;
        }
        let cap = (need * MAX_LOAD_DEN / MAX_LOAD_NUM + 1)
            .next_power_of_two()
            .max(MIN_CAPACITY);
        self.rehash(cap);
    }

    fn rehash(&mut self, cap: usize) {
        let mut fresh: Vec<(u64, V)> = Vec::with_capacity(cap);
        fresh.resize_with(cap, || (0, V::default()));
        let old = std::mem::replace(&mut self.slots, fresh);
        self.shift = 64 - cap.trailing_zeros();
        let mask = cap - 1;
        for (k, v) in old {
            if k == 0 {
                continue;
            }
            let mut i = self.home(k);
            while self.slots[i].0 != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = (k, v);
        }
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        self.zero.iter().map(|v| (0, v)).chain(
            self.slots
                .iter()
                .filter(|(k, _)| *k != 0)
                .map(|(k, v)| (*k, v)),
        )
    }

    /// Removes every entry, giving each to `f`; keeps the allocation.
    pub(crate) fn drain_with(&mut self, mut f: impl FnMut(u64, V)) {
        if let Some(v) = self.zero.take() {
            f(0, v);
        }
        if self.len > 0 {
            for (k, v) in &mut self.slots {
                if *k != 0 {
                    f(*k, std::mem::take(v));
                    *k = 0;
                }
            }
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Behaves like `HashMap` through inserts, removals (with back-shifts across
        /// the wrap-around) and growth, including key 0 and colliding small keys.
        #[test]
        fn matches_hashmap(ops in prop::collection::vec((0u8..4, 0u64..300), 0..1500)) {
            let mut m: FlatMap<u64> = FlatMap::default();
            let mut r: HashMap<u64, u64> = HashMap::new();
            for (n, (op, k)) in ops.into_iter().enumerate() {
                match op {
                    0 | 1 => prop_assert_eq!(m.insert(k, n as u64), r.insert(k, n as u64)),
                    2 => prop_assert_eq!(m.remove(k), r.remove(&k)),
                    _ => prop_assert_eq!(m.get(k), r.get(&k)),
                }
                prop_assert_eq!(m.len(), r.len());
            }
            for k in 0..64 {
                prop_assert_eq!(m.get(k), r.get(&k));
            }
            let mut all: Vec<(u64, u64)> = m.iter().map(|(k, v)| (k, *v)).collect();
            all.sort_unstable();
            let mut want: Vec<(u64, u64)> = r.into_iter().collect();
            want.sort_unstable();
            prop_assert_eq!(&all, &want);
            let mut drained = Vec::new();
            m.drain_with(|k, v| drained.push((k, v)));
            drained.sort_unstable();
            prop_assert_eq!(drained, want);
            prop_assert!(m.is_empty());
        }
    }
}
