//! The verify cache: `cache/verified/<hex>` remembers that the blob file with
//! this device, inode, size, mtime and ctime hashed to its digest, so opening
//! it again need not re-hash it. Any change to the file changes its ctime
//! (even a byte flip whose mtime was put back with `touch -r`), so the entry
//! no longer matches and the blob is hashed again.
//!
//! Time stamps have a granularity (a kernel tick, a second on some file
//! systems): a change made in the same tick as the check would keep the same
//! stamps. As git does with its index ("racy git"), an entry is only written
//! for a file whose stamps are older than [`RACY_WINDOW_NS`] when the check
//! starts; a blob changed that recently is hashed every time until it ages.
//!
//! The cache is an optimisation: entries are written without the store lock,
//! a lost or unreadable entry only costs a re-hash, and write errors are
//! ignored.

use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// How old a file's stamps must be before a successful check is cached.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// The identity of a file's current contents, as far as metadata tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Stamp {
    pub(crate) fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
        }
    }
}

/// One cache file.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    sha256: String,
    #[serde(flatten)]
    stamp: Stamp,
}

/// The cache directory.
#[derive(Clone, Debug)]
pub(crate) struct VerifyCache {
    dir: PathBuf,
    tmp: PathBuf,
}

/// Nanoseconds since the epoch, now.
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl VerifyCache {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf) -> Self {
        VerifyCache { dir, tmp }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest)
    }

    /// The stamp recorded for `digest`, if any.
    pub(crate) fn get(&self, digest: &str) -> Option<Stamp> {
        let bytes = fs::read(self.path(digest)).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        (entry.sha256 == digest).then_some(entry.stamp)
    }

    /// Whether the cache vouches for a file with this stamp.
    pub(crate) fn vouches(&self, digest: &str, stamp: &Stamp) -> bool {
        self.get(digest).is_some_and(|s| &s == stamp)
    }

    /// Records that the file with `stamp` hashed to `digest`, in a check
    /// that started at `started_ns`; skipped if the stamps are too recent.
    pub(crate) fn put(&self, digest: &str, stamp: &Stamp, started_ns: i64) {
        let newest = stamp.mtime_ns.max(stamp.ctime_ns);
        if newest > started_ns.saturating_sub(RACY_WINDOW_NS) {
            return;
        }
        let entry = Entry {
            sha256: digest.to_owned(),
            stamp: *stamp,
        };
        let Ok(mut bytes) = serde_json::to_vec(&entry) else {
            return;
        };
        bytes.push(b'\n');
        let _ = fsutil::write_atomic(&self.tmp, &self.path(digest), &bytes, 0o644);
    }

    /// Drops the entry for `digest`.
    pub(crate) fn forget(&self, digest: &str) {
        let _ = fs::remove_file(self.path(digest));
    }
}
