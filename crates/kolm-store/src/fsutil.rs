//! File-system helpers every write of kolm's state goes through: unique
//! temporary names, writes that land atomically (temp file + fsync + rename +
//! fsync of the directory), writes that never overwrite (temp file + hard
//! link), and the store's lock file.

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, StoreError};

/// Suffix of every temporary file this crate creates.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// A file name no other thread or process uses: `{stem}.{pid}.{n}.tmp`.
pub(crate) fn tmp_name(stem: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{stem}.{}.{n}{TMP_SUFFIX}", std::process::id())
}

/// Creates `path` and its missing parents; the directories it creates get
/// `mode` (less the umask).
pub(crate) fn create_dirs(path: &Path, mode: u32) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(StoreError::io("creating directory", path))
}

/// Flushes a directory's entries (a rename or unlink in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("syncing directory", dir))
}

/// Creates a new file (never an existing one) with `mode`.
pub(crate) fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Removes a file when dropped unless [`TempFile::keep`] was called.
#[derive(Debug)]
pub(crate) struct TempFile(Option<PathBuf>);

impl TempFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        TempFile(Some(path))
    }

    pub(crate) fn path(&self) -> &Path {
        self.0
            .as_deref()
            .expect("a kept temp file is not used again")
    }

    /// The file was renamed or linked into place: do not remove it.
    pub(crate) fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Writes `bytes` to a new temporary file in `tmp_dir` with `mode` and
/// fsyncs it. The caller renames or links it into place.
fn write_temp(tmp_dir: &Path, stem: &str, bytes: &[u8], mode: u32) -> Result<TempFile> {
    let tmp = TempFile::new(tmp_dir.join(tmp_name(stem)));
    let mut file = create_new(tmp.path(), mode).map_err(StoreError::io("creating", tmp.path()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(StoreError::io("writing", tmp.path()))?;
    Ok(tmp)
}

/// Replaces `dest` with `bytes` atomically: a reader sees the old file or the
/// new one, and after a crash one of them is there. The temporary file lives
/// in `tmp_dir`, which must be on the same file system.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let stem = dest
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy());
    let tmp = write_temp(tmp_dir, &format!(".{stem}"), bytes, mode)?;
    fs::rename(tmp.path(), dest).map_err(StoreError::io("renaming into", dest))?;
    tmp.keep();
    sync_dir(parent(dest))
}

/// Creates `dest` holding `bytes` unless it exists. Returns whether it was
/// created. The file appears complete or not at all, and of two racing
/// writers exactly one wins (a hard link fails if the name exists).
pub(crate) fn write_new(dest: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    let dir = parent(dest);
    let stem = dest
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy());
    let tmp = write_temp(dir, &format!(".{stem}"), bytes, mode)?;
    let created = match fs::hard_link(tmp.path(), dest) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(_) => {
            // A file system without hard links: fall back to an exclusive
            // create in place (a crash mid-write can then leave it partial).
            match create_new(dest, mode) {
                Ok(mut f) => {
                    f.write_all(bytes)
                        .and_then(|()| f.sync_all())
                        .map_err(StoreError::io("writing", dest))?;
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(StoreError::io("creating", dest)(e)),
            }
        }
    };
    drop(tmp);
    if created {
        sync_dir(dir)?;
    }
    Ok(created)
}

/// The store's exclusive lock, held until dropped (closing the file releases
/// it, also when the process dies).
#[derive(Debug)]
pub(crate) struct Lock {
    _file: File,
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(StoreError::io("opening the store lock", path))
}

/// Waits for the exclusive lock on `path`.
pub(crate) fn lock(path: &Path) -> Result<Lock> {
    let file = open_lock_file(path)?;
    file.lock().map_err(StoreError::io("locking", path))?;
    Ok(Lock { _file: file })
}

/// Takes the exclusive lock on `path` if nobody holds it.
pub(crate) fn try_lock(path: &Path) -> Result<Option<Lock>> {
    let file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Lock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(StoreError::io("locking", path)(e)),
    }
}

/// The names of the entries in `dir`, sorted (none if it does not exist).
pub(crate) fn entry_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("reading directory", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io("reading directory", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}
