//! `DriftError`: every way opening, writing, reading or exporting the drift
//! log can fail. Each message says what was wrong and what to do about it.

use std::path::PathBuf;

use crate::SCHEMA_VERSION;

/// Why a drift log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// Creating the database's folder failed.
    #[error("cannot create the drift folder {}: {source}; check its permissions or set KOLM_HOME elsewhere", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database does not exist (only from the `open_existing` and
    /// `open_read_only` constructors, which never create it).
    #[error("there is no drift database at {}: kolmd has logged no drift there yet", path.display())]
    Missing { path: PathBuf },
    /// sqlite failed.
    #[error("drift database {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// Another connection held the lock for longer than the busy timeout.
    #[error("drift database {} is locked by another process (waited {waited_ms} ms); try again, or stop the process that holds it", path.display())]
    Busy { path: PathBuf, waited_ms: u128 },
    /// The file's schema is newer than this build reads.
    #[error("drift database {} was written by a newer kolm (schema {found}; this kolm reads schema {SCHEMA_VERSION}); upgrade kolm or move the file away", path.display())]
    NewerSchema { path: PathBuf, found: i64 },
    /// The file is a sqlite database (or not even that) but not a drift log.
    #[error("{} is not a kolm drift database ({detail}); move the file away and kolmd starts a new log", path.display())]
    NotDrift { path: PathBuf, detail: String },
    /// An entry of an `insert` batch has no reason.
    #[error(
        "drift entry {index} of the batch has no reason; every entry needs at least one of {}",
        crate::Reason::names()
    )]
    NoReasons { index: usize },
    /// An entry of an `insert` batch is inconsistent (the batch is refused
    /// whole).
    #[error("drift entry {index} of the batch is refused: {detail}")]
    Invalid { index: usize, detail: String },
    /// A stored row could not be read back.
    #[error("drift entry {id} in {} cannot be read: {detail}; the file was changed outside kolm: delete the entry (`kolmctl drift clear`) or move the file away", path.display())]
    Corrupt {
        path: PathBuf,
        id: i64,
        detail: String,
    },
    /// A reason name that is not one of [`crate::Reason::ALL`].
    #[error(
        "unknown drift reason `{given}`; valid reasons: {}",
        crate::Reason::names()
    )]
    UnknownReason { given: String },
    /// Writing the export failed.
    #[error("cannot write the drift export: {0}")]
    Write(#[source] std::io::Error),
}

impl DriftError {
    /// Maps a `rusqlite::Error` on the database at `path`; a busy or locked
    /// database becomes [`DriftError::Busy`].
    pub(crate) fn sql(
        path: &std::path::Path,
        waited: std::time::Duration,
    ) -> impl FnOnce(rusqlite::Error) -> DriftError + '_ {
        move |source| {
            let busy = matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            );
            if busy {
                DriftError::Busy {
                    path: path.to_path_buf(),
                    waited_ms: waited.as_millis(),
                }
            } else if source.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
                DriftError::NotDrift {
                    path: path.to_path_buf(),
                    detail: "not a sqlite database".into(),
                }
            } else {
                DriftError::Sqlite {
                    path: path.to_path_buf(),
                    source,
                }
            }
        }
    }
}
