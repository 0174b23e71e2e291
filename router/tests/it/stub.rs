//! A stand-in engine: `/v1/completions` streamed with token ids, where output token `i`
//! of a request whose prompt has `n` tokens is `n + i` — so a stream continued elsewhere
//! after a migration stays consecutive exactly when nothing was lost or repeated. It can
//! break its stream after `die_after` tokens, and records every request body.

use bytes::Bytes;
use cohort_router::openai::{CompletionRequest, Prompt};
use http_body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

#[derive(Debug)]
pub(crate) enum Item {
    Data(Bytes),
    Fail,
}

#[derive(Debug)]
pub(crate) struct StubBody(Option<Bytes>, Option<mpsc::Receiver<Item>>);

impl http_body::Body for StubBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let me = self.get_mut();
        if let Some(b) = me.0.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let Some(rx) = me.1.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(Item::Data(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Item::Fail)) => Poll::Ready(Some(Err(std::io::Error::other("die")))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// How a stub behaves.
#[derive(Debug, Clone, Default)]
pub(crate) struct Behaviour {
    /// Break the stream after this many tokens (for every request).
    pub die_after: Option<usize>,
    /// Answer every generation request with this status.
    pub status: Option<u16>,
}

#[derive(Debug)]
pub(crate) struct Stub {
    pub addr: SocketAddr,
    pub bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    tasks: JoinSet<()>,
}

impl Stub {
    pub(crate) async fn start(b: Behaviour) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let rec = bodies.clone();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let (b, rec) = (b.clone(), rec.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(b.clone(), rec.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Stub {
            addr,
            bodies,
            tasks,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn handle(
    b: Behaviour,
    rec: Arc<Mutex<Vec<serde_json::Value>>>,
    req: Request<Incoming>,
) -> Result<Response<StubBody>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let path = req.uri().path().to_owned();
    if path == "/v1/models" {
        let body = r#"{"object":"list","data":[{"id":"stub","object":"model","created":0,"owned_by":"x"}]}"#;
        return Ok(Response::new(StubBody(Some(Bytes::from(body)), None)));
    }
    if path == "/health" {
        return Ok(Response::new(StubBody(Some(Bytes::new()), None)));
    }
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    rec.lock().unwrap().push(v);
    if let Some(s) = b.status {
        let mut r = Response::new(StubBody(
            Some(Bytes::from(format!(
                r#"{{"error":{{"message":"stub says {s}","type":"X","param":"prompt","code":{s}}}}}"#
            ))),
            None,
        ));
        *r.status_mut() = hyper::StatusCode::from_u16(s).unwrap();
        return Ok(r);
    }
    let r: CompletionRequest = serde_json::from_slice(&bytes).unwrap();
    let n = match &r.prompt {
        Prompt::Tokens(t) => t.len(),
        _ => panic!("the frontend sends token ids"),
    };
    let max = r.max_tokens.unwrap_or(16) as usize;
    if !r.stream {
        // A prefill (vLLM handshake): one token and kv_transfer_params.
        let body = format!(
            r#"{{"id":"p","object":"text_completion","created":0,"model":"stub","choices":[{{"index":0,"text":" x","logprobs":null,"finish_reason":"length"}}],"usage":{{"prompt_tokens":{n},"total_tokens":{},"completion_tokens":1}},"kv_transfer_params":{{"do_remote_prefill":true,"remote_engine_id":"e","remote_block_ids":[1],"remote_host":"127.0.0.1","remote_port":1,"remote_request_id":"r"}}}}"#,
            n + 1
        );
        return Ok(Response::new(StubBody(Some(Bytes::from(body)), None)));
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for i in 0..max {
            if b.die_after == Some(i) {
                let _ = tx.send(Item::Fail).await;
                return;
            }
            let id = n + i;
            let finish = if i + 1 == max { r#""length""# } else { "null" };
            let ev = format!(
                "data: {{\"id\":\"s\",\"object\":\"text_completion\",\"created\":0,\"model\":\"stub\",\"choices\":[{{\"index\":0,\"text\":\" t{id}\",\"logprobs\":null,\"finish_reason\":{finish},\"token_ids\":[{id}]}}]}}\n\n"
            );
            if tx.send(Item::Data(Bytes::from(ev))).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        let usage = format!(
            "data: {{\"id\":\"s\",\"object\":\"text_completion\",\"created\":0,\"model\":\"stub\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{n},\"total_tokens\":{},\"completion_tokens\":{max},\"prompt_tokens_details\":{{\"cached_tokens\":3}}}}}}\n\ndata: [DONE]\n\n",
            n + max
        );
        let _ = tx.send(Item::Data(Bytes::from(usage))).await;
    });
    Ok(Response::new(StubBody(None, Some(rx))))
}

/// What a scripted stub answers to one request (see [`Stub::scripted`]).
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// A whole JSON body with this status.
    Json(u16, String),
    /// Server-sent events, each a whole `data: …\n\n`, then the end of the body.
    Events(Vec<String>),
}

/// Decides a scripted stub's answer from the request's path and JSON body.
pub(crate) type Script = Arc<dyn Fn(&str, &serde_json::Value) -> Reply + Send + Sync>;

impl Stub {
    /// A stub whose answers to `POST`s are `script`'s (`/health` and `/v1/models` are
    /// answered as [`Stub::start`] answers them); it records every body it is sent.
    pub(crate) async fn scripted(script: Script) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let rec = bodies.clone();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let (script, rec) = (script.clone(), rec.clone());
                conns.spawn(async move {
                    let svc =
                        service_fn(move |req| handle_scripted(script.clone(), rec.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Stub {
            addr,
            bodies,
            tasks,
        }
    }
}

async fn handle_scripted(
    script: Script,
    rec: Arc<Mutex<Vec<serde_json::Value>>>,
    req: Request<Incoming>,
) -> Result<Response<StubBody>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let path = req.uri().path().to_owned();
    if path == "/v1/models" || path == "/health" {
        return handle(Behaviour::default(), rec, req).await;
    }
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    rec.lock().unwrap().push(v.clone());
    Ok(match script(&path, &v) {
        Reply::Json(status, body) => {
            let mut r = Response::new(StubBody(Some(Bytes::from(body)), None));
            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Reply::Events(events) => {
            let (tx, rx) = mpsc::channel(events.len().max(1));
            for e in events {
                let _ = tx.try_send(Item::Data(Bytes::from(e)));
            }
            let mut r = Response::new(StubBody(None, Some(rx)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/event-stream"),
            );
            r
        }
    })
}
