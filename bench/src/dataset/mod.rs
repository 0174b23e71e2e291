//! Workloads: what each request sends, synthesised ahead of the send path.
//!
//! A [`Dataset`] is loaded (files parsed, shared prefixes drawn) once per run; each sweep
//! point then asks it for a fresh [`Source`], an iterator of [`PreparedRequest`]s whose
//! bodies are already serialised. The runner drains a source on a blocking thread into a
//! bounded queue, so synthesis never sits between a request's due time and its send.

mod files;
mod mooncake;
mod synth;
mod text;

pub use files::{parse_jsonl, parse_sharegpt, FileItem};
pub use mooncake::{parse_trace, TraceEntry};
pub use synth::{block_tokens, words_for_tokens};
pub use text::{TextTokenizer, TOKENIZER_FILE};

use crate::error::BenchError;
use crate::rng::Rng;
use crate::settings::{DatasetSpec, Endpoint, LengthDist};
use bytes::Bytes;
use cohort_router::openai::{
    ChatCompletionRequest, ChatMessage, CompletionRequest, MessageContent, Prompt, StreamOptions,
};
use std::sync::Arc;
use std::time::Duration;

/// One request, ready to send.
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    /// The JSON body.
    pub body: Bytes,
    /// Prompt tokens, exact for token-id prompts, estimated for text (usage wins).
    pub input_tokens: u32,
    /// `max_tokens` asked for.
    pub max_tokens: u32,
    /// For trace replay: when, after the trace's start, the request arrives (unscaled).
    pub offset: Option<Duration>,
}

/// A prompt before it is rendered for an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptData {
    /// Token ids.
    Tokens(Vec<u32>),
    /// Text.
    Text(String),
    /// A chat.
    Messages(Vec<ChatMessage>),
}

/// Renders prompts into request bodies for one endpoint and model.
#[derive(Debug, Clone)]
pub struct BodyBuilder {
    /// The served model name.
    pub model: String,
    /// Completions or chat.
    pub endpoint: Endpoint,
    /// Ask for exactly `max_tokens` (`ignore_eos`, `min_tokens`).
    pub enforce_output_len: bool,
    /// The model's tokenizer (`--model-dir`): chat prompts of token ids become text of
    /// exactly that many tokens, and text prompts are counted exactly. `None`: words
    /// standing for ids, text lengths estimated.
    pub tokenizer: Option<Arc<TextTokenizer>>,
    /// The model's vocabulary size (`--vocab-size`): token ids are folded below it.
    pub vocab_size: Option<u32>,
}

/// The smallest `--vocab-size` taken.
pub const MIN_VOCAB: u32 = 16;

/// `id` inside a vocabulary of `vocab` tokens: ids below it are kept, others are mapped
/// into its upper three quarters (clear of the special tokens most vocabularies start
/// with). A function of `id` alone, so equal prompts prefixes stay equal.
pub fn fold_token(id: u32, vocab: u32) -> u32 {
    if id < vocab {
        return id;
    }
    let floor = vocab / 4;
    floor + id % (vocab - floor).max(1)
}

