//! vLLM's `kv_transfer_params` handshake between a prefill and a decode instance.

use super::{metric, post, start};
use hyper::StatusCode;
use serde_json::json;
use std::time::Duration;

const M: &str = "llama-3.1-8b";

#[tokio::test]
async fn prefill_then_decode_pulls_the_blocks_and_frees_them_on_the_prefill_side() {
    let prefill = start(&["--role", "prefill", "--nvlink-domain", "rack0"]).await;
    let decode = start(&["--role", "decode", "--nvlink-domain", "rack0"]).await;
    let (p, d) = (prefill.instances()[0].addr, decode.instances()[0].addr);
    let prompt: Vec<u32> = (100..150).collect(); // 50 tokens: 4 blocks of 16
    let (status, v) = post(
        p,
        "/v1/completions",
        json!({
            "model": M, "prompt": prompt, "max_tokens": 1,
            "kv_transfer_params": {"do_remote_decode": true, "do_remote_prefill": false,
                                   "remote_engine_id": null, "remote_block_ids": null,
                                   "remote_host": null, "remote_port": null}
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 1);
    let params = v["kv_transfer_params"].clone();
    assert_eq!(params["do_remote_prefill"], true);
    assert_eq!(params["do_remote_decode"], false);
    assert_eq!(
        params["remote_engine_id"],
        prefill.instances()[0].engine_id.as_str()
    );
    assert_eq!(params["remote_port"], p.port());
    assert_eq!(params["remote_host"], "127.0.0.1");
    assert_eq!(params["remote_block_ids"].as_array().unwrap().len(), 4);
    assert_eq!(metric(p, "cohort_sim_kv_held_blocks").await, 4.0);

    // a prefill instance refuses the decode half, and vice versa
    let (status, _) = post(
        p,
        "/v1/completions",
        json!({"model": M, "prompt": prompt, "kv_transfer_params": params}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, v) = post(d, "/v1/completions", json!({
        "model": M, "prompt": prompt, "max_tokens": 5, "ignore_eos": true, "kv_transfer_params": params
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    // the decode side computed only the last prompt token
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 49);
    assert_eq!(metric(d, "cohort_sim_kv_transfer_blocks_total").await, 4.0);
    // 50 tokens × 128 KiB over NVLink
    assert_eq!(
        metric(d, "cohort_sim_kv_transfer_bytes_total").await,
        50.0 * 131_072.0
    );
    assert_eq!(metric(p, "cohort_sim_kv_held_blocks").await, 0.0);
    assert_eq!(metric(p, "cohort_sim_kv_pulls_served_total").await, 1.0);
    assert_eq!(metric(p, "vllm:kv_cache_usage_perc").await, 0.0);

    // the same params again: already pulled — a clear error, not a hang
    let (status, v) = post(
        d,
        "/v1/completions",
        json!({
            "model": M, "prompt": prompt, "max_tokens": 5, "kv_transfer_params": params
        }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("no KV blocks are held") && msg.contains("already pulled"),
        "{msg}"
    );
    assert_eq!(
        metric(d, "cohort_sim_kv_transfer_failures_total").await,
        1.0
    );
    assert_eq!(metric(d, "vllm:kv_cache_usage_perc").await, 0.0);
    prefill.shutdown().await;
    decode.shutdown().await;
}

#[tokio::test]
async fn expired_holds_and_dead_prefill_instances_are_errors() {
    let prefill = start(&["--role", "prefill", "--kv-hold-timeout-s", "0.2"]).await;
    let decode = start(&["--role", "decode"]).await;
    let (p, d) = (prefill.instances()[0].addr, decode.instances()[0].addr);
    let (_, v) = post(
        p,
        "/v1/completions",
        json!({
            "model": M, "prompt": (0..40).collect::<Vec<u32>>(), "max_tokens": 1,
            "kv_transfer_params": {"do_remote_decode": true}
        }),
    )
    .await;
    let params = v["kv_transfer_params"].clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metric(p, "cohort_sim_kv_holds_expired_total").await, 1.0);
    assert_eq!(metric(p, "cohort_sim_kv_held_blocks").await, 0.0);
    let (status, v) = post(d, "/v1/completions", json!({"model": M, "prompt": (0..40).collect::<Vec<u32>>(), "kv_transfer_params": params.clone()})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("0.2 s hold timeout"),
        "{v}"
    );

    // the prefill instance is gone: connection refused, reported with its address
    prefill.shutdown().await;
    let (status, v) = post(
        d,
        "/v1/completions",
        json!({"model": M, "prompt": (0..40).collect::<Vec<u32>>(), "kv_transfer_params": params}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("127.0.0.1:{}", p.port())), "{msg}");
    assert_eq!(metric(d, "vllm:kv_cache_usage_perc").await, 0.0);
    decode.shutdown().await;
}
