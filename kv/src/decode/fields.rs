//! Decoding one event, map or array form, field by field.

use xxhash_rust::xxh3::xxh3_64;

use super::{DecodeError, Dialect};
use crate::event::{BlockRemovedEvent, BlockStoredEvent, EngineEvent};
use crate::hash::EngineBlockHash;
use crate::msgpack::{Head, Reader, Value};

const BLOCK_REMOVED_FIELDS: &[&str] = &["block_hashes", "medium"];

pub(super) fn shape(path: &str, expected: &'static str, found: Head<'_>) -> DecodeError {
    let found = match found {
        Head::Nil => "nil".to_owned(),
        Head::Bool(b) => format!("bool {b}"),
        Head::Uint(u) => format!("integer {u}"),
        Head::Int(i) => format!("integer {i}"),
        Head::Float(f) => format!("float {f}"),
        Head::Str(s) => format!(
            "string {:?}",
            String::from_utf8_lossy(&s[..s.len().min(40)])
        ),
        Head::Bin(b) => format!("{} bytes of binary", b.len()),
        Head::Array(n) => format!("an array of {n}"),
        Head::Map(n) => format!("a map of {n}"),
        Head::Ext(t, _) => format!("extension type {t}"),
    };
    DecodeError::Shape {
        path: path.to_owned(),
        expected,
        found,
    }
}

/// Every field an event may carry, as read so far.
#[derive(Default)]
struct Fields {
    block_hashes: Option<Vec<EngineBlockHash>>,
    parent_block_hash: Option<EngineBlockHash>,
    token_ids: Option<Vec<u32>>,
    block_size: Option<u32>,
    lora_id: Option<i64>,
    medium: Option<String>,
    lora_name: Option<String>,
    cache_salt: Option<String>,
    other: Vec<(String, Value)>,
}

pub(super) fn event(
    r: &mut Reader<'_>,
    i: usize,
    dialect: Dialect,
) -> Result<EngineEvent, DecodeError> {
    let mut f = Fields::default();
    let type_name = match r.head()? {
        Head::Map(n) => {
            let mut type_name = None;
            for _ in 0..n {
                let key = match r.head()? {
                    Head::Str(s) => String::from_utf8_lossy(s).into_owned(),
                    other => return Err(shape(&format!("events[{i}] key"), "a string", other)),
                };
                if key == "type" {
                    type_name = Some(string(r, i, "type")?);
                } else {
                    field(r, i, key, &mut f)?;
                }
            }
            type_name.ok_or(DecodeError::Missing {
                event: i,
                type_name: "?",
                field: "type",
            })?
        }
        Head::Array(n) if n >= 1 => {
            let type_name = string(r, i, "0 (tag)")?;
            let names: &[&str] = match type_name.as_str() {
                "BlockStored" => dialect.block_stored_fields(),
                "BlockRemoved" => BLOCK_REMOVED_FIELDS,
                _ => &[],
            };
            for pos in 1..n as usize {
                let key = names
                    .get(pos - 1)
                    .map_or_else(|| format!("_{pos}"), |k| (*k).to_owned());
                field(r, i, key, &mut f)?;
            }
            type_name
        }
        other => {
            return Err(shape(
                &format!("events[{i}]"),
                "a map or a tagged array",
                other,
            ))
        }
    };
    Ok(match type_name.as_str() {
        "BlockStored" => {
            let missing = |field| DecodeError::Missing {
                event: i,
                type_name: "BlockStored",
                field,
            };
            EngineEvent::BlockStored(BlockStoredEvent {
                block_hashes: f.block_hashes.ok_or_else(|| missing("block_hashes"))?,
                parent_block_hash: f.parent_block_hash,
                token_ids: f.token_ids.ok_or_else(|| missing("token_ids"))?,
                block_size: f.block_size.ok_or_else(|| missing("block_size"))?,
                lora_id: f.lora_id,
                medium: f.medium,
                lora_name: f.lora_name,
                cache_salt: f.cache_salt,
                other: f.other,
            })
        }
        "BlockRemoved" => EngineEvent::BlockRemoved(BlockRemovedEvent {
            block_hashes: f.block_hashes.ok_or(DecodeError::Missing {
                event: i,
                type_name: "BlockRemoved",
                field: "block_hashes",
            })?,
            medium: f.medium,
            other: f.other,
        }),
        "AllBlocksCleared" => EngineEvent::AllBlocksCleared,
        _ => EngineEvent::Unknown { type_name },
    })
}

