//! Least-loaded by the power of two choices: the less loaded of two random candidates.
//! Nearly as good as scanning all of them, and it does not send every request to the
//! same momentarily idle worker (the herd effect of a pure minimum).

use super::{mix, Decision, Policy, RouteCtx};
use crate::registry::Worker;

/// The less loaded of two random candidates (requests in flight, then decode blocks).
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastLoaded;

fn key(w: &Worker) -> (u64, u64) {
    let l = w.load();
    (l.requests, l.decode_blocks + l.prefill_tokens)
}

/// Index of the less loaded of two distinct random candidates drawn from `rand`.
pub(crate) fn two_choices(candidates: &[std::sync::Arc<Worker>], rand: u64) -> usize {
    let n = candidates.len() as u64;
    if n == 1 {
        return 0;
    }
    let a = rand % n;
    let b = (a + 1 + mix(rand) % (n - 1)) % n;
    let (a, b) = (a as usize, b as usize);
    if key(&candidates[b]) < key(&candidates[a]) {
        b
    } else {
        a
    }
}

impl Policy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }

    fn select(&self, ctx: &RouteCtx<'_>) -> Decision {
        Decision::pick(two_choices(ctx.candidates, ctx.rand))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ctx, pool};
    use super::*;
    use cohort_kv::OverlapScores;

    #[test]
    fn never_picks_the_most_loaded_of_two_and_avoids_it_among_many() {
        let o = OverlapScores::default();
        let p = pool(&[(5, 0, 0), (1, 0, 0)]);
        for r in 0..100 {
            assert_eq!(LeastLoaded.select(&ctx(&p, &o, 64, mix(r))).index, 1);
        }
        // Among four, the busiest is never chosen (it always loses its pair).
        let p = pool(&[(1, 0, 0), (9, 0, 0), (2, 0, 0), (3, 0, 0)]);
        let mut counts = [0; 4];
        for r in 0..1000 {
            counts[LeastLoaded.select(&ctx(&p, &o, 64, mix(r))).index] += 1;
        }
        assert_eq!(counts[1], 0, "{counts:?}");
        assert!(counts[0] > counts[3], "{counts:?}");
    }
}
