//! Integration tests of cohort-bench: end to end against the controlled-timing server,
//! open-loop pacing, a sweep killed mid-way, draining on a stop signal, and property tests of the dataset parsers.

mod datasets;
mod drain;
mod e2e;
mod fixtures;
mod kill;
mod pacing;
