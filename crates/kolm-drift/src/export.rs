//! The export line: a drift input in the shape `kolmctl compile` reads as an
//! example line without an output, `{"input":"..."}` for a text and
//! `{"messages":[...]}` for a chat.

use serde::Serialize;

use crate::entry::{DriftInput, Message};

#[derive(Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Text { input: &'a str },
    Chat { messages: &'a [Message] },
}

/// The JSON line (without its newline) for `input`.
pub fn line(input: &DriftInput) -> String {
    let line = match input {
        DriftInput::Text(input) => Line::Text { input },
        DriftInput::Chat(messages) => Line::Chat { messages },
    };
    // Strings and string structs always serialize.
    serde_json::to_string(&line).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_chat_lines() {
        assert_eq!(
            line(&DriftInput::Text("a \"q\"\nb".into())),
            r#"{"input":"a \"q\"\nb"}"#
        );
        let chat = DriftInput::Chat(vec![
            Message {
                role: "system".into(),
                content: "s".into(),
            },
            Message {
                role: "user".into(),
                content: "u".into(),
            },
        ]);
        assert_eq!(
            line(&chat),
            r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}]}"#
        );
    }
}
