//! `[bench]`: the benchmark a batch job runs against its own frontend.
//!
//! The keys are `cohort bench`'s flags without the dashes (`input_len` for
//! `--input-len`), so what a user learnt running the benchmark by hand carries over.
//! [`Bench::to_args`] turns the table into `cohort bench` arguments; the benchmark's own
//! checks then apply, and their errors name the recipe's key.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// `[bench]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bench {
    /// `completions` (token-id prompts, exact lengths; the default) or `chat`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Closed loop: one sweep point per concurrency.
    #[serde(default)]
    pub concurrency: Vec<u32>,
    /// Open loop: one sweep point per rate, requests/s.
    #[serde(default)]
    pub rate: Vec<f64>,
    /// `poisson` (default), `constant` or `gamma`.
    #[serde(default)]
    pub arrival: Option<String>,
    /// Gamma shape for `arrival = "gamma"`.
    #[serde(default)]
    pub burstiness: Option<f64>,
    /// Open loop and replay: most requests in flight.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Measured requests per point.
    #[serde(default)]
    pub requests: Option<u64>,
    /// Time issuing requests per point, e.g. `"60s"`.
    #[serde(default)]
    pub duration: Option<String>,
    /// Requests per point left out of the results.
    #[serde(default)]
    pub warmup: Option<u64>,
    /// Reach the full load linearly over this time.
    #[serde(default)]
    pub ramp_up: Option<String>,
    /// `random` (default), `prefix`, `mooncake`, `sharegpt` or `jsonl`.
    #[serde(default)]
    pub dataset: Option<String>,
    /// Prompt lengths: a number or `uniform:LO-HI`, `normal:MEAN,STD`, `hist:…`.
    #[serde(default)]
    pub input_len: Option<Length>,
    /// Output lengths, same forms.
    #[serde(default)]
    pub output_len: Option<Length>,
    /// `dataset = "prefix"`: distinct shared prefixes.
    #[serde(default)]
    pub prefix_groups: Option<u32>,
    /// `dataset = "prefix"`: tokens per shared prefix.
    #[serde(default)]
    pub prefix_len: Option<u32>,
    /// `dataset = "prefix"`: suffix lengths.
    #[serde(default)]
    pub suffix_len: Option<Length>,
    /// `dataset = "mooncake"`: the trace, relative to the recipe.
    #[serde(default)]
    pub trace: Option<String>,
    /// Trace replay: speed factor.
    #[serde(default)]
    pub speed: Option<f64>,
    /// `dataset = "sharegpt" | "jsonl"`: the file, relative to the recipe.
    #[serde(default)]
    pub dataset_path: Option<String>,
    /// Seed of prompts, lengths and arrivals.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Goodput objectives, e.g. `"ttft=500ms,tpot=50ms"`.
    #[serde(default)]
    pub slo: Option<String>,
    /// Longest one request may take, e.g. `"600s"`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// The model's vocabulary size, for models with fewer than 31,000 tokens.
    #[serde(default)]
    pub vocab_size: Option<u32>,
}

/// A length: a plain number of tokens or a distribution in `cohort bench`'s syntax.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Length {
    /// Exactly this many tokens.
    Tokens(u32),
    /// `uniform:LO-HI`, `normal:MEAN,STD`, `hist:LEN=W,…`.
    Spec(String),
}

impl std::fmt::Display for Length {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tokens(n) => write!(f, "{n}"),
            Self::Spec(s) => f.write_str(s),
        }
    }
}

impl Bench {
    /// The table as `cohort bench` arguments (without `--url` and `--output`); paths are
    /// made relative to `recipe_dir`. Without a load, one closed-loop point at
    /// concurrency 8 with 100 requests.
    pub fn to_args(&self, recipe_dir: &Path) -> Vec<String> {
        let mut a = Vec::new();
        let mut push = |flag: &str, value: String| {
            a.push(format!("--{flag}"));
            a.push(value);
        };
        let list = |v: &[String]| v.join(",");
        if let Some(v) = &self.endpoint {
            push("endpoint", v.clone());
        }
        if !self.concurrency.is_empty() {
            let c: Vec<String> = self.concurrency.iter().map(u32::to_string).collect();
            push("concurrency", list(&c));
        }
        if !self.rate.is_empty() {
            let r: Vec<String> = self.rate.iter().map(f64::to_string).collect();
            push("rate", list(&r));
        }
        if self.concurrency.is_empty() && self.rate.is_empty() && self.trace.is_none() {
            push("concurrency", "8".into());
        }
        if self.requests.is_none() && self.duration.is_none() {
            push("requests", "100".into());
        }
        let path = |p: &String| recipe_dir.join(p).display().to_string();
        let strings = [
            ("arrival", self.arrival.clone()),
            ("duration", self.duration.clone()),
            ("ramp-up", self.ramp_up.clone()),
            ("dataset", self.dataset.clone()),
            ("input-len", self.input_len.as_ref().map(Length::to_string)),
            (
                "output-len",
                self.output_len.as_ref().map(Length::to_string),
            ),
            (
                "suffix-len",
                self.suffix_len.as_ref().map(Length::to_string),
            ),
            ("trace", self.trace.as_ref().map(path)),
            ("dataset-path", self.dataset_path.as_ref().map(path)),
            ("slo", self.slo.clone()),
            ("timeout", self.timeout.clone()),
            ("burstiness", self.burstiness.map(|v| v.to_string())),
            (
                "max-concurrency",
                self.max_concurrency.map(|v| v.to_string()),
            ),
            ("requests", self.requests.map(|v| v.to_string())),
            ("warmup", self.warmup.map(|v| v.to_string())),
            ("prefix-groups", self.prefix_groups.map(|v| v.to_string())),
            ("prefix-len", self.prefix_len.map(|v| v.to_string())),
            ("speed", self.speed.map(|v| v.to_string())),
            ("seed", self.seed.map(|v| v.to_string())),
            ("vocab-size", self.vocab_size.map(|v| v.to_string())),
        ];
        for (flag, value) in strings {
            if let Some(v) = value {
                push(flag, v);
            }
        }
        a
    }
}

/// The recipe key a `cohort bench` flag comes from, for error messages.
pub fn key_of_flag(flag: &str) -> String {
    flag.trim_start_matches("--").replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_flags_and_paths_follow_the_recipe() {
        let b: Bench = toml::from_str(
            "concurrency = [1, 8]\nrequests = 50\ninput_len = 512\noutput_len = \"uniform:10-20\"\ntrace = \"t.jsonl\"\n",
        )
        .unwrap();
        let a = b.to_args(Path::new("/r"));
        let joined = a.join(" ");
        assert!(joined.contains("--concurrency 1,8"), "{joined}");
        assert!(joined.contains("--requests 50"), "{joined}");
        assert!(joined.contains("--input-len 512"), "{joined}");
        assert!(joined.contains("--output-len uniform:10-20"), "{joined}");
        assert!(joined.contains("--trace /r/t.jsonl"), "{joined}");
    }

    #[test]
    fn an_empty_table_is_a_short_closed_loop_point() {
        let a = Bench::default().to_args(Path::new("."));
        assert_eq!(a, ["--concurrency", "8", "--requests", "100"]);
    }

    #[test]
    fn flags_name_their_keys() {
        assert_eq!(key_of_flag("--input-len"), "input_len");
    }
}
