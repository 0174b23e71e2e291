//! Non-streamed response bodies, usage and `/v1/models`.

use super::request::KvTransferParams;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` (or the context) was reached.
    Length,
    /// The request was aborted.
    Abort,
}

impl FinishReason {
    /// The wire string, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt(s).
    pub prompt_tokens: u32,
    /// `prompt_tokens + completion_tokens`.
    pub total_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Prompt tokens served from the prefix cache (vLLM with
    /// `--enable-prompt-tokens-details`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

impl Usage {
    /// Usage with cached-token details.
    pub fn new(prompt_tokens: u32, completion_tokens: u32, cached_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            completion_tokens,
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens }),
        }
    }

    /// Prompt tokens served from the prefix cache (0 when not reported).
    pub fn cached_tokens(&self) -> u32 {
        self.prompt_tokens_details.map_or(0, |d| d.cached_tokens)
    }
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose KV came from the prefix cache.
    #[serde(default)]
    pub cached_tokens: u32,
}

/// The body of a non-streamed `/v1/completions` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse<'a> {
    /// `cmpl-…`.
    pub id: Cow<'a, str>,
    /// Always `text_completion`.
    pub object: Cow<'a, str>,
    /// Unix seconds.
    pub created: u64,
    /// The served model name.
    pub model: Cow<'a, str>,
    /// One choice per prompt.
    pub choices: Vec<CompletionChoice<'a>>,
    /// Token counts, summed over the prompts.
    pub usage: Usage,
    /// Where the KV blocks are held, for a prefill-only request (else `null`).
    #[serde(default)]
    pub kv_transfer_params: Option<KvTransferParams>,
}

/// One choice of a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice<'a> {
    /// Index of the prompt in the batch.
    pub index: u32,
    /// The generated text.
    pub text: Cow<'a, str>,
    /// Always `null` here.
    #[serde(default)]
    pub logprobs: Option<serde_json::Value>,
    /// Why it ended.
    pub finish_reason: Option<FinishReason>,
    /// The stop token or string that ended it (`null` for an end-of-sequence token).
    #[serde(default)]
    pub stop_reason: Option<serde_json::Value>,
    /// The prompt's token ids (with `return_token_ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
    /// The generated token ids (with `return_token_ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
}

/// The body of a non-streamed `/v1/chat/completions` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse<'a> {
    /// `chatcmpl-…`.
    pub id: Cow<'a, str>,
    /// Always `chat.completion`.
    pub object: Cow<'a, str>,
    /// Unix seconds.
    pub created: u64,
    /// The served model name.
    pub model: Cow<'a, str>,
    /// One choice.
    pub choices: Vec<ChatChoice<'a>>,
    /// Token counts.
    pub usage: Usage,
    /// As in [`CompletionResponse::kv_transfer_params`].
    #[serde(default)]
    pub kv_transfer_params: Option<KvTransferParams>,
}

/// One choice of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice<'a> {
    /// Always 0 (one choice).
    pub index: u32,
    /// The assistant's message.
    pub message: ChatMessageOut<'a>,
    /// Always `null` here.
    #[serde(default)]
    pub logprobs: Option<serde_json::Value>,
    /// Why it ended.
    pub finish_reason: Option<FinishReason>,
    /// As in [`CompletionChoice::stop_reason`].
    #[serde(default)]
    pub stop_reason: Option<serde_json::Value>,
    /// The generated token ids (with `return_token_ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
}

/// The assistant's message in a chat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessageOut<'a> {
    /// Always `assistant`.
    pub role: Cow<'a, str>,
    /// The generated text.
    pub content: Option<Cow<'a, str>>,
}

/// The body of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList<'a> {
    /// Always `list`.
    pub object: Cow<'a, str>,
    /// The served models.
    pub data: Vec<ModelCard<'a>>,
}

/// One served model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard<'a> {
    /// The name requests must give as `model`.
    pub id: Cow<'a, str>,
    /// Always `model`.
    pub object: Cow<'a, str>,
    /// Unix seconds.
    pub created: u64,
    /// `vllm` for vLLM and the simulator.
    pub owned_by: Cow<'a, str>,
    /// The model path or hub id it was loaded from.
    #[serde(default)]
    pub root: Option<Cow<'a, str>>,
    /// The context length, in tokens.
    #[serde(default)]
    pub max_model_len: Option<u32>,
}
