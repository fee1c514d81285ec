//! The content-addressed artifact store.
//!
//! ```text
//! store/lock                          exclusive lock for install, remove, gc
//! store/blobs/sha256/<hex>            one file per distinct content, 0444
//! store/artifacts/<name>/<version>.json   one record per installed artifact
//! store/cache/verified/<hex>          verify cache (see the `cache` module)
//! store/tmp/                          temporary files; gc empties it
//! ```
//!
//! Every entry of an artifact, and its manifest envelope, is a blob named by
//! its SHA-256, so two artifacts on the same base keep one copy of the base.
//! The record is the commit point: install writes and fsyncs every blob,
//! then the record (temp file + fsync + rename + fsync of the directory). A
//! crash before the record leaves only unreferenced blobs and temp files,
//! which `gc` removes; readers never see a partial artifact.
//!
//! A blob is re-hashed before it is used ([`Store::open_blob`]) unless the
//! verify cache vouches for that exact file. A blob that no longer matches
//! its digest is refused and set aside, so reinstalling the artifact writes
//! a good copy.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use kolm_artifact::dsse::Envelope;
use kolm_artifact::{
    ArtifactError, AuthenticatedArtifact, NoProgress, Progress, SignerStatus, Statement,
    TrustPolicy,
};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cache::{now_ns, Stamp, VerifyCache};
use crate::error::{Result, StoreError};
use crate::fsutil::{self, TempFile};
use crate::record::{
    compare_versions, is_sha256_hex, ArtifactRecord, GcReport, InstallOutcome, InstallReport,
    Reference, VerifiedBlob,
};

const CHUNK: usize = 1 << 20;

/// The store under `<home>/store`. Cheap to create; several `Store`s (in
/// threads or processes) on one directory coordinate through its lock.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    blobs: PathBuf,
    artifacts: PathBuf,
    tmp: PathBuf,
    cache: VerifyCache,
}

