//! `cohort slurm …`: hostlists and the Slurm context, as cohort reads them.

use std::io::Write as _;

use anyhow::Context as _;
use clap::Subcommand;
use cohort_slurm::{hostlist, ProcessKind, SlurmContext};

#[derive(Debug, Subcommand)]
pub(crate) enum SlurmCommand {
    /// Expand a hostlist into one name per line, like `scontrol show hostnames`
    ///
    /// Accepts Slurm's grammar: `rack[1-2]-n[01-03,10]`, items separated by commas or
    /// spaces, zero padding from the low bound, suffixes after `]`.
    #[command(after_help = "Example: cohort slurm hostnames 'rack[1-2]-n[001-003]'")]
    Hostnames {
        /// The hostlist expression; defaults to `SLURM_JOB_NODELIST`
        expr: Option<String>,
    },
    /// Compress host names into a hostlist, like `scontrol show hostlist`
    #[command(after_help = "Example: cohort slurm hostlist n1 n2 n3 n5   # prints n[1-3,5]")]
    Hostlist {
        /// Host names or hostlist expressions (each may itself be a list)
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show the Slurm context of this process: what kind of process it is (batch shell,
    /// step task, …), its job, step, rank, node and the node list
    Env {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(cmd: &SlurmCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        SlurmCommand::Hostnames { expr } => {
            let expr = match expr {
                Some(e) => e.clone(),
                None => std::env::var(cohort_slurm::context::vars::JOB_NODELIST).context(
                    "no hostlist given and `SLURM_JOB_NODELIST` is not set; \
                     pass one: `cohort slurm hostnames 'n[1-4]'`",
                )?,
            };
            for name in hostlist::expand(&expr)? {
                writeln!(out, "{name}")?;
            }
        }
        SlurmCommand::Hostlist { names } => {
            let mut all = Vec::new();
            for n in names {
                all.extend(hostlist::expand(n)?);
            }
            writeln!(out, "{}", hostlist::compress(&all))?;
        }
        SlurmCommand::Env { json } => {
            let ctx = SlurmContext::from_env(
                std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            )
            .context("cannot read this process's Slurm environment")?;
            if *json {
                serde_json::to_writer_pretty(&mut out, &ctx)?;
                writeln!(out)?;
            } else {
                write_table(&mut out, &ctx)?;
            }
        }
    }
    Ok(())
}

fn write_table(out: &mut impl std::io::Write, ctx: &SlurmContext) -> std::io::Result<()> {
    let kind = match ctx.kind {
        ProcessKind::Outside => "outside Slurm (no SLURM_JOB_ID)",
        ProcessKind::BatchShell => "batch shell (not a task: run `srun` for per-task facts)",
        ProcessKind::AllocationShell => "allocation shell (salloc; no step)",
        ProcessKind::StepTask => "step task",
    };
    writeln!(out, "process   {kind}")?;
    if let Some(job) = &ctx.job {
        writeln!(out, "job       {}", job.id)?;
        if let Some(name) = &job.name {
            writeln!(out, "job name  {name}")?;
        }
        let tasks = job.num_tasks.map_or("-".to_owned(), |n| n.to_string());
        writeln!(
            out,
            "job nodes {} ({})",
            hostlist::compress(&job.nodes),
            job.nodes.len()
        )?;
        writeln!(out, "job tasks {tasks}")?;
    }
    if let Some(step) = &ctx.step {
        writeln!(out, "step      {}", step.id)?;
        writeln!(
            out,
            "nodes     {} ({})",
            hostlist::compress(&step.nodes),
            step.nodes.len()
        )?;
        writeln!(
            out,
            "tasks     {} ({} per node)",
            step.num_tasks, step.tasks_per_node
        )?;
    }
    if let Some(task) = &ctx.task {
        writeln!(out, "rank      {} (local {})", task.rank, task.local_rank)?;
        writeln!(out, "node      {} (index {})", task.node, task.node_index)?;
        if let Some(g) = task.gpus_on_node {
            writeln!(out, "gpus      {g}")?;
        }
    }
    Ok(())
}
