//! Decoders of engines' KV event streams into [`EngineEvent`]s.
//!
//! vLLM and SGLang publish the same framing (SGLang copied vLLM's publisher): a ZMQ
//! multipart message `[topic, sequence (u64 big-endian), payload]` whose payload is the
//! msgpack array `[timestamp, [events…], dp_rank]`. Events are msgspec structs with
//! `tag=True`: current versions encode them as maps with a `"type"` key, older ones
//! (`array_like=True`) as arrays whose first element is the tag. Both are accepted; the
//! [`Dialect`] only gives the field order of the array form.

mod fields;
mod sglang;
mod vllm;

pub use sglang::SGLANG_SOURCE_VERSION;
pub use vllm::VLLM_SOURCE_VERSION;

use crate::event::EngineEvent;
use crate::msgpack::{Head, MsgpackError, Reader};

/// Whose event stream a frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// vLLM's `vllm/distributed/kv_events.py`.
    Vllm,
    /// SGLang's `sglang/srt/disaggregation/kv_events.py`.
    Sglang,
}

impl Dialect {
    /// Field names of `BlockStored` in declaration order (the array form's order).
    fn block_stored_fields(self) -> &'static [&'static str] {
        match self {
            Dialect::Vllm => vllm::BLOCK_STORED_FIELDS,
            Dialect::Sglang => sglang::BLOCK_STORED_FIELDS,
        }
    }
}

/// One decoded message of an engine's event stream.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFrame {
    /// The ZMQ topic (often empty).
    pub topic: Vec<u8>,
    /// The publisher's sequence number: consecutive messages have consecutive numbers.
    pub seq: u64,
    /// The payload.
    pub payload: Payload,
}

/// The msgpack payload of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// When the events were published, Unix seconds.
    pub ts: f64,
    /// The events, in order.
    pub events: Vec<EngineEvent>,
    /// The data-parallel rank the events come from (vLLM `dp_rank`, SGLang
    /// `attn_dp_rank`); `None` when absent or nil.
    pub dp_rank: Option<i64>,
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not `[topic, sequence, payload]`.
    #[error("a KV event message has 3 parts (topic, sequence, payload); given {0}")]
    Parts(usize),
    /// The sequence part is not 8 bytes.
    #[error("the sequence part of a KV event message is 8 bytes (u64 big-endian); given {0}")]
    SeqLength(usize),
    /// The payload is not valid MessagePack.
    #[error("the payload is not valid msgpack")]
    Msgpack(#[source] MsgpackError),
    /// Valid MessagePack, but not the expected shape.
    #[error("`{path}`: expected {expected}, found {found}")]
    Shape {
        /// Where, e.g. `events[2].token_ids[5]`.
        path: String,
        /// What was expected.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// A required field is absent.
    #[error("`events[{event}]` (`{type_name}`) lacks the required field `{field}`")]
    Missing {
        /// Index of the event in the payload.
        event: usize,
        /// Its tag.
        type_name: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// Bytes after the payload's value.
    #[error("{0} bytes follow the payload's msgpack value")]
    Trailing(usize),
}

impl From<MsgpackError> for DecodeError {
    fn from(e: MsgpackError) -> Self {
        DecodeError::Msgpack(e)
    }
}

/// Decodes one multipart message `[topic, sequence, payload]`.
pub fn decode_message(parts: &[&[u8]], dialect: Dialect) -> Result<EventFrame, DecodeError> {
    let [topic, seq, payload] = parts else {
        return Err(DecodeError::Parts(parts.len()));
    };
    let seq: [u8; 8] = (*seq)
        .try_into()
        .map_err(|_| DecodeError::SeqLength(seq.len()))?;
    Ok(EventFrame {
        topic: topic.to_vec(),
        seq: u64::from_be_bytes(seq),
        payload: decode_payload(payload, dialect)?,
    })
}

/// Decodes a msgpack payload `[timestamp, [events…], dp_rank]` (`dp_rank` optional).
pub fn decode_payload(payload: &[u8], dialect: Dialect) -> Result<Payload, DecodeError> {
    let mut r = Reader::new(payload);
    let n = match r.head()? {
        Head::Array(n @ 2..=3) => n,
        other => {
            return Err(fields::shape(
                "payload",
                "an array of 2 or 3 elements",
                other,
            ))
        }
    };
    let ts = match r.head()? {
        Head::Float(f) => f,
        Head::Uint(u) => u as f64,
        Head::Int(i) => i as f64,
        other => return Err(fields::shape("payload[0] (timestamp)", "a number", other)),
    };
    let count = match r.head()? {
        Head::Array(n) => n,
        other => return Err(fields::shape("payload[1] (events)", "an array", other)),
    };
    let mut events = Vec::with_capacity(r.capacity_for(count, 1));
    for i in 0..count as usize {
        events.push(fields::event(&mut r, i, dialect)?);
    }
    let dp_rank = if n == 3 {
        match r.head()? {
            Head::Nil => None,
            Head::Uint(u) => Some(i64::try_from(u).unwrap_or(i64::MAX)),
            Head::Int(i) => Some(i),
            other => {
                return Err(fields::shape(
                    "payload[2] (dp_rank)",
                    "an integer or nil",
                    other,
                ))
            }
        }
    } else {
        None
    };
    if r.remaining() > 0 {
        return Err(DecodeError::Trailing(r.remaining()));
    }
    Ok(Payload {
        ts,
        events,
        dp_rank,
    })
}
