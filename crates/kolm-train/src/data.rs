//! Training examples: chat messages, and the JSONL reader for OpenAI-style
//! `{"messages":[...]}` lines and `{"prompt","completion"}` lines.

use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }
}

/// One training conversation. The loss covers the assistant messages only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainExample {
    pub messages: Vec<Message>,
}

impl TrainExample {
    /// A prompt/completion pair as a user turn and an assistant turn.
    pub fn prompt_completion(prompt: &str, completion: &str) -> Self {
        TrainExample {
            messages: vec![
                Message::new("user", prompt),
                Message::new("assistant", completion),
            ],
        }
    }

    /// Checks roles and that there is something to learn.
    pub fn validate(&self) -> Result<(), String> {
        if self.messages.is_empty() {
            return Err("no messages".into());
        }
        for (i, m) in self.messages.iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
                return Err(format!(
                    "message {i} has role '{}' (expected system, user or assistant)",
                    m.role
                ));
            }
        }
        if !self.messages.iter().any(|m| m.role == "assistant") {
            return Err("no assistant message to learn from".into());
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    completion: Option<String>,
}

/// Parses one JSONL line (already known not to be blank).
fn parse_line(text: &str) -> Result<TrainExample, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| format!("not a valid example: {e}"))?;
    let example = match line {
        Line {
            messages: Some(messages),
            prompt: None,
            completion: None,
        } => TrainExample { messages },
        Line {
            messages: None,
            prompt: Some(p),
            completion: Some(c),
        } => TrainExample::prompt_completion(&p, &c),
        _ => {
            return Err("expected either \"messages\" or both \"prompt\" and \"completion\"".into())
        }
    };
    example.validate()?;
    Ok(example)
}

/// Reads a JSONL file of examples; blank lines are skipped. An error names
/// the file and the 1-based line.
pub fn load_jsonl(path: &Path) -> Result<Vec<TrainExample>, TrainError> {
    Ok(load_jsonl_numbered(path)?
        .into_iter()
        .map(|(_, example)| example)
        .collect())
}

/// [`load_jsonl`], each example with its 1-based line number, so that an
/// error about an example (too long, say) can name its line.
pub fn load_jsonl_numbered(path: &Path) -> Result<Vec<(usize, TrainExample)>, TrainError> {
    let file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let example = parse_line(&line).map_err(|detail| TrainError::Data {
            path: path.to_path_buf(),
            line: i + 1,
            detail,
        })?;
        out.push((i + 1, example));
    }
    if out.is_empty() {
        return Err(TrainError::EmptyDataset);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_parse() {
        let a = parse_line(
            r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}"#,
        )
        .unwrap();
        let b = parse_line(r#"{"prompt":"a","completion":"b"}"#).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\":\"a\",\"completion\":\"b\"}\n\n{\"prompt\":\"a\"}\n",
        )
        .unwrap();
        let e = load_jsonl(&path).unwrap_err();
        assert!(matches!(e, TrainError::Data { line: 3, .. }), "{e}");
        assert!(e.to_string().contains("d.jsonl:3:"), "{e}");
        std::fs::write(&path, "{not json\n").unwrap();
        assert!(matches!(
            load_jsonl(&path).unwrap_err(),
            TrainError::Data { line: 1, .. }
        ));
        std::fs::write(
            &path,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}\n",
        )
        .unwrap();
        let e = load_jsonl(&path).unwrap_err();
        assert!(e.to_string().contains("no assistant"), "{e}");
        std::fs::write(&path, "\n  \n").unwrap();
        assert!(matches!(
            load_jsonl(&path).unwrap_err(),
            TrainError::EmptyDataset
        ));
    }
}
