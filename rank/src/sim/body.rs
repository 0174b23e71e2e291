//! Response bodies: a whole body, or a server-sent-event stream rendered from a
//! request's [`Out`] events as vLLM frames them.
//!
//! The stream drains every event already waiting into one frame, so a burst of tokens
//! (e.g. with `--speedup inf`) costs one write, not one per token.

use super::engine::{DoneInfo, EngineHandle, Out};
use super::error::ApiError;
use super::tokenizer::Tokenizer;
use bytes::Bytes;
use cohort_router::openai::{
    sse, ChatChunk, ChatChunkChoice, ChatDelta, CompletionChunk, CompletionChunkChoice,
    ErrorResponse, Usage, OBJECT_CHAT_CHUNK, OBJECT_TEXT_COMPLETION,
};
use http_body::Frame;
use std::borrow::Cow;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A response body.
#[derive(Debug)]
pub(crate) enum Body {
    Full(Option<Bytes>),
    Sse(Box<SseStream>),
}

impl Body {
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        Body::Full(Some(b.into()))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Sse(s) => s.poll(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Sse(s) => s.ended,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(Some(b)) => http_body::SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => http_body::SizeHint::with_exact(0),
            Body::Sse(_) => http_body::SizeHint::default(),
        }
    }
}

/// Which API a response belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Completion,
    Chat,
}

/// What rendering a response needs besides the events.
#[derive(Debug)]
pub(crate) struct RenderCtx {
    pub api: Api,
    pub id: String,
    pub created: u64,
    pub model: Arc<str>,
    pub tokenizer: Arc<Tokenizer>,
    pub return_ids: bool,
    pub include_usage: bool,
    /// Prompt token ids per prompt (kept only with `return_token_ids`).
    pub prompts: Vec<Vec<u32>>,
    pub n: u32,
}

/// Sends an abort for requests whose response is dropped before they finish.
#[derive(Debug)]
pub(crate) struct AbortGuard {
    engine: EngineHandle,
    ids: Vec<u64>,
    armed: bool,
}

impl AbortGuard {
    pub(crate) fn new(engine: EngineHandle, ids: Vec<u64>) -> Self {
        AbortGuard {
            engine,
            ids,
            armed: true,
        }
    }

    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if self.armed {
            self.engine.abort(std::mem::take(&mut self.ids));
        }
    }
}

/// Running totals over the prompts of one request.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UsageAcc {
    prompt: u32,
    completion: u32,
    cached: u32,
}

impl UsageAcc {
    pub(crate) fn add(&mut self, info: &DoneInfo) {
        self.prompt += info.prompt_tokens;
        self.completion += info.completion_tokens;
        self.cached += info.cached_tokens;
    }

    pub(crate) fn usage(&self) -> Usage {
        Usage::new(self.prompt, self.completion, self.cached)
    }
}

/// A streamed answer.
#[derive(Debug)]
pub(crate) struct SseStream {
    r: RenderCtx,
    rx: mpsc::UnboundedReceiver<Out>,
    first: Option<Out>,
    started: Vec<bool>,
    remaining: u32,
    usage: UsageAcc,
    guard: AbortGuard,
    ended: bool,
}

