//! TensorRT-LLM's disaggregation handshake against stand-ins for a context and a
//! generation server, written from what TensorRT-LLM 1.3/1.4 sends and answers
//! (`tensorrt_llm/serve/openai_disagg_service.py`, `openai_protocol.py`): the bodies each
//! side receives, field by field; the first token produced once; a request the context
//! phase finished; a context answer without `disaggregated_params`.

use crate::frontend::{frontend, post};
use crate::stub::{Reply, Script, Stub};
use cohort_router::disagg::{self, PrefillCtx};
use cohort_router::metrics::Disagg;
use cohort_router::openai::CompletionRequest;
use cohort_router::registry::Registry;
use cohort_router::settings::HandshakeKind;
use cohort_router::upstream::{self, UpstreamError};
use cohort_router::{BreakerConfig, Role, WorkerSpec};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The context stand-in's first token for a prompt of `n` ids is `FIRST + n`.
const FIRST: u64 = 1000;
/// The token the context stand-in puts before the prompt it was sent, so that the
/// generation request's prompt can be told apart from the router's.
const BOS: u64 = 1;
/// `ctx_request_id` of every context answer.
const CTX_REQUEST_ID: u64 = 4242;

/// How the context stand-in answers.
#[derive(Debug, Clone, Copy)]
enum Context {
    /// A handoff with this `finish_reason`.
    Handoff(&'static str),
    /// The first token ended the request (`finish_reason: "stop"`).
    Stopped,
    /// A completion without `disaggregated_params` (an instance with no KV transceiver).
    NoParams,
}

/// Paths the stand-ins were sent, in order.
type Paths = Arc<Mutex<Vec<String>>>;

/// A TensorRT-LLM context server: its `CompletionResponse.model_dump()`, with
/// `disaggregated_params` as `to_disaggregated_params` writes them.
fn context_server(mode: Context, paths: Paths) -> Script {
    Arc::new(move |path: &str, body: &Value| {
        paths.lock().unwrap().push(path.to_owned());
        let mut prompt = vec![BOS];
        prompt.extend(
            body["prompt"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap()),
        );
        let n = prompt.len() as u64;
        let first = FIRST + n;
        let params = json!({
            "request_type": "context_only",
            "first_gen_tokens": [first],
            "first_gen_log_probs": null,
            "first_gen_logits": null,
            "ctx_request_id": CTX_REQUEST_ID,
            "encoded_opaque_state": "b3BhcXVlLXN0YXRl",
            "draft_tokens": null,
            "disagg_request_id": body["disaggregated_params"]["disagg_request_id"],
            "ctx_dp_rank": 1,
            "ctx_info_endpoint": "tcp://10.0.0.7:5600",
            "schedule_style": null,
            "conversation_id": null,
            "ctx_usage": null,
        });
        let (finish, text, params) = match mode {
            Context::Handoff(f) => (f, format!(" t{first}"), params),
            Context::Stopped => ("stop", " end".to_owned(), params),
            Context::NoParams => ("length", format!(" t{first}"), Value::Null),
        };
        let answer = json!({
            "id": "cmpl-ctx",
            "object": "text_completion",
            "created": 0,
            "model": "stub",
            "choices": [{
                "index": 0,
                "text": text,
                "token_ids": null,
                "logprobs": null,
                "context_logits": null,
                "finish_reason": finish,
                "stop_reason": null,
                "disaggregated_params": params,
                "avg_decoded_tokens_per_iter": null,
            }],
            "usage": {
                "prompt_tokens": n,
                "total_tokens": n + 1,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
            "prompt_token_ids": prompt,
        });
        Reply::Json(200, answer.to_string())
    })
}

/// A TensorRT-LLM generation server, streaming: after a handoff its output starts with
/// the context phase's token (`first_gen_tokens`) and goes on consecutively; an ordinary
/// request starts at the prompt's length.
fn generation_server(paths: Paths) -> Script {
    Arc::new(move |path: &str, body: &Value| {
        paths.lock().unwrap().push(path.to_owned());
        let p = &body["disaggregated_params"];
        let start = if p["request_type"] == "generation_only" {
            p["first_gen_tokens"][0].as_u64().unwrap()
        } else {
            body["prompt"].as_array().unwrap().len() as u64
        };
        let max = body["max_tokens"].as_u64().unwrap_or(16);
        let chunk = |choices: Value, usage: Value| {
            let c = json!({
                "id": "cmpl-gen", "object": "text_completion", "created": 0, "model": "stub",
                "choices": choices, "usage": usage,
            });
            format!("data: {c}\n\n")
        };
        let mut events: Vec<String> = (0..max)
            .map(|i| {
                let id = start + i;
                let finish = if i + 1 == max {
                    json!("length")
                } else {
                    Value::Null
                };
                chunk(
                    json!([{
                        "index": 0, "text": format!(" t{id}"), "token_ids": [id],
                        "logprobs": null, "finish_reason": finish, "stop_reason": null,
                        "avg_decoded_tokens_per_iter": null,
                    }]),
                    Value::Null,
                )
            })
            .collect();
        events.push(chunk(
            json!([]),
            json!({"prompt_tokens": 3, "total_tokens": 3 + max, "completion_tokens": max}),
        ));
        events.push("data: [DONE]\n\n".to_owned());
        Reply::Events(events)
    })
}

/// Two stand-ins and a frontend with the TensorRT-LLM handshake in front of them.
struct Pair {
    ctx: Stub,
    gen: Stub,
    ctx_paths: Paths,
    gen_paths: Paths,
    fe: cohort_router::Frontend,
}

impl Pair {
    async fn start(mode: Context) -> Pair {
        let (ctx_paths, gen_paths) = (Paths::default(), Paths::default());
        let ctx = Stub::scripted(context_server(mode, ctx_paths.clone())).await;
        let gen = Stub::scripted(generation_server(gen_paths.clone())).await;
        let fe = frontend(&[
            "--handshake",
            "trtllm",
            "--prefill",
            &ctx.url(),
            "--decode",
            &gen.url(),
            "--disagg-threshold",
            "0",
        ])
        .await;
        Pair {
            ctx,
            gen,
            ctx_paths,
            gen_paths,
            fe,
        }
    }

    fn bodies(&self) -> (Vec<Value>, Vec<Value>) {
        (
            self.ctx.bodies.lock().unwrap().clone(),
            self.gen.bodies.lock().unwrap().clone(),
        )
    }

    async fn stop(self) {
        self.fe.shutdown().await;
        self.ctx.stop().await;
        self.gen.stop().await;
    }
}

/// Checks the context and generation requests of one handoff, field by field; gives
/// the first token (the context phase's).
fn check_handoff(ctx: &Value, gen: &Value, max_tokens: u64) -> u64 {
    // To the context server: the request, not streamed, `context_only` with a global id.
    let p = ctx["disaggregated_params"].as_object().unwrap();
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p["request_type"], "context_only");
    let id = p["disagg_request_id"].as_u64().unwrap();
    assert!(((1 << 40)..(1 << 63)).contains(&id), "{id}");
    assert_eq!(ctx["stream"], false);
    assert_eq!(ctx["max_tokens"], max_tokens);
    let prompt: Vec<u64> = ctx["prompt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    for absent in ["stream_options", "return_token_ids", "kv_transfer_params"] {
        assert!(
            ctx.get(absent).is_none(),
            "`{absent}` sent to the context server"
        );
    }

    // To the generation server: the context answer's params as they were, but for
    // `request_type` and the id; its usage as `ctx_usage`; its prompt ids.
    let n = prompt.len() as u64 + 1;
    let first = FIRST + n;
    let want = json!({
        "request_type": "generation_only",
        "first_gen_tokens": [first],
        "first_gen_log_probs": null,
        "first_gen_logits": null,
        "ctx_request_id": CTX_REQUEST_ID,
        "encoded_opaque_state": "b3BhcXVlLXN0YXRl",
        "draft_tokens": null,
        "disagg_request_id": id,
        "ctx_dp_rank": 1,
        "ctx_info_endpoint": "tcp://10.0.0.7:5600",
        "schedule_style": null,
        "conversation_id": null,
        "ctx_usage": {
            "prompt_tokens": n,
            "total_tokens": n + 1,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    });
    assert_eq!(gen["disaggregated_params"], want);
    let mut with_bos = vec![BOS];
    with_bos.extend(&prompt);
    assert_eq!(gen["prompt"], json!(with_bos));
    assert_eq!(gen["stream"], true);
    assert_eq!(gen["stream_options"]["include_usage"], true);
    assert_eq!(gen["max_tokens"], max_tokens);
    for absent in ["return_token_ids", "kv_transfer_params"] {
        assert!(
            gen.get(absent).is_none(),
            "`{absent}` sent to the generation server"
        );
    }
    first
}

/// (text, token ids, finish reasons) of a streamed completions answer.
fn read_stream(body: &str) -> (String, Vec<u64>, Vec<String>) {
    let (mut text, mut ids, mut finish) = (String::new(), Vec::new(), Vec::new());
    let mut done = false;
    for line in body.lines() {
        let Some(d) = line.strip_prefix("data: ") else {
            continue;
        };
        if d == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(d).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        let Some(c) = v["choices"].get(0) else {
            continue;
        };
        text.push_str(c["text"].as_str().unwrap());
        if let Some(t) = c["token_ids"].as_array() {
            ids.extend(t.iter().map(|t| t.as_u64().unwrap()));
        }
        if let Some(f) = c["finish_reason"].as_str() {
            finish.push(f.to_owned());
        }
    }
    assert!(done, "no [DONE] in {body}");
    (text, ids, finish)
}

fn texts(ids: std::ops::Range<u64>) -> String {
    ids.map(|i| format!(" t{i}")).collect()
}

#[tokio::test]
async fn a_streamed_completion_goes_to_the_context_then_the_generation_server() {
    let pair = Pair::start(Context::Handoff("not_finished")).await;
    let (s, body) = post(
        &pair.fe,
        "/v1/completions",
        r#"{"model":"stub","prompt":"abc","max_tokens":4,"stream":true,"return_token_ids":true}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (ctx, gen) = pair.bodies();
    assert_eq!((ctx.len(), gen.len()), (1, 1));
    let first = check_handoff(&ctx[0], &gen[0], 4);
    // The context phase's token comes once, first, from the generation server.
    let (text, ids, finish) = read_stream(&body);
    assert_eq!(ids, (first..first + 4).collect::<Vec<_>>());
    assert_eq!(text, texts(first..first + 4));
    assert_eq!(finish, ["length"]);
    assert_eq!(*pair.ctx_paths.lock().unwrap(), ["/v1/completions"]);
    assert_eq!(*pair.gen_paths.lock().unwrap(), ["/v1/completions"]);
    assert_eq!(pair.fe.handle().metrics().disaggs(Disagg::Remote), 1);
    pair.stop().await;
}

#[tokio::test]
async fn non_streamed_completions_and_chats_take_the_same_way() {
    // `length` (the context phase reached `max_tokens`) hands off as `not_finished` does.
    let pair = Pair::start(Context::Handoff("length")).await;
    let (s, body) = post(
        &pair.fe,
        "/v1/completions",
        r#"{"model":"stub","prompt":"abcd","max_tokens":3}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (ctx, gen) = pair.bodies();
    let first = check_handoff(&ctx[0], &gen[0], 3);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["text"], texts(first..first + 3));
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let (s, body) = post(
        &pair.fe,
        "/v1/chat/completions",
        r#"{"model":"stub","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (ctx, gen) = pair.bodies();
    assert_eq!((ctx.len(), gen.len()), (2, 2));
    let first = check_handoff(&ctx[1], &gen[1], 2);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        texts(first..first + 2)
    );
    // Chats reach both servers as completions of the rendered prompt's ids.
    assert_eq!(*pair.ctx_paths.lock().unwrap(), ["/v1/completions"; 2]);
    assert_eq!(*pair.gen_paths.lock().unwrap(), ["/v1/completions"; 2]);
    assert_eq!(pair.fe.handle().metrics().disaggs(Disagg::Remote), 2);
    pair.stop().await;
}

#[tokio::test]
async fn a_request_its_first_token_ended_is_the_context_servers_answer() {
    let pair = Pair::start(Context::Stopped).await;
    let (s, body) = post(
        &pair.fe,
        "/v1/completions",
        r#"{"model":"stub","prompt":"abc","max_tokens":4,"stream":true}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (text, _, finish) = read_stream(&body);
    assert_eq!(text, " end");
    assert_eq!(finish, ["stop"]);
    let (ctx, gen) = pair.bodies();
    assert_eq!(ctx.len(), 1);
    assert!(gen.is_empty(), "a generation request was sent: {gen:?}");
    assert_eq!(pair.fe.handle().metrics().disaggs(Disagg::Remote), 1);
    pair.stop().await;
}

#[tokio::test]
async fn a_context_answer_without_params_is_an_upstream_error_naming_the_instance() {
    let pair = Pair::start(Context::NoParams).await;

    // The handshake's error names the instance and the missing field.
    let registry = Registry::new(BreakerConfig::default());
    let worker = registry
        .add(WorkerSpec::new(pair.ctx.url(), Role::Prefill))
        .unwrap();
    let request: CompletionRequest =
        serde_json::from_value(json!({"model": "stub", "prompt": [5, 6, 7], "stream": true}))
            .unwrap();
    let r = disagg::build(HandshakeKind::Trtllm)
        .prefill(PrefillCtx {
            client: &upstream::client(Duration::from_secs(5)),
            worker: &worker,
            request: &request,
            timeout: Duration::from_secs(5),
            rand: 7,
        })
        .await;
    let Err(UpstreamError::Failed(m)) = r else {
        panic!("not a failure: {r:?}")
    };
    assert!(m.starts_with(&format!("`{}`: ", pair.ctx.url())), "{m}");
    assert!(m.contains("no `choices[0].disaggregated_params`"), "{m}");

    // The frontend treats it as any failed prefill: the decode worker prefills itself,
    // and gets an ordinary request (no handoff, nothing TensorRT-LLM would refuse).
    let (s, body) = post(
        &pair.fe,
        "/v1/completions",
        r#"{"model":"stub","prompt":"abc","max_tokens":2,"stream":true,"return_token_ids":true}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (ctx, gen) = pair.bodies();
    assert_eq!((ctx.len(), gen.len()), (2, 1));
    assert_eq!(gen[0]["prompt"], ctx[1]["prompt"]);
    for absent in [
        "disaggregated_params",
        "return_token_ids",
        "kv_transfer_params",
    ] {
        assert!(gen[0].get(absent).is_none(), "`{absent}` in {}", gen[0]);
    }
    let n = gen[0]["prompt"].as_array().unwrap().len() as u64;
    assert_eq!(read_stream(&body).1, [n, n + 1]);
    let h = pair.fe.handle();
    let m = h.metrics();
    assert_eq!(
        (m.disaggs(Disagg::Remote), m.disaggs(Disagg::Local)),
        (0, 1)
    );
    pair.stop().await;
}
