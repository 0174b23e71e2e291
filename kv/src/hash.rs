//! Block hashing of token sequences: the stable key format of the index.
//!
//! # Format (version 1, stable)
//!
//! A token sequence is cut into blocks of `block_size` tokens; a trailing partial block
//! is ignored (engines cache full blocks only). Each block gets two hashes:
//!
//! * its **local hash**, of its tokens alone:
//!   `xxh3_64(le_u32(t0) ‖ le_u32(t1) ‖ …)` (XXH3, 64 bits, seed 0, each token id as
//!   4 little-endian bytes);
//! * its **block hash**, chained, which covers the whole prefix up to and including it:
//!   - first block: `xxh3_64_with_seed(le_u64(salt) ‖ le_u64(local), ROOT_SEED)`,
//!   - later blocks: `xxh3_64_with_seed(le_u64(parent) ‖ le_u64(local), CHILD_SEED)`,
//!
//!   where `salt` is [`Salt::NONE`] (0) or [`Salt::from_parts`] of the request's LoRA
//!   adapter name and cache salt, `parent` the previous block's block hash, and the seeds
//!   the constants [`ROOT_SEED`] and [`CHILD_SEED`].
//!
//! Two sequences have equal block hashes at position *i* exactly when (up to 64-bit
//! collisions) they have the same salt and the same first `(i + 1) * block_size` tokens.
//! Splitting the hash in two lets the expensive part (hashing tokens) run where events
//! arrive, in parallel, while the indexer only chains 16-byte inputs.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed, Xxh3Default};

/// Version of the hash format described in the module docs; bump on any change.
pub const HASH_FORMAT_VERSION: u32 = 1;
/// Seed of the block hash of a sequence's first block (ASCII `cohortk0`).
pub const ROOT_SEED: u64 = 0x636f_686f_7274_6b30;
/// Seed of the block hash of every later block (ASCII `cohortk1`).
pub const CHILD_SEED: u64 = 0x636f_686f_7274_6b31;
/// Seed of [`Salt::from_parts`] (ASCII `cohortks`).
const SALT_SEED: u64 = 0x636f_686f_7274_6b73;

/// Hash of one block's tokens alone (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalBlockHash(pub u64);

/// Chained hash of a block: identifies the block *and* every token before it. The key of
/// the index; what the router computes for a request and what `find_matches` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub u64);

/// An engine's own, opaque block id (vLLM: a 64-bit hash; SGLang: a signed 64-bit id).
/// Only ever compared for equality within one worker's event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EngineBlockHash(pub u64);

/// A namespace for block hashes: requests with different salts never share blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Salt(pub u64);

impl Salt {
    /// No salt: the base model, no cache isolation.
    pub const NONE: Salt = Salt(0);

