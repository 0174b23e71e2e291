//! Random: uniformly among the candidates.

use super::{Decision, Policy, RouteCtx};

/// Uniformly at random, from [`RouteCtx::rand`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Random;

impl Policy for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn select(&self, ctx: &RouteCtx<'_>) -> Decision {
        Decision::pick((ctx.rand % ctx.candidates.len() as u64) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ctx, pool};
    use super::super::{mix, Random};
    use super::*;
    use cohort_kv::OverlapScores;

    #[test]
    fn spreads_roughly_uniformly() {
        let p = pool(&[(0, 0, 0); 4]);
        let o = OverlapScores::default();
        let mut counts = [0u32; 4];
        for i in 0..4000u64 {
            counts[Random.select(&ctx(&p, &o, 64, mix(i))).index] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