impl Store {
    /// Opens the store at `root`, creating its directories.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        let cache = root.join("cache").join("verified");
        let store = Store {
            blobs: root.join("blobs").join("sha256"),
            artifacts: root.join("artifacts"),
            tmp: root.join("tmp"),
            cache: VerifyCache::new(cache.clone(), root.join("tmp")),
            root,
        };
        for dir in [&store.blobs, &store.artifacts, &store.tmp, &cache] {
            fsutil::create_dirs(dir, 0o755)?;
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest is (whether or not it exists). The
    /// digest is not checked: use [`open_blob`](Self::open_blob) to use it.
    pub fn blob_path(&self, sha256_hex: &str) -> PathBuf {
        self.blobs.join(sha256_hex)
    }

    /// Where the record of `name:version` is (whether or not it exists).
    pub fn record_path(&self, name: &str, version: &str) -> PathBuf {
        self.artifacts.join(name).join(format!("{version}.json"))
    }

    fn lock(&self) -> Result<fsutil::Lock> {
        fsutil::lock(&self.root.join("lock"))
    }

    /// Verifies `artifact` under `trust` and installs it: every entry whose
    /// blob is not yet in the store is streamed into it during the one read
    /// that verifies it. Nothing is visible unless everything verified.
    pub fn install(
        &self,
        artifact: &Path,
        trust: &TrustPolicy,
        progress: &dyn Progress,
    ) -> Result<InstallReport> {
        let _lock = self.lock()?;
        let authenticated = kolm_artifact::open(artifact, trust)?;
        let envelope = authenticated.envelope_bytes().to_vec();
        let manifest_sha256 = hex::encode(Sha256::digest(&envelope));
        let signers = match authenticated.signers() {
            SignerStatus::Trusted(ids) => ids.clone(),
            SignerStatus::Unchecked(_) => Vec::new(),
        };
        let statement = authenticated.statement().clone();
        let (name, version) = (&statement.predicate.name, &statement.predicate.version);
        // A damaged record of the same name:version is replaced.
        let previous = match self.read_record(name, version) {
            Ok(record) => record,
            Err(StoreError::CorruptRecord { .. }) => None,
            Err(e) => return Err(e),
        };
        let same = previous
            .as_ref()
            .filter(|p| p.manifest_sha256 == manifest_sha256);

        if let Some(prev) = same {
            if self.all_blobs_present(prev) {
                let mut record = prev.clone();
                if !signers.is_empty() && signers != record.signers {
                    record.signers = signers;
                    self.write_record(&record)?;
                }
                let reused_bytes = record.size + envelope.len() as u64;
                return Ok(InstallReport {
                    record,
                    written_bytes: 0,
                    reused_bytes,
                    outcome: InstallOutcome::AlreadyInstalled,
                });
            }
        }

        let staged = self.stage(authenticated, progress)?;
        let (mut written_bytes, mut reused_bytes) = (staged.written_bytes, staged.reused_bytes);
        // Everything verified: make the new blobs durable, then commit.
        self.commit(staged.blobs)?;
        if self.has_blob(&manifest_sha256, envelope.len() as u64) {
            reused_bytes += envelope.len() as u64;
        } else {
            self.put_blob(&manifest_sha256, &envelope)?;
            written_bytes += envelope.len() as u64;
        }
        fsutil::sync_dir(&self.blobs)?;

        let (outcome, installed) = match (&previous, same) {
            (_, Some(prev)) => (InstallOutcome::AlreadyInstalled, prev.installed.clone()),
            (Some(prev), None) => (
                InstallOutcome::Replaced {
                    previous_manifest_sha256: prev.manifest_sha256.clone(),
                },
                now_rfc3339(),
            ),
            (None, None) => (InstallOutcome::Installed, now_rfc3339()),
        };
        let signers = match same {
            Some(prev) if signers.is_empty() => prev.signers.clone(),
            _ => signers,
        };
        let size = statement.predicate.entries.iter().map(|e| e.size).sum();
        let record = ArtifactRecord {
            name: name.clone(),
            version: version.clone(),
            installed,
            manifest_sha256,
            signers,
            statement,
            size,
        };
        self.write_record(&record)?;
        Ok(InstallReport {
            record,
            written_bytes,
            reused_bytes,
            outcome,
        })
    }

    /// Whether a blob of this digest and size is in the store. Its bytes
    /// are checked when it is opened; one of the wrong size is replaced.
    fn has_blob(&self, digest: &str, size: u64) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    fn all_blobs_present(&self, record: &ArtifactRecord) -> bool {
        record
            .statement
            .predicate
            .entries
            .iter()
            .all(|e| self.has_blob(&e.sha256, e.size))
            && self.blob_path(&record.manifest_sha256).is_file()
    }

    /// Verifies every entry, streaming each one whose blob is missing into a
    /// temporary file during the same read. Nothing is committed; on error
    /// the temporary files are removed.
    fn stage(
        &self,
        authenticated: AuthenticatedArtifact,
        progress: &dyn Progress,
    ) -> Result<Staged> {
        let mut staged = Staged::default();
        let mut planned = HashSet::new();
        let sink_error: Rc<RefCell<Option<StoreError>>> = Rc::default();
        let verified = authenticated.verify_with(progress, |entry| {
            if planned.contains(&entry.sha256) || self.has_blob(&entry.sha256, entry.size) {
                staged.reused_bytes += entry.size;
                return Ok(None);
            }
            let tmp = TempFile::new(
                self.tmp
                    .join(fsutil::tmp_name(&format!("blob-{}", entry.sha256))),
            );
            let file = fsutil::create_new(tmp.path(), 0o444)
                .map_err(|e| remember(&sink_error, "creating", tmp.path(), e))?;
            let writer = BlobWriter {
                inner: BufWriter::with_capacity(CHUNK, file),
                path: tmp.path().to_path_buf(),
                error: Rc::clone(&sink_error),
            };
            planned.insert(entry.sha256.clone());
            staged.blobs.push((entry.sha256.clone(), tmp, entry.size));
            staged.written_bytes += entry.size;
            Ok(Some(Box::new(writer) as Box<dyn Write>))
        });
        match verified {
            Ok(_) => Ok(staged),
            // An I/O error of ours is reported with our path, not the archive's.
            Err(e) => Err(match (e, sink_error.take()) {
                (ArtifactError::Io { .. }, Some(ours)) => ours,
                (e, _) => e.into(),
            }),
        }
    }

    /// Fsyncs every staged file, checks its size, and renames it into place.
    /// The caller fsyncs the blob directory.
    fn commit(&self, blobs: Vec<(String, TempFile, u64)>) -> Result<()> {
        for (_, tmp, size) in &blobs {
            let path = tmp.path();
            let file = File::open(path).map_err(StoreError::io("opening", path))?;
            file.sync_all().map_err(StoreError::io("syncing", path))?;
            let len = file
                .metadata()
                .map_err(StoreError::io("reading metadata of", path))?
                .len();
            if len != *size {
                return Err(StoreError::Io {
                    op: "writing",
                    path: path.to_path_buf(),
                    source: io::Error::other(format!("wrote {len} bytes, expected {size}")),
                });
            }
        }
        for (digest, tmp, _) in blobs {
            let dest = self.blob_path(&digest);
            fs::rename(tmp.path(), &dest).map_err(StoreError::io("renaming into", &dest))?;
            tmp.keep();
        }
        Ok(())
    }

    /// Writes `bytes` (already known to hash to `digest`) as a blob. The
    /// caller fsyncs the blob directory.
    fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let tmp = TempFile::new(self.tmp.join(fsutil::tmp_name(&format!("blob-{digest}"))));
        let mut file = fsutil::create_new(tmp.path(), 0o444)
            .map_err(StoreError::io("creating", tmp.path()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(StoreError::io("writing", tmp.path()))?;
        let dest = self.blob_path(digest);
        fs::rename(tmp.path(), &dest).map_err(StoreError::io("renaming into", &dest))?;
        tmp.keep();
        Ok(())
    }

    fn write_record(&self, record: &ArtifactRecord) -> Result<()> {
        let dir = self.artifacts.join(&record.name);
        if !dir.is_dir() {
            fsutil::create_dirs(&dir, 0o755)?;
            fsutil::sync_dir(&self.artifacts)?;
        }
        let mut bytes = serde_json::to_vec_pretty(record).expect("records serialize");
        bytes.push(b'\n');
        fsutil::write_atomic(
            &self.tmp,
            &self.record_path(&record.name, &record.version),
            &bytes,
            0o644,
        )
    }

    /// The record of `name:version`, `None` if there is none.
    fn read_record(&self, name: &str, version: &str) -> Result<Option<ArtifactRecord>> {
        read_record_file(&self.record_path(name, version))
    }

    /// Every installed artifact, sorted by name then version.
    pub fn list(&self) -> Result<Vec<ArtifactRecord>> {
        let mut records = Vec::new();
        for name in fsutil::entry_names(&self.artifacts)? {
            if name.starts_with('.') {
                continue;
            }
            records.extend(self.versions_of(&name)?);
        }
        records.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| compare_versions(&a.version, &b.version))
        });
        Ok(records)
    }

    /// The records of every installed version of `name`, sorted by version.
    fn versions_of(&self, name: &str) -> Result<Vec<ArtifactRecord>> {
        let dir = self.artifacts.join(name);
        let mut records = Vec::new();
        for file in fsutil::entry_names(&dir)? {
            if file.starts_with('.') || !file.ends_with(".json") {
                continue;
            }
            // A record removed while listing is skipped.
            if let Some(record) = read_record_file(&dir.join(&file))? {
                records.push(record);
            }
        }
        records.sort_by(|a, b| compare_versions(&a.version, &b.version));
        Ok(records)
    }

    fn not_installed(&self, reference: &str, name: &str) -> StoreError {
        let installed = self
            .versions_of(name)
            .map(|records| records.iter().map(ArtifactRecord::reference).collect())
            .unwrap_or_default();
        StoreError::NotInstalled {
            reference: reference.to_owned(),
            installed,
        }
    }

    /// The record `NAME:VERSION`, or for `NAME` its most recently installed
    /// version.
    pub fn get(&self, reference: &str) -> Result<ArtifactRecord> {
        let r = Reference::parse(reference)?;
        let found = match r.version {
            Some(version) => self.read_record(r.name, version)?,
            None => self.versions_of(r.name)?.into_iter().max_by(|a, b| {
                a.installed_at()
                    .cmp(&b.installed_at())
                    .then_with(|| compare_versions(&a.version, &b.version))
            }),
        };
        found.ok_or_else(|| self.not_installed(reference, r.name))
    }

    /// Removes the record `NAME:VERSION` (or `NAME` when exactly one version
    /// is installed) and returns it. Its blobs stay until [`gc`](Self::gc).
    pub fn remove(&self, reference: &str) -> Result<ArtifactRecord> {
        let r = Reference::parse(reference)?;
        let _lock = self.lock()?;
        let record = match r.version {
            Some(version) => self
                .read_record(r.name, version)?
                .ok_or_else(|| self.not_installed(reference, r.name))?,
            None => {
                let mut versions = self.versions_of(r.name)?;
                match versions.len() {
                    0 => return Err(self.not_installed(reference, r.name)),
                    1 => versions.remove(0),
                    _ => {
                        return Err(StoreError::AmbiguousReference {
                            name: r.name.to_owned(),
                            versions: versions.iter().map(|v| v.version.clone()).collect(),
                        })
                    }
                }
            }
        };
        let path = self.record_path(&record.name, &record.version);
        fs::remove_file(&path).map_err(StoreError::io("removing", &path))?;
        let dir = self.artifacts.join(&record.name);
        fsutil::sync_dir(&dir)?;
        if fs::remove_dir(&dir).is_ok() {
            fsutil::sync_dir(&self.artifacts)?;
        }
        Ok(record)
    }

    /// Deletes blobs no record references, temporary files left by
    /// interrupted installs, and verify-cache entries of blobs that are gone
    /// or changed. Refuses to run while a record is unreadable (it cannot
    /// tell which blobs that record needs).
    pub fn gc(&self) -> Result<GcReport> {
        let _lock = self.lock()?;
        let mut referenced = BTreeSet::new();
        for record in self.list()? {
            referenced.insert(record.manifest_sha256.clone());
            for e in &record.statement.predicate.entries {
                referenced.insert(e.sha256.clone());
            }
        }
        let mut report = GcReport::default();
        for name in fsutil::entry_names(&self.blobs)? {
            if !is_sha256_hex(&name) || referenced.contains(&name) {
                continue;
            }
            let path = self.blobs.join(&name);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            fs::remove_file(&path).map_err(StoreError::io("removing", &path))?;
            report.removed_blobs += 1;
            report.freed_bytes += meta.len();
        }
        fsutil::sync_dir(&self.blobs)?;

        for name in fsutil::entry_names(&self.tmp)? {
            let path = self.tmp.join(&name);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    report.removed_temp_files += 1;
                    report.freed_bytes += meta.len();
                }
                // A verify-cache write (which takes no lock) finished first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("removing", &path)(e)),
            }
        }

        for name in fsutil::entry_names(self.cache.dir())? {
            let stale = match fs::metadata(self.blob_path(&name)) {
                Ok(meta) if is_sha256_hex(&name) => !self.cache.vouches(&name, &Stamp::of(&meta)),
                _ => true,
            };
            if stale {
                let path = self.cache.dir().join(&name);
                if fs::remove_file(&path).is_ok() {
                    report.removed_cache_entries += 1;
                }
            }
        }
        Ok(report)
    }

    /// The blob with this digest, after checking that its bytes match it
    /// (or that the verify cache vouches for this exact file). A corrupt blob
    /// is refused with [`StoreError::CorruptBlob`] and never served.
    pub fn open_blob(&self, sha256_hex: &str) -> Result<VerifiedBlob> {
        self.open_blob_with(sha256_hex, &NoProgress, true)
    }

    /// Like [`open_blob`](Self::open_blob) but always re-hashes, ignoring
    /// (and then refreshing) the verify cache.
    pub fn open_blob_uncached(&self, sha256_hex: &str) -> Result<VerifiedBlob> {
        self.open_blob_with(sha256_hex, &NoProgress, false)
    }

    fn open_blob_with(
        &self,
        digest: &str,
        progress: &dyn Progress,
        use_cache: bool,
    ) -> Result<VerifiedBlob> {
        if !is_sha256_hex(digest) {
            return Err(StoreError::InvalidDigest {
                digest: digest.to_owned(),
            });
        }
        let path = self.blob_path(digest);
        let started = now_ns();
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob {
                    digest: digest.to_owned(),
                    path,
                })
            }
            Err(e) => return Err(StoreError::io("opening", &path)(e)),
        };
        let before = file
            .metadata()
            .map_err(StoreError::io("reading metadata of", &path))?;
        let corrupt = || StoreError::CorruptBlob {
            digest: digest.to_owned(),
            path: path.clone(),
        };
        if !before.is_file() {
            return Err(corrupt());
        }
        let stamp = Stamp::of(&before);
        if use_cache && self.cache.vouches(digest, &stamp) {
            progress.advance(stamp.size);
            return Ok(VerifiedBlob {
                path,
                size: stamp.size,
            });
        }

        let mut sha = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io("reading", &path)(e)),
            };
            sha.update(&buf[..n]);
            progress.advance(n as u64);
        }
        if hex::encode(sha.finalize()) != digest {
            self.cache.forget(digest);
            self.set_aside(digest, &stamp);
            return Err(corrupt());
        }
        let after = file
            .metadata()
            .map_err(StoreError::io("reading metadata of", &path))?;
        // Cache only what did not change while it was read.
        if Stamp::of(&after) == stamp {
            self.cache.put(digest, &stamp, started);
        }
        Ok(VerifiedBlob {
            path,
            size: stamp.size,
        })
    }

    /// Moves a corrupt blob into `tmp/` (gc deletes it), so that installing
    /// an artifact that uses it writes a good copy. Only when the store is
    /// idle and the file is still the one that was hashed.
    fn set_aside(&self, digest: &str, stamp: &Stamp) {
        let Ok(Some(_lock)) = fsutil::try_lock(&self.root.join("lock")) else {
            return;
        };
        let path = self.blob_path(digest);
        let same = fs::metadata(&path).is_ok_and(|m| {
            let now = Stamp::of(&m);
            now.dev == stamp.dev && now.ino == stamp.ino
        });
        if same {
            let aside = self
                .tmp
                .join(fsutil::tmp_name(&format!("corrupt-{digest}")));
            if fs::rename(&path, aside).is_ok() {
                let _ = fsutil::sync_dir(&self.blobs);
            }
        }
    }

    /// Checks an installed artifact: its manifest blob matches the record's
    /// statement and every entry's blob matches its digest (through the
    /// verify cache).
    pub fn check(&self, record: &ArtifactRecord, progress: &dyn Progress) -> Result<()> {
        self.check_with(record, progress, true)
    }

    /// Like [`check`](Self::check) but re-hashes every blob.
    pub fn check_uncached(&self, record: &ArtifactRecord, progress: &dyn Progress) -> Result<()> {
        self.check_with(record, progress, false)
    }

    fn check_with(
        &self,
        record: &ArtifactRecord,
        progress: &dyn Progress,
        use_cache: bool,
    ) -> Result<()> {
        let (statement, _) = self.manifest(record)?;
        if statement != record.statement {
            return Err(self.damaged(record, "it does not match its signed manifest"));
        }
        progress.start(&format!("checking {}", record.reference()), record.size);
        for e in &record.statement.predicate.entries {
            let blob = self.open_blob_with(&e.sha256, progress, use_cache)?;
            if blob.size != e.size {
                return Err(StoreError::CorruptBlob {
                    digest: e.sha256.clone(),
                    path: blob.path,
                });
            }
        }
        progress.finish();
        Ok(())
    }

    /// Re-checks the signatures on an installed artifact's manifest under
    /// `trust` (e.g. after trusting or distrusting keys).
    pub fn verify_signature(
        &self,
        record: &ArtifactRecord,
        trust: &TrustPolicy,
    ) -> Result<SignerStatus> {
        let (statement, envelope) = self.manifest(record)?;
        if statement != record.statement {
            return Err(self.damaged(record, "it does not match its signed manifest"));
        }
        let payload = envelope.payload_bytes()?;
        Ok(envelope.check_signatures(&payload, &trust.keys, trust.allow_untrusted)?)
    }

    /// The verified blob of the entry called `entry_name` (e.g.
    /// `adapter/lora.gguf`), `None` if the artifact has no such entry.
    pub fn entry_blob(
        &self,
        record: &ArtifactRecord,
        entry_name: &str,
    ) -> Result<Option<VerifiedBlob>> {
        match record.entry(entry_name) {
            Some(e) => self.open_blob(&e.sha256).map(Some),
            None => Ok(None),
        }
    }

    /// Reads the manifest blob, checks its digest, and parses the statement.
    fn manifest(&self, record: &ArtifactRecord) -> Result<(Statement, Envelope)> {
        let blob = self.open_blob(&record.manifest_sha256)?;
        let bytes = fs::read(&blob.path).map_err(StoreError::io("reading", &blob.path))?;
        if hex::encode(Sha256::digest(&bytes)) != record.manifest_sha256 {
            return Err(StoreError::CorruptBlob {
                digest: record.manifest_sha256.clone(),
                path: blob.path,
            });
        }
        let envelope: Envelope = serde_json::from_slice(&bytes)
            .map_err(|e| self.damaged(record, &format!("its manifest is not an envelope: {e}")))?;
        let payload = envelope.payload_bytes()?;
        let statement = Statement::parse(&payload)?;
        Ok((statement, envelope))
    }

    fn damaged(&self, record: &ArtifactRecord, detail: &str) -> StoreError {
        StoreError::CorruptRecord {
            path: self.record_path(&record.name, &record.version),
            detail: detail.to_owned(),
        }
    }
}

