//! Indexer benchmarks: the Mooncake trace replayed over 1,000 simulated workers of
//! 16,384 blocks each with LRU eviction (see `support/sim.rs`).
//!
//! `cargo bench -p cohort-kv --bench indexer`; besides criterion's report it prints the
//! figures docs/kv.md quotes: block events applied per second, `find_matches` latency
//! percentiles over the trace's queries, and index bytes per block.

#![allow(missing_docs)]

#[path = "support/alloc.rs"]
mod alloc;
#[path = "support/sim.rs"]
mod sim;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cohort_kv::hash::{chain, local_block_hash, BlockHash, EngineBlockHash, LocalBlockHash, Salt};
use cohort_kv::{
    EventBatch, KvIndexer, KvOp, MatchScratch, OverlapScores, StoredBlock, StoredBlocks, WorkerId,
};
use criterion::{criterion_group, criterion_main, Criterion};

const WORKERS: usize = 1_000;
const CAPACITY: usize = 16_384;

/// Fills the fleet and the index to steady state (every worker's cache full).
fn fill() -> (sim::Fleet, KvIndexer) {
    let trace = sim::load_trace();
    let mut fleet = sim::Fleet::new(WORKERS, CAPACITY, trace);
    let mut idx = KvIndexer::new();
    let live_before = alloc::live_bytes();
    while !fleet.full() {
        let (w, b) = fleet.next_batch();
        idx.apply(w, &b);
    }
    // Index memory = what it holds live; the fleet's own memory is measured apart by
    // dropping the index in `report_memory`.
    let _ = live_before;
    (fleet, idx)
}

#[allow(clippy::print_stderr)]
fn report(line: String) {
    eprintln!("cohort-kv bench: {line}");
}

fn bench_apply(c: &mut Criterion, fleet: &RefCell<sim::Fleet>, idx: &RefCell<KvIndexer>) {
    let queue: RefCell<VecDeque<(WorkerId, EventBatch)>> = RefCell::new(VecDeque::new());
    // (block events, wall time, time on the CPU)
    let totals = RefCell::new((0u64, Duration::ZERO, Duration::ZERO));
    let mut g = c.benchmark_group("indexer");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    // One iteration = one request's event batch (its evictions + its new blocks), on
    // the steady-state index. Batches are produced by the fleet outside the timed part.
    g.bench_function("apply_mooncake_batch_1000w_16k", |b| {
        b.iter_custom(|iters| {
            let mut fleet = fleet.borrow_mut();
            let mut idx = idx.borrow_mut();
            let mut queue = queue.borrow_mut();
            queue.clear();
            let mut events = 0;
            for _ in 0..iters {
                let (w, batch) = fleet.next_batch();
                events += sim::block_events(&batch);
                queue.push_back((w, batch));
            }
            let cpu_start = thread_cpu_time();
            let start = Instant::now();
            for (w, batch) in queue.iter() {
                black_box(idx.apply(*w, batch));
            }
            let took = start.elapsed();
            let on_cpu = thread_cpu_time()
                .zip(cpu_start)
                .map_or(took, |(end, start)| end.saturating_sub(start));
            let mut t = totals.borrow_mut();
            t.0 += events;
            t.1 += took;
            t.2 += on_cpu;
            took
        })
    });
    g.finish();
    let (events, took, on_cpu) = *totals.borrow();
    if events == 0 {
        return; // filtered out
    }
    report(format!(
        "apply: {events} block events in {took:.2?} = {:.2} M block events/s on one core \
         ({on_cpu:.2?} on the CPU = {:.2} M/s while running)",
        events as f64 / took.as_secs_f64() / 1e6,
        events as f64 / on_cpu.as_secs_f64() / 1e6,
    ));
}

