//! The declarative, deterministic verifier stored as `verifier/verifier.json`.
//!
//! [`Verifier::infer`] derives the rules from the examples' and tests'
//! outputs (the output kind, a JSON schema, a label set, a format, length
//! bounds) and keeps each test's explicit [`Assertion`]s keyed by the
//! digest of its input. [`Verifier::judge`] checks one candidate;
//! [`Verifier::pick`] ranks k candidates and says why the winner won:
//!
//! 1. hard gates: the output kind, the length bounds, the assertions;
//! 2. among those that pass: an exact match with the reference, then a
//!    normalized match (whitespace and case for text, key order for JSON);
//! 3. then similarity to the reference (ROUGE-L F1 or normalized edit
//!    distance) — with no reference, mean similarity to the other passing
//!    candidates (consensus);
//! 4. then the shorter, then the smaller SHA-256 of the text.
//!
//! Nothing depends on time, randomness or candidate order.

pub mod assertion;
pub mod schema;
pub mod similarity;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use assertion::{Assertion, Check};
pub use schema::{Format, JsonType, Schema, ShapeInference};

use crate::digest::{canonical_json, sha256_hex};
use crate::task::Example;

/// The `verifier.json` format version this crate writes and reads.
pub const VERIFIER_VERSION: u32 = 1;

/// At most this many distinct outputs make a label set.
pub const LABEL_MAX: usize = 32;
/// A label is at most this many characters (and one line).
pub const LABEL_MAX_CHARS: usize = 64;

/// Errors reading a verifier or inferring one.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// `verifier.json` is not valid.
    #[error("verifier.json: {0}")]
    Parse(String),
    /// A version this crate does not read.
    #[error(
        "verifier.json version {found} is not supported (this build reads {VERIFIER_VERSION})"
    )]
    Version {
        /// The version in the file.
        found: u32,
    },
    /// Nothing to infer from.
    #[error("cannot infer a verifier: no outputs and no assertions")]
    NoEvidence,
}

/// What kind of output the task produces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OutputKind {
    /// A JSON object or array conforming to a schema.
    Json {
        /// The inferred schema.
        schema: Box<Schema>,
    },
    /// One of a closed set of labels (compared after trimming).
    Label {
        /// The allowed labels, sorted.
        labels: Vec<String>,
    },
    /// A single value of a format (number, date, ...), after trimming.
    Format {
        /// The format.
        format: ValueFormat,
    },
    /// Free text.
    Text,
}

/// The format of a whole output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueFormat {
    /// An optionally signed integer.
    Integer,
    /// A decimal number.
    Number,
    /// An identifier: letters then digits, optionally joined by `-` or `_`
    /// (`INV-0042`, `ab12`).
    Id,
    /// A string format shared with JSON schemas.
    #[serde(untagged)]
    String(Format),
}

impl ValueFormat {
    const ORDER: [ValueFormat; 7] = [
        ValueFormat::Integer,
        ValueFormat::Number,
        ValueFormat::String(Format::Date),
        ValueFormat::String(Format::DateTime),
        ValueFormat::String(Format::Uuid),
        ValueFormat::String(Format::Email),
        ValueFormat::Id,
    ];

    /// Whether `s` has this format.
    pub fn matches(self, s: &str) -> bool {
        match self {
            ValueFormat::Integer => {
                let d = s.strip_prefix(['-', '+']).unwrap_or(s);
                !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
            }
            ValueFormat::Number => {
                let d = s.strip_prefix(['-', '+']).unwrap_or(s);
                !d.is_empty()
                    && d.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    && d.bytes().filter(|b| *b == b'.').count() <= 1
                    && d.bytes().any(|b| b.is_ascii_digit())
            }
            ValueFormat::Id => {
                let b = s.as_bytes();
                let letters = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
                let rest = &b[letters..];
                let rest = rest
                    .strip_prefix(b"-")
                    .or_else(|| rest.strip_prefix(b"_"))
                    .unwrap_or(rest);
                letters > 0 && !rest.is_empty() && rest.iter().all(u8::is_ascii_digit)
            }
            ValueFormat::String(f) => f.matches(s),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ValueFormat::Integer => "an integer",
            ValueFormat::Number => "a decimal number",
            ValueFormat::Id => "an identifier (letters, then digits)",
            ValueFormat::String(f) => f.describe(),
        }
    }
}

