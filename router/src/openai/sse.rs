//! Server-sent-event framing of OpenAI streams: `data: <json>\n\n`, ended by
//! `data: [DONE]\n\n`.

use serde::Serialize;

/// The event that ends every OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Appends `value` as one event (`data: <json>\n\n`) to `out`.
pub fn write_event<T: Serialize>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, value)?;
    out.extend_from_slice(b"\n\n");
    Ok(())
}

/// One parsed line of an event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseLine<'a> {
    /// `data: <json>`: the payload.
    Data(&'a str),
    /// `data: [DONE]`.
    Done,
    /// A blank line, a comment or another field.
    Other,
}

/// Classifies one line of an event stream (without its line ending).
pub fn parse_line(line: &str) -> SseLine<'_> {
    match line.strip_prefix("data:") {
        Some(rest) => {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            if rest == "[DONE]" {
                SseLine::Done
            } else {
                SseLine::Data(rest)
            }
        }
        None => SseLine::Other,
    }
}
