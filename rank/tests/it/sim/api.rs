//! The OpenAI API as vLLM serves it: streaming framing, usage with cached tokens,
//! batched and token-id prompts, errors, and several instances in one process.

use super::{call, metric, post, start};
use cohort_router::openai::{
    sse, ChatChunk, CompletionChunk, CompletionResponse, ErrorResponse, FinishReason, ModelList,
};
use hyper::StatusCode;
use serde_json::json;

fn events(body: &[u8]) -> (Vec<&str>, bool) {
    let text = std::str::from_utf8(body).expect("utf-8");
    let mut data = Vec::new();
    let mut done = false;
    for line in text.split('\n') {
        match sse::parse_line(line) {
            sse::SseLine::Data(d) => {
                assert!(!done, "data after [DONE]");
                data.push(d)
            }
            sse::SseLine::Done => done = true,
            sse::SseLine::Other => assert!(line.is_empty(), "unexpected line {line:?}"),
        }
    }
    (data, done)
}

#[tokio::test]
async fn streamed_chat_has_role_chunk_content_usage_and_done_and_caches_the_prompt() {
    let sim = start(&[]).await;
    let addr = sim.instances()[0].addr;
    let body = json!({
        "model": "llama-3.1-8b",
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "tell me about the prefill and decode split on a rack of nodes"}],
        "max_tokens": 6, "stream": true, "stream_options": {"include_usage": true}
    });
    let mut usages = Vec::new();
    let mut texts = Vec::new();
    for _ in 0..2 {
        let (status, bytes) = call(addr, "POST", "/v1/chat/completions", Some(&body)).await;
        assert_eq!(status, StatusCode::OK);
        let (data, done) = events(&bytes);
        assert!(done, "stream ends with [DONE]");
        let chunks: Vec<ChatChunk<'_>> = data
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(chunks.len(), 1 + 6 + 1, "role chunk, 6 tokens, usage");
        assert_eq!(
            chunks[0].choices[0].delta.role.as_deref(),
            Some("assistant")
        );
        let content: Vec<_> = chunks[1..7]
            .iter()
            .map(|c| c.choices[0].delta.content.clone().unwrap())
            .collect();
        assert!(chunks[1..6]
            .iter()
            .all(|c| c.choices[0].finish_reason.is_none()));
        assert_eq!(
            chunks[6].choices[0].finish_reason,
            Some(FinishReason::Length)
        );
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty());
        usages.push(last.usage.unwrap());
        texts.push(content.concat());
    }
    assert_eq!(texts[0], texts[1], "same request, same output");
    let (a, b) = (usages[0], usages[1]);
    assert_eq!(a.completion_tokens, 6);
    assert_eq!(a.total_tokens, a.prompt_tokens + 6);
    assert_eq!(a.cached_tokens(), 0);
    // a 20-token prompt: the first full block of 16 is reused
    assert_eq!(a.prompt_tokens, 20);
    assert_eq!(b.cached_tokens(), 16);
    assert_eq!(metric(addr, "vllm:prefix_cache_hits_total").await, 16.0);
    assert_eq!(metric(addr, "vllm:num_requests_running").await, 0.0);
    assert_eq!(
        metric(addr, "vllm:time_to_first_token_seconds_count").await,
        2.0
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn batched_token_prompts_with_token_ids_and_streamed_completions() {
    let sim = start(&[]).await;
    let addr = sim.instances()[0].addr;
    let (status, v) = post(
        addr,
        "/v1/completions",
        json!({
            "model": "llama-3.1-8b", "prompt": [[1, 2, 3], [4, 5, 6, 7]], "max_tokens": 4,
            "return_token_ids": true, "ignore_eos": true
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let r: CompletionResponse<'_> = serde_json::from_value(v).unwrap();
    assert_eq!(r.choices.len(), 2);
    assert_eq!(
        r.choices[1].prompt_token_ids.as_deref(),
        Some(&[4, 5, 6, 7][..])
    );
    assert_eq!(r.choices[0].token_ids.as_ref().unwrap().len(), 4);
    assert_eq!(r.usage.prompt_tokens, 7);
    assert_eq!(r.usage.completion_tokens, 8);

    // streamed: every chunk of prompt i has index i; one finish_reason per prompt
    let (status, bytes) = call(addr, "POST", "/v1/completions", Some(&json!({
        "model": "llama-3.1-8b", "prompt": ["the cluster", "a node of the rack"], "max_tokens": 3,
        "stream": true, "ignore_eos": true
    })))
    .await;
    assert_eq!(status, StatusCode::OK);
    let (data, done) = events(&bytes);
    assert!(done);
    let chunks: Vec<CompletionChunk<'_>> = data
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks.len(), 6, "no usage chunk without include_usage");
    for i in 0..2u32 {
        let mine: Vec<_> = chunks.iter().filter(|c| c.choices[0].index == i).collect();
        assert_eq!(mine.len(), 3);
        assert_eq!(mine[2].choices[0].finish_reason, Some(FinishReason::Length));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn min_tokens_and_eos() {
    let sim = start(&["--eos-mean-tokens", "2"]).await;
    let addr = sim.instances()[0].addr;
    // with a mean natural length of 2, 50 tokens without ignore_eos stop early…
    let mut stopped = 0;
    for seed in 0..10 {
        let (_, v) = post(
            addr,
            "/v1/completions",
            json!({"model": "llama-3.1-8b", "prompt": "a b c", "max_tokens": 50, "seed": seed}),
        )
        .await;
        if v["choices"][0]["finish_reason"] == "stop" {
            stopped += 1;
            assert!(v["usage"]["completion_tokens"].as_u64().unwrap() < 50);
        }
    }
    assert!(stopped >= 8, "{stopped} of 10 stopped");
    // …but never before min_tokens
    for seed in 0..10 {
        let (_, v) = post(addr, "/v1/completions", json!({"model": "llama-3.1-8b", "prompt": "a b c", "max_tokens": 50, "min_tokens": 20, "seed": seed})).await;
        assert!(
            v["usage"]["completion_tokens"].as_u64().unwrap() >= 20,
            "{v}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_4xx() {
    let sim = start(&["--max-model-len", "64", "--num-gpu-blocks", "8"]).await;
    let addr = sim.instances()[0].addr;
    let cases = [
        (
            json!({"model": "nope", "prompt": "a"}),
            404,
            "does not exist",
        ),
        (
            json!({"model": "llama-3.1-8b", "prompt": [1, 2], "max_tokens": 63}),
            400,
            "maximum context length is 64",
        ),
        (
            json!({"model": "llama-3.1-8b", "prompt": "a", "max_tokens": "many"}),
            400,
            "invalid type",
        ),
        (
            json!({"model": "llama-3.1-8b", "prompt": [999999999]}),
            400,
            "out of vocabulary",
        ),
        (
            json!({"model": "llama-3.1-8b", "prompt": "a", "max_tokens": 0}),
            400,
            "at least 1",
        ),
        (
            json!({"model": "llama-3.1-8b", "prompt": "a", "n": 2}),
            400,
            "`n`",
        ),
        (
            json!({"model": "llama-3.1-8b", "prompt": "a", "kv_transfer_params": {"do_remote_prefill": true}}),
            400,
            "remote_host",
        ),
    ];
    for (body, code, needle) in cases {
        let (status, v) = post(addr, "/v1/completions", body.clone()).await;
        assert_eq!(status.as_u16(), code, "{body}: {v}");
        let e: ErrorResponse<'_> =
            serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
        assert_eq!(e.error.code, code);
        assert!(e.error.message.contains(needle), "{body}: {v}");
    }
    let (status, _) = call(
        addr,
        "POST",
        "/v1/chat/completions",
        Some(&json!({"model": "llama-3.1-8b", "messages": []})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(addr, "GET", "/v1/completions", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(metric(addr, "cohort_sim_http_errors_total{engine=\"0\",model_name=\"llama-3.1-8b\",type=\"BadRequestError\"}").await, 7.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn instances_are_independent_engines_in_one_process() {
    let sim = start(&["--instances", "3"]).await;
    let addrs: Vec<_> = sim.instances().iter().map(|i| i.addr).collect();
    assert_eq!(addrs.len(), 3);
    let ids: std::collections::HashSet<_> = sim
        .instances()
        .iter()
        .map(|i| i.engine_id.clone())
        .collect();
    assert_eq!(ids.len(), 3);
    let body =
        json!({"model": "llama-3.1-8b", "prompt": (0..40).collect::<Vec<u32>>(), "max_tokens": 2});
    for _ in 0..2 {
        let (status, _) = post(addrs[0], "/v1/completions", body.clone()).await;
        assert_eq!(status, StatusCode::OK);
    }
    // instance 1 has not seen the prompt: no cached tokens there
    let (_, v) = post(addrs[1], "/v1/completions", body.clone()).await;
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(metric(addrs[0], "vllm:prefix_cache_hits_total").await, 32.0);
    assert_eq!(metric(addrs[2], "vllm:prompt_tokens_total").await, 0.0);
    let (status, body) = call(addrs[2], "GET", "/v1/models", None).await;
    assert_eq!(status, StatusCode::OK);
    let models: ModelList<'_> = serde_json::from_slice(&body).unwrap();
    assert_eq!(models.data[0].id, "llama-3.1-8b");
    let (status, _) = call(addrs[2], "GET", "/health", None).await;
    assert_eq!(status, StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn simulated_time_follows_the_roofline_model() {
    // Paused clock: sleeps advance virtual time, so this measures simulated time
    // exactly, not the machine's speed.
    let sim = start(&["--speedup", "1"]).await;
    let addr = sim.instances()[0].addr;
    let t0 = tokio::time::Instant::now();
    let (status, _) = post(
        addr,
        "/v1/completions",
        json!({"model": "llama-3.1-8b", "prompt": [1, 2, 3], "max_tokens": 10, "ignore_eos": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let took = t0.elapsed().as_secs_f64();
    // 10 steps of ≈ 6.6 ms (15 GB of weights at 0.8 × 3.35 TB/s, + 1 ms)
    assert!((0.060..0.075).contains(&took), "{took}");
    let ttft = metric(addr, "vllm:time_to_first_token_seconds_sum").await;
    assert!((0.006..0.0075).contains(&ttft), "{ttft}");
    sim.shutdown().await;
}
