//! One sweep point: dispatch (closed loop, open loop or replay), measure, collect.
//!
//! Three parts run at once, each owned by the point:
//! - a *preparer* (blocking thread) drains the dataset's [`Source`](crate::dataset::Source)
//!   into a bounded queue, so bodies exist before their requests are due;
//! - a *dispatcher*: for the closed loop an async loop gated by a semaphore of
//!   `concurrency` permits; for the open loop and replay a dedicated thread that sleeps
//!   with the OS's high-resolution timer (tokio's timer has millisecond granularity) until
//!   each due time and then spawns the request on the runtime;
//! - the *collector* (the calling task) folds records into the
//!   [`Accumulator`], logs them, drives progress and periodic partial checkpoints.
//!
//! Every request task is tracked by a `TaskTracker` and observes the stop token.

use crate::client::{Client, RecordMeta};
use crate::dataset::{BodyBuilder, Dataset, PreparedRequest};
use crate::error::BenchError;
use crate::metrics::{process_cpu_seconds, Accumulator};
use crate::progress::{Progress, Snapshot};
use crate::record::RequestRecord;
use crate::settings::{Arrival, Limit, Slo};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long the preparer may run ahead of the dispatcher, in requests.
const LOOKAHEAD: usize = 512;
/// Requests the preparer hands over at once.
const BATCH: usize = 32;
/// How often the point in progress is written out, marked partial.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// What one sweep point does.
#[derive(Debug, Clone, PartialEq)]
pub enum PointKind {
    /// Closed loop at this concurrency.
    Concurrency(u32),
    /// Open loop at this rate (requests/s).
    Rate {
        /// Requests per second.
        rate: f64,
        /// Spacing of arrivals.
        arrival: Arrival,
        /// Most in flight at once.
        max_concurrency: Option<u32>,
    },
    /// Trace replay at this speed factor.
    Replay {
        /// Timestamps are divided by this.
        speed: f64,
        /// Most in flight at once.
        max_concurrency: Option<u32>,
    },
}

/// A sweep point: its label (used in file names) and what it does.
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    /// `c8`, `r50`, `replay-x10`.
    pub label: String,
    /// The load.
    pub kind: PointKind,
}

/// Everything the points of a run share.
#[derive(Debug, Clone)]
pub(crate) struct PointCtx {
    pub(crate) client: Client,
    pub(crate) dataset: Dataset,
    pub(crate) builder: BodyBuilder,
    pub(crate) seed: u64,
    pub(crate) limit: Limit,
    pub(crate) warmup: u64,
    pub(crate) ramp_up: Option<Duration>,
    pub(crate) slo: Slo,
    /// Cuts requests in flight. A stop (the `stop` of [`run_point`]) only ends issuing;
    /// this ends what was issued, at once or after a drain grace the caller chooses.
    pub(crate) cut: CancellationToken,
}

/// What a point measured.
#[derive(Debug, Clone)]
pub(crate) struct PointRun {
    pub(crate) acc: Accumulator,
    /// Cut by a stop before its limit.
    pub(crate) partial: bool,
    /// CPU seconds this process used during the point.
    pub(crate) cpu_s: Option<f64>,
}

/// Where a running point sends what it sees.
pub(crate) trait PointSink {
    /// One finished request.
    fn record(&mut self, r: &RequestRecord) -> Result<(), BenchError>;
    /// The point so far, to be written marked partial.
    fn checkpoint(&mut self, acc: &Accumulator, cpu_s: Option<f64>) -> Result<(), BenchError>;
}

