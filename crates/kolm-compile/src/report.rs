//! What a compile tells its caller, as serde types: the progress events
//! `kolmctl compile --progress-json` writes one per line on stderr
//! ([`CompileEvent`]), and the report `--json` prints on stdout
//! ([`CompileReport`], or a [`CompileFailure`] when the compile failed).
//! kolmctl writes them, kolmd passes them on to its `Compile` callers and
//! reads the artifact's path, kolmctl reads them back from kolmd, and the
//! benches read their figures: every one of them through these types, so
//! a figure cannot go missing or change its name in one place only.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::kscore::{KScore, KScoreInputs};
use crate::pipeline::eval::{AllScores, DraftingSummary, FieldErrors, Rate, Scores};
use crate::pipeline::synthesize::{AbsorbReport, SynthesisReport};
use crate::pipeline::{DistillReport, Stage, StageTime, TrainSummary, ValidationReport};
use crate::recipes::{Coverage, PackStats};
use crate::regression::RegressionCheck;
use crate::teacher::Accounting;

/// One progress event of a running compile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CompileEvent {
    /// A stage began; `total` is its units of work (0: unknown).
    StageStarted { stage: Stage, total: u64 },
    /// `n` more units of the current stage are done.
    Advance { n: u64 },
    /// A line for a person.
    Note { message: String },
    /// A stage ended after `seconds`.
    StageFinished { stage: Stage, seconds: f64 },
}

/// A rate as reports print it: counts, value and 95% Wilson interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateFigures {
    pub value: f64,
    pub passed: usize,
    pub n: usize,
    /// The 95% Wilson score interval.
    pub interval95: [f64; 2],
}

impl From<Rate> for RateFigures {
    fn from(r: Rate) -> RateFigures {
        let (lo, hi) = r.interval();
        RateFigures {
            value: r.value(),
            passed: r.passed,
            n: r.n,
            interval95: [lo, hi],
        }
    }
}

impl RateFigures {
    /// The counts it was computed from.
    pub fn rate(&self) -> Rate {
        Rate {
            passed: self.passed,
            n: self.n,
        }
    }
}

/// One model's scores in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreFigures {
    /// Correct answers among the tests with a reference output.
    pub accuracy: RateFigures,
    /// Gate passes among the tests without a reference: never accuracy.
    pub unchecked: RateFigures,
    /// JSON tasks: how often each field was wrong.
    pub fields: Vec<FieldErrors>,
}

impl From<&Scores> for ScoreFigures {
    fn from(s: &Scores) -> ScoreFigures {
        ScoreFigures {
            accuracy: s.accuracy.into(),
            unchecked: s.unchecked.into(),
            fields: s.fields.clone(),
        }
    }
}

impl ScoreFigures {
    pub fn scores(&self) -> Scores {
        Scores {
            accuracy: self.accuracy.rate(),
            unchecked: self.unchecked.rate(),
            fields: self.fields.clone(),
        }
    }
}

/// Student, base and teacher scores in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccuracyFigures {
    pub student: ScoreFigures,
    pub base: ScoreFigures,
    pub teacher: ScoreFigures,
}

impl From<&AllScores> for AccuracyFigures {
    fn from(s: &AllScores) -> AccuracyFigures {
        AccuracyFigures {
            student: (&s.student).into(),
            base: (&s.base).into(),
            teacher: (&s.teacher).into(),
        }
    }
}

impl AccuracyFigures {
    pub fn scores(&self) -> AllScores {
        AllScores {
            student: self.student.scores(),
            base: self.base.scores(),
            teacher: self.teacher.scores(),
        }
    }
}

/// One base the compile trained on (`base_candidates`, also in the
/// manifest's `compile.base_candidates`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaseCandidateReport {
    /// The base as given (`--base`) or found.
    pub base: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The K-score its student reached.
    pub k: f64,
    /// Its student's accuracy.
    pub accuracy: f64,
    pub passed_gate: bool,
}

