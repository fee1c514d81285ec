//! `RecallError`: every way ingesting, embedding, indexing or querying can
//! fail, as matchable variants.

use std::path::PathBuf;

/// Result with a [`RecallError`].
pub type Result<T, E = RecallError> = std::result::Result<T, E>;

/// Why a recall operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RecallError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The corpus path does not exist or is not a file or folder.
    #[error("the corpus {} does not exist or is neither a file nor a folder", .0.display())]
    NoCorpus(PathBuf),
    /// The embedder's files are missing or malformed.
    #[error("embedder: {0}")]
    Embedder(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// candle failed while running the model.
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    /// sqlite (or sqlite-vec) failed.
    #[error("index {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The index file is not a kolm recall index, or was built differently.
    #[error("index {}: {detail}", path.display())]
    BadIndex { path: PathBuf, detail: String },
    /// The index was built with another embedder than the one given.
    #[error("the index was built with embedder `{index}` ({index_dim} dimensions), not `{given}` ({given_dim})")]
    EmbedderMismatch {
        index: String,
        index_dim: usize,
        given: String,
        given_dim: usize,
    },
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The artifact has no recall index or no embedder.
    #[error("the artifact has no {0}")]
    NotInArtifact(&'static str),
    /// Reading the artifact failed.
    #[error(transparent)]
    Artifact(#[from] kolm_artifact::ArtifactError),
}

impl RecallError {
    /// Maps an `io::Error` for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RecallError {
        let path = path.into();
        move |source| RecallError::Io { path, source }
    }

    /// Maps a `rusqlite::Error` for the index at `path`.
    pub(crate) fn sql(path: &std::path::Path) -> impl FnOnce(rusqlite::Error) -> RecallError + '_ {
        move |source| RecallError::Sqlite {
            path: path.to_path_buf(),
            source,
        }
    }
}