/// Time this thread has run on a CPU (Linux: `/proc/thread-self/schedstat`), which,
/// unlike wall time, leaves out the time other processes had the core: the figure that
/// stays comparable on a shared machine.
fn thread_cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn bench_find_matches(c: &mut Criterion, fleet: &sim::Fleet, idx: &KvIndexer) {
    let trace = sim::load_trace();
    // The trace's requests as of the last complete pass: what the router would ask.
    let pass = fleet.pass().saturating_sub(1);
    let queries: Vec<Vec<BlockHash>> = trace.iter().map(|ids| sim::query(pass, ids)).collect();
    let mut scratch = MatchScratch::default();
    let mut out = OverlapScores::default();

    // Per-query latency distribution (each query timed alone).
    let mut lat: Vec<Duration> = Vec::with_capacity(queries.len() * 5);
    let mut matched = 0usize;
    let mut max_workers = 0usize;
    for _ in 0..5 {
        for q in &queries {
            let t = Instant::now();
            idx.find_matches_with(q, &mut scratch, &mut out);
            lat.push(t.elapsed());
            matched += usize::from(!out.scores.is_empty());
            max_workers = max_workers.max(out.scores.len());
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    report(format!(
        "find_matches over {} trace queries (x5): p50 {:.2?}, p99 {:.2?}, max {:.2?}; \
         {:.0}% matched some worker, up to {max_workers} workers per answer",
        queries.len(),
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1],
        100.0 * matched as f64 / lat.len() as f64,
    ));

    let mut g = c.benchmark_group("indexer");
    let mut i = 0;
    g.bench_function("find_matches_mooncake_1000w", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            idx.find_matches_with(black_box(&queries[i]), &mut scratch, &mut out);
            out.scores.len()
        })
    });
    g.finish();
}

#[cfg(feature = "zmq")]
/// `find_matches` through the indexer actor (`service`): what a router request pays,
/// the channel hop and task wake-ups included, one query at a time on an idle actor.
fn bench_actor_queries(fleet: &sim::Fleet, idx: KvIndexer) -> KvIndexer {
    use cohort_kv::service::{IndexerConfig, IndexerService};
    let trace = sim::load_trace();
    let pass = fleet.pass().saturating_sub(1);
    let queries: Vec<std::sync::Arc<[BlockHash]>> = trace
        .iter()
        .map(|ids| sim::query(pass, ids).into())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let service = IndexerService::spawn(idx, IndexerConfig::default());
        let handle = service.handle();
        let mut lat = Vec::with_capacity(queries.len() * 3);
        for _ in 0..3 {
            for q in &queries {
                let t = Instant::now();
                black_box(handle.find_matches(q.clone()).await.expect("actor runs"));
                lat.push(t.elapsed());
            }
        }
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        report(format!(
            "find_matches through the actor over {} trace queries (x3): p50 {:.2?}, p99 {:.2?}",
            queries.len(),
            pct(0.50),
            pct(0.99)
        ));
        service.shutdown().await.expect("actor ends cleanly")
    })
}

