//! Scheduler and block-pool behaviour: prefix hits, chunked prefill, preemption,
//! `max_num_seqs`, the disaggregation hold/pull states, and — as a property — that no
//! request mix leaks a block or drives a reference count below zero.

use super::scheduler::{Key, NewRequest, Remote, SchedConfig, Scheduler, StepResult};
use super::vocab::Sampler;
use cohort_router::openai::FinishReason;
use proptest::prelude::*;
use std::collections::HashMap;

fn cfg(blocks: u32, budget: u32, seqs: u32) -> SchedConfig {
    SchedConfig {
        max_num_seqs: seqs,
        max_num_batched_tokens: budget,
        block_size: 4,
        num_blocks: blocks,
        max_model_len: blocks * 4,
        prefix_caching: true,
        kv_events: true,
    }
}

fn req(prompt: Vec<u32>, max_tokens: u32, tag: u32) -> NewRequest<u32> {
    let sampler = Sampler::new(Some(tag as u64), &prompt);
    NewRequest {
        prompt,
        max_tokens,
        stop_at: None,
        sampler,
        remote: Remote::Local,
        ctx: tag,
    }
}

/// Output tokens by tag, (finish reason, cached tokens) by tag, steps taken.
type Drained = (
    HashMap<u32, Vec<u32>>,
    HashMap<u32, (FinishReason, u32)>,
    u32,
);

/// Runs steps until idle; returns each tag's output tokens, finish info and step count.
fn drain(s: &mut Scheduler<u32>) -> Drained {
    let mut out: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut done = HashMap::new();
    let mut steps = 0;
    let mut tag_of: HashMap<Key, u32> = HashMap::new();
    while s.has_work() {
        steps += 1;
        assert!(steps < 10_000, "scheduler does not make progress");
        let r: StepResult<u32> = s.step();
        for (k, t) in &r.tokens {
            let tag = *s.ctx_mut(*k).unwrap();
            tag_of.insert(*k, tag);
            out.entry(tag).or_default().push(*t);
        }
        for f in r.finished {
            out.entry(f.ctx).or_default().push(f.token);
            done.insert(f.ctx, (f.reason, f.cached_tokens));
        }
        s.check_refcounts(&[]).unwrap();
    }
    (out, done, steps)
}

#[test]
fn second_identical_prompt_hits_the_prefix_cache() {
    let mut s = Scheduler::new(cfg(64, 64, 8));
    let prompt: Vec<u32> = (0..18).collect();
    s.add(req(prompt.clone(), 3, 1));
    let (_, done, _) = drain(&mut s);
    assert_eq!(done[&1], (FinishReason::Length, 0));
    s.add(req(prompt.clone(), 3, 2));
    let (_, done, _) = drain(&mut s);
    // 18 tokens: 4 full blocks (16 tokens) are reusable, the rest is recomputed
    assert_eq!(done[&2].1, 16);
    // a prompt that is exactly 4 blocks hits only 3: one token must be computed
    s.add(req((0..16).collect(), 1, 3));
    let (_, done, _) = drain(&mut s);
    assert_eq!(done[&3].1, 12);
    let st = s.stats();
    assert_eq!(st.prefix_queries, 18 + 18 + 16);
    assert_eq!(st.prefix_hits, 16 + 12);
    assert_eq!(s.pool().num_free(), 64);
}

#[test]
fn chunked_prefill_spreads_a_long_prompt_over_steps() {
    let mut s = Scheduler::new(cfg(64, 32, 8));
    s.add(req((100..200).collect(), 2, 1));
    let mut shapes = Vec::new();
    let mut first_token_step = None;
    for i in 0..10 {
        let r = s.step();
        shapes.push(r.shape.tokens);
        if first_token_step.is_none() && !r.tokens.is_empty() {
            first_token_step = Some(i);
        }
        if !s.has_work() {
            break;
        }
    }
    assert_eq!(shapes, vec![32, 32, 32, 4, 1]);
    assert_eq!(first_token_step, Some(3));
}

