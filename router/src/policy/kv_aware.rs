//! KV-aware routing: send a request where its prefix is cached, unless that worker is
//! so loaded that recomputing the prefix elsewhere is cheaper.
//!
//! For each candidate, in KV blocks (tokens ÷ block size, so both terms share a unit,
//! as in NVIDIA Dynamo's router):
//!
//! ```text
//! cost = overlap_weight × (queued prefill tokens + prompt tokens − cached leading blocks × block size) / block size
//!      + active decode blocks
//! ```
//!
//! The cached leading blocks come from the `cohort-kv` index (engine events, or the
//! router's own past decisions); the load from the router's in-flight accounting,
//! corrected by the engines' metrics. The lowest cost wins (ties at random); with a
//! `temperature` above 0, a softmax over the normalised costs samples instead, which
//! spreads a hot prefix a little.

use super::{mix, Decision, Policy, RouteCtx};
use crate::registry::Load;

/// Settings of the KV-aware policy.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvAwareConfig {
    /// Weight of the prefill term against the decode term. Default: 1.0 (a block to
    /// prefill costs as much as a block being decoded); higher favours cache hits
    /// (lower TTFT), lower favours balance (lower inter-token latency).
    pub overlap_weight: f64,
    /// Softmax temperature over normalised costs; 0 (default) takes the minimum.
    pub temperature: f64,
}

impl Default for KvAwareConfig {
    fn default() -> Self {
        KvAwareConfig {
            overlap_weight: 1.0,
            temperature: 0.0,
        }
    }
}

/// The cost of sending a prompt of `prompt_tokens` to a worker with `load` that holds
/// `cached_blocks` of its leading blocks (see the module docs).
pub fn cost(
    cfg: &KvAwareConfig,
    load: &Load,
    prompt_tokens: usize,
    cached_blocks: u32,
    block_size: u32,
) -> f64 {
    let bs = block_size.max(1) as f64;
    let cached = (cached_blocks as f64 * bs).min(prompt_tokens as f64);
    let prefill = load.prefill_tokens as f64 + prompt_tokens as f64 - cached;
    cfg.overlap_weight * prefill / bs + load.decode_blocks as f64
}

/// The KV-aware policy.
#[derive(Debug, Clone, Copy)]
pub struct KvAware {
    cfg: KvAwareConfig,
}

impl KvAware {
    /// With `cfg`.
    pub fn new(cfg: KvAwareConfig) -> Self {
        KvAware { cfg }
    }
}

/// A uniform number in [0, 1) from 53 bits of `r`.
fn unit(r: u64) -> f64 {
    (r >> 11) as f64 / (1u64 << 53) as f64
}

impl Policy for KvAware {
    fn name(&self) -> &'static str {
        "kv-aware"
    }

    fn uses_kv(&self) -> bool {
        true
    }

    fn select(&self, ctx: &RouteCtx<'_>) -> Decision {
        let costs: Vec<f64> = ctx
            .candidates
            .iter()
            .map(|w| {
                cost(
                    &self.cfg,
                    &w.load(),
                    ctx.prompt_tokens,
                    ctx.overlaps.get(w.id),
                    ctx.block_size,
                )
            })
            .collect();
        let min = costs.iter().copied().fold(f64::INFINITY, f64::min);
        let index = if self.cfg.temperature > 0.0 {
            let max = costs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let range = (max - min).max(f64::EPSILON);
            let weights: Vec<f64> = costs
                .iter()
                .map(|c| (-(c - min) / range / self.cfg.temperature).exp())
                .collect();
            let total: f64 = weights.iter().sum();
            let mut x = unit(ctx.rand) * total;
            let mut pick = weights.len() - 1;
            for (i, w) in weights.iter().enumerate() {
                if x < *w {
                    pick = i;
                    break;
                }
                x -= w;
            }
            pick
        } else {
            // Ties at random, so equal workers share a cold start.
            let ties: Vec<usize> = (0..costs.len())
                .filter(|&i| costs[i] <= min + 1e-9)
                .collect();
            ties[(mix(ctx.rand) % ties.len() as u64) as usize]
        };
        Decision {
            index,
            costs: Some(costs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ctx, pool};
    use super::*;
    use cohort_kv::{OverlapScores, WorkerId};

    #[test]
    fn cost_function_matches_the_formula() {
        let cfg = KvAwareConfig {
            overlap_weight: 2.0,
            temperature: 0.0,
        };
        let load = Load {
            requests: 3,
            prefill_tokens: 32,
            decode_blocks: 10,
        };
        // 2 × (32 + 100 − 4 × 16) / 16 + 10 = 2 × 68 / 16 + 10 = 18.5
        assert_eq!(cost(&cfg, &load, 100, 4, 16), 18.5);
        // Cached blocks beyond the prompt never make the prefill negative.
        assert_eq!(cost(&cfg, &Load::default(), 20, 8, 16), 0.0);
        // Weight 0: load only.
        let w0 = KvAwareConfig {
            overlap_weight: 0.0,
            ..cfg
        };
        assert_eq!(cost(&w0, &load, 100, 0, 16), 10.0);
    }

    #[test]
    fn prefers_the_cached_worker_until_its_load_outweighs_the_hit() {
        let policy = KvAware::new(KvAwareConfig::default());
        // 1024-token prompt = 64 blocks; worker 1 holds 60 of them.
        let mut o = OverlapScores::default();
        let p = pool(&[(0, 0, 0), (0, 0, 0), (0, 0, 0)]);
        o.scores.push((p.workers[1].id, 60));
        for r in 0..20 {
            let d = policy.select(&ctx(&p, &o, 1024, r));
            assert_eq!(d.index, 1);
            assert_eq!(d.costs.as_ref().unwrap()[1], 4.0);
        }
        // Now worker 1 decodes 100 blocks: 4 + 100 > 64 on an idle worker.
        let busy = pool(&[(0, 0, 0), (1, 0, 100), (0, 0, 0)]);
        let mut o = OverlapScores::default();
        o.scores.push((busy.workers[1].id, 60));
        for r in 0..20 {
            assert_ne!(policy.select(&ctx(&busy, &o, 1024, r)).index, 1);
        }
        // A missing worker id in the overlaps counts as nothing cached.
        assert_eq!(o.get(WorkerId(12345)), 0);
    }

    #[test]
    fn ties_spread_and_temperature_samples() {
        let p = pool(&[(0, 0, 0); 3]);
        let o = OverlapScores::default();
        let greedy = KvAware::new(KvAwareConfig::default());
        let mut seen = [0; 3];
        for r in 0..300 {
            seen[greedy.select(&ctx(&p, &o, 64, mix(r))).index] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
        // With temperature, the cached worker is likeliest but not the only choice.
        let mut o = OverlapScores::default();
        o.scores.push((p.workers[2].id, 4));
        let warm = KvAware::new(KvAwareConfig {
            overlap_weight: 1.0,
            temperature: 0.5,
        });
        let mut seen = [0; 3];
        for r in 0..3000 {
            seen[warm.select(&ctx(&p, &o, 64, mix(r))).index] += 1;
        }
        assert!(seen[2] > seen[0] && seen[2] > seen[1], "{seen:?}");
        assert!(seen[0] > 100, "{seen:?}");
    }
}
