//! Prompt files: ShareGPT conversations and plain JSONL.

use super::{estimate_tokens, PromptData};
use crate::rng::Rng;
use crate::settings::LengthDist;
use cohort_router::openai::{ChatMessage, Prompt};
use serde::Deserialize;

/// One prompt from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileItem {
    /// The prompt.
    pub prompt: PromptData,
    /// `max_tokens`.
    pub max_tokens: u32,
}

#[derive(Deserialize)]
struct Conversation {
    #[serde(default)]
    conversations: Vec<Turn>,
}

#[derive(Deserialize)]
struct Turn {
    from: String,
    value: String,
}

/// Parses a ShareGPT file (a JSON array of `{"conversations": [{"from", "value"}, ...]}`):
/// the first human turn is the prompt and the answer after it gives the output length
/// (unless `output` is given). Conversations without a human turn followed by an answer
/// are skipped; a file with none left is an error.
pub fn parse_sharegpt(
    text: &str,
    output: Option<&LengthDist>,
    seed: u64,
) -> Result<Vec<FileItem>, (usize, String)> {
    let convs: Vec<Conversation> =
        serde_json::from_str(text).map_err(|e| (e.line(), e.to_string()))?;
    let mut rng = Rng::derive(seed, 0x5348_4152);
    let mut out = Vec::new();
    for c in convs {
        let Some(i) = c
            .conversations
            .iter()
            .position(|t| t.from == "human" || t.from == "user")
        else {
            continue;
        };
        let (Some(q), Some(a)) = (c.conversations.get(i), c.conversations.get(i + 1)) else {
            continue;
        };
        if q.value.is_empty() {
            continue;
        }
        let max_tokens = match output {
            Some(d) => d.sample(&mut rng),
            None => estimate_tokens(&a.value),
        };
        out.push(FileItem {
            prompt: PromptData::Text(q.value.clone()),
            max_tokens,
        });
    }
    if out.is_empty() {
        return Err((
            0,
            "no conversation has a human turn followed by an answer".to_owned(),
        ));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlLine {
    #[serde(default)]
    prompt: Option<Prompt>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    #[serde(default, alias = "output_len", alias = "max_completion_tokens")]
    max_tokens: Option<u32>,
}

/// Parses JSONL, one `{"prompt": "text" | [ids], "max_tokens": N}` or
/// `{"messages": [...], "max_tokens": N}` a line; `output` gives lengths where
/// `max_tokens` is absent. Blank lines are skipped; unknown keys are errors.
pub fn parse_jsonl(
    text: &str,
    output: &LengthDist,
    seed: u64,
) -> Result<Vec<FileItem>, (usize, String)> {
    let mut rng = Rng::derive(seed, 0x4A53_4F4E);
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let l: JsonlLine = serde_json::from_str(line).map_err(|e| (i + 1, e.to_string()))?;
        let prompt = match (l.prompt, l.messages) {
            (Some(Prompt::Text(t)), None) => PromptData::Text(t),
            (Some(Prompt::Tokens(t)), None) if !t.is_empty() => PromptData::Tokens(t),
            (None, Some(m)) if !m.is_empty() => PromptData::Messages(m),
            (Some(_), Some(_)) => return Err((i + 1, "give `prompt` or `messages`, not both".to_owned())),
            (None, None) => return Err((i + 1, "a line needs `prompt` or `messages`".to_owned())),
            _ => {
                return Err((
                    i + 1,
                    "`prompt` must be one text or one non-empty list of token ids, `messages` a non-empty list".to_owned(),
                ))
            }
        };
        let max_tokens = match l.max_tokens {
            Some(0) => return Err((i + 1, "`max_tokens` must be at least 1; given 0".to_owned())),
            Some(n) => n,
            None => output.sample(&mut rng),
        };
        out.push(FileItem { prompt, max_tokens });
    }
    if out.is_empty() {
        return Err((0, "the file has no prompt".to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharegpt_takes_first_exchange() {
        let t = r#"[{"id":"a","conversations":[{"from":"human","value":"hi there"},{"from":"gpt","value":"12345678"}]},
                    {"conversations":[{"from":"gpt","value":"orphan"}]}]"#;
        let items = parse_sharegpt(t, None, 0).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].prompt, PromptData::Text("hi there".into()));
        assert_eq!(items[0].max_tokens, 2);
        let items = parse_sharegpt(t, Some(&LengthDist::Fixed(7)), 0).unwrap();
        assert_eq!(items[0].max_tokens, 7);
        assert!(parse_sharegpt("[]", None, 0).is_err());
    }

    #[test]
    fn jsonl_forms_and_errors() {
        let t = "{\"prompt\": \"abc\", \"max_tokens\": 3}\n{\"prompt\": [1,2,3]}\n\n{\"messages\": [{\"role\":\"user\",\"content\":\"x\"}], \"output_len\": 9}\n";
        let items = parse_jsonl(t, &LengthDist::Fixed(5), 0).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].prompt, PromptData::Tokens(vec![1, 2, 3]));
        assert_eq!(items[1].max_tokens, 5);
        assert_eq!(items[2].max_tokens, 9);
        assert_eq!(
            parse_jsonl(
                "{\"prompt\": \"a\"}\n{\"promt\": \"a\"}",
                &LengthDist::Fixed(1),
                0
            )
            .unwrap_err()
            .0,
            2
        );
        assert_eq!(
            parse_jsonl(
                "{\"prompt\": \"a\", \"max_tokens\": 0}",
                &LengthDist::Fixed(1),
                0
            )
            .unwrap_err()
            .0,
            1
        );
    }
}