/// Reads the value of field `key` into `f`.
fn field(r: &mut Reader<'_>, i: usize, key: String, f: &mut Fields) -> Result<(), DecodeError> {
    match key.as_str() {
        "block_hashes" => f.block_hashes = Some(hashes(r, i)?),
        "parent_block_hash" => f.parent_block_hash = opt_hash(r, i, "parent_block_hash")?,
        "token_ids" => f.token_ids = Some(tokens(r, i)?),
        "block_size" => match r.head()? {
            Head::Uint(u) if u > 0 && u <= u64::from(u32::MAX) => f.block_size = Some(u as u32),
            other => {
                return Err(shape(
                    &format!("events[{i}].block_size"),
                    "a positive u32",
                    other,
                ))
            }
        },
        "lora_id" => {
            f.lora_id = match r.head()? {
                Head::Nil => None,
                Head::Uint(u) => Some(i64::try_from(u).unwrap_or(i64::MAX)),
                Head::Int(v) => Some(v),
                other => {
                    return Err(shape(
                        &format!("events[{i}].lora_id"),
                        "an integer or nil",
                        other,
                    ))
                }
            }
        }
        "medium" => f.medium = opt_string(r, i, "medium")?,
        "lora_name" => f.lora_name = opt_string(r, i, "lora_name")?,
        "cache_salt" => f.cache_salt = opt_string(r, i, "cache_salt")?,
        _ => {
            let v = r.value()?;
            f.other.push((key, v));
        }
    }
    Ok(())
}

fn string(r: &mut Reader<'_>, i: usize, field: &str) -> Result<String, DecodeError> {
    match r.head()? {
        Head::Str(s) => Ok(String::from_utf8_lossy(s).into_owned()),
        other => Err(shape(&format!("events[{i}].{field}"), "a string", other)),
    }
}

fn opt_string(r: &mut Reader<'_>, i: usize, field: &str) -> Result<Option<String>, DecodeError> {
    match r.head()? {
        Head::Nil => Ok(None),
        Head::Str(s) => Ok(Some(String::from_utf8_lossy(s).into_owned())),
        other => Err(shape(
            &format!("events[{i}].{field}"),
            "a string or nil",
            other,
        )),
    }
}

/// An engine block id from an integer (negative ones as their two's complement), or
/// from bytes (older vLLM): up to 8 bytes as a big-endian integer, longer ones (e.g. a
/// SHA-256 digest) folded with XXH3, which keeps equal ids equal.
fn hash_of(h: Head<'_>) -> Option<EngineBlockHash> {
    match h {
        Head::Uint(u) => Some(EngineBlockHash(u)),
        Head::Int(v) => Some(EngineBlockHash(v as u64)),
        Head::Bin(b) | Head::Str(b) if b.len() <= 8 => Some(EngineBlockHash(
            b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        )),
        Head::Bin(b) | Head::Str(b) => Some(EngineBlockHash(xxh3_64(b))),
        _ => None,
    }
}

fn opt_hash(
    r: &mut Reader<'_>,
    i: usize,
    field: &str,
) -> Result<Option<EngineBlockHash>, DecodeError> {
    match r.head()? {
        Head::Nil => Ok(None),
        other => match hash_of(other) {
            Some(h) => Ok(Some(h)),
            None => Err(shape(
                &format!("events[{i}].{field}"),
                "an integer, bytes or nil",
                other,
            )),
        },
    }
}

fn hashes(r: &mut Reader<'_>, i: usize) -> Result<Vec<EngineBlockHash>, DecodeError> {
    let n = match r.head()? {
        Head::Array(n) => n,
        other => {
            return Err(shape(
                &format!("events[{i}].block_hashes"),
                "an array",
                other,
            ))
        }
    };
    let mut v = Vec::with_capacity(r.capacity_for(n, 1));
    for k in 0..n {
        let h = r.head()?;
        v.push(hash_of(h).ok_or_else(|| {
            shape(
                &format!("events[{i}].block_hashes[{k}]"),
                "an integer or bytes",
                h,
            )
        })?);
    }
    Ok(v)
}

fn tokens(r: &mut Reader<'_>, i: usize) -> Result<Vec<u32>, DecodeError> {
    let n = match r.head()? {
        Head::Array(n) => n,
        other => return Err(shape(&format!("events[{i}].token_ids"), "an array", other)),
    };
    let mut v = Vec::with_capacity(r.capacity_for(n, 1));
    for k in 0..n {
        match r.head()? {
            Head::Uint(u) if u <= u64::from(u32::MAX) => v.push(u as u32),
            other => {
                return Err(shape(
                    &format!("events[{i}].token_ids[{k}]"),
                    "a u32 token id",
                    other,
                ))
            }
        }
    }
    Ok(v)
}
