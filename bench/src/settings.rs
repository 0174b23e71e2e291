//! Resolved settings: what a benchmark run does, validated once by
//! [`BenchArgs::resolve`](crate::BenchArgs::resolve) (or built directly by `cohort launch`
//! in batch mode). Nothing after this point reads the environment.

use crate::error::BenchError;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the server is.
    pub target: Target,
    /// The served model; `None` asks `GET /v1/models` for the first one.
    pub model: Option<String>,
    /// Which API to call.
    pub endpoint: Endpoint,
    /// The sweep: one point per concurrency, per rate, or one trace replay.
    pub load: Load,
    /// When each point stops issuing requests.
    pub limit: Limit,
    /// Requests issued at the start of each point and left out of its results.
    pub warmup: u64,
    /// Time over which a point reaches its full concurrency or rate (none: at once).
    pub ramp_up: Option<Duration>,
    /// What to send.
    pub dataset: DatasetSpec,
    /// Seed of every random choice (prompts, lengths, arrivals).
    pub seed: u64,
    /// Service-level objectives for goodput.
    pub slo: Slo,
    /// GPUs behind the endpoint, for per-GPU throughput (`None`: unknown).
    pub gpus: Option<u32>,
    /// Send `ignore_eos` and `min_tokens = max_tokens` so outputs have the asked length.
    pub enforce_output_len: bool,
    /// Longest a single request may take before it counts as a `timeout` error.
    pub request_timeout: Duration,
    /// Results directory (created if missing).
    pub output: PathBuf,
    /// Write every request to `<point>.requests.jsonl`.
    pub request_log: bool,
    /// How progress is shown on stderr.
    pub progress: ProgressMode,
    /// Print a table per point and a summary on stdout.
    pub print_tables: bool,
    /// Worker threads of the runtime that `run_cli` builds (0: one per core).
    pub threads: usize,
    /// `run_cli` only: after the first SIGINT/SIGTERM, how long requests in flight may
    /// finish before they are cut (zero: cut at once). Callers of
    /// [`run_draining`](crate::run_draining) choose their own grace.
    pub drain_grace: Duration,
    /// A Hugging Face model directory whose `tokenizer.json` sizes chat prompts exactly
    /// (feature `hf`); `None`: words standing for token ids, lengths approximate.
    pub model_dir: Option<PathBuf>,
    /// Token ids of synthetic prompts are folded below this (`--vocab-size`).
    pub vocab_size: Option<u32>,
}

/// An HTTP endpoint: `http://host:port` plus an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    /// The path before `/v1/...`, without a trailing slash (often empty).
    pub prefix: String,
    /// The bearer token, if any.
    pub api_key: Option<String>,
}

impl Target {
    /// Parses `http://host[:port][/prefix]`; a trailing `/v1` is dropped from the prefix.
    pub fn parse(url: &str, api_key: Option<String>) -> Result<Target, BenchError> {
        let bad = |why: &str| BenchError::InvalidArgument {
            name: "--url",
            value: url.to_owned(),
            reason: why.to_owned(),
        };
        if url.starts_with("https://") {
            return Err(bad("TLS is not supported; give an `http://` URL (a TLS-terminating proxy in front of the server works)"));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with `http://`"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("has no host"));
        }
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let mut prefix = path.trim_end_matches('/').to_owned();
        if prefix.ends_with("/v1") {
            prefix.truncate(prefix.len() - 3);
        }
        Ok(Target {
            authority,
            prefix,
            api_key,
        })
    }

    /// The full URI of an API path such as `/v1/completions`.
    pub fn uri(&self, path: &str) -> String {
        format!("http://{}{}{}", self.authority, self.prefix, path)
    }
}

/// Which OpenAI API the requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Endpoint {
    /// `/v1/completions`, prompts as token ids where the dataset allows (exact lengths).
    Completions,
    /// `/v1/chat/completions`, prompts as text.
    Chat,
}

impl Endpoint {
    /// The API path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

/// How requests are issued.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// Closed loop: each listed concurrency is one sweep point.
    Closed {
        /// The concurrencies, in order.
        concurrencies: Vec<u32>,
    },
    /// Open loop: each listed rate (requests/s) is one sweep point.
    Open {
        /// The rates, in order.
        rates: Vec<f64>,
        /// How arrivals are spaced.
        arrival: Arrival,
        /// Most requests in flight at once (`None`: unbounded).
        max_concurrency: Option<u32>,
    },
    /// Replay a trace at its timestamps divided by `speed`: one point.
    Replay {
        /// 2.0 replays twice as fast.
        speed: f64,
        /// Most requests in flight at once (`None`: unbounded).
        max_concurrency: Option<u32>,
    },
}

