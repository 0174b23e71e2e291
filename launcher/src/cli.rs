//! The `cohort` command line: argument parsing, dispatch, and error reporting.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

/// cohort turns a Slurm allocation of GPU nodes into a coordinated, disaggregated LLM
/// inference system: started by `srun` on every node, it places prefill and decode engine
/// instances by NVLink domain and NUMA node, supervises them, serves an OpenAI-compatible
/// frontend with KV-aware routing on rank 0, and benchmarks it in batch jobs.
#[derive(Debug, Parser)]
#[command(
    name = "cohort",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a recipe on every node of an allocation (`srun cohort launch --recipe R`)
    Launch(crate::launch::LaunchArgs),
    /// Show where a recipe's engine instances would be placed, without starting anything
    Plan(commands::plan::PlanArgs),
    /// Benchmark any OpenAI-compatible endpoint
    Bench(Box<cohort_bench::BenchArgs>),
    /// Run the built-in simulated engine (an OpenAI-compatible, vLLM-like server)
    Sim(Box<cohort_rank::sim::SimArgs>),
    /// Serve an OpenAI-compatible frontend with KV-aware routing in front of running engines
    Serve(Box<cohort_router::ServeArgs>),
    /// Write an sbatch script for a recipe
    Sbatch(commands::sbatch::SbatchArgs),
    /// Show this node's topology: GPUs, NVLink domains, NUMA nodes, NICs
    Topo(commands::topo::TopoArgs),
    /// Recipes: check one strictly
    #[command(subcommand)]
    Recipe(commands::recipe::RecipeCommand),
    /// Slurm facts as cohort reads them: hostlists and this process's Slurm context
    #[command(subcommand)]
    Slurm(commands::slurm::SlurmCommand),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Launch(args) => crate::launch::run(&args),
        Command::Plan(args) => report(commands::plan::run(&args)),
        Command::Bench(args) => report(
            cohort_bench::run_cli(&args)
                .map(drop)
                .map_err(anyhow::Error::from),
        ),
        Command::Sim(args) => {
            report(cohort_rank::sim::run_blocking(*args).map_err(anyhow::Error::from))
        }
        Command::Serve(args) => {
            report(cohort_router::run_blocking(*args).map_err(anyhow::Error::from))
        }
        Command::Sbatch(args) => report(commands::sbatch::run(&args)),
        Command::Topo(args) => report(commands::topo::run(&args)),
        Command::Recipe(cmd) => report(commands::recipe::run(&cmd)),
        Command::Slurm(cmd) => report(commands::slurm::run(&cmd)),
    }
}

/// Prints an error and its causes the way every cohort command does:
/// `error:` then one `caused by:` line per source.
fn report(result: anyhow::Result<()>) -> ExitCode {
    let Err(err) = result else {
        return ExitCode::SUCCESS;
    };
    // `cohort plan | head` closes our stdout early: that is the reader's choice, not an
    // error worth reporting (and the conventional exit status is the one for SIGPIPE).
    let broken_pipe = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::from(141);
    }
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {err}");
    for cause in err.chain().skip(1) {
        let _ = writeln!(stderr, "  caused by: {cause}");
    }
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
