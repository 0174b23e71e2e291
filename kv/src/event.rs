//! Engine-neutral KV events, as the indexer applies them.
//!
//! Decoders turn an engine's wire format into [`EngineEvent`]s (close to the wire, with
//! the tokens); [`to_ops`] hashes the tokens into [`KvOp`]s, the indexer's input. That
//! step is where the per-token cost is paid, so it runs in each engine's subscriber
//! task, off the indexer's single hot thread.

use crate::hash::{local_block_hash, EngineBlockHash, LocalBlockHash, Salt};

/// One block of a store, as the indexer needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlock {
    /// The engine's id for the block, used by later removals.
    pub engine_hash: EngineBlockHash,
    /// Hash of the block's tokens; the indexer chains it onto the parent.
    pub local_hash: LocalBlockHash,
}

/// A run of consecutive blocks stored by one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlocks {
    /// The engine's id of the block before the first one; `None` at a sequence start.
    pub parent: Option<EngineBlockHash>,
    /// Salt of the sequence; only used when `parent` is `None` (children inherit it).
    pub salt: Salt,
    /// The blocks, in sequence order.
    pub blocks: Vec<StoredBlock>,
}

/// One change to a worker's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Blocks were cached.
    Stored(StoredBlocks),
    /// Blocks were evicted (engine ids; unknown ids are ignored).
    Removed(Vec<EngineBlockHash>),
    /// Everything was dropped (e.g. the engine's prefix cache was reset).
    Cleared,
}

/// The ops of one engine message, with the message's sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBatch {
    /// Per-worker sequence number; consecutive batches have consecutive ids.
    pub event_id: u64,
    /// The changes, applied in order.
    pub ops: Vec<KvOp>,
}

/// A decoded `BlockStored` event, close to the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockStoredEvent {
    /// The engine's ids of the stored blocks, in order.
    pub block_hashes: Vec<EngineBlockHash>,
    /// The engine's id of the block before the first one.
    pub parent_block_hash: Option<EngineBlockHash>,
    /// The tokens of all the blocks: `block_hashes.len() * block_size` of them.
    pub token_ids: Vec<u32>,
    /// Tokens per block.
    pub block_size: u32,
    /// LoRA adapter id, if any.
    pub lora_id: Option<i64>,
    /// Storage tier (`"GPU"`, `"CPU_PINNED"`, …), if given.
    pub medium: Option<String>,
    /// LoRA adapter name, if any: part of the salt.
    pub lora_name: Option<String>,
    /// Per-request cache salt (SGLang), if any: part of the salt.
    pub cache_salt: Option<String>,
    /// Every other key, kept verbatim (e.g. vLLM's `extra_keys`, `group_idx`).
    pub other: Vec<(String, crate::msgpack::Value)>,
}

/// A decoded `BlockRemoved` event.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRemovedEvent {
    /// The engine's ids of the evicted blocks.
    pub block_hashes: Vec<EngineBlockHash>,
    /// Storage tier, if given.
    pub medium: Option<String>,
    /// Every other key, kept verbatim.
    pub other: Vec<(String, crate::msgpack::Value)>,
}

/// A decoded engine event.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// `BlockStored`.
    BlockStored(BlockStoredEvent),
    /// `BlockRemoved`.
    BlockRemoved(BlockRemovedEvent),
    /// `AllBlocksCleared`.
    AllBlocksCleared,
    /// An event type this version does not know; skipped by [`to_ops`].
    Unknown {
        /// The event's tag.
        type_name: String,
    },
}

/// Why an engine event cannot become indexer ops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The engine's block size differs from the router's.
    #[error("`block_size` of a `BlockStored` event is {given}; the index uses {expected}")]
    BlockSize {
        /// The index's block size.
        expected: u32,
        /// The event's.
        given: u32,
    },
    /// Token count is not `blocks × block_size`.
    #[error(
        "`BlockStored` carries {tokens} tokens for {blocks} blocks of {block_size}; \
         expected {}", blocks * (*block_size as usize)
    )]
    TokenCount {
        /// Tokens in the event.
        tokens: usize,
        /// Blocks in the event.
        blocks: usize,
        /// Tokens per block.
        block_size: u32,
    },
}

/// Which blocks an op applies to: only the GPU tier is routable today.
fn is_routable_medium(medium: Option<&str>) -> bool {
    // vLLM says "GPU" (even on its CPU build), SGLang "GPU"; absent means the default
    // tier. Offloaded tiers (CPU_PINNED, DISK, …) are not where a request's prefill runs.
    matches!(medium, None | Some("GPU"))
}

/// Hashes decoded events into indexer ops for an index of `block_size` tokens per block.
/// Events of non-GPU tiers and unknown types are skipped.
pub fn to_ops(events: &[EngineEvent], block_size: u32) -> Result<Vec<KvOp>, ConvertError> {
    let mut ops = Vec::with_capacity(events.len());
    for event in events {
        match event {
            EngineEvent::BlockStored(e) => {
                if !is_routable_medium(e.medium.as_deref()) {
                    continue;
                }
                if e.block_size != block_size {
                    return Err(ConvertError::BlockSize {
                        expected: block_size,
                        given: e.block_size,
                    });
                }
                let bs = block_size as usize;
                if e.token_ids.len() != e.block_hashes.len() * bs {
                    return Err(ConvertError::TokenCount {
                        tokens: e.token_ids.len(),
                        blocks: e.block_hashes.len(),
                        block_size,
                    });
                }
                let blocks = e
                    .block_hashes
                    .iter()
                    .zip(e.token_ids.chunks_exact(bs))
                    .map(|(&engine_hash, tokens)| StoredBlock {
                        engine_hash,
                        local_hash: local_block_hash(tokens),
                    })
                    .collect();
                let salt = Salt::from_parts(&[e.lora_name.as_deref(), e.cache_salt.as_deref()]);
                ops.push(KvOp::Stored(StoredBlocks {
                    parent: e.parent_block_hash,
                    salt,
                    blocks,
                }));
            }
            EngineEvent::BlockRemoved(e) => {
                if is_routable_medium(e.medium.as_deref()) {
                    ops.push(KvOp::Removed(e.block_hashes.clone()));
                }
            }
            EngineEvent::AllBlocksCleared => ops.push(KvOp::Cleared),
            EngineEvent::Unknown { .. } => {}
        }
    }
    Ok(ops)
}
