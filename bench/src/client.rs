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
use cohort_router::openai::{ErrorResponse, ModelList, Usage};
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
        // One gap per token after the first: no regrowth while the stream runs.
        m.itl.reserve(req.max_tokens.min(8192) as usize);
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
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    let mut line = std::mem::take(&mut self.pending);
                    line.extend_from_slice(&rest[..i]);
                    self.line(&line, t);
                    // Keep the buffer's allocation for the next split line.
                    line.clear();
                    self.pending = line;
                    rest = &rest[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(rest);
                    return;
                }
            }
        }
        while let Some(i) = memchr::memchr(b'\n', rest) {
            self.line(&rest[..i], t);
            rest = &rest[i + 1..];
            if self.done || self.error.is_some() {
                return;
            }
        }
        self.pending.extend_from_slice(rest);
    }

    /// One line of the stream: `data: {json}`, `data: [DONE]`, or anything else
    /// (comments, `event:` lines, the blank line ending an event), which is skipped.
    fn line(&mut self, line: &[u8], t: Instant) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.done || self.error.is_some() {
            return;
        }
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data == b"[DONE]" {
            self.done = true;
        } else {
            self.event(data, t);
        }
    }

    fn event(&mut self, json: &[u8], t: Instant) {
        if fast::carries_token(json, self.endpoint) {
            return self.token(t);
        }
        // From bytes: strings that are read are checked for UTF-8, skipped ones are not
        // (no validation pass over the whole event).
        let (token, usage) = match serde_json::from_slice::<lite::Chunk>(json) {
            Ok(c) => (
                match self.endpoint {
                    Endpoint::Completions => c.choices.completion_token,
                    Endpoint::Chat => c.choices.chat_token,
                },
                c.usage,
            ),
            Err(e) => return self.bad_event(json, e),
        };
        if usage.is_some() {
            self.usage = usage;
        }
        if token {
            self.token(t);
        }
    }

    /// A chunk with a token arrived at `t`.
    fn token(&mut self, t: Instant) {
        match self.last {
            None => self.first = Some(t),
            Some(prev) => self
                .itl
                .push(t.saturating_duration_since(prev).as_micros() as u64),
        }
        self.last = Some(t);
        self.chunks += 1;
    }

    fn bad_event(&mut self, json: &[u8], e: serde_json::Error) {
        match serde_json::from_slice::<ErrorResponse<'_>>(json) {
            Ok(er) => self.fail(
                ErrorType::StreamError,
                Some(er.error.code),
                format!("{}: {}", er.error.kind, er.error.message),
            ),
            Err(_) => self.fail(
                ErrorType::BadChunk,
                None,
                format!(
                    "{e}: {}",
                    String::from_utf8_lossy(&json[..json.len().min(120)])
                ),
            ),
        }
    }
}

/// The common chunk — one token, no usage — recognised without parsing: a few byte
/// searches instead of a JSON parse for every token of every stream.
///
/// Only a positive answer is trusted. A key followed by `":"` cannot occur inside a JSON
/// string (every quote there is escaped), so `"text":"x` (completions) or
/// `"content":"x` (chat) after `"choices":[` is a non-empty token string of a choice, and
/// `"token_ids":[1` a non-empty id list. Anything else — empty text, a usage object,
/// an error, other spacing, an event that is not one object — goes to the full parse.
mod fast {
    use crate::settings::Endpoint;
    use memchr::memmem;

    pub(super) fn carries_token(json: &[u8], endpoint: Endpoint) -> bool {
        let json = json.trim_ascii();
        if json.first() != Some(&b'{') || json.last() != Some(&b'}') {
            return false;
        }
        let Some(at) = memmem::find(json, br#""choices":["#) else {
            return false;
        };
        let choices = &json[at..];
        let non_empty_after = |needle: &[u8], empty: u8| {
            memmem::find(choices, needle)
                .and_then(|i| choices.get(i + needle.len()))
                .is_some_and(|&b| b != empty)
        };
        let token = match endpoint {
            Endpoint::Completions => {
                non_empty_after(br#""text":""#, b'"') || non_empty_after(br#""token_ids":["#, b']')
            }
            Endpoint::Chat => non_empty_after(br#""content":""#, b'"'),
        };
        token && !has_usage(json)
    }

    /// Whether the event has a `usage` other than `null`.
    fn has_usage(json: &[u8]) -> bool {
        memmem::find_iter(json, br#""usage""#).any(|i| {
            let rest = json[i + 7..].trim_ascii_start();
            let rest = rest.strip_prefix(b":").unwrap_or(rest).trim_ascii_start();
            !rest.starts_with(b"null")
        })
    }
}

/// What the timing needs of a streamed chunk, read without building it: whether a
/// choice carries a token, and the usage. Other fields (`id`, `model`, logprobs, ...) are
/// skipped unread, strings are checked for emptiness in place and `choices` folds into
/// two flags instead of a vector: no allocation per event. `choices` must be present,
/// so an `{"error": ...}` event does not parse as a chunk.
mod lite {
    use cohort_router::openai::Usage;
    use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
    use serde::Deserialize;
    use std::fmt;

    #[derive(Deserialize)]
    pub(super) struct Chunk {
        pub(super) choices: Choices,
        #[serde(default)]
        pub(super) usage: Option<Usage>,
    }

    /// Whether any choice carries a token, as completions (`text` or `token_ids`) and
    /// as chat (`delta.content`) count one.
    #[derive(Default)]
    pub(super) struct Choices {
        pub(super) completion_token: bool,
        pub(super) chat_token: bool,
    }

