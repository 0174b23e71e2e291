//! The indexer against a brute-force reference, over random event sequences.

use std::collections::{BTreeMap, HashMap, HashSet};

use cohort_kv::hash::chain;
use cohort_kv::{
    ApplyOutcome, BlockHash, EngineBlockHash, EventBatch, KvIndexer, KvOp, LocalBlockHash, Salt,
    StoredBlock, StoredBlocks, WorkerId,
};
use proptest::prelude::*;

/// What each worker holds, the obvious way: engine id → block hash, per worker.
#[derive(Default)]
struct Reference {
    workers: BTreeMap<u64, HashMap<EngineBlockHash, BlockHash>>,
}

impl Reference {
    fn apply(&mut self, worker: u64, op: &KvOp) {
        let held = self.workers.entry(worker).or_default();
        match op {
            KvOp::Stored(s) => {
                let mut parent = match s.parent {
                    None => None,
                    Some(p) => match held.get(&p) {
                        Some(h) => Some(*h),
                        None => return,
                    },
                };
                for b in &s.blocks {
                    let h = chain(parent, s.salt, b.local_hash);
                    held.insert(b.engine_hash, h);
                    parent = Some(h);
                }
            }
            KvOp::Removed(hs) => {
                for h in hs {
                    held.remove(h);
                }
            }
            KvOp::Cleared => held.clear(),
        }
    }

