//! Client request bodies → a checked [`Prepared`] request: parsed with the OpenAI wire
//! types, validated, tokenised. Every refusal is a 400 (or 404 for the model) naming the
//! field.

use crate::error::{ApiError, ErrorType};
use crate::openai::{ChatCompletionRequest, CompletionRequest, Prompt, StopSpec};
use crate::tokenizer::Tokenizer;
use serde::de::DeserializeOwned;
use std::time::Instant;

/// A request ready to route.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// Most tokens to generate (`None`: the engine's default, what the context leaves).
    pub max_tokens: Option<u32>,
    /// Fewest tokens before end-of-sequence may stop the output.
    pub min_tokens: Option<u32>,
    /// Generate past end-of-sequence.
    pub ignore_eos: Option<bool>,
    /// Sampler seed.
    pub seed: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Stop strings.
    pub stop: Option<StopSpec>,
    /// Answer as server-sent events.
    pub stream: bool,
    /// Send a usage chunk before `[DONE]`.
    pub include_usage: bool,
    /// Add token ids to the answer.
    pub return_token_ids: bool,
    /// Session key (header, else `user`), for `--policy session`.
    pub session: Option<String>,
    /// When the body arrived (for TTFT and routing overhead).
    pub received: Instant,
}

/// Deserialises `body`; on failure, a 400 naming the field (found by a second, slower
/// pass that tracks the path).
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(first) => {
            let de = &mut serde_json::Deserializer::from_slice(body);
            let (path, inner) = match serde_path_to_error::deserialize::<_, T>(de) {
                Ok(_) => (String::new(), first),
                Err(e) => (e.path().to_string(), e.into_inner()),
            };
            let msg = inner.to_string();
            // `?` (unknown) for syntax errors, `.` for the root object.
            let path = if path == "?" || path == "." {
                String::new()
            } else {
                path
            };
            // `missing field `x`` is reported at the parent: name the field itself.
            let field = match msg.strip_prefix("missing field `") {
                Some(rest) => {
                    let name = rest.split('`').next().unwrap_or_default();
                    if path.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{path}.{name}")
                    }
                }
                None if path.is_empty() => String::new(),
                None => path,
            };
            let e = if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::bad_request(format!(
                    "the body is not valid JSON: {msg}"
                )));
            } else if field.is_empty() {
                ApiError::bad_request(format!("invalid request body: {msg}"))
            } else {
                ApiError::bad_request(format!("`{field}`: {msg}"))
            };
            Err(if field.is_empty() { e } else { e.param(field) })
        }
    }
}

fn check_model(model: &str, served: &str) -> Result<(), ApiError> {
    if model == served {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorType::NotFound,
            format!("the model `{model}` does not exist; this server serves `{served}`"),
        )
        .param("model"))
    }
}

fn check_common(max_tokens: Option<u32>, n: Option<u32>, min: Option<u32>) -> Result<(), ApiError> {
    if max_tokens == Some(0) {
        return Err(ApiError::bad_request("`max_tokens` must be at least 1").param("max_tokens"));
    }
    if n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("only `n` = 1 is supported").param("n"));
    }
    if let (Some(min), Some(max)) = (min, max_tokens) {
        if min > max {
            return Err(ApiError::bad_request(format!(
                "`min_tokens` ({min}) must not exceed `max_tokens` ({max})"
            ))
            .param("min_tokens"));
        }
    }
    Ok(())
}

/// What the body does not say but the request needs.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    pub served_model: &'a str,
    pub tokenizer: &'a dyn Tokenizer,
    pub session: Option<String>,
    pub received: Instant,
}

/// A `/v1/completions` body.
pub(crate) fn completion(body: &[u8], cx: Context<'_>) -> Result<Prepared, ApiError> {
    let r: CompletionRequest = parse(body)?;
    check_model(&r.model, cx.served_model)?;
    check_common(r.max_tokens, r.n, r.min_tokens)?;
    let prompt = match r.prompt {
        Prompt::Text(t) => {
            let mut ids = Vec::with_capacity(t.len());
            cx.tokenizer.encode_into(&t, &mut ids);
            ids
        }
        Prompt::Tokens(ids) => ids,
        Prompt::Texts(mut v) if v.len() == 1 => {
            let mut ids = Vec::new();
            cx.tokenizer.encode_into(&v.remove(0), &mut ids);
            ids
        }
        Prompt::TokenBatch(mut v) if v.len() == 1 => v.remove(0),
        p if p.is_empty() => {
            return Err(ApiError::bad_request("`prompt` must not be an empty list").param("prompt"))
        }
        _ => {
            return Err(ApiError::bad_request(
                "batched prompts are not supported by the frontend; send one request per prompt",
            )
            .param("prompt"))
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_request("the prompt must not be empty").param("prompt"));
    }
    Ok(Prepared {
        prompt,
        // vLLM's default for completions.
        max_tokens: Some(r.max_tokens.unwrap_or(16)),
        min_tokens: r.min_tokens,
        ignore_eos: r.ignore_eos,
        seed: r.seed,
        temperature: r.temperature,
        top_p: r.top_p,
        stop: r.stop,
        stream: r.stream,
        include_usage: r.stream_options.is_some_and(|o| o.include_usage),
        return_token_ids: r.return_token_ids.unwrap_or(false),
        session: cx.session,
        received: cx.received,
    })
}

