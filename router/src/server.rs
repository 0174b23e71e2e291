//! The HTTP side: the accept loop (TCP_NODELAY, one task per connection, all owned),
//! routes, API keys, body limits, admission, and the streaming task of each request.

use crate::body::Body;
use crate::error::{ApiError, ErrorType};
use crate::generate::Generation;
use crate::metrics::Api;
use crate::openai::{sse, ModelCard, ModelList};
use crate::registry::{Probe, Role};
use crate::render::Renderer;
use crate::request::{self, Context};
use crate::state::Shared;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Accepts connections until cancelled; dropping the `JoinSet` closes them all.
pub(crate) async fn accept_loop(listener: TcpListener, sh: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let sh = sh.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(sh.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = sh.cancel.cancelled() => break,
        }
    }
    conns.shutdown().await;
}

async fn handle(sh: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let r = route(&sh, req).await;
    Ok(r.unwrap_or_else(|e| e.into_response(&sh.metrics)))
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn route(sh: &Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/health") => Ok(json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())),
        (&Method::GET, "/ready") => Ok(ready(sh)),
        (&Method::GET, "/metrics") => Ok(metrics(sh)),
        (&Method::GET, "/v1/models") => {
            authorize(sh, &req)?;
            Ok(models(sh))
        }
        (&Method::POST, "/v1/completions") => generate(sh, req, Api::Completion).await,
        (&Method::POST, "/v1/chat/completions") => generate(sh, req, Api::Chat).await,
        (
            _,
            "/health"
            | "/ready"
            | "/metrics"
            | "/v1/models"
            | "/v1/completions"
            | "/v1/chat/completions",
        ) => Err(ApiError::new(
            ErrorType::MethodNotAllowed,
            format!("`{path}` does not take `{}`", req.method()),
        )),
        _ => Err(ApiError::new(
            ErrorType::NotFound,
            format!("no route `{path}`"),
        )),
    }
}

