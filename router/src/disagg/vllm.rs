//! vLLM's handshake (NixlConnector's `kv_transfer_params`): the prefill worker gets the
//! prompt with `{"do_remote_decode": true}`, `max_tokens: 1`, not streamed; its answer's
//! `kv_transfer_params` (where the blocks are held) go, as they are, into the decode
//! request, whose engine pulls the blocks before decoding. The simulator speaks it too.

use super::{BoxFuture, DecodeSide, Handshake, PrefillCtx, Prefilled};
use crate::openai::{CompletionResponse, KvTransferParams};
use crate::upstream::{self, UpstreamError};

/// The vLLM handshake.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vllm;

impl Handshake for Vllm {
    fn name(&self) -> &'static str {
        "vllm"
    }

    fn prefill<'a>(
        &'a self,
        ctx: PrefillCtx<'a>,
    ) -> BoxFuture<'a, Result<Prefilled, UpstreamError>> {
        Box::pin(async move {
            let mut r = ctx.request.clone();
            r.max_tokens = Some(1);
            r.min_tokens = None;
            r.stream = false;
            r.stream_options = None;
            r.return_token_ids = None;
            r.kv_transfer_params = Some(KvTransferParams {
                do_remote_decode: true,
                ..KvTransferParams::default()
            });
            let body = serde_json::to_vec(&r).unwrap_or_default();
            let resp = upstream::post(ctx.client, ctx.worker, "/v1/completions", body, ctx.timeout)
                .await?;
            let bytes = upstream::read_all(resp, ctx.timeout).await?;
            let answer: CompletionResponse<'_> = serde_json::from_slice(&bytes).map_err(|e| {
                UpstreamError::Failed(format!(
                    "`{}`: the prefill answer is not a completion: {e}",
                    ctx.worker.spec.url
                ))
            })?;
            let params = answer.kv_transfer_params.ok_or_else(|| {
                UpstreamError::Failed(format!(
                    "`{}`: the prefill answer has no `kv_transfer_params` (is it a vLLM \
                     instance with a KV connector?)",
                    ctx.worker.spec.url
                ))
            })?;
            Ok(Prefilled::Decode {
                decode: DecodeSide::KvTransfer(params),
                pending: None,
            })
        })
    }
}
