//! KV-cache knowledge for routing: block hashing of token sequences, the index of which
//! worker holds which blocks, KV event types and decoders for engines' event streams.
//!
//! The main type is [`KvIndexer`]: fed [`EventBatch`]es (from [`decode`] + [`to_ops`]),
//! it answers [`KvIndexer::find_matches`] — for a request's [`BlockHash`]es (from
//! [`BlockHasher`]), how many leading blocks each worker holds. [`ApproxIndexer`] answers
//! the same question for engines without events, from the router's own decisions.
//!
//! It has no I/O of its own (the ZMQ subscriber that feeds it is not written yet), and no
//! routing policy: it answers "how much of this prefix does each worker hold", the
//! router decides what to do with it. The indexers are single-owner structures, not
//! thread-safe: the router runs one in an actor task.

pub mod decode;
pub mod event;
pub mod hash;
mod index;
pub mod msgpack;

pub use event::{to_ops, EngineEvent, EventBatch, KvOp, StoredBlock, StoredBlocks};
pub use hash::{BlockHash, BlockHasher, EngineBlockHash, LocalBlockHash, Salt};
pub use index::{
    ApplyOutcome, ApplyStats, ApproxConfig, ApproxIndexer, KvIndexer, MatchScratch, OverlapScores,
    WorkerId,
};
