//! What counts as drift for a compiled artifact: the thresholds its compile
//! measured on the eval pack, the manifest's `compile.drift` record.
//!
//! The compile answers every held-out test with the student it ships, as
//! kolmd serves it, and records three figures per answer in the eval pack
//! (`eval/tests.jsonl`): the mean token log-probability of the answer, the
//! recipe pack's coverage of the answer's tokens, and (with a corpus) the
//! best cosine similarity of a recalled chunk to the input. Each threshold
//! is the lowest of its figure over those answers, less a fixed margin
//! (decoding with and without drafting can move a log-probability in its
//! last digits). kolmd logs an answer whose figure falls below a threshold:
//! the artifact is answering something unlike what it was measured on. An
//! in-domain input (a test's own) never falls below, by construction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the record lives in the manifest's `compile` map.
pub const DRIFT_KEY: &str = "drift";

/// The record's version this crate writes; it reads this one and 1 (which
/// had no `covered` list).
pub const DRIFT_VERSION: u32 = 2;

/// Subtracted from the lowest mean log-probability (nats per token).
pub const LOGPROB_MARGIN: f64 = 0.05;

/// Subtracted from the lowest recipe coverage and the lowest recall
/// similarity (both shares in 0..1).
pub const SHARE_MARGIN: f64 = 0.05;

/// The thresholds; a figure the compile could not measure (no answer had
/// it: no corpus, for recall) has none, and is never logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftThresholds {
    /// [`DRIFT_VERSION`].
    pub version: u32,
    /// Test answers the thresholds were measured on.
    pub answers: u32,
    /// Below this mean token log-probability an answer is drift.
    pub mean_logprob: Option<f64>,
    /// Below this share of the answer's tokens predicted by the recipe
    /// pack an answer is drift.
    pub recipe_coverage: Option<f64>,
    /// Below this best similarity of a recalled chunk to the input an
    /// answer is drift.
    pub recall_best: Option<f64>,
    /// Digests (SHA-256 of the input's JSON, as the drift log computes
    /// them) of drifted inputs a recompile absorbed into this version: they
    /// are its training examples now, and kolmd does not log them again
    /// for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covered: Vec<String>,
}

/// Why a `compile.drift` record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DriftThresholdsError {
    /// Not a valid record.
    #[error("compile.drift: {0}")]
    Parse(String),
    /// A version this crate does not read.
    #[error("compile.drift version {0} is not supported (this build reads {DRIFT_VERSION}); upgrade kolm")]
    Version(u32),
}

/// The lowest finite value, less `margin`.
fn floor(values: &[f64], margin: f64) -> Option<f64> {
    values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .reduce(f64::min)
        .map(|v| v - margin)
}

impl DriftThresholds {
    /// The thresholds from the figures of `answers` test answers (each
    /// slice holds the figures the answers had; recall's is empty without
    /// a corpus).
    pub fn measure(
        answers: u32,
        mean_logprobs: &[f64],
        recipe_coverages: &[f64],
        recall_bests: &[f64],
    ) -> DriftThresholds {
        DriftThresholds {
            version: DRIFT_VERSION,
            answers,
            mean_logprob: floor(mean_logprobs, LOGPROB_MARGIN),
            recipe_coverage: floor(recipe_coverages, SHARE_MARGIN),
            recall_best: floor(recall_bests, SHARE_MARGIN),
            covered: Vec::new(),
        }
    }

    /// Whether the input of digest `digest` is one this version absorbed.
    pub fn covers(&self, digest: &str) -> bool {
        self.covered.iter().any(|c| c == digest)
    }

    /// The record in a manifest's `compile` map: `Ok(None)` for an artifact
    /// without one (packed, or compiled before drift was measured).
    pub fn from_compile(
        compile: Option<&BTreeMap<String, serde_json::Value>>,
    ) -> Result<Option<DriftThresholds>, DriftThresholdsError> {
        let Some(value) = compile.and_then(|c| c.get(DRIFT_KEY)) else {
            return Ok(None);
        };
        let version = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| DriftThresholdsError::Parse("no version".into()))?;
        if version != 1 && version != u64::from(DRIFT_VERSION) {
            return Err(DriftThresholdsError::Version(
                u32::try_from(version).unwrap_or(u32::MAX),
            ));
        }
        serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| DriftThresholdsError::Parse(e.to_string()))
    }

    /// The record as the manifest stores it.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a drift record always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_the_lowest_figure_less_the_margin() {
        let t = DriftThresholds::measure(3, &[-0.2, -0.9, -0.4], &[0.8, 0.5, f64::NAN], &[]);
        assert_eq!(t.answers, 3);
        assert!((t.mean_logprob.unwrap() - (-0.9 - LOGPROB_MARGIN)).abs() < 1e-12);
        assert!((t.recipe_coverage.unwrap() - (0.5 - SHARE_MARGIN)).abs() < 1e-12);
        assert_eq!(t.recall_best, None, "no corpus, no recall threshold");
    }

    #[test]
    fn round_trips_through_a_compile_map_and_refuses_other_versions() {
        let t = DriftThresholds::measure(2, &[-0.3], &[0.7], &[0.6]);
        let mut compile = BTreeMap::new();
        assert_eq!(DriftThresholds::from_compile(Some(&compile)).unwrap(), None);
        compile.insert(DRIFT_KEY.to_owned(), t.to_value());
        assert_eq!(
            DriftThresholds::from_compile(Some(&compile)).unwrap(),
            Some(t.clone())
        );
        let mut newer = t.to_value();
        newer["version"] = serde_json::json!(3);
        compile.insert(DRIFT_KEY.to_owned(), newer);
        let err = DriftThresholds::from_compile(Some(&compile)).unwrap_err();
        assert!(err.to_string().contains("upgrade kolm"), "{err}");
        let mut first = serde_json::json!({"version": 1, "answers": 2, "mean_logprob": -0.3,
            "recipe_coverage": 0.7, "recall_best": null});
        compile.insert(DRIFT_KEY.to_owned(), first.clone());
        let read = DriftThresholds::from_compile(Some(&compile))
            .unwrap()
            .unwrap();
        assert!(read.covered.is_empty(), "version 1 records cover nothing");
        first["covered"] = serde_json::json!(["ab"]);
        compile.insert(DRIFT_KEY.to_owned(), first);
        assert!(DriftThresholds::from_compile(Some(&compile))
            .unwrap()
            .unwrap()
            .covers("ab"));
        compile.insert(DRIFT_KEY.to_owned(), serde_json::json!({"version": 1}));
        assert!(matches!(
            DriftThresholds::from_compile(Some(&compile)),
            Err(DriftThresholdsError::Parse(_))
        ));
    }
}
