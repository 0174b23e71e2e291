//! Task layouts: `SLURM_TASKS_PER_NODE` / `SLURM_JOB_CPUS_PER_NODE` (`2(x3),1`) and the
//! node a global task rank runs on.

use std::fmt;

/// Why a per-node count list such as `2(x3),1` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid per-node count list `{text}`: {reason}; expected e.g. `2(x3),1`")]
pub struct CountsError {
    pub text: String,
    pub reason: String,
}

/// Per-node counts in node order, as Slurm writes them compressed: `2(x3),1` is
/// `[2, 2, 2, 1]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct PerNode(Vec<u32>);

/// The most nodes a count list may describe; guards `N(x4000000000)` against exhausting
/// memory. Slurm itself allows 65,536 nodes in a hostlist.
const MAX_NODES: u64 = 65_536;

impl PerNode {
    /// Parses Slurm's compressed per-node form.
    pub fn parse(text: &str) -> Result<Self, CountsError> {
        let fail = |reason: String| CountsError {
            text: text.to_owned(),
            reason,
        };
        let mut counts = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            let (count, repeat) = match item.split_once('(') {
                None => (item, "1"),
                Some((count, rest)) => {
                    let repeat = rest
                        .strip_prefix('x')
                        .and_then(|r| r.strip_suffix(')'))
                        .ok_or_else(|| fail(format!("`{item}` is not `COUNT(xREPEAT)`")))?;
                    (count, repeat)
                }
            };
            let count: u32 = count
                .parse()
                .map_err(|_| fail(format!("`{count}` is not a count")))?;
            let repeat: u64 = repeat
                .parse()
                .ok()
                .filter(|&r| r > 0)
                .ok_or_else(|| fail(format!("`{repeat}` is not a repeat count")))?;
            if counts.len() as u64 + repeat > MAX_NODES {
                return Err(fail(format!("describes more than {MAX_NODES} nodes")));
            }
            counts.extend(std::iter::repeat_n(count, repeat as usize));
        }
        Ok(Self(counts))
    }

    pub fn from_counts(counts: Vec<u32>) -> Self {
        Self(counts)
    }

    /// The count on each node, in node order.
    pub fn counts(&self) -> &[u32] {
        &self.0
    }

    pub fn nodes(&self) -> usize {
        self.0.len()
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|&c| u64::from(c)).sum()
    }

    /// Whether every node has exactly one (then a task rank is also a node rank).
    pub fn one_per_node(&self) -> bool {
        self.0.iter().all(|&c| c == 1)
    }
}

impl fmt::Display for PerNode {
    /// Writes the compressed form Slurm uses: `2(x3),1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for run in self.0.chunk_by(|a, b| a == b) {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            match run.len() {
                1 => write!(f, "{}", run[0])?,
                n => write!(f, "{}(x{n})", run[0])?,
            }
        }
        Ok(())
    }
}

/// How tasks are laid out over nodes (`srun --distribution`, `SLURM_DISTRIBUTION`): only
/// the node level matters here (`block:cyclic` is `Block`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Consecutive ranks fill a node before moving on (Slurm's default).
    Block,
    /// Ranks go round-robin over the nodes that still have room.
    Cyclic,
    /// Blocks of this many ranks go round-robin over the nodes.
    Plane(u32),
}

/// A distribution cohort cannot map ranks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported task distribution `{0}`: cohort maps ranks to nodes for `block`, `cyclic` \
     and `plane=N` (the node level of `--distribution`)"
)]
pub struct DistributionError(pub String);

impl Distribution {
    /// Parses `SLURM_DISTRIBUTION` (`block`, `cyclic:block`, `plane=4`, …).
    pub fn parse(text: &str) -> Result<Self, DistributionError> {
        let node_level = text.split([':', ',']).next().unwrap_or_default().trim();
        match node_level {
            "" | "block" => Ok(Self::Block),
            "cyclic" => Ok(Self::Cyclic),
            plane => plane
                .strip_prefix("plane=")
                .and_then(|n| n.parse().ok())
                .filter(|&n| n > 0)
                .map(Self::Plane)
                .ok_or_else(|| DistributionError(text.to_owned())),
        }
    }
}

