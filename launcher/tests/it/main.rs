//! End-to-end tests of the `cohort` binary: its command line, and real `sbatch` jobs on
//! a local Slurm cluster brought up by `tests/slurm/cluster.sh`.

// Tests report the Slurm job ids they ran, and why they skip, on stderr.
#![allow(clippy::print_stderr)]

mod cli;
mod fixtures;
mod launch;
mod launch_mpi;
mod launch_slurm;
mod plan;
mod production;
mod recipe;
mod sbatch;
mod serve;
mod slurm_jobs;
mod topo;
