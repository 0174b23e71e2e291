//! What runs on every node of a cohort job: bootstrap (MPI, the Slurm environment or
//! local processes), topology discovery, preflight checks, engine adapters and their
//! supervision, the simulated engine, and the agent side of the control plane.
//!
//! It does not plan placements, route requests or run benchmarks: those belong to
//! `cohort` (the launcher), `cohort-router` and `cohort-bench`.

pub mod gpu;
pub mod topology;

pub mod sim;

pub mod bootstrap;
pub mod control;
pub mod engine;
