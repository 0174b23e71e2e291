//! vLLM's disaggregation handshake (NixlConnector's `kv_transfer_params`), simulated.
//!
//! A prefill request carries `{"do_remote_decode": true}`: the engine prefills, returns
//! one token and `kv_transfer_params` naming itself (`remote_engine_id`,
//! `remote_block_ids`, `remote_host`, `remote_port`, `remote_request_id`) and holds the
//! blocks. A decode request carrying those params makes the engine allocate blocks,
//! call the prefill instance's `POST /cohort/kv_pull` (a real HTTP call that frees the
//! blocks there), wait the transfer time — KV bytes per GPU ÷ NVLink (one direction) in
//! the same `--nvlink-domain`, ÷ the NIC across domains — and then decode.

use super::error::ApiError;
use bytes::Bytes;
use cohort_router::openai::KvTransferParams;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The path of the pull call on a prefill instance.
pub(crate) const PULL_PATH: &str = "/cohort/kv_pull";

/// The most a pull may take before it is an error (wall time).
const PULL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to pull a prompt's KV from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PullSpec {
    pub host: String,
    pub port: u16,
    pub request_id: String,
    pub engine_id: String,
}

/// The body of a pull request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PullRequest {
    pub request_id: String,
    pub engine_id: String,
}

/// The answer of a prefill instance to a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PullReply {
    pub num_blocks: u32,
    pub num_tokens: u32,
    pub bytes_per_gpu: u64,
    pub nvlink_domain: String,
    pub engine_id: String,
}

/// Reads the decode half of the handshake from request params.
pub(crate) fn pull_spec(p: &KvTransferParams) -> Result<PullSpec, ApiError> {
    let missing = |field: &str| {
        ApiError::bad_request(format!(
            "`kv_transfer_params` with `do_remote_prefill` needs `{field}` (pass on the prefill \
             instance's `kv_transfer_params` as it was returned)"
        ))
        .param("kv_transfer_params")
    };
    Ok(PullSpec {
        host: p
            .remote_host
            .clone()
            .ok_or_else(|| missing("remote_host"))?,
        port: p.remote_port.ok_or_else(|| missing("remote_port"))?,
        request_id: p
            .remote_request_id
            .clone()
            .ok_or_else(|| missing("remote_request_id"))?,
        engine_id: p
            .remote_engine_id
            .clone()
            .ok_or_else(|| missing("remote_engine_id"))?,
    })
}

/// Calls the prefill instance: on success the blocks are freed there.
pub(crate) async fn pull(spec: &PullSpec) -> Result<PullReply, String> {
    let what = format!(
        "pulling KV for `{}` from {}:{}",
        spec.request_id, spec.host, spec.port
    );
    match tokio::time::timeout(PULL_TIMEOUT, pull_inner(spec)).await {
        Ok(Ok(r)) if r.engine_id == spec.engine_id => Ok(r),
        Ok(Ok(r)) => Err(format!(
            "{what}: the instance there is engine `{}`, not `{}` (restarted?)",
            r.engine_id, spec.engine_id
        )),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer within {} s",
            PULL_TIMEOUT.as_secs()
        )),
    }
}

async fn pull_inner(spec: &PullSpec) -> Result<PullReply, String> {
    let stream = tokio::net::TcpStream::connect((spec.host.as_str(), spec.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let body = serde_json::to_vec(&PullRequest {
        request_id: spec.request_id.clone(),
        engine_id: spec.engine_id.clone(),
    })
    .map_err(|e| e.to_string())?;
    let req = hyper::Request::post(PULL_PATH)
        .header(hyper::header::HOST, format!("{}:{}", spec.host, spec.port))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let exchange = async move {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status.is_success() {
            serde_json::from_slice::<PullReply>(&body).map_err(|e| format!("bad answer: {e}"))
        } else {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            Err(format!("{status}: {msg}"))
        }
    };
    tokio::select! {
        r = exchange => r,
        r = conn => Err(format!("connection closed: {r:?}")),
    }
}
