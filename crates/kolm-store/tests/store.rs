//! The store on real files: dedup of a shared base, refusal of corrupt
//! blobs, failed installs that leave nothing, concurrent installs, remove +
//! gc, references, and the records' JSON.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use kolm_artifact::names;
use kolm_artifact::{ArtifactError, ErrorKind, NoProgress, SignerStatus, TrustPolicy};
use kolm_store::{ArtifactRecord, Home, InstallOutcome, Store, StoreError};
use support::*;

fn store_in(dir: &Path) -> Store {
    Home::at(dir.join("home")).store().unwrap()
}

fn store_dir(dir: &Path, sub: &str) -> std::path::PathBuf {
    dir.join("home/store").join(sub)
}

/// Every blob digest a record references, its manifest included.
fn digests(record: &ArtifactRecord) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = record
        .statement
        .predicate
        .entries
        .iter()
        .map(|e| e.sha256.clone())
        .collect();
    set.insert(record.manifest_sha256.clone());
    set
}

#[test]
fn two_artifacts_on_one_base_keep_one_copy_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 7);
    let base_size = fs::metadata(&base).unwrap().len();
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let b = with_verifier(dir.path(), "beta", "1.0.0", &base);

    let first = store.install(&a, &trusted(), &NoProgress).unwrap();
    assert_eq!(first.outcome, InstallOutcome::Installed);
    assert!(first.written_bytes >= base_size);
    assert_eq!(first.reused_bytes, 0);
    assert_eq!(first.record.signers, vec![test_key().public().keyid()]);

    let second = store.install(&b, &trusted(), &NoProgress).unwrap();
    assert_eq!(second.outcome, InstallOutcome::Installed);
    // Exactly the new blobs were written: everything but the base, and the
    // manifest envelope.
    let manifest_size = fs::metadata(store.blob_path(&second.record.manifest_sha256))
        .unwrap()
        .len();
    assert_eq!(
        second.written_bytes,
        second.record.size - base_size + manifest_size,
        "{second:?}"
    );
    assert_eq!(second.reused_bytes, base_size);

    let base_digest = &first.record.entry(names::BASE).unwrap().sha256;
    assert_eq!(
        base_digest,
        &second.record.entry(names::BASE).unwrap().sha256
    );
    let blobs = files_in(&store_dir(dir.path(), "blobs/sha256"));
    let expected: BTreeSet<String> = digests(&first.record)
        .union(&digests(&second.record))
        .cloned()
        .collect();
    assert_eq!(
        blobs,
        expected.into_iter().collect::<Vec<_>>(),
        "one blob per distinct content"
    );
    for blob in &blobs {
        assert_eq!(mode(&store.blob_path(blob)), 0o444, "blobs are read-only");
    }
    assert!(files_in(&store_dir(dir.path(), "tmp")).is_empty());

    // The blob holds the base's bytes.
    assert_eq!(
        fs::read(store.blob_path(base_digest)).unwrap(),
        fs::read(&base).unwrap()
    );
    let names: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.reference())
        .collect();
    assert_eq!(names, ["alpha:1.0.0", "beta:1.0.0"]);
    for record in store.list().unwrap() {
        store.check(&record, &NoProgress).unwrap();
    }
}

#[test]
fn installing_the_same_artifact_again_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 1);
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let first = store.install(&a, &trusted(), &NoProgress).unwrap();
    let again = store.install(&a, &trusted(), &NoProgress).unwrap();
    assert_eq!(again.outcome, InstallOutcome::AlreadyInstalled);
    assert_eq!(again.written_bytes, 0);
    assert_eq!(again.record, first.record, "the record is kept as it was");
}

#[test]
fn a_different_artifact_with_the_same_name_and_version_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 1);
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let first = store.install(&a, &trusted(), &NoProgress).unwrap();
    let changed = dir.path().join("changed");
    fs::create_dir(&changed).unwrap();
    let a2 = artifact(
        &changed,
        "alpha",
        "1.0.0",
        &base,
        &[(names::VERIFIER, b"{}")],
    );
    let second = store.install(&a2, &trusted(), &NoProgress).unwrap();
    assert_eq!(
        second.outcome,
        InstallOutcome::Replaced {
            previous_manifest_sha256: first.record.manifest_sha256.clone()
        }
    );
    assert_eq!(store.get("alpha:1.0.0").unwrap(), second.record);
    assert_eq!(store.list().unwrap().len(), 1);
    // The old verifier and manifest are garbage now; the base is shared.
    let report = store.gc().unwrap();
    assert_eq!(
        report.removed_blobs, 3,
        "old verifier, receipts and manifest: {report:?}"
    );
    store.check(&second.record, &NoProgress).unwrap();
}

