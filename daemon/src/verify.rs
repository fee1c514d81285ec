//! The artifact's verifier at run time. A chat on an artifact that carries
//! a verifier (`verifier/verifier.json`) has its answer checked against the
//! verifier's hard gates (the output kind and schema, labels, format,
//! length) and, when its one user turn repeats a held-out test's input,
//! that test's assertions: the same rules the compile judged with, less the
//! reference, which run time does not have. [`Check`] is that check for one
//! request; [`Tally`] follows a streamed answer, checks it at the end and
//! hands it to the drift log's observation ([`crate::drift`]);
//! [`pick`] chooses among retried answers. Both doors report the outcome as
//! `kolm.verified` (HTTP) or `GenerateResponse.verified` (gRPC).

use std::sync::Arc;

use kolm_compile::assertion::Assertion;
use kolm_compile::example::Input;
use kolm_compile::verifier::Verifier;
use kolm_runtime::{ChatMessage, Completion};

use crate::drift::Observation;
use serde::Serialize;

/// The temperature of a retry where the request decodes greedily: a
/// greedy retry would repeat the answer that failed.
pub const RETRY_TEMPERATURE: f32 = 0.7;

/// The rules one request's answer is checked against.
#[derive(Clone, Debug)]
pub struct Check {
    verifier: Arc<Verifier>,
    assertions: Vec<Assertion>,
}

impl Check {
    /// The check of a chat `messages` (as the client sent them, before any
    /// system message or grounding is added).
    pub fn new(verifier: Arc<Verifier>, messages: &[ChatMessage]) -> Check {
        let assertions = match messages {
            [only] if only.role == "user" => verifier
                .cases
                .get(&Input::Text(only.content.clone()).digest())
                .cloned()
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Check {
            verifier,
            assertions,
        }
    }

    /// The names of the rules `answer` fails, each once, in the verifier's
    /// order; empty when it passes.
    pub fn failed_rules(&self, answer: &str) -> Vec<String> {
        let mut rules: Vec<String> = Vec::new();
        for f in self.verifier.check(&self.assertions, answer) {
            if !rules.contains(&f.rule) {
                rules.push(f.rule);
            }
        }
        rules
    }

    /// The outcome for `answer`, the `attempts`-th answer generated.
    pub fn verdict(&self, answer: &str, attempts: u32) -> Verified {
        let rules = self.failed_rules(answer);
        Verified {
            passed: rules.is_empty(),
            rules,
            attempts,
        }
    }
}

/// `kolm.verified`: the verifier's word on the returned answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Every rule passed.
    pub passed: bool,
    /// The rules the answer failed.
    pub rules: Vec<String>,
    /// Answers generated: 1 plus the retries used.
    pub attempts: u32,
}

/// A streamed answer's text, kept for the check and the drift log's
/// observation at its end.
#[derive(Debug, Default)]
pub struct Tally {
    check: Option<Check>,
    drift: Option<Observation>,
    text: String,
}

impl Tally {
    /// Follows an answer that `check` (if any) checks and `drift` (if any)
    /// observes at the end.
    pub fn new(check: Option<Check>, drift: Option<Observation>) -> Tally {
        Tally {
            check,
            drift,
            text: String::new(),
        }
    }

    /// Adds a piece of the answer.
    pub fn push(&mut self, piece: &str) {
        if self.check.is_some() || self.drift.is_some() {
            self.text.push_str(piece);
        }
    }

    /// The verdict on the whole answer, one attempt (`None` without a
    /// check), after the drift log has observed it with `completion`.
    pub fn finish(&self, completion: &Completion) -> Option<Verified> {
        let verified = self.check.as_ref().map(|c| c.verdict(&self.text, 1));
        if let Some(o) = &self.drift {
            o.record(&self.text, completion, verified.as_ref());
        }
        verified
    }
}

/// The index of the answer to return among `verdicts` (in the order they
/// were generated): the first that passed, else the first of those that
/// failed the fewest rules.
pub fn pick(verdicts: &[Verified]) -> usize {
    verdicts
        .iter()
        .position(|v| v.passed)
        .or_else(|| {
            verdicts
                .iter()
                .enumerate()
                .min_by_key(|(i, v)| (v.rules.len(), *i))
                .map(|(i, _)| i)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Arc<Verifier> {
        // A JSON object with an integer `qty`, and one test ("3 pears") that
        // asserts the answer names pears.
        let v: Verifier = serde_json::from_value(serde_json::json!({
            "version": 2,
            "output": {"kind": "json", "schema": {"type": "object",
                "properties": {"qty": {"type": "integer"}}, "required": ["qty"]}},
            "cases": {
                Input::Text("3 pears".into()).digest():
                    [{"type": "contains", "value": "pear"}]
            },
            "observed": 3
        }))
        .unwrap();
        Arc::new(v)
    }

    fn user(text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage {
            role: "user".into(),
            content: text.into(),
        }]
    }

    #[test]
    fn rules_are_named_once_and_a_test_s_assertions_apply_to_its_input() {
        let check = Check::new(verifier(), &user("3 pears"));
        assert_eq!(check.failed_rules(r#"{"qty": 3, "item": "pear"}"#), [""; 0]);
        assert_eq!(
            check.failed_rules(r#"{"qty": 3, "item": "fig"}"#),
            ["assertion:contains"]
        );
        assert_eq!(check.failed_rules("three"), ["json", "assertion:contains"]);
        assert_eq!(
            check.failed_rules(r#"{"qty": "3"}"#),
            ["schema", "assertion:contains"]
        );
        // Another input has no assertions; a system turn makes it another
        // conversation than the test's.
        let other = Check::new(verifier(), &user("2 figs"));
        assert!(other.verdict(r#"{"qty": 2, "item": "fig"}"#, 1).passed);
        let mut with_system = user("3 pears");
        with_system.insert(
            0,
            ChatMessage {
                role: "system".into(),
                content: "Be brief.".into(),
            },
        );
        assert!(
            Check::new(verifier(), &with_system)
                .verdict(r#"{"qty": 3}"#, 1)
                .passed
        );
    }

    #[test]
    fn a_tally_checks_the_whole_streamed_answer() {
        let mut t = Tally::new(Some(Check::new(verifier(), &user("2 figs"))), None);
        for piece in ["{\"qty\"", ": 2", "}"] {
            t.push(piece);
        }
        assert_eq!(
            t.finish(&Completion::default()),
            Some(Verified {
                passed: true,
                rules: vec![],
                attempts: 1
            })
        );
        let mut none = Tally::new(None, None);
        none.push("x");
        assert_eq!(none.finish(&Completion::default()), None);
    }

    #[test]
    fn the_first_pass_wins_else_the_fewest_failed_rules() {
        let v = |rules: &[&str]| Verified {
            passed: rules.is_empty(),
            rules: rules.iter().map(|r| r.to_string()).collect(),
            attempts: 1,
        };
        assert_eq!(pick(&[v(&["json", "length"]), v(&[]), v(&[])]), 1);
        assert_eq!(
            pick(&[v(&["json", "length"]), v(&["length"]), v(&["json"])]),
            1
        );
        assert_eq!(pick(&[v(&["json"])]), 0);
        assert_eq!(pick(&[]), 0);
    }
}