/// An arrival process of an open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrival {
    /// Evenly spaced.
    Constant,
    /// Exponential gaps.
    Poisson,
    /// Gamma gaps with this shape (burstiness): below 1 burstier than Poisson, above 1
    /// smoother; 1 is Poisson.
    Gamma(f64),
}

/// When a point stops issuing requests (the first limit reached wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Measured requests per point (warm-up not counted).
    pub requests: Option<u64>,
    /// Time spent issuing requests per point, warm-up included.
    pub duration: Option<Duration>,
}

/// Latency objectives: a request is "good" when it meets all that are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slo {
    /// Time to first token.
    pub ttft: Option<Duration>,
    /// Time per output token (after the first).
    pub tpot: Option<Duration>,
    /// End-to-end latency.
    pub e2el: Option<Duration>,
}

impl Slo {
    /// Parses `ttft=500ms,tpot=50ms,e2el=10s`.
    pub fn parse(s: &str) -> Result<Slo, BenchError> {
        let mut slo = Slo::default();
        let bad = |reason: String| BenchError::InvalidArgument {
            name: "--slo",
            value: s.to_owned(),
            reason,
        };
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not `name=duration`")))?;
            let d = parse_duration(v.trim()).map_err(|r| bad(format!("`{v}`: {r}")))?;
            match k.trim() {
                "ttft" => slo.ttft = Some(d),
                "tpot" => slo.tpot = Some(d),
                "e2el" => slo.e2el = Some(d),
                other => {
                    return Err(bad(format!(
                        "unknown objective `{other}`; expected `ttft`, `tpot` or `e2el`"
                    )))
                }
            }
        }
        Ok(slo)
    }

    /// Whether any objective is set.
    pub fn is_set(&self) -> bool {
        self.ttft.is_some() || self.tpot.is_some() || self.e2el.is_some()
    }
}

/// A distribution of token counts.
#[derive(Debug, Clone, PartialEq)]
pub enum LengthDist {
    /// Always this many.
    Fixed(u32),
    /// Uniform in `[lo, hi]`.
    Uniform(u32, u32),
    /// Normal, rounded and clamped to at least 1.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// A histogram: `(length, weight)` pairs, weights summing to anything positive.
    Histogram(Vec<(u32, f64)>),
}

impl LengthDist {
    /// Parses `N`, `uniform:LO-HI`, `normal:MEAN,STD` or `hist:LEN=W,LEN=W,...`.
    pub fn parse(name: &'static str, s: &str) -> Result<LengthDist, BenchError> {
        let bad = |reason: &str| BenchError::InvalidArgument {
            name,
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let num = |t: &str| t.trim().parse::<u32>().ok().filter(|&n| n > 0);
        if let Some(n) = num(s) {
            return Ok(LengthDist::Fixed(n));
        }
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected `N`, `uniform:LO-HI`, `normal:MEAN,STD` or `hist:LEN=W,...` with positive lengths"))?;
        match kind {
            "uniform" => {
                let (lo, hi) = rest
                    .split_once('-')
                    .ok_or_else(|| bad("expected `uniform:LO-HI`"))?;
                match (num(lo), num(hi)) {
                    (Some(lo), Some(hi)) if lo <= hi => Ok(LengthDist::Uniform(lo, hi)),
                    _ => Err(bad("expected `uniform:LO-HI` with 0 < LO <= HI")),
                }
            }
            "normal" => {
                let (m, sd) = rest
                    .split_once(',')
                    .ok_or_else(|| bad("expected `normal:MEAN,STD`"))?;
                match (m.trim().parse::<f64>(), sd.trim().parse::<f64>()) {
                    (Ok(mean), Ok(std))
                        if mean >= 1.0 && std >= 0.0 && mean.is_finite() && std.is_finite() =>
                    {
                        Ok(LengthDist::Normal { mean, std })
                    }
                    _ => Err(bad(
                        "expected `normal:MEAN,STD` with MEAN >= 1 and STD >= 0",
                    )),
                }
            }
            "hist" => {
                let mut bins = Vec::new();
                for pair in rest.split(',') {
                    let (l, w) = pair
                        .split_once('=')
                        .ok_or_else(|| bad("expected `hist:LEN=WEIGHT,...`"))?;
                    let w: f64 = w
                        .trim()
                        .parse()
                        .map_err(|_| bad("a histogram weight is not a number"))?;
                    let l = num(l)
                        .ok_or_else(|| bad("a histogram length is not a positive integer"))?;
                    if !(w >= 0.0 && w.is_finite()) {
                        return Err(bad("histogram weights must be finite and >= 0"));
                    }
                    bins.push((l, w));
                }
                if bins.iter().map(|b| b.1).sum::<f64>() <= 0.0 {
                    return Err(bad("histogram weights sum to 0"));
                }
                Ok(LengthDist::Histogram(bins))
            }
            _ => Err(bad(
                "unknown distribution; expected `uniform`, `normal` or `hist`",
            )),
        }
    }

    /// One sample.
    pub fn sample(&self, rng: &mut crate::rng::Rng) -> u32 {
        match self {
            LengthDist::Fixed(n) => *n,
            LengthDist::Uniform(lo, hi) => rng.range_u32(*lo, *hi),
            LengthDist::Normal { mean, std } => {
                let x = (mean + std * rng.normal()).round();
                x.clamp(1.0, f64::from(u32::MAX)) as u32
            }
            LengthDist::Histogram(bins) => {
                let total: f64 = bins.iter().map(|b| b.1).sum();
                let mut x = rng.f64() * total;
                for (len, w) in bins {
                    if x < *w {
                        return *len;
                    }
                    x -= w;
                }
                bins.last().map_or(1, |b| b.0)
            }
        }
    }
}

/// What prompts are sent.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSpec {
    /// Random token ids (or words, for chat).
    Random {
        /// Prompt lengths.
        input: LengthDist,
        /// Output lengths (`max_tokens`).
        output: LengthDist,
    },
    /// `groups` shared prefixes of `prefix_len` tokens, each request one of them plus its
    /// own random suffix.
    Prefix {
        /// Number of distinct prefixes.
        groups: u32,
        /// Tokens per prefix.
        prefix_len: u32,
        /// Tokens of the per-request suffix.
        suffix: LengthDist,
        /// Output lengths.
        output: LengthDist,
    },
    /// A Mooncake trace (JSONL with `timestamp`, `input_length`, `output_length`,
    /// `hash_ids`).
    Mooncake {
        /// The trace file.
        path: PathBuf,
        /// Tokens per hash block (512 in the published traces).
        block_size: u32,
    },
    /// ShareGPT conversations (a JSON array of `{"conversations": [{"from", "value"}]}`).
    ShareGpt {
        /// The file.
        path: PathBuf,
        /// Output lengths; `None` takes the length of the recorded answer (≈ 4 characters
        /// a token, since no tokenizer is loaded).
        output: Option<LengthDist>,
    },
    /// JSONL, one `{"prompt": "..." | [ids], "max_tokens": N}` or
    /// `{"messages": [...], "max_tokens": N}` a line.
    Jsonl {
        /// The file.
        path: PathBuf,
        /// Output length where a line gives no `max_tokens`.
        output: LengthDist,
    },
}

