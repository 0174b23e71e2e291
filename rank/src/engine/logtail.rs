//! The last lines of an engine's log, for error reports.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes read from the end of the log: enough for the lines asked for, even with long
/// Python tracebacks, without reading a multi-gigabyte log.
const TAIL_BYTES: u64 = 64 * 1024;

/// The last `lines` lines of the file (lossy UTF-8), or a note saying why there are none.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match read_tail(path, lines) {
        Ok(text) if text.trim().is_empty() => format!("(`{}` is empty)", path.display()),
        Ok(text) => text,
        Err(e) => format!("(cannot read `{}`: {e})", path.display()),
    }
}

fn read_tail(path: &Path, lines: usize) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.trim_end().lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        let path = std::env::temp_dir().join(format!("cohort-tail-{}.log", std::process::id()));
        let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(tail(&path, 3), "line 48\nline 49\nline 50");
        std::fs::remove_file(&path).unwrap();
        assert!(tail(&path, 3).contains("cannot read"));
    }
}
