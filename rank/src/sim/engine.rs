//! The engine actor: one task owns the scheduler, the block pool, the held prefill
//! blocks and the metrics, and runs steps on the simulated clock.
//!
//! HTTP handlers talk to it through an [`EngineHandle`] (a channel); each request has an
//! output channel of [`Out`] events. With a finite `--speedup`, a step's tokens are
//! delivered when its simulated time has passed on the wall clock (divided by the
//! speedup); with `inf`, steps run back to back.

use super::blocks::{BlockId, KvEvent};
use super::config::SimConfig;
use super::disagg::{self, PullReply, PullSpec};
use super::error::ApiError;
use super::metrics::{self, EngineMetrics, Gauges, HttpStats};
use super::scheduler::{Key, NewRequest, Remote, Scheduler};
use super::vocab::Sampler;
use cohort_router::openai::{BlockIds, FinishReason, KvTransferParams};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// One event of a request's output stream.
#[derive(Debug)]
pub(crate) enum Out {
    /// A new token of prompt `idx`.
    Token { idx: u32, token: u32 },
    /// The last token of prompt `idx`, and how it ended.
    Done {
        idx: u32,
        token: u32,
        info: Box<DoneInfo>,
    },
    /// Prompt `idx` failed (e.g. its remote KV could not be pulled).
    Failed { error: ApiError },
}

/// How a prompt ended.
#[derive(Debug)]
pub(crate) struct DoneInfo {
    pub reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cached_tokens: u32,
    pub kv_transfer_params: Option<KvTransferParams>,
}

/// The disaggregation part of a submission.
#[derive(Debug)]
pub(crate) enum RemoteSpec {
    Local,
    /// Hold the blocks after prefill under this request id.
    Hold(String),
    /// Pull the prompt's KV from a prefill instance first.
    Pull(PullSpec),
}

/// One prompt for the engine.
#[derive(Debug)]
pub(crate) struct Submission {
    pub id: u64,
    pub idx: u32,
    pub prompt: Vec<u32>,
    pub max_tokens: u32,
    pub stop_at: Option<u32>,
    pub sampler: Sampler,
    pub remote: RemoteSpec,
    pub sink: mpsc::UnboundedSender<Out>,
}

pub(crate) enum Cmd {
    Submit(Vec<Submission>),
    Abort(Vec<u64>),
    Pull {
        request_id: String,
        reply: oneshot::Sender<Result<PullReply, String>>,
    },
    Metrics(oneshot::Sender<String>),
    ResetPrefixCache(oneshot::Sender<bool>),
}

/// A cloneable way to reach the engine task.
#[derive(Debug, Clone)]
pub(crate) struct EngineHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Submit(_) => "Submit",
            Cmd::Abort(_) => "Abort",
            Cmd::Pull { .. } => "Pull",
            Cmd::Metrics(_) => "Metrics",
            Cmd::ResetPrefixCache(_) => "ResetPrefixCache",
        })
    }
}

impl EngineHandle {
    /// Queues prompts; false when the engine is gone.
    pub(crate) fn submit(&self, subs: Vec<Submission>) -> bool {
        self.tx.send(Cmd::Submit(subs)).is_ok()
    }

    /// Drops requests whose client went away.
    pub(crate) fn abort(&self, ids: Vec<u64>) {
        let _ = self.tx.send(Cmd::Abort(ids));
    }

    /// Hands over held blocks to a decode instance (frees them here).
    pub(crate) async fn pull(&self, request_id: String) -> Result<PullReply, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Pull { request_id, reply })
            .map_err(|_| "engine stopped".to_string())?;
        rx.await.map_err(|_| "engine stopped".to_string())?
    }

    /// The Prometheus text of the engine's metrics.
    pub(crate) async fn metrics(&self) -> Option<String> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Metrics(reply)).ok()?;
        rx.await.ok()
    }

    /// Drops the prefix cache; false while requests run.
    pub(crate) async fn reset_prefix_cache(&self) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::ResetPrefixCache(reply)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

/// Per-request state the engine keeps in the scheduler.
#[derive(Debug)]
struct ReqCtx {
    id: u64,
    idx: u32,
    sink: mpsc::UnboundedSender<Out>,
    arrival: f64,
    first: Option<f64>,
    last: f64,
    hold: Option<String>,
    pull: Option<PullSpec>,
}