#[test]
fn a_corrupt_blob_is_refused_and_reinstalling_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 2);
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let record = store.install(&a, &trusted(), &NoProgress).unwrap().record;
    let digest = record.entry(names::BASE).unwrap().sha256.clone();
    assert_eq!(
        store.open_blob(&digest).unwrap().size,
        fs::metadata(&base).unwrap().len()
    );

    flip_byte(&store.blob_path(&digest));
    let err = store.open_blob(&digest).unwrap_err();
    assert!(
        matches!(&err, StoreError::CorruptBlob { digest: d, .. } if d == &digest),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Integrity);
    assert!(err.to_string().contains("reinstall"), "{err}");
    // It was set aside, so nothing can serve it.
    let err = store.check(&record, &NoProgress).unwrap_err();
    assert!(matches!(err, StoreError::MissingBlob { .. }), "{err:?}");
    let err = store.entry_blob(&record, names::BASE).unwrap_err();
    assert!(matches!(err, StoreError::MissingBlob { .. }), "{err:?}");

    let again = store.install(&a, &trusted(), &NoProgress).unwrap();
    assert_eq!(again.outcome, InstallOutcome::AlreadyInstalled);
    assert!(
        again.written_bytes >= fs::metadata(&base).unwrap().len(),
        "{again:?}"
    );
    store.check(&record, &NoProgress).unwrap();
    assert_eq!(
        store
            .entry_blob(&record, names::BASE)
            .unwrap()
            .unwrap()
            .path,
        store.blob_path(&digest)
    );
    assert_eq!(store.entry_blob(&record, names::ADAPTER).unwrap(), None);
    let report = store.gc().unwrap();
    assert_eq!(report.removed_temp_files, 1, "the corrupt copy: {report:?}");
    assert_eq!(report.removed_blobs, 0);
}

#[test]
fn a_blob_changed_after_it_was_cached_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 3);
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let record = store.install(&a, &trusted(), &NoProgress).unwrap().record;
    let digest = record.entry(names::BASE).unwrap().sha256.clone();
    let cache_entry = store_dir(dir.path(), "cache/verified").join(&digest);

    // A blob changed within the racy window is not cached.
    store.open_blob(&digest).unwrap();
    assert!(
        !cache_entry.exists(),
        "cached a blob whose stamps are too recent to trust"
    );

    thread::sleep(
        Duration::from_nanos(kolm_store::RACY_WINDOW_NS as u64) + Duration::from_millis(100),
    );
    store.open_blob(&digest).unwrap();
    assert!(cache_entry.exists(), "a verified, settled blob is cached");
    store.check(&record, &NoProgress).unwrap();

    // Same size, same mtime (put back as `touch -r` would): ctime differs.
    flip_byte(&store.blob_path(&digest));
    let err = store.open_blob(&digest).unwrap_err();
    assert!(matches!(err, StoreError::CorruptBlob { .. }), "{err:?}");
    assert!(!cache_entry.exists(), "the stale entry is dropped");
}

