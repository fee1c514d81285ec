//! The K-score: one number in [0, 1] on an artifact's cover, the harmonic
//! mean of five sub-scores: accuracy and coverage absolute, size, latency
//! and cost normalized against the teacher measured in the same compile.
//! `docs/k-score.md` is the formula's reference; this module is its
//! implementation.
//!
//! - accuracy `a = s_pass`, the student's share of correct answers on the
//!   held-out tests (absolute: a student as wrong as its teacher is not
//!   thereby right).
//! - size `z = min(1, t_bytes / s_bytes)`, where `t_bytes` is the teacher's
//!   size when known and [`DEFAULT_TEACHER_BYTES`] otherwise.
//! - latency `l = min(1, t_latency / s_latency)` (per answer; the
//!   student's answers drafting with its recipe pack, as kolmd serves them).
//! - cost `c = min(1, t_cost / s_cost)` (per 1,000 answers); `c = 1` when
//!   the student costs nothing.
//! - coverage `v` = the recipe pack's coverage share (the teacher has no
//!   pack, so this one is absolute).
//!
//! `K = 5 / (1/a + 1/z + 1/l + 1/c + 1/v)`, and `K = 0` when any sub-score
//! is 0.

use serde::{Deserialize, Serialize};

/// Teacher size assumed when the teacher's size is unknown (an API model):
/// 16 GB, an 8-billion-parameter model at 16 bits, the smallest plausible
/// frontier teacher.
pub const DEFAULT_TEACHER_BYTES: u64 = 16_000_000_000;

/// Errors: a measurement out of range.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KScoreError {
    /// A field is negative, not finite, or a share above 1.
    #[error("K-score input {field} = {value} is out of range ({range})")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The allowed range.
        range: &'static str,
    },
}

/// What the compile measured, for student and teacher, on the same held-out
/// tests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KScoreInputs {
    /// Student accuracy in [0, 1]: correct answers among the held-out tests
    /// with a reference (the gate pass rate when no test has one).
    pub student_pass_rate: f64,
    /// Teacher accuracy in [0, 1], the same way (reported beside K; not a
    /// part of it).
    pub teacher_pass_rate: f64,
    /// Student artifact size on disk in bytes.
    pub student_bytes: u64,
    /// Teacher size in bytes, when known (a local teacher); else
    /// [`DEFAULT_TEACHER_BYTES`] is used.
    pub teacher_bytes: Option<u64>,
    /// Student mean latency per answer in seconds, drafting with the
    /// artifact's recipe pack (the way kolmd serves it).
    pub student_latency_s: f64,
    /// Teacher mean latency per answer in seconds.
    pub teacher_latency_s: f64,
    /// Student cost per 1,000 answers in USD (0 for local inference).
    pub student_cost_per_1k: f64,
    /// Teacher cost per 1,000 answers in USD.
    pub teacher_cost_per_1k: f64,
    /// Recipe-pack coverage share in [0, 1].
    pub coverage: f64,
}

/// The K-score and its parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KScore {
    /// The harmonic mean of the five sub-scores.
    pub k: f64,
    /// Accuracy sub-score.
    pub accuracy: f64,
    /// Size sub-score.
    pub size: f64,
    /// Latency sub-score.
    pub latency: f64,
    /// Cost sub-score.
    pub cost: f64,
    /// Coverage sub-score.
    pub coverage: f64,
}

fn check(field: &'static str, value: f64, share: bool) -> Result<f64, KScoreError> {
    let ok = value.is_finite() && value >= 0.0 && (!share || value <= 1.0);
    if ok {
        Ok(value)
    } else {
        Err(KScoreError::OutOfRange {
            field,
            value,
            range: if share { "[0, 1]" } else { "≥ 0, finite" },
        })
    }
}

/// `min(1, teacher / student)` for a lower-is-better quantity; 1 when the
/// student's value is 0 (nothing can beat free or instant).
fn ratio(teacher: f64, student: f64) -> f64 {
    if student <= 0.0 {
        1.0
    } else {
        (teacher / student).min(1.0)
    }
}

