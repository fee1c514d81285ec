//! The eval pack (`eval/heldout.jsonl`): every held-out test with the
//! answers of the student, the base alone and the teacher, their verdicts
//! and latencies, and a closing line with the artifact-level measures. The
//! K-score in the manifest is recomputed from this file alone
//! ([`EvalPack::kscore_inputs`]), so anyone holding the artifact can check
//! the number on its cover.

use serde::{Deserialize, Serialize};

use crate::kscore::KScoreInputs;
use crate::task::{Example, Input};
use crate::verifier::Assertion;

/// Version of the eval pack's line layout.
pub const EVAL_PACK_VERSION: u32 = 1;

/// One model's answer to one test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The text it answered.
    pub output: String,
    /// Whether the verifier passed it.
    pub passed: bool,
    /// Why the verifier failed it, in words (empty when passed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
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
}

impl TestRecord {
    /// A record for `test` with the three answers.
    pub fn new(test: &Example, student: Answer, base: Answer, teacher: Answer) -> Self {
        TestRecord {
            input: test.input.clone(),
            output: test.output.clone(),
            assertions: test.assertions.clone(),
            student,
            base,
            teacher,
        }
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

fn pass_rate<'a>(answers: impl Iterator<Item = &'a Answer>) -> f64 {
    mean(answers.map(|a| if a.passed { 1.0 } else { 0.0 }))
}

impl EvalPack {
    /// Student, base and teacher pass rates on the held-out tests.
    pub fn pass_rates(&self) -> (f64, f64, f64) {
        (
            pass_rate(self.tests.iter().map(|t| &t.student)),
            pass_rate(self.tests.iter().map(|t| &t.base)),
            pass_rate(self.tests.iter().map(|t| &t.teacher)),
        )
    }

    /// The K-score's inputs, from this pack alone: pass rates and mean
    /// latencies over the tests, cost per 1,000 answers from the mean cost
    /// per answer (the student's is 0: local inference), sizes and coverage
    /// from the measures line.
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
                    if m.version != EVAL_PACK_VERSION {
                        return Err(EvalPackError::Shape(format!(
                            "version {} is not supported (this kolm reads {EVAL_PACK_VERSION})",
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
            failures: if passed { vec![] } else { vec!["no".into()] },
            latency_s,
            cost_usd,
        }
    }

    fn pack() -> EvalPack {
        let test = Example {
            input: Input::Text("q".into()),
            output: Some("x".into()),
            assertions: vec![],
            origin: None,
        };
        EvalPack {
            tests: vec![
                TestRecord::new(
                    &test,
                    answer(true, 0.5, 0.0),
                    answer(false, 0.4, 0.0),
                    answer(true, 2.0, 0.002),
                ),
                TestRecord::new(
                    &test,
                    answer(false, 0.7, 0.0),
                    answer(false, 0.4, 0.0),
                    answer(true, 1.0, 0.001),
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
}
