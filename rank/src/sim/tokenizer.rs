//! What turns prompt text into token ids and output ids into text: the model's own
//! `tokenizer.json` (feature `hf`), or else the built-in [`Vocab`].
//!
//! With a real tokenizer, `prompt_tokens` and prefix caching follow the model's tokens,
//! and output tokens are ids of its vocabulary. Chat messages are wrapped in the
//! built-in role markers either way: the model's chat template is not rendered.

use super::vocab::{Vocab, WORDS};
use super::SimError;
use std::borrow::Cow;
use std::path::Path;

/// The tokenizer of one `cohort sim` process, shared by its instances.
#[derive(Debug)]
pub enum Tokenizer {
    /// The built-in vocabulary (see [`super::vocab`]).
    Builtin(Vocab),
    /// A Hugging Face `tokenizer.json` (boxed: it is large, and there is one per process).
    #[cfg(feature = "hf")]
    Hf(Box<hf::HfTokenizer>),
}

impl Tokenizer {
    /// `dir/tokenizer.json` when `dir` is given and has one, else the built-in vocabulary
    /// of `vocab_size` ids. Without the `hf` feature, a `tokenizer.json` is an error
    /// rather than silently ignored: the served text would not be the model's.
    pub fn load(dir: Option<&Path>, vocab_size: u32) -> Result<Self, SimError> {
        let path = match dir.map(|d| d.join("tokenizer.json")) {
            Some(p) if p.exists() => p,
            _ => return Ok(Tokenizer::Builtin(Vocab::new(vocab_size))),
        };
        Self::from_file(&path, vocab_size)
    }

    #[cfg(feature = "hf")]
    fn from_file(path: &Path, vocab_size: u32) -> Result<Self, SimError> {
        hf::HfTokenizer::from_file(path, vocab_size).map(|t| Tokenizer::Hf(Box::new(t)))
    }

    #[cfg(not(feature = "hf"))]
    fn from_file(path: &Path, _vocab_size: u32) -> Result<Self, SimError> {
        Err(SimError::Config {
            field: "--model-dir",
            message: format!(
                "`{}` needs a build with the `hf` feature \
                 (`cargo build -p cohort-rank --features hf`)",
                path.display()
            ),
        })
    }

    /// `builtin`, or the path of the `tokenizer.json`.
    pub fn describe(&self) -> Cow<'_, str> {
        match self {
            Tokenizer::Builtin(_) => "built-in".into(),
            #[cfg(feature = "hf")]
            Tokenizer::Hf(t) => format!("`{}`", t.path.display()).into(),
        }
    }

    /// Ids below this are accepted in token prompts.
    pub fn size(&self) -> u32 {
        match self {
            Tokenizer::Builtin(v) => v.size(),
            #[cfg(feature = "hf")]
            Tokenizer::Hf(t) => t.size,
        }
    }

    /// Output tokens are sampled from `0..output_range()`.
    pub fn output_range(&self) -> u32 {
        match self {
            Tokenizer::Builtin(_) => WORDS.len() as u32,
            #[cfg(feature = "hf")]
            Tokenizer::Hf(t) => t.outputs,
        }
    }

    /// The token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out);
        out
    }

    fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        match self {
            Tokenizer::Builtin(v) => v.encode_into(text, out),
            #[cfg(feature = "hf")]
            Tokenizer::Hf(t) => t.encode_into(text, out),
        }
    }

    /// Token ids of a chat: each message's content between the built-in role markers,
    /// then the assistant's header.
    pub fn encode_chat<'a>(&self, messages: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<u32> {
        match self {
            Tokenizer::Builtin(v) => v.encode_chat(messages),
            #[cfg(feature = "hf")]
            Tokenizer::Hf(_) => {
                Vocab::wrap_chat(messages, |content, out| self.encode_into(content, out))
            }
        }
    }

    /// The text of one output token, as streamed.
    pub fn decode_token(&self, id: u32) -> Cow<'static, str> {
        match self {
            Tokenizer::Builtin(v) => Cow::Borrowed(v.decode(id)),
            #[cfg(feature = "hf")]
            Tokenizer::Hf(t) => t.decode(&[id]).into(),
        }
    }

    /// The text of a whole output.
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Tokenizer::Builtin(v) => ids.iter().map(|&id| v.decode(id)).collect(),
            #[cfg(feature = "hf")]
            Tokenizer::Hf(t) => t.decode(ids),
        }
    }
}

#[cfg(feature = "hf")]
mod hf {
    use super::super::SimError;
    use std::path::{Path, PathBuf};

    /// A Hugging Face tokenizer.
    #[derive(Debug)]
    pub struct HfTokenizer {
        tok: tokenizers::Tokenizer,
        pub(super) path: PathBuf,
        /// Accepted prompt ids: the tokenizer's, added tokens included, or the model's
        /// `vocab_size` when larger (padded embeddings).
        pub(super) size: u32,
        /// Sampled output ids: the model's vocabulary without added (special) tokens.
        pub(super) outputs: u32,
    }