struct Held {
    blocks: Vec<BlockId>,
    tokens: u32,
}

/// Why an idle engine woke up.
enum Wake {
    Cmd(Cmd),
    Transfer(Transfer),
    Timer,
}

/// What a finished transfer task reports.
type Transfer = (u64, Result<(PullReply, f64), String>);

/// Where an instance is reachable, for `kv_transfer_params`.
#[derive(Debug, Clone)]
pub(crate) struct EngineIdentity {
    pub engine_id: String,
    pub index: u32,
    pub port: u16,
}

struct Engine {
    cfg: Arc<SimConfig>,
    me: EngineIdentity,
    sched: Scheduler<ReqCtx>,
    ids: HashMap<u64, Key>,
    held: HashMap<String, Held>,
    held_order: VecDeque<(Instant, String)>,
    held_blocks: u64,
    metrics: EngineMetrics,
    http: Arc<HttpStats>,
    now: f64,
    start: Instant,
    transfers: JoinSet<Transfer>,
    events: Option<mpsc::UnboundedSender<Vec<KvEvent>>>,
    burst: u32,
    burst_start: std::time::Instant,
}

/// With `--speedup inf`, most steps run before the engine yields to the connections.
const INF_BURST_STEPS: u32 = 64;
/// With `--speedup inf`, most wall time the engine runs steps before yielding.
const INF_BURST_TIME: Duration = Duration::from_micros(200);

/// Starts the engine task in `tasks`; it ends when every handle is dropped or
/// `shutdown` turns true.
pub(crate) fn spawn(
    cfg: Arc<SimConfig>,
    me: EngineIdentity,
    http: Arc<HttpStats>,
    events: Option<mpsc::UnboundedSender<Vec<KvEvent>>>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> EngineHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = Engine {
        sched: Scheduler::new(cfg.sched),
        cfg,
        me,
        ids: HashMap::new(),
        held: HashMap::new(),
        held_order: VecDeque::new(),
        held_blocks: 0,
        metrics: EngineMetrics::default(),
        http,
        now: 0.0,
        start: Instant::now(),
        transfers: JoinSet::new(),
        events,
        burst: 0,
        burst_start: std::time::Instant::now(),
    };
    tasks.spawn(engine.run(rx, shutdown));
    EngineHandle { tx }
}

