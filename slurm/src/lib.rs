//! Slurm facts without side effects.
//!
//! - [`hostlist`]: Slurm's hostlist grammar, expanded and compressed exactly as
//!   `scontrol show hostnames` / `scontrol show hostlist` do.
//! - [`tasks`]: task layouts such as `SLURM_TASKS_PER_NODE=2(x3),1`, and which node a
//!   global task rank runs on.
//! - [`context`]: the typed [`SlurmContext`] built from an environment map: what kind of
//!   process this is (batch shell, step task, outside Slurm), its job, step, rank and node.
//! - [`hygiene`]: the `SLURM_*` variables that must not leak into engine processes.
//! - [`render`]: `sbatch` scripts and `srun` argument lists from typed specs.
//!
//! The crate never reads the process environment, never runs `scontrol`, `srun` or
//! `sbatch`, and does no I/O: callers pass the environment in and run what it renders.

pub mod context;
pub mod hostlist;
pub mod hygiene;
pub mod render;
pub mod tasks;

pub use context::{ProcessKind, SlurmContext};
pub use hostlist::{compress, expand, HostlistError};
