//! SGLang's event encoding (from the sglang 0.5.23 source), and the array form older
//! vLLM and SGLang versions used, built with a msgpack writer.

use cohort_kv::decode::{decode_message, Dialect};
use cohort_kv::{
    to_ops, BlockHasher, EngineBlockHash, EngineEvent, EventBatch, KvIndexer, Salt, WorkerId,
};

use crate::support::Mp;

/// `[ts, [BlockStored(map, signed hashes, cache_salt, session_id), BlockRemoved],
/// attn_dp_rank]`, as SGLang 0.5.23 encodes it (optional `None` fields omitted).
fn sglang_payload(tokens: &[u32]) -> Vec<u8> {
    let mut m = Mp::default();
    m.arr(3).f64(1_700_000_000.5).arr(2);
    m.map(7).str("type").str("BlockStored");
    m.str("block_hashes").arr(2).int(-5).int(i64::MAX);
    m.str("parent_block_hash").nil();
    m.str("token_ids").arr(tokens.len() as u32);
    for &t in tokens {
        m.uint(u64::from(t));
    }
    m.str("block_size")
        .uint(4)
        .str("cache_salt")
        .str("tenant-a")
        .str("session_id")
        .str("s1");
    m.map(3)
        .str("type")
        .str("BlockRemoved")
        .str("block_hashes")
        .arr(1)
        .int(i64::MAX);
    m.str("medium").str("GPU");
    m.uint(3);
    m.0
}

#[test]
fn sglang_frame_decodes_and_indexes() {
    let tokens: Vec<u32> = (100..108).collect();
    let payload = sglang_payload(&tokens);
    let frame = decode_message(&[b"kv", &9u64.to_be_bytes(), &payload], Dialect::Sglang).unwrap();
    assert_eq!(
        (frame.topic.as_slice(), frame.seq, frame.payload.dp_rank),
        (&b"kv"[..], 9, Some(3))
    );
    let EngineEvent::BlockStored(s) = &frame.payload.events[0] else {
        panic!("{frame:?}")
    };
    assert_eq!(
        s.block_hashes,
        vec![
            EngineBlockHash(-5i64 as u64),
            EngineBlockHash(i64::MAX as u64)
        ]
    );
    assert_eq!(s.cache_salt.as_deref(), Some("tenant-a"));
    assert_eq!(s.lora_id, None);
    assert_eq!(s.other.len(), 1, "session_id kept verbatim");

    let mut idx = KvIndexer::new();
    let ops = to_ops(&frame.payload.events, 4).unwrap();
    idx.apply(
        WorkerId(1),
        &EventBatch {
            event_id: frame.seq,
            ops,
        },
    );
    // The cache salt namespaces the blocks: only a request with the same salt matches.
    let salted = BlockHasher::new(4, Salt::from_parts(&[None, Some("tenant-a")]));
    assert_eq!(
        idx.find_matches(&salted.block_hashes(&tokens))
            .get(WorkerId(1)),
        1
    );
    let plain = BlockHasher::new(4, Salt::NONE);
    assert_eq!(idx.find_matches(&plain.block_hashes(&tokens)).max(), 0);
}

#[test]
fn array_form_events_with_byte_hashes_decode_positionally() {
    // Older vLLM: `array_like=True` events, hashes as bytes.
    let mut m = Mp::default();
    m.arr(3).f64(1.0).arr(3);
    m.arr(6)
        .str("BlockStored")
        .arr(1)
        .bin(&[0xab; 32])
        .nil()
        .arr(2)
        .uint(1)
        .uint(2);
    m.uint(2).nil();
    m.arr(2).str("BlockRemoved").arr(1).bin(&[0, 0, 1]);
    m.arr(1).str("AllBlocksCleared");
    m.nil();
    let frame = decode_message(&[b"", &0u64.to_be_bytes(), &m.0], Dialect::Vllm).unwrap();
    let events = &frame.payload.events;
    let EngineEvent::BlockStored(s) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(s.token_ids, vec![1, 2]);
    assert_eq!(s.block_size, 2);
    assert_ne!(s.block_hashes[0], EngineBlockHash(0));
    let EngineEvent::BlockRemoved(r) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(r.block_hashes, vec![EngineBlockHash(1)]);
    assert_eq!(events[2], EngineEvent::AllBlocksCleared);
    assert_eq!(frame.payload.dp_rank, None);
}

#[test]
fn unknown_event_types_and_other_tiers_are_skipped() {
    let mut m = Mp::default();
    m.arr(2).f64(1.0).arr(2);
    m.map(1).str("type").str("SomethingNew");
    m.map(3)
        .str("type")
        .str("BlockRemoved")
        .str("block_hashes")
        .arr(1)
        .uint(9);
    m.str("medium").str("CPU_PINNED");
    let frame = decode_message(&[b"", &0u64.to_be_bytes(), &m.0], Dialect::Sglang).unwrap();
    assert!(
        matches!(&frame.payload.events[0], EngineEvent::Unknown { type_name } if type_name == "SomethingNew")
    );
    assert!(to_ops(&frame.payload.events, 4).unwrap().is_empty());
}
