//! Tokenisation: the [`Tokenizer`] trait, the built-in [`ByteTokenizer`], the Hugging
//! Face tokenizer with the model's own chat template (feature `hf`), and incremental
//! detokenisation.
//!
//! Prompts go to engines as token ids, so the router's block hashes and the engine's
//! prefix cache see the same tokens. The engine must therefore accept the router's ids:
//! with real engines, give `--model-dir` the model's directory; the built-in tokenizer
//! (bytes as ids) is for the simulator, which accepts any id below its vocabulary size.

mod byte;
#[cfg(feature = "hf")]
mod hf;

pub use byte::ByteTokenizer;
#[cfg(feature = "hf")]
pub use hf::HfTokenizer;

use crate::openai::ChatMessage;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

/// Why a tokenizer could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read.
    #[error("cannot read `{path}`")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be parsed.
    #[error("cannot parse `{path}`: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// `--model-dir` was given to a build without the `hf` feature.
    #[error(
        "`--model-dir` needs the Hugging Face tokenizer: rebuild with `--features cohort-router/hf`"
    )]
    NoHfSupport,
}

/// Turns text into token ids and back, and a chat into the prompt's token ids.
pub trait Tokenizer: Send + Sync + Debug {
    /// A short name for logs (`byte`, `hf`).
    fn name(&self) -> &'static str;
    /// Appends the token ids of `text` to `out`.
    fn encode_into(&self, text: &str, out: &mut Vec<u32>);
    /// The text of `ids` (special tokens skipped; invalid UTF-8 as U+FFFD).
    fn decode(&self, ids: &[u32]) -> String;
    /// The prompt of a chat: the chat template rendered with a generation prompt, then
    /// encoded. Errors name what in the chat is wrong.
    fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, ChatError>;
}

/// A chat the template refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChatError(pub String);

/// The tokenizer for a model directory, or the built-in one when there is none.
pub fn load(model_dir: Option<&Path>) -> Result<Arc<dyn Tokenizer>, TokenizerError> {
    match model_dir {
        None => Ok(Arc::new(ByteTokenizer)),
        #[cfg(feature = "hf")]
        Some(dir) => Ok(Arc::new(HfTokenizer::from_dir(dir)?)),
        #[cfg(not(feature = "hf"))]
        Some(_) => Err(TokenizerError::NoHfSupport),
    }
}

/// Incremental detokenisation of a stream of ids: each [`push`](Self::push) returns the
/// text the new id completes, holding back bytes of an unfinished UTF-8 character or a
/// token whose text depends on the next one (the "prefix offset" method of HF TGI and
/// vLLM).
#[derive(Debug, Default, Clone)]
pub struct Detokenizer {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl Detokenizer {
    /// A detokenizer that starts after `context` (e.g. the prompt's last few ids, so that
    /// the first output token decodes as it would in context).
    pub fn new(context: &[u32]) -> Self {
        Detokenizer {
            ids: context.to_vec(),
            prefix_offset: 0,
            read_offset: context.len(),
        }
    }

    /// Adds one id; returns the text it makes final (often empty mid-character).
    pub fn push(&mut self, tok: &dyn Tokenizer, id: u32) -> String {
        self.ids.push(id);
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset]);
        let full = tok.decode(&self.ids[self.prefix_offset..]);
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            if let Some(new) = full.get(prefix.len()..) {
                let new = new.to_owned();
                self.prefix_offset = self.read_offset;
                self.read_offset = self.ids.len();
                // Keep the window short: only the ids since `prefix_offset` matter.
                if self.prefix_offset > 64 {
                    self.ids.drain(..self.prefix_offset);
                    self.read_offset -= self.prefix_offset;
                    self.prefix_offset = 0;
                }
                return new;
            }
        }
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detokenizer_holds_back_partial_utf8() {
        let tok = ByteTokenizer;
        let mut d = Detokenizer::default();
        let text = "né 🦀!";
        let mut out = String::new();
        let mut pieces = 0;
        for b in text.bytes() {
            let piece = d.push(&tok, b as u32);
            assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
            pieces += usize::from(!piece.is_empty());
            out.push_str(&piece);
        }
        assert_eq!(out, text);
        // é (2 bytes) and 🦀 (4 bytes) each come out once, whole.
        assert_eq!(pieces, text.chars().count());
    }

    #[test]
    fn model_dir_without_hf_is_refused_or_loaded() {
        let r = load(Some(Path::new("/nonexistent-model-dir")));
        assert!(r.is_err());
        assert_eq!(load(None).unwrap().name(), "byte");
    }
}
