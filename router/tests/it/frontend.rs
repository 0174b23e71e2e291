//! The frontend against stand-in engines: migration without lost or repeated tokens,
//! retries, the engines' refusals passed on, limits, both handshakes, the worker handle.

use crate::stub::{Behaviour, Stub};
use bytes::Bytes;
use clap::Parser;
use cohort_router::metrics::{Disagg, Migration};
use cohort_router::{ErrorType, Frontend, Role, ServeArgs, WorkerSpec};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub(crate) async fn frontend(args: &[&str]) -> Frontend {
    let a = ServeArgs::parse_from(
        [
            "serve",
            "--port",
            "0",
            "--health-interval-s",
            "0",
            "--model",
            "stub",
        ]
        .iter()
        .chain(args),
    );
    Frontend::start(a.resolve(|_| None).unwrap()).await.unwrap()
}

pub(crate) async fn post(fe: &Frontend, path: &str, body: &str) -> (u16, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::post(format!("http://{}{path}", fe.addr()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let r = client.request(req).await.unwrap();
    let status = r.status().as_u16();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(b.to_vec()).unwrap())
}

/// Token ids and error events of an SSE body.
fn stream_ids(body: &str) -> (Vec<u64>, Vec<Value>) {
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    for line in body.lines() {
        let Some(d) = line.strip_prefix("data: ") else {
            continue;
        };
        if d == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(d).unwrap();
        if v.get("error").is_some() {
            errors.push(v);
            continue;
        }
        if let Some(c) = v["choices"].get(0) {
            ids.extend(
                c["token_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_u64().unwrap()),
            );
        }
    }
    (ids, errors)
}

const STREAM: &str =
    r#"{"model":"stub","prompt":"abc","max_tokens":12,"stream":true,"return_token_ids":true}"#;

#[tokio::test]
async fn a_broken_stream_continues_elsewhere_with_every_token_once() {
    let a = Stub::start(Behaviour {
        die_after: Some(5),
        ..Default::default()
    })
    .await;
    let b = Stub::start(Behaviour::default()).await;
    let fe = frontend(&[
        "--policy",
        "round-robin",
        "--worker",
        &a.url(),
        "--worker",
        &b.url(),
    ])
    .await;
    let (s, body) = post(&fe, "/v1/completions", STREAM).await;
    assert_eq!(s, 200);
    let (ids, errors) = stream_ids(&body);
    assert!(errors.is_empty(), "{body}");
    // Prompt "abc" is 3 tokens: outputs 3, 4, … 14, consecutive across the migration.
    assert_eq!(ids, (3..15).collect::<Vec<u64>>(), "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"));
    // The second engine got the prompt plus the five tokens already sent, and the rest
    // of the budget.
    let second = b.bodies.lock().unwrap()[0].clone();
    assert_eq!(
        second["prompt"],
        serde_json::json!([97, 98, 99, 3, 4, 5, 6, 7])
    );
    assert_eq!(second["max_tokens"], 7);
    assert_eq!(fe.handle().metrics().migrations(Migration::Resumed), 1);
    fe.shutdown().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn migrations_are_limited_and_retries_happen_before_the_first_token() {
    let a = Stub::start(Behaviour {
        die_after: Some(2),
        ..Default::default()
    })
    .await;
    let b = Stub::start(Behaviour {
        die_after: Some(2),
        ..Default::default()
    })
    .await;
    let fe = frontend(&[
        "--policy",
        "round-robin",
        "--max-migrations",
        "1",
        "--worker",
        &a.url(),
        "--worker",
        &b.url(),
    ])
    .await;
    let (s, body) = post(&fe, "/v1/completions", STREAM).await;
    assert_eq!(s, 200);
    let (ids, errors) = stream_ids(&body);
    assert_eq!(ids, (3..7).collect::<Vec<u64>>());
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["error"]["type"], "BadGatewayError");
    assert_eq!(fe.handle().metrics().migrations(Migration::Exhausted), 1);
    fe.shutdown().await;

    // Dies before its first token: retried on the other engine, invisibly.
    let dead = Stub::start(Behaviour {
        die_after: Some(0),
        ..Default::default()
    })
    .await;
    let fe = frontend(&[
        "--policy",
        "round-robin",
        "--worker",
        &dead.url(),
        "--worker",
        &a.url(),
    ])
    .await;
    let (s, body) = post(
        &fe,
        "/v1/completions",
        r#"{"model":"stub","prompt":"abc","max_tokens":2}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["text"], " t3 t4");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
    fe.shutdown().await;
    for s in [a, b, dead] {
        s.stop().await;
    }
}

#[tokio::test]
async fn refusals_limits_and_missing_workers_get_their_status() {
    let refusing = Stub::start(Behaviour {
        status: Some(400),
        ..Default::default()
    })
    .await;
    let fe = frontend(&[
        "--worker",
        &refusing.url(),
        "--max-body-bytes",
        "200",
        "--block-size",
        "32",
    ])
    .await;
    let (s, body) = post(&fe, "/v1/completions", r#"{"model":"stub","prompt":"abc"}"#).await;
    assert_eq!(s, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["param"], "prompt");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stub says 400"));
    let big = format!(r#"{{"model":"stub","prompt":"{}"}}"#, "x".repeat(300));
    assert_eq!(post(&fe, "/v1/completions", &big).await.0, 413);
    assert_eq!(post(&fe, "/v2/nothing", "{}").await.0, 404);
    assert_eq!(fe.handle().metrics().errors(ErrorType::PayloadTooLarge), 1);
    // Remove the only worker: 503.
    let h = fe.handle();
    let (id, _) = h.workers()[0].clone();
    h.remove_worker(id).unwrap();
    let (s, body) = post(&fe, "/v1/completions", r#"{"model":"stub","prompt":"abc"}"#).await;
    assert_eq!(s, 503, "{body}");
    // Add one back at run time: served again.
    let ok = Stub::start(Behaviour::default()).await;
    let id = h
        .add_worker(WorkerSpec::new(ok.url(), Role::Aggregated))
        .unwrap();
    // Hashed in the frontend's blocks (`--block-size 32`), not the spec's default 16:
    // otherwise none of its KV events would match a prompt.
    let added = h.workers().into_iter().find(|(w, _)| *w == id).unwrap().1;
    assert_eq!(added.block_size, 32);
    assert_eq!(
        post(
            &fe,
            "/v1/completions",
            r#"{"model":"stub","prompt":"abc","max_tokens":1}"#
        )
        .await
        .0,
        200
    );
    fe.shutdown().await;
    refusing.stop().await;
    ok.stop().await;
}

#[tokio::test]
async fn vllm_handshake_passes_the_prefill_params_to_decode() {
    let p = Stub::start(Behaviour::default()).await;
    let d = Stub::start(Behaviour::default()).await;
    let fe = frontend(&[
        "--prefill",
        &p.url(),
        "--decode",
        &d.url(),
        "--disagg-threshold",
        "0",
    ])
    .await;
    let (s, body) = post(&fe, "/v1/completions", STREAM).await;
    assert_eq!(s, 200, "{body}");
    let pre = p.bodies.lock().unwrap()[0].clone();
    assert_eq!(pre["kv_transfer_params"]["do_remote_decode"], true);
    assert_eq!(pre["max_tokens"], 1);
    assert_eq!(pre["stream"], false);
    let dec = d.bodies.lock().unwrap()[0].clone();
    assert_eq!(dec["kv_transfer_params"]["do_remote_prefill"], true);
    assert_eq!(dec["kv_transfer_params"]["remote_request_id"], "r");
    assert_eq!(fe.handle().metrics().disaggs(Disagg::Remote), 1);
    fe.shutdown().await;

    // Below the threshold: no prefill worker involved.
    let fe = frontend(&[
        "--prefill",
        &p.url(),
        "--decode",
        &d.url(),
        "--disagg-threshold",
        "1000",
    ])
    .await;
    assert_eq!(post(&fe, "/v1/completions", STREAM).await.0, 200);
    assert_eq!(p.bodies.lock().unwrap().len(), 1);
    assert_eq!(fe.handle().metrics().disaggs(Disagg::Local), 1);
    fe.shutdown().await;
    p.stop().await;
    d.stop().await;
}

#[tokio::test]
async fn sglang_handshake_sends_one_room_to_both_sides() {
    let p = Stub::start(Behaviour::default()).await;
    let d = Stub::start(Behaviour::default()).await;
    let fe = frontend(&[
        "--handshake",
        "sglang",
        "--prefill",
        &p.url(),
        "--decode",
        &d.url(),
        "--disagg-threshold",
        "0",
    ])
    .await;
    assert_eq!(post(&fe, "/v1/completions", STREAM).await.0, 200);
    // The prefill side runs alongside: wait for it to arrive.
    for _ in 0..100 {
        if !p.bodies.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let pre = p.bodies.lock().unwrap()[0].clone();
    let dec = d.bodies.lock().unwrap()[0].clone();
    assert!(pre["bootstrap_room"].is_u64());
    assert_eq!(pre["bootstrap_room"], dec["bootstrap_room"]);
    assert_eq!(pre["bootstrap_host"], "127.0.0.1");
    assert_eq!(dec["bootstrap_host"], "127.0.0.1");
    fe.shutdown().await;
    p.stop().await;
    d.stop().await;
}

/// One engine, overloaded for a moment (three 503s open its breaker): with no other
/// worker to turn to, the next request still goes to it — the service does not refuse
/// everything while the only engine's breaker cools down.
#[tokio::test]
async fn the_last_worker_of_a_role_is_tried_even_with_its_breaker_open() {
    use crate::stub::Reply;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let only = Stub::scripted(std::sync::Arc::new(move |_path, _body| {
        if seen.fetch_add(1, Ordering::SeqCst) < 3 {
            return Reply::Json(
                503,
                r#"{"error":{"message":"overloaded","type":"ServiceUnavailableError","code":503}}"#
                    .to_owned(),
            );
        }
        Reply::Events(vec![
            r#"data: {"id":"cmpl-1","object":"text_completion","created":0,"model":"stub","choices":[{"index":0,"text":" ok","token_ids":[7],"finish_reason":"length"}]}"#.to_owned() + "\n\n",
            r#"data: {"id":"cmpl-1","object":"text_completion","created":0,"model":"stub","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#.to_owned() + "\n\n",
            "data: [DONE]\n\n".to_owned(),
        ])
    }))
    .await;
    let fe = frontend(&["--max-retries", "0", "--worker", &only.url()]).await;
    let body = r#"{"model":"stub","prompt":"abc","max_tokens":1}"#;
    for _ in 0..3 {
        let (s, b) = post(&fe, "/v1/completions", body).await;
        assert_eq!(s, 502, "{b}");
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = format!("http://{}/metrics", fe.addr()).parse().unwrap();
    let m = client
        .get(uri)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let m = String::from_utf8(m.to_bytes().to_vec()).unwrap();
    assert!(
        m.contains("cohort_router_worker_breaker_state{worker=\"0\"} 1"),
        "three failures open the breaker:\n{m}"
    );
    let (s, b) = post(&fe, "/v1/completions", body).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    fe.shutdown().await;
    only.stop().await;
}
