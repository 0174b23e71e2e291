//! The load generator: datasets and traces, arrival processes, a streaming OpenAI
//! client, latency metrics and reports.
//!
//! It measures any OpenAI-compatible endpoint and knows nothing of how that endpoint was
//! started; `cohort launch` calls it as a library in batch jobs ([`run`] with resolved
//! [`Settings`] and a stop token), `cohort bench` through [`run_cli`] with [`BenchArgs`].
//!
//! The path of a request: a [`dataset::Source`] synthesises bodies ahead of time on a
//! blocking thread; a dispatcher (closed loop: a semaphore; open loop and replay: a
//! thread sleeping on the OS's high-resolution timer) issues them; the
//! [`client::Client`] times every chunk; [`metrics::Accumulator`] folds records into
//! HdrHistograms; [`report`] writes JSON (`vllm bench serve` keys plus ours), CSV, JSONL
//! and SVG, each file atomically.
//!
//! It does not tokenize text unless built with the `hf` feature and given the model's
//! directory (`--model-dir`: chat prompts of exact length, text prompts counted; without
//! it chat prompts are words standing for token ids and text lengths are estimated), and
//! it deliberately does not speak TLS.

pub mod args;
pub mod arrival;
pub mod client;
pub mod dataset;
pub mod error;
pub mod metrics;
pub mod progress;
pub mod record;
pub mod report;
pub mod rng;
pub mod runner;
pub mod settings;
mod sweep;
pub mod testserver;

pub use args::BenchArgs;
pub use error::BenchError;
pub use settings::Settings;
pub use sweep::{run, run_cli, run_draining, sweep_points, BenchOutcome};
