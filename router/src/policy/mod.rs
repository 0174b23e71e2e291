//! Routing policies: one small trait, one file per policy, and a factory from a
//! `#[serde(tag = "type")]` config enum.
//!
//! A policy only chooses among candidates the caller has already filtered (role,
//! health, breaker, excluded after a failure); it gets everything else through
//! [`RouteCtx`], so a new input does not change the trait.

mod kv_aware;
mod least_loaded;
mod random;
mod round_robin;
mod session;

pub use kv_aware::{cost, KvAware, KvAwareConfig};
pub(crate) use least_loaded::two_choices as least_loaded_pick;
pub use least_loaded::LeastLoaded;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use session::Session;

use crate::registry::Worker;
use cohort_kv::OverlapScores;
use std::fmt::Debug;
use std::sync::Arc;

/// What a policy decides from.
#[derive(Debug)]
pub struct RouteCtx<'a> {
    /// Workers that may take the request; never empty.
    pub candidates: &'a [Arc<Worker>],
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Tokens per KV block (the router's hashing block size).
    pub block_size: u32,
    /// Leading prompt blocks each worker holds (empty unless [`Policy::uses_kv`]).
    pub overlaps: &'a OverlapScores,
    /// Prompt blocks queried (the length of the block-hash list).
    pub query_blocks: u32,
    /// The session key (header or `user` field), when the request has one.
    pub session: Option<&'a str>,
    /// A fresh random number for this decision.
    pub rand: u64,
}

/// A policy's choice.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index into [`RouteCtx::candidates`].
    pub index: usize,
    /// Each candidate's cost, for policies that score (logged at debug level).
    pub costs: Option<Vec<f64>>,
}

impl Decision {
    /// A choice without scores.
    pub fn pick(index: usize) -> Self {
        Decision { index, costs: None }
    }
}

/// Picks a worker for a request.
pub trait Policy: Send + Sync + Debug {
    /// The policy's name, as `--policy` spells it.
    fn name(&self) -> &'static str;
    /// Whether [`RouteCtx::overlaps`] must be filled (a KV index query per request).
    fn uses_kv(&self) -> bool {
        false
    }
    /// Chooses one of `ctx.candidates`.
    fn select(&self, ctx: &RouteCtx<'_>) -> Decision;
}

/// A policy and its settings, as configuration (`{"type": "kv-aware", …}`) and as
/// `--policy`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// In turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// The less loaded of two random candidates.
    LeastLoaded,
    /// The same session to the same worker (rendezvous hashing); least-loaded without one.
    Session,
    /// Overlap with cached blocks against load (see [`cost`]).
    KvAware(KvAwareConfig),
}

impl PolicyConfig {
    /// The policy named `name` with default settings.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "round-robin" => PolicyConfig::RoundRobin,
            "random" => PolicyConfig::Random,
            "least-loaded" => PolicyConfig::LeastLoaded,
            "session" => PolicyConfig::Session,
            "kv-aware" => PolicyConfig::KvAware(KvAwareConfig::default()),
            _ => return None,
        })
    }

    /// Every name [`from_name`](Self::from_name) accepts.
    pub const NAMES: [&'static str; 5] = [
        "round-robin",
        "random",
        "least-loaded",
        "session",
        "kv-aware",
    ];

    /// Builds the policy.
    pub fn build(&self) -> Arc<dyn Policy> {
        match self {
            PolicyConfig::RoundRobin => Arc::new(RoundRobin::default()),
            PolicyConfig::Random => Arc::new(Random),
            PolicyConfig::LeastLoaded => Arc::new(LeastLoaded),
            PolicyConfig::Session => Arc::new(Session),
            PolicyConfig::KvAware(c) => Arc::new(KvAware::new(*c)),
        }
    }
}

/// SplitMix64: a well-mixed 64-bit function, for per-decision randomness and hashing.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fresh random number (a per-thread SplitMix64 stream seeded from the clock and
/// the thread's stack address, so threads differ).
pub(crate) fn random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let here = 0u8;
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x1234_5678, |d| d.as_nanos() as u64)
                ^ mix(std::ptr::addr_of!(here) as u64)
        });
    }
    STATE.with(|s| {
        let v = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(v);
        mix(v)
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Candidates with chosen loads, for the policies' unit tests.
    use super::*;
    use crate::breaker::BreakerConfig;
    use crate::registry::{LoadGuard, Registry, Role, WorkerSpec};

    pub(crate) struct Pool {
        pub workers: Vec<Arc<Worker>>,
        #[allow(dead_code)] // held: the loads stay counted while the pool lives
        pub guards: Vec<LoadGuard>,
    }

    /// `n` aggregated workers; `loads[i]` = (requests, prefill tokens, decode blocks).
    pub(crate) fn pool(loads: &[(u64, u64, u64)]) -> Pool {
        let r = Registry::new(BreakerConfig::default());
        let mut guards = Vec::new();
        let workers: Vec<Arc<Worker>> = loads
            .iter()
            .enumerate()
            .map(|(i, &(req, prefill, blocks))| {
                let w = r
                    .add(WorkerSpec::new(
                        format!("http://127.0.0.1:{}", 9000 + i),
                        Role::Aggregated,
                    ))
                    .unwrap();
                for k in 0..req {
                    guards.push(w.start(
                        if k == 0 { prefill } else { 0 },
                        if k == 0 { blocks } else { 0 },
                    ));
                }
                w
            })
            .collect();
        Pool { workers, guards }
    }

    pub(crate) fn ctx<'a>(
        p: &'a Pool,
        overlaps: &'a OverlapScores,
        prompt_tokens: usize,
        rand: u64,
    ) -> RouteCtx<'a> {
        RouteCtx {
            candidates: &p.workers,
            prompt_tokens,
            block_size: 16,
            overlaps,
            query_blocks: (prompt_tokens / 16) as u32,
            session: None,
            rand,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_enum_is_tagged_and_strict() {
        let c: PolicyConfig =
            serde_json::from_str(r#"{"type": "kv-aware", "overlap_weight": 2.0}"#).unwrap();
        assert_eq!(
            c,
            PolicyConfig::KvAware(KvAwareConfig {
                overlap_weight: 2.0,
                ..KvAwareConfig::default()
            })
        );
        let c: PolicyConfig = serde_json::from_str(r#"{"type": "round-robin"}"#).unwrap();
        assert_eq!(c.build().name(), "round-robin");
        assert!(
            serde_json::from_str::<PolicyConfig>(r#"{"type": "kv-aware", "wieght": 1}"#).is_err()
        );
        for n in PolicyConfig::NAMES {
            assert_eq!(PolicyConfig::from_name(n).unwrap().build().name(), n);
        }
    }

    #[test]
    fn random_numbers_differ() {
        let a = random();
        let b = random();
        assert_ne!(a, b);
    }
}
