//! The vLLM decoder against frames captured from vLLM 0.32.0, and the whole path
//! frames → ops → index → `find_matches`.

use cohort_kv::decode::{decode_message, Dialect};
use cohort_kv::{
    to_ops, ApplyOutcome, BlockHasher, EngineEvent, EventBatch, KvIndexer, Salt, WorkerId,
};
use serde_json::json;

use crate::support::{captured_frames, event_json};

#[test]
fn every_captured_frame_reproduces_expected_jsonl() {
    let frames = captured_frames();
    assert_eq!(frames.len(), 17, "frames in tests/data/vllm_kv_events");
    for (file, parts, want) in frames {
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let frame = decode_message(&parts, Dialect::Vllm).unwrap_or_else(|e| panic!("{file}: {e}"));
        let got = json!({
            "file": file,
            "topic": String::from_utf8(frame.topic.clone()).unwrap(),
            "seq": frame.seq,
            "ts": frame.payload.ts,
            "events": frame.payload.events.iter().map(event_json).collect::<Vec<_>>(),
            "dp_rank": frame.payload.dp_rank,
        });
        assert_eq!(got, want, "{file}");
        // Exact float, not just JSON-equal.
        assert_eq!(
            frame.payload.ts.to_bits(),
            want["ts"].as_f64().unwrap().to_bits(),
            "{file}"
        );
    }
}

#[test]
fn captured_stream_drives_the_index() {
    let hasher = BlockHasher::new(32, Salt::NONE);
    let worker = WorkerId(7);
    let mut idx = KvIndexer::new();
    let mut first_prompt = Vec::new();
    let mut stats_total = (0u32, 0u32, 0u32, 0u32);
    let mut saw_clear = false;
    for (file, parts, _) in captured_frames() {
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let frame = decode_message(&parts, Dialect::Vllm).unwrap();
        if frame.seq == 0 {
            let EngineEvent::BlockStored(e) = &frame.payload.events[0] else {
                panic!()
            };
            first_prompt = e.token_ids.clone();
            // The 4 blocks vLLM just stored are found from the tokens alone.
            let ops = to_ops(&frame.payload.events, 32).unwrap();
            idx.apply(worker, &EventBatch { event_id: 0, ops });
            assert_eq!(
                idx.find_matches(&hasher.block_hashes(&first_prompt))
                    .get(worker),
                4
            );
            continue;
        }
        saw_clear |= frame
            .payload
            .events
            .iter()
            .any(|e| matches!(e, EngineEvent::AllBlocksCleared));
        let ops = to_ops(&frame.payload.events, 32).unwrap();
        match idx.apply(
            worker,
            &EventBatch {
                event_id: frame.seq,
                ops,
            },
        ) {
            ApplyOutcome::Applied(s) => {
                stats_total.0 += s.stored;
                stats_total.1 += s.removed;
                stats_total.2 += s.unknown_removed;
                stats_total.3 += s.unknown_parent;
            }
            other => panic!("{file}: {other:?}"),
        }
    }
    assert!(saw_clear);
    let (stored, removed, unknown_removed, unknown_parent) = stats_total;
    assert!(
        stored > 40 && removed > 0,
        "stored {stored}, removed {removed}"
    );
    // Every removal and every parent referred to a block the index knew: the engine
    // id → block hash mapping is complete.
    assert_eq!((unknown_removed, unknown_parent), (0, 0));
    // After the cache reset, only the fresh 3-block shared prefix is held.
    assert_eq!(idx.worker_blocks(worker), 3);
    assert_eq!(idx.num_entries(), 3);
    assert_eq!(
        idx.find_matches(&hasher.block_hashes(&first_prompt))
            .get(worker),
        3
    );
    // The wrong block size or salt matches nothing.
    let other_salt = BlockHasher::new(32, Salt::from_parts(&[Some("lora-x")]));
    assert_eq!(
        idx.find_matches(&other_salt.block_hashes(&first_prompt))
            .max(),
        0
    );
}

#[test]
fn block_size_mismatch_is_an_error() {
    let (_, parts, _) = captured_frames().remove(0);
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let frame = decode_message(&parts, Dialect::Vllm).unwrap();
    let err = to_ops(&frame.payload.events, 16).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`block_size` of a `BlockStored` event is 32; the index uses 16"
    );
}

#[test]
fn malformed_messages_say_what_is_wrong() {
    let (_, parts, _) = captured_frames().remove(0);
    let p: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    assert_eq!(
        decode_message(&p[..2], Dialect::Vllm)
            .unwrap_err()
            .to_string(),
        "a KV event message has 3 parts (topic, sequence, payload); given 2"
    );
    assert_eq!(
        decode_message(&[p[0], &p[1][..4], p[2]], Dialect::Vllm)
            .unwrap_err()
            .to_string(),
        "the sequence part of a KV event message is 8 bytes (u64 big-endian); given 4"
    );
    let truncated = &p[2][..p[2].len() - 1];
    assert!(decode_message(&[p[0], p[1], truncated], Dialect::Vllm).is_err());
}
