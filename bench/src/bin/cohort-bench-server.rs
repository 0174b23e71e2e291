//! `cohort-bench-server`: the controlled-timing test server, for capacity benchmarks and
//! for trying `cohort bench` without an engine. Prints its URL on stdout, serves until
//! SIGINT/SIGTERM.

use clap::Parser;
use cohort_bench::settings::parse_duration;
use cohort_bench::testserver::{ServerConfig, TestServer};
use std::io::Write;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "cohort-bench-server", version)]
struct Cli {
    /// Port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Delay to the first token.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    ttft: Duration,
    /// Delay between tokens.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    itl: Duration,
    /// Added to each token gap per stream in flight (a batching slowdown).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    itl_per_stream: Duration,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Answer every n-th request with 503.
    #[arg(long)]
    fail_every: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async {
        let cfg = ServerConfig {
            ttft: cli.ttft,
            itl: cli.itl,
            fail_every: cli.fail_every,
            itl_per_stream: cli.itl_per_stream,
            ..ServerConfig::default()
        };
        let server = TestServer::start(cfg, cli.port).await?;
        writeln!(std::io::stdout().lock(), "{}", server.url())?;
        std::io::stdout().flush()?;
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        server.stop().await;
        anyhow::Ok(())
    })
}