    impl HfTokenizer {
        pub(super) fn from_file(path: &Path, vocab_size: u32) -> Result<Self, SimError> {
            let tok =
                tokenizers::Tokenizer::from_file(path).map_err(|source| SimError::Tokenizer {
                    path: path.to_path_buf(),
                    source,
                })?;
            let outputs = tok.get_vocab_size(false) as u32;
            if outputs == 0 {
                return Err(SimError::Tokenizer {
                    path: path.to_path_buf(),
                    source: "the vocabulary is empty".into(),
                });
            }
            Ok(HfTokenizer {
                size: (tok.get_vocab_size(true) as u32).max(vocab_size),
                tok,
                path: path.to_path_buf(),
                outputs,
            })
        }

        pub(super) fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
            // Encoding fails only for pathological input (e.g. a regex blow-up); the
            // prompt is then empty and rejected as such.
            if let Ok(e) = self.tok.encode(text, false) {
                out.extend_from_slice(e.get_ids());
            }
        }

        pub(super) fn decode(&self, ids: &[u32]) -> String {
            self.tok.decode(ids, true).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn builtin_without_a_tokenizer_json() {
        let t = Tokenizer::load(None, 32_000).unwrap();
        assert_eq!(t.describe(), "built-in");
        let ids = t.encode("the cluster");
        assert_eq!(ids, Vocab::new(32_000).encode("the cluster"));
        assert_eq!(t.decode(&ids), " the cluster");
        assert_eq!(t.decode_token(ids[1]), " cluster");
        // a model dir without `tokenizer.json` keeps the built-in vocabulary
        let t = Tokenizer::load(Some(Path::new("/nonexistent-cohort-dir")), 32_000).unwrap();
        assert_eq!(t.output_range(), WORDS.len() as u32);
    }

    /// A temp dir holding `tokenizer.json` with `content`; removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn with_tokenizer(tag: &str, content: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("cohort-sim-tok-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("tokenizer.json"), content).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[cfg(not(feature = "hf"))]
    #[test]
    fn a_tokenizer_json_needs_the_hf_feature() {
        let dir = TempDir::with_tokenizer("nohf", "{}");
        let e = Tokenizer::load(Some(&dir.0), 32_000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--features hf"), "{e}");
        assert!(e.contains("tokenizer.json"), "{e}");
    }

    #[cfg(feature = "hf")]
    mod hf {
        use super::*;
        use crate::sim::vocab::Sampler;

        /// A word-level tokenizer: words 0..=6, and `<s>` (7) an added special token.
        fn tiny() -> String {
            serde_json::json!({
                "version": "1.0",
                "truncation": null, "padding": null,
                "added_tokens": [
                    {"id": 7, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                ],
                "normalizer": null,
                "pre_tokenizer": {"type": "Whitespace"},
                "post_processor": null,
                "decoder": null,
                "model": {"type": "WordLevel", "vocab": {
                    "hello": 0, "world": 1, "gpu": 2, "kernel": 3, "cache": 4, "node": 5, "[UNK]": 6
                }, "unk_token": "[UNK]"}
            })
            .to_string()
        }

        #[test]
        fn prompts_encode_and_outputs_decode_with_the_model_tokenizer() {
            let dir = TempDir::with_tokenizer("hf", &tiny());
            let t = Tokenizer::load(Some(&dir.0), 0).unwrap();
            assert!(t.describe().contains("tokenizer.json"), "{}", t.describe());
            // the prompt follows the model's vocabulary, not the built-in one
            assert_eq!(t.encode("hello world zebra"), [0, 1, 6]);
            assert_ne!(
                t.encode("hello world"),
                Vocab::new(32_000).encode("hello world")
            );
            assert_eq!(t.size(), 8);
            assert_eq!(t.output_range(), 7);
            assert_eq!(t.decode(&[2, 3]), "gpu kernel");
            assert_eq!(t.decode_token(4), "cache");
            // every sampled output id decodes to a word of the model's vocabulary
            let words = ["hello", "world", "gpu", "kernel", "cache", "node", "[UNK]"];
            let s = Sampler::new(Some(3), &[]).over(t.output_range());
            for i in 0..64 {
                let id = s.token(i);
                assert!(words.contains(&&*t.decode_token(id)), "{id}");
            }
            let chat = t.encode_chat([("user", "gpu node")].into_iter());
            assert_eq!(&chat[1..3], [2, 5]);
        }

        #[test]
        fn an_invalid_tokenizer_json_names_its_path() {
            let dir = TempDir::with_tokenizer("bad", "{not json");
            let e = Tokenizer::load(Some(&dir.0), 0).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("tokenizer.json"), "{msg}");
            assert!(std::error::Error::source(&e).is_some());
        }
    }
}
