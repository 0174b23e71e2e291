//! Recipe errors that name the file, line, column, key and value, and suggest the
//! nearest valid key or value (`did you mean "decode"?`).

use std::fmt;

/// A recipe that cannot be used.
#[derive(Debug, thiserror::Error)]
pub struct RecipeError {
    /// The file as given on the command line.
    pub file: String,
    /// 1-based line and column, where known.
    pub position: Option<(usize, usize)>,
    /// The dotted key (`deploy.decode.tp`), where known.
    pub key: Option<String>,
    /// What is wrong, with the value and what would be right.
    pub message: String,
    /// The underlying error (I/O, JSON), if any.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl RecipeError {
    /// An error about the file as a whole.
    pub(crate) fn file(file: &str, message: String) -> Self {
        Self {
            file: file.to_owned(),
            position: None,
            key: None,
            message,
            source: None,
        }
    }

    /// An error about `table.key`, located in `text` when it is written there.
    pub(crate) fn at_key(file: &str, text: &str, table: &str, key: &str, message: String) -> Self {
        Self {
            file: file.to_owned(),
            position: locate(text, table, key),
            key: Some(if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            }),
            message,
            source: None,
        }
    }

    /// Turns the TOML/serde error into one that names the key and suggests a fix.
    pub(crate) fn from_toml(file: &str, text: &str, err: &toml::de::Error) -> Self {
        let span = err.span().unwrap_or(0..0);
        let position = Some(line_col(text, span.start));
        let (table, key, value) = context_at(text, span.start);
        let full_key = match (&table, &key) {
            (t, Some(k)) if !t.is_empty() => Some(format!("{t}.{k}")),
            (_, Some(k)) => Some(k.clone()),
            (t, None) if !t.is_empty() => Some(t.clone()),
            _ => None,
        };
        let raw = err.message().trim().to_owned();
        let message = if let Some((name, expected)) = unknown(&raw, "unknown field") {
            let place = if table.is_empty() {
                "at the top level".to_owned()
            } else {
                format!("in `[{table}]`")
            };
            let mut m = format!("unknown key `{name}` {place}");
            if let Some(v) = value.as_deref().filter(|v| v.len() <= 40) {
                m.push_str(&format!(" (value `{v}`)"));
            }
            m.push_str(&suggestion(&name, &expected));
            m
        } else if let Some((name, expected)) = unknown(&raw, "unknown variant") {
            let k = full_key.as_deref().unwrap_or("value");
            format!("`{k}` cannot be \"{name}\"{}", suggestion(&name, &expected))
        } else if let Some(rest) = raw.strip_prefix("invalid type: ") {
            let k = full_key.as_deref().unwrap_or("value");
            let v = value.as_deref().unwrap_or("?");
            format!("`{k}` has the wrong type: {rest}; given `{v}`")
        } else if let Some(rest) = raw.strip_prefix("invalid value: ") {
            let k = full_key.as_deref().unwrap_or("value");
            let v = value.as_deref().unwrap_or("?");
            format!("`{k}` is out of range: {rest}; given `{v}`")
        } else if let Some(field) = raw
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            // serde points at the table that lacks the field.
            let t = full_key
                .as_deref()
                .map_or("the top level".to_owned(), |t| format!("`[{t}]`"));
            format!("{t} needs the key `{field}`")
        } else {
            raw
        };
        Self {
            file: file.to_owned(),
            position,
            key: full_key,
            message,
            source: None,
        }
    }
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a` or
/// `b`", or "there are no fields") into the name and the candidates.
fn unknown(msg: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix(prefix)?.trim_start();
    let rest = rest.strip_prefix('`')?;
    let (name, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((name.to_owned(), expected))
}

