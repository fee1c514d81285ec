//! What the compiler holds of one example or test: its [`Input`] (a text or
//! chat [`Message`]s), the reference output, the explicit assertions a test
//! carries, and the line it came from. The teacher, the verifier, the task
//! loader and the pipeline all speak these types; this module depends on no
//! other module of the crate but [`crate::digest`] and [`crate::assertion`].

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::assertion::Assertion;
use crate::digest::sha256_of_json;

/// Where an example came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The JSONL file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// A chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: content.into(),
        }
    }
}

/// The input of an example: a prompt text or a chat transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Input {
    /// A single user turn.
    Text(String),
    /// Chat messages (system, user, assistant turns), ending before the
    /// output.
    Chat(Vec<Message>),
}

impl Input {
    /// The input as chat messages (a text becomes one `user` message).
    pub fn to_messages(&self) -> Vec<Message> {
        match self {
            Input::Text(t) => vec![Message::new("user", t.clone())],
            Input::Chat(m) => m.clone(),
        }
    }

    /// SHA-256 (hex) of the input alone; the key for duplicate detection and
    /// for a test's assertions in the verifier.
    pub fn digest(&self) -> String {
        sha256_of_json(self)
    }
}

/// One example or test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// The prompt.
    pub input: Input,
    /// The reference output; always present for examples, optional for
    /// tests that carry assertions.
    pub output: Option<String>,
    /// Explicit assertions (tests only).
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "assert")]
    pub assertions: Vec<Assertion>,
    /// The line it came from (not part of the digest).
    #[serde(skip)]
    pub origin: Option<Origin>,
}

#[derive(Serialize)]
struct ExampleKey<'a> {
    input: &'a Input,
    output: &'a Option<String>,
}

impl Example {
    /// SHA-256 (hex) of the input and output: how the split records it.
    pub fn digest(&self) -> String {
        sha256_of_json(&ExampleKey {
            input: &self.input,
            output: &self.output,
        })
    }
}
