//! The eval pack (`eval/heldout.jsonl`): every held-out test with the
//! answers of the student, the base alone and the teacher, their verdicts
//! and latencies, and a closing line with the artifact-level measures. The
//! K-score in the manifest is recomputed from this file alone
//! ([`EvalPack::kscore_inputs`]), so anyone holding the artifact can check
//! the number on its cover.
//!
//! Accuracy ([`EvalPack::scores`]) counts only answers checked against a
//! reference: `passed` means correct there. Answers to tests without a
//! reference passed the gates at best; they are counted apart. Every rate
//! carries its n and a 95% Wilson interval ([`Rate::interval`]). A version 1
//! pack (written before verdicts checked the reference) still reads;
//! [`EvalPack::judged_by_shape_only`] says its `passed` meant shape.
//!
//! Since version 3 every test also carries the student's two decodes of its
//! answer ([`DecodeFigures`]): drafting with the artifact's recipe pack (the
//! run the `student` answer and its latency come from, as kolmd serves it)
//! and token by token. The drafting summary ([`EvalPack::drafting`]) is a
//! function of those per-test figures alone; older packs read without them.
//!
//! Since version 4 every test also carries the figures drift is judged by
//! for the student's answer ([`DriftFigures`]); the manifest's
//! `compile.drift` thresholds are a function of them alone
//! ([`EvalPack::drift_thresholds`]).

use serde::{Deserialize, Serialize};

use crate::assertion::Assertion;
use crate::example::{Example, Input};
use crate::kscore::KScoreInputs;

/// Version of the eval pack's line layout this crate writes: 2 since
/// `passed` means matching the reference (and `checked` says whether there
/// was one), 3 since every test records the student's decode with and
/// without drafting (`drafting`), 4 since every test records the student
/// answer's drift figures (`drift`).
pub const EVAL_PACK_VERSION: u32 = 4;

/// The first version whose `passed` means matching the reference.
pub const REFERENCE_EVAL_PACK_VERSION: u32 = 2;

/// The oldest version still read: its `passed` meant "passed the gates".
pub const SHAPE_ONLY_EVAL_PACK_VERSION: u32 = 1;

/// One model's answer to one test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The text it answered.
    pub output: String,
    /// Whether the verifier passed it: correct when `checked`, the right
    /// shape otherwise.
    pub passed: bool,
    /// Whether it was checked against a reference output.
    #[serde(default)]
    pub checked: bool,
    /// Why the verifier failed it, in words (empty when passed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// JSON tasks: the paths whose value differs from the reference (`$`
    /// for an answer that is not JSON at all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields_wrong: Vec<String>,
    /// Seconds from the request to the whole answer.
    pub latency_s: f64,
    /// USD the answer cost (teacher only; 0 for local models).
    #[serde(default)]
    pub cost_usd: f64,
}

/// One held-out test and the three answers to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRecord {
    /// The input.
    pub input: Input,
    /// The reference output, when the test has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The test's explicit assertions.
    #[serde(default, rename = "assert", skip_serializing_if = "Vec::is_empty")]
    pub assertions: Vec<Assertion>,
    /// Base + adapter, greedy, on the student prompt.
    pub student: Answer,
    /// The base alone, greedy, zero-shot with the task description.
    pub base: Answer,
    /// The teacher, temperature 0, with the task and solved examples.
    pub teacher: Answer,
    /// The student's answer decoded drafting and token by token (absent
    /// before version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drafting: Option<DecodeFigures>,
    /// The student answer's drift figures (absent before version 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftFigures>,
}

/// What drift is judged by, for one answer (`kolm_artifact::drift`): kolmd
/// measures the same three figures on every answer it serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftFigures {
    /// The mean natural log-probability of the answer's sampled tokens.
    pub mean_logprob: Option<f64>,
    /// The share of the answer's tokens (as sampled) that the
    /// recipe pack predicts.
    pub recipe_coverage: Option<f64>,
    /// The best cosine similarity of a chunk recalled for the input (a
    /// task with a corpus).
    pub recall_best: Option<f64>,
}

impl TestRecord {
    /// A record for `test` with the three answers (and no decode figures).
    pub fn new(test: &Example, student: Answer, base: Answer, teacher: Answer) -> Self {
        TestRecord {
            input: test.input.clone(),
            output: test.output.clone(),
            assertions: test.assertions.clone(),
            student,
            base,
            teacher,
            drafting: None,
            drift: None,
        }
    }
}

