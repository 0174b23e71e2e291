//! Streamed chunks (`stream: true`), one per server-sent event.

use super::response::{FinishReason, Usage};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// `object` of a completions chunk (and of a non-streamed completion).
pub const OBJECT_TEXT_COMPLETION: &str = "text_completion";
/// `object` of a chat chunk.
pub const OBJECT_CHAT_CHUNK: &str = "chat.completion.chunk";

/// One chunk of a streamed `/v1/completions` answer.
///
/// vLLM sends one chunk per output step and prompt, with the last one carrying
/// `finish_reason`; then, with `stream_options.include_usage`, a chunk with no choices
/// and the usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChunk<'a> {
    /// `cmpl-…`, the same in every chunk of a stream.
    pub id: Cow<'a, str>,
    /// Always `text_completion`.
    pub object: Cow<'a, str>,
    /// Unix seconds.
    pub created: u64,
    /// The served model name.
    pub model: Cow<'a, str>,
    /// The new text per prompt (empty in the usage chunk).
    pub choices: Vec<CompletionChunkChoice<'a>>,
    /// Only in the usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One choice of a completions chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChunkChoice<'a> {
    /// Index of the prompt in the batch.
    pub index: u32,
    /// The new text.
    pub text: Cow<'a, str>,
    /// Always `null` here.
    #[serde(default)]
    pub logprobs: Option<serde_json::Value>,
    /// Set on the prompt's last chunk.
    pub finish_reason: Option<FinishReason>,
    /// As in a non-streamed choice.
    #[serde(default)]
    pub stop_reason: Option<serde_json::Value>,
    /// The prompt's token ids, in the prompt's first chunk (with `return_token_ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Cow<'a, [u32]>>,
    /// The new token ids (with `return_token_ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Cow<'a, [u32]>>,
}

/// One chunk of a streamed `/v1/chat/completions` answer.
///
/// vLLM's first chunk has `delta: {"role": "assistant", "content": ""}`; each later one
/// `delta: {"content": …}`; the last content chunk carries `finish_reason`; then the
/// optional usage chunk with `choices: []`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk<'a> {
    /// `chatcmpl-…`.
    pub id: Cow<'a, str>,
    /// Always `chat.completion.chunk`.
    pub object: Cow<'a, str>,
    /// Unix seconds.
    pub created: u64,
    /// The served model name.
    pub model: Cow<'a, str>,
    /// The delta (empty in the usage chunk).
    pub choices: Vec<ChatChunkChoice<'a>>,
    /// Only in the usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One choice of a chat chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunkChoice<'a> {
    /// Always 0.
    pub index: u32,
    /// What is new.
    pub delta: ChatDelta<'a>,
    /// Always `null` here.
    #[serde(default)]
    pub logprobs: Option<serde_json::Value>,
    /// Set on the last content chunk.
    pub finish_reason: Option<FinishReason>,
    /// Present (as `null`) on the last content chunk, as vLLM sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<Option<serde_json::Value>>,
    /// The new token ids (with `return_token_ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Cow<'a, [u32]>>,
}

/// `delta` of a chat chunk.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatDelta<'a> {
    /// `assistant`, in the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Cow<'a, str>>,
    /// The new text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Cow<'a, str>>,
}