    #[derive(Deserialize)]
    struct Choice {
        #[serde(default)]
        text: Option<NonEmpty>,
        #[serde(default)]
        token_ids: Option<NonEmptySeq>,
        #[serde(default)]
        delta: Option<Delta>,
    }

    #[derive(Deserialize)]
    struct Delta {
        #[serde(default)]
        content: Option<NonEmpty>,
    }

    impl<'de> Deserialize<'de> for Choices {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Choices;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a list of choices")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices, A::Error> {
                    let mut c = Choices::default();
                    while let Some(ch) = seq.next_element::<Choice>()? {
                        let some = |n: Option<NonEmpty>| n.is_some_and(|n| n.0);
                        c.completion_token |= some(ch.text) || ch.token_ids.is_some_and(|t| t.0);
                        c.chat_token |= ch.delta.is_some_and(|d| some(d.content));
                    }
                    Ok(c)
                }
            }
            d.deserialize_seq(V)
        }
    }

    /// A string, kept only as whether it is empty.
    struct NonEmpty(bool);

    impl<'de> Deserialize<'de> for NonEmpty {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = NonEmpty;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NonEmpty, E> {
                    Ok(NonEmpty(!v.is_empty()))
                }
            }
            d.deserialize_str(V)
        }
    }

    /// A list, kept only as whether it is empty.
    struct NonEmptySeq(bool);

    impl<'de> Deserialize<'de> for NonEmptySeq {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = NonEmptySeq;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a list")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NonEmptySeq, A::Error> {
                    let mut any = false;
                    while seq.next_element::<IgnoredAny>()?.is_some() {
                        any = true;
                    }
                    Ok(NonEmptySeq(any))
                }
            }
            d.deserialize_seq(V)
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
    fn chat_deltas_and_token_ids_count_as_the_endpoint_reads_them() {
        let t0 = Instant::now();
        let mut m = Measure::new(Endpoint::Chat);
        // A role-only delta, an empty content, then two tokens (one with an escape).
        m.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n", t0);
        m.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"logprobs\":null}]}\n\n", t0);
        m.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\n\"}}],\"usage\":null}\n\n", t0);
        m.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" a\"}}]}\n\ndata: [DONE]\n\n", t0 + Duration::from_millis(2));
        assert_eq!(m.chunks, 2);
        assert_eq!(m.itl, vec![2000]);
        assert!(m.done && m.error.is_none());
        // A chat delta is no token to completions; completions' token ids are.
        let mut m = Measure::new(Endpoint::Completions);
        m.feed(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
            t0,
        );
        m.feed(
            b"data: {\"choices\":[{\"text\":\"\",\"token_ids\":[]}]}\n\n",
            t0,
        );
        assert_eq!(m.chunks, 0);
        m.feed(
            b"data: {\"choices\":[{\"text\":\"\",\"token_ids\":[17]}]}\n\n",
            t0,
        );
        assert_eq!(m.chunks, 1);
        // A chunk without `choices` is no chunk.
        m.feed(b"data: {\"id\":\"x\"}\n\n", t0);
        assert_eq!(m.error.unwrap().kind, ErrorType::BadChunk);
    }

    /// The fast path and the full parse agree on every chunk the fast path answers, and
    /// it answers the usual vLLM/SGLang token chunks.
    #[test]
    fn the_fast_path_agrees_with_the_parse() {
        use proptest::prelude::*;
        let chunk = (
            proptest::option::of("[ a-z\\\\\"]{0,3}"),
            proptest::option::of(proptest::collection::vec(0u32..100, 0..3)),
            proptest::option::of("[ a-z\\\\\"]{0,3}"),
            any::<bool>(),
            any::<bool>(),
        );
        proptest!(ProptestConfig::with_cases(2000), |((text, ids, content, usage, null_usage) in chunk)| {
            let mut choice = serde_json::Map::new();
            if let Some(t) = &text { choice.insert("text".into(), t.clone().into()); }
            if let Some(i) = &ids { choice.insert("token_ids".into(), i.clone().into()); }
            if let Some(c) = &content {
                choice.insert("delta".into(), serde_json::json!({"content": c}));
            }
            let mut v = serde_json::json!({"id": "x", "choices": [choice]});
            if usage {
                v["usage"] = serde_json::json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2});
            } else if null_usage {
                v["usage"] = serde_json::Value::Null;
            }
            let bytes = serde_json::to_vec(&v).unwrap();
            for endpoint in [Endpoint::Completions, Endpoint::Chat] {
                let parsed: lite::Chunk = serde_json::from_slice(&bytes).unwrap();
                let token = match endpoint {
                    Endpoint::Completions => parsed.choices.completion_token,
                    Endpoint::Chat => parsed.choices.chat_token,
                };
                if fast::carries_token(&bytes, endpoint) {
                    prop_assert!(token && parsed.usage.is_none(), "{}", String::from_utf8_lossy(&bytes));
                }
            }
        });
        let vllm = br#"{"id":"cmpl-8a","object":"text_completion","created":1,"model":"tiny","choices":[{"index":0,"text":" across","logprobs":null,"finish_reason":null,"stop_reason":null,"token_ids":null,"prompt_logprobs":null}],"usage":null}"#;
        assert!(fast::carries_token(vllm, Endpoint::Completions));
        let chat = br#"{"id":"chatcmpl-8c","object":"chat.completion.chunk","created":1,"model":"tiny","choices":[{"index":0,"delta":{"content":"tes"},"logprobs":null,"finish_reason":null,"token_ids":null}]}"#;
        assert!(fast::carries_token(chat, Endpoint::Chat));
        assert!(!fast::carries_token(chat, Endpoint::Completions));
        assert!(!fast::carries_token(
            br#"{"choices":[{"text":"a"}]"#,
            Endpoint::Completions
        ));
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
