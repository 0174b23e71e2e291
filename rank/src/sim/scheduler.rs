//! The scheduler, as vLLM v1 does it: one token budget per step shared by running
//! requests (decodes and unfinished prefill chunks, in order) and then waiting ones
//! (prefix-cache lookup, chunked prefill), under `max_num_seqs`; when blocks run out, the
//! last running request is preempted (blocks freed, recomputed later).
//!
//! It is pure and synchronous: [`Scheduler::step`] schedules, "runs" the step (sampling
//! one token for each sequence whose known tokens are all computed) and returns what
//! happened and the step's [`StepShape`] for the timing model. The engine actor owns it.

use super::blocks::{block_hash, BlockId, BlockPool, KvEvent};
use super::timing::StepShape;
use super::vocab::{Sampler, EOS};
use cohort_router::openai::FinishReason;
use std::collections::VecDeque;

/// A request's slot in the scheduler.
pub type Key = u32;

/// Limits of the scheduler and the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedConfig {
    /// Most requests running at once (`--max-num-seqs`).
    pub max_num_seqs: u32,
    /// Most tokens computed in one step (`--max-num-batched-tokens`).
    pub max_num_batched_tokens: u32,
    /// Tokens per KV block (`--block-size`).
    pub block_size: u32,
    /// KV blocks in the cache.
    pub num_blocks: u32,
    /// Longest sequence (prompt + output), tokens.
    pub max_model_len: u32,
    /// Reuse cached blocks of equal prefixes.
    pub prefix_caching: bool,
    /// Record KV events.
    pub kv_events: bool,
}

/// The disaggregation role of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    /// Compute everything here.
    Local,
    /// Prefill here and hold the blocks for a remote decode instance to pull.
    HoldForDecode,
    /// The prompt's KV is on a remote prefill instance: allocate blocks, wait for the
    /// engine to pull it ([`Scheduler::remote_ready`]), then decode.
    Pull,
}

/// What the engine submits.
#[derive(Debug)]
pub struct NewRequest<T> {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Most output tokens.
    pub max_tokens: u32,
    /// Output count at which an end-of-sequence token comes (`None`: never).
    pub stop_at: Option<u32>,
    /// Picks the output tokens.
    pub sampler: Sampler,
    /// Disaggregation role.
    pub remote: Remote,
    /// The engine's per-request state (its output sink).
    pub ctx: T,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    WaitingRemote,
    Running,
}

#[derive(Debug)]
struct Req<T> {
    tokens: Vec<u32>,
    prompt_len: u32,
    max_tokens: u32,
    stop_at: Option<u32>,
    sampler: Sampler,
    remote: Remote,
    state: State,
    num_computed: u32,
    blocks: Vec<BlockId>,
    hashes: Vec<u64>,
    num_cached_blocks: usize,
    cached_tokens: Option<u32>,
    output_len: u32,
    ctx: T,
}

/// A request that ended in a step.
#[derive(Debug)]
pub struct Finished<T> {
    /// Its slot (now free).
    pub key: Key,
    /// The engine's state for it.
    pub ctx: T,
    /// Its last token.
    pub token: u32,
    /// Why it ended.
    pub reason: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Output tokens.
    pub output_tokens: u32,
    /// Prompt tokens that were cached when it was first scheduled.
    pub cached_tokens: u32,
    /// For [`Remote::HoldForDecode`]: the blocks still held (release them with
    /// [`Scheduler::release`]).
    pub held: Option<Vec<BlockId>>,
}

/// What one step did.
#[derive(Debug, Default)]
pub struct StepResult<T> {
    /// The batch, for the timing model.
    pub shape: StepShape,
    /// New tokens of requests still running: (slot, token).
    pub tokens: Vec<(Key, u32)>,
    /// Requests that ended.
    pub finished: Vec<Finished<T>>,
    /// [`Remote::Pull`] requests whose blocks are now allocated: start their pulls.
    pub pulls: Vec<Key>,
    /// Requests preempted in this step.
    pub preempted: u32,
}

/// Counters the metrics read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStats {
    /// Tokens looked up in the prefix cache.
    pub prefix_queries: u64,
    /// Tokens found.
    pub prefix_hits: u64,
    /// Preemptions.
    pub preemptions: u64,
}

/// vLLM v1's scheduler over a [`BlockPool`].
#[derive(Debug)]
pub struct Scheduler<T> {
    cfg: SchedConfig,
    pool: BlockPool,
    slots: Vec<Option<Req<T>>>,
    free_slots: Vec<Key>,
    waiting: VecDeque<Key>,
    running: Vec<Key>,
    stats: SchedStats,
    scheduled: Vec<(Key, u32)>,
}