#[test]
fn a_failed_install_leaves_no_record_and_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 4);
    let good = artifact(
        dir.path(),
        "alpha",
        "1.0.0",
        &base,
        &[
            (names::VERIFIER, b"{\"kind\":\"label\"}"),
            (names::EVAL, b"{\"input\":\"x\"}\n"),
        ],
    );
    let layout = kolm_artifact::container::read_layout(&fs::File::open(&good).unwrap()).unwrap();
    let eval = layout.entry(names::EVAL).unwrap();
    let mut bytes = fs::read(&good).unwrap();
    bytes[(eval.data_offset + eval.size / 2) as usize] ^= 0x01;
    let bad = dir.path().join("bad.kolm");
    fs::write(&bad, &bytes).unwrap();

    let err = store.install(&bad, &trusted(), &NoProgress).unwrap_err();
    match &err {
        StoreError::Artifact(ArtifactError::DigestMismatch { name, .. }) => {
            assert_eq!(name, names::EVAL)
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert_eq!(err.kind(), ErrorKind::Integrity);
    assert!(store.list().unwrap().is_empty());
    assert!(
        files_in(&store_dir(dir.path(), "tmp")).is_empty(),
        "temp files left"
    );
    assert!(
        files_in(&store_dir(dir.path(), "blobs/sha256")).is_empty(),
        "blobs committed"
    );
    assert!(files_in(&store_dir(dir.path(), "artifacts")).is_empty());
    assert!(matches!(
        store.get("alpha"),
        Err(StoreError::NotInstalled { .. })
    ));

    // The good one installs afterwards.
    store.install(&good, &trusted(), &NoProgress).unwrap();
}

#[test]
fn untrusted_artifacts_need_permission_and_record_no_signers() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 5);
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let err = store
        .install(&a, &trusting(&other_key()), &NoProgress)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Untrusted);
    assert!(files_in(&store_dir(dir.path(), "blobs/sha256")).is_empty());

    let integrity_only = TrustPolicy {
        keys: vec![],
        allow_untrusted: true,
    };
    let report = store.install(&a, &integrity_only, &NoProgress).unwrap();
    assert!(report.record.signers.is_empty());
    assert!(!report.record.is_trusted());

    // Installing it again once its signer is trusted records the signer.
    let report = store.install(&a, &trusted(), &NoProgress).unwrap();
    assert_eq!(report.outcome, InstallOutcome::AlreadyInstalled);
    assert_eq!(report.record.signers, vec![test_key().public().keyid()]);
    assert_eq!(store.get("alpha").unwrap().signers, report.record.signers);
    assert_eq!(
        store.verify_signature(&report.record, &trusted()).unwrap(),
        SignerStatus::Trusted(vec![test_key().public().keyid()])
    );
    let err = store
        .verify_signature(&report.record, &trusting(&other_key()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Untrusted);
}

#[test]
fn concurrent_installs_are_safe() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_gguf(dir.path(), "base.gguf", 6);
    let shared = with_verifier(dir.path(), "shared", "1.0.0", &base);
    const THREADS: usize = 6;
    let own: Vec<_> = (0..THREADS)
        .map(|i| with_verifier(dir.path(), &format!("own{i}"), "1.0.0", &base))
        .collect();
    let home = dir.path().join("home");
    let barrier = Arc::new(Barrier::new(THREADS));
    let outcomes: Vec<InstallOutcome> = own
        .into_iter()
        .map(|mine| {
            let (home, shared, barrier) = (home.clone(), shared.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                let store = Home::at(home).store().unwrap();
                barrier.wait();
                let (first, second) = if mine.to_string_lossy().contains("own0") {
                    (&mine, &shared)
                } else {
                    (&shared, &mine)
                };
                let a = store.install(first, &trusted(), &NoProgress).unwrap();
                let b = store.install(second, &trusted(), &NoProgress).unwrap();
                if first == &shared {
                    a.outcome
                } else {
                    b.outcome
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == InstallOutcome::Installed)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == InstallOutcome::AlreadyInstalled)
            .count(),
        THREADS - 1
    );

    let store = Home::at(&home).store().unwrap();
    let records = store.list().unwrap();
    assert_eq!(records.len(), THREADS + 1);
    assert_eq!(records.iter().filter(|r| r.name == "shared").count(), 1);
    let referenced: BTreeSet<String> = records.iter().flat_map(digests).collect();
    let blobs: BTreeSet<String> = files_in(&store_dir(dir.path(), "blobs/sha256"))
        .into_iter()
        .collect();
    assert_eq!(blobs, referenced);
    assert!(files_in(&store_dir(dir.path(), "tmp")).is_empty());
    for r in &records {
        store.check(r, &NoProgress).unwrap();
    }
    assert_eq!(store.gc().unwrap().removed_blobs, 0);
}

