//! Slurm's hostlist grammar: `rack[1-2]-n[01-03,10]` ⇄ a list of host names.
//!
//! [`expand`] accepts what current Slurm's `scontrol show hostnames` accepts:
//!
//! - items are separated by commas or whitespace outside brackets;
//! - inside brackets, comma-separated numbers and `lo-hi` ranges;
//! - the zero-padding width is the length of the low bound as written:
//!   `n[09-11]` → `n09 n10 n11`, and `n[9-011]` → `n9 n10 n11`;
//! - several bracket groups in one item expand as a Cartesian product, the first group
//!   outermost: `rack[1-2]-n[01-02]` → `rack1-n01 rack1-n02 rack2-n01 rack2-n02`. With
//!   three or more groups Slurm's order is peculiar and followed exactly: the last group
//!   varies fastest, then the first, the second, …, the last-but-one slowest
//!   (`a[1-2]b[1-2]c[1-2]` → `a1b1c1 a1b1c2 a2b1c1 a2b1c2 a1b2c1 …`);
//! - text after the last `]` is a suffix: `gpu-[1-2]x` → `gpu-1x gpu-2x`. Current Slurm
//!   accepts this; Slurm 22.05 does not. cohort follows current Slurm;
//! - duplicates are kept, in order;
//! - at most [`MAX_HOSTS`] names.
//!
//! It is stricter than Slurm where Slurm silently mangles its input: an unclosed bracket
//! (`n[1-2`, which Slurm 22.05 turns into nonsense), an empty bracket, an empty range item
//! (`n[1,,2]`), a missing bound (`n[1-]`) and nested brackets are errors that name the byte
//! position.
//!
//! [`compress`] is `scontrol show hostlist`: order-preserving, adjacent names with the same
//! prefix, suffix and compatible zero-padding merge into ranges, and consecutive ranges with
//! the same prefix and suffix share one bracket: `n1,n2,n3,n5,m1,n010` → `n[1-3,5],m1,n010`.

use std::fmt;

/// The most names one expression may expand to (Slurm's own limit on one range).
pub const MAX_HOSTS: usize = 65_536;

/// Characters that separate items outside brackets.
fn is_separator(c: u8) -> bool {
    matches!(c, b',' | b' ' | b'\t' | b'\n' | b'\r')
}

/// A hostlist expression that cannot be expanded, with the byte position of the fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hostlist `{expr}` at byte {position}: {kind}")]
pub struct HostlistError {
    /// The whole expression as given.
    pub expr: String,
    /// Byte offset (0-based) into `expr` where the fault starts.
    pub position: usize,
    /// What is wrong there.
    pub kind: HostlistErrorKind,
}

/// What is wrong with a hostlist expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostlistErrorKind {
    #[error("range `{range}` runs backwards ({lo} > {hi}); write it low to high: `{hi}-{lo}`")]
    DescendingRange { range: String, lo: u64, hi: u64 },
    #[error("`{text}` is negative; range bounds are non-negative decimal numbers")]
    NegativeBound { text: String },
    #[error("`{text}` is not a number; range bounds are non-negative decimal numbers")]
    NotANumber { text: String },
    #[error("`{text}` is too large for a range bound")]
    NumberTooLarge { text: String },
    #[error("range `{range}` lacks a bound; write `lo-hi` or a single number")]
    MissingBound { range: String },
    #[error("empty range item (two commas in a row, or a comma next to a bracket)")]
    EmptyItem,
    #[error("empty brackets `[]`")]
    EmptyBrackets,
    #[error("`[` is never closed")]
    UnclosedBracket,
    #[error("`]` has no matching `[`")]
    UnopenedBracket,
    #[error("brackets cannot nest")]
    NestedBracket,
    #[error("expands to more than {limit} names")]
    TooManyHosts { limit: usize },
}

/// One `lo-hi` range inside brackets, `width` being the length of `lo` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    lo: u64,
    hi: u64,
    width: usize,
}

impl Range {
    fn len(&self) -> usize {
        // Bounded by MAX_HOSTS before this is called in earnest; saturate for safety.
        usize::try_from(self.hi - self.lo).map_or(usize::MAX, |n| n.saturating_add(1))
    }
}

/// A piece of one item: literal text or a bracket group.
#[derive(Debug)]
enum Piece<'a> {
    Text(&'a str),
    Group(Vec<Range>),
}

/// Expands a hostlist expression into host names, in order, duplicates kept.
///
/// ```
/// let names = cohort_slurm::expand("rack[1-2]-n[01-02]").unwrap();
/// assert_eq!(names, ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]);
/// ```
pub fn expand(expr: &str) -> Result<Vec<String>, HostlistError> {
    let fail = |position: usize, kind: HostlistErrorKind| HostlistError {
        expr: expr.to_owned(),
        position,
        kind,
    };
    let mut names = Vec::new();
    for (start, item) in split_items(expr).map_err(|(pos, kind)| fail(pos, kind))? {
        let pieces = parse_item(item, start).map_err(|(pos, kind)| fail(pos, kind))?;
        let count = pieces.iter().try_fold(1usize, |acc, piece| match piece {
            Piece::Text(_) => Some(acc),
            Piece::Group(ranges) => {
                let n = ranges
                    .iter()
                    .try_fold(0usize, |n, r| n.checked_add(r.len()))?;
                acc.checked_mul(n)
            }
        });
        match count {
            Some(n) if names.len() + n <= MAX_HOSTS => {}
            _ => {
                return Err(fail(
                    start,
                    HostlistErrorKind::TooManyHosts { limit: MAX_HOSTS },
                ))
            }
        }
        push_product(&pieces, &mut names);
    }
    Ok(names)
}

