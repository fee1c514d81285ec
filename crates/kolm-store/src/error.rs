//! The one error type of this crate. Every message says what was wrong and
//! what to do about it; [`StoreError::kind`] gives the coarse class tools map
//! to exit codes, the same classes `kolm-artifact` uses.

use std::io;
use std::path::PathBuf;

use kolm_artifact::keys::KeyError;
use kolm_artifact::{ArtifactError, ErrorKind};

/// Everything that can go wrong in the keyring or the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file of kolm's home failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done, e.g. `writing`.
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The artifact being installed was refused; `.kind()` of the inner error
    /// says why (malformed, bad signature, untrusted, integrity).
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// Neither `$KOLM_HOME` nor a home directory is available.
    #[error("cannot find a home directory for kolm's state: set KOLM_HOME to a directory")]
    NoHomeDir,

    /// No secret key of that name.
    #[error("no signing key `{name}`: create one with `kolmctl keys generate --name {name}`")]
    NoSigningKey { name: String },
    /// No public key of that name, own or trusted.
    #[error("no key `{name}`: create one with `kolmctl keys generate --name {name}`, or trust someone's public key file with `kolmctl keys trust FILE`")]
    NoPublicKey { name: String },
    /// `generate` refuses to overwrite a key.
    #[error("a key named `{name}` already exists ({path}): choose another name, or move the old key files away first")]
    KeyExists { name: String, path: PathBuf },
    /// A key name that cannot be used.
    #[error("invalid key name `{name}`: {reason}")]
    InvalidKeyName { name: String, reason: String },
    /// A key file that does not parse.
    #[error("{path} is not a valid kolm key file ({source}): fix or remove it; public key files end in `.pub` and hold one line `kolm-ed25519-public <base64> <name>`")]
    MalformedKey {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    /// The receipt key file does not hold 64 hex digits.
    #[error("{path} is not a valid receipt key (one line of 64 hex digits): restore it from a backup, or move it away to start a new one (receipts tagged with the old key will no longer check)")]
    MalformedReceiptKey { path: PathBuf },

    /// A reference that is not `NAME` or `NAME:VERSION`.
    #[error("invalid artifact reference `{reference}`: {reason}; write NAME or NAME:VERSION")]
    InvalidReference { reference: String, reason: String },
    /// Nothing installed under that reference.
    #[error("{}", not_installed_message(reference, installed))]
    NotInstalled {
        reference: String,
        /// `name:version` of what is installed under that name.
        installed: Vec<String>,
    },
    /// `remove NAME` with several versions installed.
    #[error("`{name}` has several versions installed ({}): name the one to remove as `{name}:VERSION`", versions.join(", "))]
    AmbiguousReference { name: String, versions: Vec<String> },
    /// A record file that does not parse or does not match its manifest.
    #[error("the store record {path} is damaged ({detail}): reinstall the artifact, or delete that file and run `kolmctl gc`")]
    CorruptRecord { path: PathBuf, detail: String },

    /// A digest that is not 64 lower-case hex digits.
    #[error("invalid blob digest `{digest}`: expected 64 lower-case hex digits")]
    InvalidDigest { digest: String },
    /// A blob's bytes no longer match their digest. The blob is moved aside
    /// (when the store is not busy) so that reinstalling restores it.
    #[error("blob sha256:{digest} ({path}) is corrupt: its bytes no longer match their digest, so it was not used; reinstall the artifact that uses it (`kolmctl install FILE`)")]
    CorruptBlob { digest: String, path: PathBuf },
    /// A blob a record refers to is not in the store.
    #[error("blob sha256:{digest} is missing from the store ({path}): reinstall the artifact that uses it (`kolmctl install FILE`)")]
    MissingBlob { digest: String, path: PathBuf },
}

fn not_installed_message(reference: &str, installed: &[String]) -> String {
    let name = reference.split(':').next().unwrap_or(reference);
    if installed.is_empty() {
        format!("`{reference}` is not installed: install it with `kolmctl install FILE`, or see what is installed with `kolmctl list`")
    } else {
        format!(
            "`{reference}` is not installed; installed versions of `{name}`: {}",
            installed.join(", ")
        )
    }
}

impl StoreError {
    /// The coarse class of this error (for exit codes): an artifact error's
    /// own kind; [`ErrorKind::Integrity`] for a corrupt or missing blob or a
    /// damaged record; [`ErrorKind::Io`] for I/O; [`ErrorKind::InvalidInput`]
    /// for everything the caller can fix by asking differently.
    pub fn kind(&self) -> ErrorKind {
        use StoreError::*;
        match self {
            Artifact(e) => e.kind(),
            Io { .. } | NoHomeDir => ErrorKind::Io,
            CorruptBlob { .. } | MissingBlob { .. } | CorruptRecord { .. } => ErrorKind::Integrity,
            MalformedKey { .. } | MalformedReceiptKey { .. } => ErrorKind::Malformed,
            NoSigningKey { .. }
            | NoPublicKey { .. }
            | KeyExists { .. }
            | InvalidKeyName { .. }
            | InvalidReference { .. }
            | NotInstalled { .. }
            | AmbiguousReference { .. }
            | InvalidDigest { .. } => ErrorKind::InvalidInput,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
