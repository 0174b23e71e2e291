//! The command line of `cohort bench`: clap parses, [`BenchArgs::resolve`] validates once
//! and reads the environment (only here).

use crate::error::BenchError;
use crate::settings::{
    parse_duration, Arrival, DatasetSpec, Endpoint, LengthDist, Limit, Load, ProgressMode,
    Settings, Slo, Target,
};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// `NO_COLOR`: when set to anything non-empty, progress bars are drawn without colour
/// (<https://no-color.org>).
pub const ENV_NO_COLOR: &str = "NO_COLOR";

/// Which dataset `--dataset` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetKind {
    /// Random prompts (`--input-len`, `--output-len`).
    Random,
    /// Shared prefixes (`--prefix-groups`, `--prefix-len`, `--suffix-len`).
    Prefix,
    /// A Mooncake trace (`--trace`).
    Mooncake,
    /// ShareGPT conversations (`--dataset-path`).
    Sharegpt,
    /// JSONL prompts (`--dataset-path`).
    Jsonl,
}

/// How `--arrival` spaces open-loop requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArrivalKind {
    /// Evenly spaced.
    Constant,
    /// Exponential gaps.
    Poisson,
    /// Gamma gaps with shape `--burstiness`.
    Gamma,
}

/// When to draw progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressKind {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    /// Always bars.
    Bars,
    /// Always plain lines.
    Lines,
    /// Nothing.
    Off,
}

/// `cohort bench`: load-test an OpenAI-compatible endpoint.
#[derive(Debug, Clone, clap::Args)]
#[command(about = "Benchmark an OpenAI-compatible endpoint: TTFT, ITL, throughput over a sweep")]
pub struct BenchArgs {
    /// The server, `http://host:port` (a trailing `/v1` is accepted).
    #[arg(long)]
    pub url: String,
    /// The model name sent in requests [default: the first one `/v1/models` lists].
    #[arg(long)]
    pub model: Option<String>,
    /// The API to call: token-id prompts to completions (exact lengths) or text to chat.
    #[arg(long, value_enum, default_value_t = Endpoint::Completions)]
    pub endpoint: Endpoint,
    /// A file holding the API key, sent as `Authorization: Bearer`.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,

    /// Closed loop: one sweep point per concurrency (comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "rate")]
    pub concurrency: Vec<u32>,
    /// Open loop: one sweep point per rate in requests/s (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<f64>,
    /// Open-loop arrival process.
    #[arg(long, value_enum, default_value_t = ArrivalKind::Poisson)]
    pub arrival: ArrivalKind,
    /// Gamma shape for `--arrival gamma`: below 1 burstier than Poisson, above 1 smoother.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Open loop and replay: most requests in flight at once [default: unbounded].
    #[arg(long)]
    pub max_concurrency: Option<u32>,
    /// Trace replay: speed factor (timestamps are divided by it).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,

    /// Measured requests per point [default: 1000, or one pass over a file dataset].
    #[arg(long)]
    pub requests: Option<u64>,
    /// Time spent issuing requests per point, e.g. `60s`, `2m` (warm-up included).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Requests at the start of each point left out of its results.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Reach the full concurrency or rate linearly over this time, e.g. `10s`.
    #[arg(long, value_parser = parse_duration)]
    pub ramp_up: Option<Duration>,

