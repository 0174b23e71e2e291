//! TensorRT-LLM's handshake, as `trtllm-serve disaggregated` speaks it to context
//! (prefill) and generation (decode) servers. Followed: TensorRT-LLM 1.3/1.4, the
//! versions cohort's adapter starts — `tensorrt_llm/serve/openai_disagg_service.py`
//! (`_get_ctx_request`, `_verify_ctx_response`, `_need_gen`, `_get_gen_request`) and the
//! wire types of `tensorrt_llm/serve/openai_protocol.py` (`DisaggregatedParams`,
//! `CompletionResponseChoice.disaggregated_params`, `CompletionResponse.prompt_token_ids`).
//!
//! 1. The context server gets the request not streamed (`stream: false`, no
//!    `stream_options`) with `"disaggregated_params": {"request_type": "context_only",
//!    "disagg_request_id": N}`. `max_tokens` stays as it is: a context-only request stops
//!    after its first token by itself (early versions of the server set it to 1; 1.x
//!    does not).
//! 2. Its answer has one choice whose `disaggregated_params` say where the KV cache
//!    waits — `ctx_request_id`, `first_gen_tokens` (the token the context phase
//!    produced), `encoded_opaque_state`, `draft_tokens`, and what later versions add
//!    (`ctx_dp_rank`, `ctx_info_endpoint`, `ctx_usage`, …) — and the prompt it prefilled
//!    as `prompt_token_ids`.
//! 3. With `finish_reason` `length` or `not_finished`, the generation server gets the
//!    request (streamed, like every decode request) with those params as they are but
//!    for `request_type: "generation_only"`, the same `disagg_request_id`, and
//!    `ctx_usage` set to the context answer's `usage` where the version has that field;
//!    the prompt becomes `prompt_token_ids`. The generation server's output begins with
//!    the first token (it has it from `first_gen_tokens`), so the context answer's text
//!    is not passed on.
//! 4. Any other finish reason (`stop`: the first token ended the request) means no KV
//!    handoff was set up and the context answer is the whole answer: it is returned, and
//!    no generation request is sent.
//!
//! TensorRT-LLM's request models forbid unknown fields (`extra="forbid"`), so every body
//! leaves out vLLM's `return_token_ids` and `kv_transfer_params` (without token ids the
//! router tokenises the engine's text). Fields of `disaggregated_params` this file does
//! not know are passed on unchanged: the generation server, of the same version, knows
//! them. A version without `disagg_request_id` (older ones) refuses the context request.
//!
//! Checked against stand-in servers written from those sources (router/tests/it/
//! trtllm.rs): no TensorRT-LLM in the test environment.

use super::{BoxFuture, DecodeSide, Handshake, PrefillCtx, Prefilled};
use crate::openai::{CompletionRequest, FinishReason, Usage};
use crate::upstream::{self, UpEvent, UpstreamError};
use serde_json::{Map, Value};

/// `request_type` of the request to the context server.
const CONTEXT_ONLY: &str = "context_only";
/// `request_type` of the request to the generation server.
const GENERATION_ONLY: &str = "generation_only";
/// Context `finish_reason`s after which the generation server continues
/// (`_GEN_PENDING_FINISH_REASONS`); any other means the context answer is final.
const HANDOFF_REASONS: [&str; 2] = ["length", "not_finished"];
/// The one other finish reason that is a complete answer rather than a failure.
const ANSWERED_REASON: &str = "stop";
/// Request fields TensorRT-LLM does not have: vLLM extensions the router may set.
const VLLM_ONLY: [&str; 2] = ["return_token_ids", "kv_transfer_params"];
/// Global disaggregated request ids lie in [2^40, 2^63); below are an engine's local ids
/// (`MIN_GLOBAL_ID` in `tensorrt_llm/llmapi/disagg_utils.py`).
const MIN_GLOBAL_ID: u64 = 1 << 40;
/// The largest positive int64.
const MAX_INT64: u64 = (1 << 63) - 1;

/// The TensorRT-LLM handshake.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trtllm;

