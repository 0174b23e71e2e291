//! The built-in vocabulary: a deterministic stand-in for a tokenizer, and the seeded
//! sampler that picks output tokens.
//!
//! Text is split on whitespace; a word in [`WORDS`] becomes its index, any other word a
//! hash of it in `[WORDS.len(), vocab)`: one token per word, the same ids for the same
//! text, so prefix caching works for text prompts. Output tokens are always words of
//! [`WORDS`] (each decoded with a leading space), or the end-of-sequence token.

/// Words of the built-in vocabulary; token id `i < WORDS.len()` is `" " + WORDS[i]`.
pub const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "was",
    "with",
    "as",
    "be",
    "at",
    "by",
    "this",
    "from",
    "or",
    "an",
    "are",
    "not",
    "but",
    "have",
    "had",
    "they",
    "you",
    "which",
    "one",
    "we",
    "all",
    "can",
    "were",
    "there",
    "their",
    "been",
    "has",
    "more",
    "if",
    "will",
    "would",
    "about",
    "when",
    "who",
    "so",
    "what",
    "out",
    "up",
    "into",
    "no",
    "than",
    "them",
    "some",
    "could",
    "time",
    "these",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "my",
    "now",
    "such",
    "like",
    "our",
    "over",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "us",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "cluster",
    "node",
    "rank",
    "token",
    "cache",
    "block",
    "prefill",
    "decode",
    "model",
    "engine",
    "router",
    "batch",
    "kernel",
    "memory",
    "tensor",
    "layer",
    "queue",
    "stream",
    "request",
    "latency",
    "throughput",
    "schedule",
    "slurm",
    "job",
    "task",
    "signal",
    "graph",
    "vector",
    "matrix",
    "network",
    "link",
    "switch",
    "rack",
    "socket",
    "thread",
    "core",
    "fabric",
    "domain",
    "expert",
    "attention",
    "weight",
    "scale",
    "shard",
    "split",
    "merge",
    "route",
    "serve",
    "launch",
    "drain",
    "plan",
    "recipe",
    "result",
    "report",
    "metric",
    "sample",
    "seed",
    "order",
    "value",
    "table",
    "index",
    "entry",
    "field",
    "point",
    "line",
    "page",
    "file",
    "path",
    "port",
    "host",
    "name",
    "type",
    "kind",
    "role",
    "pool",
    "set",
    "list",
    "map",
    "key",
    "hash",
    "tree",
    "leaf",
    "root",
    "edge",
    "step",
    "loop",
    "wait",
    "send",
    "read",
    "write",
    "open",
    "close",
    "start",
    "stop",
    "end",
    "begin",
    "fast",
    "slow",
    "large",
    "small",
    "new",
    "high",
    "low",
    "full",
    "free",
    "busy",
    "ready",
    "done",
    "early",
    "late",
    "next",
    "prior",
    "light",
    "dark",
    "warm",
    "cold",
    "blue",
    "green",
    "red",
    "white",
];

/// The end-of-sequence token: decodes to nothing, ends a choice with `stop`.
pub const EOS: u32 = u32::MAX - 1;

/// Tokens of the chat template around each message (`<|role|>` … `<|end|>`).
const ROLE_BASE: u32 = u32::MAX - 16;

/// A seeded 64-bit mixer (SplitMix64's finaliser): fast, and good enough to pick words.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The built-in tokenizer.
#[derive(Debug, Clone)]
pub struct Vocab {
    size: u32,
    index: std::collections::HashMap<&'static str, u32>,
}

impl Vocab {
    /// A vocabulary of `size` ids (the model's vocabulary size; at least [`WORDS`]).
    pub fn new(size: u32) -> Self {
        let size = size.max(WORDS.len() as u32 + 1);
        let index = WORDS
            .iter()
            .enumerate()
            .map(|(i, w)| (*w, i as u32))
            .collect();
        Vocab { size, index }
    }

