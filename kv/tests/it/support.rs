//! Shared fixtures: the captured vLLM frames, a tiny msgpack writer, JSON views.

use cohort_kv::event::{BlockRemovedEvent, BlockStoredEvent};
use cohort_kv::msgpack::Value;
use cohort_kv::EngineEvent;
use serde_json::{json, Map, Value as Json};

/// Real frames captured from vLLM 0.32 (a copy of the project's shared capture, kept in
/// the repository so the tests need nothing outside it; see its README).
pub(crate) const FRAMES_DIR: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/vllm_kv_events");

/// Parts of a captured multipart message: u32 LE count, then (u32 LE length, bytes)*.
pub(crate) fn read_frame_file(bytes: &[u8]) -> Vec<Vec<u8>> {
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let n = u32_at(0);
    let mut at = 4;
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        let len = u32_at(at);
        parts.push(bytes[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    assert_eq!(at, bytes.len(), "trailing bytes in frame file");
    parts
}

/// Every captured frame: (file name, parts), with the expected JSON line.
/// A captured frame: file name, message parts, expected JSON line.
pub(crate) type Frame = (String, Vec<Vec<u8>>, Json);

pub(crate) fn captured_frames() -> Vec<Frame> {
    static FRAMES: std::sync::OnceLock<Vec<Frame>> = std::sync::OnceLock::new();
    FRAMES.get_or_init(load_frames).clone()
}

fn load_frames() -> Vec<Frame> {
    let expected = std::fs::read_to_string(format!("{FRAMES_DIR}/expected.jsonl")).unwrap();
    expected
        .lines()
        .map(|line| {
            let want: Json = serde_json::from_str(line).unwrap();
            let file = want["file"].as_str().unwrap().to_owned();
            let bytes = std::fs::read(format!("{FRAMES_DIR}/{file}")).unwrap();
            (file, read_frame_file(&bytes), want)
        })
        .collect()
}

pub(crate) fn value_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Uint(u) => json!(u),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Str(s) => json!(s),
        Value::Bin(b) => json!(b),
        Value::Array(a) => Json::Array(a.iter().map(value_json).collect()),
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| match k {
                    Value::Str(s) => (s.clone(), value_json(v)),
                    other => (format!("{other:?}"), value_json(v)),
                })
                .collect(),
        ),
        Value::Ext(t, b) => json!({"ext": t, "data": b}),
    }
}

/// The JSON the reference decoder (msgpack → Python → json) gives for an event.
pub(crate) fn event_json(e: &EngineEvent) -> Json {
    let mut m = Map::new();
    match e {
        EngineEvent::BlockStored(BlockStoredEvent {
            block_hashes,
            parent_block_hash,
            token_ids,
            block_size,
            lora_id,
            medium,
            lora_name,
            cache_salt,
            other,
        }) => {
            m.insert("type".into(), json!("BlockStored"));
            m.insert(
                "block_hashes".into(),
                json!(block_hashes.iter().map(|h| h.0).collect::<Vec<_>>()),
            );
            m.insert(
                "parent_block_hash".into(),
                json!(parent_block_hash.map(|h| h.0)),
            );
            m.insert("token_ids".into(), json!(token_ids));
            m.insert("block_size".into(), json!(block_size));
            m.insert("lora_id".into(), json!(lora_id));
            m.insert("medium".into(), json!(medium));
            m.insert("lora_name".into(), json!(lora_name));
            if let Some(s) = cache_salt {
                m.insert("cache_salt".into(), json!(s));
            }
            for (k, v) in other {
                m.insert(k.clone(), value_json(v));
            }
        }
        EngineEvent::BlockRemoved(BlockRemovedEvent {
            block_hashes,
            medium,
            other,
        }) => {
            m.insert("type".into(), json!("BlockRemoved"));
            m.insert(
                "block_hashes".into(),
                json!(block_hashes.iter().map(|h| h.0).collect::<Vec<_>>()),
            );
            m.insert("medium".into(), json!(medium));
            for (k, v) in other {
                m.insert(k.clone(), value_json(v));
            }
        }
        EngineEvent::AllBlocksCleared => {
            m.insert("type".into(), json!("AllBlocksCleared"));
        }
        EngineEvent::Unknown { type_name } => {
            m.insert("type".into(), json!(type_name));
        }
    }
    Json::Object(m)
}

/// A minimal msgpack writer for building test frames.
#[derive(Default)]
pub(crate) struct Mp(pub(crate) Vec<u8>);

impl Mp {
    pub(crate) fn arr(&mut self, n: u32) -> &mut Self {
        if n < 16 {
            self.0.push(0x90 | n as u8);
        } else {
            self.0.push(0xdd);
            self.0.extend_from_slice(&n.to_be_bytes());
        }
        self
    }
    pub(crate) fn map(&mut self, n: u32) -> &mut Self {
        if n < 16 {
            self.0.push(0x80 | n as u8);
        } else {
            self.0.push(0xdf);
            self.0.extend_from_slice(&n.to_be_bytes());
        }
        self
    }
    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(0xdb);
        self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub(crate) fn bin(&mut self, b: &[u8]) -> &mut Self {
        self.0.push(0xc6);
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }
    pub(crate) fn uint(&mut self, u: u64) -> &mut Self {
        self.0.push(0xcf);
        self.0.extend_from_slice(&u.to_be_bytes());
        self
    }
    pub(crate) fn int(&mut self, i: i64) -> &mut Self {
        self.0.push(0xd3);
        self.0.extend_from_slice(&i.to_be_bytes());
        self
    }
    pub(crate) fn f64(&mut self, f: f64) -> &mut Self {
        self.0.push(0xcb);
        self.0.extend_from_slice(&f.to_be_bytes());
        self
    }
    pub(crate) fn nil(&mut self) -> &mut Self {
        self.0.push(0xc0);
        self
    }
}
