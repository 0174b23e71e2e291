//! Prefill→decode handshakes: one small trait, one file per engine family.
//!
//! [`Handshake::prefill`] runs (or starts) the prefill half on a prefill worker and says
//! what the decode request must carry; [`Handshake::decode_body`] writes that request.
//! Choosing the workers, and falling back to local prefill, is the caller's job
//! (`generate.rs`).

mod sglang;
mod trtllm;
mod vllm;

pub use sglang::Sglang;
pub use trtllm::Trtllm;
pub use vllm::Vllm;

use crate::openai::{CompletionRequest, KvTransferParams};
use crate::registry::Worker;
use crate::settings::HandshakeKind;
use crate::upstream::{Client, UpEvent, UpstreamError};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What a handshake needs.
#[derive(Debug)]
pub struct PrefillCtx<'a> {
    /// The client to engines.
    pub client: &'a Client,
    /// The prefill worker.
    pub worker: &'a Arc<Worker>,
    /// The decode request as it would be sent without disaggregation (prompt as ids).
    pub request: &'a CompletionRequest,
    /// Response-head timeout.
    pub timeout: Duration,
    /// A random number (SGLang's bootstrap room, TensorRT-LLM's `disagg_request_id`).
    pub rand: u64,
}

/// What the decode request must carry.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeSide {
    /// vLLM: the prefill answer's `kv_transfer_params`, as they are.
    KvTransfer(KvTransferParams),
    /// SGLang: where the prefill side waits for the decode side.
    Bootstrap {
        /// The prefill worker's host.
        host: String,
        /// Its bootstrap port.
        port: Option<u16>,
        /// The rendezvous id shared by both requests.
        room: u64,
    },
    /// TensorRT-LLM: the context server's `disaggregated_params`, as received but for
    /// `request_type: "generation_only"` and the frontend's `disagg_request_id`.
    Disaggregated {
        /// The generation request's `disaggregated_params`.
        params: serde_json::Map<String, serde_json::Value>,
        /// The prompt as the context server prefilled it (its `prompt_token_ids`), which
        /// replaces the request's; `None` when it did not say.
        prompt: Option<Vec<u32>>,
    },
}

/// The prefill half's result.
#[derive(Debug)]
pub enum Prefilled {
    /// The decode request goes ahead.
    Decode {
        /// What it must carry.
        decode: DecodeSide,
        /// A prefill request still running alongside the decode one (SGLang); aborted
        /// when dropped.
        pending: Option<AbortOnDrop>,
    },
    /// The prefill side finished the request itself (TensorRT-LLM: its first token ended
    /// it, and no KV cache waits for a decode side): these events are the whole answer,
    /// and no decode request is sent.
    Answered(Vec<UpEvent>),
}

/// A task aborted when this is dropped: the owner of a side request.
#[derive(Debug)]
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A boxed future (the trait is used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An engine family's prefill→decode handshake.
pub trait Handshake: Send + Sync + Debug {
    /// `vllm`, `sglang`, `trtllm`.
    fn name(&self) -> &'static str;
    /// Runs or starts the prefill half on `ctx.worker`.
    fn prefill<'a>(
        &'a self,
        ctx: PrefillCtx<'a>,
    ) -> BoxFuture<'a, Result<Prefilled, UpstreamError>>;
    /// The body of the request to the decode worker: `request` with what the prefill half
    /// said it must carry (`side`; `None` when the decode worker prefills itself).
    fn decode_body(&self, request: &CompletionRequest, side: Option<&DecodeSide>) -> Vec<u8> {
        decode_body(request, side)
    }
}

/// The handshake for `kind`.
pub fn build(kind: HandshakeKind) -> Arc<dyn Handshake> {
    match kind {
        HandshakeKind::Vllm => Arc::new(Vllm),
        HandshakeKind::Sglang => Arc::new(Sglang),
        HandshakeKind::Trtllm => Arc::new(Trtllm),
    }
}

/// The decode request's body: `request` with the handshake's fields added.
pub fn decode_body(request: &CompletionRequest, side: Option<&DecodeSide>) -> Vec<u8> {
    match side {
        None => serde_json::to_vec(request).unwrap_or_default(),
        Some(DecodeSide::KvTransfer(p)) => {
            let mut r = request.clone();
            r.kv_transfer_params = Some(p.clone());
            serde_json::to_vec(&r).unwrap_or_default()
        }
        Some(DecodeSide::Bootstrap { host, port, room }) => {
            sglang::with_bootstrap(request, host, *port, *room)
        }
        Some(DecodeSide::Disaggregated { params, prompt }) => {
            trtllm::generation_body(request, params, prompt.as_deref())
        }
    }
}