impl BodyBuilder {
    /// The serialised body and the prompt's token count (estimated for text).
    pub fn render(&self, prompt: PromptData, max_tokens: u32) -> (Bytes, u32) {
        let prompt = match (prompt, self.vocab_size) {
            (PromptData::Tokens(mut t), Some(v)) => {
                t.iter_mut().for_each(|id| *id = fold_token(*id, v));
                PromptData::Tokens(t)
            }
            (p, _) => p,
        };
        let (min_tokens, ignore_eos) = if self.enforce_output_len {
            (Some(max_tokens), Some(true))
        } else {
            (None, None)
        };
        let stream_options = Some(StreamOptions {
            include_usage: true,
            continuous_usage_stats: false,
        });
        let (body, input) = match self.endpoint {
            Endpoint::Completions => {
                let (prompt, input) = match prompt {
                    PromptData::Tokens(t) => {
                        let n = t.len() as u32;
                        (Prompt::Tokens(t), n)
                    }
                    PromptData::Text(s) => {
                        let n = self.count(&s);
                        (Prompt::Text(s), n)
                    }
                    PromptData::Messages(m) => {
                        let s = m
                            .iter()
                            .filter_map(|m| m.content.as_ref().map(|c| c.text().into_owned()))
                            .collect::<Vec<_>>()
                            .join("\n");
                        let n = self.count(&s);
                        (Prompt::Text(s), n)
                    }
                };
                let req = CompletionRequest {
                    model: self.model.clone(),
                    prompt,
                    max_tokens: Some(max_tokens),
                    min_tokens,
                    ignore_eos,
                    stream: true,
                    stream_options,
                    return_token_ids: None,
                    kv_transfer_params: None,
                    seed: None,
                    n: None,
                    temperature: None,
                    top_p: None,
                    stop: None,
                };
                (serde_json::to_vec(&req), input)
            }
            Endpoint::Chat => {
                let (messages, input) = match prompt {
                    PromptData::Tokens(t) => {
                        let (text, n) = match &self.tokenizer {
                            Some(tok) => tok.text_for(&t),
                            None => (words_for_tokens(&t), t.len() as u32),
                        };
                        (vec![user(text)], n)
                    }
                    PromptData::Text(s) => {
                        let n = self.count(&s);
                        (vec![user(s)], n)
                    }
                    PromptData::Messages(m) => {
                        let n = m
                            .iter()
                            .filter_map(|m| m.content.as_ref())
                            .map(|c| self.count(&c.text()))
                            .sum();
                        (m, n)
                    }
                };
                let req = ChatCompletionRequest {
                    model: self.model.clone(),
                    messages,
                    max_tokens: None,
                    max_completion_tokens: Some(max_tokens),
                    min_tokens,
                    ignore_eos,
                    stream: true,
                    stream_options,
                    return_token_ids: None,
                    kv_transfer_params: None,
                    seed: None,
                    n: None,
                    temperature: None,
                    top_p: None,
                    stop: None,
                };
                (serde_json::to_vec(&req), input)
            }
        };
        // Serialising plain structs of strings and integers cannot fail.
        (Bytes::from(body.unwrap_or_default()), input)
    }
}

impl BodyBuilder {
    /// Tokens of `text`: exact with the model's tokenizer, else estimated.
    fn count(&self, text: &str) -> u32 {
        match &self.tokenizer {
            Some(tok) => tok.count(text),
            None => estimate_tokens(text),
        }
    }
}

fn user(text: String) -> ChatMessage {
    ChatMessage {
        role: "user".to_owned(),
        content: Some(MessageContent::Text(text)),
    }
}

/// A token count for text without a tokenizer: about four characters a token.
pub fn estimate_tokens(text: &str) -> u32 {
    (text.chars().count() as u32).div_ceil(4).max(1)
}

/// A loaded workload.
#[derive(Debug, Clone)]
pub enum Dataset {
    /// Random prompts.
    Random {
        /// Prompt lengths.
        input: LengthDist,
        /// Output lengths.
        output: LengthDist,
    },
    /// Shared prefixes, drawn once.
    Prefix {
        /// The prefixes.
        prefixes: Arc<Vec<Vec<u32>>>,
        /// Suffix lengths.
        suffix: LengthDist,
        /// Output lengths.
        output: LengthDist,
    },
    /// A Mooncake trace.
    Trace {
        /// Its entries, sorted by timestamp.
        entries: Arc<Vec<TraceEntry>>,
        /// Tokens per hash block.
        block_size: u32,
    },
    /// Prompts from a file.
    Items(Arc<Vec<FileItem>>),
}

