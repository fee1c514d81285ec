//! The declarative, deterministic verifier stored as `verifier/verifier.json`.
//!
//! [`Verifier::infer`] derives the rules from the examples' and tests'
//! outputs (the output kind, a JSON schema, a label set, a format, length
//! bounds) and keeps each test's explicit [`Assertion`]s keyed by the
//! digest of its input. [`Verifier::judge`] checks one candidate;
//! [`Verifier::pick`] ranks k candidates and says why the winner won.
//!
//! A verdict means correct. A candidate passes when:
//!
//! 1. it passes the hard gates: the output kind, the length bounds, the
//!    assertions (necessary, never sufficient); and
//! 2. where a reference exists, it matches it by the output kind: JSON
//!    equal after canonicalization (key order, whitespace and number
//!    spelling ignored), the same label, the same value after the format's
//!    normalization, or, for free text, normalized-equal or similar at or
//!    above [`Verifier::similarity_min`].
//!
//! Without a reference a verdict passes on the gates alone and says so
//! (`checked: false`); reports count such answers apart and never call
//! them accuracy. Among the candidates that pass, [`Verifier::pick`]
//! prefers an exact match, then a normalized one, then the higher
//! similarity to the reference (with no reference: mean similarity to the
//! other passing candidates, consensus), then the shorter, then the
//! smaller SHA-256 of the text.
//!
//! Version 1 of `verifier.json` (before verdicts checked the reference)
//! still reads: [`Verifier::judged_by_shape_only`] says an artifact's
//! numbers came from it. Nothing depends on time, randomness or candidate
//! order.

pub mod similarity;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::assertion::Assertion;
use crate::digest::sha256_hex;
use crate::example::Example;
use crate::schema::{Format, Schema, ShapeInference};

/// The `verifier.json` format version this crate writes.
pub const VERIFIER_VERSION: u32 = 2;

/// The first version, still read: artifacts compiled with it had their
/// answers judged by the hard gates alone (a schema-valid wrong answer
/// passed).
pub const SHAPE_ONLY_VERSION: u32 = 1;

/// Free-text similarity threshold when the references give no evidence
/// (fewer than two of them).
pub const SIMILARITY_MIN_DEFAULT: f64 = 0.8;
/// The inferred threshold sits this far above the highest similarity
/// between two references of different inputs.
pub const SIMILARITY_MARGIN: f64 = 0.05;
/// Bounds of the inferred threshold.
pub const SIMILARITY_MIN_RANGE: (f64, f64) = (0.6, 0.95);
/// At most this many references are compared pairwise to infer it.
const SIMILARITY_SAMPLE: usize = 200;

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
        "verifier.json version {found} is not supported (this build reads {SHAPE_ONLY_VERSION} and {VERIFIER_VERSION}); upgrade kolm"
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
    /// The similarity used for ranking and for matching free text.
    #[serde(default)]
    pub similarity: Similarity,
    /// Free text matches its reference when its similarity is at least
    /// this (set for the text kind; see [`Verifier::infer`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity_min: Option<f64>,
    /// Explicit assertions of the tests, keyed by [`crate::example::Input::digest`].
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

pub use kolm_artifact::serving::ShapeGrammar;

/// The result of judging one candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the candidate is correct: every hard gate passed and, when
    /// there is a reference, it matches it.
    pub passed: bool,
    /// Whether there was a reference to check it against. An unchecked
    /// pass means "the right shape", never "correct".
    pub checked: bool,
    /// Why it failed, in words (empty when passed).
    pub failures: Vec<String>,
    /// Match tier against the reference (`Similar` when there is none).
    pub tier: MatchTier,
    /// Similarity to the reference in [0, 1] (1 for exact and normalized
    /// matches, 0 when there is no reference).
    pub similarity: f64,
    /// JSON outputs: the paths (`$.time`) whose value differs from the
    /// reference's, missing or extra keys included, in path order.
    pub fields_wrong: Vec<String>,
}

