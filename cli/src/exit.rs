//! Exit codes and error reporting. `verify`'s codes are a contract:
//! 3 malformed archive, 4 bad signature, 5 signer not trusted, 6 digest
//! mismatch; `compile`'s 7 is a K-score below the gate, or a `--from-drift`
//! recompile that scores below the version it replaces; 2 is usage (clap),
//! 1 anything else.

use std::process::ExitCode;

use kolm_artifact::{ArtifactError, ErrorKind};
use kolm_store::StoreError;

use crate::daemon::DaemonError;

/// Exit code of a compile whose K-score is below the gate.
pub const BELOW_GATE_EXIT: u8 = 7;

/// A compile that ran but did not reach the gate; its report was printed.
#[derive(Debug, thiserror::Error)]
#[error(
    "K = {k:.3} is below the gate {gate:.2}: no artifact written (use --force to write it anyway)"
)]
pub struct BelowGate {
    pub k: f64,
    pub gate: f64,
}

/// A `--from-drift` recompile that scored below the version it replaces
/// on that version's eval pack; its report was printed.
#[derive(Debug, thiserror::Error)]
#[error(
    "the new version scores {new:.3} on {from}'s eval pack, below its {old:.3}: no artifact written (raise --regression-tolerance, or --force to write it anyway)"
)]
pub struct Regressed {
    pub from: String,
    pub old: f64,
    pub new: f64,
}

/// The exit code for an error, from the first cause the libraries classify.
pub fn code_for(err: &anyhow::Error) -> u8 {
    if err
        .chain()
        .any(|c| c.downcast_ref::<BelowGate>().is_some() || c.downcast_ref::<Regressed>().is_some())
    {
        return BELOW_GATE_EXIT;
    }
    let kind = err.chain().find_map(|cause| {
        cause
            .downcast_ref::<ArtifactError>()
            .map(ArtifactError::kind)
            .or_else(|| cause.downcast_ref::<StoreError>().map(StoreError::kind))
            .or_else(|| cause.downcast_ref::<DaemonError>().and_then(|d| d.kind))
    });
    match kind {
        Some(ErrorKind::Malformed) => 3,
        Some(ErrorKind::BadSignature) => 4,
        Some(ErrorKind::Untrusted) => 5,
        Some(ErrorKind::Integrity) => 6,
        Some(ErrorKind::Io | ErrorKind::InvalidInput) | None => 1,
    }
}

/// A short machine-readable name for the error's class.
fn kind_name(code: u8) -> &'static str {
    match code {
        3 => "malformed",
        4 => "bad_signature",
        5 => "untrusted",
        6 => "digest_mismatch",
        7 => "below_gate",
        _ => "error",
    }
}

/// The error and its causes, joined by ": " like anyhow's `{:#}`, less
/// each cause the message before it already ends with (library errors
/// such as `"{path}: {source}"` spell their source out, and would
/// otherwise print it twice).
pub fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Prints the error (as JSON on stdout when asked, else on stderr) and
/// returns the exit code. A compile below its gate has printed its report
/// (with `"ok": false`) already, so only the message goes to stderr.
pub fn report(err: &anyhow::Error, json: bool) -> ExitCode {
    let code = code_for(err);
    if json && code != BELOW_GATE_EXIT {
        let value = serde_json::json!({
            "ok": false,
            "error": { "kind": kind_name(code), "exit_code": code, "message": message(err) },
        });
        outln!("{value}");
    } else {
        eprintln!("error: {}", message(err));
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct SpelledOut {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_spelled_out_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(SpelledOut {
            path: "a.jsonl".into(),
            source: io,
        })
        .context("training failed");
        assert_eq!(message(&err), "training failed: a.jsonl: no such file");
    }

    #[test]
    fn distinct_causes_are_all_printed() {
        let err = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(message(&err), "outer: middle: inner");
    }
}
