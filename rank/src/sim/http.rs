//! The HTTP front of one engine instance: routing, request validation, submission to
//! the engine, and the responses (whole or streamed).

use super::body::{AbortGuard, Api, Body, RenderCtx, SseStream, UsageAcc};
use super::config::{Role, SimConfig};
use super::disagg::{self, PullRequest, PULL_PATH};
use super::engine::{EngineHandle, EngineIdentity, Out, RemoteSpec, Submission};
use super::error::ApiError;
use super::metrics::HttpStats;
use super::tokenizer::Tokenizer;
use super::vocab::Sampler;
use bytes::Bytes;
use cohort_router::openai::{
    ChatChoice, ChatCompletionRequest, ChatCompletionResponse, ChatMessageOut, CompletionChoice,
    CompletionRequest, CompletionResponse, ErrorKind, KvTransferParams, ModelCard, ModelList,
    Prompt,
};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Everything a request handler of one instance needs.
#[derive(Debug)]
pub(crate) struct Instance {
    pub cfg: Arc<SimConfig>,
    pub tokenizer: Arc<Tokenizer>,
    pub model: Arc<str>,
    pub engine: EngineHandle,
    pub http: Arc<HttpStats>,
    pub me: EngineIdentity,
    pub next_id: AtomicU64,
    pub started: u64,
}

/// The options both APIs share, after parsing.
struct Prepared {
    api: Api,
    prompts: Vec<Vec<u32>>,
    max_tokens: Option<u32>,
    min_tokens: u32,
    ignore_eos: bool,
    stream: bool,
    include_usage: bool,
    return_ids: bool,
    kv: Option<KvTransferParams>,
    seed: Option<u64>,
    n: Option<u32>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Response<Body>, ApiError> {
    serde_json::to_vec(v)
        .map(|b| json_response(StatusCode::OK, b))
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("cannot serialise: {e}")))
}

/// Serves one HTTP request.
pub(crate) async fn handle(
    inst: Arc<Instance>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let r = route(&inst, req).await;
    Ok(r.unwrap_or_else(|e| e.into_response(&inst.http)))
}

async fn route(inst: &Arc<Instance>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/health") => Ok(Response::new(Body::full(Bytes::new()))),
        (&Method::GET, "/v1/models") => models(inst),
        (&Method::GET, "/metrics") => {
            let text = inst.engine.metrics().await.ok_or_else(stopped)?;
            let mut r = Response::new(Body::full(text));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(r)
        }
        (&Method::POST, "/v1/completions") => {
            let body = read_body(req).await?;
            let r: CompletionRequest = parse(&body)?;
            check_model(inst, &r.model)?;
            let prompts = completion_prompts(inst, r.prompt)?;
            let p = Prepared {
                api: Api::Completion,
                prompts,
                max_tokens: Some(r.max_tokens.unwrap_or(16)),
                min_tokens: r.min_tokens.unwrap_or(0),
                ignore_eos: r.ignore_eos.unwrap_or(false),
                stream: r.stream,
                include_usage: r.stream_options.is_some_and(|o| o.include_usage),
                return_ids: r.return_token_ids.unwrap_or(false),
                kv: r.kv_transfer_params,
                seed: r.seed,
                n: r.n,
            };
            serve(inst, p).await
        }
        (&Method::POST, "/v1/chat/completions") => {
            let body = read_body(req).await?;
            let r: ChatCompletionRequest = parse(&body)?;
            check_model(inst, &r.model)?;
            if r.messages.is_empty() {
                return Err(ApiError::bad_request("`messages` must not be empty").param("messages"));
            }
            let texts: Vec<(String, String)> = r
                .messages
                .iter()
                .map(|m| {
                    (
                        m.role.clone(),
                        m.content
                            .as_ref()
                            .map(|c| c.text().into_owned())
                            .unwrap_or_default(),
                    )
                })
                .collect();
            let prompt = inst
                .tokenizer
                .encode_chat(texts.iter().map(|(r, c)| (r.as_str(), c.as_str())));
            let p = Prepared {
                api: Api::Chat,
                prompts: vec![prompt],
                max_tokens: r.max_tokens(),
                min_tokens: r.min_tokens.unwrap_or(0),
                ignore_eos: r.ignore_eos.unwrap_or(false),
                stream: r.stream,
                include_usage: r.stream_options.is_some_and(|o| o.include_usage),
                return_ids: r.return_token_ids.unwrap_or(false),
                kv: r.kv_transfer_params,
                seed: r.seed,
                n: r.n,
            };
            serve(inst, p).await
        }
        (&Method::POST, PULL_PATH) => {
            let body = read_body(req).await?;
            let p: PullRequest = parse(&body)?;
            if p.engine_id != inst.me.engine_id {
                return Err(ApiError::not_found(format!(
                    "this is engine `{}`, not `{}`",
                    inst.me.engine_id, p.engine_id
                )));
            }
            let reply = inst
                .engine
                .pull(p.request_id)
                .await
                .map_err(ApiError::not_found)?;
            to_json(&reply)
        }
        (&Method::POST, "/reset_prefix_cache") => {
            if inst.engine.reset_prefix_cache().await {
                Ok(Response::new(Body::full(Bytes::new())))
            } else {
                Err(ApiError::bad_request(
                    "the prefix cache can only be reset while no request runs",
                ))
            }
        }
        (_, "/health" | "/v1/models" | "/metrics" | "/v1/completions" | "/v1/chat/completions") => {
            Err(ApiError::new(
                ErrorKind::MethodNotAllowed,
                "Method Not Allowed",
            ))
        }
        _ => Err(ApiError::not_found(format!("no route `{path}`"))),
    }
}