    /// The workload.
    #[arg(long, value_enum, default_value_t = DatasetKind::Random)]
    pub dataset: DatasetKind,
    /// Prompt lengths in tokens: `N`, `uniform:LO-HI`, `normal:MEAN,STD`, `hist:LEN=W,...`.
    #[arg(long, default_value = "1024")]
    pub input_len: String,
    /// Output lengths in tokens (same forms as `--input-len`).
    #[arg(long, default_value = "128")]
    pub output_len: String,
    /// `--dataset prefix`: number of distinct shared prefixes.
    #[arg(long, default_value_t = 8)]
    pub prefix_groups: u32,
    /// `--dataset prefix`: tokens per shared prefix.
    #[arg(long, default_value_t = 2048)]
    pub prefix_len: u32,
    /// `--dataset prefix`: per-request suffix lengths (same forms as `--input-len`).
    #[arg(long, default_value = "128")]
    pub suffix_len: String,
    /// `--dataset mooncake`: the trace (JSONL); implies `--dataset mooncake`.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// `--dataset mooncake`: tokens per hash block.
    #[arg(long, default_value_t = 512)]
    pub block_size: u32,
    /// `--dataset sharegpt|jsonl`: the file.
    #[arg(long)]
    pub dataset_path: Option<PathBuf>,
    /// Seed of prompts, lengths and arrivals: same seed, same workload.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Goodput objectives, e.g. `ttft=500ms,tpot=50ms` (also `e2el=`).
    #[arg(long)]
    pub slo: Option<String>,
    /// GPUs behind the endpoint, for output tokens/s per GPU.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Do not send `ignore_eos`/`min_tokens` (for servers that reject them).
    #[arg(long)]
    pub no_enforce_output_len: bool,
    /// Longest one request may take before it is a `timeout` error.
    #[arg(long, value_parser = parse_duration, default_value = "600s")]
    pub timeout: Duration,

    /// Results directory (created if missing).
    #[arg(long, default_value = "bench-results")]
    pub output: PathBuf,
    /// Do not write `<point>.requests.jsonl`.
    #[arg(long)]
    pub no_request_log: bool,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value_t = ProgressKind::Auto)]
    pub progress: ProgressKind,
    /// Interval of the plain progress lines.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub progress_every: Duration,
    /// No tables on stdout (files are still written).
    #[arg(long, short)]
    pub quiet: bool,
    /// Worker threads of the harness's runtime [default: one per core].
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// After the first SIGINT/SIGTERM: stop issuing, let requests in flight finish for up
    /// to this long, then cut them (`0s`: cut at once). A second signal cuts at once.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub drain_grace: Duration,
    /// A Hugging Face model directory: chat prompts become text whose token count under
    /// its `tokenizer.json` is the length asked for, and text prompts are counted with it
    /// (needs cohort-bench built with the `hf` feature).
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// The model's vocabulary size, for models with fewer than 31,000 tokens: synthetic
    /// token ids (1,000 to 31,000 by default) are folded below it, equal ids staying
    /// equal, so shared prefixes stay shared. Engines reject out-of-vocabulary ids.
    #[arg(long, value_name = "N")]
    pub vocab_size: Option<u32>,
}

