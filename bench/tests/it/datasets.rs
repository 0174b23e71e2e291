//! Dataset parsers: property tests, and a never-panics test for trace files.

use cohort_bench::dataset::{fold_token, parse_jsonl, parse_trace};
use cohort_bench::settings::LengthDist;
use proptest::prelude::*;

fn entry() -> impl Strategy<Value = (u32, u32, u32, Vec<u16>)> {
    (
        0u32..5_000_000,
        1u32..200_000,
        0u32..5_000,
        proptest::collection::vec(any::<u16>(), 0..40),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// `--vocab-size`: every id lands inside the vocabulary, ids already inside stay as
    /// they are, and equal ids stay equal (so shared prefixes stay shared).
    #[test]
    fn folded_ids_fit_the_vocabulary(ids in proptest::collection::vec(0u32..40_000, 1..64), vocab in 16u32..50_000) {
        let folded: Vec<u32> = ids.iter().map(|&t| fold_token(t, vocab)).collect();
        for (&t, &f) in ids.iter().zip(&folded) {
            prop_assert!(f < vocab);
            if t < vocab {
                prop_assert_eq!(f, t);
            } else {
                prop_assert!(f >= vocab / 4, "clear of the low (special) ids");
            }
            prop_assert_eq!(fold_token(t, vocab), f);
        }
    }

    /// Whatever bytes a trace file holds, parsing returns a value or a line-numbered error.
    #[test]
    fn trace_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err((line, reason)) = parse_trace(&text) {
            prop_assert!(line >= 1 && line <= text.lines().count().max(1));
            prop_assert!(!reason.is_empty());
        }
    }

    /// Near-valid lines (fields shuffled, dropped, mistyped) never panic either.
    #[test]
    fn trace_parsing_of_mangled_json_never_panics(
        parts in proptest::collection::vec(prop_oneof![
            Just("\"timestamp\": 5"), Just("\"timestamp\": -1"), Just("\"timestamp\": 1e400"),
            Just("\"input_length\": 0"), Just("\"input_length\": 7"), Just("\"input_length\": -3"),
            Just("\"output_length\": 4294967296"), Just("\"output_length\": 2"),
            Just("\"hash_ids\": [1, 2]"), Just("\"hash_ids\": [-1]"), Just("\"hash_ids\": null"),
        ], 0..6)
    ) {
        let _ = parse_trace(&format!("{{{}}}", parts.join(", ")));
    }

    /// Written entries read back: sorted by time, rebased to the first, lengths kept.
    #[test]
    fn trace_round_trips(entries in proptest::collection::vec(entry(), 1..30)) {
        let text: String = entries
            .iter()
            .map(|(t, i, o, h)| format!(
                "{{\"timestamp\": {t}, \"input_length\": {i}, \"output_length\": {o}, \"hash_ids\": {h:?}}}\n"
            ))
            .collect();
        let parsed = parse_trace(&text).unwrap();
        prop_assert_eq!(parsed.len(), entries.len());
        let t0 = entries.iter().map(|e| e.0).min().unwrap();
        prop_assert_eq!(parsed[0].timestamp_ms, 0.0);
        prop_assert!(parsed.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
        let mut want: Vec<(u32, u32, u32)> = entries.iter().map(|e| (e.0 - t0, e.1, e.2.max(1))).collect();
        want.sort_by_key(|w| w.0);
        let mut got: Vec<(u32, u32, u32)> = parsed.iter().map(|p| (p.timestamp_ms as u32, p.input_length, p.output_length)).collect();
        got.sort_by_key(|g| g.0);
        // Stable sort keeps equal timestamps in file order, so the lists match exactly.
        prop_assert_eq!(got, want);
    }

    /// JSONL parsing never panics and every item asks for at least one token.
    #[test]
    fn jsonl_never_panics(lines in proptest::collection::vec("[ -~]{0,60}", 0..8)) {
        if let Ok(items) = parse_jsonl(&lines.join("\n"), &LengthDist::Fixed(3), 0) {
            prop_assert!(items.iter().all(|i| i.max_tokens >= 1));
        }
    }

    /// Length specs: parsing never panics, and what parses samples within its bounds.
    #[test]
    fn length_specs_sample_in_bounds(spec in "(uniform:|normal:|hist:)?[0-9]{0,4}([-,=][0-9]{0,4}){0,3}", seed in any::<u64>()) {
        if let Ok(d) = LengthDist::parse("--input-len", &spec) {
            let mut rng = cohort_bench::rng::Rng::new(seed);
            for _ in 0..50 {
                let n = d.sample(&mut rng);
                prop_assert!(n >= 1);
                if let LengthDist::Uniform(lo, hi) = d {
                    prop_assert!(n >= lo && n <= hi);
                }
            }
        }
    }
}

#[test]
fn the_shipped_mooncake_trace_parses() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/traces/mooncake_synthetic.jsonl"
    );
    let entries = parse_trace(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(entries.len(), 3993);
    assert!(entries
        .iter()
        .all(|e| e.input_length >= 1 && e.output_length >= 1));
    // Shared prefixes exist: some entries start with the same block as an earlier one.
    let mut firsts = std::collections::HashSet::new();
    let shared = entries
        .iter()
        .filter_map(|e| e.hash_ids.first())
        .filter(|h| !firsts.insert(**h))
        .count();
    assert!(shared > 0);
}
