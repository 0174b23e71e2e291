//! A controlled-timing OpenAI server for the tests and capacity benchmarks of this crate:
//! it streams `max_tokens` one-token chunks, the first `ttft` after the request arrived
//! and one every `itl` after that (deadlines are absolute, so errors do not add up), then
//! the usage chunk and `[DONE]`. With both delays zero it writes the whole answer at once:
//! the "trivially fast" server of the capacity benchmarks. It is not a simulator (see
//! `cohort sim` for one).

use bytes::Bytes;
use cohort_router::openai::sse::{write_event, DONE};
use cohort_router::openai::{
    ChatChunk, ChatChunkChoice, ChatCompletionRequest, ChatDelta, CompletionChunk,
    CompletionChunkChoice, CompletionRequest, ErrorKind, ErrorResponse, FinishReason, ModelCard,
    ModelList, Prompt, Usage, OBJECT_CHAT_CHUNK, OBJECT_TEXT_COMPLETION,
};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How the server answers.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Delay from the request's arrival to the first token.
    pub ttft: Duration,
    /// Delay between tokens.
    pub itl: Duration,
    /// The model `/v1/models` lists.
    pub model: String,
    /// Every n-th request (1-based) is answered `503` with an OpenAI error body.
    pub fail_every: Option<u64>,
    /// Added to each gap per stream in flight: a crude batching slowdown, so that a
    /// concurrency sweep traces a throughput/interactivity trade-off.
    pub itl_per_stream: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            ttft: Duration::ZERO,
            itl: Duration::ZERO,
            model: "test-model".to_owned(),
            fail_every: None,
            itl_per_stream: Duration::ZERO,
        }
    }
}

/// A running server on `127.0.0.1`; stopped by [`TestServer::stop`] or on drop.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
    requests: Arc<AtomicU64>,
    timer_thread: Option<std::thread::JoinHandle<()>>,
}

type Body = Either<Full<Bytes>, http_body_util::channel::Channel<Bytes, Infallible>>;

