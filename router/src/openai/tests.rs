//! Wire-format tests: the JSON a client sends parses, and what a server sends has vLLM's shape.

use super::*;
use serde_json::json;
use std::borrow::Cow;

#[test]
fn prompt_forms_parse() {
    let p = |v: serde_json::Value| serde_json::from_value::<Prompt>(v);
    assert_eq!(p(json!("hi")).unwrap(), Prompt::Text("hi".into()));
    assert_eq!(
        p(json!(["a", "b"])).unwrap(),
        Prompt::Texts(vec!["a".into(), "b".into()])
    );
    assert_eq!(p(json!([1, 2, 3])).unwrap(), Prompt::Tokens(vec![1, 2, 3]));
    assert_eq!(
        p(json!([[1], [2, 3]])).unwrap(),
        Prompt::TokenBatch(vec![vec![1], vec![2, 3]])
    );
    assert_eq!(p(json!([])).unwrap().len(), 0);
    assert!(p(json!(["a", 1]))
        .unwrap_err()
        .to_string()
        .contains("mixes"));
    assert!(p(json!([-1])).unwrap_err().to_string().contains("negative"));
    assert!(p(json!([4294967296u64]))
        .unwrap_err()
        .to_string()
        .contains("out of range"));
    assert!(p(json!(12)).is_err());
}

#[test]
fn completion_request_defaults_and_unknown_fields() {
    let r: CompletionRequest = serde_json::from_value(json!({
        "model": "m", "prompt": "x", "frequency_penalty": 0.5,
        "stream": true, "stream_options": {"include_usage": true},
        "kv_transfer_params": {"do_remote_decode": true}
    }))
    .unwrap();
    assert!(r.stream);
    assert!(r.stream_options.unwrap().include_usage);
    assert_eq!(r.max_tokens, None);
    let kv = r.kv_transfer_params.unwrap();
    assert!(kv.do_remote_decode && !kv.do_remote_prefill);
    assert_eq!(kv.remote_block_ids, None);
}

#[test]
fn wrong_types_are_errors() {
    let e = serde_json::from_value::<CompletionRequest>(
        json!({"model": "m", "prompt": "x", "max_tokens": "ten"}),
    );
    assert!(e.is_err());
    let e = serde_json::from_value::<ChatCompletionRequest>(json!({"model": "m"}));
    assert!(e.unwrap_err().to_string().contains("messages"));
}

#[test]
fn chat_content_parts_join() {
    let r: ChatCompletionRequest = serde_json::from_value(json!({
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]}],
        "max_tokens": 3, "max_completion_tokens": 5
    }))
    .unwrap();
    assert_eq!(r.messages[0].content.as_ref().unwrap().text(), "a\nb");
    assert_eq!(r.max_tokens(), Some(5));
}

#[test]
fn usage_shape_matches_vllm() {
    let v = serde_json::to_value(Usage::new(10, 4, 8)).unwrap();
    assert_eq!(
        v,
        json!({"prompt_tokens": 10, "total_tokens": 14, "completion_tokens": 4,
               "prompt_tokens_details": {"cached_tokens": 8}})
    );
}

#[test]
fn chat_chunks_have_vllm_shape() {
    let first = ChatChunk {
        id: "chatcmpl-1".into(),
        object: OBJECT_CHAT_CHUNK.into(),
        created: 7,
        model: "m".into(),
        choices: vec![ChatChunkChoice {
            index: 0,
            delta: ChatDelta {
                role: Some("assistant".into()),
                content: Some("".into()),
            },
            logprobs: None,
            finish_reason: None,
            stop_reason: None,
            token_ids: None,
        }],
        usage: None,
    };
    assert_eq!(
        serde_json::to_value(&first).unwrap(),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                            "logprobs": null, "finish_reason": null}]})
    );
    let mut last = first.clone();
    last.choices[0].delta = ChatDelta {
        role: None,
        content: Some(" x".into()),
    };
    last.choices[0].finish_reason = Some(FinishReason::Length);
    last.choices[0].stop_reason = Some(None);
    let v = serde_json::to_value(&last).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert!(v["choices"][0]
        .as_object()
        .unwrap()
        .contains_key("stop_reason"));
    // and it reads back
    let back: ChatChunk<'_> = serde_json::from_value(v).unwrap();
    assert_eq!(back.choices[0].finish_reason, Some(FinishReason::Length));
}