impl BenchArgs {
    /// Validates everything and reads the environment; nothing later does.
    pub fn resolve(&self) -> Result<Settings, BenchError> {
        let api_key = match &self.api_key_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|source| BenchError::ReadFile {
                        path: p.clone(),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let target = Target::parse(&self.url, api_key)?;
        let output = LengthDist::parse("--output-len", &self.output_len)?;
        let kind = if self.trace.is_some() && self.dataset == DatasetKind::Random {
            DatasetKind::Mooncake
        } else {
            self.dataset
        };
        let need_path = |what: &str| {
            self.dataset_path.clone().ok_or_else(|| {
                BenchError::Usage(format!("`--dataset {what}` needs `--dataset-path FILE`"))
            })
        };
        let dataset = match kind {
            DatasetKind::Random => DatasetSpec::Random {
                input: LengthDist::parse("--input-len", &self.input_len)?,
                output,
            },
            DatasetKind::Prefix => {
                if self.prefix_groups == 0 {
                    return Err(invalid("--prefix-groups", "0", "at least 1 group"));
                }
                DatasetSpec::Prefix {
                    groups: self.prefix_groups,
                    prefix_len: self.prefix_len,
                    suffix: LengthDist::parse("--suffix-len", &self.suffix_len)?,
                    output,
                }
            }
            DatasetKind::Mooncake => DatasetSpec::Mooncake {
                path: self.trace.clone().ok_or_else(|| {
                    BenchError::Usage("`--dataset mooncake` needs `--trace FILE`".to_owned())
                })?,
                block_size: if self.block_size == 0 {
                    return Err(invalid("--block-size", "0", "at least 1 token"));
                } else {
                    self.block_size
                },
            },
            DatasetKind::Sharegpt => DatasetSpec::ShareGpt {
                path: need_path("sharegpt")?,
                output: if self.output_len == "128" {
                    None
                } else {
                    Some(output)
                },
            },
            DatasetKind::Jsonl => DatasetSpec::Jsonl {
                path: need_path("jsonl")?,
                output,
            },
        };

        if self.concurrency.contains(&0) {
            return Err(invalid(
                "--concurrency",
                "0",
                "each concurrency must be at least 1",
            ));
        }
        if let Some(r) = self.rate.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
            return Err(invalid(
                "--rate",
                &r.to_string(),
                "each rate must be a finite number of requests/s above 0",
            ));
        }
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err(invalid(
                "--speed",
                &self.speed.to_string(),
                "must be above 0",
            ));
        }
        if self.max_concurrency == Some(0) {
            return Err(invalid("--max-concurrency", "0", "must be at least 1"));
        }
        let arrival = match self.arrival {
            ArrivalKind::Constant => Arrival::Constant,
            ArrivalKind::Poisson => Arrival::Poisson,
            ArrivalKind::Gamma => {
                if !(self.burstiness.is_finite() && self.burstiness > 0.0) {
                    return Err(invalid(
                        "--burstiness",
                        &self.burstiness.to_string(),
                        "the gamma shape must be above 0",
                    ));
                }
                Arrival::Gamma(self.burstiness)
            }
        };
        let load = if !self.concurrency.is_empty() {
            no_duplicates(
                "--concurrency",
                self.concurrency.iter().map(|c| c.to_string()),
            )?;
            Load::Closed {
                concurrencies: self.concurrency.clone(),
            }
        } else if !self.rate.is_empty() {
            no_duplicates("--rate", self.rate.iter().map(|r| r.to_string()))?;
            Load::Open {
                rates: self.rate.clone(),
                arrival,
                max_concurrency: self.max_concurrency,
            }
        } else if kind == DatasetKind::Mooncake {
            Load::Replay {
                speed: self.speed,
                max_concurrency: self.max_concurrency,
            }
        } else {
            return Err(BenchError::Usage(
                "give `--concurrency 1,8,64` (closed loop) or `--rate 10,50` (open loop); a trace (`--trace`) alone is replayed at its timestamps".to_owned(),
            ));
        };
        let unbounded = matches!(kind, DatasetKind::Random | DatasetKind::Prefix);
        let requests = match (self.requests, self.duration) {
            (Some(0), _) => return Err(invalid("--requests", "0", "must be at least 1")),
            (None, None) if unbounded => Some(1000),
            (r, _) => r,
        };
        let slo = match &self.slo {
            Some(s) => Slo::parse(s)?,
            None => Slo::default(),
        };
        if self.gpus == Some(0) {
            return Err(invalid("--gpus", "0", "must be at least 1"));
        }
        let progress = match self.progress {
            ProgressKind::Off => ProgressMode::Off,
            ProgressKind::Lines => ProgressMode::Lines {
                every: self.progress_every,
            },
            ProgressKind::Bars => ProgressMode::Bars { color: color() },
            ProgressKind::Auto if std::io::stderr().is_terminal() => {
                ProgressMode::Bars { color: color() }
            }
            ProgressKind::Auto => ProgressMode::Lines {
                every: self.progress_every,
            },
        };
        if let Some(dir) = &self.model_dir {
            crate::dataset::TextTokenizer::check_available(dir)?;
        }
        if let Some(n) = self.vocab_size.filter(|&n| n < crate::dataset::MIN_VOCAB) {
            return Err(invalid(
                "--vocab-size",
                &n.to_string(),
                &format!(
                    "a vocabulary has at least {} tokens",
                    crate::dataset::MIN_VOCAB
                ),
            ));
        }
        Ok(Settings {
            target,
            model: self.model.clone(),
            endpoint: self.endpoint,
            load,
            limit: Limit {
                requests,
                duration: self.duration,
            },
            warmup: self.warmup,
            ramp_up: self.ramp_up,
            dataset,
            seed: self.seed,
            slo,
            gpus: self.gpus,
            enforce_output_len: !self.no_enforce_output_len,
            request_timeout: self.timeout,
            output: self.output.clone(),
            request_log: !self.no_request_log,
            progress,
            print_tables: !self.quiet,
            threads: self.threads,
            drain_grace: self.drain_grace,
            model_dir: self.model_dir.clone(),
            vocab_size: self.vocab_size,
        })
    }
}

