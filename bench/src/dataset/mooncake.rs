//! Mooncake traces: JSONL, one request a line, `{"timestamp": ms, "input_length": n,
//! "output_length": n, "hash_ids": [..]}` where each hash id names one block of prompt
//! tokens (512 in the published traces) and equal id prefixes mean equal token prefixes.

use serde::Deserialize;

/// One request of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEntry {
    /// Arrival, in milliseconds after the trace's first request.
    pub timestamp_ms: f64,
    /// Prompt tokens.
    pub input_length: u32,
    /// Output tokens (`max_tokens`), at least 1.
    pub output_length: u32,
    /// The prompt's blocks, in order.
    pub hash_ids: Vec<u64>,
}

#[derive(Deserialize)]
struct Line {
    timestamp: f64,
    input_length: u32,
    output_length: u32,
    #[serde(default)]
    hash_ids: Vec<u64>,
}

/// Parses a trace; on error, the 1-based line and what is wrong with it.
///
/// Blank lines are skipped, extra fields ignored. Entries are sorted by timestamp (stable)
/// and timestamps made relative to the first; an output length of 0 becomes 1, since a
/// server cannot be asked for no tokens.
pub fn parse_trace(text: &str) -> Result<Vec<TraceEntry>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(line).map_err(|e| (i + 1, e.to_string()))?;
        if !l.timestamp.is_finite() || l.timestamp < 0.0 {
            return Err((
                i + 1,
                format!(
                    "`timestamp` must be finite and >= 0 ms; given {}",
                    l.timestamp
                ),
            ));
        }
        if l.input_length == 0 {
            return Err((
                i + 1,
                "`input_length` must be at least 1; given 0".to_owned(),
            ));
        }
        out.push(TraceEntry {
            timestamp_ms: l.timestamp,
            input_length: l.input_length,
            output_length: l.output_length.max(1),
            hash_ids: l.hash_ids,
        });
    }
    out.sort_by(|a, b| a.timestamp_ms.total_cmp(&b.timestamp_ms));
    if let Some(t0) = out.first().map(|e| e.timestamp_ms) {
        for e in &mut out {
            e.timestamp_ms -= t0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sorts_and_rebases() {
        let t = "{\"timestamp\": 30, \"input_length\": 10, \"output_length\": 0, \"hash_ids\": [1]}\n\n\
                 {\"timestamp\": 10, \"input_length\": 5, \"output_length\": 2, \"hash_ids\": [], \"x\": 1}\n";
        let e = parse_trace(t).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].timestamp_ms, 0.0);
        assert_eq!(e[1].timestamp_ms, 20.0);
        assert_eq!(e[1].output_length, 1);
        let err = parse_trace("{\"timestamp\": 1}\n{").unwrap_err();
        assert_eq!(err.0, 1);
        assert!(err.1.contains("input_length"), "{}", err.1);
        assert_eq!(
            parse_trace("{\"timestamp\": -1, \"input_length\": 1, \"output_length\": 1}")
                .unwrap_err()
                .0,
            1
        );
    }
}
