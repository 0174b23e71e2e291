//! Prefill→decode handshakes: one small trait, one file per engine family.
//!
//! [`Handshake::prefill`] runs (or starts) the prefill half on a prefill worker and says
//! what the decode request must carry. Choosing the workers, and falling back to local
//! prefill, is the caller's job (`generate.rs`).

mod sglang;
mod vllm;

pub use sglang::Sglang;
pub use vllm::Vllm;

use crate::openai::{CompletionRequest, KvTransferParams};
use crate::registry::Worker;
use crate::settings::HandshakeKind;
use crate::upstream::{Client, UpstreamError};
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
    /// A random number (SGLang's bootstrap room).
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
}

/// The prefill half's result.
#[derive(Debug)]
pub struct Prefilled {
    /// For the decode request.
    pub decode: DecodeSide,
    /// A prefill request still running alongside the decode one (SGLang); aborted when
    /// dropped.
    pub pending: Option<AbortOnDrop>,
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
    /// `vllm`, `sglang`.
    fn name(&self) -> &'static str;
    /// Runs or starts the prefill half on `ctx.worker`.
    fn prefill<'a>(
        &'a self,
        ctx: PrefillCtx<'a>,
    ) -> BoxFuture<'a, Result<Prefilled, UpstreamError>>;
}

/// The handshake for `kind`.
pub fn build(kind: HandshakeKind) -> Arc<dyn Handshake> {
    match kind {
        HandshakeKind::Vllm => Arc::new(Vllm),
        HandshakeKind::Sglang => Arc::new(Sglang),
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
    }
}
