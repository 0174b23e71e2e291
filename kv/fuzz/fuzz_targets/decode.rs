//! Arbitrary bytes, as a payload or split into a multipart message, never panic the
//! decoders or the conversion to indexer ops.
#![no_main]

use cohort_kv::decode::{decode_message, decode_payload, Dialect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for dialect in [Dialect::Vllm, Dialect::Sglang] {
        if let Ok(p) = decode_payload(data, dialect) {
            let _ = cohort_kv::to_ops(&p.events, 16);
        }
    }
    // Also as `[topic, seq, payload]`: the first byte picks the topic length.
    if let Some((&n, rest)) = data.split_first() {
        let n = usize::from(n).min(rest.len());
        let (topic, rest) = rest.split_at(n);
        let (seq, payload) = rest.split_at(rest.len().min(8));
        let _ = decode_message(&[topic, seq, payload], Dialect::Vllm);
    }
});