    fn find_matches(&self, query: &[BlockHash]) -> BTreeMap<u64, u32> {
        let mut out = BTreeMap::new();
        for (w, held) in &self.workers {
            let held: HashSet<BlockHash> = held.values().copied().collect();
            let n = query.iter().take_while(|q| held.contains(q)).count() as u32;
            if n > 0 {
                out.insert(*w, n);
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
enum Step {
    Op(u64, KvOp),
    RemoveWorker(u64),
    Query(Vec<BlockHash>),
}

/// Few distinct tokens-per-block (local hashes), engine ids and salts, so that workers
/// share prefixes, engines reuse ids and removals hit unknown blocks.
fn step(workers: u64) -> impl Strategy<Value = Step> {
    step_with(workers, false)
}

/// In a `crowd`, stores mostly start sequences from two possible first blocks, so that
/// dozens of workers hold the same blocks (the matcher's bitset mode).
fn step_with(workers: u64, crowd: bool) -> impl Strategy<Value = Step> {
    // (parent chance, removal / clear / worker-removal weights, distinct locals, salt 1
    // weight, engine ids)
    let (parent_p, remove_weight, clear_weight, drop_weight, locals, salt_weight, ids) = if crowd {
        (0.15, 2, 0, 0, 2, 0, 256)
    } else {
        (0.6, 4, 1, 1, 3, 1, 48)
    };
    let engine = (0u64..ids).prop_map(EngineBlockHash);
    let local = (0u64..locals).prop_map(LocalBlockHash);
    let salt = prop_oneof![4 => Just(Salt::NONE), salt_weight => Just(Salt(1))];
    let stored = (
        prop::option::weighted(parent_p, engine.clone()),
        salt.clone(),
        prop::collection::vec(
            (engine.clone(), local.clone()),
            1..if crowd { 3 } else { 5 },
        ),
    )
        .prop_map(|(parent, salt, blocks)| {
            KvOp::Stored(StoredBlocks {
                parent,
                salt,
                blocks: blocks
                    .into_iter()
                    .map(|(engine_hash, local_hash)| StoredBlock {
                        engine_hash,
                        local_hash,
                    })
                    .collect(),
            })
        });
    let op = prop_oneof![
        8 => stored,
        remove_weight => prop::collection::vec(engine, 1..4).prop_map(KvOp::Removed),
        clear_weight => Just(KvOp::Cleared),
    ];
    let query = (salt, prop::collection::vec(local, 1..7)).prop_map(|(salt, locals)| {
        let mut parent = None;
        locals
            .into_iter()
            .map(|l| {
                let h = chain(parent, salt, l);
                parent = Some(h);
                h
            })
            .collect()
    });
    prop_oneof![
        12 => (0..workers, op).prop_map(|(w, op)| Step::Op(w, op)),
        drop_weight => (0..workers).prop_map(Step::RemoveWorker),
        if crowd { 2 } else { 5 } => query.prop_map(Step::Query),
    ]
}

/// Few workers (deep per-worker histories) or many (past the 32-worker switch from
/// lists to bitsets, in the sets and in the matcher).
fn scenario() -> impl Strategy<Value = Vec<Step>> {
    prop_oneof![
        12 => (1u64..6).prop_flat_map(|w| prop::collection::vec(step(w), 1..80)),
        // A crowd: most stores start at the root, so dozens of workers share blocks (the
        // sets' switch to bitsets at 33 holders and the matcher's bitset mode are also
        // checked directly, more cheaply, by `index::table`'s unit tests).
        1 => (33u64..37).prop_flat_map(|w| prop::collection::vec(step_with(w, true), 400..600)),
    ]
}

/// Runs `steps` on the index and the reference, comparing every query's answer. With
/// `batched`, each run of consecutive ops of one worker goes to the index as one
/// [`EventBatch`] through `apply` (the path engines' messages take, which reorders its
/// memory accesses in passes); otherwise op by op through `apply_op`.
fn run(steps: &[Step], batched: bool) -> Result<(), TestCaseError> {
    let mut idx = KvIndexer::new();
    let mut reference = Reference::default();
    let mut batch: Option<(u64, Vec<KvOp>)> = None;
    let flush = |idx: &mut KvIndexer, batch: &mut Option<(u64, Vec<KvOp>)>| {
        if let Some((w, ops)) = batch.take() {
            let w = WorkerId(w);
            let event_id = idx.next_event_id(w).unwrap_or(0);
            let out = idx.apply(w, &EventBatch { event_id, ops });
            assert!(matches!(out, ApplyOutcome::Applied(_)), "{out:?}");
        }
    };
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Op(w, op) => {
                reference.apply(*w, op);
                if !batched {
                    idx.apply_op(WorkerId(*w), op);
                    continue;
                }
                if batch.as_ref().is_some_and(|(bw, _)| bw != w) {
                    flush(&mut idx, &mut batch);
                }
                batch
                    .get_or_insert_with(|| (*w, Vec::new()))
                    .1
                    .push(op.clone());
            }
            Step::RemoveWorker(w) => {
                flush(&mut idx, &mut batch);
                idx.remove_worker(WorkerId(*w));
                reference.workers.remove(w);
            }
            Step::Query(q) => {
                flush(&mut idx, &mut batch);
                let got: BTreeMap<u64, u32> = idx
                    .find_matches(q)
                    .scores
                    .iter()
                    .map(|(w, n)| (w.0, *n))
                    .collect();
                prop_assert_eq!(got, reference.find_matches(q), "step {}", i);
            }
        }
    }
    flush(&mut idx, &mut batch);
    // Bookkeeping agrees too.
    let entries: usize = reference.workers.values().map(HashMap::len).sum();
    prop_assert_eq!(idx.num_entries(), entries);
    let mut distinct: Vec<BlockHash> = reference
        .workers
        .values()
        .flat_map(|m| m.values().copied())
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    prop_assert_eq!(idx.num_blocks(), distinct.len());
    Ok(())
}

proptest! {
    // ≥ 10,000 cases by default (issue 5); PROPTEST_CASES overrides.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn find_matches_equals_brute_force(steps in scenario(), batched in any::<bool>()) {
        run(&steps, batched)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Duplicate stores and removals of unknown blocks leave the answers unchanged.
    #[test]
    fn duplicates_and_unknown_removals_are_harmless(steps in prop::collection::vec(step(4), 1..60)) {
        let mut idx = KvIndexer::new();
        let mut noisy = KvIndexer::new();
        for s in &steps {
            if let Step::Op(w, op) = s {
                idx.apply_op(WorkerId(*w), op);
                // The noisy twin sees every store twice and a removal of never-stored ids.
                // Except a store that gives its own parent's engine id to one of its
                // blocks: applied again, it extends that block instead, a different
                // store (it made this property fail about one run in five).
                noisy.apply_op(WorkerId(*w), op);
                if let KvOp::Stored(st) = op {
                    if !st.blocks.iter().any(|b| Some(b.engine_hash) == st.parent) {
                        noisy.apply_op(WorkerId(*w), op);
                    }
                }
                noisy.apply_op(WorkerId(*w), &KvOp::Removed(vec![EngineBlockHash(1_000 + w)]));
            }
            if let Step::Query(q) = s {
                let mut a = idx.find_matches(q).scores;
                let mut b = noisy.find_matches(q).scores;
                a.sort_unstable();
                b.sort_unstable();
                prop_assert_eq!(a, b);
            }
        }
        prop_assert_eq!(idx.num_entries(), noisy.num_entries());
    }

    /// A gap is reported exactly when an id is skipped; duplicates exactly when an id
    /// repeats; only in-order batches change the index.
    #[test]
    fn gap_detection_fires_exactly_on_skips(
        start in 0u64..1_000,
        deltas in prop::collection::vec(prop_oneof![6 => Just(1i64), 1 => Just(0), 1 => -3i64..0, 1 => 2i64..5], 1..60),
        resync_on_gap in any::<bool>(),
    ) {
        let w = WorkerId(1);
        let mut idx = KvIndexer::new();
        let mut id = start;
        let mut expected: Option<u64> = None;
        let mut applied = 0usize;
        for (k, d) in deltas.iter().enumerate() {
            id = id.saturating_add_signed(if k == 0 { 0 } else { *d });
            let op = KvOp::Stored(StoredBlocks {
                parent: None,
                salt: Salt::NONE,
                blocks: vec![StoredBlock { engine_hash: EngineBlockHash(id), local_hash: LocalBlockHash(id) }],
            });
            let before = idx.num_entries();
            let out = idx.apply(w, &EventBatch { event_id: id, ops: vec![op] });
            match expected {
                Some(e) if id > e => {
                    prop_assert_eq!(out, ApplyOutcome::Gap { expected: e, got: id });
                    prop_assert_eq!(idx.num_entries(), before);
                    prop_assert_eq!(idx.next_event_id(w), Some(e));
                    if resync_on_gap {
                        idx.reset_worker(w);
                        prop_assert_eq!(idx.num_entries(), 0);
                        applied = 0;
                        expected = None;
                    }
                }
                Some(e) if id < e => {
                    prop_assert_eq!(out, ApplyOutcome::Duplicate { expected: e });
                    prop_assert_eq!(idx.num_entries(), before);
                }
                _ => {
                    prop_assert!(matches!(out, ApplyOutcome::Applied(_)), "{:?}", out);
                    applied += 1;
                    expected = Some(id + 1);
                    prop_assert_eq!(idx.next_event_id(w), expected);
                }
            }
            prop_assert_eq!(idx.num_entries(), applied);
        }
    }
}

#[test]
fn worker_removal_frees_its_slot_for_reuse() {
    let mut idx = KvIndexer::new();
    let store = |e: u64| {
        KvOp::Stored(StoredBlocks {
            parent: None,
            salt: Salt::NONE,
            blocks: vec![StoredBlock {
                engine_hash: EngineBlockHash(e),
                local_hash: LocalBlockHash(5),
            }],
        })
    };
    idx.apply_op(WorkerId(1), &store(1));
    idx.apply_op(WorkerId(2), &store(2));
    let q = [chain(None, Salt::NONE, LocalBlockHash(5))];
    assert_eq!(idx.find_matches(&q).scores.len(), 2);
    assert!(idx.remove_worker(WorkerId(1)));
    assert!(!idx.remove_worker(WorkerId(1)));
    idx.add_worker(WorkerId(3));
    assert_eq!(idx.find_matches(&q).scores, vec![(WorkerId(2), 1)]);
    assert_eq!(idx.num_workers(), 2);
}
