//! "Arbitrary bytes never panic the decoder", in the normal test suite (the fuzz target
//! in `kv/fuzz/` explores further with coverage guidance).

use cohort_kv::decode::{decode_message, decode_payload, Dialect};
use cohort_kv::to_ops;
use proptest::prelude::*;

use crate::support::captured_frames;

fn exercise(payload: &[u8]) {
    for dialect in [Dialect::Vllm, Dialect::Sglang] {
        if let Ok(p) = decode_payload(payload, dialect) {
            let _ = to_ops(&p.events, 32);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise(&bytes);
        let _ = decode_message(&[&bytes[..], &bytes[..bytes.len().min(8)], &bytes[..]], Dialect::Vllm);
    }

    /// Real frames with bytes overwritten, inserted or cut: deep into the event decoder.
    #[test]
    fn mutated_real_frames_never_panic(
        frame in 0usize..17,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut payload = captured_frames()[frame].1[2].clone();
        for (at, byte, kind) in edits {
            if payload.is_empty() { break; }
            let i = at.index(payload.len());
            match kind {
                0 => payload[i] = byte,
                1 => payload.insert(i, byte),
                _ => payload.truncate(i),
            }
        }
        exercise(&payload);
    }
}