fn color() -> bool {
    std::env::var_os(ENV_NO_COLOR).is_none_or(|v| v.is_empty())
}

fn invalid(name: &'static str, value: &str, reason: &str) -> BenchError {
    BenchError::InvalidArgument {
        name,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn no_duplicates(
    name: &'static str,
    items: impl Iterator<Item = String>,
) -> Result<(), BenchError> {
    let mut seen = std::collections::BTreeSet::new();
    for i in items {
        if !seen.insert(i.clone()) {
            return Err(invalid(
                name,
                &i,
                "is listed twice; each sweep point needs its own value",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn resolve(line: &str) -> Result<Settings, BenchError> {
        let argv = std::iter::once("cohort-bench").chain(line.split_whitespace());
        Cli::try_parse_from(argv)
            .map_err(|e| BenchError::Usage(e.to_string()))?
            .args
            .resolve()
    }

    #[test]
    fn sweeps_and_defaults_resolve() {
        let s = resolve("--url http://127.0.0.1:1 --concurrency 1,8,64").unwrap();
        assert_eq!(
            s.load,
            Load::Closed {
                concurrencies: vec![1, 8, 64]
            }
        );
        assert_eq!(s.limit.requests, Some(1000));
        let s = resolve(
            "--url http://127.0.0.1:1 --rate 10,50 --arrival gamma --burstiness 0.5 --duration 30s",
        )
        .unwrap();
        assert!(matches!(s.load, Load::Open { arrival: Arrival::Gamma(b), .. } if b == 0.5));
        assert_eq!(
            s.limit,
            Limit {
                requests: None,
                duration: Some(Duration::from_secs(30))
            }
        );
        let s = resolve("--url http://127.0.0.1:1 --dataset mooncake --trace t.jsonl --speed 10")
            .unwrap();
        assert!(matches!(s.load, Load::Replay { speed, .. } if speed == 10.0));
        assert_eq!(s.limit.requests, None);
    }

    #[test]
    fn bad_combinations_are_refused_with_the_option_named() {
        for (line, needle) in [
            ("--url http://x:1", "--concurrency"),
            (
                "--url http://x:1 --concurrency 1 --rate 2",
                "cannot be used with",
            ),
            ("--url http://x:1 --concurrency 0", "--concurrency"),
            ("--url http://x:1 --concurrency 4,4", "twice"),
            ("--url http://x:1 --rate=-1", "--rate"),
            ("--url http://x:1 --rate 0", "--rate"),
            (
                "--url http://x:1 --concurrency 1 --dataset jsonl",
                "--dataset-path",
            ),
            (
                "--url http://x:1 --concurrency 1 --dataset mooncake",
                "--trace",
            ),
            (
                "--url http://x:1 --concurrency 1 --input-len normal:0,1",
                "--input-len",
            ),
            ("--url http://x:1 --concurrency 1 --slo ttft=fast", "--slo"),
            ("--url ftp://x --concurrency 1", "--url"),
        ] {
            let e = resolve(line).unwrap_err().to_string();
            assert!(e.contains(needle), "{line}: {e}");
        }
    }
}
