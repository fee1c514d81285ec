//! Where tests and benchmarks find the model files `scripts/fixtures.sh`
//! installs: `$KOLM_FIXTURES`, else `${XDG_CACHE_HOME:-~/.cache}/kolm/fixtures`,
//! the script's own rule. One lookup for
//! the whole workspace, so a missing file always says the same thing: which
//! path, and the command that installs it. Never downloads anything.

use std::fmt;
use std::path::PathBuf;

/// SmolLM2-135M-Instruct, Q4_1: the base most tests serve and train.
pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// gemma-3-270m, Q4_K_M: a second base (no chat template of its own).
pub const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";
/// The all-MiniLM-L6-v2 sentence embedder, zipped.
pub const MINILM_ZIP: &str = "all-MiniLM-L6-v2.zip";

/// A fixture that is not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub PathBuf);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is missing: run scripts/fixtures.sh",
            self.0.display()
        )
    }
}

impl std::error::Error for Missing {}

/// The fixtures folder: `$KOLM_FIXTURES`, else
/// `$XDG_CACHE_HOME/kolm/fixtures`, else `~/.cache/kolm/fixtures` (empty
/// variables count as unset, as in the script).
pub fn dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = var("KOLM_FIXTURES") {
        return PathBuf::from(d);
    }
    let cache = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(var("HOME").unwrap_or_default()).join(".cache"));
    cache.join("kolm").join("fixtures")
}

/// The installed fixture `name`, or which path is missing.
pub fn find(name: &str) -> Result<PathBuf, Missing> {
    let path = dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Missing(path))
    }
}

/// The installed fixture `name`; panics (a test cannot go on) when it is
/// missing, saying how to install it.
pub fn path(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|missing| panic!("{missing}"))
}

/// [`SMOLLM2`]'s path (panics when missing).
pub fn smollm2() -> PathBuf {
    path(SMOLLM2)
}

/// [`GEMMA`]'s path (panics when missing).
pub fn gemma() -> PathBuf {
    path(GEMMA)
}

/// [`MINILM_ZIP`]'s path (panics when missing).
pub fn minilm_zip() -> PathBuf {
    path(MINILM_ZIP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_fixture_names_its_path_and_the_fix() {
        let err = find("no-such-model.gguf").unwrap_err();
        assert!(err.0.ends_with("no-such-model.gguf"));
        let text = err.to_string();
        assert!(text.contains("no-such-model.gguf is missing"), "{text}");
        assert!(text.contains("scripts/fixtures.sh"), "{text}");
    }
}