#[test]
fn completion_chunk_token_ids_round_trip() {
    let c = CompletionChunk {
        id: "cmpl-1".into(),
        object: OBJECT_TEXT_COMPLETION.into(),
        created: 1,
        model: "m".into(),
        choices: vec![CompletionChunkChoice {
            index: 1,
            text: " a".into(),
            logprobs: None,
            finish_reason: None,
            stop_reason: None,
            prompt_token_ids: Some(Cow::Borrowed(&[1, 2])),
            token_ids: Some(Cow::Borrowed(&[9])),
        }],
        usage: None,
    };
    let mut buf = Vec::new();
    sse::write_event(&mut buf, &c).unwrap();
    let text = std::str::from_utf8(&buf).unwrap();
    assert!(text.starts_with("data: {") && text.ends_with("}\n\n"));
    let sse::SseLine::Data(json) = sse::parse_line(text.trim_end()) else {
        panic!("{text}")
    };
    let back: CompletionChunk<'_> = serde_json::from_str(json).unwrap();
    assert_eq!(back, c);
    assert_eq!(sse::parse_line("data: [DONE]"), sse::SseLine::Done);
    assert_eq!(sse::parse_line(": ping"), sse::SseLine::Other);
}

#[test]
fn error_body_shape() {
    let e = ErrorResponse::new(ErrorKind::NotFound, "The model `x` does not exist.")
        .with_param("model");
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"error": {"message": "The model `x` does not exist.", "type": "NotFoundError",
                         "param": "model", "code": 404}})
    );
}

#[test]
fn kv_transfer_params_from_vllm_prefill_response() {
    // What vLLM's NixlConnector returns from a prefill instance.
    let v = json!({"do_remote_prefill": true, "do_remote_decode": false,
                   "remote_block_ids": [1, 2, 3], "remote_engine_id": "e0",
                   "remote_host": "10.0.0.1", "remote_port": 5600, "tp_size": 1});
    let p: KvTransferParams = serde_json::from_value(v).unwrap();
    assert!(p.do_remote_prefill);
    assert_eq!(p.remote_block_ids, Some(BlockIds::Flat(vec![1, 2, 3])));
    assert_eq!(p.remote_port, Some(5600));
}

#[test]
fn kv_transfer_params_of_vllm_0_32_pass_through_unchanged() {
    // Captured from vLLM 0.32 (CPU build, NixlConnector `kv_producer`): block ids per
    // KV cache group, and fields cohort does not name.
    let v = json!({"do_remote_prefill": true, "do_remote_decode": false,
                   "remote_block_ids": [[21, 22]],
                   "remote_engine_id": "050698a0-23fc-4c9e-bb84-63a83498cda1",
                   "remote_request_id": "cmpl-983698aa238a939d-0-b8e4e3b3",
                   "remote_host": "127.0.0.1", "remote_port": 32202, "tp_size": 1,
                   "dcp_size": 1, "pp_size": 1, "remote_num_tokens": 40,
                   "remote_blocks_expiry_time": null, "transfer_mode": "pull",
                   "remote_prefill_cached_tokens": 0});
    let p: KvTransferParams = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(
        p.remote_block_ids,
        Some(BlockIds::Grouped(vec![vec![21, 22]]))
    );
    assert_eq!(p.extra["transfer_mode"], "pull");
    assert_eq!(serde_json::to_value(&p).unwrap(), v);
}
