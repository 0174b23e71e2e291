//! Talking to engines: the pooled HTTP client (TCP_NODELAY), request sending with a
//! header timeout, and the server-sent-event reader that turns an engine's streamed
//! `/v1/completions` answer into [`UpEvent`]s.

use crate::openai::{sse, CompletionChunk, ErrorResponse, FinishReason, Usage};
use crate::registry::Worker;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{header, Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use std::collections::VecDeque;
use std::time::Duration;

/// The pooled client to engines.
pub type Client = HyperClient<HttpConnector, Full<Bytes>>;

/// A client with TCP_NODELAY, a connect timeout and kept-alive connections.
pub fn client(connect_timeout: Duration) -> Client {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(connect_timeout));
    HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build(c)
}

/// Why an upstream exchange failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpstreamError {
    /// No connection, a reset, a broken stream or a timeout: the worker is at fault and
    /// the request may go elsewhere.
    #[error("{0}")]
    Failed(String),
    /// The engine refused the request (4xx): the request is at fault; passed on to the
    /// client as it is.
    #[error("{status}: {message}")]
    Refused {
        /// The engine's status.
        status: u16,
        /// The engine's message.
        message: String,
        /// The field the engine named.
        param: Option<String>,
    },
}

/// POSTs `body` (JSON) to `path` on `w`; waits at most `timeout` for the response head.
/// A 2xx gives the response body; anything else an error with the engine's message.
pub async fn post(
    client: &Client,
    w: &Worker,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Incoming, UpstreamError> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(w.uri(path))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| UpstreamError::Failed(e.to_string()))?;
    let resp = match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Err(UpstreamError::Failed(format!(
                "`{}`: {}",
                w.spec.url,
                error_chain(&e)
            )))
        }
        Err(_) => {
            return Err(UpstreamError::Failed(format!(
                "`{}`: no response within {} s",
                w.spec.url,
                timeout.as_secs_f64()
            )))
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(resp.into_body());
    }
    let body = tokio::time::timeout(timeout, resp.into_body().collect())
        .await
        .ok()
        .and_then(|r| r.ok())
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (message, param) = match serde_json::from_slice::<ErrorResponse<'_>>(&body) {
        Ok(e) => (
            e.error.message.into_owned(),
            e.error.param.map(|p| p.into_owned()),
        ),
        Err(_) => (
            String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            None,
        ),
    };
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        Err(UpstreamError::Refused {
            status: status.as_u16(),
            message,
            param,
        })
    } else {
        Err(UpstreamError::Failed(format!(
            "`{}` answered {status}: {message}",
            w.spec.url
        )))
    }
}

/// Reads a whole (small) response body, within `timeout`.
pub async fn read_all(body: Incoming, timeout: Duration) -> Result<Bytes, UpstreamError> {
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) => Err(UpstreamError::Failed(error_chain(&e))),
        Err(_) => Err(UpstreamError::Failed(format!(
            "the body did not arrive within {} s",
            timeout.as_secs_f64()
        ))),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// One thing an engine's stream said.
#[derive(Debug, Clone, PartialEq)]
pub enum UpEvent {
    /// New tokens of the (single) choice.
    Tokens {
        /// Their text.
        text: String,
        /// Their ids (empty when the engine does not send `token_ids`).
        ids: Vec<u32>,
        /// Set on the last one.
        finish: Option<FinishReason>,
    },
    /// The usage chunk.
    Usage(Usage),
    /// `data: [DONE]`.
    Done,
}

/// An engine's SSE stream, read event by event.
#[derive(Debug)]
pub struct UpStream {
    /// `None` for an answer already at hand ([`UpStream::answered`]).
    body: Option<Incoming>,
    buf: BytesMut,
    /// Events given before anything read from `body`.
    queued: VecDeque<UpEvent>,
    idle: Duration,
    ended: bool,
}

