//! One request's generation, across workers: route, run the disaggregation handshake,
//! stream from the engine, and — when a worker fails — retry (before the first token) or
//! migrate (after it: the prompt plus the tokens already sent go to another worker, and
//! the client's stream continues with no token lost or repeated).
//!
//! [`Generation::next`] is pulled by the streaming task or the non-streamed collector;
//! all the state lives here, so both paths behave the same.

use crate::disagg::{AbortOnDrop, DecodeSide, PrefillCtx, Prefilled};
use crate::error::{ApiError, ErrorType};
use crate::metrics::{Disagg, Migration, MigrationRecord};
use crate::openai::{CompletionRequest, FinishReason, Prompt, StreamOptions, Usage};
use crate::policy::{least_loaded_pick, random, RouteCtx};
use crate::registry::{LoadGuard, Role, Worker};
use crate::request::Prepared;
use crate::settings::{Detokenize, LogLevel};
use crate::state::Shared;
use crate::tokenizer::Detokenizer;
use crate::upstream::{self, UpEvent, UpStream, UpstreamError};
use cohort_kv::{OverlapScores, WorkerId};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tokens generated in one step, as the client sees them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece {
    /// Their text.
    pub text: String,
    /// Their ids.
    pub ids: Vec<u32>,
    /// Set on the last piece.
    pub finish: Option<FinishReason>,
}

/// Why an attempt did not start.
#[derive(Debug)]
enum StartError {
    /// A worker failed (or refused): retry, migrate or pass the refusal on.
    Worker(Option<Arc<Worker>>, UpstreamError),
    /// Final: e.g. no worker at all.
    Api(ApiError),
}

/// One upstream attempt in progress.
#[derive(Debug)]
struct Attempt {
    stream: UpStream,
    guard: LoadGuard,
    tokens: usize,
    _side: Option<AbortOnDrop>,
}

/// A request's generation state.
#[derive(Debug)]
pub(crate) struct Generation {
    sh: Arc<Shared>,
    pub req: Prepared,
    /// The response id the client sees (for the migration journal).
    pub id: String,
    generated: Vec<u32>,
    attempt: Option<Attempt>,
    excluded: Vec<WorkerId>,
    retries: u32,
    migrations: u32,
    attempts: u32,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    done: bool,
    last_token: Option<Instant>,
    detok: Option<Detokenizer>,
}

impl Generation {
    pub(crate) fn new(sh: Arc<Shared>, req: Prepared) -> Self {
        let detok = (sh.settings.detokenize == Detokenize::Router).then(Detokenizer::default);
        Generation {
            sh,
            req,
            id: String::new(),
            generated: Vec::new(),
            attempt: None,
            excluded: Vec::new(),
            retries: 0,
            migrations: 0,
            attempts: 0,
            finish: None,
            usage: None,
            done: false,
            last_token: None,
            detok,
        }
    }

    /// The request's usage: its own prompt, every token sent, the engine's cache hits.
    pub(crate) fn usage(&self) -> Usage {
        let prompt = self.req.prompt.len() as u32;
        let cached = self.usage.map_or(0, |u| u.cached_tokens()).min(prompt);
        Usage::new(prompt, self.generated.len() as u32, cached)
    }