impl SseStream {
    pub(crate) fn new(
        r: RenderCtx,
        rx: mpsc::UnboundedReceiver<Out>,
        first: Out,
        guard: AbortGuard,
    ) -> Self {
        let n = r.n;
        SseStream {
            r,
            rx,
            first: Some(first),
            started: vec![false; n as usize],
            remaining: n,
            usage: UsageAcc::default(),
            guard,
            ended: false,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut buf = Vec::with_capacity(512);
        if let Some(ev) = self.first.take() {
            self.render(ev, &mut buf);
        }
        while self.remaining > 0 {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(ev)) => self.render(ev, &mut buf),
                Poll::Ready(None) => {
                    let e = ApiError::new(
                        cohort_router::openai::ErrorKind::Unavailable,
                        "the engine stopped before the request finished",
                    );
                    write_error(&mut buf, &e);
                    self.remaining = 0;
                }
                Poll::Pending => break,
            }
        }
        if self.remaining == 0 {
            self.guard.disarm();
            if self.r.include_usage {
                self.usage_chunk(&mut buf);
            }
            buf.extend_from_slice(sse::DONE);
            self.ended = true;
        }
        if buf.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Some(Bytes::from(buf)))
        }
    }

    fn render(&mut self, ev: Out, buf: &mut Vec<u8>) {
        let (idx, token, info) = match ev {
            Out::Token { idx, token } => (idx, token, None),
            Out::Done { idx, token, info } => (idx, token, Some(info)),
            Out::Failed { error } => {
                write_error(buf, &error);
                self.remaining = self.remaining.saturating_sub(1);
                return;
            }
        };
        let text = self.r.tokenizer.decode_token(token);
        let first = !std::mem::replace(&mut self.started[idx as usize], true);
        let finish = info.as_ref().map(|i| i.reason);
        let token_ids = self.r.return_ids.then(|| Cow::Owned(vec![token]));
        let r = &self.r;
        let res = match r.api {
            Api::Completion => {
                let prompt_token_ids = (first && r.return_ids)
                    .then(|| Cow::Borrowed(r.prompts[idx as usize].as_slice()));
                sse::write_event(
                    buf,
                    &CompletionChunk {
                        id: Cow::Borrowed(&r.id),
                        object: Cow::Borrowed(OBJECT_TEXT_COMPLETION),
                        created: r.created,
                        model: Cow::Borrowed(&r.model),
                        choices: vec![CompletionChunkChoice {
                            index: idx,
                            text: Cow::Borrowed(&text),
                            logprobs: None,
                            finish_reason: finish,
                            stop_reason: None,
                            prompt_token_ids,
                            token_ids,
                        }],
                        usage: None,
                    },
                )
            }
            Api::Chat => {
                let chunk = |delta, finish, stop, token_ids| ChatChunk {
                    id: Cow::Borrowed(&r.id),
                    object: Cow::Borrowed(OBJECT_CHAT_CHUNK),
                    created: r.created,
                    model: Cow::Borrowed(&r.model),
                    choices: vec![ChatChunkChoice {
                        index: idx,
                        delta,
                        logprobs: None,
                        finish_reason: finish,
                        stop_reason: stop,
                        token_ids,
                    }],
                    usage: None,
                };
                if first {
                    let role = ChatDelta {
                        role: Some(Cow::Borrowed("assistant")),
                        content: Some(Cow::Borrowed("")),
                    };
                    let _ = sse::write_event(buf, &chunk(role, None, None, None));
                }
                let delta = ChatDelta {
                    role: None,
                    content: Some(Cow::Borrowed(&text)),
                };
                let stop = finish.map(|_| None);
                sse::write_event(buf, &chunk(delta, finish, stop, token_ids))
            }
        };
        debug_assert!(res.is_ok());
        if let Some(info) = info {
            self.usage.add(&info);
            self.remaining = self.remaining.saturating_sub(1);
        }
    }

    fn usage_chunk(&self, buf: &mut Vec<u8>) {
        let r = &self.r;
        let usage = Some(self.usage.usage());
        let _ = match r.api {
            Api::Completion => sse::write_event(
                buf,
                &CompletionChunk {
                    id: Cow::Borrowed(&r.id),
                    object: Cow::Borrowed(OBJECT_TEXT_COMPLETION),
                    created: r.created,
                    model: Cow::Borrowed(&r.model),
                    choices: Vec::new(),
                    usage,
                },
            ),
            Api::Chat => sse::write_event(
                buf,
                &ChatChunk {
                    id: Cow::Borrowed(&r.id),
                    object: Cow::Borrowed(OBJECT_CHAT_CHUNK),
                    created: r.created,
                    model: Cow::Borrowed(&r.model),
                    choices: Vec::new(),
                    usage,
                },
            ),
        };
    }
}

/// vLLM's in-stream error: `data: {"error": {...}}`.
fn write_error(buf: &mut Vec<u8>, e: &ApiError) {
    let mut body = ErrorResponse::new(e.kind, e.message.clone());
    if let Some(p) = &e.param {
        body = body.with_param(p.clone());
    }
    let _ = sse::write_event(buf, &body);
}
