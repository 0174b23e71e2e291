//! SGLang's handshake: both sides get the same `bootstrap_host` (the prefill worker),
//! `bootstrap_port` and `bootstrap_room` at once; the prefill request runs alongside the
//! decode request, and the engines meet at the bootstrap server to move the KV cache.
//!
//! Checked against a stand-in engine only (router/tests/it): no SGLang in the test
//! environment.

use super::{AbortOnDrop, BoxFuture, DecodeSide, Handshake, PrefillCtx, Prefilled};
use crate::openai::CompletionRequest;
use crate::upstream;

/// The SGLang handshake.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sglang;

/// `request` as JSON with the bootstrap fields added.
pub(crate) fn with_bootstrap(
    request: &CompletionRequest,
    host: &str,
    port: Option<u16>,
    room: u64,
) -> Vec<u8> {
    let mut v = serde_json::to_value(request).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("bootstrap_host".into(), host.into());
        o.insert(
            "bootstrap_port".into(),
            port.map_or(serde_json::Value::Null, Into::into),
        );
        // SGLang takes the room as a non-negative 63-bit integer.
        o.insert("bootstrap_room".into(), (room >> 1).into());
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

impl Handshake for Sglang {
    fn name(&self) -> &'static str {
        "sglang"
    }

    fn prefill<'a>(
        &'a self,
        ctx: PrefillCtx<'a>,
    ) -> BoxFuture<'a, Result<Prefilled, upstream::UpstreamError>> {
        Box::pin(async move {
            let host = ctx.worker.host().to_owned();
            let port = ctx.worker.spec.bootstrap_port;
            let mut r = ctx.request.clone();
            r.stream = false;
            r.stream_options = None;
            let body = with_bootstrap(&r, &host, port, ctx.rand);
            let client = ctx.client.clone();
            let worker = ctx.worker.clone();
            let timeout = ctx.timeout;
            // The prefill answer carries nothing the decode side needs: run it alongside,
            // owned by the decode attempt (aborted with it).
            let task = tokio::spawn(async move {
                if let Ok(b) =
                    upstream::post(&client, &worker, "/v1/completions", body, timeout).await
                {
                    let _ = upstream::read_all(b, timeout).await;
                }
            });
            Ok(Prefilled::Decode {
                decode: DecodeSide::Bootstrap {
                    host,
                    port,
                    room: ctx.rand,
                },
                pending: Some(AbortOnDrop(task)),
            })
        })
    }
}