/// Checks `Authorization: Bearer KEY` when keys are configured.
fn authorize(sh: &Shared, req: &Request<Incoming>) -> Result<(), ApiError> {
    let keys = &sh.settings.api_keys;
    if keys.is_empty() {
        return Ok(());
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Compare every key in full, so timing does not tell how much of a key matched.
    let ok = given.is_some_and(|g| {
        keys.iter().fold(false, |acc, k| {
            let eq = k.len() == g.len()
                && k.bytes().zip(g.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
            acc | eq
        })
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorType::Unauthorized,
            "a valid API key is required: `Authorization: Bearer KEY`",
        ))
    }
}

fn ready(sh: &Shared) -> Response<Body> {
    let ws = sh.registry.snapshot();
    let up = |role: Role| {
        ws.iter()
            .filter(|w| w.spec.role == role && w.routable() && w.probe() == Probe::Up)
            .count()
    };
    let (agg, pre, dec) = (up(Role::Aggregated), up(Role::Prefill), up(Role::Decode));
    let has = |role: Role| ws.iter().any(|w| w.spec.role == role);
    let ok = !ws.is_empty()
        && (!has(Role::Aggregated) || agg > 0 || dec > 0)
        && (!has(Role::Prefill) || pre > 0)
        && (!has(Role::Decode) || dec > 0);
    let body = format!(
        r#"{{"ready":{ok},"workers":{},"up":{{"aggregated":{agg},"prefill":{pre},"decode":{dec}}}}}"#,
        ws.len()
    );
    json(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body.into_bytes(),
    )
}

fn metrics(sh: &Shared) -> Response<Body> {
    let mut out = String::with_capacity(16 << 10);
    sh.metrics.render(&mut out);
    crate::metrics::gauge_header(
        &mut out,
        "cohort_router_queue_waiting",
        "gauge",
        "Requests waiting for an admission slot.",
    );
    out.push_str(&format!(
        "cohort_router_queue_waiting {}\n",
        sh.admission.waiting()
    ));
    sh.registry.render(&mut out);
    let mut r = Response::new(Body::full(out));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn models(sh: &Shared) -> Response<Body> {
    let list = ModelList {
        object: "list".into(),
        data: vec![ModelCard {
            id: Cow::Borrowed(&sh.model),
            object: "model".into(),
            created: sh.created,
            owned_by: "cohort".into(),
            root: Some(Cow::Borrowed(&sh.model)),
            max_model_len: None,
        }],
    };
    json(
        StatusCode::OK,
        serde_json::to_vec(&list).unwrap_or_default(),
    )
}

async fn read_body(sh: &Shared, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = sh.settings.max_body_bytes;
    let too_large = || {
        ApiError::new(
            ErrorType::PayloadTooLarge,
            format!("the request body is larger than {limit} bytes (`--max-body-bytes`)"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

async fn generate(
    sh: &Arc<Shared>,
    req: Request<Incoming>,
    api: Api,
) -> Result<Response<Body>, ApiError> {
    let received = Instant::now();
    authorize(sh, &req)?;
    let session = req
        .headers()
        .get(sh.settings.session_header.as_str())
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(sh, req).await?;
    let session = match session {
        Some(s) => Some(s),
        None if sh.policy.name() == "session" => request::user_field(&body),
        None => None,
    };
    let cx = Context {
        served_model: &sh.model,
        tokenizer: &*sh.tokenizer,
        session,
        received,
    };
    let prepared = match api {
        Api::Chat => request::chat(&body, cx),
        Api::Completion => request::completion(&body, cx),
    };
    let prepared = prepared.inspect_err(|_| sh.metrics.request(api, false))?;
    drop(body);
    let queued = Instant::now();
    let slot = sh
        .admission
        .admit()
        .await
        .inspect_err(|_| sh.metrics.request(api, false))?;
    sh.metrics.queue.observe(queued.elapsed());
    let n = sh.next_id.fetch_add(1, Relaxed);
    let mut renderer = Renderer {
        api,
        id: match api {
            Api::Chat => format!("chatcmpl-cohort-{n:x}"),
            Api::Completion => format!("cmpl-cohort-{n:x}"),
        },
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: sh.model.clone(),
        return_ids: prepared.return_token_ids,
        started: false,
    };
    let stream = prepared.stream;
    let mut gen = Generation::new(sh.clone(), prepared);
    gen.id.clone_from(&renderer.id);
    // The first piece before answering: errors until then (no worker, the engine refused
    // the request, retries exhausted) get their proper HTTP status.
    let first = match gen.next().await {
        Ok(p) => p,
        Err(e) => {
            sh.metrics.request(api, false);
            return Err(e);
        }
    };
    if !stream {
        let mut text = String::new();
        let mut ids = Vec::new();
        let mut finish = None;
        let mut piece = first;
        while let Some(p) = piece {
            text.push_str(&p.text);
            ids.extend_from_slice(&p.ids);
            finish = p.finish.or(finish);
            piece = match gen.next().await {
                Ok(p) => p,
                Err(e) => {
                    sh.metrics.request(api, false);
                    return Err(e);
                }
            };
        }
        let body = renderer.whole(text, ids, finish, gen.usage(), &gen.req.prompt);
        sh.metrics.request(api, true);
        sh.metrics.e2e.observe(received.elapsed());
        drop(slot);
        return Ok(json(StatusCode::OK, body));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let task_sh = sh.clone();
    sh.tasks.spawn(async move {
        let sh = task_sh;
        let _slot = slot;
        let include_usage = gen.req.include_usage;
        let mut buf = Vec::with_capacity(1024);
        let mut next = first;
        let ok = loop {
            match next {
                Some(p) => {
                    renderer.piece(&p, &mut buf);
                    // Tokens that arrived together leave together: one write.
                    while let Some(p) = gen.ready() {
                        renderer.piece(&p, &mut buf);
                    }
                }
                None => {
                    if include_usage {
                        renderer.usage(gen.usage(), &mut buf);
                    }
                    buf.extend_from_slice(sse::DONE);
                    let _ = tx.send(Bytes::from(std::mem::take(&mut buf))).await;
                    break true;
                }
            }
            if tx
                .send(Bytes::from(std::mem::take(&mut buf)))
                .await
                .is_err()
            {
                break false; // the client went away
            }
            next = tokio::select! {
                biased;
                _ = tx.closed() => break false,
                _ = sh.cancel.cancelled() => {
                    ApiError::new(ErrorType::Unavailable, "the frontend is shutting down")
                        .write_sse(&mut buf, &sh.metrics);
                    let _ = tx.send(Bytes::from(std::mem::take(&mut buf))).await;
                    break false;
                }
                r = gen.next() => match r {
                    Ok(p) => p,
                    Err(e) => {
                        e.write_sse(&mut buf, &sh.metrics);
                        buf.extend_from_slice(sse::DONE);
                        let _ = tx.send(Bytes::from(std::mem::take(&mut buf))).await;
                        break false;
                    }
                },
            };
        };
        // Dropping `gen` here drops the upstream response: the engine sees the
        // connection close and aborts the request.
        sh.metrics.request(api, ok);
        sh.metrics.e2e.observe(received.elapsed());
    });
    let mut r = Response::new(Body::Stream(rx));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    Ok(r)
}