/// Length bounds in characters, applied to the whole output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LengthBounds {
    /// Minimum characters.
    pub min: u64,
    /// Maximum characters.
    pub max: u64,
}

/// Which similarity ranks candidates after the exact and normalized tiers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Similarity {
    /// ROUGE-L F1 over tokens.
    #[default]
    RougeL,
    /// 1 − normalized Levenshtein distance over characters.
    EditDistance,
}

/// The verifier: serialized as `verifier/verifier.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verifier {
    /// Format version, [`VERIFIER_VERSION`].
    pub version: u32,
    /// The output kind and its rules.
    pub output: OutputKind,
    /// Length bounds on the whole output (text and format kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<LengthBounds>,
    /// The similarity used for ranking.
    #[serde(default)]
    pub similarity: Similarity,
    /// Explicit assertions of the tests, keyed by [`crate::task::Input::digest`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cases: BTreeMap<String, Vec<Assertion>>,
    /// Number of outputs the rules were inferred from.
    pub observed: usize,
}

/// How a candidate compares with the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchTier {
    /// Byte-equal to the reference.
    Exact,
    /// Equal after normalization.
    Normalized,
    /// Ranked by similarity.
    Similar,
}

/// The result of judging one candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether every hard gate passed.
    pub passed: bool,
    /// Why gates failed, in words (empty when passed).
    pub failures: Vec<String>,
    /// Match tier against the reference (`Similar` when there is none).
    pub tier: MatchTier,
    /// Similarity to the reference in [0, 1] (1 for exact and normalized
    /// matches, 0 when there is no reference).
    pub similarity: f64,
}

/// One candidate's place in a [`Pick`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// Index into the candidates given to [`Verifier::pick`].
    pub index: usize,
    /// Its verdict (for `pick` without a reference, `similarity` is the
    /// consensus score).
    pub verdict: Verdict,
    /// Its length in characters.
    pub chars: usize,
    /// SHA-256 (hex) of its text.
    pub sha256: String,
}

/// The outcome of [`Verifier::pick`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pick {
    /// Index of the winner, `None` when no candidate passed the gates.
    pub winner: Option<usize>,
    /// Every candidate, best first (failing ones last, in index order).
    pub ranked: Vec<Ranked>,
    /// Why the winner won, or why there is none, in words.
    pub reason: String,
}

