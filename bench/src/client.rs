//! The streaming OpenAI client: sends one prepared request and times every chunk.
//!
//! One hyper connection pool, sized to the sweep's concurrency, with `TCP_NODELAY`. Each
//! body frame is stamped once when it arrives; every server-sent event in it shares that
//! stamp, which is when the client could first have seen those tokens.

use crate::dataset::PreparedRequest;
use crate::error::BenchError;
use crate::record::{ErrorType, RequestError, RequestRecord};
use crate::settings::{Endpoint, Target};
use bytes::Bytes;
use cohort_router::openai::sse::{parse_line, SseLine};
use cohort_router::openai::{ChatChunk, CompletionChunk, ErrorResponse, ModelList, Usage};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Where a record sits in its point, decided by the runner.
#[derive(Debug, Clone, Copy)]
pub struct RecordMeta {
    /// Issue order.
    pub index: u64,
    /// A warm-up request.
    pub warmup: bool,
    /// When the schedule wanted it sent, from the point's origin.
    pub due: Option<Duration>,
}

/// A cloneable client for one endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    target: Target,
    uri: Uri,
    auth: Option<HeaderValue>,
    endpoint: Endpoint,
    timeout: Duration,
}

impl Client {
    /// A client keeping up to `pool` idle connections (the sweep's largest concurrency).
    pub fn new(
        target: &Target,
        endpoint: Endpoint,
        pool: usize,
        timeout: Duration,
    ) -> Result<Client, BenchError> {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(10)));
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool.max(1))
            .build(conn);
        let uri: Uri =
            target
                .uri(endpoint.path())
                .parse()
                .map_err(
                    |e: hyper::http::uri::InvalidUri| BenchError::InvalidArgument {
                        name: "--url",
                        value: target.uri(""),
                        reason: e.to_string(),
                    },
                )?;
        let auth = match &target.api_key {
            Some(k) => Some(HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                BenchError::InvalidArgument {
                    name: "--api-key-file",
                    value: "(the key)".to_owned(),
                    reason: "the key holds characters not allowed in a header".to_owned(),
                }
            })?),
            None => None,
        };
        Ok(Client {
            http,
            target: target.clone(),
            uri,
            auth,
            endpoint,
            timeout,
        })
    }

    /// The first model `GET /v1/models` lists.
    pub async fn first_model(&self) -> Result<String, BenchError> {
        let url = self.target.uri("/v1/models");
        let fail = |reason: String| BenchError::Models {
            url: url.clone(),
            reason,
        };
        let mut req = Request::builder().method(Method::GET).uri(&url);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| fail(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.http.request(req))
            .await
            .map_err(|_| fail("no answer within 30 s".to_owned()))?
            .map_err(|e| fail(error_chain(&e)))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(fail(format!("status {status}")));
        }
        let list: ModelList<'_> = serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        list.data
            .first()
            .map(|m| m.id.to_string())
            .ok_or_else(|| fail("the list is empty".to_owned()))
    }

    /// Sends `req` and measures it; never fails, a failure is in the record.
    pub async fn send(
        &self,
        req: PreparedRequest,
        meta: RecordMeta,
        origin: Instant,
        cancel: &CancellationToken,
    ) -> RequestRecord {
        let mut http_req = Request::new(Full::new(req.body));
        *http_req.method_mut() = Method::POST;
        *http_req.uri_mut() = self.uri.clone();
        let h = http_req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(a) = &self.auth {
            h.insert(AUTHORIZATION, a.clone());
        }
        let sent = Instant::now();
        let mut m = Measure::new(self.endpoint);
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => Outcome::Cancelled,
            r = tokio::time::timeout(self.timeout, self.exchange(http_req, &mut m)) => match r {
                Ok(()) => Outcome::Finished,
                Err(_) => Outcome::TimedOut,
            },
        };
        let end = Instant::now();
        let us = |d: Duration| d.as_micros() as u64;
        let mut error = m.error.take();
        if error.is_none() {
            error = match outcome {
                Outcome::TimedOut => Some(RequestError {
                    kind: ErrorType::Timeout,
                    status: None,
                    message: format!("no end of stream within {:?}", self.timeout),
                }),
                Outcome::Finished if !m.done => Some(RequestError {
                    kind: ErrorType::StreamCut,
                    status: None,
                    message: "the stream ended before `data: [DONE]`".to_owned(),
                }),
                Outcome::Finished if m.chunks == 0 => Some(RequestError {
                    kind: ErrorType::NoTokens,
                    status: None,
                    message: "the stream carried no token".to_owned(),
                }),
                _ => None,
            };
        }
        let cancelled = matches!(outcome, Outcome::Cancelled) && error.is_none();
        let (input_tokens, output_tokens, cached_tokens, usage_reported) = match m.usage {
            Some(u) => (
                u.prompt_tokens,
                u.completion_tokens,
                u.cached_tokens(),
                true,
            ),
            None => (req.input_tokens, m.chunks, 0, false),
        };
        RequestRecord {
            index: meta.index,
            warmup: meta.warmup,
            due_us: meta.due.map(us),
            sent_us: us(sent.saturating_duration_since(origin)),
            ttft_us: m.first.map(|f| us(f.saturating_duration_since(sent))),
            e2el_us: us(m.end.unwrap_or(end).saturating_duration_since(sent)),
            itl_us: m.itl,
            input_tokens,
            output_tokens,
            cached_tokens,
            usage_reported,
            error,
            cancelled,
        }
    }

    async fn exchange(&self, req: Request<Full<Bytes>>, m: &mut Measure) {
        let resp = match self.http.request(req).await {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_connect() {
                    ErrorType::Connect
                } else {
                    ErrorType::StreamCut
                };
                m.fail(kind, None, error_chain(&e));
                return;
            }
        };
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let mut text = Vec::new();
            while let Some(Ok(f)) = body.frame().await {
                if let Some(d) = f.data_ref() {
                    if text.len() < 65_536 {
                        text.extend_from_slice(d);
                    }
                }
            }
            let kind = if status.is_client_error() {
                ErrorType::HttpClientError
            } else {
                ErrorType::HttpServerError
            };
            let message = match serde_json::from_slice::<ErrorResponse<'_>>(&text) {
                Ok(e) => format!("{}: {}", e.error.kind, e.error.message),
                Err(_) => String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned(),
            };
            m.fail(kind, Some(status.as_u16()), message);
            return;
        }
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        m.feed(d, Instant::now());
                        if m.done || m.error.is_some() {
                            m.end = Some(Instant::now());
                            return;
                        }
                    }
                }
                Err(e) => {
                    m.fail(ErrorType::StreamCut, None, error_chain(&e));
                    return;
                }
            }
        }
        m.end = Some(Instant::now());
    }
}

