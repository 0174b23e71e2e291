//! Session affinity: requests of one session (the `x-session-id` header, or the body's
//! `user` field) go to the same worker, by rendezvous hashing over worker ids, so adding
//! or removing a worker moves only the sessions that must move. Without a session key,
//! least-loaded.

use super::least_loaded::two_choices;
use super::{mix, Decision, Policy, RouteCtx};

/// Sticky by session key.
#[derive(Debug, Default, Clone, Copy)]
pub struct Session;

/// FNV-1a of the key, mixed: stable across processes and runs.
fn key_hash(key: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in key.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    mix(h)
}

impl Policy for Session {
    fn name(&self) -> &'static str {
        "session"
    }

    fn select(&self, ctx: &RouteCtx<'_>) -> Decision {
        let Some(key) = ctx.session else {
            return Decision::pick(two_choices(ctx.candidates, ctx.rand));
        };
        let k = key_hash(key);
        let best = ctx
            .candidates
            .iter()
            .enumerate()
            .max_by_key(|(_, w)| mix(k ^ mix(w.id.0)))
            .map_or(0, |(i, _)| i);
        Decision::pick(best)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ctx, pool};
    use super::*;
    use cohort_kv::OverlapScores;

    #[test]
    fn same_session_same_worker_and_sessions_spread() {
        let p = pool(&[(0, 0, 0); 4]);
        let o = OverlapScores::default();
        let mut seen = std::collections::HashSet::new();
        for s in 0..64 {
            let key = format!("session-{s}");
            let mut c = ctx(&p, &o, 64, 1);
            c.session = Some(&key);
            let first = Session.select(&c).index;
            for r in 0..5 {
                c.rand = mix(r);
                assert_eq!(Session.select(&c).index, first);
            }
            seen.insert(first);
        }
        assert_eq!(seen.len(), 4, "64 sessions use every worker");
    }

    #[test]
    fn removing_a_worker_moves_only_its_sessions() {
        let p = pool(&[(0, 0, 0); 4]);
        let o = OverlapScores::default();
        let fewer = super::super::testing::Pool {
            workers: p.workers[..3].to_vec(),
            guards: Vec::new(),
        };
        for s in 0..64 {
            let key = format!("s{s}");
            let mut c = ctx(&p, &o, 64, 1);
            c.session = Some(&key);
            let before = Session.select(&c).index;
            let mut c2 = ctx(&fewer, &o, 64, 1);
            c2.session = Some(&key);
            let after = Session.select(&c2).index;
            if before < 3 {
                assert_eq!(before, after);
            }
        }
    }
}