/// How the student decoded its answer to one test, twice: drafting with the
/// artifact's recipe pack (the run `student` records, as kolmd serves it)
/// and token by token. Greedy decoding gives the same answer both ways
/// unless two tokens tie within rounding: llama.cpp's CPU kernels sum a
/// batch of one token and a batch of several in different orders, so the
/// logits of a verified draft can differ from the single token's in the
/// last bits (`docs/kolmd.md`, "Drafting"). Such an answer is recorded,
/// not hidden: `identical` is false and `undrafted_tokens` gives the other
/// run's count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeFigures {
    /// Tokens of the answer (drafting).
    pub tokens: u32,
    /// Whether the token-by-token answer was the same text in the same
    /// tokens (packs written before this field were checked to be).
    #[serde(default = "identical_by_default")]
    pub identical: bool,
    /// Tokens of the token-by-token answer, when it was not identical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undrafted_tokens: Option<u32>,
    /// Tokens drafted (each checked by the model).
    pub drafted: u32,
    /// Drafted tokens the model agreed with.
    pub accepted: u32,
    /// Decoding steps of the drafted run, the first (after the prompt)
    /// included; each emits one token of the model's own plus the drafts
    /// accepted.
    pub steps: u32,
    /// Seconds from the first token to the end of the answer, drafting.
    pub drafted_decode_s: f64,
    /// The same, token by token.
    pub undrafted_decode_s: f64,
    /// Seconds from the request to the whole answer token by token (the
    /// drafted run's is `student.latency_s`).
    pub undrafted_latency_s: f64,
}

fn identical_by_default() -> bool {
    true
}

/// The drafting figures of a pack, summed over the tests that carry
/// [`DecodeFigures`] ([`EvalPack::drafting`]). Every figure is a sum of the
/// per-test figures or a ratio of two such sums; a ratio whose divisor is 0
/// is 0 (per step) or absent (per second).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DraftingSummary {
    /// Tests with decode figures.
    pub tests: usize,
    /// Tests whose two answers were `identical`.
    pub identical: usize,
    /// Σ `tokens`.
    pub tokens: u64,
    /// Σ `undrafted_tokens` (`tokens` where identical).
    pub undrafted_tokens: u64,
    /// Σ `drafted`.
    pub drafted: u64,
    /// Σ `accepted`.
    pub accepted: u64,
    /// Σ `steps`.
    pub steps: u64,
    /// `accepted / steps`: drafted tokens accepted per step.
    pub accepted_per_step: f64,
    /// `tokens / steps`: tokens emitted per step.
    pub tokens_per_step: f64,
    /// Σ `drafted_decode_s`.
    pub drafted_decode_s: f64,
    /// Σ `undrafted_decode_s`.
    pub undrafted_decode_s: f64,
    /// `tokens / drafted_decode_s`: decode tokens per second, drafting.
    pub drafted_tokens_per_s: Option<f64>,
    /// `undrafted_tokens / undrafted_decode_s`: decode tokens per second,
    /// token by token.
    pub undrafted_tokens_per_s: Option<f64>,
    /// `drafted_tokens_per_s / undrafted_tokens_per_s`: the measured decode
    /// speedup of drafting.
    pub speedup: Option<f64>,
}