enum Outcome {
    Finished,
    TimedOut,
    Cancelled,
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The state of one stream being timed: an incremental server-sent-event parser.
#[derive(Debug)]
pub(crate) struct Measure {
    endpoint: Endpoint,
    pending: Vec<u8>,
    first: Option<Instant>,
    last: Option<Instant>,
    end: Option<Instant>,
    itl: Vec<u64>,
    chunks: u32,
    usage: Option<Usage>,
    done: bool,
    error: Option<RequestError>,
}

impl Measure {
    pub(crate) fn new(endpoint: Endpoint) -> Measure {
        Measure {
            endpoint,
            pending: Vec::new(),
            first: None,
            last: None,
            end: None,
            itl: Vec::new(),
            chunks: 0,
            usage: None,
            done: false,
            error: None,
        }
    }

    fn fail(&mut self, kind: ErrorType, status: Option<u16>, message: String) {
        if self.error.is_none() {
            self.error = Some(RequestError {
                kind,
                status,
                message,
            });
        }
    }

    /// Feeds bytes that arrived at `t`.
    pub(crate) fn feed(&mut self, data: &[u8], t: Instant) {
        let mut rest = data;
        if !self.pending.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let mut line = std::mem::take(&mut self.pending);
                    line.extend_from_slice(&rest[..i]);
                    self.line(&line, t);
                    rest = &rest[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(rest);
                    return;
                }
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.line(&rest[..i], t);
            rest = &rest[i + 1..];
            if self.done || self.error.is_some() {
                return;
            }
        }
        self.pending.extend_from_slice(rest);
    }

