//! The regression gate of a recompile (`kolmctl compile --from-drift`): the
//! new version must score at least as well as the version it replaces on
//! that version's own eval pack, less a tolerance. Naive retraining on new
//! inputs is known to lose what a model had; this is what stops it.
//!
//! Both versions' answers are judged by the same verifier (the new
//! compile's), so a verifier that changed between the two cannot make a
//! regression look like progress. The rate is accuracy over the tests with
//! a reference, or, for a task whose tests carry only assertions, the pass
//! rate over all of them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::pipeline::eval::{EvalPack, Rate, TestRecord};
use crate::verifier::Verifier;

/// What the gate compared and decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegressionCheck {
    /// The version the new one replaces, `NAME:VERSION`.
    pub from: String,
    /// The old version's answers on its eval pack.
    pub old: Rate,
    /// The new version's answers on the same tests.
    pub new: Rate,
    /// How far below the old rate the new one may fall (a share, 0 by
    /// default).
    pub tolerance: f64,
    /// Whether the new version passes: `new >= old - tolerance`.
    pub passed: bool,
}

/// Why the gate could not compare the two versions.
#[derive(Debug, thiserror::Error)]
pub enum RegressionError {
    /// The two eval packs do not hold the same tests.
    #[error("the new eval pack does not hold the tests of {from}'s ({old} tests there, {new} here, {missing} of them missing): the versions cannot be compared")]
    DifferentTests {
        /// The old version.
        from: String,
        /// Its number of tests.
        old: usize,
        /// The new number.
        new: usize,
        /// Old tests the new pack lacks.
        missing: usize,
    },
    /// The tolerance is not a share.
    #[error("the regression tolerance must be a share in [0, 1], got {0}")]
    Tolerance(f64),
}

impl RegressionCheck {
    /// Compares `new` with `old` (the eval pack of `from`), both judged by
    /// `verifier`.
    pub fn compare(
        from: &str,
        verifier: &Verifier,
        old: &EvalPack,
        new: &EvalPack,
        tolerance: f64,
    ) -> Result<RegressionCheck, RegressionError> {
        if !(0.0..=1.0).contains(&tolerance) {
            return Err(RegressionError::Tolerance(tolerance));
        }
        let inputs = |p: &EvalPack| -> BTreeSet<String> {
            p.tests.iter().map(|t| t.input.digest()).collect()
        };
        let (old_inputs, new_inputs) = (inputs(old), inputs(new));
        let missing = old_inputs.difference(&new_inputs).count();
        if missing > 0 {
            return Err(RegressionError::DifferentTests {
                from: from.to_owned(),
                old: old.tests.len(),
                new: new.tests.len(),
                missing,
            });
        }
        // Only the old tests count, in case the new pack holds more.
        let new_tests: Vec<&TestRecord> = new
            .tests
            .iter()
            .filter(|t| old_inputs.contains(&t.input.digest()))
            .collect();
        let old_tests: Vec<&TestRecord> = old.tests.iter().collect();
        let (old_rate, new_rate) = (rate(verifier, &old_tests), rate(verifier, &new_tests));
        // A rounding hair does not fail a version that answers the same.
        let passed = new_rate.value() + 1e-12 >= old_rate.value() - tolerance;
        Ok(RegressionCheck {
            from: from.to_owned(),
            old: old_rate,
            new: new_rate,
            tolerance,
            passed,
        })
    }

    /// `regression gate: passed (old 0.88 [..], new 1.00 [..], tolerance 0)`.
    pub fn describe(&self) -> String {
        format!(
            "{} on {}'s eval pack: {} now, {} before (tolerance {})",
            if self.passed { "passed" } else { "REFUSED" },
            self.from,
            self.new.describe(),
            self.old.describe(),
            self.tolerance
        )
    }
}