    /// The vocabulary size.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Appends the token ids of `text` to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        let spare = (self.size - WORDS.len() as u32) as u64;
        for word in text.split_whitespace() {
            let id = match self.index.get(word) {
                Some(&id) => id,
                None => {
                    let mut h = 0xcbf2_9ce4_8422_2325u64;
                    for b in word.bytes() {
                        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
                    }
                    WORDS.len() as u32 + (mix(h) % spare) as u32
                }
            };
            out.push(id);
        }
    }

    /// The token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out);
        out
    }

    /// Token ids of a chat: each message as `<|role|> content <|end|>`, then the
    /// assistant's header (the generation prompt).
    pub fn encode_chat<'a>(&self, messages: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<u32> {
        Self::wrap_chat(messages, |content, out| self.encode_into(content, out))
    }

    /// The chat template of [`Vocab::encode_chat`], with `encode` for the contents (so
    /// another tokenizer can share the role markers).
    pub fn wrap_chat<'a>(
        messages: impl Iterator<Item = (&'a str, &'a str)>,
        mut encode: impl FnMut(&str, &mut Vec<u32>),
    ) -> Vec<u32> {
        let mut out = Vec::new();
        for (role, content) in messages {
            out.push(role_token(role));
            encode(content, &mut out);
            out.push(ROLE_BASE + 15);
        }
        out.push(role_token("assistant"));
        out
    }

    /// The text of one token: a word with a leading space, `""` for special tokens, and
    /// for ids outside [`WORDS`] a word chosen by the id (so any id decodes).
    #[inline]
    pub fn decode(&self, id: u32) -> &'static str {
        if id >= ROLE_BASE {
            return "";
        }
        SPACED[(id as usize) % WORDS.len()]
    }
}

fn role_token(role: &str) -> u32 {
    ROLE_BASE
        + match role {
            "system" => 0,
            "user" => 1,
            "assistant" => 2,
            "tool" => 3,
            _ => 4,
        }
}

/// [`WORDS`] with a leading space, built once.
static SPACED: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    WORDS
        .iter()
        .map(|w| &*Box::leak(format!(" {w}").into_boxed_str()))
        .collect()
});

/// The seeded sampler of one request: output token `i` and the natural output length.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    seed: u64,
    /// Output tokens are ids in `0..range` (default: the words of [`WORDS`]).
    range: u32,
}

impl Sampler {
    /// A sampler for a request with an explicit `seed`, or one derived from its prompt,
    /// over the built-in vocabulary's words.
    pub fn new(seed: Option<u64>, prompt: &[u32]) -> Self {
        let seed = seed.unwrap_or_else(|| {
            prompt
                .iter()
                .fold(0x5151_5151u64, |h, &t| mix(h ^ t as u64))
        });
        Sampler {
            seed,
            range: WORDS.len() as u32,
        }
    }

    /// The same sampler over ids `0..range` (a model tokenizer's vocabulary; at least 1).
    pub fn over(self, range: u32) -> Self {
        Sampler {
            range: range.max(1),
            ..self
        }
    }

    /// The `i`-th output token (never [`EOS`]).
    #[inline]
    pub fn token(&self, i: u32) -> u32 {
        (mix(self.seed ^ ((i as u64) << 32 | 0xA5A5)) % self.range as u64) as u32
    }

    /// How many tokens this request generates before an end-of-sequence token would
    /// stop it (that token included): geometric with mean `mean` (`None`: never).
    pub fn natural_length(&self, mean: Option<f64>) -> Option<u32> {
        let mean = mean?;
        let u = ((mix(self.seed ^ 0xE05) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        Some((-(mean) * u.ln()).ceil().clamp(1.0, u32::MAX as f64 / 2.0) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_deterministic_and_in_range() {
        let v = Vocab::new(32_000);
        let a = v.encode("the cluster Zyzzyva\tand  foo");
        assert_eq!(a.len(), 5);
        assert_eq!(a[0], 0);
        assert_eq!(a, v.encode("the cluster Zyzzyva and foo"));
        assert!(a.iter().all(|&t| t < 32_000));
        assert_ne!(a[2], a[4]);
        assert_eq!(v.decode(a[0]), " the");
        assert_eq!(v.decode(EOS), "");
    }

    #[test]
    fn chat_template_wraps_each_message() {
        let v = Vocab::new(32_000);
        let ids = v.encode_chat([("system", "be brief"), ("user", "hi")].into_iter());
        assert_eq!(ids.len(), 2 + 2 + 2 + 1 + 1);
        assert_eq!(v.decode(ids[0]), "");
    }

    #[test]
    fn sampler_is_seeded() {
        let a = Sampler::new(Some(7), &[]);
        let b = Sampler::new(None, &[1, 2, 3]);
        let c = Sampler::new(None, &[1, 2, 3]);
        assert_eq!(b.token(5), c.token(5));
        assert!((0..64).any(|i| a.token(i) != b.token(i)));
        assert!((0..64).all(|i| (a.token(i) as usize) < WORDS.len()));
        let n = b.natural_length(Some(100.0)).unwrap();
        assert!(n >= 1);
        assert_eq!(b.natural_length(None), None);
        // the mean over many seeds is close to the requested mean
        let mean: f64 = (0..4000)
            .map(|s| {
                Sampler::new(Some(s), &[])
                    .natural_length(Some(50.0))
                    .unwrap() as f64
            })
            .sum::<f64>()
            / 4000.0;
        assert!((45.0..56.0).contains(&mean), "{mean}");
    }
}