fn stopped() -> ApiError {
    ApiError::new(ErrorKind::Unavailable, "the engine is shutting down")
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))
}

fn parse<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

fn check_model(inst: &Instance, model: &str) -> Result<(), ApiError> {
    if model == &*inst.model {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("The model `{model}` does not exist.")).param("model"))
    }
}

fn completion_prompts(inst: &Instance, prompt: Prompt) -> Result<Vec<Vec<u32>>, ApiError> {
    let prompts = match prompt {
        Prompt::Text(t) => vec![inst.tokenizer.encode(&t)],
        Prompt::Texts(ts) => ts.iter().map(|t| inst.tokenizer.encode(t)).collect(),
        Prompt::Tokens(ids) => vec![ids],
        Prompt::TokenBatch(b) => b,
    };
    if prompts.is_empty() {
        return Err(ApiError::bad_request("`prompt` must not be an empty list").param("prompt"));
    }
    let size = inst.tokenizer.size();
    for p in &prompts {
        if p.is_empty() {
            return Err(ApiError::bad_request("The prompt cannot be empty").param("prompt"));
        }
        if let Some(bad) = p.iter().find(|&&t| t >= size) {
            return Err(ApiError::bad_request(format!(
                "Token id {bad} is out of vocabulary (size {size})"
            ))
            .param("prompt"));
        }
    }
    Ok(prompts)
}

fn models(inst: &Instance) -> Result<Response<Body>, ApiError> {
    to_json(&ModelList {
        object: "list".into(),
        data: vec![ModelCard {
            id: Cow::Borrowed(&inst.model),
            object: "model".into(),
            created: inst.started,
            owned_by: "vllm".into(),
            root: Some(Cow::Borrowed(&inst.model)),
            max_model_len: Some(inst.cfg.sched.max_model_len),
        }],
    })
}

async fn serve(inst: &Arc<Instance>, p: Prepared) -> Result<Response<Body>, ApiError> {
    if p.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("only `n` = 1 is supported").param("n"));
    }
    let max_len = inst.cfg.sched.max_model_len;
    let n = p.prompts.len() as u32;
    let base = inst.next_id.fetch_add(n as u64, Ordering::Relaxed);
    let id = match p.api {
        Api::Completion => format!("cmpl-{:x}{:08x}", inst.me.index, base),
        Api::Chat => format!("chatcmpl-{:x}{:08x}", inst.me.index, base),
    };
    let remote = match &p.kv {
        Some(kv) if kv.do_remote_decode && kv.do_remote_prefill => {
            return Err(ApiError::bad_request(
                "`kv_transfer_params` sets both `do_remote_decode` and `do_remote_prefill`",
            )
            .param("kv_transfer_params"))
        }
        Some(kv) if kv.do_remote_decode && inst.cfg.role == Role::Decode => {
            return Err(ApiError::bad_request(
                "this is a decode instance (`--role decode`); send `do_remote_decode` to a prefill instance",
            )
            .param("kv_transfer_params"))
        }
        Some(kv) if kv.do_remote_prefill && inst.cfg.role == Role::Prefill => {
            return Err(ApiError::bad_request(
                "this is a prefill instance (`--role prefill`); send `do_remote_prefill` to a decode instance",
            )
            .param("kv_transfer_params"))
        }
        Some(kv) if kv.do_remote_prefill => {
            if n != 1 {
                return Err(ApiError::bad_request("`do_remote_prefill` takes a single prompt").param("prompt"));
            }
            Some(disagg::pull_spec(kv)?)
        }
        _ => None,
    };
    let hold = p.kv.as_ref().is_some_and(|kv| kv.do_remote_decode);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut subs = Vec::with_capacity(n as usize);
    let mut remote = remote;
    for (idx, prompt) in p.prompts.iter().enumerate() {
        let plen = prompt.len() as u32;
        let max_tokens = match p.max_tokens {
            Some(0) => {
                return Err(
                    ApiError::bad_request("`max_tokens` must be at least 1").param("max_tokens")
                )
            }
            Some(m) => m,
            None => max_len.saturating_sub(plen).max(1),
        };
        if plen as u64 + max_tokens as u64 > max_len as u64 {
            return Err(ApiError::bad_request(format!(
                "This model's maximum context length is {max_len} tokens. However, you requested \
                 {} tokens ({plen} in the messages, {max_tokens} in the completion). Please reduce \
                 the length of the messages or completion.",
                plen as u64 + max_tokens as u64
            ))
            .param("max_tokens"));
        }
        if p.min_tokens > max_tokens {
            return Err(ApiError::bad_request(format!(
                "`min_tokens` ({}) must not exceed `max_tokens` ({max_tokens})",
                p.min_tokens
            ))
            .param("min_tokens"));
        }
        let sampler = Sampler::new(p.seed, prompt).over(inst.tokenizer.output_range());
        let stop_at = if p.ignore_eos {
            None
        } else {
            sampler
                .natural_length(inst.cfg.eos_mean)
                .map(|l| l.max(p.min_tokens + 1))
        };
        let rid = base + idx as u64;
        let remote = match remote.take() {
            Some(spec) => RemoteSpec::Pull(spec),
            None if hold => RemoteSpec::Hold(format!("{id}-{idx}")),
            None => RemoteSpec::Local,
        };
        subs.push(Submission {
            id: rid,
            idx: idx as u32,
            prompt: if p.return_ids {
                prompt.clone()
            } else {
                Vec::new()
            },
            max_tokens,
            stop_at,
            sampler,
            remote,
            sink: tx.clone(),
        });
    }
    drop(tx);
    let mut prompts = p.prompts;
    if p.return_ids {
        // the engine got copies; keep ours for `prompt_token_ids`
    } else {
        for (s, pr) in subs.iter_mut().zip(prompts.iter_mut()) {
            s.prompt = std::mem::take(pr);
        }
    }
    let ids: Vec<u64> = (0..n as u64).map(|i| base + i).collect();
    let guard = AbortGuard::new(inst.engine.clone(), ids);
    if !inst.engine.submit(subs) {
        return Err(stopped());
    }
    let first = rx.recv().await.ok_or_else(stopped)?;
    if let Out::Failed { error } = first {
        return Err(error);
    }
    let ctx = RenderCtx {
        api: p.api,
        id,
        created: unix_now(),
        model: inst.model.clone(),
        tokenizer: inst.tokenizer.clone(),
        return_ids: p.return_ids,
        include_usage: p.include_usage,
        prompts,
        n,
    };
    if p.stream {
        let mut r = Response::new(Body::Sse(Box::new(SseStream::new(ctx, rx, first, guard))));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        return Ok(r);
    }
    collect(ctx, rx, first, guard).await
}

