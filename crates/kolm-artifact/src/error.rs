//! The one error type of this crate, with a coarse [`ErrorKind`] that tools
//! map to exit codes.

use std::io;
use std::path::PathBuf;

use crate::gguf::GgufError;
use crate::names::NameError;

/// Coarse classes of failure; `kolmctl verify` maps them to exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Reading or writing a file failed.
    Io,
    /// Not a well-formed RS-1 archive (exit 3).
    Malformed,
    /// A signature did not verify (exit 4).
    BadSignature,
    /// No signature from a trusted key (exit 5).
    Untrusted,
    /// Contents do not match the signed manifest (exit 6).
    Integrity,
    /// The caller asked for something invalid (packing input).
    InvalidInput,
}

/// Everything that can go wrong writing or reading an artifact. Each variant
/// that concerns one entry names it.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not a .kolm archive: {reason}")]
    NotAnArchive { reason: String },
    #[error("the central directory is truncated: {detail}")]
    TruncatedCentralDirectory { detail: String },
    #[error("{bytes} unexpected bytes before the first entry")]
    DataBeforeArchive { bytes: u64 },
    #[error("{bytes} unexpected bytes after the end of the archive")]
    DataAfterArchive { bytes: u64 },
    #[error("unexpected bytes at offset {offset}: {detail}")]
    UnexpectedBytes { offset: u64, detail: String },
    #[error("entry `{name}`: not in canonical RS-1 form: {detail}")]
    NonCanonical { name: String, detail: String },
    #[error("the archive holds more than {max} entries ({count})")]
    TooManyEntries { count: u64, max: usize },
    #[error("entry `{name}` appears more than once")]
    DuplicateEntry { name: String },
    #[error("entry `{name}` is a symbolic link")]
    Symlink { name: String },
    #[error("entry `{name}` is encrypted")]
    Encrypted { name: String },
    #[error("entry `{name}` is compressed (method {method}); RS-1 entries are STORED")]
    Compressed { name: String, method: u16 },
    #[error("entry `{name}`: {reason}")]
    BadName { name: String, reason: NameError },
    #[error("entry `{name}` is {size} bytes, over its bound of {bound}")]
    TooLarge { name: String, size: u64, bound: u64 },
    #[error("entry `{name}` lies about its size: {detail}")]
    LyingSize { name: String, detail: String },
    #[error("entry `{name}`: local header disagrees with the central directory on {field}")]
    LocalHeaderMismatch { name: String, field: &'static str },
    #[error("entry `{name}`: data at offset {offset} is not 4096-aligned")]
    Misaligned { name: String, offset: u64 },
    #[error("the archive has no manifest (`kolm/manifest.dsse.json`)")]
    MissingManifest,
    #[error("the manifest `kolm/manifest.dsse.json` is not a valid DSSE envelope: {detail}")]
    InvalidEnvelope { detail: String },
    #[error(
        "the manifest `kolm/manifest.dsse.json` has payload type `{found}`, expected `{expected}`"
    )]
    WrongPayloadType {
        found: String,
        expected: &'static str,
    },
    #[error("the manifest `kolm/manifest.dsse.json` is invalid: {detail}")]
    InvalidManifest { detail: String },
    #[error("the manifest `kolm/manifest.dsse.json` carries no signature")]
    Unsigned,
    #[error("the signature on `kolm/manifest.dsse.json` by key {keyid} does not verify: the manifest was altered")]
    BadSignature { keyid: String },
    #[error("no signature from a trusted key (signed by {}); trust the signer with `kolmctl keys trust FILE`, pass `--key FILE`, or use `--allow-untrusted` to check integrity only", keyids.join(", "))]
    UntrustedSigner { keyids: Vec<String> },
    #[error("entry `{name}` is listed in the manifest but missing from the archive")]
    MissingEntry { name: String },
    #[error("entry `{name}` is in the archive but not listed in the signed manifest")]
    UnlistedEntry { name: String },
    #[error("entry `{name}` is {archive} bytes but the manifest says {manifest}")]
    SizeMismatch {
        name: String,
        manifest: u64,
        archive: u64,
    },
    #[error("entry `{name}` does not match its signed digest (expected sha256 {expected}, found {actual})")]
    DigestMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("the receipt chain `kolm/receipts.jsonl` is invalid: {detail}")]
    ReceiptChain { detail: String },
    #[error("{detail}")]
    InvalidInput { detail: String },
    #[error("the artifact has no signed entry `{name}`")]
    NoSuchEntry { name: String },
    #[error("entry `{name}` changed on disk since the artifact was verified; verify it again")]
    ChangedSinceVerified { name: String },
    #[error("{path}: {source}")]
    Gguf {
        path: PathBuf,
        #[source]
        source: GgufError,
    },
}

impl ArtifactError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        use ArtifactError::*;
        match self {
            Io { .. } => ErrorKind::Io,
            BadSignature { .. } => ErrorKind::BadSignature,
            UntrustedSigner { .. } | Unsigned => ErrorKind::Untrusted,
            MissingEntry { .. }
            | UnlistedEntry { .. }
            | SizeMismatch { .. }
            | DigestMismatch { .. }
            | ChangedSinceVerified { .. }
            | ReceiptChain { .. } => ErrorKind::Integrity,
            InvalidInput { .. } | NoSuchEntry { .. } | Gguf { .. } => ErrorKind::InvalidInput,
            NotAnArchive { .. }
            | TruncatedCentralDirectory { .. }
            | DataBeforeArchive { .. }
            | DataAfterArchive { .. }
            | UnexpectedBytes { .. }
            | NonCanonical { .. }
            | TooManyEntries { .. }
            | DuplicateEntry { .. }
            | Symlink { .. }
            | Encrypted { .. }
            | Compressed { .. }
            | BadName { .. }
            | TooLarge { .. }
            | LyingSize { .. }
            | LocalHeaderMismatch { .. }
            | Misaligned { .. }
            | MissingManifest
            | InvalidEnvelope { .. }
            | WrongPayloadType { .. }
            | InvalidManifest { .. } => ErrorKind::Malformed,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| ArtifactError::Io { path, source }
    }

    pub(crate) fn invalid_manifest(detail: impl Into<String>) -> Self {
        ArtifactError::InvalidManifest {
            detail: detail.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = ArtifactError> = std::result::Result<T, E>;