/// What `kolmctl compile --json` prints when the compile ran to the end
/// (a compile below its gate included: then `ok` is false and there is no
/// artifact unless `--force`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompileReport {
    /// The artifact was written.
    pub ok: bool,
    /// Where, as given by `--out`.
    pub artifact: Option<PathBuf>,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// The student's headline pass rate (accuracy where tests have
    /// references), as in the K-score.
    pub student_pass_rate: f64,
    pub base_pass_rate: f64,
    pub teacher_pass_rate: f64,
    pub accuracy: AccuracyFigures,
    pub k_score: f64,
    pub k_parts: KScore,
    pub k_inputs: KScoreInputs,
    pub gate: f64,
    pub passed_gate: bool,
    /// `PROVIDER:MODEL`.
    pub teacher: String,
    pub teacher_calls: u64,
    pub cache_hits: u64,
    pub cost_usd: f64,
    pub teacher_accounting: Accounting,
    pub distill: DistillReport,
    pub train: TrainSummary,
    pub validation: Option<ValidationReport>,
    pub synthesis: Option<SynthesisReport>,
    /// What the drift stage did (`--from-drift`).
    #[serde(default)]
    pub absorbed: Option<AbsorbReport>,
    /// The regression gate against the version it replaces
    /// (`--from-drift`).
    #[serde(default)]
    pub regression: Option<RegressionCheck>,
    /// The base the artifact ships.
    pub base: PathBuf,
    pub base_candidates: Vec<BaseCandidateReport>,
    pub recipes: PackStats,
    /// The recall index's summary (as in the manifest's `compile.recall`).
    pub recall: Option<serde_json::Value>,
    pub coverage: Coverage,
    /// The student's drafting on the held-out tests, as the eval pack
    /// sums it ([`crate::pipeline::EvalPack::drafting`]; also the
    /// manifest's `compile.evaluation.drafting`).
    #[serde(default)]
    pub drafting: Option<DraftingSummary>,
    pub stages: Vec<StageTime>,
    /// Training examples and held-out tests.
    pub examples: usize,
    pub tests: usize,
}

impl CompileReport {
    /// The seconds `stage` took, if it ran.
    pub fn stage_seconds(&self, stage: Stage) -> Option<f64> {
        self.stages
            .iter()
            .find(|t| t.stage == stage)
            .map(|t| t.seconds)
    }
}

/// What `kolmctl compile --json` prints when it failed before a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompileFailure {
    /// Always false.
    pub ok: bool,
    pub error: FailureDetail,
}

/// The error of a [`CompileFailure`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureDetail {
    /// `malformed`, `untrusted`, ... or `error`.
    pub kind: String,
    pub exit_code: u8,
    pub message: String,
}

/// Either of the two things `kolmctl compile --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CompileOutcome {
    Failed(CompileFailure),
    Report(Box<CompileReport>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_name() {
        let e = CompileEvent::StageFinished {
            stage: Stage::Train,
            seconds: 1.5,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            r#"{"event":"stage_finished","stage":"train","seconds":1.5}"#
        );
        assert_eq!(serde_json::from_str::<CompileEvent>(&line).unwrap(), e);
        assert!(serde_json::from_str::<CompileEvent>(r#"{"event":"advance"}"#).is_err());
    }

    #[test]
    fn rates_round_trip_with_their_interval() {
        let r = Rate { passed: 13, n: 20 };
        let f = RateFigures::from(r);
        assert_eq!(f.value, 0.65);
        assert!(f.interval95[0] < 0.65 && 0.65 < f.interval95[1]);
        assert_eq!(f.rate(), r);
    }

    #[test]
    fn a_failure_is_not_read_as_a_report() {
        let failure = r#"{"ok":false,"error":{"kind":"error","exit_code":1,"message":"no"}}"#;
        match serde_json::from_str::<CompileOutcome>(failure).unwrap() {
            CompileOutcome::Failed(f) => assert_eq!(f.error.message, "no"),
            CompileOutcome::Report(_) => panic!("a failure read as a report"),
        }
    }
}