impl Verifier {
    /// Infers a verifier from the examples' and tests' reference outputs and
    /// the tests' assertions.
    ///
    /// - Every output parses as a JSON object or array → `Json`, with the
    ///   schema [`ShapeInference`] derives.
    /// - Else, at most [`LABEL_MAX`] distinct one-line outputs of at most
    ///   [`LABEL_MAX_CHARS`] characters, each seen twice on average →
    ///   `Label`.
    /// - Else every (trimmed) output has one [`ValueFormat`] → `Format`.
    /// - Else `Text`.
    ///
    /// Text and format kinds get length bounds `[⌊min/2⌋, 2·max + 16]` of
    /// the observed lengths.
    pub fn infer(examples: &[Example], tests: &[Example]) -> Result<Verifier, VerifierError> {
        let outputs: Vec<&str> = examples
            .iter()
            .chain(tests)
            .filter_map(|e| e.output.as_deref())
            .collect();
        let mut cases: BTreeMap<String, Vec<Assertion>> = BTreeMap::new();
        for t in tests.iter().filter(|t| !t.assertions.is_empty()) {
            let entry = cases.entry(t.input.digest()).or_default();
            for a in &t.assertions {
                if !entry.contains(a) {
                    entry.push(a.clone());
                }
            }
        }
        if outputs.is_empty() {
            if cases.is_empty() {
                return Err(VerifierError::NoEvidence);
            }
            return Ok(Verifier {
                version: VERIFIER_VERSION,
                output: OutputKind::Text,
                length: None,
                similarity: Similarity::default(),
                cases,
                observed: 0,
            });
        }
        let json: Option<Vec<Value>> = outputs
            .iter()
            .map(|o| {
                serde_json::from_str::<Value>(o)
                    .ok()
                    .filter(|v| v.is_object() || v.is_array())
            })
            .collect();
        let (output, bounded) = if let Some(values) = json {
            let mut shape = ShapeInference::default();
            for v in &values {
                shape.observe(v);
            }
            (
                OutputKind::Json {
                    schema: Box::new(shape.schema()),
                },
                false,
            )
        } else {
            let trimmed: Vec<&str> = outputs.iter().map(|o| o.trim()).collect();
            let distinct: BTreeSet<&str> = trimmed.iter().copied().collect();
            let labelish = distinct.len() <= LABEL_MAX
                && trimmed.len() >= 2 * distinct.len()
                && distinct.iter().all(|l| {
                    !l.is_empty() && !l.contains('\n') && l.chars().count() <= LABEL_MAX_CHARS
                });
            if labelish {
                let labels = distinct.into_iter().map(str::to_owned).collect();
                (OutputKind::Label { labels }, false)
            } else if let Some(format) = ValueFormat::ORDER
                .into_iter()
                .find(|f| trimmed.iter().all(|o| f.matches(o)))
            {
                (OutputKind::Format { format }, true)
            } else {
                (OutputKind::Text, true)
            }
        };
        let length = bounded.then(|| {
            let lens = outputs.iter().map(|o| o.chars().count() as u64);
            let (min, max) = lens.fold((u64::MAX, 0), |(lo, hi), n| (lo.min(n), hi.max(n)));
            LengthBounds {
                min: min / 2,
                max: max.saturating_mul(2).saturating_add(16),
            }
        });
        Ok(Verifier {
            version: VERIFIER_VERSION,
            output,
            length,
            similarity: Similarity::default(),
            cases,
            observed: outputs.len(),
        })
    }

