//! cohort: a Slurm-native launcher for disaggregated LLM inference.
//!
//! This crate is the command line and the job lifecycle: it parses arguments, resolves
//! them into settings, and wires the other crates together (`cohort-slurm` for Slurm
//! facts, later `cohort-rank`, `cohort-router` and `cohort-bench`).
//!
//! It holds no Slurm grammar, engine logic or routing of its own: those live in the
//! crates below it.

pub mod cli;
mod commands;
mod launch;
pub mod plan;
pub mod recipe;
