//! How a compiled artifact's student was prompted and decoded when its eval
//! pack was measured: the manifest's `compile.serving` record. kolmd serves
//! the artifact the same way by default, so the answers a user gets are the
//! answers the accuracy on the cover was measured on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the record lives in the manifest's `compile` map.
pub const SERVING_KEY: &str = "serving";

/// The record's version this crate writes and reads.
pub const SERVING_VERSION: u32 = 1;

/// A decoding constraint that gives every answer the verifier's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeGrammar {
    /// JSON valid under this schema (the verifier's own).
    JsonSchema(serde_json::Value),
    /// Text that matches this regular expression whole (a label set, a
    /// value format).
    Regex(String),
}

/// How the student was evaluated, and so how it is served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serving {
    /// [`SERVING_VERSION`].
    pub version: u32,
    /// The system message the student saw before the user's messages, if
    /// any; `None`: the messages exactly as the user sends them.
    pub system: Option<String>,
    /// Rendered with the base model's own chat template, opening the
    /// assistant's turn, with a BOS token first.
    pub chat_template: ChatTemplate,
    /// Sampling temperature: 0 is greedy decoding.
    pub temperature: f32,
    /// The most tokens an answer was given.
    pub max_tokens: u32,
    /// The decoding constraint, `None` for free text.
    pub grammar: Option<ShapeGrammar>,
}

/// Which chat template rendered the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatTemplate {
    /// The template in the base GGUF's `tokenizer.chat_template`.
    Base,
}

/// Why a `compile.serving` record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// Not a valid record.
    #[error("compile.serving: {0}")]
    Parse(String),
    /// A version this crate does not read.
    #[error("compile.serving version {0} is not supported (this build reads {SERVING_VERSION}); upgrade kolm")]
    Version(u32),
}

impl Serving {
    /// Greedy decoding, no system message, the base's template.
    pub fn greedy(max_tokens: u32, grammar: Option<ShapeGrammar>) -> Serving {
        Serving {
            version: SERVING_VERSION,
            system: None,
            chat_template: ChatTemplate::Base,
            temperature: 0.0,
            max_tokens,
            grammar,
        }
    }

    /// The record in a manifest's `compile` map: `Ok(None)` for an artifact
    /// without one (packed, or compiled before it was recorded).
    pub fn from_compile(
        compile: Option<&BTreeMap<String, serde_json::Value>>,
    ) -> Result<Option<Serving>, ServingError> {
        let Some(value) = compile.and_then(|c| c.get(SERVING_KEY)) else {
            return Ok(None);
        };
        let version = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| ServingError::Parse("no version".into()))?;
        if version != u64::from(SERVING_VERSION) {
            return Err(ServingError::Version(
                u32::try_from(version).unwrap_or(u32::MAX),
            ));
        }
        serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| ServingError::Parse(e.to_string()))
    }

    /// The record as the manifest stores it.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a serving record always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_compile_map_and_refuses_other_versions() {
        let s = Serving::greedy(
            64,
            Some(ShapeGrammar::JsonSchema(
                serde_json::json!({"type": "object"}),
            )),
        );
        let mut compile = BTreeMap::new();
        assert_eq!(Serving::from_compile(Some(&compile)).unwrap(), None);
        assert_eq!(Serving::from_compile(None).unwrap(), None);
        compile.insert(SERVING_KEY.to_owned(), s.to_value());
        assert_eq!(Serving::from_compile(Some(&compile)).unwrap(), Some(s));
        compile.insert(
            SERVING_KEY.to_owned(),
            serde_json::json!({"version": 9, "x": 1}),
        );
        assert!(matches!(
            Serving::from_compile(Some(&compile)),
            Err(ServingError::Version(9))
        ));
        compile.insert(
            SERVING_KEY.to_owned(),
            serde_json::json!({"version": 1, "x": 1}),
        );
        assert!(matches!(
            Serving::from_compile(Some(&compile)),
            Err(ServingError::Parse(_))
        ));
    }
}