/// A rule a candidate failed ([`Verifier::check`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFailure {
    /// The rule's name: `json` (not JSON), `schema`, `label`, `format`,
    /// `length`, or `assertion:TYPE` (`assertion:contains`).
    pub rule: String,
    /// What was wrong, in words.
    pub message: String,
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
                similarity_min: Some(SIMILARITY_MIN_DEFAULT),
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
        let similarity_min = matches!(output, OutputKind::Text)
            .then(|| infer_similarity_min(Similarity::default(), &outputs));
        Ok(Verifier {
            version: VERIFIER_VERSION,
            output,
            length,
            similarity: Similarity::default(),
            similarity_min,
            cases,
            observed: outputs.len(),
        })
    }

    /// Sets the free-text threshold (the task file's `similarity_min`);
    /// `None` keeps the inferred one.
    pub fn with_similarity_min(mut self, min: Option<f64>) -> Verifier {
        if let Some(m) = min {
            self.similarity_min = Some(m);
        }
        self
    }

    /// Whether this verifier came from an artifact compiled before verdicts
    /// checked the reference: its pass rates measured shape, not
    /// correctness, and a recompile re-judges them.
    pub fn judged_by_shape_only(&self) -> bool {
        self.version < 2
    }

    /// The constraint that makes decoding produce this verifier's shape:
    /// the schema for JSON, the labels or the format as a regular
    /// expression; `None` for free text.
    pub fn shape_grammar(&self) -> Option<ShapeGrammar> {
        match &self.output {
            OutputKind::Json { schema } => Some(ShapeGrammar::JsonSchema(
                serde_json::to_value(schema.as_ref()).expect("a schema always serializes"),
            )),
            OutputKind::Label { labels } => Some(ShapeGrammar::Regex(format!(
                "({})",
                labels
                    .iter()
                    .map(|l| regex::escape(l))
                    .collect::<Vec<_>>()
                    .join("|")
            ))),
            OutputKind::Format { format } => Some(ShapeGrammar::Regex(
                match format {
                    ValueFormat::Integer => r"[+-]?[0-9]+",
                    ValueFormat::Number => r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)",
                    ValueFormat::Id => r"[A-Za-z]+[-_]?[0-9]+",
                    ValueFormat::String(Format::Date) => r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
                    ValueFormat::String(Format::DateTime) => {
                        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
                    }
                    ValueFormat::String(Format::Uuid) => {
                        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                    }
                    ValueFormat::String(Format::Email) => r"[^@\s]+@[^@\s]+\.[^@\s]+",
                }
                .to_owned(),
            )),
            OutputKind::Text => None,
        }
    }

    /// The free-text threshold in force.
    pub fn similarity_threshold(&self) -> f64 {
        self.similarity_min.unwrap_or(SIMILARITY_MIN_DEFAULT)
    }

    /// Reads `verifier.json` (version 1 or 2), refusing other versions and
    /// unknown fields.
    pub fn from_json(bytes: &[u8]) -> Result<Verifier, VerifierError> {
        #[derive(Deserialize)]
        struct Head {
            version: u32,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| VerifierError::Parse(e.to_string()))?;
        if !(SHAPE_ONLY_VERSION..=VERIFIER_VERSION).contains(&head.version) {
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

    /// Judges `candidate` against the hard gates, the given assertions and,
    /// when there is one, the reference: it passes only if all gates pass
    /// and it matches the reference.
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
        let Some(reference) = reference else {
            return Verdict {
                passed: failures.is_empty(),
                checked: false,
                failures,
                tier: MatchTier::Similar,
                similarity: 0.0,
                fields_wrong: Vec::new(),
            };
        };
        let m = self.compare(reference, candidate);
        if !m.matches {
            failures.push(m.why.unwrap_or_else(|| "differs from the reference".into()));
        }
        Verdict {
            passed: failures.is_empty(),
            checked: true,
            failures,
            tier: m.tier,
            similarity: m.similarity,
            fields_wrong: m.fields_wrong,
        }
    }

    fn gate_failures(&self, candidate: &str) -> Vec<String> {
        self.gates(candidate)
            .into_iter()
            .map(|f| f.message)
            .collect()
    }

    /// The hard gates and `assertions` on a candidate that has no
    /// reference: what kolmd checks on an answer at run time. Empty when
    /// it passes; an unchecked pass means the right shape, never correct.
    pub fn check(&self, assertions: &[Assertion], candidate: &str) -> Vec<RuleFailure> {
        let mut failures = self.gates(candidate);
        for a in assertions {
            if let Err(message) = a.check(candidate) {
                failures.push(RuleFailure {
                    rule: format!("assertion:{}", a.type_name()),
                    message,
                });
            }
        }
        failures
    }

    fn gates(&self, candidate: &str) -> Vec<RuleFailure> {
        let mut failures = Vec::new();
        let mut fail = |rule: &str, message: String| {
            failures.push(RuleFailure {
                rule: rule.to_owned(),
                message,
            })
        };
        match &self.output {
            OutputKind::Json { schema } => match serde_json::from_str::<Value>(candidate) {
                Ok(v) => {
                    for e in schema.validate(&v) {
                        fail("schema", format!("schema: {e}"));
                    }
                }
                Err(e) => fail("json", format!("not JSON: {e}")),
            },
            OutputKind::Label { labels } => {
                let t = candidate.trim();
                if labels.binary_search_by(|l| l.as_str().cmp(t)).is_err() {
                    fail(
                        "label",
                        format!("{:?} is not one of the {} labels", clip(t), labels.len()),
                    );
                }
            }
            OutputKind::Format { format } => {
                if !format.matches(candidate.trim()) {
                    fail(
                        "format",
                        format!("{:?} is not {}", clip(candidate.trim()), format.describe()),
                    );
                }
            }
            OutputKind::Text => {}
        }
        if let Some(b) = self.length {
            let n = candidate.chars().count() as u64;
            if n < b.min || n > b.max {
                fail(
                    "length",
                    format!("{n} characters, outside [{}, {}]", b.min, b.max),
                );
            }
        }
        failures
    }

    /// How `candidate` compares with `reference`, by the output kind.
    fn compare(&self, reference: &str, candidate: &str) -> Comparison {
        if candidate == reference {
            return Comparison::equal(MatchTier::Exact);
        }
        match &self.output {
            OutputKind::Json { .. } => {
                match (
                    serde_json::from_str::<Value>(reference),
                    serde_json::from_str::<Value>(candidate),
                ) {
                    (Ok(r), Ok(c)) => {
                        let mut fields_wrong = Vec::new();
                        json_diff("$", &r, &c, &mut fields_wrong);
                        if fields_wrong.is_empty() {
                            return Comparison::equal(MatchTier::Normalized);
                        }
                        let why = describe_json_diff(&r, &c, &fields_wrong);
                        Comparison {
                            fields_wrong,
                            ..self.different(reference, candidate, why)
                        }
                    }
                    // The candidate is not JSON (the gates say so): every
                    // field is wrong.
                    (Ok(_), Err(_)) => Comparison {
                        fields_wrong: vec!["$".to_owned()],
                        ..self.different(
                            reference,
                            candidate,
                            "not comparable with the reference: not JSON".to_owned(),
                        )
                    },
                    // A reference that is not JSON (never inferred so)
                    // compares as text.
                    _ => self.compare_text(reference, candidate),
                }
            }
            OutputKind::Label { .. } => {
                let (r, c) = (reference.trim(), candidate.trim());
                if r == c {
                    Comparison::equal(MatchTier::Normalized)
                } else {
                    self.different(
                        reference,
                        candidate,
                        format!("label {:?} where the reference is {:?}", clip(c), clip(r)),
                    )
                }
            }
            OutputKind::Format { format } => {
                let (r, c) = (reference.trim(), candidate.trim());
                if format_equal(*format, r, c) {
                    Comparison::equal(MatchTier::Normalized)
                } else {
                    self.different(
                        reference,
                        candidate,
                        format!("{:?} where the reference is {:?}", clip(c), clip(r)),
                    )
                }
            }
            OutputKind::Text => self.compare_text(reference, candidate),
        }
    }

    fn compare_text(&self, reference: &str, candidate: &str) -> Comparison {
        if similarity::normalize(reference) == similarity::normalize(candidate) {
            return Comparison::equal(MatchTier::Normalized);
        }
        let similarity = self.similar(reference, candidate);
        let min = self.similarity_threshold();
        let matches = matches!(self.output, OutputKind::Text) && similarity >= min;
        Comparison {
            matches,
            tier: MatchTier::Similar,
            similarity,
            fields_wrong: Vec::new(),
            why: (!matches).then(|| {
                format!(
                    "similarity {similarity:.3} to the reference is below {min:.3} ({:?} where the reference is {:?})",
                    clip(candidate.trim()),
                    clip(reference.trim())
                )
            }),
        }
    }

    fn different(&self, reference: &str, candidate: &str, why: String) -> Comparison {
        Comparison {
            matches: false,
            tier: MatchTier::Similar,
            similarity: self.similar(reference, candidate),
            fields_wrong: Vec::new(),
            why: Some(why),
        }
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

/// A candidate against its reference.
struct Comparison {
    matches: bool,
    tier: MatchTier,
    similarity: f64,
    fields_wrong: Vec<String>,
    why: Option<String>,
}

impl Comparison {
    fn equal(tier: MatchTier) -> Comparison {
        Comparison {
            matches: true,
            tier,
            similarity: 1.0,
            fields_wrong: Vec::new(),
            why: None,
        }
    }
}

/// Whether two JSON values are equal after canonicalization: object key
/// order does not matter, and numbers compare by value (`1`, `1.0` and
/// `1e0` are equal).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    let mut diff = Vec::new();
    json_diff("$", a, b, &mut diff);
    diff.is_empty()
}

/// Pushes onto `out` the paths under `path` where `candidate` differs from
/// `reference`: into objects key by key (a key on one side only is a
/// difference at its path), elsewhere the whole value.
fn json_diff(path: &str, reference: &Value, candidate: &Value, out: &mut Vec<String>) {
    match (reference, candidate) {
        (Value::Object(r), Value::Object(c)) => {
            let keys: BTreeSet<&String> = r.keys().chain(c.keys()).collect();
            for k in keys {
                let sub = json_path(path, k);
                match (r.get(k), c.get(k)) {
                    (Some(rv), Some(cv)) => json_diff(&sub, rv, cv, out),
                    _ => out.push(sub),
                }
            }
        }
        (Value::Array(r), Value::Array(c)) => {
            let same = r.len() == c.len() && r.iter().zip(c).all(|(a, b)| json_equal(a, b));
            if !same {
                out.push(path.to_owned());
            }
        }
        (Value::Number(r), Value::Number(c)) => {
            let same = match (r.as_i64(), c.as_i64(), r.as_u64(), c.as_u64()) {
                (Some(a), Some(b), _, _) => a == b,
                (_, _, Some(a), Some(b)) => a == b,
                _ => r.as_f64() == c.as_f64(),
            };
            if !same {
                out.push(path.to_owned());
            }
        }
        (r, c) => {
            if r != c {
                out.push(path.to_owned());
            }
        }
    }
}

/// `$.key`, or `$["odd key"]` when the key is not a plain identifier.
pub fn json_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", Value::String(key.to_owned()))
    }
}

