//! Served as evaluated: a compiled artifact's manifest records how its
//! student was prompted and decoded when the accuracy on its cover was
//! measured (`compile.serving`: system message, greedy temperature, answer
//! budget, the verifier's shape as a grammar). A chat request on that
//! artifact gets the same for every setting it leaves unset, over HTTP and
//! gRPC alike; a setting the request gives wins (`temperature`,
//! `max_tokens`, `response_format`).

use kolm_artifact::serving::{Serving, ShapeGrammar};
use kolm_runtime::{ChatMessage, Grammar};

/// What a chat request set itself (`None`: left to the defaults).
#[derive(Debug, Default)]
pub struct Requested {
    /// The sampling temperature.
    pub temperature: Option<f32>,
    /// The answer budget.
    pub max_tokens: Option<u32>,
    /// The output constraint: `Some(None)` asks for free text.
    pub grammar: Option<Option<Grammar>>,
}

/// The settings a chat request runs with.
#[derive(Debug, PartialEq)]
pub struct Resolved {
    /// The sampling temperature.
    pub temperature: f32,
    /// The answer budget (`None`: up to the context).
    pub max_tokens: Option<u32>,
    /// The output constraint.
    pub grammar: Option<Grammar>,
    /// Whether the artifact's evaluation record supplied any default.
    pub as_evaluated: bool,
}

/// The engine's grammar for a verifier's shape.
pub fn grammar(shape: &ShapeGrammar) -> Grammar {
    match shape {
        ShapeGrammar::JsonSchema(schema) => Grammar::JsonSchema(schema.clone()),
        ShapeGrammar::Regex(rx) => Grammar::Regex(rx.clone()),
    }
}

/// Fills what `requested` leaves unset from `serving` (when the artifact
/// has a record), else from the transport's `default_temperature`. The
/// record's answer budget is capped below `context`, the positions a
/// request has (prompt included).
pub fn resolve(
    requested: Requested,
    serving: Option<&Serving>,
    default_temperature: f32,
    context: u32,
) -> Resolved {
    let Some(s) = serving else {
        return Resolved {
            temperature: requested.temperature.unwrap_or(default_temperature),
            max_tokens: requested.max_tokens,
            grammar: requested.grammar.flatten(),
            as_evaluated: false,
        };
    };
    Resolved {
        temperature: requested.temperature.unwrap_or(s.temperature),
        max_tokens: requested
            .max_tokens
            .or(Some(s.max_tokens.min(context.saturating_sub(1)).max(1))),
        grammar: match requested.grammar {
            Some(g) => g,
            None => s.grammar.as_ref().map(grammar),
        },
        as_evaluated: true,
    }
}

/// Puts the record's system message (if it has one) before the request's
/// messages, as the student saw it at evaluation.
pub fn prepend_system(serving: Option<&Serving>, messages: &mut Vec<ChatMessage>) {
    if let Some(system) = serving.and_then(|s| s.system.as_ref()) {
        messages.insert(
            0,
            ChatMessage {
                role: "system".into(),
                content: system.clone(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_wins_and_the_record_fills_the_rest() {
        let record = Serving::greedy(48, Some(ShapeGrammar::Regex("(yes|no)".into())));
        let r = resolve(Requested::default(), Some(&record), 1.0, 2048);
        assert_eq!(
            resolve(Requested::default(), Some(&record), 1.0, 32).max_tokens,
            Some(31)
        );
        assert_eq!(
            r,
            Resolved {
                temperature: 0.0,
                max_tokens: Some(48),
                grammar: Some(Grammar::Regex("(yes|no)".into())),
                as_evaluated: true,
            }
        );
        let r = resolve(
            Requested {
                temperature: Some(0.7),
                max_tokens: Some(5),
                grammar: Some(None),
            },
            Some(&record),
            1.0,
            2048,
        );
        assert_eq!(
            (r.temperature, r.max_tokens, r.grammar),
            (0.7, Some(5), None)
        );
        let r = resolve(Requested::default(), None, 0.8, 2048);
        assert_eq!(
            r,
            Resolved {
                temperature: 0.8,
                max_tokens: None,
                grammar: None,
                as_evaluated: false,
            }
        );
        let mut messages = vec![ChatMessage {
            role: "user".into(),
            content: "hi".into(),
        }];
        prepend_system(Some(&record), &mut messages);
        assert_eq!(messages.len(), 1, "the record has no system message");
        let with = Serving {
            system: Some("Be brief.".into()),
            ..record
        };
        prepend_system(Some(&with), &mut messages);
        assert_eq!(messages[0].role, "system");
        assert_eq!(messages[0].content, "Be brief.");
    }
}
