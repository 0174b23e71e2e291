//! One module per `cohort` subcommand.

pub(crate) mod plan;
pub(crate) mod recipe;
pub(crate) mod sbatch;
pub(crate) mod slurm;
pub(crate) mod topo;
