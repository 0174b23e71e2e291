//! Prompts as text of exact length under the model's own tokenizer (`--model-dir`,
//! feature `hf`).
//!
//! Chat takes text, not token ids. Without a tokenizer a prompt of token ids becomes one
//! common word per id and its length is approximate. With the model's `tokenizer.json`
//! the ids are decoded to text, the text re-encoded, and the tail cut or extended until
//! the text encodes to exactly the number of ids asked for. The ids are mapped into the
//! tokenizer's vocabulary first, so equal id prefixes (the `prefix` dataset, trace
//! blocks) still give equal text prefixes; only the last tokens can differ, where the
//! length is adjusted. All of it runs on the preparer thread, never on the send path.

use crate::error::BenchError;
use std::path::Path;

/// The file `--model-dir` must hold.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Where `--model-dir`'s tokenizer is.
#[cfg(feature = "hf")]
fn tokenizer_path(dir: &Path) -> std::path::PathBuf {
    dir.join(TOKENIZER_FILE)
}

#[cfg(feature = "hf")]
pub use hf::TextTokenizer;
#[cfg(not(feature = "hf"))]
pub use off::TextTokenizer;

#[cfg(not(feature = "hf"))]
mod off {
    use super::*;

    /// Built without the `hf` feature: no tokenizer can exist (the type is empty), and
    /// asking for one is an error that says how to build with it.
    #[derive(Debug)]
    pub enum TextTokenizer {}

    fn needs_feature(dir: &Path) -> BenchError {
        BenchError::Usage(format!(
            "`--model-dir {}` needs cohort-bench built with the `hf` feature (the `tokenizers` crate): `cargo build --release -p cohort-bench --features hf`, or `--features cohort-bench/hf` when building `cohort`",
            dir.display()
        ))
    }

    impl TextTokenizer {
        /// Always an error here: the feature is off.
        pub fn check_available(dir: &Path) -> Result<(), BenchError> {
            Err(needs_feature(dir))
        }

        /// Always an error here: the feature is off.
        pub fn load(dir: &Path) -> Result<TextTokenizer, BenchError> {
            Err(needs_feature(dir))
        }

        /// The token count of `text` (never called: no value of this type exists).
        pub fn count(&self, _text: &str) -> u32 {
            match *self {}
        }

        /// Text for `ids` (never called: no value of this type exists).
        pub fn text_for(&self, _ids: &[u32]) -> (String, u32) {
            match *self {}
        }

        /// Stable ids for `ids` (never called: no value of this type exists).
        pub fn canonical(&self, _ids: &[u32]) -> Vec<u32> {
            match *self {}
        }
    }
}

#[cfg(feature = "hf")]
mod hf {
    use super::*;
    use crate::rng::Rng;

    /// Rounds of decode, re-encode and adjust before the closest text found is taken.
    const ROUNDS: usize = 32;
    /// Extension ids are drawn from here (mapped into the vocabulary), as random prompts'.
    const LOW: u32 = 1_000;
    const HIGH: u32 = 31_000;

    /// Rounds that refill a short text with random ids; later rounds use the filler.
    const RANDOM_ROUNDS: usize = 4;
    /// Candidates for the filler: a short word that is one token on its own and, led by
    /// a space, starts a new word under the usual pre-tokenizers (so appending it adds
    /// exactly one token).
    const FILLERS: [&str; 6] = [" the", " a", " and", " x", ".", "a"];

    /// A Hugging Face tokenizer that turns token ids into text of the same token count.
    #[derive(Debug)]
    pub struct TextTokenizer {
        tok: tokenizers::Tokenizer,
        /// The model's vocabulary without added (special) tokens.
        vocab: u32,
        /// A token to top up a text that stays short with random ids: random byte
        /// tokens can decode to U+FFFD (three tokens) and keep overshooting.
        filler: Option<u32>,
    }

    impl TextTokenizer {
        /// Checks that `dir` holds a `tokenizer.json` (loading waits for the run).
        pub fn check_available(dir: &Path) -> Result<(), BenchError> {
            let path = tokenizer_path(dir);
            std::fs::metadata(&path)
                .map(|_| ())
                .map_err(|source| BenchError::ReadFile { path, source })
        }

        /// Loads `dir/tokenizer.json`.
        pub fn load(dir: &Path) -> Result<TextTokenizer, BenchError> {
            let path = tokenizer_path(dir);
            let tok = tokenizers::Tokenizer::from_file(&path).map_err(|source| {
                BenchError::Tokenizer {
                    path: path.clone(),
                    source,
                }
            })?;
            let vocab = tok.get_vocab_size(false) as u32;
            if vocab == 0 {
                return Err(BenchError::Tokenizer {
                    path,
                    source: "the vocabulary is empty".into(),
                });
            }
            let filler = FILLERS.iter().find_map(|f| {
                let ids = tok.encode_fast(*f, false).ok()?.get_ids().to_vec();
                (ids.len() == 1).then(|| ids[0])
            });
            Ok(TextTokenizer { tok, vocab, filler })
        }

