//! cohort-kv integration tests: one binary (STYLE.md).

mod decode_fuzz;
mod frames;
mod indexer_props;
mod sglang;
#[cfg(feature = "zmq")]
mod subscriber;
mod support;