#[test]
fn decode_and_prefill_share_a_step_budget() {
    let mut s = Scheduler::new(cfg(64, 16, 8));
    s.add(req((0..8).collect(), 5, 1));
    let r = s.step();
    assert_eq!(r.shape.tokens, 8);
    s.add(req((50..90).collect(), 5, 2));
    let r = s.step();
    // the running request decodes 1 token; the new one gets the other 15
    assert_eq!(r.shape.tokens, 16);
    assert_eq!(r.shape.seqs, 2);
    assert_eq!(r.tokens.len(), 1);
}

#[test]
fn max_num_seqs_caps_the_running_set() {
    let mut s = Scheduler::new(cfg(64, 1000, 2));
    for t in 0..5 {
        s.add(req(vec![t * 7 + 1, 2, 3], 4, t));
    }
    let first = s.step();
    assert_eq!(s.num_running(), 2);
    assert_eq!(s.num_waiting(), 3);
    assert_eq!(first.tokens.len(), 2);
    let (mut out, done, _) = drain(&mut s);
    for (k, t) in first.tokens {
        out.get_mut(&k).unwrap().insert(0, t); // slots 0 and 1 are tags 0 and 1
    }
    assert_eq!(done.len(), 5);
    assert!(out.values().all(|o| o.len() == 4));
}

#[test]
fn preemption_recomputes_and_gives_the_same_output() {
    // Two requests that together outgrow 6 blocks of 4 tokens.
    let run = |blocks| {
        let mut s = Scheduler::new(cfg(blocks, 64, 8));
        s.add(req((0..6).collect(), 10, 1));
        s.add(req((10..16).collect(), 10, 2));
        let (out, done, _) = drain(&mut s);
        (out, done, s.stats().preemptions)
    };
    let (calm, _, p0) = run(64);
    let (tight, done, p1) = run(6);
    assert_eq!(p0, 0);
    assert!(p1 > 0, "expected preemptions with 6 blocks");
    assert_eq!(calm, tight, "preemption must not change the output");
    assert!(done.values().all(|(r, _)| *r == FinishReason::Length));
}

#[test]
fn eos_ends_with_stop() {
    let mut s = Scheduler::new(cfg(64, 64, 8));
    let mut r = req(vec![1, 2, 3], 10, 1);
    r.stop_at = Some(3);
    s.add(r);
    let (out, done, _) = drain(&mut s);
    assert_eq!(out[&1].len(), 3);
    assert_eq!(*out[&1].last().unwrap(), super::vocab::EOS);
    assert_eq!(done[&1].0, FinishReason::Stop);
}

#[test]
fn lru_evicts_the_oldest_free_blocks_and_reports_them() {
    let mut s = Scheduler::new(cfg(8, 64, 8));
    s.add(req((0..9).collect(), 1, 1)); // 3 blocks, 2 cached full
    drain(&mut s);
    let first_events = s.take_events();
    assert!(
        matches!(&first_events[0], super::KvEvent::Stored { hashes, parent: None, .. } if hashes.len() == 2)
    );
    s.add(req((100..125).collect(), 1, 2)); // 7 blocks: must evict cached ones
    drain(&mut s);
    let ev = s.take_events();
    let removed: usize = ev
        .iter()
        .map(|e| match e {
            super::KvEvent::Removed { hashes } => hashes.len(),
            _ => 0,
        })
        .sum();
    assert!(removed >= 1, "{ev:?}");
    // the first prompt's tail block went before its head block: the head survives longest
    s.add(req((0..9).collect(), 1, 3));
    let (_, done, _) = drain(&mut s);
    assert!(done[&3].1 <= 4);
}

#[test]
fn hold_then_release_and_pull_flow() {
    let mut s = Scheduler::new(cfg(16, 64, 8));
    let mut r = req((0..10).collect(), 1, 1);
    r.remote = Remote::HoldForDecode;
    s.add(r);
    let res = s.step();
    let held = res.finished[0].held.clone().unwrap();
    assert_eq!(held.len(), 3);
    s.check_refcounts(&[&held]).unwrap();
    assert_eq!(s.pool().num_free(), 13);
    s.release(&held);
    assert_eq!(s.pool().num_free(), 16);

    // decode side: blocks allocated up front, no compute until the KV "arrives"
    let mut d = Scheduler::new(cfg(16, 64, 8));
    let mut r = req((0..10).collect(), 3, 2);
    r.remote = Remote::Pull;
    let key = d.add(r);
    let res = d.step();
    assert_eq!(res.pulls, vec![key]);
    assert_eq!(res.shape.tokens, 0);
    assert_eq!(d.pool().num_free(), 13);
    assert!(!d.has_work());
    d.remote_ready(key);
    let res = d.step();
    assert_eq!(
        res.shape.tokens, 1,
        "only the last prompt token is recomputed"
    );
    let (_, done, _) = drain(&mut d);
    assert_eq!(done[&2], (FinishReason::Length, 9));
    assert_eq!(d.pool().num_free(), 16);
}

