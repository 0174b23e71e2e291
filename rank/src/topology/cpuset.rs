//! Sets of logical CPU ids in the Linux "cpulist" format (`0-3,8,10-11`), as sysfs
//! writes them and as `taskset -c` / `numactl --physcpubind` read them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A sorted set of logical CPU ids without duplicates.
///
/// Serialised as a cpulist string (`"0-71"`), so a topology file stays readable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet(Vec<u32>);

/// A cpulist that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cpulist `{text}`: {reason}; write it like `0-3,8,10-11`")]
pub struct CpuSetError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The largest CPU id accepted, so a typo cannot allocate gigabytes.
const MAX_CPU: u32 = 1 << 20;

impl CpuSet {
    /// The empty set.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// The set of the given ids (sorted, duplicates removed).
    pub fn from_cpus(cpus: impl IntoIterator<Item = u32>) -> Self {
        let mut v: Vec<u32> = cpus.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Self(v)
    }

    /// `first..first + count`.
    pub fn range(first: u32, count: u32) -> Self {
        Self((first..first + count).collect())
    }

    /// The ids, ascending.
    pub fn cpus(&self) -> &[u32] {
        &self.0
    }

    /// How many CPUs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set has no CPU.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.binary_search(&cpu).is_ok()
    }

    /// The CPUs in both sets.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        Self(
            self.0
                .iter()
                .copied()
                .filter(|c| other.contains(*c))
                .collect(),
        )
    }

    /// The CPUs in `self` but not in `other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        Self(
            self.0
                .iter()
                .copied()
                .filter(|c| !other.contains(*c))
                .collect(),
        )
    }

    /// The CPUs in either set.
    pub fn union(&self, other: &CpuSet) -> CpuSet {
        Self::from_cpus(self.0.iter().chain(other.0.iter()).copied())
    }

    /// Whether the sets share no CPU.
    pub fn is_disjoint(&self, other: &CpuSet) -> bool {
        self.0.iter().all(|c| !other.contains(*c))
    }
}

impl fmt::Display for CpuSet {
    /// Ranges of consecutive ids joined by commas; the empty set prints as nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end = self.0[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

impl FromStr for CpuSet {
    type Err = CpuSetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| CpuSetError {
            text: text.to_owned(),
            reason,
        };
        let num = |s: &str| -> Result<u32, CpuSetError> {
            let n: u32 = s
                .trim()
                .parse()
                .map_err(|_| err(format!("`{}` is not a CPU id", s.trim())))?;
            if n > MAX_CPU {
                return Err(err(format!("CPU id {n} is larger than {MAX_CPU}")));
            }
            Ok(n)
        };
        let mut cpus = Vec::new();
        for item in text.trim().split(',') {
            let item = item.trim();
            if item.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(err("empty item".to_owned()));
            }
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(err(format!("range `{item}` runs backwards")));
                    }
                    cpus.extend(a..=b);
                }
                None => cpus.push(num(item)?),
            }
        }
        Ok(Self::from_cpus(cpus))
    }
}

impl Serialize for CpuSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CpuSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_sysfs_lists() {
        let set: CpuSet = "0-3,8,10-11\n".parse().unwrap();
        assert_eq!(set.cpus(), &[0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(set.to_string(), "0-3,8,10-11");
        assert!("".parse::<CpuSet>().unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_lists_with_the_reason() {
        let e = "4-2".parse::<CpuSet>().unwrap_err();
        assert!(e.to_string().contains("runs backwards"), "{e}");
        assert!("1,,2".parse::<CpuSet>().is_err());
        assert!("x".parse::<CpuSet>().is_err());
        assert!("0-99999999".parse::<CpuSet>().is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trips(cpus in proptest::collection::vec(0u32..512, 0..64)) {
            let set = CpuSet::from_cpus(cpus);
            let back: CpuSet = set.to_string().parse().unwrap();
            prop_assert_eq!(back, set);
        }

        #[test]
        fn set_algebra_is_consistent(a in proptest::collection::vec(0u32..64, 0..32),
                                     b in proptest::collection::vec(0u32..64, 0..32)) {
            let (a, b) = (CpuSet::from_cpus(a), CpuSet::from_cpus(b));
            let i = a.intersection(&b);
            prop_assert!(a.difference(&b).is_disjoint(&b));
            prop_assert_eq!(a.difference(&b).len() + i.len(), a.len());
            prop_assert_eq!(a.union(&b).len(), a.len() + b.len() - i.len());
        }
    }
}
