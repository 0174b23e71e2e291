//! The client's answer: OpenAI chunks of the client's API (chat or completion) rendered
//! from generated pieces, with the frontend's own id, model name and usage — whatever
//! worker (or workers, after a migration) produced them.

use crate::generate::Piece;
use crate::metrics::Api;
use crate::openai::{
    sse, ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletionResponse, ChatDelta, ChatMessageOut,
    CompletionChoice, CompletionChunk, CompletionChunkChoice, CompletionResponse, FinishReason,
    Usage, OBJECT_CHAT_CHUNK, OBJECT_TEXT_COMPLETION,
};
use std::borrow::Cow;

/// Renders one request's chunks.
#[derive(Debug)]
pub(crate) struct Renderer {
    pub api: Api,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub return_ids: bool,
    pub started: bool,
}

impl Renderer {
    /// Appends the SSE event(s) of one piece.
    pub(crate) fn piece(&mut self, p: &Piece, out: &mut Vec<u8>) {
        let token_ids = self.return_ids.then_some(Cow::Borrowed(p.ids.as_slice()));
        let _ = match self.api {
            Api::Completion => sse::write_event(
                out,
                &CompletionChunk {
                    id: Cow::Borrowed(&self.id),
                    object: Cow::Borrowed(OBJECT_TEXT_COMPLETION),
                    created: self.created,
                    model: Cow::Borrowed(&self.model),
                    choices: vec![CompletionChunkChoice {
                        index: 0,
                        text: Cow::Borrowed(&p.text),
                        logprobs: None,
                        finish_reason: p.finish,
                        stop_reason: None,
                        prompt_token_ids: None,
                        token_ids,
                    }],
                    usage: None,
                },
            ),
            Api::Chat => {
                if !self.started {
                    let role = ChatDelta {
                        role: Some(Cow::Borrowed("assistant")),
                        content: Some(Cow::Borrowed("")),
                    };
                    let _ = sse::write_event(out, &self.chat_chunk(role, None, None));
                }
                let delta = ChatDelta {
                    role: None,
                    content: Some(Cow::Borrowed(&p.text)),
                };
                sse::write_event(out, &self.chat_chunk(delta, p.finish, token_ids))
            }
        };
        self.started = true;
    }

    fn chat_chunk<'a>(
        &'a self,
        delta: ChatDelta<'a>,
        finish: Option<FinishReason>,
        token_ids: Option<Cow<'a, [u32]>>,
    ) -> ChatChunk<'a> {
        ChatChunk {
            id: Cow::Borrowed(&self.id),
            object: Cow::Borrowed(OBJECT_CHAT_CHUNK),
            created: self.created,
            model: Cow::Borrowed(&self.model),
            choices: vec![ChatChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
                stop_reason: finish.map(|_| None),
                token_ids,
            }],
            usage: None,
        }
    }

    /// Appends the usage chunk (no choices).
    pub(crate) fn usage(&self, usage: Usage, out: &mut Vec<u8>) {
        let _ = match self.api {
            Api::Completion => sse::write_event(
                out,
                &CompletionChunk {
                    id: Cow::Borrowed(&self.id),
                    object: Cow::Borrowed(OBJECT_TEXT_COMPLETION),
                    created: self.created,
                    model: Cow::Borrowed(&self.model),
                    choices: Vec::new(),
                    usage: Some(usage),
                },
            ),
            Api::Chat => sse::write_event(
                out,
                &ChatChunk {
                    id: Cow::Borrowed(&self.id),
                    object: Cow::Borrowed(OBJECT_CHAT_CHUNK),
                    created: self.created,
                    model: Cow::Borrowed(&self.model),
                    choices: Vec::new(),
                    usage: Some(usage),
                },
            ),
        };
    }

    /// The whole (non-streamed) answer.
    pub(crate) fn whole(
        &self,
        text: String,
        ids: Vec<u32>,
        finish: Option<FinishReason>,
        usage: Usage,
        prompt: &[u32],
    ) -> Vec<u8> {
        let r = match self.api {
            Api::Completion => serde_json::to_vec(&CompletionResponse {
                id: Cow::Borrowed(&self.id),
                object: Cow::Borrowed(OBJECT_TEXT_COMPLETION),
                created: self.created,
                model: Cow::Borrowed(&self.model),
                choices: vec![CompletionChoice {
                    index: 0,
                    text: text.into(),
                    logprobs: None,
                    finish_reason: finish,
                    stop_reason: None,
                    prompt_token_ids: self.return_ids.then(|| prompt.to_vec()),
                    token_ids: self.return_ids.then_some(ids),
                }],
                usage,
                kv_transfer_params: None,
            }),
            Api::Chat => serde_json::to_vec(&ChatCompletionResponse {
                id: Cow::Borrowed(&self.id),
                object: Cow::Borrowed("chat.completion"),
                created: self.created,
                model: Cow::Borrowed(&self.model),
                choices: vec![ChatChoice {
                    index: 0,
                    message: ChatMessageOut {
                        role: "assistant".into(),
                        content: Some(text.into()),
                    },
                    logprobs: None,
                    finish_reason: finish,
                    stop_reason: None,
                    token_ids: self.return_ids.then_some(ids),
                }],
                usage,
                kv_transfer_params: None,
            }),
        };
        r.unwrap_or_default()
    }
}