impl KScore {
    /// Computes K from measurements (see the module documentation).
    pub fn compute(m: &KScoreInputs) -> Result<KScore, KScoreError> {
        let s_pass = check("student_pass_rate", m.student_pass_rate, true)?;
        // Refused when out of range, though K does not use it.
        check("teacher_pass_rate", m.teacher_pass_rate, true)?;
        let s_lat = check("student_latency_s", m.student_latency_s, false)?;
        let t_lat = check("teacher_latency_s", m.teacher_latency_s, false)?;
        let s_cost = check("student_cost_per_1k", m.student_cost_per_1k, false)?;
        let t_cost = check("teacher_cost_per_1k", m.teacher_cost_per_1k, false)?;
        let coverage = check("coverage", m.coverage, true)?;
        let accuracy = s_pass;
        let t_bytes = m.teacher_bytes.unwrap_or(DEFAULT_TEACHER_BYTES) as f64;
        let size = ratio(t_bytes, m.student_bytes as f64);
        let latency = ratio(t_lat, s_lat);
        let cost = ratio(t_cost, s_cost);
        let parts = [accuracy, size, latency, cost, coverage];
        let k = if parts.iter().any(|p| *p <= 0.0) {
            0.0
        } else {
            parts.len() as f64 / parts.iter().map(|p| 1.0 / p).sum::<f64>()
        };
        Ok(KScore {
            k,
            accuracy,
            size,
            latency,
            cost,
            coverage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> KScoreInputs {
        KScoreInputs {
            student_pass_rate: 0.8,
            teacher_pass_rate: 0.9,
            student_bytes: 100_000_000,
            teacher_bytes: None,
            student_latency_s: 0.5,
            teacher_latency_s: 2.0,
            student_cost_per_1k: 0.0,
            teacher_cost_per_1k: 1.5,
            coverage: 0.4,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn worked_example() {
        let k = KScore::compute(&base()).unwrap();
        let a = 0.8;
        assert!(close(k.accuracy, a));
        assert_eq!(
            (k.size, k.latency, k.cost, k.coverage),
            (1.0, 1.0, 1.0, 0.4)
        );
        assert!(close(k.k, 5.0 / (1.0 / a + 3.0 + 1.0 / 0.4)));
    }

    #[test]
    fn student_worse_than_teacher_is_penalized() {
        let m = KScoreInputs {
            student_latency_s: 4.0,
            student_bytes: 32_000_000_000,
            teacher_bytes: Some(8_000_000_000),
            student_cost_per_1k: 3.0,
            ..base()
        };
        let k = KScore::compute(&m).unwrap();
        assert!(close(k.latency, 0.5));
        assert!(close(k.size, 0.25));
        assert!(close(k.cost, 0.5));
        // Accuracy is absolute: matching a teacher that is right half the
        // time scores 0.5, not 1.
        let k = KScore::compute(&KScoreInputs {
            student_pass_rate: 0.5,
            teacher_pass_rate: 0.5,
            ..base()
        })
        .unwrap();
        assert_eq!(k.accuracy, 0.5);
    }

    #[test]
    fn edge_cases() {
        // Zero teacher pass rate: accuracy is still the student's own.
        let k = KScore::compute(&KScoreInputs {
            teacher_pass_rate: 0.0,
            ..base()
        })
        .unwrap();
        assert!(close(k.accuracy, 0.8));
        let k = KScore::compute(&KScoreInputs {
            teacher_pass_rate: 0.0,
            student_pass_rate: 0.0,
            ..base()
        })
        .unwrap();
        assert_eq!((k.accuracy, k.k), (0.0, 0.0));
        // Zero cost on both sides: the student is not worse.
        let k = KScore::compute(&KScoreInputs {
            teacher_cost_per_1k: 0.0,
            ..base()
        })
        .unwrap();
        assert_eq!(k.cost, 1.0);
        // A free teacher and a paid student: cost 0, so K = 0.
        let k = KScore::compute(&KScoreInputs {
            teacher_cost_per_1k: 0.0,
            student_cost_per_1k: 0.1,
            ..base()
        })
        .unwrap();
        assert_eq!((k.cost, k.k), (0.0, 0.0));
        // No coverage: K = 0 (the harmonic mean is dominated by its worst part).
        assert_eq!(
            KScore::compute(&KScoreInputs {
                coverage: 0.0,
                ..base()
            })
            .unwrap()
            .k,
            0.0
        );
        // All perfect: K = 1.
        let k = KScore::compute(&KScoreInputs {
            student_pass_rate: 1.0,
            coverage: 1.0,
            ..base()
        })
        .unwrap();
        assert!(close(k.k, 1.0));
        // Zero student latency counts as instant.
        assert_eq!(
            KScore::compute(&KScoreInputs {
                student_latency_s: 0.0,
                ..base()
            })
            .unwrap()
            .latency,
            1.0
        );
    }

    #[test]
    fn out_of_range_inputs_are_refused() {
        for m in [
            KScoreInputs {
                student_pass_rate: 1.5,
                ..base()
            },
            KScoreInputs {
                coverage: -0.1,
                ..base()
            },
            KScoreInputs {
                teacher_latency_s: f64::NAN,
                ..base()
            },
            KScoreInputs {
                teacher_cost_per_1k: f64::INFINITY,
                ..base()
            },
        ] {
            assert!(KScore::compute(&m).is_err(), "{m:?}");
        }
    }

    #[test]
    fn k_is_bounded_by_its_parts() {
        let k = KScore::compute(&KScoreInputs {
            student_latency_s: 3.0,
            ..base()
        })
        .unwrap();
        let parts = [k.accuracy, k.size, k.latency, k.cost, k.coverage];
        let min = parts.iter().cloned().fold(1.0, f64::min);
        let max = parts.iter().cloned().fold(0.0, f64::max);
        assert!(k.k >= min && k.k <= max);
    }
}