impl DraftingSummary {
    /// The summary of `figures` (see the field docs for each formula).
    pub fn of<'a>(figures: impl IntoIterator<Item = &'a DecodeFigures>) -> DraftingSummary {
        let mut s = DraftingSummary {
            tests: 0,
            identical: 0,
            tokens: 0,
            undrafted_tokens: 0,
            drafted: 0,
            accepted: 0,
            steps: 0,
            accepted_per_step: 0.0,
            tokens_per_step: 0.0,
            drafted_decode_s: 0.0,
            undrafted_decode_s: 0.0,
            drafted_tokens_per_s: None,
            undrafted_tokens_per_s: None,
            speedup: None,
        };
        for f in figures {
            s.tests += 1;
            s.identical += usize::from(f.identical);
            s.tokens += u64::from(f.tokens);
            s.undrafted_tokens += u64::from(f.undrafted_tokens.unwrap_or(f.tokens));
            s.drafted += u64::from(f.drafted);
            s.accepted += u64::from(f.accepted);
            s.steps += u64::from(f.steps);
            s.drafted_decode_s += f.drafted_decode_s;
            s.undrafted_decode_s += f.undrafted_decode_s;
        }
        let per_step = |n: u64| {
            if s.steps == 0 {
                0.0
            } else {
                n as f64 / s.steps as f64
            }
        };
        s.accepted_per_step = per_step(s.accepted);
        s.tokens_per_step = per_step(s.tokens);
        let per_second =
            |tokens: u64, seconds: f64| (seconds > 0.0).then(|| tokens as f64 / seconds);
        s.drafted_tokens_per_s = per_second(s.tokens, s.drafted_decode_s);
        s.undrafted_tokens_per_s = per_second(s.undrafted_tokens, s.undrafted_decode_s);
        s.speedup = match (s.drafted_tokens_per_s, s.undrafted_tokens_per_s) {
            (Some(d), Some(u)) if u > 0.0 => Some(d / u),
            _ => None,
        };
        s
    }

    /// `312 of 400 drafted tokens accepted, 2.1 tokens per step, decode
    /// 2.4x (96 vs 40 tokens/s)`: the report's drafting line, followed by
    /// `; 11 of 12 answers identical token by token` when one differed.
    pub fn describe(&self) -> String {
        let rate = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
        let speedup = self
            .speedup
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.1}x"));
        let mut line = format!(
            "{} of {} drafted tokens accepted, {:.1} tokens per step, decode {speedup} ({} vs {} tokens/s)",
            self.accepted,
            self.drafted,
            self.tokens_per_step,
            rate(self.drafted_tokens_per_s),
            rate(self.undrafted_tokens_per_s),
        );
        if self.identical < self.tests {
            line.push_str(&format!(
                "; {} of {} answers identical token by token",
                self.identical, self.tests
            ));
        }
        line
    }
}

/// Artifact-level measures, the pack's last line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measures {
    /// [`EVAL_PACK_VERSION`].
    pub version: u32,
    /// Bytes of what the student serves from: base, adapter, recipe pack,
    /// verifier (and recall index), summed. The eval pack itself and the
    /// manifest are not counted (they would make the size depend on itself).
    pub student_bytes: u64,
    /// The teacher's size in bytes, when known (a local teacher).
    pub teacher_bytes: Option<u64>,
    /// The recipe pack's coverage of the held-out reference outputs.
    pub coverage: f64,
}

/// One line of the pack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Test(Box<TestRecord>),
    Measures(Measures),
}

/// Errors reading an eval pack.
#[derive(Debug, thiserror::Error)]
pub enum EvalPackError {
    /// A line is not a valid record.
    #[error("eval pack line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The closing measures line is missing or not last.
    #[error("eval pack: {0}")]
    Shape(String),
}

/// The held-out evaluation of a compile.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPack {
    /// One record per held-out test, in test order.
    pub tests: Vec<TestRecord>,
    /// The artifact-level measures.
    pub measures: Measures,
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// A count of passes out of `n`, with its 95% interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// How many passed.
    pub passed: usize,
    /// Out of how many.
    pub n: usize,
}

/// The normal quantile of a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

impl Rate {
    /// `passed / n`, 0 when `n` is 0.
    pub fn value(self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.passed as f64 / self.n as f64
        }
    }

    /// The 95% Wilson score interval of the rate; `(0, 1)` when `n` is 0.
    pub fn interval(self) -> (f64, f64) {
        if self.n == 0 {
            return (0.0, 1.0);
        }
        let n = self.n as f64;
        let p = self.value();
        let z2 = Z95 * Z95;
        let denom = 1.0 + z2 / n;
        let centre = (p + z2 / (2.0 * n)) / denom;
        let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
        ((centre - half).max(0.0), (centre + half).min(1.0))
    }

    /// `0.65 [0.43, 0.82], 13 of 20`: the rate, its interval and its n.
    pub fn describe(self) -> String {
        let (lo, hi) = self.interval();
        format!(
            "{:.2} [{lo:.2}, {hi:.2}], {} of {}",
            self.value(),
            self.passed,
            self.n
        )
    }

    /// The rate as JSON: value, passed, n and the interval.
    pub fn to_json(self) -> serde_json::Value {
        let (lo, hi) = self.interval();
        serde_json::json!({
            "value": self.value(),
            "passed": self.passed,
            "n": self.n,
            "interval95": [lo, hi],
        })
    }
}