/// Reads and checks a record file; `None` if it does not exist.
fn read_record_file(path: &Path) -> Result<Option<ArtifactRecord>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("reading", path)(e)),
    };
    let damaged = |detail: String| StoreError::CorruptRecord {
        path: path.to_path_buf(),
        detail,
    };
    let record: ArtifactRecord =
        serde_json::from_slice(&bytes).map_err(|e| damaged(format!("not a record: {e}")))?;
    record.check().map_err(damaged)?;
    let expected = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".json"));
    let dir = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str());
    if expected != Some(record.version.as_str()) || dir != Some(record.name.as_str()) {
        return Err(damaged(format!(
            "it holds {} but sits elsewhere",
            record.reference()
        )));
    }
    Ok(Some(record))
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .expect("RFC 3339 formats any date")
}

/// New blobs written to temporary files during verification.
#[derive(Debug, Default)]
struct Staged {
    /// Digest, temporary file, size.
    blobs: Vec<(String, TempFile, u64)>,
    written_bytes: u64,
    reused_bytes: u64,
}

/// Keeps the first I/O error of a sink with our path, for the report.
fn remember(
    slot: &Rc<RefCell<Option<StoreError>>>,
    op: &'static str,
    path: &Path,
    e: io::Error,
) -> io::Error {
    let copy = io::Error::new(e.kind(), e.to_string());
    let mut slot = slot.borrow_mut();
    if slot.is_none() {
        *slot = Some(StoreError::Io {
            op,
            path: path.to_path_buf(),
            source: e,
        });
    }
    copy
}

/// Writes one entry into its temporary blob file, remembering I/O errors.
struct BlobWriter {
    inner: BufWriter<File>,
    path: PathBuf,
    error: Rc<RefCell<Option<StoreError>>>,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner
            .write(buf)
            .map_err(|e| remember(&self.error, "writing", &self.path, e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner
            .flush()
            .map_err(|e| remember(&self.error, "writing", &self.path, e))
    }
}
