//! Tests of `cohort-rank` against data captured on real hardware.

mod captured;
mod containers;
mod control;
mod engine;
mod engines;
mod gpu;
mod sim;
