//! Request bodies never crash the frontend: whatever the bytes, the answer is a 200 or
//! an OpenAI-shaped JSON error (the fuzz target of the issue, as a property test).

use crate::frontend::{frontend, post};
use crate::stub::{Behaviour, Stub};
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z ]{0,12}".prop_map(Value::from),
        Just(Value::from("stub")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "model",
                        "prompt",
                        "messages",
                        "role",
                        "content",
                        "max_tokens",
                        "stream",
                        "stream_options",
                        "n",
                        "min_tokens",
                        "seed",
                        "x",
                    ]),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        (json_value().prop_map(|v| v.to_string()), any::<bool>()),
        (".{0,64}", any::<bool>()),
        (
            (json_value(), 1u32..50, any::<bool>()).prop_map(|(p, m, s)| {
                format!(r#"{{"model":"stub","prompt":{p},"max_tokens":{m},"stream":{s}}}"#)
            }),
            Just(false)
        ),
    ]
}

#[test]
fn any_body_gets_200_or_a_json_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (stub, fe) = rt.block_on(async {
        let stub = Stub::start(Behaviour::default()).await;
        let fe = frontend(&["--worker", &stub.url()]).await;
        (stub, fe)
    });
    proptest!(ProptestConfig::with_cases(256), |((b, chat) in body())| {
        let path = if chat { "/v1/chat/completions" } else { "/v1/completions" };
        let (status, text) = rt.block_on(post(&fe, path, &b));
        if status != 200 {
            prop_assert!((400..500).contains(&status) || status == 502, "{status} for {b}: {text}");
            let v: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            prop_assert!(v["error"]["type"].is_string(), "{text}");
            prop_assert_eq!(v["error"]["code"].as_u64(), Some(status as u64));
        }
    });
    rt.block_on(async {
        fe.shutdown().await;
        stub.stop().await;
    });
}