/// How often one JSON field was wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldErrors {
    /// The field's path (`$.time`).
    pub path: String,
    /// Answers that got it wrong (missing, or not JSON at all, included).
    pub wrong: usize,
    /// Answers checked against a reference that has the field.
    pub n: usize,
}

/// One model's scores on the held-out tests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Correct answers among the tests with a reference output: accuracy.
    pub accuracy: Rate,
    /// Answers that passed the gates among the tests without a reference:
    /// never accuracy.
    pub unchecked: Rate,
    /// JSON tasks: per field, how often it was wrong, in path order.
    pub fields: Vec<FieldErrors>,
}

impl Scores {
    /// The pass rate K counts: accuracy when any test has a reference,
    /// else the gate pass rate of the unchecked answers.
    pub fn headline(&self) -> f64 {
        if self.accuracy.n > 0 {
            self.accuracy.value()
        } else {
            self.unchecked.value()
        }
    }

    /// The scores as JSON, for reports.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "accuracy": self.accuracy.to_json(),
            "unchecked": self.unchecked.to_json(),
            "fields": self.fields,
        })
    }
}

/// Student, base and teacher scores.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AllScores {
    /// Base + adapter.
    pub student: Scores,
    /// The base alone.
    pub base: Scores,
    /// The teacher.
    pub teacher: Scores,
}

/// Whether a `fields_wrong` entry covers `path`: the same path, or a path
/// above it (`$` covers everything).
fn covers(entry: &str, path: &str) -> bool {
    entry == path
        || (path.starts_with(entry)
            && matches!(path.as_bytes().get(entry.len()), Some(b'.') | Some(b'[')))
}

/// The leaf paths of a JSON object, the way the verifier names them.
fn leaf_paths(value: &serde_json::Value) -> Vec<String> {
    fn walk(path: String, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) if !m.is_empty() => {
                for (k, sub) in m {
                    walk(crate::verifier::json_path(&path, k), sub, out);
                }
            }
            _ => out.push(path),
        }
    }
    let mut out = Vec::new();
    if value.is_object() {
        walk("$".to_owned(), value, &mut out);
    }
    out
}

/// Scores of one model's answers, `answers[i]` to `tests[i]`.
fn score<'a>(tests: &'a [TestRecord], answer: impl Fn(&'a TestRecord) -> &'a Answer) -> Scores {
    let mut scores = Scores::default();
    let mut fields: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for t in tests {
        let a = answer(t);
        let rate = if a.checked {
            &mut scores.accuracy
        } else {
            &mut scores.unchecked
        };
        rate.n += 1;
        rate.passed += usize::from(a.passed);
        if !a.checked {
            continue;
        }
        let reference = t
            .output
            .as_deref()
            .and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok());
        for path in reference.iter().flat_map(leaf_paths) {
            let e = fields.entry(path.clone()).or_default();
            e.1 += 1;
            if a.fields_wrong.iter().any(|w| covers(w, &path)) {
                e.0 += 1;
            }
        }
    }
    scores.fields = fields
        .into_iter()
        .map(|(path, (wrong, n))| FieldErrors { path, wrong, n })
        .collect();
    scores
}

impl EvalPack {
    /// Whether the pack was written before verdicts checked the reference:
    /// its `passed` fields mean "the right shape", not "correct".
    pub fn judged_by_shape_only(&self) -> bool {
        self.measures.version < REFERENCE_EVAL_PACK_VERSION
    }

    /// The drafting summary of the tests' decode figures; `None` when no
    /// test has them (a pack older than version 3).
    pub fn drafting(&self) -> Option<DraftingSummary> {
        let figures: Vec<&DecodeFigures> = self
            .tests
            .iter()
            .filter_map(|t| t.drafting.as_ref())
            .collect();
        (!figures.is_empty()).then(|| DraftingSummary::of(figures))
    }

    /// The drift thresholds of the tests' drift figures; `None` when no
    /// test has them (a pack older than version 4).
    pub fn drift_thresholds(&self) -> Option<kolm_artifact::drift::DriftThresholds> {
        let figures: Vec<&DriftFigures> =
            self.tests.iter().filter_map(|t| t.drift.as_ref()).collect();
        if figures.is_empty() {
            return None;
        }
        let of = |f: fn(&DriftFigures) -> Option<f64>| -> Vec<f64> {
            figures.iter().filter_map(|d| f(d)).collect()
        };
        Some(kolm_artifact::drift::DriftThresholds::measure(
            figures.len() as u32,
            &of(|d| d.mean_logprob),
            &of(|d| d.recipe_coverage),
            &of(|d| d.recall_best),
        ))
    }