/// Runs one point to its limit or until `stop`.
pub(crate) async fn run_point(
    ctx: &PointCtx,
    spec: &PointSpec,
    stop: &CancellationToken,
    progress: &mut Progress,
    sink: &mut (dyn PointSink + Send),
) -> Result<PointRun, BenchError> {
    let replay = matches!(spec.kind, PointKind::Replay { .. });
    let measured = ctx.limit.requests;
    let mut total = measured.map(|n| n + ctx.warmup);
    if let (Some(len), false) = (ctx.dataset.len(), replay) {
        // Finite datasets cycle; with neither limit, one pass.
        if total.is_none() && ctx.limit.duration.is_none() {
            total = Some(len as u64);
        }
    }
    if replay {
        let len = ctx.dataset.len().unwrap_or(0) as u64;
        total = Some(total.map_or(len, |t| t.min(len)));
    }

    // The preparer: batches, so that it is woken once per `BATCH` requests taken, not
    // once per request (a context switch each on a loaded core).
    let (req_tx, req_rx) = mpsc::channel::<Vec<PreparedRequest>>(LOOKAHEAD / BATCH);
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let mut source = ctx
        .dataset
        .source(ctx.seed, ctx.builder.clone(), !replay)
        .take(total.map_or(usize::MAX, |t| t as usize));
    let preparer = tokio::task::spawn_blocking(move || {
        let mut ready = Some(ready_tx);
        let mut n = 0usize;
        loop {
            let batch: Vec<PreparedRequest> = source.by_ref().take(BATCH).collect();
            if batch.is_empty() {
                break;
            }
            n += batch.len();
            if req_tx.blocking_send(batch).is_err() {
                break;
            }
            if n >= LOOKAHEAD {
                if let Some(t) = ready.take() {
                    let _ = t.send(());
                }
            }
        }
    });
    let req_rx = Prepared {
        rx: req_rx,
        batch: Vec::new().into_iter(),
    };
    // Start once the queue is full (or the dataset is exhausted): no synthesis is left
    // for the first requests' send path.
    let _ = ready_rx.await;

    progress.start_point(&spec.label, total.map(|t| t.saturating_sub(ctx.warmup)));
    let cpu0 = process_cpu_seconds();
    let origin = Instant::now();
    let issued = Arc::new(AtomicU64::new(0));
    let tracker = TaskTracker::new();
    let (rec_tx, mut rec_rx) = mpsc::unbounded_channel::<RequestRecord>();
    let shared = Dispatch {
        client: ctx.client.clone(),
        tracker: tracker.clone(),
        rec_tx,
        stop: stop.clone(),
        cut: ctx.cut.clone(),
        origin,
        issued: issued.clone(),
        total,
        warmup: ctx.warmup,
        deadline: ctx.limit.duration,
    };

    let mut ramp_task = None;
    let dispatcher = match &spec.kind {
        PointKind::Concurrency(c) => {
            let sem = Arc::new(Semaphore::new(0));
            ramp_task = Some(tokio::spawn(ramp(sem.clone(), *c, ctx.ramp_up, origin)));
            tokio::spawn(closed_loop(shared, req_rx, sem))
        }
        PointKind::Rate {
            rate,
            arrival,
            max_concurrency,
        } => {
            let sched = crate::arrival::Schedule::new(*rate, *arrival, ctx.ramp_up, ctx.seed);
            let sem = max_concurrency.map(|m| Arc::new(Semaphore::new(m as usize)));
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                open_loop(shared, req_rx, Pace::Schedule(sched), sem, handle)
            })
        }
        PointKind::Replay {
            speed,
            max_concurrency,
        } => {
            let sem = max_concurrency.map(|m| Arc::new(Semaphore::new(m as usize)));
            let handle = tokio::runtime::Handle::current();
            let speed = *speed;
            tokio::task::spawn_blocking(move || {
                open_loop(shared, req_rx, Pace::Replay(speed), sem, handle)
            })
        }
    };

    // The collector.
    let mut acc = Accumulator::default();
    let mut tick = tokio::time::interval(progress.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_checkpoint = Instant::now();
    let mut checkpoint_failures = 0u64;
    let mut sink_error = None;
    loop {
        tokio::select! {
            r = rec_rx.recv() => match r {
                Some(rec) => {
                    acc.add(&rec, &ctx.slo);
                    if sink_error.is_none() {
                        if let Err(e) = sink.record(&rec) {
                            // Stop issuing; report the error once everything is reaped.
                            stop.cancel();
                            ctx.cut.cancel();
                            sink_error = Some(e);
                        }
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                progress.update(&snapshot(&acc, &issued, origin));
                if last_checkpoint.elapsed() >= CHECKPOINT_EVERY && sink_error.is_none() {
                    last_checkpoint = Instant::now();
                    let cpu = cpu0.zip(process_cpu_seconds()).map(|(a, b)| b - a);
                    // A checkpoint only insures against a cut run: losing one (a full
                    // disk for a moment) is said, and the next one tries again; the
                    // point's final files are written (and checked) at its end.
                    if let Err(e) = sink.checkpoint(&acc, cpu) {
                        checkpoint_failures += 1;
                        if checkpoint_failures == 1 || checkpoint_failures.is_multiple_of(30) {
                            progress.warn(&format!(
                                "partial checkpoint not written ({checkpoint_failures} so far), \
                                 the run goes on: {e}"
                            ));
                        }
                    }
                }
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    let _ = dispatcher.await;
    if let Some(r) = ramp_task {
        r.abort();
        let _ = r.await;
    }
    let _ = preparer.await;
    let cpu_s = cpu0.zip(process_cpu_seconds()).map(|(a, b)| b - a);
    progress.finish_point(&snapshot(&acc, &issued, origin));
    if let Some(e) = sink_error {
        return Err(e);
    }
    Ok(PointRun {
        partial: stop.is_cancelled(),
        acc,
        cpu_s,
    })
}

fn snapshot(acc: &Accumulator, issued: &AtomicU64, origin: Instant) -> Snapshot {
    Snapshot {
        issued: issued.load(Ordering::Relaxed),
        done: acc.completed + acc.failed,
        errors: acc.failed,
        elapsed: origin.elapsed(),
        p50_ttft_ms: (acc.ttft.count() > 0).then(|| acc.ttft.pct_ms(50.0)),
        p99_lag_ms: (acc.lag.count() > 0).then(|| acc.lag.pct_ms(99.0)),
    }
}

/// What a dispatcher needs.
struct Dispatch {
    client: Client,
    tracker: TaskTracker,
    rec_tx: mpsc::UnboundedSender<RequestRecord>,
    stop: CancellationToken,
    cut: CancellationToken,
    origin: Instant,
    issued: Arc<AtomicU64>,
    total: Option<u64>,
    warmup: u64,
    deadline: Option<Duration>,
}

impl Dispatch {
    fn exhausted(&self, n: u64) -> bool {
        self.total.is_some_and(|t| n >= t)
    }

    /// Spawns request `index` on `handle`; it holds `permit` until it ends.
    fn spawn(
        &self,
        handle: &tokio::runtime::Handle,
        req: PreparedRequest,
        index: u64,
        due: Option<Duration>,
        gate: Gate,
    ) {
        let client = self.client.clone();
        let tx = self.rec_tx.clone();
        let stop = self.stop.clone();
        let cut = self.cut.clone();
        let origin = self.origin;
        let meta = RecordMeta {
            index,
            warmup: index < self.warmup,
            due,
        };
        self.tracker.spawn_on(
            async move {
                let _permit = match gate {
                    Gate::Held(p) => Some(p),
                    Gate::Wait(sem) => tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        p = sem.acquire_owned() => p.ok(),
                    },
                    Gate::Open => None,
                };
                let rec = client.send(req, meta, origin, &cut).await;
                let _ = tx.send(rec);
            },
            handle,
        );
        self.issued.store(index + 1, Ordering::Relaxed);
    }
}

enum Gate {
    Held(tokio::sync::OwnedSemaphorePermit),
    Wait(Arc<Semaphore>),
    Open,
}

/// Adds the closed loop's permits: all at once, or one by one over the ramp.
async fn ramp(sem: Arc<Semaphore>, c: u32, ramp_up: Option<Duration>, origin: Instant) {
    match ramp_up {
        None => sem.add_permits(c as usize),
        Some(r) => {
            for k in 0..c {
                let at = origin + r.mul_f64(f64::from(k) / f64::from(c));
                tokio::time::sleep_until(at.into()).await;
                sem.add_permits(1);
            }
        }
    }
}

/// The dispatcher's end of the preparer's queue: batches, taken one request at a time.
struct Prepared {
    rx: mpsc::Receiver<Vec<PreparedRequest>>,
    batch: std::vec::IntoIter<PreparedRequest>,
}

impl Prepared {
    async fn recv(&mut self) -> Option<PreparedRequest> {
        loop {
            if let Some(r) = self.batch.next() {
                return Some(r);
            }
            self.batch = self.rx.recv().await?.into_iter();
        }
    }

    fn blocking_recv(&mut self) -> Option<PreparedRequest> {
        loop {
            if let Some(r) = self.batch.next() {
                return Some(r);
            }
            self.batch = self.rx.blocking_recv()?.into_iter();
        }
    }
}

async fn closed_loop(d: Dispatch, mut rx: Prepared, sem: Arc<Semaphore>) {
    let handle = tokio::runtime::Handle::current();
    let deadline = d.deadline.map(|x| tokio::time::Instant::from(d.origin + x));
    let mut n = 0u64;
    while !d.exhausted(n) {
        let permit = tokio::select! {
            biased;
            _ = d.stop.cancelled() => break,
            _ = async { match deadline { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => break,
            p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let Some(req) = rx.recv().await else { break };
        d.spawn(&handle, req, n, None, Gate::Held(permit));
        n += 1;
    }
}

enum Pace {
    Schedule(crate::arrival::Schedule),
    Replay(f64),
}

/// The open-loop dispatcher, on its own thread: sleeps until each due time with the OS
/// timer (sub-millisecond), never accumulating lateness (due times are absolute).
fn open_loop(
    d: Dispatch,
    mut rx: Prepared,
    mut pace: Pace,
    sem: Option<Arc<Semaphore>>,
    handle: tokio::runtime::Handle,
) {
    let mut n = 0u64;
    while !d.exhausted(n) && !d.stop.is_cancelled() {
        let Some(req) = rx.blocking_recv() else { break };
        let due = match &mut pace {
            Pace::Schedule(s) => s.next_due(),
            Pace::Replay(speed) => req.offset.unwrap_or_default().div_f64(*speed),
        };
        if d.deadline.is_some_and(|x| due >= x) {
            break;
        }
        let at = d.origin + due;
        loop {
            let now = Instant::now();
            if now >= at || d.stop.is_cancelled() {
                break;
            }
            // Wake at least every 20 ms to notice a stop.
            std::thread::sleep((at - now).min(Duration::from_millis(20)));
        }
        if d.stop.is_cancelled() {
            break;
        }
        let gate = match &sem {
            Some(s) => match s.clone().try_acquire_owned() {
                Ok(p) => Gate::Held(p),
                Err(_) => Gate::Wait(s.clone()),
            },
            None => Gate::Open,
        };
        d.spawn(&handle, req, n, Some(due), gate);
        n += 1;
    }
}
