//! OpenAI wire types: the one definition of requests, responses, stream chunks, usage
//! and error bodies that every cohort crate uses (the router's frontend, the benchmark's
//! client and the simulated engine).
//!
//! The shapes follow what vLLM's OpenAI-compatible server sends, field for field, since
//! vLLM is the reference engine: `finish_reason` plus `stop_reason`, usage with
//! `prompt_tokens_details.cached_tokens`, `kv_transfer_params` for disaggregated
//! serving, `return_token_ids`. Fields a client may omit are `Option` or `#[serde(default)]`;
//! unknown request fields are ignored, as vLLM does.
//!
//! Response types borrow their strings (`Cow<'a, str>`) so a server can serialise a
//! stream chunk without allocating; a client deserialises them into owned values.
//!
//! This module has no I/O and no dependency on an HTTP stack: [`sse`] frames chunks as
//! server-sent events, nothing more.

mod error;
mod request;
mod response;
pub mod sse;
mod stream;

pub use error::{ErrorBody, ErrorKind, ErrorResponse};
pub use request::{
    BlockIds, ChatCompletionRequest, ChatMessage, CompletionRequest, ContentPart, KvTransferParams,
    MessageContent, Prompt, StopSpec, StreamOptions,
};
pub use response::{
    ChatChoice, ChatCompletionResponse, ChatMessageOut, CompletionChoice, CompletionResponse,
    FinishReason, ModelCard, ModelList, PromptTokensDetails, Usage,
};
pub use stream::{
    ChatChunk, ChatChunkChoice, ChatDelta, CompletionChunk, CompletionChunkChoice,
    OBJECT_CHAT_CHUNK, OBJECT_TEXT_COMPLETION,
};

#[cfg(test)]
mod tests;