    /// Student, base and teacher scores on the held-out tests.
    pub fn scores(&self) -> AllScores {
        AllScores {
            student: score(&self.tests, |t| &t.student),
            base: score(&self.tests, |t| &t.base),
            teacher: score(&self.tests, |t| &t.teacher),
        }
    }

    /// Student, base and teacher pass rates as K counts them
    /// ([`Scores::headline`]: accuracy where tests have references).
    pub fn pass_rates(&self) -> (f64, f64, f64) {
        let s = self.scores();
        (
            s.student.headline(),
            s.base.headline(),
            s.teacher.headline(),
        )
    }

    /// The K-score's inputs, from this pack alone: pass rates
    /// ([`pass_rates`](Self::pass_rates)) and mean latencies over the
    /// tests (the student's of its drafted run, since version 3), cost per
    /// 1,000 answers from the mean cost per answer (the
    /// student's is 0: local inference), sizes and coverage from the
    /// measures line.
    pub fn kscore_inputs(&self) -> KScoreInputs {
        let (student_pass_rate, _, teacher_pass_rate) = self.pass_rates();
        KScoreInputs {
            student_pass_rate,
            teacher_pass_rate,
            student_bytes: self.measures.student_bytes,
            teacher_bytes: self.measures.teacher_bytes,
            student_latency_s: mean(self.tests.iter().map(|t| t.student.latency_s)),
            teacher_latency_s: mean(self.tests.iter().map(|t| t.teacher.latency_s)),
            student_cost_per_1k: 1000.0 * mean(self.tests.iter().map(|t| t.student.cost_usd)),
            teacher_cost_per_1k: 1000.0 * mean(self.tests.iter().map(|t| t.teacher.cost_usd)),
            coverage: self.measures.coverage,
        }
    }

    /// The pack as JSON lines: tests in order, then the measures.
    pub fn to_jsonl(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let lines = self
            .tests
            .iter()
            .map(|t| Line::Test(Box::new(t.clone())))
            .chain(std::iter::once(Line::Measures(self.measures.clone())));
        for line in lines {
            serde_json::to_writer(&mut out, &line).expect("eval lines always serialize");
            out.push(b'\n');
        }
        out
    }