/// The student answers of `tests` judged by `verifier`: accuracy over the
/// tests with a reference, else the pass rate over all.
fn rate(verifier: &Verifier, tests: &[&TestRecord]) -> Rate {
    let referenced: Vec<&&TestRecord> = tests.iter().filter(|t| t.output.is_some()).collect();
    let counted: Vec<&TestRecord> = if referenced.is_empty() {
        tests.to_vec()
    } else {
        referenced.into_iter().copied().collect()
    };
    Rate {
        passed: counted
            .iter()
            .filter(|t| {
                verifier
                    .judge(t.output.as_deref(), &t.assertions, &t.student.output)
                    .passed
            })
            .count(),
        n: counted.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::Example;
    use crate::pipeline::eval::{Answer, Measures};

    fn ex(input: &str, output: &str) -> Example {
        Example {
            input: crate::example::Input::Text(input.into()),
            output: Some(output.into()),
            assertions: Vec::new(),
            origin: None,
        }
    }

    fn answer(output: &str) -> Answer {
        Answer {
            output: output.into(),
            passed: false,
            checked: false,
            failures: Vec::new(),
            fields_wrong: Vec::new(),
            latency_s: 0.0,
            cost_usd: 0.0,
        }
    }

    fn pack(answers: &[(&str, &str, &str)]) -> EvalPack {
        EvalPack {
            tests: answers
                .iter()
                .map(|(input, reference, said)| {
                    TestRecord::new(
                        &ex(input, reference),
                        answer(said),
                        answer(""),
                        answer(reference),
                    )
                })
                .collect(),
            measures: Measures {
                version: crate::pipeline::eval::EVAL_PACK_VERSION,
                student_bytes: 0,
                teacher_bytes: None,
                coverage: 0.0,
            },
        }
    }

    fn verifier() -> Verifier {
        Verifier::infer(&[ex("a", r#"{"t":"1"}"#), ex("b", r#"{"t":"2"}"#)], &[]).unwrap()
    }

    #[test]
    fn a_version_that_loses_a_test_is_refused_unless_the_tolerance_allows_it() {
        let old = pack(&[
            ("x", r#"{"t":"1"}"#, r#"{"t":"1"}"#),
            ("y", r#"{"t":"2"}"#, r#"{"t":"2"}"#),
        ]);
        // Schema-valid, wrong value: a failure.
        let worse = pack(&[
            ("x", r#"{"t":"1"}"#, r#"{"t":"1"}"#),
            ("y", r#"{"t":"2"}"#, r#"{"t":"9"}"#),
        ]);
        let v = verifier();
        let check = RegressionCheck::compare("m:0.1.0", &v, &old, &worse, 0.0).unwrap();
        assert_eq!((check.old.passed, check.new.passed, check.new.n), (2, 1, 2));
        assert!(!check.passed);
        assert!(
            check
                .describe()
                .starts_with("REFUSED on m:0.1.0's eval pack"),
            "{}",
            check.describe()
        );
        assert!(
            RegressionCheck::compare("m:0.1.0", &v, &old, &worse, 0.5)
                .unwrap()
                .passed
        );
        assert!(
            RegressionCheck::compare("m:0.1.0", &v, &old, &old, 0.0)
                .unwrap()
                .passed
        );
        assert!(
            RegressionCheck::compare("m:0.1.0", &v, &worse, &old, 0.0)
                .unwrap()
                .passed
        );
    }

    #[test]
    fn packs_of_other_tests_and_bad_tolerances_are_refused() {
        let v = verifier();
        let old = pack(&[("x", r#"{"t":"1"}"#, r#"{"t":"1"}"#)]);
        let other = pack(&[("z", r#"{"t":"1"}"#, r#"{"t":"1"}"#)]);
        let err = RegressionCheck::compare("m:1", &v, &old, &other, 0.0).unwrap_err();
        assert!(err.to_string().contains("cannot be compared"), "{err}");
        assert!(matches!(
            RegressionCheck::compare("m:1", &v, &old, &old, 1.5),
            Err(RegressionError::Tolerance(_))
        ));
    }
}