impl Handshake for Trtllm {
    fn name(&self) -> &'static str {
        "trtllm"
    }

    fn prefill<'a>(
        &'a self,
        ctx: PrefillCtx<'a>,
    ) -> BoxFuture<'a, Result<Prefilled, UpstreamError>> {
        Box::pin(async move {
            let url = &ctx.worker.spec.url;
            let id = disagg_request_id(ctx.rand);
            let body = context_body(ctx.request, id);
            let resp = upstream::post(ctx.client, ctx.worker, "/v1/completions", body, ctx.timeout)
                .await?;
            let bytes = upstream::read_all(resp, ctx.timeout)
                .await
                .map_err(|e| UpstreamError::Failed(format!("`{url}`: {e}")))?;
            let answer = read_answer(&bytes, id)
                .map_err(|e| UpstreamError::Failed(format!("`{url}`: {e}")))?;
            Ok(match answer {
                ContextAnswer::Handoff { params, prompt } => Prefilled::Decode {
                    decode: DecodeSide::Disaggregated { params, prompt },
                    pending: None,
                },
                ContextAnswer::Answered(events) => Prefilled::Answered(events),
            })
        })
    }

    fn decode_body(&self, request: &CompletionRequest, side: Option<&DecodeSide>) -> Vec<u8> {
        match side {
            Some(DecodeSide::Disaggregated { params, prompt }) => {
                generation_body(request, params, prompt.as_deref())
            }
            // The decode worker prefills itself: an ordinary request.
            _ => serde_json::to_vec(&plain(request)).unwrap_or_default(),
        }
    }
}

/// A global disaggregated request id from a random number, rotated into
/// [`MIN_GLOBAL_ID`, 2^63 - 1) as TensorRT-LLM rotates its snowflake ids. Random rather
/// than a snowflake: two requests in flight share one with a chance of about 2^-62.
fn disagg_request_id(rand: u64) -> u64 {
    rand % (MAX_INT64 - MIN_GLOBAL_ID) + MIN_GLOBAL_ID
}

/// `request` as a JSON object, without the fields TensorRT-LLM refuses.
fn plain(request: &CompletionRequest) -> Map<String, Value> {
    let mut o = match serde_json::to_value(request) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    for field in VLLM_ONLY {
        o.remove(field);
    }
    o
}

/// The request to the context server.
fn context_body(request: &CompletionRequest, disagg_request_id: u64) -> Vec<u8> {
    let mut r = request.clone();
    r.stream = false;
    r.stream_options = None;
    let mut o = plain(&r);
    o.insert(
        "disaggregated_params".into(),
        serde_json::json!({
            "request_type": CONTEXT_ONLY,
            "disagg_request_id": disagg_request_id,
        }),
    );
    serde_json::to_vec(&o).unwrap_or_default()
}

/// The request to the generation server after a handoff: `request` with `params` and,
/// when the context server said, the prompt it prefilled.
pub(crate) fn generation_body(
    request: &CompletionRequest,
    params: &Map<String, Value>,
    prompt: Option<&[u32]>,
) -> Vec<u8> {
    let mut o = plain(request);
    if let Some(p) = prompt {
        o.insert("prompt".into(), p.into());
    }
    o.insert("disaggregated_params".into(), Value::Object(params.clone()));
    serde_json::to_vec(&o).unwrap_or_default()
}

/// What the context server's answer says.
#[derive(Debug, Clone, PartialEq)]
enum ContextAnswer {
    /// The generation server continues: its `disaggregated_params` and prompt.
    Handoff {
        params: Map<String, Value>,
        prompt: Option<Vec<u32>>,
    },
    /// The request ended in the context phase: the answer, as an engine's stream says it.
    Answered(Vec<UpEvent>),
}

/// Reads the context server's answer to a request sent with `disagg_request_id`; the
/// error names what is missing or wrong.
fn read_answer(body: &[u8], disagg_request_id: u64) -> Result<ContextAnswer, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the context answer is not JSON ({e})"))?;
    let choices = v
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("the context answer has no `choices` list ({})", short(&v)))?;
    let [choice] = choices.as_slice() else {
        return Err(format!(
            "the context answer has {} choices; expected 1",
            choices.len()
        ));
    };
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    match finish {
        Some(f) if HANDOFF_REASONS.contains(&f) => {
            let params = handoff_params(choice, v.get("usage"), disagg_request_id)?;
            let prompt = match v.get("prompt_token_ids") {
                None | Some(Value::Null) => None,
                Some(p) => Some(token_ids(p).ok_or_else(|| {
                    format!(
                        "`prompt_token_ids` must be a list of token ids; given {}",
                        short(p)
                    )
                })?),
            };
            Ok(ContextAnswer::Handoff { params, prompt })
        }
        Some(ANSWERED_REASON) => {
            let text = choice
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    format!(
                        "`choices[0].text` must be a string; {}",
                        given(choice.get("text"))
                    )
                })?
                .to_owned();
            let ids = choice
                .get("token_ids")
                .and_then(token_ids)
                .unwrap_or_default();
            let mut events = vec![UpEvent::Tokens {
                text,
                ids,
                finish: Some(FinishReason::Stop),
            }];
            if let Some(u) = v
                .get("usage")
                .and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok())
            {
                events.push(UpEvent::Usage(u));
            }
            events.push(UpEvent::Done);
            Ok(ContextAnswer::Answered(events))
        }
        _ => Err(format!(
            "`choices[0].finish_reason` must be `length` or `not_finished` (the generation \
             server continues) or `stop` (the answer is complete); {}",
            given(choice.get("finish_reason"))
        )),
    }
}