/// A `/v1/chat/completions` body.
pub(crate) fn chat(body: &[u8], cx: Context<'_>) -> Result<Prepared, ApiError> {
    let r: ChatCompletionRequest = parse(body)?;
    check_model(&r.model, cx.served_model)?;
    let max_tokens = r.max_tokens();
    let field = if r.max_completion_tokens.is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    check_common(max_tokens, r.n, r.min_tokens).map_err(|mut e| {
        if e.param.as_deref() == Some("max_tokens") {
            e.param = Some(field.into());
        }
        e
    })?;
    if r.messages.is_empty() {
        return Err(ApiError::bad_request("`messages` must not be empty").param("messages"));
    }
    let prompt = cx
        .tokenizer
        .encode_chat(&r.messages)
        .map_err(|e| ApiError::bad_request(format!("`messages`: {e}")).param("messages"))?;
    Ok(Prepared {
        prompt,
        max_tokens,
        min_tokens: r.min_tokens,
        ignore_eos: r.ignore_eos,
        seed: r.seed,
        temperature: r.temperature,
        top_p: r.top_p,
        stop: r.stop,
        stream: r.stream,
        include_usage: r.stream_options.is_some_and(|o| o.include_usage),
        return_token_ids: r.return_token_ids.unwrap_or(false),
        session: cx.session,
        received: cx.received,
    })
}

/// The `user` field of a body, read only when the session policy needs it.
pub(crate) fn user_field(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct User {
        #[serde(default)]
        user: Option<String>,
    }
    serde_json::from_slice::<User>(body).ok()?.user
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::ByteTokenizer;

    fn cx() -> Context<'static> {
        Context {
            served_model: "m",
            tokenizer: &ByteTokenizer,
            session: None,
            received: Instant::now(),
        }
    }

    fn err(body: &str, chat_api: bool) -> ApiError {
        if chat_api {
            chat(body.as_bytes(), cx()).unwrap_err()
        } else {
            completion(body.as_bytes(), cx()).unwrap_err()
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(r#"{"model":"m","prompt":"x","max_tokens":"ten"}"#, false);
        assert_eq!(e.param.as_deref(), Some("max_tokens"), "{e}");
        assert!(e.message.starts_with("`max_tokens`: invalid type"), "{e}");
        let e = err(r#"{"prompt":"x"}"#, false);
        assert_eq!(e.param.as_deref(), Some("model"), "{e}");
        let e = err(r#"{"model":"m","messages":[{"content":"hi"}]}"#, true);
        assert_eq!(e.param.as_deref(), Some("messages[0].role"), "{e}");
        let e = err(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":"yes"}"#,
            true,
        );
        assert_eq!(e.param.as_deref(), Some("stream"), "{e}");
        let e = err(r#"{"model":"m","messages":[]}"#, true);
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = err(r#"{"model":"m","prompt":"x","max_tokens":0}"#, false);
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let e = err(r#"{"model":"other","prompt":"x"}"#, false);
        assert_eq!(e.kind, ErrorType::NotFound);
        let e = err(r#"{"model":"m","prompt":["a","b"]}"#, false);
        assert_eq!(e.param.as_deref(), Some("prompt"));
        let e = err("{not json", false);
        assert_eq!(e.kind, ErrorType::BadRequest);
        assert_eq!(e.param, None);
    }

    #[test]
    fn prompts_become_token_ids() {
        let p = completion(br#"{"model":"m","prompt":"ab"}"#, cx()).unwrap();
        assert_eq!(p.prompt, [97, 98]);
        assert_eq!(p.max_tokens, Some(16));
        let p = completion(br#"{"model":"m","prompt":[5,6,7],"max_tokens":3}"#, cx()).unwrap();
        assert_eq!(p.prompt, [5, 6, 7]);
        let p = chat(
            br#"{"model":"m","messages":[{"role":"user","content":"a"}],"max_completion_tokens":4,"max_tokens":9}"#,
            cx(),
        )
        .unwrap();
        assert_eq!(p.max_tokens, Some(4));
        assert_eq!(p.prompt.len(), 4);
        assert_eq!(
            user_field(br#"{"user":"alice","model":"m"}"#).as_deref(),
            Some("alice")
        );
    }
}