    /// The next piece; `Ok(None)` when finished. Errors are final (retries and
    /// migrations are exhausted, or the request itself is at fault).
    pub(crate) async fn next(&mut self) -> Result<Option<Piece>, ApiError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.attempt.is_none() {
                match self.start().await {
                    Ok(a) => self.attempt = Some(a),
                    Err(StartError::Api(e)) => return Err(e),
                    Err(StartError::Worker(worker, e)) => {
                        self.failed(worker, e).await?;
                        continue;
                    }
                }
            }
            let Some(att) = self.attempt.as_mut() else {
                continue;
            };
            match att.stream.next().await {
                Ok(Some(UpEvent::Tokens { text, ids, finish })) => {
                    if self.finish.is_some() {
                        continue;
                    }
                    return Ok(Some(self.accept(text, ids, finish)));
                }
                Ok(Some(UpEvent::Usage(u))) => self.usage = Some(u),
                Ok(Some(UpEvent::Done)) | Ok(None) if self.finish.is_some() => self.finished(),
                Ok(Some(UpEvent::Done)) | Ok(None) => {
                    let w = att.guard.worker().clone();
                    self.failed(
                        Some(w),
                        UpstreamError::Failed("the stream ended without a finish reason".into()),
                    )
                    .await?;
                }
                Err(_) if self.finish.is_some() => self.finished(),
                Err(e) => {
                    let w = att.guard.worker().clone();
                    self.failed(Some(w), e).await?;
                }
            }
        }
    }

    /// A piece that is ready without waiting (see [`UpStream::ready`]), so a burst of
    /// tokens goes out in one write; `None` when nothing is.
    pub(crate) fn ready(&mut self) -> Option<Piece> {
        loop {
            if self.done || self.finish.is_some() {
                return None;
            }
            match self.attempt.as_mut()?.stream.ready()? {
                UpEvent::Tokens { text, ids, finish } => {
                    return Some(self.accept(text, ids, finish))
                }
                UpEvent::Usage(u) => self.usage = Some(u),
                UpEvent::Done => return None,
            }
        }
    }

    /// Accounts new tokens of the current attempt and makes them a piece.
    fn accept(&mut self, text: String, ids: Vec<u32>, finish: Option<FinishReason>) -> Piece {
        let ids = if ids.is_empty() && !text.is_empty() {
            // An engine without `return_token_ids`: our tokenisation of its text stands
            // in (migration continues from it).
            let mut v = Vec::new();
            self.sh.tokenizer.encode_into(&text, &mut v);
            v
        } else {
            ids
        };
        if let Some(att) = self.attempt.as_mut() {
            if att.tokens == 0 {
                att.guard.prefilled();
                att.guard.worker().breaker.success();
            }
            att.tokens += ids.len();
        }
        let text = match &mut self.detok {
            Some(d) => ids
                .iter()
                .map(|&id| d.push(&*self.sh.tokenizer, id))
                .collect(),
            None => text,
        };
        let now = Instant::now();
        match self.last_token {
            None => self.sh.metrics.ttft.observe(now - self.req.received),
            Some(t) => self.sh.metrics.itl.observe(now - t),
        }
        self.last_token = Some(now);
        self.sh.metrics.output_tokens(ids.len() as u64);
        self.generated.extend_from_slice(&ids);
        self.finish = finish;
        Piece { text, ids, finish }
    }

    fn finished(&mut self) {
        self.done = true;
        self.attempt = None;
        let u = self.usage();
        self.sh
            .metrics
            .prompt(u.prompt_tokens as u64, u.cached_tokens() as u64);
    }

    /// A failed attempt: the worker is excluded and its breaker told; then a retry (no
    /// token yet), a migration (tokens sent), or the final error.
    async fn failed(
        &mut self,
        worker: Option<Arc<Worker>>,
        e: UpstreamError,
    ) -> Result<(), ApiError> {
        self.attempt = None;
        let e = match e {
            UpstreamError::Refused {
                status,
                message,
                param,
            } => {
                let kind = match status {
                    404 => ErrorType::NotFound,
                    413 => ErrorType::PayloadTooLarge,
                    _ => ErrorType::BadRequest,
                };
                let mut err = ApiError::new(kind, message);
                err.param = param;
                return Err(err);
            }
            UpstreamError::Failed(m) => m,
        };
        if let Some(w) = &worker {
            if w.breaker.failure() {
                self.sh.log.write(
                    LogLevel::Info,
                    format_args!("worker {} (`{}`): circuit breaker open", w.id.0, w.spec.url),
                );
            }
            self.excluded.push(w.id);
        }
        let at = worker
            .as_ref()
            .map_or(String::new(), |w| format!(" on worker {}", w.id.0));
        if self.generated.is_empty() {
            if self.retries >= self.sh.settings.max_retries {
                return Err(ApiError::new(
                    ErrorType::BadGateway,
                    format!(
                        "no worker could serve the request ({} attempts); last error{at}: {e}",
                        self.attempts
                    ),
                ));
            }
            self.retries += 1;
            self.sh.metrics.retry();
            self.sh.log.write(
                LogLevel::Info,
                format_args!("retrying a request after a failure{at}: {e}"),
            );
            // Backoff: 20 ms, 40 ms, 80 ms, … capped at 1 s.
            let delay =
                Duration::from_millis(20u64 << self.retries.min(6)).min(Duration::from_secs(1));
            tokio::time::sleep(delay).await;
            return Ok(());
        }
        let from = worker
            .as_ref()
            .map_or(String::new(), |w| w.spec.url.clone());
        let record = |outcome| MigrationRecord {
            request: self.id.clone(),
            from: from.clone(),
            tokens: self.generated.len() as u32,
            outcome,
        };
        if self.migrations >= self.sh.settings.max_migrations {
            self.sh.metrics.migration(Migration::Exhausted);
            self.sh.metrics.journal_migration(record("exhausted"));
            return Err(ApiError::new(
                ErrorType::BadGateway,
                format!(
                    "the stream broke{at} after {} tokens and {} migrations: {e}",
                    self.generated.len(),
                    self.migrations
                ),
            ));
        }
        self.migrations += 1;
        self.sh.metrics.migration(Migration::Resumed);
        self.sh.metrics.journal_migration(record("resumed"));
        self.sh.log.write(
            LogLevel::Info,
            format_args!(
                "migrating a stream after {} tokens{at}: {e}",
                self.generated.len()
            ),
        );
        Ok(())
    }

    /// The upstream request for the current state: prompt + tokens sent, the budget left.
    fn upstream_request(&self) -> CompletionRequest {
        let r = &self.req;
        let sent = self.generated.len() as u32;
        let mut prompt = Vec::with_capacity(r.prompt.len() + self.generated.len());
        prompt.extend_from_slice(&r.prompt);
        prompt.extend_from_slice(&self.generated);
        CompletionRequest {
            model: self.sh.model.clone(),
            prompt: Prompt::Tokens(prompt),
            max_tokens: r.max_tokens.map(|m| m.saturating_sub(sent).max(1)),
            min_tokens: r
                .min_tokens
                .map(|m| m.saturating_sub(sent))
                .filter(|&m| m > 0),
            ignore_eos: r.ignore_eos,
            stream: true,
            stream_options: Some(StreamOptions {
                include_usage: true,
                continuous_usage_stats: false,
            }),
            return_token_ids: Some(true),
            kv_transfer_params: None,
            seed: r.seed,
            n: None,
            temperature: r.temperature,
            top_p: r.top_p,
            stop: r.stop.clone(),
        }
    }

    /// Routes and sends one attempt.
    async fn start(&mut self) -> Result<Attempt, StartError> {
        self.attempts += 1;
        let sh = self.sh.clone();
        let snapshot = sh.registry.snapshot();
        let pick = |excluding: bool, f: &dyn Fn(&Worker) -> bool| -> Vec<Arc<Worker>> {
            snapshot
                .iter()
                .filter(|w| f(w) && w.routable() && !(excluding && self.excluded.contains(&w.id)))
                .cloned()
                .collect()
        };
        let is_decode = |w: &Worker| w.spec.role != Role::Prefill;
        let is_prefill = |w: &Worker| w.spec.role == Role::Prefill;
        let mut decode_pool = pick(true, &is_decode);
        if decode_pool.is_empty() {
            // Every candidate failed this request once: give the survivors another chance.
            decode_pool = pick(false, &is_decode);
        }
        if decode_pool.is_empty() {
            // Every decoding worker's breaker is open. A breaker keeps a failing worker
            // out while others serve; when none is left, refusing everything helps
            // nobody (one overloaded instance would take the whole service down): the
            // workers whose health probe still answers get the request.
            decode_pool = snapshot
                .iter()
                .filter(|w| is_decode(w) && w.probe() != crate::registry::Probe::Down)
                .cloned()
                .collect();
        }
        if decode_pool.is_empty() {
            let n = snapshot.len();
            return Err(StartError::Api(ApiError::new(
                ErrorType::Unavailable,
                format!("no worker can serve: {n} registered, none routable (every one down)"),
            )));
        }
        let prefill_pool = pick(true, &is_prefill);
        let request = self.upstream_request();
        let Prompt::Tokens(prompt) = &request.prompt else {
            unreachable!("upstream prompts are token ids")
        };
        let uses_kv = sh.policy.uses_kv();
        let hashes = if uses_kv {
            sh.hasher.block_hashes(prompt)
        } else {
            Vec::new()
        };
        let overlaps = if uses_kv {
            sh.kv.find_matches(&hashes).await
        } else {
            OverlapScores::default()
        };
        let bs = sh.settings.block_size;
        let rand = random();
        let ctx = |candidates| RouteCtx {
            candidates,
            prompt_tokens: prompt.len(),
            block_size: bs,
            overlaps: &overlaps,
            query_blocks: hashes.len() as u32,
            session: self.req.session.as_deref(),
            rand,
        };
        let mut side = None;
        let mut prefill_worker = None;
        let (decode, path, costs) = if prefill_pool.is_empty() || decode_pool.is_empty() {
            let d = sh.policy.select(&ctx(&decode_pool));
            (decode_pool[d.index].clone(), Disagg::Aggregated, d.costs)
        } else {
            let d = sh.policy.select(&ctx(&prefill_pool));
            let p = prefill_pool[d.index].clone();
            let same: Vec<Arc<Worker>> = match &p.spec.nvlink_domain {
                Some(dom) => decode_pool
                    .iter()
                    .filter(|w| w.spec.nvlink_domain.as_ref() == Some(dom))
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            let pool = if same.is_empty() { &decode_pool } else { &same };
            let dw = pool[least_loaded_pick(pool, random())].clone();
            let cached = (overlaps.get(dw.id) as usize * bs as usize).min(prompt.len());
            if prompt.len() - cached < sh.settings.disagg_threshold as usize {
                (dw, Disagg::Local, d.costs)
            } else {
                let p_cached = (overlaps.get(p.id) as usize * bs as usize).min(prompt.len());
                let pg = p.start((prompt.len() - p_cached) as u64, 0);
                let r = sh
                    .handshake
                    .prefill(PrefillCtx {
                        client: &sh.client,
                        worker: &p,
                        request: &request,
                        timeout: sh.settings.upstream_timeout,
                        rand,
                    })
                    .await;
                match r {
                    Ok(Prefilled::Decode { decode, pending }) => {
                        p.breaker.success();
                        sh.kv.record(p.id, &hashes);
                        side = Some((decode, pending));
                        prefill_worker = Some(p);
                        (dw, Disagg::Remote, d.costs)
                    }
                    Ok(Prefilled::Answered(events)) => {
                        // The prefill worker finished the request: its answer is the
                        // attempt, and no decode worker is asked.
                        p.breaker.success();
                        sh.kv.record(p.id, &hashes);
                        sh.metrics.disagg(Disagg::Remote);
                        return Ok(Attempt {
                            stream: UpStream::answered(events),
                            guard: pg,
                            tokens: 0,
                            _side: None,
                        });
                    }
                    Err(e @ UpstreamError::Refused { .. }) => {
                        return Err(StartError::Worker(None, e))
                    }
                    Err(e) => {
                        p.breaker.failure();
                        sh.log.write(
                            LogLevel::Info,
                            format_args!(
                                "prefill on worker {} failed, prefilling on the decode worker: {e}",
                                p.id.0
                            ),
                        );
                        (dw, Disagg::Local, d.costs)
                    }
                }
            }
        };
        sh.metrics.disagg(path);
        if uses_kv {
            sh.kv.record(decode.id, &hashes);
            sh.metrics
                .kv_decision(hashes.len() as u64, overlaps.get(decode.id) as u64);
        }
        if sh.log.enabled(LogLevel::Debug) {
            let scores = costs.map_or(String::new(), |c| format!(", costs {c:?}"));
            let pre = prefill_worker
                .as_ref()
                .map_or(String::new(), |p| format!(", prefill on worker {}", p.id.0));
            sh.log.write(
                LogLevel::Debug,
                format_args!(
                    "route: {} tokens ({} blocks) → worker {} via {}{pre}; overlaps {:?}{scores}",
                    prompt.len(),
                    hashes.len(),
                    decode.id.0,
                    sh.policy.name(),
                    overlaps.scores
                ),
            );
        }
        let cached = if path == Disagg::Remote {
            prompt.len()
        } else {
            (overlaps.get(decode.id) as usize * bs as usize).min(prompt.len())
        };
        let blocks = prompt.len().div_ceil(bs as usize) as u64;
        let guard = decode.start((prompt.len() - cached) as u64, blocks);
        let (decode_side, pending): (Option<DecodeSide>, Option<AbortOnDrop>) = match side {
            Some((d, p)) => (Some(d), p),
            None => (None, None),
        };
        let body = sh.handshake.decode_body(&request, decode_side.as_ref());
        if self.attempts == 1 {
            sh.metrics.routing.observe(self.req.received.elapsed());
        }
        match upstream::post(
            &sh.client,
            &decode,
            "/v1/completions",
            body,
            sh.settings.upstream_timeout,
        )
        .await
        {
            Ok(b) => Ok(Attempt {
                stream: UpStream::new(b, sh.settings.stream_idle_timeout),
                guard,
                tokens: 0,
                _side: pending,
            }),
            Err(e) => Err(StartError::Worker(Some(decode), e)),
        }
    }
}