    fn line(&mut self, line: &[u8], t: Instant) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.done || self.error.is_some() {
            return;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            self.fail(
                ErrorType::BadChunk,
                None,
                "an event is not UTF-8".to_owned(),
            );
            return;
        };
        match parse_line(text) {
            SseLine::Done => self.done = true,
            SseLine::Data(json) => self.event(json, t),
            SseLine::Other => {}
        }
    }

    fn event(&mut self, json: &str, t: Instant) {
        let (token, usage) = match self.endpoint {
            Endpoint::Completions => match serde_json::from_str::<CompletionChunk<'_>>(json) {
                Ok(c) => (
                    c.choices.iter().any(|ch| {
                        !ch.text.is_empty() || ch.token_ids.as_ref().is_some_and(|t| !t.is_empty())
                    }),
                    c.usage,
                ),
                Err(e) => return self.bad_event(json, e),
            },
            Endpoint::Chat => match serde_json::from_str::<ChatChunk<'_>>(json) {
                Ok(c) => (
                    c.choices
                        .iter()
                        .any(|ch| ch.delta.content.as_ref().is_some_and(|s| !s.is_empty())),
                    c.usage,
                ),
                Err(e) => return self.bad_event(json, e),
            },
        };
        if usage.is_some() {
            self.usage = usage;
        }
        if token {
            match self.last {
                None => self.first = Some(t),
                Some(prev) => self
                    .itl
                    .push(t.saturating_duration_since(prev).as_micros() as u64),
            }
            self.last = Some(t);
            self.chunks += 1;
        }
    }

    fn bad_event(&mut self, json: &str, e: serde_json::Error) {
        match serde_json::from_str::<ErrorResponse<'_>>(json) {
            Ok(er) => self.fail(
                ErrorType::StreamError,
                Some(er.error.code),
                format!("{}: {}", er.error.kind, er.error.message),
            ),
            Err(_) => self.fail(
                ErrorType::BadChunk,
                None,
                format!("{e}: {}", &json[..json.len().min(120)]),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str) -> String {
        format!("data: {{\"id\":\"c\",\"object\":\"text_completion\",\"created\":0,\"model\":\"m\",\"choices\":[{{\"index\":0,\"text\":\"{text}\",\"logprobs\":null,\"finish_reason\":null}}]}}\n\n")
    }

    #[test]
    fn split_events_count_tokens_usage_and_gaps() {
        let t0 = Instant::now();
        let mut m = Measure::new(Endpoint::Completions);
        let s = format!(
            "{}{}data: {{\"id\":\"c\",\"object\":\"text_completion\",\"created\":0,\"model\":\"m\",\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12,\"prompt_tokens_details\":{{\"cached_tokens\":3}}}}}}\r\n\r\ndata: [DONE]\n\n",
            chunk("a"),
            chunk("")
        );
        let bytes = s.as_bytes();
        // Split mid-line: the first token arrives at t0, the rest 5 ms later.
        let cut = 30;
        m.feed(&bytes[..cut], t0);
        assert_eq!(m.chunks, 0);
        m.feed(&bytes[cut..], t0 + Duration::from_millis(5));
        assert!(m.done);
        assert_eq!(m.chunks, 1, "an empty text is not a token");
        assert_eq!(m.usage.unwrap().cached_tokens(), 3);
        assert_eq!(m.first, Some(t0 + Duration::from_millis(5)));

        let mut m = Measure::new(Endpoint::Completions);
        m.feed(chunk("x").as_bytes(), t0);
        m.feed(chunk("y").as_bytes(), t0 + Duration::from_micros(1500));
        m.feed(chunk("z").as_bytes(), t0 + Duration::from_micros(4000));
        assert_eq!(m.itl, vec![1500, 2500]);
        assert!(!m.done);
    }

    #[test]
    fn error_events_and_garbage_are_typed() {
        let mut m = Measure::new(Endpoint::Chat);
        m.feed(b"data: {\"error\":{\"message\":\"boom\",\"type\":\"InternalServerError\",\"param\":null,\"code\":500}}\n\n", Instant::now());
        let e = m.error.unwrap();
        assert_eq!(e.kind, ErrorType::StreamError);
        assert_eq!(e.status, Some(500));
        let mut m = Measure::new(Endpoint::Chat);
        m.feed(b"data: {not json\n\n", Instant::now());
        assert_eq!(m.error.unwrap().kind, ErrorType::BadChunk);
    }
}