#[test]
fn abort_frees_everything() {
    let mut s = Scheduler::new(cfg(16, 8, 8));
    let a = s.add(req((0..20).collect(), 5, 1));
    let b = s.add(req((0..20).collect(), 5, 2));
    s.step();
    s.step();
    assert_eq!(s.abort(a), Some(1));
    assert_eq!(s.abort(a), None);
    s.check_refcounts(&[]).unwrap();
    assert_eq!(s.abort(b), Some(2));
    assert_eq!(s.pool().num_free(), 16);
}

#[derive(Debug, Clone)]
enum Op {
    Add {
        prefix: u8,
        len: u8,
        max_tokens: u8,
        hold: bool,
    },
    Step,
    Abort(u8),
    ReleaseHeld,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..4, 1u8..40, 1u8..12, any::<bool>())
            .prop_map(|(prefix, len, max_tokens, hold)| Op::Add { prefix, len, max_tokens, hold }),
        5 => Just(Op::Step),
        1 => any::<u8>().prop_map(Op::Abort),
        1 => Just(Op::ReleaseHeld),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever the mix of requests, aborts and holds: reference counts always match the
    /// holders (so none is ever negative), and once everything is done or released every
    /// block is free again.
    #[test]
    fn no_block_leaks_and_refcounts_stay_consistent(
        ops in proptest::collection::vec(op(), 1..80),
        blocks in 12u32..40,
        budget in 4u32..48,
        seqs in 1u32..6,
    ) {
        let mut s: Scheduler<u32> = Scheduler::new(SchedConfig {
            max_num_seqs: seqs,
            max_num_batched_tokens: budget,
            block_size: 4,
            num_blocks: blocks,
            max_model_len: 48,
            prefix_caching: true,
            kv_events: true,
        });
        let mut live: Vec<Key> = Vec::new();
        let mut held: Vec<Vec<u32>> = Vec::new();
        let mut tag = 0;
        let step = |s: &mut Scheduler<u32>, live: &mut Vec<Key>, held: &mut Vec<Vec<u32>>| {
            let r = s.step();
            for f in r.finished {
                live.retain(|&k| k != f.key);
                if let Some(h) = f.held { held.push(h) }
            }
        };
        for op in ops {
            match op {
                Op::Add { prefix, len, max_tokens, hold } => {
                    let len = (len as u32).min(48 - max_tokens as u32);
                    let prompt: Vec<u32> = (0..len).map(|i| if i < 8 { prefix as u32 } else { tag * 100 + i }).collect();
                    let mut r = req(prompt, max_tokens as u32, tag);
                    if hold { r.remote = Remote::HoldForDecode }
                    live.push(s.add(r));
                    tag += 1;
                }
                Op::Step => step(&mut s, &mut live, &mut held),
                Op::Abort(i) => {
                    if !live.is_empty() {
                        let k = live.remove(i as usize % live.len());
                        prop_assert!(s.abort(k).is_some());
                    }
                }
                Op::ReleaseHeld => {
                    if let Some(h) = held.pop() { s.release(&h) }
                }
            }
            let views: Vec<&[u32]> = held.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(s.check_refcounts(&views), Ok(()));
        }
        // Holds time out in the engine; here they are released as the drain goes, since
        // held blocks may be what a waiting request needs.
        for h in held.drain(..) { s.release(&h) }
        let mut guard = 0;
        while s.has_work() {
            step(&mut s, &mut live, &mut held);
            for h in held.drain(..) { s.release(&h) }
            guard += 1;
            prop_assert!(guard < 5000, "no progress");
        }
        for h in held.drain(..) { s.release(&h) }
        prop_assert!(live.is_empty());
        prop_assert_eq!(s.pool().num_free(), blocks);
        prop_assert_eq!(s.check_refcounts(&[]), Ok(()));
    }
}