/// The generation request's `disaggregated_params`, from the context answer's `choice`.
fn handoff_params(
    choice: &Value,
    usage: Option<&Value>,
    disagg_request_id: u64,
) -> Result<Map<String, Value>, String> {
    let mut p = match choice.get("disaggregated_params") {
        Some(Value::Object(p)) => p.clone(),
        None | Some(Value::Null) => {
            return Err(
                "the context answer has no `choices[0].disaggregated_params` (is the instance \
                 a `trtllm-serve` with a `cache_transceiver_config`?)"
                    .into(),
            )
        }
        Some(other) => {
            return Err(format!(
                "`choices[0].disaggregated_params` must be an object; given {}",
                short(other)
            ))
        }
    };
    let ctx_request_id = p.get("ctx_request_id");
    if !ctx_request_id.is_some_and(Value::is_u64) {
        return Err(format!(
            "`choices[0].disaggregated_params.ctx_request_id` must be an integer; {}",
            given(ctx_request_id)
        ));
    }
    let first = p.get("first_gen_tokens");
    if first.and_then(token_ids).is_none_or(|t| t.is_empty()) {
        return Err(format!(
            "`choices[0].disaggregated_params.first_gen_tokens` must be a non-empty list of \
             token ids; {}",
            given(first)
        ));
    }
    p.insert("request_type".into(), GENERATION_ONLY.into());
    p.insert("disagg_request_id".into(), disagg_request_id.into());
    if p.contains_key("ctx_usage") {
        if let Some(u) = usage {
            p.insert("ctx_usage".into(), u.clone());
        }
    }
    Ok(p)
}

/// `v` as token ids, if it is a list of them.
fn token_ids(v: &Value) -> Option<Vec<u32>> {
    v.as_array()?
        .iter()
        .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
        .collect()
}

/// "it is missing" or "given <value>", for an error message.
fn given(v: Option<&Value>) -> String {
    match v {
        None => "it is missing".into(),
        Some(v) => format!("given {}", short(v)),
    }
}

