//! A whole run: resolve the model, load the dataset, run each sweep point, write the
//! reports; and the thin CLI runner with its runtime and signal handling.

use crate::args::BenchArgs;
use crate::client::Client;
use crate::dataset::{BodyBuilder, Dataset, TextTokenizer};
use crate::error::BenchError;
use crate::progress::Progress;
use crate::report::{point_table, summary_table, Reporter, RunInfo};
use crate::runner::{run_point, PointCtx, PointKind, PointSpec};
use crate::settings::{Endpoint, Load, Settings};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct BenchOutcome {
    /// The JSON of every point written in full, in sweep order.
    pub points: Vec<Map<String, Value>>,
    /// The results directory.
    pub output: PathBuf,
    /// The model benchmarked.
    pub model: String,
}

/// The sweep points of a load.
pub fn sweep_points(load: &Load) -> Vec<PointSpec> {
    match load {
        Load::Closed { concurrencies } => concurrencies
            .iter()
            .map(|&c| PointSpec {
                label: format!("c{c}"),
                kind: PointKind::Concurrency(c),
            })
            .collect(),
        Load::Open {
            rates,
            arrival,
            max_concurrency,
        } => rates
            .iter()
            .map(|&rate| PointSpec {
                label: format!("r{rate}"),
                kind: PointKind::Rate {
                    rate,
                    arrival: *arrival,
                    max_concurrency: *max_concurrency,
                },
            })
            .collect(),
        Load::Replay {
            speed,
            max_concurrency,
        } => vec![PointSpec {
            label: format!("replay-x{speed}"),
            kind: PointKind::Replay {
                speed: *speed,
                max_concurrency: *max_concurrency,
            },
        }],
    }
}

/// Runs the benchmark `settings` describe until done or until `stop` is cancelled (then
/// the points finished are written in full, the one in progress marked partial, and the
/// result is [`BenchError::Interrupted`]). This is what `cohort launch` calls in batch
/// mode, on its own runtime and with its own stop token.
pub async fn run(settings: &Settings, stop: CancellationToken) -> Result<BenchOutcome, BenchError> {
    run_draining(settings, stop.clone(), stop).await
}

/// [`run`] with a drain: cancelling `stop` ends issuing requests, and those in flight
/// finish until `cut` is cancelled too (`cohort launch` gives them a grace period).
/// The points finished are written in full, the one in progress marked partial.
pub async fn run_draining(
    settings: &Settings,
    stop: CancellationToken,
    cut: CancellationToken,
) -> Result<BenchOutcome, BenchError> {
    let specs = sweep_points(&settings.load);
    let pool = match &settings.load {
        Load::Closed { concurrencies } => concurrencies.iter().copied().max().unwrap_or(1) as usize,
        Load::Open {
            max_concurrency, ..
        }
        | Load::Replay {
            max_concurrency, ..
        } => max_concurrency.map_or(1024, |m| m as usize),
    };
    let client = Client::new(
        &settings.target,
        settings.endpoint,
        pool,
        settings.request_timeout,
    )?;
    let model = match &settings.model {
        Some(m) => m.clone(),
        None => client.first_model().await?,
    };
    let spec = settings.dataset.clone();
    let seed = settings.seed;
    let model_dir = settings.model_dir.clone();
    let endpoint = settings.endpoint;
    let (dataset, tokenizer) = tokio::task::spawn_blocking(move || {
        let tokenizer = match &model_dir {
            Some(dir) => Some(Arc::new(TextTokenizer::load(dir)?)),
            None => None,
        };
        let mut dataset = Dataset::load(&spec, seed)?;
        if let (Some(tok), Endpoint::Chat) = (&tokenizer, endpoint) {
            dataset.fit_to(tok);
        }
        Ok::<_, BenchError>((dataset, tokenizer))
    })
    .await
    .map_err(|e| BenchError::Usage(format!("loading the dataset panicked: {e}")))??;
    if dataset.is_empty() {
        return Err(BenchError::Usage("the dataset holds no request".to_owned()));
    }
    let ctx = PointCtx {
        client,
        dataset,
        builder: BodyBuilder {
            model: model.clone(),
            endpoint: settings.endpoint,
            enforce_output_len: settings.enforce_output_len,
            tokenizer,
            vocab_size: settings.vocab_size,
        },
        seed: settings.seed,
        limit: settings.limit,
        warmup: settings.warmup,
        ramp_up: settings.ramp_up,
        slo: settings.slo,
        cut,
    };
    let mut reporter = Reporter::new(
        &settings.output,
        RunInfo::new(settings, &model),
        settings.request_log,
        settings.print_tables,
    )?;
    let mut progress = Progress::new(settings.progress);
    for spec in &specs {
        if stop.is_cancelled() {
            break;
        }
        let mut sink = reporter.point_sink(spec)?;
        let run = run_point(&ctx, spec, &stop, &mut progress, &mut sink).await?;
        sink.close()?;
        let m = reporter.finish_point(spec, &run)?;
        if reporter.print_tables {
            let _ = write!(std::io::stdout().lock(), "{}", point_table(&m));
        }
    }
    if reporter.print_tables && !reporter.finished().is_empty() {
        let _ = write!(
            std::io::stdout().lock(),
            "{}",
            summary_table(reporter.finished())
        );
    }
    if stop.is_cancelled() {
        return Err(BenchError::Interrupted {
            finished: reporter.finished().len(),
            output: settings.output.clone(),
        });
    }
    Ok(BenchOutcome {
        points: reporter.finished().to_vec(),
        output: settings.output.clone(),
        model,
    })
}

/// The `cohort bench` command: resolves `args`, builds a runtime and runs. The first
/// SIGINT or SIGTERM stops issuing and lets requests in flight finish for up to
/// `--drain-grace`, then cuts them; a second signal cuts at once. Finished points are
/// written in full, the current one marked partial.
pub fn run_cli(args: &BenchArgs) -> Result<BenchOutcome, BenchError> {
    let settings = args.resolve()?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if settings.threads > 0 {
        rt.worker_threads(settings.threads);
    }
    let rt = rt.enable_all().build().map_err(BenchError::Runtime)?;
    // The run is a task on the workers, not the future `block_on` polls on this thread:
    // its collector then shares a worker with the requests, and a record does not wake
    // another thread (a context switch per request).
    let run = rt.spawn(async move {
        let stop = CancellationToken::new();
        let cut = CancellationToken::new();
        let signals = tokio::spawn(stop_on_signal(
            stop.clone(),
            cut.clone(),
            settings.drain_grace,
        ));
        let r = run_draining(&settings, stop, cut).await;
        signals.abort();
        let _ = signals.await;
        r
    });
    match rt.block_on(run) {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// First signal: cancel `stop`, then `cut` after `grace` or at a second signal.
async fn stop_on_signal(stop: CancellationToken, cut: CancellationToken, grace: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    let say = |line: std::fmt::Arguments<'_>| {
        let _ = writeln!(std::io::stderr().lock(), "cohort bench: {line}");
    };
    stop.cancel();
    if grace.is_zero() {
        say(format_args!(
            "{name}: stopping; finished points are kept, the current one is written as partial"
        ));
        cut.cancel();
        return;
    }
    say(format_args!(
        "{name}: stopping; requests in flight may finish for {grace:?} (signal again to cut them now); finished points are kept, the current one is written as partial"
    ));
    let why = tokio::select! {
        _ = tokio::time::sleep(grace) => "drain grace over",
        _ = int.recv() => "second SIGINT",
        _ = term.recv() => "second SIGTERM",
    };
    say(format_args!("{why}: cutting the requests still in flight"));
    cut.cancel();
}
