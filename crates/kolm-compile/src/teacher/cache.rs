//! The on-disk response cache: one JSON file per response at
//! `<dir>/<first two hex digits>/<sha256>.json`, where the digest is over
//! the canonical JSON of ([`CACHE_VERSION`], provider, base URL, model,
//! request). Written to a temporary file in the same directory and renamed,
//! so a reader never sees half a file; an unreadable entry is a miss.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ChatRequest, Provider, TeacherError};
use crate::digest::sha256_of_json;

/// Version of the cache key and entry layout; bump to invalidate.
pub const CACHE_VERSION: u32 = 1;

/// What is hashed to address a response. A struct, so field order is fixed.
#[derive(Debug, Serialize)]
pub struct CacheKey<'a> {
    /// [`CACHE_VERSION`].
    pub v: u32,
    /// The provider.
    pub provider: Provider,
    /// The base URL, as configured.
    pub base_url: &'a str,
    /// The model.
    pub model: &'a str,
    /// The request.
    pub request: &'a ChatRequest,
}

impl CacheKey<'_> {
    /// The SHA-256 (hex) addressing this request's response.
    pub fn digest(&self) -> String {
        sha256_of_json(self)
    }
}

/// A cached response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// [`CACHE_VERSION`].
    pub v: u32,
    /// The response text.
    pub text: String,
    /// The finish or stop reason.
    pub finish_reason: Option<String>,
    /// Input tokens the original call used.
    pub input_tokens: u64,
    /// Output tokens the original call used.
    pub output_tokens: u64,
    /// Seconds the original call took (absent in older entries: 0).
    #[serde(default)]
    pub latency_s: f64,
}

/// A directory of cached responses.
#[derive(Clone, Debug)]
pub struct ResponseCache {
    dir: PathBuf,
}

impl ResponseCache {
    /// A cache rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(&digest[..2]).join(format!("{digest}.json"))
    }

    /// The entry for `digest`, or `None` (missing, unreadable or of another
    /// version: all are misses).
    pub fn get(&self, digest: &str) -> Option<CacheEntry> {
        let bytes = std::fs::read(self.path(digest)).ok()?;
        match serde_json::from_slice::<CacheEntry>(&bytes) {
            Ok(e) if e.v == CACHE_VERSION => Some(e),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(digest, error = %e, "unreadable teacher cache entry; treating as a miss");
                None
            }
        }
    }

    /// Stores `entry` under `digest` (temporary file, fsync, rename).
    pub fn put(&self, digest: &str, entry: &CacheEntry) -> Result<(), TeacherError> {
        let path = self.path(digest);
        let dir = path.parent().expect("cache paths have a parent");
        let err = |source| TeacherError::Cache {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = dir.join(format!(
            ".{digest}.{}.{:016x}.tmp",
            std::process::id(),
            fastrand::u64(..)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(entry).expect("a cache entry always serializes"))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e)
        })
    }
}
