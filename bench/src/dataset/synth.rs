//! Prompt synthesis: random token ids, hash-addressed token blocks for traces, and words
//! standing for token ids where an endpoint takes text.

use super::mooncake::TraceEntry;
use crate::rng::Rng;

/// Token ids are drawn from `[LOW, HIGH)`: above the special tokens of common
/// vocabularies and below the smallest common vocabulary size (32,000).
const LOW: u32 = 1_000;
const HIGH: u32 = 31_000;

/// `n` random token ids.
pub(crate) fn random_tokens(rng: &mut Rng, n: u32) -> Vec<u32> {
    (0..n).map(|_| rng.range_u32(LOW, HIGH - 1)).collect()
}

/// The tokens of hash block `hash`: a function of `(seed, hash)` only, so equal hash ids
/// give identical blocks wherever they appear.
pub fn block_tokens(seed: u64, hash: u64, block_size: u32) -> Vec<u32> {
    random_tokens(&mut Rng::derive(seed ^ 0x4D4F_4F4E, hash), block_size)
}

/// The prompt of trace entry `index`: its hash blocks in order, cut to `input_length`;
/// tokens past the last block (a trace may list fewer blocks than its length needs) are
/// unique to the request.
pub(crate) fn trace_prompt(seed: u64, index: u64, e: &TraceEntry, block_size: u32) -> Vec<u32> {
    let want = e.input_length as usize;
    let mut out = Vec::with_capacity(want);
    for &h in &e.hash_ids {
        if out.len() >= want {
            break;
        }
        out.extend(block_tokens(seed, h, block_size));
    }
    out.truncate(want);
    if out.len() < want {
        let extra = (want - out.len()) as u32;
        out.extend(random_tokens(
            &mut Rng::derive(seed ^ 0x5041_4444, index),
            extra,
        ));
    }
    out
}

/// Common English words, nearly all one token in the tokenizers of current models.
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "oil",
    "its",
    "now",
    "find",
    "long",
    "down",
    "day",
    "did",
    "get",
    "come",
    "made",
    "may",
    "part",
    "over",
    "new",
    "sound",
    "take",
    "only",
    "little",
    "work",
    "know",
    "place",
    "year",
    "live",
    "me",
    "back",
    "give",
    "most",
    "very",
    "after",
    "thing",
    "our",
    "just",
    "name",
    "good",
    "sentence",
    "man",
    "think",
    "say",
    "great",
    "where",
    "help",
    "through",
    "much",
    "before",
    "line",
    "right",
    "too",
    "mean",
    "old",
    "any",
    "same",
    "tell",
    "boy",
    "follow",
    "came",
    "want",
    "show",
    "also",
    "around",
    "form",
    "three",
    "small",
    "set",
    "put",
    "end",
    "does",
    "another",
    "well",
    "large",
    "must",
    "big",
    "even",
    "such",
    "because",
    "turn",
    "here",
    "why",
    "ask",
    "went",
    "men",
    "read",
    "need",
    "land",
    "different",
    "home",
    "us",
    "move",
    "try",
    "kind",
    "hand",
    "picture",
    "again",
    "change",
    "off",
    "play",
    "spell",
    "air",
    "away",
    "animal",
    "house",
    "point",
    "page",
    "letter",
    "mother",
    "answer",
    "found",
    "study",
    "still",
    "learn",
    "should",
    "world",
    "high",
    "every",
    "near",
    "add",
    "food",
    "between",
    "own",
    "below",
    "country",
    "plant",
    "last",
    "school",
    "father",
    "keep",
    "tree",
    "never",
    "start",
    "city",
    "earth",
    "eye",
    "light",
    "thought",
    "head",
    "under",
    "story",
    "saw",
    "left",
    "few",
    "while",
    "along",
    "might",
    "close",
    "something",
    "seem",
    "next",
    "hard",
    "open",
    "example",
    "begin",
    "life",
    "always",
    "those",
    "both",
    "paper",
    "together",
    "got",
    "group",
    "often",
    "run",
    "important",
    "until",
    "children",
    "side",
    "feet",
    "car",
    "mile",
    "night",
    "walk",
    "white",
    "sea",
    "began",
    "grow",
    "took",
    "river",
    "four",
    "carry",
    "state",
    "once",
    "book",
    "hear",
    "stop",
    "without",
    "second",
    "later",
    "miss",
    "idea",
    "enough",
    "eat",
    "face",
    "watch",
    "far",
    "really",
];

/// Text standing for token ids: one word per id, a function of the id, so equal token
/// prefixes give equal text prefixes (used for chat, which takes no token ids).
pub fn words_for_tokens(tokens: &[u32]) -> String {
    let mut s = String::with_capacity(tokens.len() * 6);
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[*t as usize % WORDS.len()]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(input_length: u32, hash_ids: Vec<u64>) -> TraceEntry {
        TraceEntry {
            timestamp_ms: 0.0,
            input_length,
            output_length: 1,
            hash_ids,
        }
    }

    #[test]
    fn equal_hash_prefixes_give_equal_token_prefixes() {
        let a = trace_prompt(1, 0, &entry(1200, vec![1, 2, 3]), 512);
        let b = trace_prompt(1, 1, &entry(1100, vec![1, 2, 9]), 512);
        assert_eq!(a.len(), 1200);
        assert_eq!(b.len(), 1100);
        assert_eq!(a[..1024], b[..1024]);
        assert_ne!(a[1024..1100], b[1024..1100]);
        // A different seed gives different blocks.
        assert_ne!(block_tokens(1, 1, 512), block_tokens(2, 1, 512));
        // More tokens than blocks: padded with tokens unique to the request.
        let c = trace_prompt(1, 5, &entry(700, vec![1]), 512);
        let d = trace_prompt(1, 6, &entry(700, vec![1]), 512);
        assert_eq!(c[..512], d[..512]);
        assert_ne!(c[512..], d[512..]);
        assert!(a.iter().all(|t| (LOW..HIGH).contains(t)));
    }

    #[test]
    fn words_follow_tokens() {
        assert_eq!(words_for_tokens(&[0, 1, 0]), "the of the");
        assert_eq!(words_for_tokens(&[]), "");
    }
}