/// Splits an expression into its items with their byte offsets, checking brackets.
fn split_items(expr: &str) -> Result<Vec<(usize, &str)>, (usize, HostlistErrorKind)> {
    let bytes = expr.as_bytes();
    let mut items = Vec::new();
    let mut open: Option<usize> = None;
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'[' if open.is_some() => return Err((i, HostlistErrorKind::NestedBracket)),
            b'[' => open = Some(i),
            b']' if open.is_none() => return Err((i, HostlistErrorKind::UnopenedBracket)),
            b']' => open = None,
            c if open.is_none() && is_separator(c) => {
                if i > start {
                    items.push((start, &expr[start..i]));
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if let Some(at) = open {
        return Err((at, HostlistErrorKind::UnclosedBracket));
    }
    if start < expr.len() {
        items.push((start, &expr[start..]));
    }
    Ok(items)
}

/// Parses one item (balanced brackets, no separators outside them) into pieces.
fn parse_item(item: &str, offset: usize) -> Result<Vec<Piece<'_>>, (usize, HostlistErrorKind)> {
    let mut pieces = Vec::new();
    let mut rest = item;
    let mut at = offset;
    while let Some(open) = rest.find('[') {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        // split_items guarantees a matching `]` after every `[`.
        let close = rest[open..].find(']').map_or(rest.len(), |c| open + c);
        let inner = &rest[open + 1..close];
        if inner.is_empty() {
            return Err((at + open, HostlistErrorKind::EmptyBrackets));
        }
        pieces.push(Piece::Group(parse_ranges(inner, at + open + 1)?));
        at += close + 1;
        rest = &rest[(close + 1).min(rest.len())..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// Parses the inside of one bracket group: `1-3,5,010-012`.
fn parse_ranges(inner: &str, offset: usize) -> Result<Vec<Range>, (usize, HostlistErrorKind)> {
    let mut ranges = Vec::new();
    let mut at = offset;
    for part in inner.split(',') {
        ranges.push(parse_range(part, at)?);
        at += part.len() + 1;
    }
    Ok(ranges)
}

fn parse_range(part: &str, at: usize) -> Result<Range, (usize, HostlistErrorKind)> {
    if part.is_empty() {
        return Err((at, HostlistErrorKind::EmptyItem));
    }
    if part.starts_with('-') {
        let text = part.to_owned();
        return Err((at, HostlistErrorKind::NegativeBound { text }));
    }
    let (lo_text, hi_text) = match part.split_once('-') {
        Some((lo, hi)) => (lo, Some(hi)),
        None => (part, None),
    };
    let lo = parse_bound(lo_text, at)?;
    let hi = match hi_text {
        None => lo,
        Some("") => {
            let range = part.to_owned();
            return Err((at, HostlistErrorKind::MissingBound { range }));
        }
        Some(hi) if hi.starts_with('-') => {
            let text = hi.to_owned();
            return Err((
                at + lo_text.len() + 1,
                HostlistErrorKind::NegativeBound { text },
            ));
        }
        Some(hi) => parse_bound(hi, at + lo_text.len() + 1)?,
    };
    if lo > hi {
        let range = part.to_owned();
        return Err((at, HostlistErrorKind::DescendingRange { range, lo, hi }));
    }
    Ok(Range {
        lo,
        hi,
        width: lo_text.len(),
    })
}

fn parse_bound(text: &str, at: usize) -> Result<u64, (usize, HostlistErrorKind)> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        let text = text.to_owned();
        return Err((at, HostlistErrorKind::NotANumber { text }));
    }
    text.parse().map_err(|_| {
        (
            at,
            HostlistErrorKind::NumberTooLarge {
                text: text.to_owned(),
            },
        )
    })
}

/// Appends every name of the Cartesian product of `pieces`, in Slurm's order: the last
/// group varies fastest, then the first, the second, … and the last-but-one slowest
/// (Slurm peels groups off the end of the name recursively). With two groups that is
/// simply "first group outermost".
fn push_product(pieces: &[Piece<'_>], out: &mut Vec<String>) {
    let groups: Vec<usize> = (0..pieces.len())
        .filter(|&i| matches!(pieces[i], Piece::Group(_)))
        .collect();
    // Slowest-varying first.
    let order: Vec<usize> = match groups.split_last() {
        Some((&last, rest)) => rest.iter().rev().copied().chain([last]).collect(),
        None => Vec::new(),
    };
    let mut chosen: Vec<(u64, usize)> = vec![(0, 0); pieces.len()];
    fill(pieces, &order, &mut chosen, out);
}

fn fill(pieces: &[Piece<'_>], order: &[usize], chosen: &mut [(u64, usize)], out: &mut Vec<String>) {
    use fmt::Write;
    let Some((&at, rest)) = order.split_first() else {
        let mut name = String::new();
        for (piece, &(n, width)) in pieces.iter().zip(chosen.iter()) {
            match piece {
                Piece::Text(text) => name.push_str(text),
                // Writing into a String cannot fail.
                Piece::Group(_) => drop(write!(name, "{n:0width$}")),
            }
        }
        out.push(name);
        return;
    };
    let Piece::Group(ranges) = &pieces[at] else {
        return;
    };
    for range in ranges {
        for n in range.lo..=range.hi {
            chosen[at] = (n, range.width);
            fill(pieces, rest, chosen, out);
        }
    }
}

/// A name split as Slurm splits it for compression: a prefix and a trailing number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run<'a> {
    prefix: &'a str,
    /// `None` for names without a trailing number: they never merge.
    numbered: Option<Numbered>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Numbered {
    lo: u64,
    hi: u64,
    width: usize,
}

/// The largest digit run Slurm reads as a number (`unsigned long` on 64-bit Linux).
const MAX_DIGITS: usize = 18;

fn split_name(name: &str) -> Run<'_> {
    let digits = name.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (prefix, number) = name.split_at(name.len() - digits);
    let numbered = match number.parse::<u64>() {
        Ok(n) if digits <= MAX_DIGITS => Some(Numbered {
            lo: n,
            hi: n,
            width: digits,
        }),
        _ => None,
    };
    match numbered {
        Some(_) => Run { prefix, numbered },
        None => Run {
            prefix: name,
            numbered: None,
        },
    }
}

/// How many leading zeros `n` gets when printed with `width`.
fn zero_pad(n: u64, width: usize) -> usize {
    let digits = n.checked_ilog10().map_or(1, |d| d as usize + 1);
    width.saturating_sub(digits)
}

/// Slurm's rule for whether a range of `a.width` may continue with a number written with
/// `b.width`: equal widths, or widths that print both numbers the same way (`n9`,`n10`).
/// Returns the width the merged range keeps.
fn combined_width(a: Numbered, b: Numbered) -> Option<usize> {
    if a.width == b.width {
        return Some(a.width);
    }
    let a_same = zero_pad(a.lo, a.width) == zero_pad(a.lo, b.width);
    let b_same = zero_pad(b.lo, b.width) == zero_pad(b.lo, a.width);
    match (a_same, b_same) {
        (false, false) => None,
        (false, true) => Some(a.width),
        (true, _) => Some(b.width),
    }
}

/// Compresses host names into a hostlist expression, preserving order, like
/// `scontrol show hostlist`.
///
/// ```
/// let list = cohort_slurm::compress(&["n1", "n2", "n3", "n5", "m1", "n010"]);
/// assert_eq!(list, "n[1-3,5],m1,n010");
/// ```
pub fn compress<S: AsRef<str>>(names: &[S]) -> String {
    let mut runs: Vec<Run<'_>> = Vec::new();
    for name in names {
        let next = split_name(name.as_ref());
        if let (Some(last), Some(b)) = (runs.last_mut(), next.numbered) {
            if let Some(a) = last
                .numbered
                .as_mut()
                .filter(|_| last.prefix == next.prefix)
            {
                if a.hi.checked_add(1) == Some(b.lo) {
                    if let Some(width) = combined_width(*a, b) {
                        a.hi = b.hi;
                        a.width = width;
                        continue;
                    }
                }
            }
        }
        runs.push(next);
    }
    render_runs(&runs)
}

fn render_runs(runs: &[Run<'_>]) -> String {
    use fmt::Write;
    let mut out = String::new();
    let mut i = 0;
    while i < runs.len() {
        if !out.is_empty() {
            out.push(',');
        }
        let run = &runs[i];
        let Some(first) = run.numbered else {
            out.push_str(run.prefix);
            i += 1;
            continue;
        };
        // Consecutive numbered runs with the same prefix share one bracket.
        let group_end = runs[i..]
            .iter()
            .position(|r| r.numbered.is_none() || r.prefix != run.prefix)
            .map_or(runs.len(), |p| i + p);
        let group = &runs[i..group_end];
        out.push_str(run.prefix);
        if group.len() == 1 && first.lo == first.hi {
            let _ = write!(out, "{:0w$}", first.lo, w = first.width);
        } else {
            out.push('[');
            for (k, r) in group.iter().filter_map(|r| r.numbered).enumerate() {
                if k > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{:0w$}", r.lo, w = r.width);
                if r.hi > r.lo {
                    let _ = write!(out, "-{:0w$}", r.hi, w = r.width);
                }
            }
            out.push(']');
        }
        i = group_end;
    }
    out
}

#[cfg(test)]
mod tests;
