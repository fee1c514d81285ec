//! kolm's drift log: the answers an artifact handled poorly (its verifier
//! refused them, the model was unsure, the recipe pack or the recall index
//! covered little, the input lay far from the training inputs), kept in one
//! local sqlite file for the next compile. kolmd writes it; `kolmctl drift`
//! lists, shows, exports and clears it. No network, no other kolm crate.
//!
//! ```text
//! <home>/drift/drift.sqlite (+ -wal, -shm)     see [`DriftDb`]
//! ```
//!
//! `docs/drift.md` describes what is stored and the verbs.

mod db;
mod entry;
mod error;
pub mod export;

use std::path::{Path, PathBuf};

pub use db::{DriftDb, DEFAULT_BUSY_TIMEOUT};
pub use entry::{
    Count, DriftInput, Entry, ExportStats, Filter, Message, NewEntry, Reason, Retention, Scores,
    Thresholds,
};
pub use error::DriftError;

/// The schema this build reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// `<home>/drift/drift.sqlite`.
pub fn default_path(home: &Path) -> PathBuf {
    home.join("drift").join("drift.sqlite")
}