/// The value at a path [`json_diff`] produced, if present.
fn json_at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = root;
    let mut rest = path.strip_prefix('$')?;
    while !rest.is_empty() {
        let (key, tail) = if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            (r[..end].to_owned(), &r[end..])
        } else if let Some(r) = rest.strip_prefix('[') {
            let mut de = serde_json::Deserializer::from_str(r).into_iter::<String>();
            let key = de.next()?.ok()?;
            let used = de.byte_offset();
            (key, r.get(used + 1..)?)
        } else {
            return None;
        };
        cur = cur.get(&key)?;
        rest = tail;
    }
    Some(cur)
}

fn describe_json_diff(reference: &Value, candidate: &Value, paths: &[String]) -> String {
    let show = |v: Option<&Value>| v.map_or("nothing".to_owned(), |v| clip(&v.to_string()));
    let parts: Vec<String> = paths
        .iter()
        .take(3)
        .map(|p| {
            format!(
                "{p} is {} where the reference has {}",
                show(json_at(candidate, p)),
                show(json_at(reference, p))
            )
        })
        .collect();
    let more = paths.len().saturating_sub(3);
    let tail = if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    };
    format!("differs from the reference: {}{tail}", parts.join("; "))
}

/// Equality after the format's own normalization: numbers by value,
/// UUIDs and e-mail addresses ignoring case, the others as trimmed text.
fn format_equal(format: ValueFormat, a: &str, b: &str) -> bool {
    match format {
        ValueFormat::Integer | ValueFormat::Number => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x == y,
            _ => a == b,
        },
        ValueFormat::String(Format::Uuid | Format::Email) => a.eq_ignore_ascii_case(b),
        _ => a == b,
    }
}

