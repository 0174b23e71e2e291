//! Integration tests of `cohort-slurm` against the real Slurm tools.

// Tests report what they compared, and why they skip, on stderr.
#![allow(clippy::print_stderr)]

mod scontrol;
