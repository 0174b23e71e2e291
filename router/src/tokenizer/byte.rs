//! The built-in tokenizer: one token per UTF-8 byte (ids 0–255), plus a few special ids
//! for the chat format. No files, no vocabulary; for the simulator and for tests.

use super::{ChatError, Tokenizer};
use crate::openai::ChatMessage;

/// First special id: role markers follow, then the end-of-message marker.
const SPECIAL: u32 = 256;
/// Ends each chat message.
pub(crate) const END_OF_MESSAGE: u32 = SPECIAL + 8;

/// Bytes as token ids; chats as `<role> content <end>` per message, then `<assistant>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteTokenizer;

fn role_id(role: &str) -> u32 {
    SPECIAL
        + match role {
            "system" | "developer" => 0,
            "user" => 1,
            "assistant" => 2,
            "tool" => 3,
            _ => 4,
        }
}

impl Tokenizer for ByteTokenizer {
    fn name(&self) -> &'static str {
        "byte"
    }

    fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        out.extend(text.bytes().map(u32::from));
    }

    fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().filter_map(|&id| u8::try_from(id).ok()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, ChatError> {
        let mut out = Vec::with_capacity(
            messages
                .iter()
                .map(|m| m.content.as_ref().map_or(0, |c| c.text().len()) + 2)
                .sum::<usize>()
                + 1,
        );
        for m in messages {
            out.push(role_id(&m.role));
            if let Some(c) = &m.content {
                self.encode_into(&c.text(), &mut out);
            }
            out.push(END_OF_MESSAGE);
        }
        out.push(role_id("assistant"));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::MessageContent;

    #[test]
    fn round_trips_text_and_frames_chats() {
        let t = ByteTokenizer;
        let mut ids = Vec::new();
        t.encode_into("héllo", &mut ids);
        assert_eq!(ids.len(), 6);
        assert_eq!(t.decode(&ids), "héllo");
        let msgs = vec![ChatMessage {
            role: "user".into(),
            content: Some(MessageContent::Text("hi".into())),
        }];
        let chat = t.encode_chat(&msgs).unwrap();
        assert_eq!(
            chat,
            vec![
                SPECIAL + 1,
                b'h' as u32,
                b'i' as u32,
                END_OF_MESSAGE,
                SPECIAL + 2
            ]
        );
        // Special ids decode to nothing.
        assert_eq!(t.decode(&chat), "hi");
    }
}