#[test]
fn remove_then_gc_frees_exactly_the_unshared_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 8);
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let b = with_verifier(dir.path(), "beta", "1.0.0", &base);
    let ra = store.install(&a, &trusted(), &NoProgress).unwrap().record;
    let rb = store.install(&b, &trusted(), &NoProgress).unwrap().record;

    assert_eq!(store.remove("alpha").unwrap(), ra);
    assert!(matches!(
        store.get("alpha"),
        Err(StoreError::NotInstalled { .. })
    ));
    assert!(!store_dir(dir.path(), "artifacts/alpha").exists());
    // Removing keeps the blobs until gc.
    assert!(digests(&ra).iter().all(|d| store.blob_path(d).exists()));

    let unshared: BTreeSet<String> = digests(&ra).difference(&digests(&rb)).cloned().collect();
    let unshared_bytes: u64 = unshared
        .iter()
        .map(|d| fs::metadata(store.blob_path(d)).unwrap().len())
        .sum();
    let report = store.gc().unwrap();
    assert_eq!(report.removed_blobs, unshared.len() as u64, "{report:?}");
    assert_eq!(report.freed_bytes, unshared_bytes);
    assert_eq!(report.removed_temp_files, 0);
    assert!(unshared.iter().all(|d| !store.blob_path(d).exists()));
    assert!(digests(&rb).iter().all(|d| store.blob_path(d).exists()));
    store.check(&rb, &NoProgress).unwrap();
    assert_eq!(store.gc().unwrap().removed_blobs, 0, "gc is idempotent");

    store.remove("beta:1.0.0").unwrap();
    let report = store.gc().unwrap();
    assert_eq!(report.removed_blobs, digests(&rb).len() as u64);
    assert!(files_in(&store_dir(dir.path(), "blobs/sha256")).is_empty());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn gc_removes_what_a_crashed_install_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 9);
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let record = store.install(&a, &trusted(), &NoProgress).unwrap().record;
    // What a crash between writing blobs and the record leaves: temp files
    // and blobs no record references, and cache entries of vanished blobs.
    fs::write(store_dir(dir.path(), "tmp/blob-x.123.0.tmp"), [0u8; 100]).unwrap();
    let orphan = "ab".repeat(32);
    fs::write(store.blob_path(&orphan), [1u8; 50]).unwrap();
    fs::write(
        store_dir(dir.path(), "cache/verified").join("cd".repeat(32)),
        "{}",
    )
    .unwrap();

    let report = store.gc().unwrap();
    assert_eq!(report.removed_blobs, 1);
    assert_eq!(report.removed_temp_files, 1);
    assert_eq!(report.removed_cache_entries, 1);
    assert_eq!(report.freed_bytes, 150);
    store.check(&record, &NoProgress).unwrap();
}

#[test]
fn gc_refuses_to_guess_around_a_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 10);
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let record = store.install(&a, &trusted(), &NoProgress).unwrap().record;
    let path = store.record_path("alpha", "1.0.0");
    fs::write(&path, "{ not json").unwrap();
    let err = store.gc().unwrap_err();
    assert!(
        matches!(&err, StoreError::CorruptRecord { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert!(
        digests(&record).iter().all(|d| store.blob_path(d).exists()),
        "gc deleted blobs"
    );
    // Reinstalling repairs it.
    let report = store.install(&a, &trusted(), &NoProgress).unwrap();
    assert_eq!(report.outcome, InstallOutcome::Installed);
    assert_eq!(report.written_bytes, 0);
    store.gc().unwrap();

    // A record edited to point at other blobs no longer matches its manifest.
    let mut edited = report.record.clone();
    edited.statement.predicate.task = Some("something else".into());
    let err = store.check(&edited, &NoProgress).unwrap_err();
    assert!(matches!(err, StoreError::CorruptRecord { .. }), "{err:?}");
}

#[test]
fn references_pick_versions_and_explain_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 11);
    let v2 = with_verifier(dir.path(), "alpha", "2.0.0", &base);
    let v10 = with_verifier(dir.path(), "alpha", "10.0.0", &base);
    store.install(&v2, &trusted(), &NoProgress).unwrap();
    thread::sleep(Duration::from_millis(5));
    store.install(&v10, &trusted(), &NoProgress).unwrap();
    thread::sleep(Duration::from_millis(5));
    store.install(&v2, &trusted(), &NoProgress).unwrap();

    assert_eq!(
        store.get("alpha").unwrap().version,
        "10.0.0",
        "most recently installed"
    );
    assert_eq!(store.get("alpha:2.0.0").unwrap().version, "2.0.0");
    let versions: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(
        versions,
        ["2.0.0", "10.0.0"],
        "sorted by version, naturally"
    );

    let err = store.get("alpha:3").unwrap_err();
    match &err {
        StoreError::NotInstalled { installed, .. } => {
            assert_eq!(installed, &["alpha:2.0.0", "alpha:10.0.0"])
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("alpha:10.0.0"), "{err}");
    let err = store.get("beta").unwrap_err();
    assert!(matches!(&err, StoreError::NotInstalled { installed, .. } if installed.is_empty()));
    assert!(err.to_string().contains("kolmctl list"), "{err}");
    let err = store.get("../etc").unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidReference { .. }),
        "{err:?}"
    );

    let err = store.remove("alpha").unwrap_err();
    assert!(
        matches!(err, StoreError::AmbiguousReference { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("alpha:VERSION"), "{err}");
    store.remove("alpha:10.0.0").unwrap();
    assert_eq!(store.get("alpha").unwrap().version, "2.0.0");
    assert!(matches!(
        store.remove("alpha:10.0.0"),
        Err(StoreError::NotInstalled { .. })
    ));
}

#[test]
fn records_are_stable_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 12);
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let record = store.install(&a, &trusted(), &NoProgress).unwrap().record;
    let text = fs::read_to_string(store.record_path("alpha", "1.0.0")).unwrap();
    let parsed: ArtifactRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, record);
    assert_eq!(
        text,
        format!("{}\n", serde_json::to_string_pretty(&record).unwrap())
    );
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Sorted: serde_json's key order depends on its features (llguidance
    // turns on `preserve_order` workspace-wide).
    let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "installed",
            "manifest_sha256",
            "name",
            "signers",
            "size",
            "statement",
            "version"
        ],
        "field names are part of the on-disk format"
    );
    assert!(store.open_blob("not-a-digest").is_err());
    assert!(matches!(
        store.open_blob(&"0".repeat(64)),
        Err(StoreError::MissingBlob { .. })
    ));
}

