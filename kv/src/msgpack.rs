//! A minimal, allocation-aware MessagePack reader for untrusted input.
//!
//! Only what the event decoders need: read a value's header, skip a value, or copy it
//! into an owned [`Value`]. Every read is bounds-checked, nesting is limited to
//! [`MAX_DEPTH`], and no length taken from the input reserves more memory than the input
//! could fill, so arbitrary bytes give an error, never a panic or an allocation bomb.

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// Why bytes are not the MessagePack expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgpackError {
    /// The input ended inside a value.
    #[error("msgpack ends at byte {at} inside a value that needs {needed} more bytes")]
    Truncated {
        /// Offset where the value's missing part starts.
        at: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// Byte 0xc1, never valid.
    #[error("msgpack byte {at}: invalid marker 0xc1")]
    InvalidMarker {
        /// Offset of the marker.
        at: usize,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("msgpack byte {at}: nested deeper than {MAX_DEPTH}")]
    TooDeep {
        /// Offset of the value that went too deep.
        at: usize,
    },
}

/// The header of one value; containers give their element count, strings their bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Head<'a> {
    /// `nil`.
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// A non-negative integer.
    Uint(u64),
    /// A negative integer.
    Int(i64),
    /// A float (32-bit ones widened).
    Float(f64),
    /// A string's raw bytes (UTF-8 not checked here).
    Str(&'a [u8]),
    /// Binary data.
    Bin(&'a [u8]),
    /// An array of this many values (which follow).
    Array(u32),
    /// A map of this many key/value pairs (which follow).
    Map(u32),
    /// An extension value.
    Ext(i8, &'a [u8]),
}

/// An owned MessagePack value, kept for keys a decoder does not interpret.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `nil`.
    Nil,
    /// A boolean.
    Bool(bool),
    /// A non-negative integer.
    Uint(u64),
    /// A negative integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (lossily decoded if not UTF-8).
    Str(String),
    /// Binary data.
    Bin(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map, in wire order.
    Map(Vec<(Value, Value)>),
    /// An extension value.
    Ext(i8, Vec<u8>),
}

/// A cursor over a MessagePack buffer.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Current offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], MsgpackError> {
        if self.remaining() < n {
            return Err(MsgpackError::Truncated {
                at: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], MsgpackError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn len_bytes(&mut self, n: usize) -> Result<usize, MsgpackError> {
        Ok(match n {
            1 => self.be::<1>()?[0] as usize,
            2 => u16::from_be_bytes(self.be()?) as usize,
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    /// Reads one value's header (for containers, not their elements).
    pub fn head(&mut self) -> Result<Head<'a>, MsgpackError> {
        let at = self.pos;
        let m = self.be::<1>()?[0];
        Ok(match m {
            0x00..=0x7f => Head::Uint(u64::from(m)),
            0x80..=0x8f => Head::Map(u32::from(m & 0x0f)),
            0x90..=0x9f => Head::Array(u32::from(m & 0x0f)),
            0xa0..=0xbf => Head::Str(self.take(usize::from(m & 0x1f))?),
            0xc0 => Head::Nil,
            0xc1 => return Err(MsgpackError::InvalidMarker { at }),
            0xc2 => Head::Bool(false),
            0xc3 => Head::Bool(true),
            0xc4..=0xc6 => {
                let n = self.len_bytes(1 << (m - 0xc4))?;
                Head::Bin(self.take(n)?)
            }
            0xc7..=0xc9 => {
                let n = self.len_bytes(1 << (m - 0xc7))?;
                let t = self.be::<1>()?[0] as i8;
                Head::Ext(t, self.take(n)?)
            }
            0xca => Head::Float(f64::from(f32::from_be_bytes(self.be()?))),
            0xcb => Head::Float(f64::from_be_bytes(self.be()?)),
            0xcc => Head::Uint(u64::from(self.be::<1>()?[0])),
            0xcd => Head::Uint(u64::from(u16::from_be_bytes(self.be()?))),
            0xce => Head::Uint(u64::from(u32::from_be_bytes(self.be()?))),
            0xcf => Head::Uint(u64::from_be_bytes(self.be()?)),
            0xd0 => int(i64::from(self.be::<1>()?[0] as i8)),
            0xd1 => int(i64::from(i16::from_be_bytes(self.be()?))),
            0xd2 => int(i64::from(i32::from_be_bytes(self.be()?))),
            0xd3 => int(i64::from_be_bytes(self.be()?)),
            0xd4..=0xd8 => {
                let t = self.be::<1>()?[0] as i8;
                Head::Ext(t, self.take(1 << (m - 0xd4))?)
            }
            0xd9..=0xdb => {
                let n = self.len_bytes(1 << (m - 0xd9))?;
                Head::Str(self.take(n)?)
            }
            0xdc => Head::Array(u32::from(u16::from_be_bytes(self.be()?))),
            0xdd => Head::Array(u32::from_be_bytes(self.be()?)),
            0xde => Head::Map(u32::from(u16::from_be_bytes(self.be()?))),
            0xdf => Head::Map(u32::from_be_bytes(self.be()?)),
            0xe0..=0xff => Head::Int(i64::from(m as i8)),
        })
    }

    /// Skips one whole value.
    pub fn skip(&mut self) -> Result<(), MsgpackError> {
        // Iterative: a count of values still to skip, so depth costs no stack.
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            match self.head()? {
                Head::Array(n) => pending += u64::from(n),
                Head::Map(n) => pending += 2 * u64::from(n),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads one whole value into an owned [`Value`].
    pub fn value(&mut self) -> Result<Value, MsgpackError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, MsgpackError> {
        if depth > MAX_DEPTH {
            return Err(MsgpackError::TooDeep { at: self.pos });
        }
        Ok(match self.head()? {
            Head::Nil => Value::Nil,
            Head::Bool(b) => Value::Bool(b),
            Head::Uint(u) => Value::Uint(u),
            Head::Int(i) => Value::Int(i),
            Head::Float(f) => Value::Float(f),
            Head::Str(s) => Value::Str(String::from_utf8_lossy(s).into_owned()),
            Head::Bin(b) => Value::Bin(b.to_vec()),
            Head::Ext(t, b) => Value::Ext(t, b.to_vec()),
            Head::Array(n) => {
                let mut v = Vec::with_capacity(self.capacity_for(n, 1));
                for _ in 0..n {
                    v.push(self.value_at(depth + 1)?);
                }
                Value::Array(v)
            }
            Head::Map(n) => {
                let mut v = Vec::with_capacity(self.capacity_for(n, 2));
                for _ in 0..n {
                    let k = self.value_at(depth + 1)?;
                    v.push((k, self.value_at(depth + 1)?));
                }
                Value::Map(v)
            }
        })
    }

    /// A safe preallocation for `n` elements of at least `min_bytes` bytes each: never
    /// more than the rest of the input could hold.
    pub fn capacity_for(&self, n: u32, min_bytes: usize) -> usize {
        (n as usize).min(self.remaining() / min_bytes)
    }
}

fn int(i: i64) -> Head<'static> {
    if i >= 0 {
        Head::Uint(i as u64)
    } else {
        Head::Int(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_integer_width() {
        let cases: &[(&[u8], Head<'_>)] = &[
            (&[0x05], Head::Uint(5)),
            (&[0xff], Head::Int(-1)),
            (&[0xcc, 0xfa], Head::Uint(250)),
            (&[0xcd, 0x01, 0x00], Head::Uint(256)),
            (&[0xce, 0, 1, 0, 0], Head::Uint(65536)),
            (
                &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                Head::Uint(u64::MAX),
            ),
            (&[0xd0, 0x80], Head::Int(-128)),
            (&[0xd0, 0x05], Head::Uint(5)),
            (&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0], Head::Int(i64::MIN)),
        ];
        for (bytes, want) in cases {
            assert_eq!(Reader::new(bytes).head().unwrap(), *want, "{bytes:02x?}");
        }
    }

    #[test]
    fn truncation_and_bad_markers_are_errors() {
        assert!(matches!(
            Reader::new(&[0xcd, 0x01]).head(),
            Err(MsgpackError::Truncated { .. })
        ));
        assert!(matches!(
            Reader::new(&[0xc1]).head(),
            Err(MsgpackError::InvalidMarker { at: 0 })
        ));
        // An array claiming 2^32-1 elements in 5 bytes: an error, no huge allocation.
        assert!(Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff])
            .value()
            .is_err());
        let deep = vec![0x91u8; 10_000];
        assert!(matches!(
            Reader::new(&deep).value(),
            Err(MsgpackError::TooDeep { .. })
        ));
        assert!(Reader::new(&deep).skip().is_err());
    }

    #[test]
    fn skip_consumes_exactly_one_value() {
        // [1, {"a": [nil, true]}, "xy"] then 7
        let bytes = [
            0x93, 0x01, 0x81, 0xa1, b'a', 0x92, 0xc0, 0xc3, 0xa2, b'x', b'y', 0x07,
        ];
        let mut r = Reader::new(&bytes);
        r.skip().unwrap();
        assert_eq!(r.head().unwrap(), Head::Uint(7));
        assert_eq!(r.remaining(), 0);
    }
}
