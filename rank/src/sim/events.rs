//! KV events in vLLM's wire format, published on a ZMQ PUB socket.
//!
//! Each message is multipart `[topic, sequence (u64 big-endian), payload]`, the payload
//! the msgpack array `[timestamp, [events…], dp_rank]`, each event a map with a `type`:
//! `BlockStored` (`block_hashes`, `parent_block_hash`, `token_ids`, `block_size`,
//! `lora_id`, `medium`, `lora_name`), `BlockRemoved` (`block_hashes`, `medium`) or
//! `AllBlocksCleared` — what vLLM 0.32's `ZmqEventPublisher` sends. The topic is empty,
//! vLLM's default. One message per engine step that changed the cache.

use super::blocks::KvEvent;
use super::SimError;
use bytes::Bytes;
use tokio::sync::mpsc;
use zeromq::{Socket, SocketSend, ZmqMessage};

/// Encodes one payload `[ts, [events…], dp_rank]`.
pub fn encode_payload(ts: f64, events: &[KvEvent], block_size: u32, dp_rank: u32) -> Vec<u8> {
    use rmp::encode::*;
    let mut w = Vec::with_capacity(64 + events.len() * 64);
    // Writing to a Vec cannot fail.
    let _ = write_array_len(&mut w, 3);
    let _ = write_f64(&mut w, ts);
    let _ = write_array_len(&mut w, events.len() as u32);
    for e in events {
        match e {
            KvEvent::Stored {
                hashes,
                parent,
                tokens,
            } => {
                let _ = write_map_len(&mut w, 8);
                let _ = write_str(&mut w, "type");
                let _ = write_str(&mut w, "BlockStored");
                let _ = write_str(&mut w, "block_hashes");
                let _ = write_array_len(&mut w, hashes.len() as u32);
                for h in hashes {
                    let _ = write_uint(&mut w, *h);
                }
                let _ = write_str(&mut w, "parent_block_hash");
                match parent {
                    Some(p) => drop(write_uint(&mut w, *p)),
                    None => drop(write_nil(&mut w)),
                }
                let _ = write_str(&mut w, "token_ids");
                let _ = write_array_len(&mut w, tokens.len() as u32);
                for t in tokens {
                    let _ = write_uint(&mut w, *t as u64);
                }
                let _ = write_str(&mut w, "block_size");
                let _ = write_uint(&mut w, block_size as u64);
                let _ = write_str(&mut w, "lora_id");
                let _ = write_nil(&mut w);
                let _ = write_str(&mut w, "medium");
                let _ = write_str(&mut w, "GPU");
                let _ = write_str(&mut w, "lora_name");
                let _ = write_nil(&mut w);
            }
            KvEvent::Removed { hashes } => {
                let _ = write_map_len(&mut w, 3);
                let _ = write_str(&mut w, "type");
                let _ = write_str(&mut w, "BlockRemoved");
                let _ = write_str(&mut w, "block_hashes");
                let _ = write_array_len(&mut w, hashes.len() as u32);
                for h in hashes {
                    let _ = write_uint(&mut w, *h);
                }
                let _ = write_str(&mut w, "medium");
                let _ = write_str(&mut w, "GPU");
            }
            KvEvent::AllCleared => {
                let _ = write_map_len(&mut w, 1);
                let _ = write_str(&mut w, "type");
                let _ = write_str(&mut w, "AllBlocksCleared");
            }
        }
    }
    let _ = write_uint(&mut w, dp_rank as u64);
    w
}

/// The three parts of message number `seq`.
pub fn encode_message(seq: u64, payload: Vec<u8>) -> [Bytes; 3] {
    [
        Bytes::new(),
        Bytes::copy_from_slice(&seq.to_be_bytes()),
        Bytes::from(payload),
    ]
}

/// A bound PUB socket, ready to publish.
pub(crate) struct Publisher {
    socket: zeromq::PubSocket,
    port: u16,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("port", &self.port)
            .finish()
    }
}

impl Publisher {
    /// Binds `tcp://host:port` (port 0: any free port).
    pub(crate) async fn bind(host: &str, port: u16) -> Result<Publisher, SimError> {
        let mut socket = zeromq::PubSocket::new();
        let endpoint = format!("tcp://{host}:{port}");
        let bound = socket
            .bind(&endpoint)
            .await
            .map_err(|e| SimError::KvEvents {
                endpoint: endpoint.clone(),
                message: e.to_string(),
            })?;
        let port = match bound {
            zeromq::Endpoint::Tcp(_, p) => p,
            _ => port,
        };
        Ok(Publisher { socket, port })
    }

    /// The bound port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Publishes every batch of events received until the channel closes.
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Vec<KvEvent>>,
        block_size: u32,
    ) {
        let mut seq = 0u64;
        while let Some(events) = rx.recv().await {
            if events.is_empty() {
                continue;
            }
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let parts = encode_message(seq, encode_payload(ts, &events, block_size, 0));
            let Ok(msg) = ZmqMessage::try_from(parts.to_vec()) else {
                continue;
            };
            // A PUB socket drops messages for slow subscribers; a send error only means
            // no peer could take it.
            let _ = self.socket.send(msg).await;
            seq += 1;
        }
    }
}