/// `v` as JSON, cut to 120 bytes.
fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 120 {
        let mut end = 120;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Prompt;
    use proptest::prelude::*;

    fn request() -> CompletionRequest {
        serde_json::from_value(serde_json::json!({
            "model": "m",
            "prompt": [1, 2, 3],
            "max_tokens": 8,
            "stream": true,
            "stream_options": {"include_usage": true},
            "return_token_ids": true,
        }))
        .unwrap()
    }

    fn answer(finish: &str, params: Value) -> Value {
        serde_json::json!({
            "id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{
                "index": 0, "text": " x", "token_ids": null, "logprobs": null,
                "finish_reason": finish, "stop_reason": null,
                "disaggregated_params": params,
            }],
            "usage": {"prompt_tokens": 3, "total_tokens": 4, "completion_tokens": 1},
            "prompt_token_ids": [1, 2, 3],
        })
    }

    fn context_params() -> Value {
        serde_json::json!({
            "request_type": "context_only", "first_gen_tokens": [7], "ctx_request_id": 9,
            "encoded_opaque_state": "b3A=", "draft_tokens": null, "disagg_request_id": null,
            "ctx_dp_rank": 0, "ctx_usage": null,
        })
    }

    fn read(v: &Value) -> Result<ContextAnswer, String> {
        read_answer(&serde_json::to_vec(v).unwrap(), MIN_GLOBAL_ID + 5)
    }

    #[test]
    fn the_context_request_is_context_only_and_not_streamed() {
        let v: Value = serde_json::from_slice(&context_body(&request(), 1 << 41)).unwrap();
        assert_eq!(
            v["disaggregated_params"],
            serde_json::json!({"request_type": "context_only", "disagg_request_id": 1u64 << 41})
        );
        assert_eq!(v["stream"], false);
        assert_eq!(v["max_tokens"], 8);
        for absent in ["stream_options", "return_token_ids", "kv_transfer_params"] {
            assert!(v.get(absent).is_none(), "{absent} in {v}");
        }
    }

    #[test]
    fn a_handoff_keeps_the_params_and_takes_the_context_prompt() {
        let mut a = answer("not_finished", context_params());
        a["prompt_token_ids"] = serde_json::json!([0, 1, 2, 3]);
        let ContextAnswer::Handoff { params, prompt } = read(&a).unwrap() else {
            panic!("not a handoff")
        };
        assert_eq!(params["request_type"], "generation_only");
        assert_eq!(params["disagg_request_id"], MIN_GLOBAL_ID + 5);
        assert_eq!(params["encoded_opaque_state"], "b3A=");
        assert_eq!(params["ctx_dp_rank"], 0);
        assert_eq!(params["ctx_usage"], a["usage"]);
        assert_eq!(prompt.as_deref(), Some(&[0, 1, 2, 3][..]));
        let body: Value =
            serde_json::from_slice(&generation_body(&request(), &params, prompt.as_deref()))
                .unwrap();
        assert_eq!(body["prompt"], serde_json::json!([0, 1, 2, 3]));
        assert_eq!(body["stream"], true);
        assert_eq!(body["disaggregated_params"], Value::Object(params));
        assert!(body.get("return_token_ids").is_none());
        // Without `ctx_usage` in the version's params, none is added.
        let mut p = context_params();
        p.as_object_mut().unwrap().remove("ctx_usage");
        let Ok(ContextAnswer::Handoff { params, .. }) = read(&answer("length", p)) else {
            panic!("not a handoff")
        };
        assert!(params.get("ctx_usage").is_none());
    }

    #[test]
    fn a_request_ended_by_its_first_token_is_answered_by_the_context_server() {
        let got = read(&answer("stop", Value::Null)).unwrap();
        let ContextAnswer::Answered(events) = got else {
            panic!("not answered")
        };
        assert_eq!(
            events[0],
            UpEvent::Tokens {
                text: " x".into(),
                ids: vec![],
                finish: Some(FinishReason::Stop)
            }
        );
        assert!(matches!(events[1], UpEvent::Usage(u) if u.completion_tokens == 1));
        assert_eq!(events[2], UpEvent::Done);
    }

    #[test]
    fn what_is_missing_or_wrong_is_named() {
        let cases = [
            (
                answer("length", Value::Null),
                "no `choices[0].disaggregated_params`",
            ),
            (
                answer("length", serde_json::json!([1])),
                "must be an object",
            ),
            (
                {
                    let mut p = context_params();
                    p.as_object_mut().unwrap().remove("ctx_request_id");
                    answer("not_finished", p)
                },
                "`choices[0].disaggregated_params.ctx_request_id` must be an integer; it is \
                 missing",
            ),
            (
                {
                    let mut p = context_params();
                    p["first_gen_tokens"] = serde_json::json!([]);
                    answer("not_finished", p)
                },
                ".first_gen_tokens` must be a non-empty list of token ids; given []",
            ),
            (
                answer("timeout", context_params()),
                "`choices[0].finish_reason` must be `length` or `not_finished`",
            ),
            (
                {
                    let mut a = answer("length", context_params());
                    a["choices"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("finish_reason");
                    a
                },
                "it is missing",
            ),
            (
                {
                    let mut a = answer("length", context_params());
                    a["prompt_token_ids"] = serde_json::json!([[1, 2]]);
                    a
                },
                "`prompt_token_ids` must be a list of token ids",
            ),
            (
                {
                    let mut a = answer("length", context_params());
                    let c = a["choices"][0].clone();
                    a["choices"] = serde_json::json!([c.clone(), c]);
                    a
                },
                "2 choices; expected 1",
            ),
            (serde_json::json!({"error": "x"}), "no `choices` list"),
        ];
        for (a, want) in cases {
            let e = read(&a).unwrap_err();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
        assert!(read_answer(b"<html>", 1 << 40)
            .unwrap_err()
            .contains("not JSON"));
    }

    #[test]
    fn ids_stay_in_the_global_range() {
        for r in [0, 1, MIN_GLOBAL_ID, MAX_INT64, u64::MAX] {
            let id = disagg_request_id(r);
            assert!((MIN_GLOBAL_ID..MAX_INT64).contains(&id), "{r} → {id}");
        }
    }

    #[test]
    fn an_ordinary_decode_request_has_no_vllm_fields() {
        let v: Value = serde_json::from_slice(&Trtllm.decode_body(&request(), None)).unwrap();
        assert!(v.get("return_token_ids").is_none());
        assert!(v.get("disaggregated_params").is_none());
        assert!(matches!(
            serde_json::from_value::<CompletionRequest>(v)
                .unwrap()
                .prompt,
            Prompt::Tokens(_)
        ));
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            prop::sample::select(vec!["length", "not_finished", "stop", "x", ""])
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec(
                    (
                        prop::sample::select(vec![
                            "choices",
                            "finish_reason",
                            "text",
                            "token_ids",
                            "disaggregated_params",
                            "ctx_request_id",
                            "first_gen_tokens",
                            "ctx_usage",
                            "usage",
                            "prompt_token_ids",
                        ]),
                        inner
                    ),
                    0..5
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        /// Whatever a context server answers, reading it never panics, and a handoff
        /// always carries what the generation server needs.
        #[test]
        fn any_answer_is_read_or_refused(v in json()) {
            if let Ok(ContextAnswer::Handoff { params, .. }) = read(&v) {
                prop_assert_eq!(&params["request_type"], "generation_only");
                prop_assert!(params["ctx_request_id"].is_u64());
            }
        }
    }
}
