//! Round-robin: each request to the next candidate in turn.

use super::{Decision, Policy, RouteCtx};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// In turn, ignoring load and cache.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn select(&self, ctx: &RouteCtx<'_>) -> Decision {
        Decision::pick(self.next.fetch_add(1, Relaxed) % ctx.candidates.len())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ctx, pool};
    use super::*;
    use cohort_kv::OverlapScores;

    #[test]
    fn cycles_through_candidates() {
        let p = pool(&[(0, 0, 0), (9, 0, 0), (0, 0, 0)]);
        let o = OverlapScores::default();
        let rr = RoundRobin::default();
        let picks: Vec<usize> = (0..6)
            .map(|_| rr.select(&ctx(&p, &o, 64, 0)).index)
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }
}
