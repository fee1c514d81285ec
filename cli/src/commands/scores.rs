//! The accuracy lines every verb that shows a compile's scores prints
//! (`compile`, `compile --via-daemon`, `inspect`): one place, so they read
//! the same everywhere.

use kolm_compile::pipeline::eval::AllScores;

/// Prints the accuracy lines of a compile (or of an artifact's manifest):
/// each model's accuracy with its interval and n, the answers without a
/// reference apart, and the student's fields that were wrong.
pub fn print_scores(scores: &AllScores) {
    let tests = scores.student.accuracy.n;
    let unchecked = scores.student.unchecked.n;
    if tests > 0 {
        outln!("held-out accuracy    ({tests} test(s) with a reference answer; 95% interval)");
        for (who, s) in [
            ("student", &scores.student),
            ("base", &scores.base),
            ("teacher", &scores.teacher),
        ] {
            outln!("  {who:<18} {}", s.accuracy.describe());
        }
    } else {
        outln!("held-out accuracy    - (no test has a reference answer: nothing was checked for correctness)");
    }
    if unchecked > 0 {
        outln!(
            "no reference         {unchecked} test(s): student {}, base {}, teacher {} passed the gates (right shape, not checked for correctness)",
            scores.student.unchecked.passed, scores.base.unchecked.passed, scores.teacher.unchecked.passed
        );
    }
    let wrong: Vec<String> = scores
        .student
        .fields
        .iter()
        .filter(|f| f.wrong > 0)
        .map(|f| format!("{} wrong on {} of {}", f.path, f.wrong, f.n))
        .collect();
    if !scores.student.fields.is_empty() {
        outln!(
            "student fields       {}",
            if wrong.is_empty() {
                "every field right on every test".to_owned()
            } else {
                wrong.join(", ")
            }
        );
    }
}