impl Engine {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Cmd>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let finite = self.cfg.speedup.is_finite();
        loop {
            if !self.sched.has_work() {
                let expiry = self.held_order.front().map(|(t, _)| *t);
                let woke = tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(cmd) => Wake::Cmd(cmd),
                        None => break,
                    },
                    Some(done) = self.transfers.join_next(), if !self.transfers.is_empty() => {
                        match done { Ok(done) => Wake::Transfer(done), Err(_) => Wake::Timer }
                    }
                    _ = sleep_until_opt(expiry) => Wake::Timer,
                    _ = shutdown.changed() => break,
                };
                if finite {
                    // simulated time does not stand still while idle
                    self.now = self
                        .now
                        .max(self.start.elapsed().as_secs_f64() * self.cfg.speedup);
                }
                match woke {
                    Wake::Cmd(cmd) => self.command(cmd),
                    Wake::Transfer(done) => self.transfer_done(done),
                    Wake::Timer => {}
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            while let Some(done) = self.transfers.try_join_next() {
                if let Ok(done) = done {
                    self.transfer_done(done);
                }
            }
            self.expire_holds();
            if *shutdown.borrow() {
                break;
            }
            if self.sched.has_work() {
                self.step(finite).await;
            }
        }
    }

    async fn step(&mut self, finite: bool) {
        let res = self.sched.step();
        let dt = self.cfg.timing.step_time(&res.shape).total;
        self.now += dt;
        if finite {
            let at = self.start + Duration::from_secs_f64(self.now / self.cfg.speedup);
            tokio::time::sleep_until(at).await;
        } else {
            // No simulated time: run steps in bursts, then let the connections write what
            // accumulated (one write per burst instead of one per token).
            self.burst += 1;
            if self.burst >= INF_BURST_STEPS || self.burst_start.elapsed() >= INF_BURST_TIME {
                tokio::task::yield_now().await;
                self.burst = 0;
                self.burst_start = std::time::Instant::now();
            }
        }
        let now = self.now;
        for (key, token) in res.tokens {
            let Some(ctx) = self.sched.ctx_mut(key) else {
                continue;
            };
            match ctx.first {
                None => {
                    ctx.first = Some(now);
                    self.metrics.ttft.observe(now - ctx.arrival);
                }
                Some(_) => self.metrics.itl.observe(now - ctx.last),
            }
            ctx.last = now;
            let _ = ctx.sink.send(Out::Token {
                idx: ctx.idx,
                token,
            });
        }
        for f in res.finished {
            let ctx = f.ctx;
            self.ids.remove(&ctx.id);
            match ctx.first {
                None => self.metrics.ttft.observe(now - ctx.arrival),
                Some(_) => self.metrics.itl.observe(now - ctx.last),
            }
            self.metrics.e2e.observe(now - ctx.arrival);
            self.metrics.prompt_tokens += f.prompt_tokens as u64;
            self.metrics.generation_tokens += f.output_tokens as u64;
            self.metrics.finish(f.reason);
            let kv_transfer_params = match (f.held, ctx.hold) {
                (Some(blocks), Some(name)) => Some(self.hold(name, blocks, f.prompt_tokens)),
                (Some(blocks), None) => {
                    self.sched.release(&blocks);
                    None
                }
                _ => None,
            };
            let info = DoneInfo {
                reason: f.reason,
                prompt_tokens: f.prompt_tokens,
                completion_tokens: f.output_tokens,
                cached_tokens: f.cached_tokens,
                kv_transfer_params,
            };
            let _ = ctx.sink.send(Out::Done {
                idx: ctx.idx,
                token: f.token,
                info: Box::new(info),
            });
        }
        for key in res.pulls {
            let Some(ctx) = self.sched.ctx_mut(key) else {
                continue;
            };
            let (id, spec) = (ctx.id, ctx.pull.take());
            if let Some(spec) = spec {
                let (speedup, domain, hw) = (
                    self.cfg.speedup,
                    self.cfg.nvlink_domain.clone(),
                    self.cfg.hardware,
                );
                self.transfers.spawn(async move {
                    let r = disagg::pull(&spec).await.map(|reply| {
                        let bw = if reply.nvlink_domain == domain {
                            hw.nvlink_bw / 2.0
                        } else {
                            hw.nic_bw
                        };
                        let secs = reply.bytes_per_gpu as f64 / bw;
                        (reply, secs)
                    });
                    if let Ok((_, secs)) = &r {
                        if speedup.is_finite() {
                            tokio::time::sleep(Duration::from_secs_f64(secs / speedup)).await;
                        }
                    }
                    (id, r)
                });
            }
        }
        if let Some(tx) = &self.events {
            if self.sched.has_events() {
                let _ = tx.send(self.sched.take_events());
            }
        }
    }

    fn hold(&mut self, name: String, blocks: Vec<BlockId>, tokens: u32) -> KvTransferParams {
        let params = KvTransferParams {
            do_remote_decode: false,
            do_remote_prefill: true,
            remote_engine_id: Some(self.me.engine_id.clone()),
            remote_block_ids: Some(BlockIds::Flat(blocks.clone())),
            remote_host: Some(self.cfg.advertise_host.clone()),
            remote_port: Some(self.me.port),
            tp_size: Some(self.cfg.tp),
            remote_request_id: Some(name.clone()),
            ..KvTransferParams::default()
        };
        let deadline = Instant::now() + Duration::from_secs_f64(self.cfg.hold_timeout_s.max(0.0));
        self.held_blocks += blocks.len() as u64;
        if let Some(old) = self.held.insert(name.clone(), Held { blocks, tokens }) {
            self.held_blocks -= old.blocks.len() as u64;
            self.sched.release(&old.blocks);
        }
        self.held_order.push_back((deadline, name));
        params
    }

    fn expire_holds(&mut self) {
        let now = Instant::now();
        while let Some((t, _)) = self.held_order.front() {
            if *t > now {
                break;
            }
            let (_, name) = self.held_order.pop_front().expect("front exists");
            if let Some(h) = self.held.remove(&name) {
                self.held_blocks -= h.blocks.len() as u64;
                self.sched.release(&h.blocks);
                self.metrics.kv_holds_expired += 1;
            }
        }
    }

    fn transfer_done(&mut self, (id, r): Transfer) {
        let Some(&key) = self.ids.get(&id) else {
            return;
        };
        match r {
            Ok((reply, secs)) => {
                self.metrics.kv_transfer_blocks += reply.num_blocks as u64;
                self.metrics.kv_transfer_bytes += reply.bytes_per_gpu;
                self.metrics.kv_transfer_time.observe(secs);
                self.sched.remote_ready(key);
            }
            Err(message) => {
                self.metrics.kv_transfer_failures += 1;
                self.ids.remove(&id);
                if let Some(ctx) = self.sched.abort(key) {
                    let error = ApiError::bad_request(message).param("kv_transfer_params");
                    let _ = ctx.sink.send(Out::Failed { error });
                }
            }
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Submit(subs) => {
                for s in subs {
                    let (remote, hold, pull) = match s.remote {
                        RemoteSpec::Local => (Remote::Local, None, None),
                        RemoteSpec::Hold(name) => (Remote::HoldForDecode, Some(name), None),
                        RemoteSpec::Pull(spec) => (Remote::Pull, None, Some(spec)),
                    };
                    let ctx = ReqCtx {
                        id: s.id,
                        idx: s.idx,
                        sink: s.sink,
                        arrival: self.now,
                        first: None,
                        last: self.now,
                        hold,
                        pull,
                    };
                    let key = self.sched.add(NewRequest {
                        prompt: s.prompt,
                        max_tokens: s.max_tokens,
                        stop_at: s.stop_at,
                        sampler: s.sampler,
                        remote,
                        ctx,
                    });
                    self.ids.insert(s.id, key);
                }
            }
            Cmd::Abort(ids) => {
                for id in ids {
                    if let Some(key) = self.ids.remove(&id) {
                        if self.sched.abort(key).is_some() {
                            self.metrics.finish(FinishReason::Abort);
                        }
                    }
                }
            }
            Cmd::Pull { request_id, reply } => {
                let r = match self.held.remove(&request_id) {
                    Some(h) => {
                        self.held_blocks -= h.blocks.len() as u64;
                        self.sched.release(&h.blocks);
                        self.metrics.kv_pulls_served += 1;
                        Ok(PullReply {
                            num_blocks: h.blocks.len() as u32,
                            num_tokens: h.tokens,
                            bytes_per_gpu: (h.tokens as f64 * self.cfg.timing.kv_bytes_per_token())
                                as u64,
                            nvlink_domain: self.cfg.nvlink_domain.clone(),
                            engine_id: self.me.engine_id.clone(),
                        })
                    }
                    None => Err(format!(
                        "no KV blocks are held for request `{request_id}` on engine `{}`: unknown, \
                         already pulled, or freed after the {} s hold timeout",
                        self.me.engine_id, self.cfg.hold_timeout_s
                    )),
                };
                let _ = reply.send(r);
            }
            Cmd::Metrics(reply) => {
                let st = self.sched.stats();
                let g = Gauges {
                    running: self.sched.num_running(),
                    waiting: self.sched.num_waiting(),
                    kv_usage: self.sched.pool().usage(),
                    prefix_queries: st.prefix_queries,
                    prefix_hits: st.prefix_hits,
                    preemptions: st.preemptions,
                    num_blocks: self.sched.config().num_blocks,
                    held_blocks: self.held_blocks,
                };
                let text = metrics::render(
                    &self.metrics,
                    &g,
                    &self.http,
                    &self.cfg.served_name,
                    self.me.index,
                );
                let _ = reply.send(text);
            }
            Cmd::ResetPrefixCache(reply) => {
                let ok = self.sched.reset_prefix_cache();
                if ok {
                    if let Some(tx) = &self.events {
                        let _ = tx.send(self.sched.take_events());
                    }
                }
                let _ = reply.send(ok);
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