    /// The salt of a request from its optional parts (LoRA adapter name, cache salt or
    /// tenant, …), order-sensitive. All parts `None` (or no parts) gives [`Salt::NONE`].
    /// Each part is length-prefixed so `("a", "bc")` and `("ab", "c")` differ.
    pub fn from_parts(parts: &[Option<&str>]) -> Salt {
        if parts.iter().all(Option::is_none) {
            return Salt::NONE;
        }
        let mut h = Xxh3Default::new();
        for part in parts {
            match part {
                None => h.update(&[0]),
                Some(s) => {
                    h.update(&[1]);
                    h.update(&(s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
            }
        }
        // Salt 0 is reserved for "none"; remap the (2^-64) case that hits it.
        Salt(xxh3_64_with_seed(&h.digest().to_le_bytes(), SALT_SEED).max(1))
    }
}

/// The local hash of one block of tokens (any length; callers pass full blocks).
pub fn local_block_hash(tokens: &[u32]) -> LocalBlockHash {
    // Hash LE bytes through a stack buffer: no allocation, same result as one-shot.
    const CHUNK: usize = 256;
    if tokens.len() <= CHUNK {
        let mut buf = [0u8; CHUNK * 4];
        for (dst, t) in buf.chunks_exact_mut(4).zip(tokens) {
            dst.copy_from_slice(&t.to_le_bytes());
        }
        return LocalBlockHash(xxh3_64(&buf[..tokens.len() * 4]));
    }
    let mut h = Xxh3Default::new();
    let mut buf = [0u8; CHUNK * 4];
    for chunk in tokens.chunks(CHUNK) {
        for (dst, t) in buf.chunks_exact_mut(4).zip(chunk) {
            dst.copy_from_slice(&t.to_le_bytes());
        }
        h.update(&buf[..chunk.len() * 4]);
    }
    LocalBlockHash(h.digest())
}

/// The block hash of a block given its parent's block hash (`None` for a first block)
/// and the sequence's salt (used only for first blocks: later ones inherit it).
#[inline]
pub fn chain(parent: Option<BlockHash>, salt: Salt, local: LocalBlockHash) -> BlockHash {
    let mut buf = [0u8; 16];
    buf[8..].copy_from_slice(&local.0.to_le_bytes());
    let seed = match parent {
        Some(p) => {
            buf[..8].copy_from_slice(&p.0.to_le_bytes());
            CHILD_SEED
        }
        None => {
            buf[..8].copy_from_slice(&salt.0.to_le_bytes());
            ROOT_SEED
        }
    };
    BlockHash(xxh3_64_with_seed(&buf, seed))
}

/// Hashes token sequences into block hashes for a fixed block size and salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHasher {
    block_size: usize,
    salt: Salt,
}

impl BlockHasher {
    /// A hasher for `block_size` tokens per block (must match the engines' block size).
    ///
    /// # Panics
    /// If `block_size` is 0: a configuration error to be caught at settings time.
    pub fn new(block_size: usize, salt: Salt) -> Self {
        assert!(block_size > 0, "block_size must be at least 1");
        BlockHasher { block_size, salt }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The salt applied to first blocks.
    pub fn salt(&self) -> Salt {
        self.salt
    }

    /// Local hashes of the full blocks of `tokens` (a partial tail is ignored).
    pub fn local_hashes(&self, tokens: &[u32]) -> Vec<LocalBlockHash> {
        tokens
            .chunks_exact(self.block_size)
            .map(local_block_hash)
            .collect()
    }

    /// Chained block hashes of the full blocks of `tokens`: what `find_matches` takes.
    pub fn block_hashes(&self, tokens: &[u32]) -> Vec<BlockHash> {
        let mut parent = None;
        tokens
            .chunks_exact(self.block_size)
            .map(|block| {
                let h = chain(parent, self.salt, local_block_hash(block));
                parent = Some(h);
                h
            })
            .collect()
    }
}

/// Chains a run of local hashes from `parent` (see [`chain`]).
pub fn chain_all(
    parent: Option<BlockHash>,
    salt: Salt,
    locals: &[LocalBlockHash],
) -> Vec<BlockHash> {
    let mut parent = parent;
    locals
        .iter()
        .map(|&l| {
            let h = chain(parent, salt, l);
            parent = Some(h);
            h
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_blocks_are_ignored() {
        let h = BlockHasher::new(4, Salt::NONE);
        assert_eq!(h.block_hashes(&[1, 2, 3]).len(), 0);
        assert_eq!(h.block_hashes(&[1, 2, 3, 4, 5, 6, 7]).len(), 1);
        assert_eq!(h.block_hashes(&[1, 2, 3, 4, 5, 6, 7, 8]).len(), 2);
    }

    #[test]
    fn hashes_are_chained() {
        let h = BlockHasher::new(2, Salt::NONE);
        let a = h.block_hashes(&[1, 2, 3, 4]);
        let b = h.block_hashes(&[9, 9, 3, 4]);
        // Same second block's tokens, different prefix: different block hash.
        assert_ne!(a[1], b[1]);
        // Same prefix: same hashes.
        assert_eq!(a[0], h.block_hashes(&[1, 2, 7, 7])[0]);
    }

    #[test]
    fn salt_separates_namespaces() {
        let plain = BlockHasher::new(2, Salt::NONE).block_hashes(&[1, 2, 3, 4]);
        let lora = Salt::from_parts(&[Some("adapter-a"), None]);
        let salted = BlockHasher::new(2, lora).block_hashes(&[1, 2, 3, 4]);
        assert_ne!(plain[0], salted[0]);
        assert_ne!(plain[1], salted[1]);
        assert_eq!(Salt::from_parts(&[None, None]), Salt::NONE);
        assert_ne!(
            Salt::from_parts(&[Some("a"), Some("bc")]),
            Salt::from_parts(&[Some("ab"), Some("c")])
        );
    }

    #[test]
    fn local_hash_is_xxh3_of_le_bytes_for_any_length() {
        for n in [0usize, 1, 255, 256, 257, 512, 1000] {
            let tokens: Vec<u32> = (0..n as u32)
                .map(|t| t.wrapping_mul(2_654_435_761))
                .collect();
            let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
            assert_eq!(local_block_hash(&tokens).0, xxh3_64(&bytes), "n = {n}");
        }
    }

    #[test]
    fn format_is_stable() {
        // Golden values: changing these breaks every persisted or cross-process hash, so
        // it needs a new HASH_FORMAT_VERSION.
        let h = BlockHasher::new(4, Salt::NONE).block_hashes(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let expected_0 = {
            let local = xxh3_64(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0]);
            let mut buf = [0u8; 16];
            buf[8..].copy_from_slice(&local.to_le_bytes());
            xxh3_64_with_seed(&buf, ROOT_SEED)
        };
        assert_eq!(h[0].0, expected_0);
        assert_eq!(h[0].0, 0xa10b_00ee_bdaf_3a3f);
        assert_eq!(h[1].0, 0x7bc5_eff6_8fa9_6f6d);
        assert_eq!(
            Salt::from_parts(&[Some("lora-a"), None]).0,
            0x47dd_afe3_d379_5bd0
        );
        assert_eq!(
            chain_all(
                None,
                Salt::NONE,
                &BlockHasher::new(4, Salt::NONE).local_hashes(&[1, 2, 3, 4, 5, 6, 7, 8])
            ),
            h
        );
    }
}
