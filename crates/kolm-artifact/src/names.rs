//! The allow-list of entry names: which names an RS-1 archive may hold, the
//! role each plays, its media type, its size bound, and whether it is inside
//! the signed scope.

use serde::{Deserialize, Serialize};

/// The signed manifest (a DSSE envelope).
pub const MANIFEST: &str = "kolm/manifest.dsse.json";
/// The base model (GGUF), required.
pub const BASE: &str = "model/base.gguf";
/// The LoRA adapter (GGUF).
pub const ADAPTER: &str = "adapter/lora.gguf";
/// The recall index (sqlite with sqlite-vec).
pub const RECALL_INDEX: &str = "recall/index.sqlite";
/// Folder of the embedder's files (weights, tokenizer, config).
pub const EMBEDDER_DIR: &str = "recall/embedder/";
/// The recipe pack for draft-free speculative decoding.
pub const RECIPES: &str = "recipes/pack.bin";
/// The declarative verifier.
pub const VERIFIER: &str = "verifier/verifier.json";
/// The held-out eval pack.
pub const EVAL: &str = "eval/heldout.jsonl";
/// The training examples a compile learned from (its task's examples and
/// the drifted inputs it absorbed, each with its output), as JSON lines in
/// the task format: what `kolmctl compile --from-drift` starts from.
pub const EXAMPLES: &str = "train/examples.jsonl";
/// The receipt chain of build steps.
pub const RECEIPTS: &str = "kolm/receipts.jsonl";
/// Folder of attestations added after signing (outside the signed scope).
pub const ATTESTATIONS_DIR: &str = "kolm/attestations/";

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Most entries an archive may hold.
pub const MAX_ENTRIES: usize = 1024;
/// Longest entry name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// What an entry is for. Serialized in kebab-case (`recall-index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Base,
    Adapter,
    RecallIndex,
    Embedder,
    Recipes,
    Verifier,
    Eval,
    Examples,
    Receipts,
    Manifest,
    Attestation,
}

impl Role {
    /// The media type recorded for entries of this role.
    pub fn media_type(self) -> &'static str {
        match self {
            Role::Base | Role::Adapter => "application/vnd.gguf",
            Role::RecallIndex => "application/vnd.sqlite3",
            Role::Embedder => "application/octet-stream",
            Role::Recipes => "application/vnd.kolm.recipes.v1",
            Role::Verifier => "application/vnd.kolm.verifier.v1+json",
            Role::Eval | Role::Examples | Role::Receipts => "application/jsonl",
            Role::Manifest => "application/vnd.dsse.envelope.v1+json",
            Role::Attestation => "application/octet-stream",
        }
    }

    /// The largest size an entry of this role may declare.
    pub fn max_size(self) -> u64 {
        match self {
            Role::Base => 1024 * GIB,
            Role::Adapter | Role::RecallIndex => 64 * GIB,
            Role::Embedder | Role::Recipes => 16 * GIB,
            Role::Eval | Role::Examples => GIB,
            Role::Verifier | Role::Receipts | Role::Attestation => 16 * MIB,
            Role::Manifest => 4 * MIB,
        }
    }

    /// Whether the manifest must list entries of this role. The manifest
    /// itself and attestations are outside the signed scope.
    pub fn is_signed(self) -> bool {
        !matches!(self, Role::Manifest | Role::Attestation)
    }

    /// Position in the canonical entry order the writer uses.
    pub(crate) fn canonical_rank(self) -> u8 {
        self as u8
    }
}

/// Why a name is not allowed in an archive.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("the name is an absolute path")]
    Absolute,
    #[error("the name contains a `..` component")]
    ParentDir,
    #[error("the name contains a backslash, a control character or an empty component")]
    BadCharacter,
    #[error("the name is not on the RS-1 allow-list")]
    NotAllowed,
}

/// Checks that `name` is a safe relative path (no absolute, `..`, backslash,
/// control character or empty component). This is checked before the
/// allow-list so hostile names get the more specific error.
pub fn check_path_safety(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if name.starts_with('/') || name.starts_with('\\') || name.as_bytes().get(1) == Some(&b':') {
        return Err(NameError::Absolute);
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Err(NameError::ParentDir);
    }
    if name.contains('\\')
        || name.chars().any(char::is_control)
        || name.split('/').any(str::is_empty)
    {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

/// Returns the role of an allowed entry name, or why it is refused.
pub fn classify(name: &str) -> Result<Role, NameError> {
    check_path_safety(name)?;
    let role = match name {
        MANIFEST => Role::Manifest,
        BASE => Role::Base,
        ADAPTER => Role::Adapter,
        RECALL_INDEX => Role::RecallIndex,
        RECIPES => Role::Recipes,
        VERIFIER => Role::Verifier,
        EVAL => Role::Eval,
        EXAMPLES => Role::Examples,
        RECEIPTS => Role::Receipts,
        _ => {
            if let Some(file) = name.strip_prefix(EMBEDDER_DIR) {
                if is_plain_file_name(file) {
                    return Ok(Role::Embedder);
                }
            } else if let Some(file) = name.strip_prefix(ATTESTATIONS_DIR) {
                if is_plain_file_name(file) {
                    return Ok(Role::Attestation);
                }
            }
            return Err(NameError::NotAllowed);
        }
    };
    Ok(role)
}

/// A single path component of `[A-Za-z0-9._-]`, not starting with a dot.
fn is_plain_file_name(file: &str) -> bool {
    !file.is_empty()
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_have_roles() {
        assert_eq!(classify(BASE), Ok(Role::Base));
        assert_eq!(
            classify("recall/embedder/tokenizer.json"),
            Ok(Role::Embedder)
        );
        assert_eq!(
            classify("kolm/attestations/slsa.json"),
            Ok(Role::Attestation)
        );
    }

    #[test]
    fn hostile_names_are_refused_specifically() {
        assert_eq!(classify("/etc/passwd"), Err(NameError::Absolute));
        assert_eq!(classify("C:/x"), Err(NameError::Absolute));
        assert_eq!(classify("model/../../x"), Err(NameError::ParentDir));
        assert_eq!(classify("model\\base.gguf"), Err(NameError::BadCharacter));
        assert_eq!(classify("model//base.gguf"), Err(NameError::BadCharacter));
        assert_eq!(classify("model/other.gguf"), Err(NameError::NotAllowed));
        assert_eq!(
            classify("recall/embedder/.hidden"),
            Err(NameError::NotAllowed)
        );
        assert_eq!(classify("recall/embedder/a/b"), Err(NameError::NotAllowed));
        assert_eq!(classify(""), Err(NameError::Empty));
    }
}
