//! One module per `cohort` subcommand.

pub(crate) mod plan;
pub(crate) mod recipe;
pub(crate) mod slurm;
pub(crate) mod topo;

/// Arguments of a subcommand this build does not provide yet: anything is accepted, so
/// that the command can say so plainly instead of failing on an unknown flag.
#[derive(Debug, clap::Args)]
pub(crate) struct Pending {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}