    /// Reads `verifier.json`, refusing other versions and unknown fields.
    pub fn from_json(bytes: &[u8]) -> Result<Verifier, VerifierError> {
        #[derive(Deserialize)]
        struct Head {
            version: u32,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| VerifierError::Parse(e.to_string()))?;
        if head.version != VERIFIER_VERSION {
            return Err(VerifierError::Version {
                found: head.version,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| VerifierError::Parse(e.to_string()))
    }

    /// `verifier.json` bytes (pretty, deterministic for a given verifier).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a verifier always serializes");
        v.push(b'\n');
        v
    }

    /// The assertions that apply to `example`: the verifier's for its input
    /// digest, plus any the example carries itself.
    pub fn assertions_for(&self, example: &Example) -> Vec<Assertion> {
        let mut out = self
            .cases
            .get(&example.input.digest())
            .cloned()
            .unwrap_or_default();
        for a in &example.assertions {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// Judges `candidate` as an answer to `example` (its reference output
    /// and assertions).
    pub fn judge_example(&self, example: &Example, candidate: &str) -> Verdict {
        self.judge(
            example.output.as_deref(),
            &self.assertions_for(example),
            candidate,
        )
    }

    /// Judges `candidate` against the hard gates, the given assertions and
    /// the reference.
    pub fn judge(
        &self,
        reference: Option<&str>,
        assertions: &[Assertion],
        candidate: &str,
    ) -> Verdict {
        let mut failures = self.gate_failures(candidate);
        for a in assertions {
            if let Err(e) = a.check(candidate) {
                failures.push(e);
            }
        }
        let (tier, similarity) = match reference {
            Some(r) => self.compare(r, candidate),
            None => (MatchTier::Similar, 0.0),
        };
        Verdict {
            passed: failures.is_empty(),
            failures,
            tier,
            similarity,
        }
    }

    fn gate_failures(&self, candidate: &str) -> Vec<String> {
        let mut failures = Vec::new();
        match &self.output {
            OutputKind::Json { schema } => match serde_json::from_str::<Value>(candidate) {
                Ok(v) => failures.extend(
                    schema
                        .validate(&v)
                        .into_iter()
                        .map(|e| format!("schema: {e}")),
                ),
                Err(e) => failures.push(format!("not JSON: {e}")),
            },
            OutputKind::Label { labels } => {
                let t = candidate.trim();
                if labels.binary_search_by(|l| l.as_str().cmp(t)).is_err() {
                    failures.push(format!(
                        "{:?} is not one of the {} labels",
                        clip(t),
                        labels.len()
                    ));
                }
            }
            OutputKind::Format { format } => {
                if !format.matches(candidate.trim()) {
                    failures.push(format!(
                        "{:?} is not {}",
                        clip(candidate.trim()),
                        format.describe()
                    ));
                }
            }
            OutputKind::Text => {}
        }
        if let Some(b) = self.length {
            let n = candidate.chars().count() as u64;
            if n < b.min || n > b.max {
                failures.push(format!("{n} characters, outside [{}, {}]", b.min, b.max));
            }
        }
        failures
    }

    fn compare(&self, reference: &str, candidate: &str) -> (MatchTier, f64) {
        if candidate == reference {
            return (MatchTier::Exact, 1.0);
        }
        let json_equal = matches!(self.output, OutputKind::Json { .. })
            && match (
                serde_json::from_str::<Value>(reference),
                serde_json::from_str::<Value>(candidate),
            ) {
                (Ok(a), Ok(b)) => canonical_json(&a) == canonical_json(&b),
                _ => false,
            };
        if json_equal || similarity::normalize(reference) == similarity::normalize(candidate) {
            return (MatchTier::Normalized, 1.0);
        }
        (MatchTier::Similar, self.similar(reference, candidate))
    }

    fn similar(&self, a: &str, b: &str) -> f64 {
        match self.similarity {
            Similarity::RougeL => similarity::rouge_l(a, b),
            Similarity::EditDistance => similarity::edit_similarity(a, b),
        }
    }

    /// Ranks `candidates` for `example` and picks the winner; see the module
    /// documentation for the order. The result does not depend on the order
    /// of the candidates except through `index`.
    pub fn pick(&self, example: &Example, candidates: &[String]) -> Pick {
        let assertions = self.assertions_for(example);
        let reference = example.output.as_deref();
        let mut ranked: Vec<Ranked> = candidates
            .iter()
            .enumerate()
            .map(|(index, c)| Ranked {
                index,
                verdict: self.judge(reference, &assertions, c),
                chars: c.chars().count(),
                sha256: sha256_hex(c.as_bytes()),
            })
            .collect();
        if reference.is_none() {
            // Consensus: mean similarity to the other passing candidates.
            let passing: Vec<usize> = ranked
                .iter()
                .filter(|r| r.verdict.passed)
                .map(|r| r.index)
                .collect();
            for r in ranked.iter_mut().filter(|r| r.verdict.passed) {
                let others: Vec<f64> = passing
                    .iter()
                    .filter(|j| **j != r.index)
                    .map(|j| self.similar(&candidates[r.index], &candidates[*j]))
                    .collect();
                r.verdict.similarity = if others.is_empty() {
                    0.0
                } else {
                    others.iter().sum::<f64>() / others.len() as f64
                };
            }
        }
        ranked.sort_by(|a, b| {
            b.verdict.passed.cmp(&a.verdict.passed).then_with(|| {
                if a.verdict.passed && b.verdict.passed {
                    a.verdict
                        .tier
                        .cmp(&b.verdict.tier)
                        .then(b.verdict.similarity.total_cmp(&a.verdict.similarity))
                        .then(a.chars.cmp(&b.chars))
                        .then_with(|| a.sha256.cmp(&b.sha256))
                } else {
                    a.index.cmp(&b.index)
                }
            })
        });
        let winner = ranked.first().filter(|r| r.verdict.passed);
        let passing = ranked.iter().filter(|r| r.verdict.passed).count();
        let reason = match winner {
            None if candidates.is_empty() => "no candidates".to_string(),
            None => format!(
                "none of {} candidates passed the gates; first failure: {}",
                candidates.len(),
                ranked
                    .iter()
                    .find_map(|r| r.verdict.failures.first())
                    .map_or("?", String::as_str)
            ),
            Some(w) => {
                let second = ranked.get(1).filter(|r| r.verdict.passed);
                let why = match second {
                    None => "the only one to pass the gates".to_string(),
                    Some(s) if w.verdict.tier != s.verdict.tier => match w.verdict.tier {
                        MatchTier::Exact => "matches the reference exactly".to_string(),
                        MatchTier::Normalized => {
                            "matches the reference after normalization".to_string()
                        }
                        MatchTier::Similar => "closest to the reference".to_string(),
                    },
                    Some(s) if w.verdict.similarity != s.verdict.similarity => format!(
                        "{} {:.3} vs {:.3}",
                        if reference.is_some() {
                            "most similar to the reference:"
                        } else {
                            "closest to the other candidates (consensus):"
                        },
                        w.verdict.similarity,
                        s.verdict.similarity
                    ),
                    Some(s) if w.chars != s.chars => {
                        format!(
                            "tie on match, shorter ({} vs {} characters)",
                            w.chars, s.chars
                        )
                    }
                    Some(_) => "tie on match and length, smaller SHA-256".to_string(),
                };
                format!(
                    "candidate {} of {} ({passing} passed the gates): {why}",
                    w.index,
                    candidates.len()
                )
            }
        };
        Pick {
            winner: winner.map(|w| w.index),
            ranked,
            reason,
        }
    }

    /// The rules in words, one per line (for `kolmctl verifier explain`).
    pub fn explain(&self) -> String {
        self.to_string()
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_owned()
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "verifier v{} (inferred from {} output(s))",
            self.version, self.observed
        )?;
        writeln!(f, "Hard gates (every answer must pass all):")?;
        match &self.output {
            OutputKind::Json { schema } => {
                writeln!(f, "  - the output is JSON that conforms to:")?;
                let mut lines = Vec::new();
                schema.explain("$", 2, &mut lines);
                for l in lines {
                    writeln!(f, "  {l}")?;
                }
            }
            OutputKind::Label { labels } => {
                writeln!(
                    f,
                    "  - the output (trimmed) is one of {} labels: {}",
                    labels.len(),
                    labels.join(" | ")
                )?;
            }
            OutputKind::Format { format } => {
                writeln!(f, "  - the output (trimmed) is {}", format.describe())?;
            }
            OutputKind::Text => writeln!(f, "  - the output is free text")?,
        }
        if let Some(b) = self.length {
            writeln!(
                f,
                "  - the output is {} to {} characters long",
                b.min, b.max
            )?;
        }
        if !self.cases.is_empty() {
            writeln!(
                f,
                "  - {} test(s) carry their own assertions:",
                self.cases.len()
            )?;
            for (digest, asserts) in &self.cases {
                writeln!(f, "    test {}:", &digest[..12.min(digest.len())])?;
                for a in asserts {
                    writeln!(f, "      {a}")?;
                }
            }
        }
        writeln!(f, "Ranking among answers that pass:")?;
        writeln!(f, "  1. exact match with the reference")?;
        writeln!(
            f,
            "  2. match after normalization ({})",
            if matches!(self.output, OutputKind::Json { .. }) {
                "same JSON value whatever the key order, or same text ignoring case and whitespace"
            } else {
                "ignoring case and runs of whitespace"
            }
        )?;
        writeln!(
            f,
            "  3. higher similarity to the reference ({}); with no reference, to the other answers",
            match self.similarity {
                Similarity::RougeL => "ROUGE-L F1 over words and symbols",
                Similarity::EditDistance => "1 - normalized edit distance",
            }
        )?;
        write!(f, "  4. shorter, then smaller SHA-256")
    }
}

#[cfg(test)]
mod tests;