/// The free-text threshold from the references: just above the highest
/// similarity between two references of different inputs (so answering
/// another input's reference never passes), within
/// [`SIMILARITY_MIN_RANGE`]; [`SIMILARITY_MIN_DEFAULT`] with fewer than two.
fn infer_similarity_min(kind: Similarity, outputs: &[&str]) -> f64 {
    let sample: Vec<&str> = outputs.iter().copied().take(SIMILARITY_SAMPLE).collect();
    let mut highest: Option<f64> = None;
    for (i, a) in sample.iter().enumerate() {
        for b in &sample[i + 1..] {
            if a == b {
                continue;
            }
            let s = match kind {
                Similarity::RougeL => similarity::rouge_l(a, b),
                Similarity::EditDistance => similarity::edit_similarity(a, b),
            };
            highest = Some(highest.map_or(s, |h: f64| h.max(s)));
        }
    }
    match highest {
        None => SIMILARITY_MIN_DEFAULT,
        Some(h) => (h + SIMILARITY_MARGIN).clamp(SIMILARITY_MIN_RANGE.0, SIMILARITY_MIN_RANGE.1),
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
        if self.judged_by_shape_only() {
            writeln!(
                f,
                "Judged by shape only: this verifier predates reference checks, so an answer of the right shape passed even with wrong values. Recompile to re-judge."
            )?;
        } else {
            writeln!(f, "Correctness (where the test has a reference answer):")?;
            let rule = match &self.output {
                OutputKind::Json { .. } => "the same JSON value as the reference, whatever the key order, whitespace or number spelling".to_owned(),
                OutputKind::Label { .. } => "the same label as the reference".to_owned(),
                OutputKind::Format { format } => format!(
                    "the same value as the reference ({})",
                    match format {
                        ValueFormat::Integer | ValueFormat::Number => "compared as numbers",
                        ValueFormat::String(Format::Uuid | Format::Email) => "ignoring case",
                        _ => "after trimming",
                    }
                ),
                OutputKind::Text => format!(
                    "the reference ignoring case and whitespace, or {} at least {:.3}",
                    match self.similarity {
                        Similarity::RougeL => "ROUGE-L F1",
                        Similarity::EditDistance => "1 - normalized edit distance",
                    },
                    self.similarity_threshold()
                ),
            };
            writeln!(f, "  - the output is {rule}")?;
            writeln!(
                f,
                "  - without a reference an answer passes on the gates alone and is counted apart, never as accuracy"
            )?;
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
