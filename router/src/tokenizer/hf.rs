//! The model's own tokenizer (`tokenizer.json`, Hugging Face `tokenizers`) and chat
//! template (`tokenizer_config.json`'s `chat_template`, rendered with `minijinja`).
//!
//! Templates that call Python string methods (`.strip()`, …) need minijinja's
//! `pycompat` callbacks, which are not installed: such a template fails with a message
//! naming the method.

use super::{ChatError, Tokenizer, TokenizerError};
use crate::openai::ChatMessage;
use std::path::Path;

/// A Hugging Face tokenizer with its chat template.
#[derive(Debug)]
pub struct HfTokenizer {
    tok: tokenizers::Tokenizer,
    env: minijinja::Environment<'static>,
    has_template: bool,
    bos: String,
    eos: String,
}

fn special(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

impl HfTokenizer {
    /// Loads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let path = dir.join("tokenizer.json");
        let tok = tokenizers::Tokenizer::from_file(&path).map_err(|e| TokenizerError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = match std::fs::read_to_string(&cfg_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| TokenizerError::Parse {
                path: cfg_path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Value::Null,
            Err(source) => {
                return Err(TokenizerError::Read {
                    path: cfg_path.display().to_string(),
                    source,
                })
            }
        };
        // `chat_template` is a string, or a list of `{name, template}` (take `default`).
        let template = match &cfg["chat_template"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .or_else(|| list.first())
                .and_then(|t| t["template"].as_str())
                .map(str::to_owned),
            _ => None,
        };
        let mut env = minijinja::Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let has_template = template.is_some();
        if let Some(t) = template {
            env.add_template_owned("chat", t)
                .map_err(|e| TokenizerError::Parse {
                    path: cfg_path.display().to_string(),
                    message: format!("`chat_template`: {e}"),
                })?;
        }
        Ok(HfTokenizer {
            tok,
            env,
            has_template,
            bos: special(&cfg["bos_token"]),
            eos: special(&cfg["eos_token"]),
        })
    }
}

impl Tokenizer for HfTokenizer {
    fn name(&self) -> &'static str {
        "hf"
    }

    fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        if let Ok(e) = self.tok.encode(text, false) {
            out.extend_from_slice(e.get_ids());
        }
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.tok.decode(ids, true).unwrap_or_default()
    }

    fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, ChatError> {
        if !self.has_template {
            return Err(ChatError(
                "the model has no `chat_template` in `tokenizer_config.json`; use `/v1/completions`"
                    .into(),
            ));
        }
        let msgs: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                serde_json::json!({
                    "role": m.role,
                    "content": m.content.as_ref().map(|c| c.text().into_owned()).unwrap_or_default(),
                })
            })
            .collect();
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| ChatError(e.to_string()))?;
        let text = tmpl
            .render(minijinja::context! {
                messages => msgs,
                add_generation_prompt => true,
                bos_token => self.bos,
                eos_token => self.eos,
            })
            .map_err(|e| ChatError(format!("the chat template failed: {e}")))?;
        // The template writes special tokens (BOS, role markers) as text: parse them.
        let e = self
            .tok
            .encode(text, false)
            .map_err(|e| ChatError(e.to_string()))?;
        Ok(e.get_ids().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::MessageContent;

    /// A tiny word-level tokenizer and a template, written to a temp dir.
    #[test]
    fn loads_a_model_dir_and_renders_its_template() {
        let dir = std::env::temp_dir().join(format!("cohort-hf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokenizer = serde_json::json!({
            "version": "1.0",
            "truncation": null, "padding": null,
            "added_tokens": [
                {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "<|user|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "<|assistant|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"<s>": 0, "<|user|>": 1, "<|assistant|>": 2, "hello": 3, "world": 4, "[UNK]": 5}, "unk_token": "[UNK]"}
        });
        std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
        let cfg = serde_json::json!({
            "bos_token": "<s>",
            "chat_template": "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|> {{ m.content }} {% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
        });
        std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
        let t = HfTokenizer::from_dir(&dir).unwrap();
        let mut ids = Vec::new();
        t.encode_into("hello world zebra", &mut ids);
        assert_eq!(ids, [3, 4, 5]);
        let chat = t
            .encode_chat(&[ChatMessage {
                role: "user".into(),
                content: Some(MessageContent::Text("hello world".into())),
            }])
            .unwrap();
        assert_eq!(chat, [0, 1, 3, 4, 2]);
        assert_eq!(t.decode(&[3, 4]), "hello world");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
