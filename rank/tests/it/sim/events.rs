//! The simulator's KV events decode with `cohort-kv`'s vLLM decoder — the one that
//! decodes the frames captured from vLLM 0.32 — and say what the cache did.

use super::{post, start};
use cohort_kv::decode::{decode_message, decode_payload, Dialect};
use cohort_kv::EngineEvent;
use cohort_rank::sim::events::{encode_message, encode_payload};
use cohort_rank::sim::{block_hash, KvEvent};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use zeromq::{Socket, SocketRecv};

/// The frames captured from a real vLLM 0.32 (see tests/data/README.md).
fn shared_frames() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/vllm_kv_events")
}

/// Reads one captured frame file (u32 LE part count, then u32 LE length + bytes each).
fn read_frame(path: &std::path::Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
    let mut at = 4;
    (0..n)
        .map(|_| {
            let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            at += 4;
            let part = b[at..at + len].to_vec();
            at += len;
            part
        })
        .collect()
}

#[test]
fn encoded_payloads_decode_field_for_field() {
    let h0 = block_hash(None, &[1, 2]);
    let h1 = block_hash(Some(h0), &[3, 4]);
    let events = vec![
        KvEvent::Stored {
            hashes: vec![h0, h1],
            parent: None,
            tokens: vec![1, 2, 3, 4],
        },
        KvEvent::Removed { hashes: vec![h0] },
        KvEvent::AllCleared,
    ];
    let parts = encode_message(7, encode_payload(1.5, &events, 2, 0));
    let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_ref()).collect();
    let f = decode_message(&parts, Dialect::Vllm).unwrap();
    assert_eq!(f.seq, 7);
    assert!(f.topic.is_empty());
    assert_eq!(f.payload.ts, 1.5);
    assert_eq!(f.payload.dp_rank, Some(0));
    let EngineEvent::BlockStored(s) = &f.payload.events[0] else {
        panic!("{:?}", f.payload.events)
    };
    assert_eq!(s.block_hashes.len(), 2);
    assert_eq!(s.parent_block_hash, None);
    assert_eq!(s.token_ids, vec![1, 2, 3, 4]);
    assert_eq!(s.block_size, 2);
    assert_eq!(s.medium.as_deref(), Some("GPU"));
    assert!(
        matches!(&f.payload.events[1], EngineEvent::BlockRemoved(r) if r.block_hashes.len() == 1)
    );
    assert_eq!(f.payload.events[2], EngineEvent::AllBlocksCleared);
    // and the same decoder reads the real frames
    let real = read_frame(&shared_frames().join("frame000.bin"));
    let parts: Vec<&[u8]> = real.iter().map(Vec::as_slice).collect();
    let f = decode_message(&parts, Dialect::Vllm).unwrap();
    assert!(
        matches!(&f.payload.events[0], EngineEvent::BlockStored(s) if s.block_hashes.len() == 4 && s.block_size == 32)
    );
    assert!(
        decode_payload(&encode_payload(0.0, &[], 16, 0), Dialect::Vllm)
            .unwrap()
            .events
            .is_empty()
    );
}

async fn recv(sub: &mut zeromq::SubSocket) -> cohort_kv::decode::EventFrame {
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("a frame within 5 s")
        .unwrap();
    let parts: Vec<Vec<u8>> = m.iter().map(|b| b.to_vec()).collect();
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    decode_message(&refs, Dialect::Vllm).expect("decodes as vLLM")
}

#[tokio::test]
async fn a_subscriber_decodes_the_sims_events_over_zmq() {
    let sim = start(&[
        "--kv-events-port",
        "0",
        "--num-gpu-blocks",
        "8",
        "--block-size",
        "4",
        "--max-model-len",
        "32",
    ])
    .await;
    let info = sim.instances()[0].clone();
    let mut sub = zeromq::SubSocket::new();
    sub.connect(&format!("tcp://127.0.0.1:{}", info.kv_events_port.unwrap()))
        .await
        .unwrap();
    sub.subscribe("").await.unwrap();
    // PUB drops messages until the subscription has arrived: send distinct prompts until
    // one frame comes through (bounded), then the real test.
    let mut first = None;
    for i in 0..50u32 {
        post(
            info.addr,
            "/v1/completions",
            json!({"model": "llama-3.1-8b", "prompt": [1000 + i, 1, 2, 3, 4], "max_tokens": 1}),
        )
        .await;
        if let Ok(f) = tokio::time::timeout(Duration::from_millis(100), recv(&mut sub)).await {
            first = Some(f);
            break;
        }
    }
    let mut seq = first.expect("the subscriber gets frames").seq;
    // 9 tokens of prompt + 1 output: blocks [0..4) and [4..8) become full and cached
    let prompt: Vec<u32> = (500..509).collect();
    post(
        info.addr,
        "/v1/completions",
        json!({"model": "llama-3.1-8b", "prompt": prompt, "max_tokens": 1}),
    )
    .await;
    let f = recv(&mut sub).await;
    assert_eq!(f.seq, seq + 1, "consecutive sequence numbers");
    seq = f.seq;
    let stored: Vec<_> = f
        .payload
        .events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::BlockStored(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(stored.len(), 1, "{:?}", f.payload.events);
    assert_eq!(stored[0].token_ids, prompt[..8].to_vec());
    assert_eq!(stored[0].parent_block_hash, None);
    let h0 = block_hash(None, &prompt[..4]);
    let h1 = block_hash(Some(h0), &prompt[4..8]);
    assert_eq!(
        stored[0]
            .block_hashes
            .iter()
            .map(|h| h.0)
            .collect::<Vec<_>>(),
        vec![h0, h1]
    );
    // fill the 8-block cache with another prompt: LRU evictions come as BlockRemoved
    post(info.addr, "/v1/completions", json!({"model": "llama-3.1-8b", "prompt": (700..728).collect::<Vec<u32>>(), "max_tokens": 1})).await;
    let f = recv(&mut sub).await;
    assert_eq!(f.seq, seq + 1);
    assert!(
        f.payload
            .events
            .iter()
            .any(|e| matches!(e, EngineEvent::BlockRemoved(_))),
        "{:?}",
        f.payload.events
    );
    // and a reset clears everything
    let (status, _) = super::call(info.addr, "POST", "/reset_prefix_cache", None).await;
    assert!(status.is_success());
    let f = recv(&mut sub).await;
    assert_eq!(f.payload.events, vec![EngineEvent::AllBlocksCleared]);
    sim.shutdown().await;
}