impl TestServer {
    /// Binds `127.0.0.1:port` (0: any free port) and serves on the current runtime.
    pub async fn start(cfg: ServerConfig, port: u16) -> std::io::Result<TestServer> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let requests = Arc::new(AtomicU64::new(0));
        let cfg = Arc::new(cfg);
        let (timer, timer_thread) = PreciseTimer::start();
        let active = Arc::new(AtomicU64::new(0));
        let (s, t, r) = (stop.clone(), tasks.clone(), requests.clone());
        tasks.spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = s.cancelled() => break,
                    c = listener.accept() => c,
                };
                let Ok((stream, _)) = conn else { continue };
                let _ = stream.set_nodelay(true);
                let (cfg, s2, t2, r2, tm) =
                    (cfg.clone(), s.clone(), t.clone(), r.clone(), timer.clone());
                let act = active.clone();
                let s3 = s2.clone();
                t.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let ctx = Ctx {
                            cfg: cfg.clone(),
                            tasks: t2.clone(),
                            stop: s3.clone(),
                            count: r2.clone(),
                            active: act.clone(),
                            timer: tm.clone(),
                        };
                        handle(req, ctx)
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = s2.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        Ok(TestServer {
            addr,
            stop,
            tasks,
            requests,
            timer_thread: Some(timer_thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered or being answered.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Stops accepting, cuts open connections and waits for every task.
    pub async fn stop(mut self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        // Every timer handle was held by a task: the thread sees the channel close.
        if let Some(t) = self.timer_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A timer thread with the OS's sub-millisecond sleep (tokio's timer has millisecond
/// granularity): tasks register a deadline and await a oneshot that fires at it. One
/// thread for all streams, no spinning. It ends when every handle is dropped.
#[derive(Debug, Clone)]
pub struct PreciseTimer {
    tx: std::sync::mpsc::Sender<(std::time::Instant, tokio::sync::oneshot::Sender<()>)>,
}

impl PreciseTimer {
    /// Starts the thread; the handle joins it once every clone of the timer is dropped.
    pub fn start() -> (PreciseTimer, std::thread::JoinHandle<()>) {
        let (tx, rx) =
            std::sync::mpsc::channel::<(std::time::Instant, tokio::sync::oneshot::Sender<()>)>();
        let thread = std::thread::spawn(move || {
            use std::cmp::Reverse;
            use std::collections::BinaryHeap;
            let mut heap: BinaryHeap<Reverse<(std::time::Instant, u64)>> = BinaryHeap::new();
            let mut waiters = std::collections::HashMap::new();
            let mut seq = 0u64;
            loop {
                let now = std::time::Instant::now();
                while let Some(Reverse((at, id))) = heap.peek().copied() {
                    if at > now {
                        break;
                    }
                    heap.pop();
                    if let Some(w) = waiters.remove(&id) {
                        let _ = tokio::sync::oneshot::Sender::send(w, ());
                    }
                }
                let wait = heap
                    .peek()
                    .map_or(Duration::from_secs(3600), |Reverse((at, _))| {
                        at.saturating_duration_since(now)
                    });
                match rx.recv_timeout(wait) {
                    Ok((at, w)) => {
                        seq += 1;
                        heap.push(Reverse((at, seq)));
                        waiters.insert(seq, w);
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        (PreciseTimer { tx }, thread)
    }

    /// Resolves at `deadline` (to within the OS timer's slack, tens of microseconds).
    pub async fn sleep_until(&self, deadline: Instant) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send((deadline.into_std(), tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct Ctx {
    cfg: Arc<ServerConfig>,
    tasks: TaskTracker,
    stop: CancellationToken,
    count: Arc<AtomicU64>,
    active: Arc<AtomicU64>,
    timer: PreciseTimer,
}

async fn handle(req: Request<Incoming>, ctx: Ctx) -> Result<Response<Body>, Infallible> {
    let arrived = Instant::now();
    let Ctx {
        cfg,
        tasks,
        stop,
        count,
        active,
        timer,
    } = ctx;
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    if method == Method::GET && path == "/v1/models" {
        let list = ModelList {
            object: Cow::Borrowed("list"),
            data: vec![ModelCard {
                id: Cow::Owned(cfg.model.clone()),
                object: Cow::Borrowed("model"),
                created: 0,
                owned_by: Cow::Borrowed("cohort"),
                root: None,
                max_model_len: None,
            }],
        };
        return Ok(json(
            StatusCode::OK,
            serde_json::to_vec(&list).unwrap_or_default(),
        ));
    }
    let chat = match (&method, path.as_str()) {
        (&Method::POST, "/v1/completions") => false,
        (&Method::POST, "/v1/chat/completions") => true,
        _ => {
            return Ok(error(
                ErrorKind::NotFound,
                format!("no route `{method} {path}`"),
            ))
        }
    };
    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(error(ErrorKind::BadRequest, "the body could not be read"));
    };
    if cfg.fail_every.is_some_and(|k| k > 0 && n % k == 0) {
        return Ok(error(ErrorKind::Unavailable, "injected failure"));
    }
    let (max_tokens, prompt_tokens) = if chat {
        match serde_json::from_slice::<ChatCompletionRequest>(&body) {
            Ok(r) => {
                let chars: usize = r
                    .messages
                    .iter()
                    .filter_map(|m| m.content.as_ref())
                    .map(|c| c.text().len())
                    .sum();
                (r.max_tokens().unwrap_or(16), (chars as u32).div_ceil(4))
            }
            Err(e) => return Ok(error(ErrorKind::BadRequest, e.to_string())),
        }
    } else {
        match serde_json::from_slice::<CompletionRequest>(&body) {
            Ok(r) => {
                let p = match &r.prompt {
                    Prompt::Tokens(t) => t.len() as u32,
                    Prompt::Text(s) => (s.len() as u32).div_ceil(4),
                    _ => return Ok(error(ErrorKind::BadRequest, "one prompt per request")),
                };
                (r.max_tokens.unwrap_or(16), p)
            }
            Err(e) => return Ok(error(ErrorKind::BadRequest, e.to_string())),
        }
    };
    let events = Events {
        chat,
        model: cfg.model.clone(),
        id: format!("cmpl-{n}"),
        max_tokens,
        usage: Usage::new(prompt_tokens, max_tokens, 0),
    };
    if cfg.ttft.is_zero() && cfg.itl.is_zero() {
        let mut out = Vec::with_capacity(256 * (max_tokens as usize + 2));
        for i in 0..max_tokens {
            events.token(&mut out, i);
        }
        events.end(&mut out);
        return Ok(sse(Either::Left(Full::new(Bytes::from(out)))));
    }
    let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
    let (ttft, itl, per_stream) = (cfg.ttft, cfg.itl, cfg.itl_per_stream);
    active.fetch_add(1, Ordering::Relaxed);
    tasks.spawn(async move {
        let _active = ActiveGuard(active.clone());
        let mut due = arrived + ttft;
        for i in 0..events.max_tokens {
            if i > 0 {
                let n = active.load(Ordering::Relaxed) as u32;
                due += itl + per_stream * n;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = timer.sleep_until(due) => {}
            }
            let mut out = Vec::with_capacity(256);
            events.token(&mut out, i);
            if i + 1 == events.max_tokens {
                events.end(&mut out);
            }
            if tx.send_data(Bytes::from(out)).await.is_err() {
                return;
            }
        }
        if events.max_tokens == 0 {
            let mut out = Vec::new();
            events.end(&mut out);
            let _ = tx.send_data(Bytes::from(out)).await;
        }
    });
    Ok(sse(Either::Right(rx)))
}

/// Counts a stream in flight while alive.
struct ActiveGuard(Arc<AtomicU64>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Events {
    chat: bool,
    model: String,
    id: String,
    max_tokens: u32,
    usage: Usage,
}

impl Events {
    fn token(&self, out: &mut Vec<u8>, i: u32) {
        let finish = (i + 1 == self.max_tokens).then_some(FinishReason::Length);
        let text = Cow::Borrowed(" tok");
        let r = if self.chat {
            write_event(
                out,
                &ChatChunk {
                    id: Cow::Borrowed(&self.id),
                    object: Cow::Borrowed(OBJECT_CHAT_CHUNK),
                    created: 0,
                    model: Cow::Borrowed(&self.model),
                    choices: vec![ChatChunkChoice {
                        index: 0,
                        delta: ChatDelta {
                            role: (i == 0).then_some(Cow::Borrowed("assistant")),
                            content: Some(text),
                        },
                        logprobs: None,
                        finish_reason: finish,
                        stop_reason: finish.map(|_| None),
                        token_ids: None,
                    }],
                    usage: None,
                },
            )
        } else {
            write_event(
                out,
                &CompletionChunk {
                    id: Cow::Borrowed(&self.id),
                    object: Cow::Borrowed(OBJECT_TEXT_COMPLETION),
                    created: 0,
                    model: Cow::Borrowed(&self.model),
                    choices: vec![CompletionChunkChoice {
                        index: 0,
                        text,
                        logprobs: None,
                        finish_reason: finish,
                        stop_reason: None,
                        prompt_token_ids: None,
                        token_ids: None,
                    }],
                    usage: None,
                },
            )
        };
        debug_assert!(r.is_ok());
    }

    fn end(&self, out: &mut Vec<u8>) {
        let r = write_event(
            out,
            &CompletionChunk {
                id: Cow::Borrowed(&self.id),
                object: Cow::Borrowed(if self.chat {
                    OBJECT_CHAT_CHUNK
                } else {
                    OBJECT_TEXT_COMPLETION
                }),
                created: 0,
                model: Cow::Borrowed(&self.model),
                choices: vec![],
                usage: Some(self.usage),
            },
        );
        debug_assert!(r.is_ok());
        out.extend_from_slice(DONE);
    }
}

fn sse(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    r
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Response<Body> {
    let body = serde_json::to_vec(&ErrorResponse::new(kind, message)).unwrap_or_default();
    json(
        StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}