impl Dataset {
    /// Loads files and draws shared prefixes.
    pub fn load(spec: &DatasetSpec, seed: u64) -> Result<Dataset, BenchError> {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|source| BenchError::ReadFile {
                path: path.to_owned(),
                source,
            })
        };
        Ok(match spec {
            DatasetSpec::Random { input, output } => Dataset::Random {
                input: input.clone(),
                output: output.clone(),
            },
            DatasetSpec::Prefix {
                groups,
                prefix_len,
                suffix,
                output,
            } => {
                let prefixes = (0..*groups)
                    .map(|g| {
                        synth::random_tokens(
                            &mut Rng::derive(seed, 0x5052_4546 + u64::from(g)),
                            *prefix_len,
                        )
                    })
                    .collect();
                Dataset::Prefix {
                    prefixes: Arc::new(prefixes),
                    suffix: suffix.clone(),
                    output: output.clone(),
                }
            }
            DatasetSpec::Mooncake { path, block_size } => {
                let entries =
                    parse_trace(&read(path)?).map_err(|(line, reason)| BenchError::Dataset {
                        path: path.clone(),
                        line,
                        reason,
                    })?;
                Dataset::Trace {
                    entries: Arc::new(entries),
                    block_size: *block_size,
                }
            }
            DatasetSpec::ShareGpt { path, output } => {
                let items = parse_sharegpt(&read(path)?, output.as_ref(), seed).map_err(
                    |(line, reason)| BenchError::Dataset {
                        path: path.clone(),
                        line,
                        reason,
                    },
                )?;
                Dataset::Items(Arc::new(items))
            }
            DatasetSpec::Jsonl { path, output } => {
                let items = parse_jsonl(&read(path)?, output, seed).map_err(|(line, reason)| {
                    BenchError::Dataset {
                        path: path.clone(),
                        line,
                        reason,
                    }
                })?;
                Dataset::Items(Arc::new(items))
            }
        })
    }

    /// Prepares the dataset for text prompts under the model's tokenizer: shared
    /// prefixes become ids that decode to text of exactly their length and re-encode to
    /// themselves, so every prompt of a group starts with the same text and only the
    /// suffix is adjusted to length. (Trace blocks are drawn per request and keep
    /// approximate sharing.)
    pub fn fit_to(&mut self, tok: &TextTokenizer) {
        if let Dataset::Prefix { prefixes, .. } = self {
            *prefixes = Arc::new(prefixes.iter().map(|p| tok.canonical(p)).collect());
        }
    }

    /// How many distinct requests the dataset holds (`None`: unbounded).
    pub fn len(&self) -> Option<usize> {
        match self {
            Dataset::Random { .. } | Dataset::Prefix { .. } => None,
            Dataset::Trace { entries, .. } => Some(entries.len()),
            Dataset::Items(items) => Some(items.len()),
        }
    }

    /// Whether the dataset holds no request at all.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// A fresh source: the same sequence for the same seed. Finite datasets repeat from
    /// the start when `cycle` is set (trace replay does not cycle).
    pub fn source(&self, seed: u64, builder: BodyBuilder, cycle: bool) -> Source {
        Source {
            dataset: self.clone(),
            builder,
            rng: Rng::derive(seed, 0x5352_4300),
            seed,
            next: 0,
            cycle,
        }
    }
}

/// An iterator of prepared requests (see [`Dataset::source`]).
#[derive(Debug)]
pub struct Source {
    dataset: Dataset,
    builder: BodyBuilder,
    rng: Rng,
    seed: u64,
    next: u64,
    cycle: bool,
}

impl Iterator for Source {
    type Item = PreparedRequest;

    fn next(&mut self) -> Option<PreparedRequest> {
        let i = self.next;
        self.next += 1;
        let (prompt, max_tokens, offset) = match &self.dataset {
            Dataset::Random { input, output } => {
                let n = input.sample(&mut self.rng);
                let m = output.sample(&mut self.rng);
                (
                    PromptData::Tokens(synth::random_tokens(&mut self.rng, n)),
                    m,
                    None,
                )
            }
            Dataset::Prefix {
                prefixes,
                suffix,
                output,
            } => {
                let g = self
                    .rng
                    .range_u32(0, prefixes.len().saturating_sub(1) as u32)
                    as usize;
                let n = suffix.sample(&mut self.rng);
                let m = output.sample(&mut self.rng);
                let mut t = prefixes.get(g).cloned().unwrap_or_default();
                t.extend(synth::random_tokens(&mut self.rng, n));
                (PromptData::Tokens(t), m, None)
            }
            Dataset::Trace {
                entries,
                block_size,
            } => {
                let len = entries.len() as u64;
                if len == 0 || (!self.cycle && i >= len) {
                    return None;
                }
                let e = &entries[(i % len) as usize];
                let tokens = synth::trace_prompt(self.seed, i, e, *block_size);
                let offset = (i < len).then(|| Duration::from_secs_f64(e.timestamp_ms / 1e3));
                (PromptData::Tokens(tokens), e.output_length, offset)
            }
            Dataset::Items(items) => {
                let len = items.len() as u64;
                if len == 0 || (!self.cycle && i >= len) {
                    return None;
                }
                let item = &items[(i % len) as usize];
                (item.prompt.clone(), item.max_tokens, None)
            }
        };
        let (body, input_tokens) = self.builder.render(prompt, max_tokens);
        Some(PreparedRequest {
            body,
            input_tokens,
            max_tokens,
            offset,
        })
    }
}
