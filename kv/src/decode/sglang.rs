//! SGLang's KV events (`python/sglang/srt/disaggregation/kv_events.py`).
//!
//! Read from the `sglang` 0.5.23 wheel on PyPI: the publisher (`ZmqEventPublisher`)
//! sends `[topic, seq.to_bytes(8, "big"), payload]`, the payload being the array-like
//! `EventBatch` `[ts, events, attn_dp_rank]`; events (`KVCacheEvent`, `tag=True`,
//! `omit_defaults=True`) are maps with a `"type"` key, optional fields omitted when
//! `None`. `BlockStored` has, in order: `block_hashes`, `parent_block_hash`, `token_ids`,
//! `block_size`, `lora_id`, `medium`, `cache_salt`, `session_id`, `lora_name`.
//! `BlockRemoved`: `block_hashes`, `medium`. `AllBlocksCleared`: nothing.
//! Block hashes are signed 64-bit (namespaced by `cache_salt`): negative ones are kept
//! as their two's-complement bit pattern. Its replay socket (ROUTER) answers a request
//! `[b"", start_seq (8 bytes BE)]` with `[b"", topic, seq, payload]` per buffered message
//! then `[b"", b"", (-1 as 8 bytes BE), b""]`.

/// The SGLang version whose source the decoder follows.
pub const SGLANG_SOURCE_VERSION: &str = "0.5.23";

/// `BlockStored` fields in declaration order (the array form's order).
pub(crate) const BLOCK_STORED_FIELDS: &[&str] = &[
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "cache_salt",
    "session_id",
    "lora_name",
];