#[test]
fn the_real_smollm2_base_is_stored_once() {
    let model = kolm_fixtures::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let size = fs::metadata(&model).unwrap().len();
    let a = with_verifier(dir.path(), "smol-a", "1.0.0", &model);
    let b = with_verifier(dir.path(), "smol-b", "1.0.0", &model);
    let first = store.install(&a, &trusted(), &NoProgress).unwrap();
    let second = store.install(&b, &trusted(), &NoProgress).unwrap();
    assert!(first.written_bytes >= size);
    assert!(second.written_bytes < 64 * 1024, "{second:?}");
    assert!(second.reused_bytes >= size);
    let base = store
        .entry_blob(&second.record, names::BASE)
        .unwrap()
        .unwrap();
    assert_eq!(base.size, size);
}

#[test]
fn a_truncated_blob_is_replaced_by_the_next_install() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 13);
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let record = store.install(&a, &trusted(), &NoProgress).unwrap().record;
    let digest = &record.entry(names::BASE).unwrap().sha256;
    // What a power loss on a careless file system can leave.
    fs::OpenOptions::new()
        .write(true)
        .open(store.blob_path(digest))
        .unwrap()
        .set_len(0)
        .unwrap();
    assert!(matches!(
        store.open_blob(digest),
        Err(StoreError::CorruptBlob { .. })
    ));

    let b = with_verifier(dir.path(), "beta", "1.0.0", &base);
    let report = store.install(&b, &trusted(), &NoProgress).unwrap();
    assert!(
        report.written_bytes >= fs::metadata(&base).unwrap().len(),
        "{report:?}"
    );
    store.check(&record, &NoProgress).unwrap();
    store.check(&report.record, &NoProgress).unwrap();
}

#[test]
fn an_io_failure_of_the_store_names_the_store_path_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 14);
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let tmp = store_dir(dir.path(), "tmp");
    fs::remove_dir(&tmp).unwrap();
    fs::write(&tmp, "not a directory").unwrap();
    let err = store.install(&a, &trusted(), &NoProgress).unwrap_err();
    match &err {
        StoreError::Io { path, .. } => assert!(path.starts_with(&tmp), "{err}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(store.list().unwrap().is_empty());
    assert!(files_in(&store_dir(dir.path(), "blobs/sha256")).is_empty());
}

#[test]
fn install_reports_serialize_flat() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let base = tiny_gguf(dir.path(), "base.gguf", 15);
    let a = with_verifier(dir.path(), "alpha", "1.0.0", &base);
    let report = store.install(&a, &trusted(), &NoProgress).unwrap();
    let value = serde_json::to_value(&report).unwrap();
    assert_eq!(value["outcome"], "installed");
    assert_eq!(value["record"]["name"], "alpha");
    assert_eq!(value["written_bytes"], report.written_bytes);
    let replaced = kolm_store::InstallReport {
        outcome: InstallOutcome::Replaced {
            previous_manifest_sha256: "ab".repeat(32),
        },
        ..report
    };
    let value = serde_json::to_value(&replaced).unwrap();
    assert_eq!(value["outcome"], "replaced");
    assert_eq!(value["previous_manifest_sha256"], "ab".repeat(32));
}