/// The node index (0-based, in node-list order) of every task rank of a step.
///
/// ```
/// use cohort_slurm::tasks::{node_of_each_task, Distribution, PerNode};
/// let layout = PerNode::parse("2(x2),1").unwrap();
/// assert_eq!(node_of_each_task(&layout, Distribution::Block), [0, 0, 1, 1, 2]);
/// assert_eq!(node_of_each_task(&layout, Distribution::Cyclic), [0, 1, 2, 0, 1]);
/// ```
pub fn node_of_each_task(layout: &PerNode, distribution: Distribution) -> Vec<usize> {
    let counts = layout.counts();
    let block = match distribution {
        Distribution::Block => {
            return counts
                .iter()
                .enumerate()
                .flat_map(|(node, &n)| std::iter::repeat_n(node, n as usize))
                .collect();
        }
        Distribution::Cyclic => 1,
        Distribution::Plane(n) => n,
    };
    let mut left: Vec<u32> = counts.to_vec();
    let mut out = Vec::with_capacity(layout.total() as usize);
    while left.iter().any(|&n| n > 0) {
        for (node, room) in left.iter_mut().enumerate() {
            let take = block.min(*room);
            out.extend(std::iter::repeat_n(node, take as usize));
            *room -= take;
        }
    }
    out
}

/// The node index of one task rank, or `None` when the rank is outside the step.
pub fn node_of_task(layout: &PerNode, distribution: Distribution, rank: u64) -> Option<usize> {
    if distribution == Distribution::Block {
        let mut first = 0u64;
        for (node, &n) in layout.counts().iter().enumerate() {
            first += u64::from(n);
            if rank < first {
                return Some(node);
            }
        }
        return None;
    }
    let rank = usize::try_from(rank).ok()?;
    node_of_each_task(layout, distribution).get(rank).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_compressed_counts() {
        assert_eq!(PerNode::parse("2(x3),1").unwrap().counts(), [2, 2, 2, 1]);
        assert_eq!(PerNode::parse("4").unwrap().counts(), [4]);
        assert_eq!(PerNode::parse("72(x2)").unwrap().total(), 144);
        assert!(PerNode::parse("1(x4)").unwrap().one_per_node());
        assert!(!PerNode::parse("1,2").unwrap().one_per_node());
    }

    #[test]
    fn rejects_malformed_counts_with_the_culprit() {
        for bad in [
            "",
            "2(x)",
            "2(3)",
            "x",
            "2(x3",
            "-1",
            "2(x0)",
            "1(x99999999999)",
        ] {
            let e = PerNode::parse(bad).expect_err(bad);
            assert_eq!(e.text, bad);
            assert!(e.to_string().contains("expected e.g."), "{e}");
        }
    }

    #[test]
    fn displays_like_slurm() {
        assert_eq!(
            PerNode::from_counts(vec![2, 2, 2, 1]).to_string(),
            "2(x3),1"
        );
        assert_eq!(PerNode::from_counts(vec![1, 2, 1]).to_string(), "1,2,1");
    }

    #[test]
    fn distributions() {
        assert_eq!(Distribution::parse("block").unwrap(), Distribution::Block);
        assert_eq!(
            Distribution::parse("cyclic:block").unwrap(),
            Distribution::Cyclic
        );
        assert_eq!(
            Distribution::parse("plane=2").unwrap(),
            Distribution::Plane(2)
        );
        assert!(Distribution::parse("arbitrary").is_err());
        let layout = PerNode::parse("3,1").unwrap();
        assert_eq!(
            node_of_each_task(&layout, Distribution::Plane(2)),
            [0, 0, 1, 0]
        );
        assert_eq!(node_of_task(&layout, Distribution::Block, 3), Some(1));
        assert_eq!(node_of_task(&layout, Distribution::Block, 4), None);
        assert_eq!(node_of_task(&layout, Distribution::Cyclic, 1), Some(1));
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(counts in prop::collection::vec(1u32..5, 1..30)) {
            let layout = PerNode::from_counts(counts);
            prop_assert_eq!(PerNode::parse(&layout.to_string()).unwrap(), layout);
        }

        #[test]
        fn every_node_gets_its_count(
            counts in prop::collection::vec(0u32..5, 1..20),
            plane in 1u32..4,
        ) {
            let layout = PerNode::from_counts(counts.clone());
            for d in [Distribution::Block, Distribution::Cyclic, Distribution::Plane(plane)] {
                let map = node_of_each_task(&layout, d);
                prop_assert_eq!(map.len() as u64, layout.total());
                for (node, &n) in counts.iter().enumerate() {
                    prop_assert_eq!(map.iter().filter(|&&m| m == node).count(), n as usize);
                }
                for (rank, &node) in map.iter().enumerate() {
                    prop_assert_eq!(node_of_task(&layout, d, rank as u64), Some(node));
                }
            }
        }

        #[test]
        fn parse_never_panics(text in "[0-9x(),]{0,20}") {
            let _ = PerNode::parse(&text);
        }
    }
}