    /// Reads a pack written by [`to_jsonl`](Self::to_jsonl).
    pub fn parse(bytes: &[u8]) -> Result<EvalPack, EvalPackError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| EvalPackError::Shape(format!("not UTF-8: {e}")))?;
        let mut tests = Vec::new();
        let mut measures = None;
        for (i, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            if measures.is_some() {
                return Err(EvalPackError::Shape(format!(
                    "line {} follows the measures line, which must be last",
                    i + 1
                )));
            }
            let line: Line = serde_json::from_str(raw).map_err(|e| EvalPackError::Line {
                line: i + 1,
                message: e.to_string(),
            })?;
            match line {
                Line::Test(t) => tests.push(*t),
                Line::Measures(m) => {
                    if !(SHAPE_ONLY_EVAL_PACK_VERSION..=EVAL_PACK_VERSION).contains(&m.version) {
                        return Err(EvalPackError::Shape(format!(
                            "version {} is not supported (this kolm reads {SHAPE_ONLY_EVAL_PACK_VERSION} to {EVAL_PACK_VERSION}); upgrade kolm",
                            m.version
                        )));
                    }
                    measures = Some(m);
                }
            }
        }
        let measures = measures
            .ok_or_else(|| EvalPackError::Shape("the closing measures line is missing".into()))?;
        Ok(EvalPack { tests, measures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kscore::KScore;

    fn answer(passed: bool, latency_s: f64, cost_usd: f64) -> Answer {
        Answer {
            output: "x".into(),
            passed,
            checked: true,
            failures: if passed { vec![] } else { vec!["no".into()] },
            fields_wrong: vec![],
            latency_s,
            cost_usd,
        }
    }

    fn decode(
        tokens: u32,
        drafted: u32,
        accepted: u32,
        steps: u32,
        d: f64,
        u: f64,
    ) -> DecodeFigures {
        DecodeFigures {
            tokens,
            identical: true,
            undrafted_tokens: None,
            drafted,
            accepted,
            steps,
            drafted_decode_s: d,
            undrafted_decode_s: u,
            undrafted_latency_s: u + 0.1,
        }
    }

    fn pack() -> EvalPack {
        let test = Example {
            input: Input::Text("q".into()),
            output: Some("x".into()),
            assertions: vec![],
            origin: None,
        };
        let with = |mut r: TestRecord, figures: DecodeFigures| {
            r.drafting = Some(figures);
            r
        };
        EvalPack {
            tests: vec![
                with(
                    TestRecord::new(
                        &test,
                        answer(true, 0.5, 0.0),
                        answer(false, 0.4, 0.0),
                        answer(true, 2.0, 0.002),
                    ),
                    decode(12, 10, 8, 4, 0.25, 0.5),
                ),
                with(
                    TestRecord::new(
                        &test,
                        answer(false, 0.7, 0.0),
                        answer(false, 0.4, 0.0),
                        answer(true, 1.0, 0.001),
                    ),
                    decode(8, 6, 1, 7, 0.15, 0.3),
                ),
            ],
            measures: Measures {
                version: EVAL_PACK_VERSION,
                student_bytes: 100,
                teacher_bytes: None,
                coverage: 0.4,
            },
        }
    }

    #[test]
    fn round_trips_and_recomputes_the_same_k() {
        let p = pack();
        let back = EvalPack::parse(&p.to_jsonl()).unwrap();
        assert_eq!(back, p);
        let inputs = back.kscore_inputs();
        assert_eq!(inputs.student_pass_rate, 0.5);
        assert_eq!(inputs.teacher_pass_rate, 1.0);
        assert!((inputs.student_latency_s - 0.6).abs() < 1e-12);
        assert!((inputs.teacher_cost_per_1k - 1.5).abs() < 1e-12);
        assert_eq!(
            KScore::compute(&inputs).unwrap(),
            KScore::compute(&p.kscore_inputs()).unwrap()
        );
        assert_eq!(back.pass_rates(), (0.5, 0.0, 1.0));
    }

    #[test]
    fn drift_thresholds_are_the_lowest_figures_less_the_margins() {
        let mut p = pack();
        assert_eq!(p.drift_thresholds(), None, "no figures, no thresholds");
        p.tests[0].drift = Some(DriftFigures {
            mean_logprob: Some(-0.3),
            recipe_coverage: Some(0.5),
            recall_best: None,
        });
        p.tests[1].drift = Some(DriftFigures {
            mean_logprob: Some(-0.8),
            recipe_coverage: None,
            recall_best: None,
        });
        let back = EvalPack::parse(&p.to_jsonl()).unwrap();
        assert_eq!(back, p, "the figures round-trip");
        let t = back.drift_thresholds().unwrap();
        assert_eq!(t.answers, 2);
        assert_eq!(
            t.mean_logprob,
            Some(-0.8 - kolm_artifact::drift::LOGPROB_MARGIN)
        );
        assert_eq!(
            t.recipe_coverage,
            Some(0.5 - kolm_artifact::drift::SHARE_MARGIN)
        );
        assert_eq!(t.recall_best, None);
    }

    #[test]
    fn refuses_a_pack_without_measures_or_with_lines_after_them() {
        let p = pack();
        let bytes = p.to_jsonl();
        let text = String::from_utf8(bytes).unwrap();
        let without: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
        assert!(matches!(
            EvalPack::parse(without.as_bytes()),
            Err(EvalPackError::Shape(m)) if m.contains("missing")
        ));
        let after = format!("{text}{}\n", text.lines().next().unwrap());
        assert!(matches!(
            EvalPack::parse(after.as_bytes()),
            Err(EvalPackError::Shape(m)) if m.contains("must be last")
        ));
        assert!(matches!(
            EvalPack::parse(b"{\"kind\":\"test\"}\n"),
            Err(EvalPackError::Line { line: 1, .. })
        ));
    }

    #[test]
    fn rates_carry_a_wilson_interval() {
        let r = Rate { passed: 13, n: 20 };
        let (lo, hi) = r.interval();
        assert!(
            (lo - 0.4329).abs() < 1e-3 && (hi - 0.8188).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(r.describe(), "0.65 [0.43, 0.82], 13 of 20");
        assert_eq!(Rate { passed: 0, n: 0 }.interval(), (0.0, 1.0));
        let (lo, hi) = Rate { passed: 20, n: 20 }.interval();
        assert!(hi == 1.0 && (lo - 0.8389).abs() < 1e-3, "{lo}");
        let (lo, _) = Rate { passed: 0, n: 5 }.interval();
        assert_eq!(lo, 0.0);
    }

    #[test]
    fn unchecked_answers_are_counted_apart_and_fields_per_path() {
        let mut p = pack();
        let mut checked = p.tests[0].clone();
        checked.output = Some(r#"{"time":"09:15","who":"Ana"}"#.into());
        checked.student.passed = false;
        checked.student.fields_wrong = vec!["$.time".into()];
        let mut not_json = checked.clone();
        not_json.student.fields_wrong = vec!["$".into()];
        let mut right = checked.clone();
        right.student.passed = true;
        right.student.fields_wrong = vec![];
        let mut bare = p.tests[0].clone();
        bare.output = None;
        bare.student.checked = false;
        bare.student.passed = true;
        p.tests = vec![checked, not_json, right, bare];
        let s = p.scores().student;
        assert_eq!(s.accuracy, Rate { passed: 1, n: 3 });
        assert_eq!(s.unchecked, Rate { passed: 1, n: 1 });
        assert_eq!(
            s.fields,
            [
                FieldErrors {
                    path: "$.time".into(),
                    wrong: 2,
                    n: 3
                },
                FieldErrors {
                    path: "$.who".into(),
                    wrong: 1,
                    n: 3
                },
            ]
        );
        // K counts accuracy, never the unchecked pass.
        assert!((p.kscore_inputs().student_pass_rate - 1.0 / 3.0).abs() < 1e-12);
        let back = EvalPack::parse(&p.to_jsonl()).unwrap();
        assert_eq!(back.scores(), p.scores());
    }

    #[test]
    fn a_version_1_pack_reads_as_judged_by_shape_only() {
        let mut p = pack();
        p.measures.version = 1;
        let back = EvalPack::parse(&p.to_jsonl()).unwrap();
        assert!(back.judged_by_shape_only());
        assert!(!pack().judged_by_shape_only());
        p.measures.version = EVAL_PACK_VERSION + 1;
        let e = EvalPack::parse(&p.to_jsonl()).unwrap_err();
        assert!(e.to_string().contains("upgrade kolm"), "{e}");
    }

    #[test]
    fn a_version_2_pack_reads_judged_by_reference_without_drafting_figures() {
        // Two lines as version 2 wrote them: no `drafting` on the test.
        let v2 = concat!(
            r#"{"kind":"test","input":"q","output":"x","#,
            r#""student":{"output":"x","passed":true,"checked":true,"latency_s":0.5,"cost_usd":0.0},"#,
            r#""base":{"output":"y","passed":false,"checked":true,"latency_s":0.4,"cost_usd":0.0},"#,
            r#""teacher":{"output":"x","passed":true,"checked":true,"latency_s":2.0,"cost_usd":0.002}}"#,
            "\n",
            r#"{"kind":"measures","version":2,"student_bytes":100,"teacher_bytes":null,"coverage":0.4}"#,
            "\n",
        );
        let p = EvalPack::parse(v2.as_bytes()).unwrap();
        assert!(!p.judged_by_shape_only());
        assert_eq!(p.tests[0].drafting, None);
        assert_eq!(p.drafting(), None);
        assert_eq!(p.pass_rates(), (1.0, 0.0, 1.0));
        assert_eq!(p.kscore_inputs().student_latency_s, 0.5);
        // Written back, it stays without figures.
        assert!(!String::from_utf8(p.to_jsonl())
            .unwrap()
            .contains("drafting"));
    }

    #[test]
    fn the_drafting_summary_is_a_recount_of_the_per_test_figures() {
        let p = pack();
        let s = p.drafting().unwrap();
        // By hand: tokens 12 + 8, drafted 10 + 6, accepted 8 + 1, steps
        // 4 + 7, decode 0.25 + 0.15 s drafting and 0.5 + 0.3 s without.
        assert_eq!(
            (s.tests, s.tokens, s.drafted, s.accepted, s.steps),
            (2, 20, 16, 9, 11)
        );
        assert_eq!(s.accepted_per_step, 9.0 / 11.0);
        assert_eq!(s.tokens_per_step, 20.0 / 11.0);
        assert!((s.drafted_tokens_per_s.unwrap() - 50.0).abs() < 1e-9);
        assert!((s.undrafted_tokens_per_s.unwrap() - 25.0).abs() < 1e-9);
        assert!((s.speedup.unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(
            s.describe(),
            "9 of 16 drafted tokens accepted, 1.8 tokens per step, decode 2.0x (50 vs 25 tokens/s)"
        );

        // The same recount from the JSON lines alone, as a reader of the
        // artifact would do it.
        let bytes = p.to_jsonl();
        let lines: Vec<serde_json::Value> = String::from_utf8(bytes.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let tests: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "test").collect();
        let sum = |key: &str| {
            tests
                .iter()
                .map(|t| t["drafting"][key].as_f64().unwrap())
                .sum::<f64>()
        };
        let (tokens, steps) = (sum("tokens"), sum("steps"));
        assert_eq!(s.tokens as f64, tokens);
        assert_eq!(s.drafted as f64, sum("drafted"));
        assert_eq!(s.accepted as f64, sum("accepted"));
        assert_eq!(s.steps as f64, steps);
        assert_eq!(s.accepted_per_step, sum("accepted") / steps);
        assert_eq!(s.tokens_per_step, tokens / steps);
        let drafted = tokens / sum("drafted_decode_s");
        let undrafted = tokens / sum("undrafted_decode_s");
        assert_eq!(s.drafted_tokens_per_s, Some(drafted));
        assert_eq!(s.undrafted_tokens_per_s, Some(undrafted));
        assert_eq!(s.speedup, Some(drafted / undrafted));
        // And after a round trip through the file.
        assert_eq!(EvalPack::parse(&bytes).unwrap().drafting(), Some(s));
    }

    #[test]
    fn an_answer_that_differed_token_by_token_is_counted_and_its_own_tokens_rate_it() {
        let mut p = pack();
        // The second test's token-by-token answer took 6 tokens, not 8.
        let f = p.tests[1].drafting.as_mut().unwrap();
        f.identical = false;
        f.undrafted_tokens = Some(6);
        let s = p.drafting().unwrap();
        assert_eq!((s.tests, s.identical), (2, 1));
        assert_eq!((s.tokens, s.undrafted_tokens), (20, 18));
        // 18 tokens in 0.5 + 0.3 s token by token; 20 in 0.4 s drafting.
        assert!((s.undrafted_tokens_per_s.unwrap() - 22.5).abs() < 1e-9);
        assert!((s.drafted_tokens_per_s.unwrap() - 50.0).abs() < 1e-9);
        assert!(s
            .describe()
            .ends_with("; 1 of 2 answers identical token by token"));
        // Written and read back, the figures stay; an identical answer
        // writes no `undrafted_tokens`, and a line without `identical`
        // (an earlier version 3 pack) reads as identical.
        let back = EvalPack::parse(&p.to_jsonl()).unwrap();
        assert_eq!(back.drafting(), Some(s));
        let text = String::from_utf8(pack().to_jsonl()).unwrap();
        assert!(!text.contains("undrafted_tokens"), "{text}");
        let old = text.replace("\"identical\":true,", "");
        assert_ne!(old, text);
        assert_eq!(
            EvalPack::parse(old.as_bytes()).unwrap().drafting(),
            pack().drafting()
        );
    }

    #[test]
    fn drafting_ratios_with_nothing_to_divide_by() {
        let mut p = pack();
        for t in &mut p.tests {
            t.drafting = Some(decode(1, 0, 0, 0, 0.0, 0.0));
        }
        let s = p.drafting().unwrap();
        assert_eq!((s.accepted_per_step, s.tokens_per_step), (0.0, 0.0));
        assert_eq!(
            (s.drafted_tokens_per_s, s.undrafted_tokens_per_s, s.speedup),
            (None, None, None)
        );
        assert_eq!(
            s.describe(),
            "0 of 0 drafted tokens accepted, 0.0 tokens per step, decode - (- vs - tokens/s)"
        );
        // Only the tests with figures count.
        let mut p = pack();
        p.tests[1].drafting = None;
        assert_eq!(p.drafting().unwrap().tests, 1);
        p.tests[0].drafting = None;
        assert_eq!(p.drafting(), None);
    }
}