/// `; did you mean "decode"?` for the nearest candidate, else the list of candidates.
pub(crate) fn suggestion(given: &str, candidates: &[String]) -> String {
    if candidates.is_empty() {
        return "; this table takes no keys yet".to_owned();
    }
    let best = candidates
        .iter()
        .map(|c| (edit_distance(&given.to_lowercase(), &c.to_lowercase()), c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= (given.chars().count() / 3).max(2) => {
            format!("; did you mean \"{c}\"?")
        }
        _ => {
            let list: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
            format!("; expected one of {}", list.join(", "))
        }
    }
}

/// Levenshtein distance, counting an adjacent swap as one edit (typos swap letters).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut start = offset;
    while start > 0 && !text.is_char_boundary(start) {
        start -= 1;
    }
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The table header in force at `offset`, and the key and value written on its line.
fn context_at(text: &str, offset: usize) -> (String, Option<String>, Option<String>) {
    let (line_no, _) = line_col(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let mut table = String::new();
    let mut key = None;
    let mut value = None;
    if let Some(line) = lines.get(line_no.saturating_sub(1)) {
        let t = line.trim();
        if let Some(h) = header(t) {
            // A misspelt table name: the last part is the key, the rest its table.
            return match h.rsplit_once('.') {
                Some((t, k)) => (t.to_owned(), Some(k.to_owned()), None),
                None => (String::new(), Some(h), None),
            };
        }
        if let Some((k, v)) = t.split_once('=') {
            let k = k.trim().trim_matches('"');
            key = Some(k.to_owned());
            let v = v.split(" #").next().unwrap_or(v).trim();
            value = Some(v.to_owned());
        }
    }
    for line in lines.iter().take(line_no.saturating_sub(1)).rev() {
        if let Some(h) = header(line.trim()) {
            table = h;
            break;
        }
    }
    // A dotted key (`decode.tp = 4`) belongs to a sub-table.
    if let Some(k) = key.clone() {
        if let Some((sub, last)) = k.rsplit_once('.') {
            table = if table.is_empty() {
                sub.to_owned()
            } else {
                format!("{table}.{sub}")
            };
            key = Some(last.to_owned());
        }
    }
    (table, key, value)
}

fn header(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let end = inner.find(']')?;
    Some(
        inner[..end]
            .split('.')
            .map(|p| p.trim().trim_matches('"'))
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// Where `key` is written under `[table]` (or at the top when `table` is empty).
pub(crate) fn locate(text: &str, table: &str, key: &str) -> Option<(usize, usize)> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(h) = header(t) {
            if h == format!("{table}.{key}") || (table.is_empty() && h == key) {
                return Some((i + 1, line.len() - t.len() + 1));
            }
            current = h;
            continue;
        }
        if let Some((k, _)) = t.split_once('=') {
            let k = k.trim().trim_matches('"');
            let full = if current.is_empty() {
                k.to_owned()
            } else {
                format!("{current}.{k}")
            };
            let want = if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            };
            if full == want {
                return Some((i + 1, line.len() - t.len() + 1));
            }
        }
    }
    // The table itself, if the key is missing.
    text.lines()
        .position(|l| header(l.trim()).as_deref() == Some(table))
        .map(|i| (i + 1, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let c: Vec<String> = ["prefill", "decode", "aggregated"]
            .map(String::from)
            .to_vec();
        assert_eq!(suggestion("decdoe", &c), "; did you mean \"decode\"?");
        assert_eq!(suggestion("prefil", &c), "; did you mean \"prefill\"?");
        assert!(suggestion("zzzzzzzz", &c).starts_with("; expected one of `prefill`"));
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn positions_and_keys() {
        let text = "name = \"x\"\n[deploy]\nmode = \"a\"\n[deploy.decode]\ngpus = 4\n  tp = 3\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(locate(text, "deploy.decode", "tp"), Some((6, 3)));
        assert_eq!(locate(text, "deploy", "decode"), Some((4, 1)));
        assert_eq!(locate(text, "", "name"), Some((1, 1)));
        let (t, k, v) = context_at(text, text.find("tp").unwrap());
        assert_eq!(
            (t.as_str(), k.as_deref(), v.as_deref()),
            ("deploy.decode", Some("tp"), Some("3"))
        );
    }
}