impl UpStream {
    /// Reads `body`; a silence longer than `idle` is a failure.
    pub fn new(body: Incoming, idle: Duration) -> Self {
        UpStream {
            body: Some(body),
            buf: BytesMut::with_capacity(4096),
            queued: VecDeque::new(),
            idle,
            ended: false,
        }
    }

    /// A stream of `events` that are already at hand: an answer the prefill side gave
    /// whole (see `disagg::Prefilled::Answered`).
    pub fn answered(events: Vec<UpEvent>) -> Self {
        UpStream {
            body: None,
            buf: BytesMut::new(),
            queued: events.into(),
            idle: Duration::ZERO,
            ended: true,
        }
    }

    /// The next event; `Ok(None)` at the end of the body. An end without `[DONE]`, a
    /// reset, an idle timeout or an in-stream error event is a [`UpstreamError::Failed`].
    pub async fn next(&mut self) -> Result<Option<UpEvent>, UpstreamError> {
        if let Some(ev) = self.queued.pop_front() {
            return Ok(Some(ev));
        }
        loop {
            if let Some(ev) = self.parse_one()? {
                return Ok(Some(ev));
            }
            let (false, Some(body)) = (self.ended, self.body.as_mut()) else {
                return Ok(None);
            };
            let frame = match tokio::time::timeout(self.idle, body.frame()).await {
                Err(_) => {
                    return Err(UpstreamError::Failed(format!(
                        "the stream was silent for {} s",
                        self.idle.as_secs_f64()
                    )))
                }
                Ok(None) => {
                    self.ended = true;
                    if !self.buf.is_empty() {
                        return Err(UpstreamError::Failed(
                            "the stream ended inside an event".into(),
                        ));
                    }
                    return Ok(None);
                }
                Ok(Some(Err(e))) => {
                    return Err(UpstreamError::Failed(format!(
                        "the stream broke: {}",
                        error_chain(&e)
                    )))
                }
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The next event if one is ready without waiting (already buffered, or in a frame
    /// the connection has already received); `None` otherwise. Lets the caller put a
    /// burst of tokens in one write. Errors and the end of the body are left for
    /// [`next`](Self::next) to report.
    pub fn ready(&mut self) -> Option<UpEvent> {
        use http_body::Body as _;
        if let Some(ev) = self.queued.pop_front() {
            return Some(ev);
        }
        loop {
            match self.parse_one() {
                Ok(Some(ev)) => return Some(ev),
                Ok(None) if self.ended => return None,
                Ok(None) => {}
                Err(_) => return None,
            }
            let body = self.body.as_mut()?;
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match std::pin::Pin::new(body).poll_frame(&mut cx) {
                std::task::Poll::Ready(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                std::task::Poll::Ready(None) => {
                    self.ended = true;
                    return None;
                }
                // An error is reported again by the next `next()`… or lost: treat a
                // broken stream as a silent one, which `next()` then sees end.
                std::task::Poll::Ready(Some(Err(_))) => {
                    self.ended = true;
                    return None;
                }
                std::task::Poll::Pending => return None,
            }
        }
    }

    /// Parses one complete event (`…\n\n`) from the buffer, if there is one.
    fn parse_one(&mut self) -> Result<Option<UpEvent>, UpstreamError> {
        loop {
            let Some(end) = find_event_end(&self.buf) else {
                return Ok(None);
            };
            let event = self.buf.split_to(end.0);
            self.buf.advance(end.1);
            if let Some(ev) = parse_event(&event)? {
                return Ok(Some(ev));
            }
        }
    }
}

/// (end of the event, length of the separator) of the first event in `buf`.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

/// Parses the `data:` lines of one event.
pub(crate) fn parse_event(event: &[u8]) -> Result<Option<UpEvent>, UpstreamError> {
    let text = std::str::from_utf8(event)
        .map_err(|_| UpstreamError::Failed("the stream is not UTF-8".into()))?;
    for line in text.lines() {
        match sse::parse_line(line.trim_end_matches('\r')) {
            sse::SseLine::Done => return Ok(Some(UpEvent::Done)),
            sse::SseLine::Other => continue,
            sse::SseLine::Data(json) => {
                if let Ok(chunk) = serde_json::from_str::<CompletionChunk<'_>>(json) {
                    if let Some(u) = chunk.usage {
                        if chunk.choices.is_empty() {
                            return Ok(Some(UpEvent::Usage(u)));
                        }
                    }
                    let Some(c) = chunk.choices.into_iter().next() else {
                        continue;
                    };
                    return Ok(Some(UpEvent::Tokens {
                        text: c.text.into_owned(),
                        ids: c.token_ids.map(|t| t.into_owned()).unwrap_or_default(),
                        finish: c.finish_reason,
                    }));
                }
                let message = match serde_json::from_str::<ErrorResponse<'_>>(json) {
                    // An error the engine blames on the request (vLLM validates some
                    // fields only once it streams, e.g. out-of-vocabulary token ids):
                    // the client's to fix, not the worker's fault — no retry elsewhere,
                    // no breaker.
                    Ok(e) if (400..500).contains(&e.error.code) && e.error.code != 429 => {
                        return Err(UpstreamError::Refused {
                            status: e.error.code,
                            message: e.error.message.into_owned(),
                            param: e.error.param.map(|p| p.into_owned()),
                        });
                    }
                    Ok(e) => e.error.message.into_owned(),
                    Err(_) => format!(
                        "an event that is neither a completion chunk nor an error: {}",
                        &json[..json.len().min(200)]
                    ),
                };
                return Err(UpstreamError::Failed(format!(
                    "the engine reported: {message}"
                )));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",",
            "\"choices\":[{\"index\":0,\"text\":\" the\",\"logprobs\":null,\"finish_reason\":null,",
            "\"token_ids\":[0]}]}\n\n",
            "data: {\"id\":\"c\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",",
            "\"choices\":[{\"index\":0,\"text\":\" of\",\"logprobs\":null,\"finish_reason\":\"length\",",
            "\"token_ids\":[1]}]}\r\n\r\n",
            "data: {\"id\":\"c\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",",
            "\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":7,\"completion_tokens\":2,",
            "\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        for cut in [1, 7, 50, 100, stream.len()] {
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in stream.chunks(cut) {
                buf.extend_from_slice(piece);
                while let Some(end) = find_event_end(&buf) {
                    let ev = buf.split_to(end.0);
                    buf.advance(end.1);
                    if let Some(e) = parse_event(&ev).unwrap() {
                        out.push(e);
                    }
                }
            }
            assert_eq!(out.len(), 4, "cut {cut}");
            assert_eq!(
                out[1],
                UpEvent::Tokens {
                    text: " of".into(),
                    ids: vec![1],
                    finish: Some(FinishReason::Length)
                }
            );
            assert!(matches!(out[2], UpEvent::Usage(u) if u.cached_tokens() == 4));
            assert_eq!(out[3], UpEvent::Done);
        }
    }

    #[test]
    fn in_stream_errors_are_failures() {
        let e = parse_event(
            br#"data: {"error":{"message":"the engine stopped","type":"ServiceUnavailableError","code":503}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("the engine stopped"), "{e}");
        assert!(matches!(e, UpstreamError::Failed(_)), "{e:?}");
    }

    /// vLLM 0.32 validates prompt token ids once it streams: the request is at fault,
    /// and the client gets the engine's 400 (no retry, no breaker).
    #[test]
    fn in_stream_client_errors_are_refusals() {
        let e = parse_event(
            br#"data: {"error":{"object":"error","message":"Token id 30693 is out of vocabulary","type":"BadRequestError","param":null,"code":400}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            UpstreamError::Refused {
                status: 400,
                message: "Token id 30693 is out of vocabulary".into(),
                param: None,
            }
        );
    }
}
