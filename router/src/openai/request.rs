//! Request bodies of `POST /v1/completions` and `POST /v1/chat/completions`.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The body of `POST /v1/completions`.
///
/// Sampling fields (`temperature`, `top_p`, …) are accepted and ignored by the simulator;
/// they are kept so a proxy can forward them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The served model name.
    pub model: String,
    /// One prompt or a batch, as text or as token ids.
    pub prompt: Prompt,
    /// Most tokens to generate; vLLM's default for completions is 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Fewest tokens to generate before an end-of-sequence token may stop the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<u32>,
    /// Keep generating past an end-of-sequence token (until `max_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    /// Answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Add `prompt_token_ids` and `token_ids` to the choices (vLLM ≥ 0.10.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_token_ids: Option<bool>,
    /// vLLM's disaggregation handshake (NixlConnector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_transfer_params: Option<KvTransferParams>,
    /// Seed of the sampler: same seed, same output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Number of choices per prompt (only 1 is supported by the simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Sampling temperature (ignored by the simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling (ignored by the simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stop strings (ignored by the simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSpec>,
}

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The served model name.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate; vLLM's default is what is left of the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The newer name of `max_tokens`; wins when both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// See [`CompletionRequest::min_tokens`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<u32>,
    /// See [`CompletionRequest::ignore_eos`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    /// Answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// See [`CompletionRequest::return_token_ids`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_token_ids: Option<bool>,
    /// See [`CompletionRequest::kv_transfer_params`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_transfer_params: Option<KvTransferParams>,
    /// See [`CompletionRequest::seed`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// See [`CompletionRequest::n`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Sampling temperature (ignored by the simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling (ignored by the simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stop strings (ignored by the simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSpec>,
}

impl ChatCompletionRequest {
    /// `max_completion_tokens`, else `max_tokens`.
    pub fn max_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` and no choices before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
    /// Put the running usage in every chunk (vLLM extension).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continuous_usage_stats: bool,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopSpec {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, …
    pub role: String,
    /// Text, or a list of parts; absent for some assistant messages with tool calls.
    #[serde(default)]
    pub content: Option<MessageContent>,
}

/// A message's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Typed parts; only `text` parts carry text.
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of the content, parts joined by newlines.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            MessageContent::Text(t) => t.as_str().into(),
            MessageContent::Parts(parts) => {
                let texts: Vec<&str> = parts.iter().filter_map(|p| p.text.as_deref()).collect();
                texts.join("\n").into()
            }
        }
    }
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `text`, `image_url`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// vLLM's `kv_transfer_params` (NixlConnector), in requests and responses.
///
/// To the prefill instance: `{"do_remote_decode": true}`. Its response names where the
/// KV blocks are held (`do_remote_prefill: true`, `remote_*`); that object goes, as it is,
/// into the request to the decode instance: fields cohort does not name are kept in
/// `extra` and sent back unchanged (vLLM adds some in most releases; 0.32 sends
/// `remote_num_tokens`, `transfer_mode`, `dcp_size`, `pp_size`, …).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KvTransferParams {
    /// Prefill only, keep the blocks for a remote decode.
    #[serde(default)]
    pub do_remote_decode: bool,
    /// The prompt's KV blocks are on a remote prefill instance: pull them.
    #[serde(default)]
    pub do_remote_prefill: bool,
    /// Engine id of the instance holding the blocks.
    #[serde(default)]
    pub remote_engine_id: Option<String>,
    /// Block ids on the holding instance.
    #[serde(default)]
    pub remote_block_ids: Option<BlockIds>,
    /// Host of the holding instance.
    #[serde(default)]
    pub remote_host: Option<String>,
    /// Port of the holding instance's side channel (the simulator's HTTP port).
    #[serde(default)]
    pub remote_port: Option<u16>,
    /// Tensor-parallel size of the holding instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tp_size: Option<u32>,
    /// The request id under which the holding instance keeps the blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_request_id: Option<String>,
    /// Every other field, passed through as it came.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `remote_block_ids`: one list (vLLM before 0.30, the simulator), or one list per KV
/// cache group (vLLM 0.32: `[[21, 22]]`). Kept in the shape it came in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BlockIds {
    /// `[1, 2, 3]`.
    Flat(Vec<u32>),
    /// `[[1, 2], [7, 8]]`.
    Grouped(Vec<Vec<u32>>),
}

/// `prompt`: a string, a list of strings, a list of token ids or a list of lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One text prompt.
    Text(String),
    /// A batch of text prompts.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Tokens(Vec<u32>),
    /// A batch of prompts as token ids.
    TokenBatch(Vec<Vec<u32>>),
}

impl Prompt {
    /// How many prompts the batch holds.
    pub fn len(&self) -> usize {
        match self {
            Prompt::Text(_) | Prompt::Tokens(_) => 1,
            Prompt::Texts(v) => v.len(),
            Prompt::TokenBatch(v) => v.len(),
        }
    }

    /// Whether the batch is empty (a list with no prompts).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One element of a `prompt` list, before the list's kind is known.
enum PromptItem {
    Text(String),
    Token(u32),
    Tokens(Vec<u32>),
}

impl<'de> Deserialize<'de> for PromptItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PromptItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a token id or a list of token ids")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PromptItem, E> {
                u32::try_from(v)
                    .map(PromptItem::Token)
                    .map_err(|_| E::custom(format!("token id {v} is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PromptItem, E> {
                Err(E::custom(format!("token id {v} is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PromptItem, E> {
                Ok(PromptItem::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<PromptItem, E> {
                Ok(PromptItem::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptItem, A::Error> {
                let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(id) = seq.next_element::<u32>()? {
                    ids.push(id);
                }
                Ok(PromptItem::Tokens(ids))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Prompt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a string, a list of strings, a list of token ids or a list of lists of token ids",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Prompt, E> {
                Ok(Prompt::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Prompt, E> {
                Ok(Prompt::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Prompt, A::Error> {
                let mut out: Option<Prompt> = None;
                while let Some(item) = seq.next_element::<PromptItem>()? {
                    match (&mut out, item) {
                        (None, PromptItem::Text(t)) => out = Some(Prompt::Texts(vec![t])),
                        (None, PromptItem::Token(t)) => out = Some(Prompt::Tokens(vec![t])),
                        (None, PromptItem::Tokens(t)) => out = Some(Prompt::TokenBatch(vec![t])),
                        (Some(Prompt::Texts(v)), PromptItem::Text(t)) => v.push(t),
                        (Some(Prompt::Tokens(v)), PromptItem::Token(t)) => v.push(t),
                        (Some(Prompt::TokenBatch(v)), PromptItem::Tokens(t)) => v.push(t),
                        _ => {
                            return Err(de::Error::custom(
                                "a prompt list mixes strings, token ids and lists of token ids",
                            ))
                        }
                    }
                }
                Ok(out.unwrap_or(Prompt::Texts(Vec::new())))
            }
        }
        d.deserialize_any(V)
    }
}
