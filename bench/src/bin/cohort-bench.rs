//! `cohort-bench`: the benchmark harness on its own (the same as `cohort bench`).

use clap::Parser;

#[derive(Parser)]
#[command(name = "cohort-bench", version)]
struct Cli {
    #[command(flatten)]
    args: cohort_bench::BenchArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cohort_bench::run_cli(&cli.args)?;
    Ok(())
}
