//! KV-cache knowledge for routing: block hashing of token sequences, the index of which
//! worker holds which blocks, KV event types and decoders for engines' event streams.
//!
//! It has no I/O of its own beyond event subscription, and no routing policy: it answers
//! "how much of this prefix does each worker hold", the router decides what to do with it.