/// Waits for every prompt to finish and answers with one JSON body.
async fn collect(
    ctx: RenderCtx,
    mut rx: mpsc::UnboundedReceiver<Out>,
    first: Out,
    mut guard: AbortGuard,
) -> Result<Response<Body>, ApiError> {
    let n = ctx.n as usize;
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut infos = Vec::with_capacity(n);
    infos.resize_with(n, || None);
    let mut remaining = n;
    let mut usage = UsageAcc::default();
    let mut ev = Some(first);
    while remaining > 0 {
        let e = match ev.take() {
            Some(e) => e,
            None => rx.recv().await.ok_or_else(stopped)?,
        };
        match e {
            Out::Token { idx, token } => tokens[idx as usize].push(token),
            Out::Done { idx, token, info } => {
                tokens[idx as usize].push(token);
                usage.add(&info);
                infos[idx as usize] = Some(info);
                remaining -= 1;
            }
            Out::Failed { error } => return Err(error),
        }
    }
    guard.disarm();
    let text = |t: &[u32]| ctx.tokenizer.decode(t);
    let kv = infos
        .iter_mut()
        .flatten()
        .find_map(|i| i.kv_transfer_params.take());
    match ctx.api {
        Api::Completion => to_json(&CompletionResponse {
            id: Cow::Borrowed(&ctx.id),
            object: "text_completion".into(),
            created: ctx.created,
            model: Cow::Borrowed(&ctx.model),
            choices: tokens
                .iter()
                .zip(&infos)
                .enumerate()
                .map(|(i, (t, info))| CompletionChoice {
                    index: i as u32,
                    text: text(t).into(),
                    logprobs: None,
                    finish_reason: info.as_ref().map(|i| i.reason),
                    stop_reason: None,
                    prompt_token_ids: ctx.return_ids.then(|| ctx.prompts[i].clone()),
                    token_ids: ctx.return_ids.then(|| t.clone()),
                })
                .collect(),
            usage: usage.usage(),
            kv_transfer_params: kv,
        }),
        Api::Chat => to_json(&ChatCompletionResponse {
            id: Cow::Borrowed(&ctx.id),
            object: "chat.completion".into(),
            created: ctx.created,
            model: Cow::Borrowed(&ctx.model),
            choices: vec![ChatChoice {
                index: 0,
                message: ChatMessageOut {
                    role: "assistant".into(),
                    content: Some(text(&tokens[0]).into()),
                },
                logprobs: None,
                finish_reason: infos[0].as_ref().map(|i| i.reason),
                stop_reason: None,
                token_ids: ctx.return_ids.then(|| tokens[0].clone()),
            }],
            usage: usage.usage(),
            kv_transfer_params: kv,
        }),
    }
}
