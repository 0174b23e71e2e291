//! Tests of `cohort-rank` against data captured on real hardware.

mod captured;
mod control;
mod engine;
mod engines;
mod sim;