/// How progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// indicatif bars (stderr is a terminal); `color` false under `NO_COLOR`.
    Bars {
        /// Use colour.
        color: bool,
    },
    /// A plain line every `every` (stderr is a file or a pipe: batch logs).
    Lines {
        /// The interval.
        every: Duration,
    },
    /// Nothing.
    Off,
}

/// Parses `250ms`, `1.5s`, `2m`, `1h`, `300us`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as `500ms`, `30s` or `2m`"))?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        u => {
            return Err(format!(
                "unknown unit `{u}` in `{s}`; expected us, ms, s, m or h"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_lengths_slos_and_urls_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(
            LengthDist::parse("x", "128").unwrap(),
            LengthDist::Fixed(128)
        );
        assert_eq!(
            LengthDist::parse("x", "uniform:10-20").unwrap(),
            LengthDist::Uniform(10, 20)
        );
        assert!(LengthDist::parse("x", "uniform:20-10").is_err());
        assert!(LengthDist::parse("x", "0").is_err());
        assert!(matches!(
            LengthDist::parse("x", "normal:100,5").unwrap(),
            LengthDist::Normal { .. }
        ));
        assert!(LengthDist::parse("x", "hist:1=0,2=0").is_err());
        let slo = Slo::parse("ttft=500ms,tpot=50ms").unwrap();
        assert_eq!(slo.ttft, Some(Duration::from_millis(500)));
        assert_eq!(slo.tpot, Some(Duration::from_millis(50)));
        assert!(Slo::parse("ttfb=1s").is_err());
        let t = Target::parse("http://127.0.0.1:8000/v1/", None).unwrap();
        assert_eq!(t.uri("/v1/models"), "http://127.0.0.1:8000/v1/models");
        let t = Target::parse("http://gw/api", None).unwrap();
        assert_eq!(t.uri("/v1/models"), "http://gw:80/api/v1/models");
        assert!(Target::parse("https://x", None).is_err());
    }

    #[test]
    fn histogram_lengths_follow_their_weights() {
        let d = LengthDist::parse("x", "hist:10=1,20=3").unwrap();
        let mut rng = crate::rng::Rng::new(1);
        let n = 40_000;
        let twenties = (0..n).filter(|_| d.sample(&mut rng) == 20).count();
        let share = twenties as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.01, "{share}");
    }
}
