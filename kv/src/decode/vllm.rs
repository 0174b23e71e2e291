//! vLLM's KV events (`vllm/distributed/kv_events.py`).
//!
//! Checked against real frames captured from vLLM 0.32.0 (`tests/data/vllm_kv_events`):
//! events are tagged maps; `BlockStored` carries `block_hashes`, `parent_block_hash`,
//! `token_ids`, `block_size`, `lora_id`, `medium`, `lora_name`, and non-default extras
//! (`extra_keys`, `group_idx`, `kv_cache_spec_kind`). Versions before the map encoding
//! sent arrays in the field order below, and hashes as bytes.

/// The vLLM version whose frames the decoder is tested against.
pub const VLLM_SOURCE_VERSION: &str = "0.32.0";

/// `BlockStored` fields in declaration order.
pub(crate) const BLOCK_STORED_FIELDS: &[&str] = &[
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "lora_name",
];
