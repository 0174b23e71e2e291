//! The replay request: what an engine still buffers from a given sequence number.
//!
//! vLLM (`vllm/distributed/kv_events.py`, `ZmqEventPublisher._service_replay`) and
//! SGLang (the same publisher, copied) bind a ROUTER socket. A client (DEALER) sends
//! `[b"", start_seq (u64 BE)]`; the engine answers, for each buffered message with
//! `seq >= start_seq` in order, `[b"", seq (u64 BE), payload]` (vLLM) or
//! `[b"", topic, seq, payload]` (SGLang), then the end marker: the same shape with
//! `seq` = -1 (all bits set) and an empty payload. The buffer holds the last
//! `buffer_steps` messages (vLLM default 10,000).

use std::time::Duration;

use bytes::Bytes;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

/// The end marker's sequence number: -1 as 8 bytes big-endian.
const END_SEQ: u64 = u64::MAX;

/// Why a replay request failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No complete answer within the time limit (engine down, or not answering).
    #[error("no complete replay answer from `{endpoint}` within {timeout:?}")]
    Timeout {
        /// The replay endpoint.
        endpoint: String,
        /// The limit.
        timeout: Duration,
    },
    /// The socket failed.
    #[error("replay request to `{endpoint}` failed")]
    Zmq {
        /// The replay endpoint.
        endpoint: String,
        /// The ZMQ error.
        #[source]
        source: zeromq::ZmqError,
    },
    /// An answer that is not `[b"", (topic,) seq, payload]`.
    #[error("malformed replay answer from `{endpoint}`: {what}")]
    Protocol {
        /// The replay endpoint.
        endpoint: String,
        /// What was wrong.
        what: String,
    },
    /// The request's task ended abnormally (the ZMQ crate panics when a DEALER's peer
    /// disconnects mid-answer; the task contains it).
    #[error("replay request to `{endpoint}` aborted: the engine disconnected mid-answer")]
    Aborted {
        /// The replay endpoint.
        endpoint: String,
    },
}

/// Asks `endpoint` for its buffered messages from `start` on: `(seq, payload)` in
/// order. Runs in its own task, awaited here, so that a panic inside the ZMQ crate
/// (see [`ReplayError::Aborted`]) cannot take the subscriber down; the task is
/// aborted and awaited when the limit passes.
pub(crate) async fn request(
    endpoint: &str,
    start: u64,
    timeout: Duration,
) -> Result<Vec<(u64, Bytes)>, ReplayError> {
    let owned = endpoint.to_owned();
    let mut task = tokio::spawn(async move { exchange(&owned, start).await });
    match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok(result)) => result,
        Ok(Err(_join)) => Err(ReplayError::Aborted {
            endpoint: endpoint.to_owned(),
        }),
        Err(_elapsed) => {
            task.abort();
            let _ = task.await;
            Err(ReplayError::Timeout {
                endpoint: endpoint.to_owned(),
                timeout,
            })
        }
    }
}

async fn exchange(endpoint: &str, start: u64) -> Result<Vec<(u64, Bytes)>, ReplayError> {
    let zmq = |source| ReplayError::Zmq {
        endpoint: endpoint.to_owned(),
        source,
    };
    let protocol = |what: String| ReplayError::Protocol {
        endpoint: endpoint.to_owned(),
        what,
    };
    let mut socket = DealerSocket::new();
    socket.connect(endpoint).await.map_err(zmq)?;
    let request = ZmqMessage::try_from(vec![
        Bytes::new(),
        Bytes::copy_from_slice(&start.to_be_bytes()),
    ])
    .expect("two frames");
    socket.send(request).await.map_err(zmq)?;
    let mut out = Vec::new();
    loop {
        let parts = socket.recv().await.map_err(zmq)?.into_vec();
        // [b"", seq, payload] or [b"", topic, seq, payload].
        let (seq, payload) = match parts.as_slice() {
            [delim, seq, payload] | [delim, _, seq, payload] if delim.is_empty() => {
                let seq: [u8; 8] = seq[..].try_into().map_err(|_| {
                    protocol(format!("the sequence part is 8 bytes; given {}", seq.len()))
                })?;
                (u64::from_be_bytes(seq), payload.clone())
            }
            _ => {
                return Err(protocol(format!(
                    "expected [b\"\", (topic,) seq, payload]; given {} parts",
                    parts.len()
                )))
            }
        };
        if seq == END_SEQ {
            return Ok(out);
        }
        out.push((seq, payload));
    }
}
