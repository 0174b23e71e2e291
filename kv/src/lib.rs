//! KV-cache knowledge for routing: block hashing of token sequences, the index of which
//! worker holds which blocks, KV event types and decoders for engines' event streams.
//!
//! The main type is [`KvIndexer`]: fed [`EventBatch`]es (from [`decode`] + [`to_ops`]),
//! it answers [`KvIndexer::find_matches`] — for a request's [`BlockHash`]es (from
//! [`BlockHasher`]), how many leading blocks each worker holds. [`ApproxIndexer`] answers
//! the same question for engines without events, from the router's own decisions.
//!
//! With the `zmq` feature (default), [`service::IndexerService`] runs a [`KvIndexer`] as
//! an actor (one task owns it; a cloneable handle sends batches and queries), and
//! [`subscriber::Subscriber`] feeds it from one engine's ZMQ event stream, with gap
//! detection, replay and reconnects. Without it the crate has no I/O. It has no routing
//! policy: it answers "how much of this prefix does each worker hold", the router
//! decides what to do with it. The indexers themselves are single-owner structures, not
//! thread-safe.

pub mod decode;
pub mod event;
pub mod hash;
mod index;
pub mod msgpack;
#[cfg(feature = "zmq")]
pub mod service;
#[cfg(feature = "zmq")]
pub mod subscriber;

/// The ZMQ implementation the subscriber uses (pure Rust, tokio), for publishers that
/// must speak to it (e.g. the simulated engine's PUB socket).
#[cfg(feature = "zmq")]
pub use zeromq;

pub use event::{to_ops, EngineEvent, EventBatch, KvOp, StoredBlock, StoredBlocks};
pub use hash::{BlockHash, BlockHasher, EngineBlockHash, LocalBlockHash, Salt};
pub use index::{
    ApplyOutcome, ApplyStats, ApproxConfig, ApproxIndexer, KvIndexer, MatchScratch, OverlapScores,
    WorkerId,
};
