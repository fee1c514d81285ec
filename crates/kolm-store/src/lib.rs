//! kolm's local state under one home directory: the keyring (signing keys,
//! trusted keys, the receipt key) and the content-addressed store of
//! verified `.kolm` artifacts. `kolmctl` and `kolmd` both use it.
//!
//! ```text
//! <home>/keys/NAME.key, NAME.pub, receipt.key     see [`Keyring`]
//! <home>/trust/<keyid>.pub                        see [`Keyring`]
//! <home>/store/...                                see [`Store`]
//! ```
//!
//! The home is `$KOLM_HOME` if set, else the platform's data directory for
//! kolm (`~/.local/share/kolm` on Linux). Nothing here does network I/O.

mod cache;
pub mod error;
mod fsutil;
pub mod keyring;
pub mod record;
pub mod store;

use std::path::{Path, PathBuf};

pub use cache::RACY_WINDOW_NS;
pub use error::{Result, StoreError};
pub use keyring::{KeyInfo, Keyring, DEFAULT_KEY};
pub use kolm_artifact::{NoProgress, Progress};
pub use record::{ArtifactRecord, GcReport, InstallOutcome, InstallReport, VerifiedBlob};
pub use store::Store;

/// The environment variable that overrides the home directory.
pub const HOME_ENV: &str = "KOLM_HOME";

/// The root directory of kolm's local state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `$KOLM_HOME` if set and non-empty, else the platform's data directory
    /// for kolm.
    pub fn from_env() -> Result<Home> {
        if let Some(dir) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
            return Ok(Home::at(dir));
        }
        directories::ProjectDirs::from("dev", "kolm", "kolm")
            .map(|dirs| Home::at(dirs.data_dir()))
            .ok_or(StoreError::NoHomeDir)
    }

    /// The home at `root` (nothing is created until something is written).
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// The home directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The keyring under `keys/` and `trust/`.
    pub fn keyring(&self) -> Keyring {
        Keyring::new(&self.root)
    }

    /// The default path of kolmd's gRPC socket: `run/kolmd.sock` under the
    /// home (kolmd's `grpc_socket` and the `KOLM_GRPC_SOCKET` variable
    /// override it, for both kolmd and kolmctl).
    pub fn socket_path(&self) -> PathBuf {
        self.root.join("run").join("kolmd.sock")
    }

    /// The store under `store/`, creating its directories.
    pub fn store(&self) -> Result<Store> {
        Store::open(self.root.join("store"))
    }
}