/// The worst case for the matcher: a 64-block prefix (e.g. a system prompt) held by
/// every one of the 1,000 workers, each also holding a different continuation.
fn bench_hot_prefix(c: &mut Criterion) {
    let mut idx = KvIndexer::new();
    let prefix: Vec<LocalBlockHash> = (0..64u64).map(|i| LocalBlockHash(i ^ 0xfeed)).collect();
    for w in 0..WORKERS as u64 {
        let mut blocks: Vec<StoredBlock> = prefix
            .iter()
            .enumerate()
            .map(|(i, &l)| StoredBlock {
                engine_hash: EngineBlockHash(i as u64),
                local_hash: l,
            })
            .collect();
        blocks.extend((0..16u64).map(|j| StoredBlock {
            engine_hash: EngineBlockHash(1_000 + j),
            local_hash: LocalBlockHash(w * 100 + j),
        }));
        idx.apply_op(
            WorkerId(w),
            &KvOp::Stored(StoredBlocks {
                parent: None,
                salt: Salt::NONE,
                blocks,
            }),
        );
    }
    let mut parent = None;
    let mut q: Vec<BlockHash> = prefix
        .iter()
        .map(|&l| {
            let h = chain(parent, Salt::NONE, l);
            parent = Some(h);
            h
        })
        .collect();
    // Continue along worker 7's suffix.
    for j in 0..16u64 {
        let h = chain(parent, Salt::NONE, LocalBlockHash(700 + j));
        parent = Some(h);
        q.push(h);
    }
    let mut scratch = MatchScratch::default();
    let mut out = OverlapScores::default();
    idx.find_matches_with(&q, &mut scratch, &mut out);
    assert_eq!(out.scores.len(), WORKERS);
    assert_eq!(out.get(WorkerId(7)), 80);
    let mut lat = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t = Instant::now();
        idx.find_matches_with(&q, &mut scratch, &mut out);
        lat.push(t.elapsed());
    }
    lat.sort_unstable();
    report(format!(
        "find_matches, 80-block query, 64-block prefix on all {WORKERS} workers: p50 {:.2?}, p99 {:.2?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    ));
    c.bench_function("indexer/find_matches_hot_prefix_1000w", |b| {
        b.iter(|| {
            idx.find_matches_with(black_box(&q), &mut scratch, &mut out);
            out.scores.len()
        })
    });
}

/// Hashing a 512-token block: the per-block cost paid in the subscriber tasks.
fn bench_hashing(c: &mut Criterion) {
    let tokens: Vec<u32> = (0..512u32)
        .map(|t| t.wrapping_mul(2_654_435_761) % 128_000)
        .collect();
    c.bench_function("hash/local_block_hash_512_tokens", |b| {
        b.iter(|| local_block_hash(black_box(&tokens)))
    });
    c.bench_function("hash/chain", |b| {
        b.iter(|| {
            chain(
                Some(BlockHash(black_box(42))),
                Salt::NONE,
                LocalBlockHash(black_box(7)),
            )
        })
    });
}

fn benches(c: &mut Criterion) {
    bench_hashing(c);
    bench_hot_prefix(c);
    let started = Instant::now();
    let base = alloc::live_bytes();
    let (fleet, idx) = fill();
    let with_index = alloc::live_bytes();
    report(format!(
        "fill: {} block events to reach steady state ({} passes of the trace) in {:.1?}",
        fleet.stored + fleet.removed,
        fleet.pass(),
        started.elapsed()
    ));
    let entries = idx.num_entries();
    let blocks = idx.num_blocks();
    let (fleet, idx) = (RefCell::new(fleet), RefCell::new(idx));
    {
        let idx = idx.borrow();
        bench_find_matches(c, &fleet.borrow(), &idx);
    }
    bench_apply(c, &fleet, &idx);
    #[cfg(feature = "zmq")]
    let idx = bench_actor_queries(&fleet.borrow(), idx.into_inner());
    #[cfg(not(feature = "zmq"))]
    let idx = idx.into_inner();
    // Memory: live heap bytes released by dropping the index alone.
    let before_drop = alloc::live_bytes();
    let (entries_now, blocks_now) = (idx.num_entries(), idx.num_blocks());
    drop(idx);
    let index_bytes = before_drop - alloc::live_bytes();
    report(format!(
        "memory: index holds {entries_now} (worker, block) entries over {blocks_now} distinct blocks \
         in {:.1} MiB = {:.1} bytes per indexed block entry ({:.1} per distinct block); \
         after fill: {entries} entries / {blocks} blocks, fleet+index {:.1} MiB over base",
        index_bytes as f64 / (1 << 20) as f64,
        index_bytes as f64 / entries_now as f64,
        index_bytes as f64 / blocks_now as f64,
        (with_index - base) as f64 / (1 << 20) as f64,
    ));
}

criterion_group!(indexer, benches);
criterion_main!(indexer);