impl<T> Scheduler<T> {
    /// An empty scheduler over `cfg.num_blocks` free blocks.
    pub fn new(cfg: SchedConfig) -> Self {
        Scheduler {
            pool: BlockPool::new(cfg.num_blocks, cfg.kv_events),
            cfg,
            slots: Vec::new(),
            free_slots: Vec::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            stats: SchedStats::default(),
            scheduled: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SchedConfig {
        &self.cfg
    }

    /// The block pool (for metrics and tests).
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Counters.
    pub fn stats(&self) -> SchedStats {
        self.stats
    }

    /// Requests running.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Requests waiting (including those waiting for remote KV).
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether a step would do anything.
    pub fn has_work(&self) -> bool {
        !self.running.is_empty()
            || self
                .waiting
                .iter()
                .any(|&k| self.req(k).state != State::WaitingRemote)
    }

    /// Blocks a sequence of `tokens` tokens needs.
    pub fn blocks_for(&self, tokens: u32) -> u32 {
        tokens.div_ceil(self.cfg.block_size)
    }

    /// Queues a request and returns its slot. The caller has checked that
    /// `prompt + max_tokens` fits in `max_model_len` and in the cache.
    pub fn add(&mut self, r: NewRequest<T>) -> Key {
        let req = Req {
            prompt_len: r.prompt.len() as u32,
            tokens: r.prompt,
            max_tokens: r.max_tokens,
            stop_at: r.stop_at,
            sampler: r.sampler,
            remote: r.remote,
            state: State::Waiting,
            num_computed: 0,
            blocks: Vec::new(),
            hashes: Vec::new(),
            num_cached_blocks: 0,
            cached_tokens: None,
            output_len: 0,
            ctx: r.ctx,
        };
        let key = match self.free_slots.pop() {
            Some(k) => {
                self.slots[k as usize] = Some(req);
                k
            }
            None => {
                self.slots.push(Some(req));
                (self.slots.len() - 1) as Key
            }
        };
        self.waiting.push_back(key);
        key
    }

    /// The engine's state of a live request.
    pub fn ctx_mut(&mut self, key: Key) -> Option<&mut T> {
        self.slots
            .get_mut(key as usize)?
            .as_mut()
            .map(|r| &mut r.ctx)
    }

    /// Removes a request (its client went away) and frees its blocks.
    pub fn abort(&mut self, key: Key) -> Option<T> {
        let req = self.slots.get_mut(key as usize)?.take()?;
        self.free_slots.push(key);
        match req.state {
            State::Running => self.running.retain(|&k| k != key),
            State::Waiting | State::WaitingRemote => self.waiting.retain(|&k| k != key),
        }
        self.pool.free(&req.blocks);
        Some(req.ctx)
    }

    /// Drops the blocks a [`Remote::HoldForDecode`] request kept.
    pub fn release(&mut self, blocks: &[BlockId]) {
        self.pool.free(blocks);
    }

    /// The remote KV of a [`Remote::Pull`] request arrived: it continues as a local
    /// request whose prompt is computed but for its last token (recomputed for logits,
    /// as vLLM does).
    pub fn remote_ready(&mut self, key: Key) {
        let bs = self.cfg.block_size as usize;
        let Some(req) = self.slots.get_mut(key as usize).and_then(Option::as_mut) else {
            return;
        };
        if req.state != State::WaitingRemote {
            return;
        }
        req.num_computed = req.prompt_len.saturating_sub(1);
        req.cached_tokens = Some(req.num_computed);
        req.remote = Remote::Local;
        req.state = State::Waiting;
        let full = req.num_computed as usize / bs;
        Self::cache_blocks(&mut self.pool, req, full, bs);
    }

    /// Takes the KV events recorded since the last call.
    pub fn take_events(&mut self) -> Vec<KvEvent> {
        self.pool.take_events()
    }

    /// Whether KV events are waiting.
    pub fn has_events(&self) -> bool {
        self.pool.has_events()
    }

    /// Drops the prefix cache (only when idle).
    pub fn reset_prefix_cache(&mut self) -> bool {
        self.pool.reset_prefix_cache()
    }

    fn req(&self, key: Key) -> &Req<T> {
        self.slots[key as usize].as_ref().expect("live slot")
    }

    fn req_mut(&mut self, key: Key) -> &mut Req<T> {
        self.slots[key as usize].as_mut().expect("live slot")
    }

    /// Hashes of the first `n` full blocks of `req` (computed once).
    fn ensure_hashes(req: &mut Req<T>, n: usize, bs: usize) {
        while req.hashes.len() < n {
            let i = req.hashes.len();
            let parent = req.hashes.last().copied();
            req.hashes
                .push(block_hash(parent, &req.tokens[i * bs..(i + 1) * bs]));
        }
    }

    fn cache_blocks(pool: &mut BlockPool, req: &mut Req<T>, full: usize, bs: usize) {
        let full = full.min(req.blocks.len());
        if full <= req.num_cached_blocks {
            return;
        }
        Self::ensure_hashes(req, full, bs);
        for j in req.num_cached_blocks..full {
            let parent = j.checked_sub(1).map(|p| req.hashes[p]);
            pool.cache(
                req.blocks[j],
                req.hashes[j],
                parent,
                &req.tokens[j * bs..(j + 1) * bs],
            );
        }
        req.num_cached_blocks = full;
    }

    /// Cached leading blocks of `key`'s tokens (at most `tokens − 1` tokens' worth, so at
    /// least one token is computed).
    fn prefix_hits(&mut self, key: Key) -> Vec<BlockId> {
        if !self.cfg.prefix_caching {
            return Vec::new();
        }
        let bs = self.cfg.block_size as usize;
        let Some(req) = self.slots[key as usize].as_mut() else {
            return Vec::new();
        };
        let max_blocks = (req.tokens.len().saturating_sub(1)) / bs;
        Self::ensure_hashes(req, max_blocks, bs);
        let mut hits = Vec::new();
        for h in &req.hashes[..max_blocks] {
            match self.pool.lookup(*h) {
                Some(b) => hits.push(b),
                None => break,
            }
        }
        hits
    }

    /// Allocates the blocks `key` needs to hold `num_new` more computed tokens.
    fn allocate_slots(&mut self, key: Key, num_new: u32) -> bool {
        let req = self.slots[key as usize].as_ref().expect("live slot");
        let need = self.blocks_for(req.num_computed + num_new) as usize;
        let have = req.blocks.len();
        if need <= have {
            return true;
        }
        if (need - have) as u32 > self.pool.num_free() {
            return false;
        }
        for _ in have..need {
            let b = self.pool.allocate().expect("counted free blocks");
            self.req_mut(key).blocks.push(b);
        }
        true
    }

    fn preempt(&mut self, key: Key) {
        let pool = &mut self.pool;
        let req = self.slots[key as usize].as_mut().expect("live slot");
        pool.free(&req.blocks);
        req.blocks.clear();
        req.num_cached_blocks = 0;
        req.num_computed = 0;
        req.state = State::Waiting;
        self.waiting.push_front(key);
        self.stats.preemptions += 1;
    }

    /// Tries to admit waiting request `key` with `budget` tokens left; returns the tokens
    /// scheduled (0 when it could not be admitted: blocks ran out).
    fn admit(&mut self, key: Key, budget: u32, out: &mut StepResult<T>) -> Option<u32> {
        let bs = self.cfg.block_size;
        let fresh = {
            let r = self.req(key);
            r.blocks.is_empty() && r.num_computed == 0
        };
        let hits = if fresh {
            self.prefix_hits(key)
        } else {
            Vec::new()
        };
        let evictable = hits
            .iter()
            .filter(|&&b| self.pool.ref_count(b) == 0)
            .count() as u32;
        let hit_tokens = hits.len() as u32 * bs;
        let req = self.req(key);
        let computed = if fresh { hit_tokens } else { req.num_computed };
        let (num_new, target) = if req.remote == Remote::Pull {
            (0, req.prompt_len)
        } else {
            let n = (req.tokens.len() as u32 - computed).min(budget);
            (n, computed + n)
        };
        let need = self
            .blocks_for(target)
            .saturating_sub(req.blocks.len() as u32 + hits.len() as u32);
        if need + evictable > self.pool.num_free() {
            return None;
        }
        let first_time = req.cached_tokens.is_none();
        let total = req.tokens.len() as u64;
        let remote = req.remote;
        for &b in &hits {
            self.pool.touch(b);
        }
        let req = self.req_mut(key);
        if fresh {
            req.blocks = hits;
            req.num_cached_blocks = req.blocks.len();
            req.num_computed = hit_tokens;
        }
        if first_time && remote != Remote::Pull {
            req.cached_tokens = Some(hit_tokens);
            self.stats.prefix_queries += total;
            self.stats.prefix_hits += hit_tokens as u64;
        }
        for _ in 0..need {
            let b = self.pool.allocate().expect("counted free blocks");
            self.req_mut(key).blocks.push(b);
        }
        if remote == Remote::Pull {
            self.req_mut(key).state = State::WaitingRemote;
            out.pulls.push(key);
        }
        Some(num_new)
    }

    /// Schedules and runs one step.
    pub fn step(&mut self) -> StepResult<T> {
        let mut out = StepResult {
            shape: StepShape::default(),
            tokens: Vec::new(),
            finished: Vec::new(),
            pulls: Vec::new(),
            preempted: 0,
        };
        let mut scheduled = std::mem::take(&mut self.scheduled);
        scheduled.clear();
        let mut budget = self.cfg.max_num_batched_tokens;

        // 1. running requests, in order; preempt from the back when blocks run out
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let key = self.running[i];
            let r = self.req(key);
            let num_new = (r.tokens.len() as u32 - r.num_computed).min(budget);
            loop {
                if self.allocate_slots(key, num_new) {
                    scheduled.push((key, num_new));
                    budget -= num_new;
                    i += 1;
                    break;
                }
                let victim = self.running.pop().expect("running is not empty");
                self.preempt(victim);
                out.preempted += 1;
                if victim == key {
                    break;
                }
            }
        }

        // 2. waiting requests, unless this step preempted
        if out.preempted == 0 {
            let mut skipped = Vec::new();
            while budget > 0 && (self.running.len() as u32) < self.cfg.max_num_seqs {
                let Some(key) = self.waiting.pop_front() else {
                    break;
                };
                if self.req(key).state == State::WaitingRemote {
                    skipped.push(key);
                    continue;
                }
                match self.admit(key, budget, &mut out) {
                    None => {
                        self.waiting.push_front(key);
                        break;
                    }
                    Some(_) if self.req(key).state == State::WaitingRemote => skipped.push(key),
                    Some(n) => {
                        self.req_mut(key).state = State::Running;
                        self.running.push(key);
                        scheduled.push((key, n));
                        budget -= n;
                    }
                }
            }
            for key in skipped.into_iter().rev() {
                self.waiting.push_front(key);
            }
        }

        // 3. "execute": advance, cache full blocks, sample
        let bs = self.cfg.block_size as usize;
        let mut any_finished = false;
        for &(key, n) in &scheduled {
            let max_model_len = self.cfg.max_model_len;
            let req = self.slots[key as usize].as_mut().expect("live slot");
            out.shape.add(n, req.num_computed);
            req.num_computed += n;
            let full = req.num_computed as usize / bs;
            Self::cache_blocks(&mut self.pool, req, full, bs);
            if req.num_computed as usize != req.tokens.len() {
                continue; // a prefill chunk: no token yet
            }
            let token = if req.stop_at == Some(req.output_len + 1) {
                EOS
            } else {
                req.sampler.token(req.output_len)
            };
            req.tokens.push(token);
            req.output_len += 1;
            let reason = if token == EOS {
                Some(FinishReason::Stop)
            } else if req.output_len >= req.max_tokens || req.tokens.len() as u32 >= max_model_len {
                Some(FinishReason::Length)
            } else {
                None
            };
            match reason {
                None => out.tokens.push((key, token)),
                Some(reason) => {
                    any_finished = true;
                    let req = self.slots[key as usize].take().expect("live slot");
                    self.free_slots.push(key);
                    let held = if req.remote == Remote::HoldForDecode {
                        Some(req.blocks)
                    } else {
                        self.pool.free(&req.blocks);
                        None
                    };
                    out.finished.push(Finished {
                        key,
                        ctx: req.ctx,
                        token,
                        reason,
                        prompt_tokens: req.prompt_len,
                        output_tokens: req.output_len,
                        cached_tokens: req.cached_tokens.unwrap_or(0),
                        held,
                    });
                }
            }
        }
        if any_finished {
            let slots = &self.slots;
            self.running.retain(|&k| slots[k as usize].is_some());
        }
        self.scheduled = scheduled;
        out
    }

    /// Checks the reference counts against the blocks live requests and `held` lists
    /// hold; returns a description of the first mismatch.
    pub fn check_refcounts(&self, held: &[&[BlockId]]) -> Result<(), String> {
        let mut want = vec![0u32; self.pool.capacity() as usize];
        for r in self.slots.iter().flatten() {
            for &b in &r.blocks {
                want[b as usize] += 1;
            }
        }
        for h in held {
            for &b in *h {
                want[b as usize] += 1;
            }
        }
        for (b, &w) in want.iter().enumerate() {
            let got = self.pool.ref_count(b as BlockId);
            if got != w {
                return Err(format!("block {b}: reference count {got}, held by {w}"));
            }
        }
        let free = want.iter().filter(|&&w| w == 0).count() as u32;
        if free != self.pool.num_free() {
            return Err(format!(
                "{} blocks free, {free} unreferenced",
                self.pool.num_free()
            ));
        }
        Ok(())
    }
}
