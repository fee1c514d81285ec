//! The values of the drift log: why an answer was logged ([`Reason`]), what
//! the client sent ([`DriftInput`]), the measurements and the limits they
//! were judged against ([`Scores`]), an entry to write ([`NewEntry`]) or
//! read back ([`Entry`]), and what the queries take and return ([`Filter`],
//! [`Retention`], [`Count`], [`ExportStats`]). No I/O here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::DriftError;

/// Why an answer was logged as drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The artifact's verifier refused the answer.
    Verifier,
    /// The answer's mean token log-probability was below the threshold.
    Logprob,
    /// The recipe pack covered less of the answer than the threshold.
    Recipes,
    /// The best recall hit scored below the threshold.
    Recall,
    /// The input lay farther from the training inputs than the threshold.
    Distance,
}

impl Reason {
    /// Every reason, in order.
    pub const ALL: [Reason; 5] = [
        Reason::Verifier,
        Reason::Logprob,
        Reason::Recipes,
        Reason::Recall,
        Reason::Distance,
    ];

    /// The name in the database, the JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Verifier => "verifier",
            Reason::Logprob => "logprob",
            Reason::Recipes => "recipes",
            Reason::Recall => "recall",
            Reason::Distance => "distance",
        }
    }

    /// The valid names, comma-separated (for messages).
    pub fn names() -> String {
        Reason::ALL.map(Reason::as_str).join(", ")
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = DriftError;

    fn from_str(s: &str) -> Result<Reason, DriftError> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| DriftError::UnknownReason {
                given: s.to_owned(),
            })
    }
}

/// What the client sent: one user turn, or chat messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DriftInput {
    /// A single user turn (a prompt).
    Text(String),
    /// Chat messages, in order.
    Chat(Vec<Message>),
}

/// A chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl DriftInput {
    /// The SHA-256 (lower-case hex) of the input's JSON
    /// (`serde_json::to_vec(self)`): a string for text, an array of
    /// `{"role","content"}` objects for chat. Equal inputs have equal
    /// digests; a redacted entry keeps only this.
    pub fn digest(&self) -> String {
        // Serializing strings and a Vec of two-string structs cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }

    /// The input on one line, for tables: the text, or the last user
    /// message of a chat (else its last message).
    pub fn summary(&self) -> &str {
        match self {
            DriftInput::Text(t) => t,
            DriftInput::Chat(messages) => messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .or(messages.last())
                .map_or("", |m| m.content.as_str()),
        }
    }
}

/// What was measured of an answer, or (as an entry's `thresholds`) the
/// limits it was judged against. A field is `None` where nothing was
/// measured (or no limit applies).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Mean log-probability of the answer's tokens (higher is surer).
    pub mean_logprob: Option<f64>,
    /// Share of the answer's tokens the recipe pack would have drafted, 0 to 1.
    pub recipe_coverage: Option<f64>,
    /// Score of the best recall hit.
    pub recall_best: Option<f64>,
    /// Distance of the input from the training inputs.
    pub distance: Option<f64>,
    /// The verifier rules the answer failed (empty for thresholds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_rules: Vec<String>,
}

/// The thresholds an entry was judged against: the same fields, the limits.
pub type Thresholds = Scores;

impl Scores {
    /// The first field holding a NaN or an infinity, if any (JSON cannot
    /// hold them, so `insert` refuses them).
    pub(crate) fn non_finite(&self) -> Option<&'static str> {
        [
            ("mean_logprob", self.mean_logprob),
            ("recipe_coverage", self.recipe_coverage),
            ("recall_best", self.recall_best),
            ("distance", self.distance),
        ]
        .into_iter()
        .find(|(_, v)| v.is_some_and(|v| !v.is_finite()))
        .map(|(name, _)| name)
    }
}

/// A drift entry to write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewEntry {
    /// When the answer was given, unix milliseconds.
    pub created_ms: i64,
    /// The artifact's name.
    pub artifact: String,
    /// The artifact's version.
    pub version: String,
    /// Why it was logged: at least one (`insert` refuses none). Stored as a
    /// set: read back sorted in [`Reason::ALL`] order, without duplicates.
    pub reasons: Vec<Reason>,
    /// What the client sent; `None` when stored redacted.
    pub input: Option<DriftInput>,
    /// [`DriftInput::digest`] of the input, kept even when redacted.
    pub input_digest: String,
    /// The answer; `None` when redacted.
    pub output: Option<String>,
    /// What was measured.
    pub scores: Scores,
    /// The limits it was judged against.
    pub thresholds: Thresholds,
}

/// A stored drift entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The row id (increasing in insertion order).
    pub id: i64,
    #[serde(flatten)]
    pub entry: NewEntry,
}

/// Which entries a query covers; every field set narrows it.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this artifact name.
    pub artifact: Option<String>,
    /// Only this artifact version.
    pub version: Option<String>,
    /// Only entries logged for this reason (among others).
    pub reason: Option<Reason>,
    /// Only entries created at or after this time, unix milliseconds.
    pub since_ms: Option<i64>,
    /// At most this many, the newest (ignored by `clear`).
    pub limit: Option<usize>,
}

/// How much of the log `prune` keeps.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Keep at most this many entries, the newest.
    pub max_entries: u64,
    /// Delete entries created more than this long before now, milliseconds.
    pub max_age_ms: i64,
}

/// How many entries one artifact version has for one reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Count {
    pub artifact: String,
    pub version: String,
    pub reason: Reason,
    pub count: u64,
}

/// What `export_jsonl` wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExportStats {
    /// Lines written (distinct inputs).
    pub written: u64,
    /// Matching entries skipped because their input was redacted.
    pub redacted_skipped: u64,
    /// Matching entries skipped because an earlier line had the same input.
    pub duplicates_skipped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse_from_their_names_and_refuse_others() {
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>().unwrap(), r);
            assert_eq!(r.to_string(), r.as_str());
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
        let err = "Verifier".parse::<Reason>().unwrap_err().to_string();
        assert!(
            err.contains("`Verifier`")
                && err.contains("verifier, logprob, recipes, recall, distance"),
            "{err}"
        );
    }

    #[test]
    fn digest_is_the_sha256_of_the_input_json() {
        let text = DriftInput::Text("hi".into());
        // sha256 of the three bytes `"hi"`.
        assert_eq!(text.digest(), hex::encode(Sha256::digest(br#""hi""#)),);
        let chat = DriftInput::Chat(vec![Message {
            role: "user".into(),
            content: "hi".into(),
        }]);
        assert_eq!(
            chat.digest(),
            hex::encode(Sha256::digest(br#"[{"role":"user","content":"hi"}]"#)),
        );
        assert_ne!(text.digest(), chat.digest());
    }

    #[test]
    fn the_input_is_a_string_or_an_array_in_json() {
        let text: DriftInput = serde_json::from_str(r#""q""#).unwrap();
        assert_eq!(text, DriftInput::Text("q".into()));
        let chat: DriftInput = serde_json::from_str(r#"[{"role":"user","content":"q"}]"#).unwrap();
        assert_eq!(chat.summary(), "q");
    }

    #[test]
    fn non_finite_scores_are_found() {
        let mut s = Scores {
            mean_logprob: Some(-1.0),
            ..Scores::default()
        };
        assert_eq!(s.non_finite(), None);
        s.distance = Some(f64::NAN);
        assert_eq!(s.non_finite(), Some("distance"));
        s.recall_best = Some(f64::NEG_INFINITY);
        assert_eq!(s.non_finite(), Some("recall_best"));
    }
}