        /// Tokens of `text`, without special tokens (the chat template's are the
        /// server's business).
        pub fn count(&self, text: &str) -> u32 {
            self.encode(text).len() as u32
        }

        fn encode(&self, text: &str) -> Vec<u32> {
            // Encoding fails only on pathological input (a regex blow-up); the text then
            // counts as empty and is adjusted like any other.
            self.tok
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default()
        }

        fn decode(&self, ids: &[u32]) -> String {
            self.tok.decode(ids, true).unwrap_or_default()
        }

        /// Text encoding to exactly `ids.len()` tokens where the adjustment converges
        /// (nearly always within a few rounds), else the closest text found; returned
        /// with its true token count. A function of `ids` only.
        pub fn text_for(&self, ids: &[u32]) -> (String, u32) {
            let want = ids.len();
            let mut ids: Vec<u32> = ids.iter().map(|&t| t % self.vocab).collect();
            // Extensions are a function of the ids, so the same seed gives the same text.
            let hash = ids.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
                (h ^ u64::from(t)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            let mut rng = Rng::derive(hash, 0x5445_5854);
            let mut best: Option<(String, usize)> = None;
            let mut overshoots = 0;
            for round in 0..ROUNDS {
                let text = self.decode(&ids);
                let canonical = self.encode(&text);
                let n = canonical.len();
                if n == want {
                    return (text, n as u32);
                }
                if best
                    .as_ref()
                    .is_none_or(|(_, b)| n.abs_diff(want) < b.abs_diff(want))
                {
                    best = Some((text, n));
                }
                // Continue from the text's own tokens: cut the excess or draw the missing.
                // A cut can land inside a character and grow again when decoded (a lone
                // byte becomes U+FFFD); each further overshoot cuts one token deeper, and
                // the next round refills: with fresh random ids at first, then with the
                // filler, which adds exactly one token each.
                ids = canonical;
                if n > want {
                    ids.truncate(want.saturating_sub(overshoots));
                    overshoots += 1;
                } else if let (Some(f), true) = (self.filler, round >= RANDOM_ROUNDS) {
                    ids.extend(std::iter::repeat_n(f, want - n));
                } else {
                    ids.extend((n..want).map(|_| rng.range_u32(LOW, HIGH - 1) % self.vocab));
                }
            }
            best.map_or_else(|| (String::new(), 0), |(t, n)| (t, n as u32))
        }

        /// Ids that decode to the text [`text_for`](Self::text_for) makes of `ids` and
        /// re-encode to themselves. A shared prefix made of them decodes to the same
        /// text in every prompt, and the length adjustment then only touches suffixes.
        pub fn canonical(&self, ids: &[u32]) -> Vec<u32> {
            self.encode(&self.text_for(ids).0)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        /// A byte-level BPE (GPT-2 style) built here: the 256 byte symbols plus merges
        /// that join frequent pairs, so decoding random ids and re-encoding the text
        /// gives a different count (adjacent `t`,`h` merge; lone bytes of a UTF-8
        /// sequence decode to a replacement character of three tokens).
        fn byte_level_bpe(dir: &Path) {
            let mut alphabet: Vec<char> =
                tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
                    .into_iter()
                    .collect();
            alphabet.sort_unstable();
            let mut vocab = serde_json::Map::new();
            for (i, c) in alphabet.iter().enumerate() {
                vocab.insert(c.to_string(), json!(i));
            }
            let merges = [
                ("t", "h"),
                ("th", "e"),
                ("Ġ", "the"),
                ("i", "n"),
                ("Ġ", "in"),
                ("e", "r"),
                ("a", "n"),
                ("o", "n"),
                ("Ġ", "a"),
                ("e", "s"),
            ];
            for (a, b) in merges {
                let n = vocab.len();
                vocab.insert(format!("{a}{b}"), json!(n));
            }
            let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                "trim_offsets": true, "use_regex": true});
            let tokenizer = json!({
                "version": "1.0", "truncation": null, "padding": null,
                "added_tokens": [], "normalizer": null,
                "pre_tokenizer": byte_level, "post_processor": null, "decoder": byte_level,
                "model": {"type": "BPE", "dropout": null, "unk_token": null,
                    "continuing_subword_prefix": null, "end_of_word_suffix": null,
                    "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                    "vocab": vocab,
                    "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()},
            });
            std::fs::write(dir.join(TOKENIZER_FILE), tokenizer.to_string()).unwrap();
        }

        #[test]
        fn random_ids_become_text_of_exactly_their_length() {
            let dir = tempfile::tempdir().unwrap();
            byte_level_bpe(dir.path());
            TextTokenizer::check_available(dir.path()).unwrap();
            let t = TextTokenizer::load(dir.path()).unwrap();
            // The tokenizer merges: "the" is one token, so counting is not byte counting.
            assert_eq!(t.count(" the"), 1);
            assert_eq!(t.count("xyz"), 3);
            let mut rng = Rng::new(7);
            let mut changed = 0;
            for len in [1u32, 2, 5, 16, 100, 333] {
                for _ in 0..8 {
                    let ids = crate::dataset::synth::random_tokens(&mut rng, len);
                    let plain = t.decode(&ids.iter().map(|i| i % t.vocab).collect::<Vec<_>>());
                    changed += usize::from(t.count(&plain) != len);
                    let (text, n) = t.text_for(&ids);
                    assert_eq!(n, len, "{text:?}");
                    assert_eq!(t.count(&text), len, "{text:?}");
                    // Deterministic: the same ids, the same text.
                    assert_eq!(t.text_for(&ids).0, text);
                }
            }
            assert!(
                changed > 0,
                "the test tokenizer must need adjusting somewhere"
            );
        }

        #[test]
        fn shared_id_prefixes_give_shared_text_prefixes() {
            let dir = tempfile::tempdir().unwrap();
            byte_level_bpe(dir.path());
            let t = TextTokenizer::load(dir.path()).unwrap();
            let mut rng = Rng::new(3);
            let prefix = t.canonical(&crate::dataset::synth::random_tokens(&mut rng, 200));
            assert_eq!(prefix.len(), 200);
            assert_eq!(t.encode(&t.decode(&prefix)), prefix, "stable ids");
            let mut a = prefix.clone();
            a.extend(crate::dataset::synth::random_tokens(&mut rng, 30));
            let mut b = prefix.clone();
            b.extend(crate::dataset::synth::random_tokens(&mut rng, 40));
            let (ta, na) = t.text_for(&a);
            let (tb, nb) = t.text_for(&b);
            assert_eq!((na, nb), (230, 240));
            let common = ta
                .chars()
                .zip(tb.chars())
                .take_while(|(x, y)| x == y)
                .count();
            let prefix_chars = t.decode(&prefix.iter().map(|i| i % t.vocab).collect::<Vec<_>>());
            // All but the last few characters of the prefix's text are shared.
            assert!(
                common + 8 >= prefix_chars.chars().count(),
                "{common} of {}",
                prefix_chars.chars().count()
            );
        }

        /// Through the dataset and the body builder, as a run prepares chat requests.
        #[test]
        fn prefix_chat_bodies_have_the_asked_length_and_share_their_prefix_text() {
            use crate::dataset::{BodyBuilder, Dataset};
            use crate::settings::{DatasetSpec, Endpoint, LengthDist};
            let dir = tempfile::tempdir().unwrap();
            byte_level_bpe(dir.path());
            let tok = std::sync::Arc::new(TextTokenizer::load(dir.path()).unwrap());
            let spec = DatasetSpec::Prefix {
                groups: 1,
                prefix_len: 100,
                suffix: LengthDist::Uniform(10, 30),
                output: LengthDist::Fixed(8),
            };
            let mut dataset = Dataset::load(&spec, 5).unwrap();
            dataset.fit_to(&tok);
            let builder = BodyBuilder {
                model: "m".to_owned(),
                endpoint: Endpoint::Chat,
                enforce_output_len: true,
                tokenizer: Some(tok.clone()),
                vocab_size: None,
            };
            let texts: Vec<String> = dataset
                .source(5, builder, true)
                .take(12)
                .map(|r| {
                    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                    let text = v["messages"][0]["content"].as_str().unwrap().to_owned();
                    assert_eq!(tok.count(&text), r.input_tokens, "{text:?}");
                    assert!((110..=130).contains(&r.input_tokens), "{}", r.input_tokens);
                    text
                })
                .collect();
            let Dataset::Prefix { prefixes, .. } = &dataset else {
                unreachable!("a prefix dataset")
            };
            let prefix_text = tok.decode(&prefixes[0]);
            assert_eq!(tok.count(&prefix_text), 100);
            let shared = texts.iter().filter(|t| t.starts_with(&prefix_text)).count();
            assert!(shared >= 10, "{shared} of 12 start with the prefix's text");
        }

        #[test]
        fn a_missing_or_broken_tokenizer_is_named() {
            let dir = tempfile::tempdir().unwrap();
            let e = TextTokenizer::check_available(dir.path()).unwrap_err();
            assert!(e.to_string().contains(TOKENIZER_FILE), "{e}");
            std::fs::write(dir.path().join(TOKENIZER_FILE), "{}").unwrap();
            let e = TextTokenizer::load(dir.path()).unwrap_err();
            assert!(e.to_string().contains(TOKENIZER_FILE), "{e}");
        }
    }
}

#[cfg(all(test, not(feature = "hf")))]
mod tests {
    use super::*;

    #[test]
    fn model_dir_without_the_feature_says_how_to_build() {
        let e = TextTokenizer::check_available(Path::new("/models/llama"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--features hf"), "{e}");
        assert!(e.contains("/models/llama"), "{e}");
    }
}
