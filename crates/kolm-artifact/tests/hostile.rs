//! The hostile-archive corpus: each case is a real archive, mutated or built
//! by hand, and each must be refused with its own specific error.

mod support;

use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use kolm_artifact::container::ZipWriter;
use kolm_artifact::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use kolm_artifact::manifest::{BaseModel, EntryRecord, Predicate, ReceiptsHead, Statement};
use kolm_artifact::names::{self, NameError};
use kolm_artifact::{open, verify, ArtifactError, ErrorKind, NoProgress};
use support::*;

/// Byte positions of a canonical archive's records.
struct Map {
    bytes: Vec<u8>,
    zip64_end: usize,
    cd_offset: usize,
    /// (name, central record offset, local header offset)
    entries: Vec<(String, usize, usize)>,
}

fn le16(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn set64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

impl Map {
    fn of(path: &Path) -> Map {
        let bytes = read(path);
        let zip64_end = bytes.len() - 22 - 20 - 56;
        let count = le64(&bytes, zip64_end + 24) as usize;
        let cd_offset = le64(&bytes, zip64_end + 48) as usize;
        let mut entries = Vec::new();
        let mut at = cd_offset;
        for _ in 0..count {
            let n = le16(&bytes, at + 28);
            let name = String::from_utf8(bytes[at + 46..at + 46 + n].to_vec()).unwrap();
            let local = le64(&bytes, at + 46 + n + 20) as usize;
            entries.push((name, at, local));
            at += 46 + n + 28;
        }
        Map {
            bytes,
            zip64_end,
            cd_offset,
            entries,
        }
    }

    fn find(&self, name: &str) -> (usize, usize) {
        let (_, cd, local) = self.entries.iter().find(|e| e.0 == name).unwrap();
        (*cd, *local)
    }

    /// Renames an entry in both its central and local headers (same length).
    fn rename(&mut self, from: &str, to: &str) {
        assert_eq!(from.len(), to.len());
        let (cd, local) = self.find(from);
        self.bytes[cd + 46..cd + 46 + to.len()].copy_from_slice(to.as_bytes());
        self.bytes[local + 30..local + 30 + to.len()].copy_from_slice(to.as_bytes());
    }

    fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("hostile.kolm");
        std::fs::write(&path, &self.bytes).unwrap();
        path
    }
}

const A: &str = "recall/embedder/a.bin";
const B: &str = "recall/embedder/b.bin";

/// Opens a mutated copy of the full artifact and returns the error.
fn refuse(mutate: impl FnOnce(&mut Map)) -> ArtifactError {
    let dir = tempfile::tempdir().unwrap();
    let good = full_artifact(dir.path());
    let mut map = Map::of(&good);
    mutate(&mut map);
    let path = map.write(dir.path());
    verify(&path, &trusting(&test_key()), &NoProgress).expect_err("a hostile archive was accepted")
}

#[test]
fn duplicate_names_are_refused() {
    let err = refuse(|m| m.rename(B, A));
    assert!(
        matches!(&err, ArtifactError::DuplicateEntry { name } if name == A),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Malformed);
}

#[test]
fn symlinks_are_refused() {
    let err = refuse(|m| {
        let (cd, _) = m.find(A);
        m.bytes[cd + 38..cd + 42].copy_from_slice(&(0o120777u32 << 16).to_le_bytes());
    });
    assert!(
        matches!(&err, ArtifactError::Symlink { name } if name == A),
        "{err:?}"
    );
}

#[test]
fn encrypted_entries_are_refused() {
    let err = refuse(|m| {
        let (cd, local) = m.find(A);
        m.bytes[cd + 8] |= 1;
        m.bytes[local + 6] |= 1;
    });
    assert!(
        matches!(&err, ArtifactError::Encrypted { name } if name == A),
        "{err:?}"
    );
}

#[test]
fn compressed_entries_are_refused() {
    let err = refuse(|m| {
        let (cd, local) = m.find(A);
        m.bytes[cd + 10] = 8;
        m.bytes[local + 8] = 8;
    });
    assert!(
        matches!(&err, ArtifactError::Compressed { name, method: 8 } if name == A),
        "{err:?}"
    );
}

#[test]
fn absolute_and_parent_names_are_refused() {
    let err = refuse(|m| m.rename(A, "/ecall/embedder/a.bin"));
    assert!(
        matches!(
            &err,
            ArtifactError::BadName {
                reason: NameError::Absolute,
                ..
            }
        ),
        "{err:?}"
    );
    let err = refuse(|m| m.rename(A, "../../../../../xx.bin"));
    assert!(
        matches!(
            &err,
            ArtifactError::BadName {
                reason: NameError::ParentDir,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("../../../../../xx.bin"), "{err}");
}

#[test]
fn names_off_the_allow_list_are_refused() {
    let err = refuse(|m| m.rename(A, "recall/embedded/a.bin"));
    assert!(
        matches!(&err, ArtifactError::BadName { name, reason: NameError::NotAllowed } if name == "recall/embedded/a.bin"),
        "{err:?}"
    );
}

#[test]
fn bytes_before_the_archive_are_refused() {
    // A self-extractor-style prefix with every offset adjusted.
    let err = refuse(|m| {
        let shift = 4096u64;
        for (_, cd, _) in m.entries.clone() {
            let n = le16(&m.bytes, cd + 28);
            let at = cd + 46 + n + 20;
            let v = le64(&m.bytes, at);
            set64(&mut m.bytes, at, v + shift);
        }
        let z = m.zip64_end;
        let cd_offset = le64(&m.bytes, z + 48);
        set64(&mut m.bytes, z + 48, cd_offset + shift);
        let locator = m.bytes.len() - 42;
        set64(&mut m.bytes, locator + 8, z as u64 + shift);
        let mut prefixed = vec![0x4d; shift as usize];
        prefixed.extend_from_slice(&m.bytes);
        m.bytes = prefixed;
    });
    assert!(
        matches!(err, ArtifactError::DataBeforeArchive { bytes: 4096 }),
        "{err:?}"
    );

    // A plain prefix, offsets not adjusted: still refused as malformed.
    let err = refuse(|m| m.bytes.splice(0..0, [0u8; 100]).for_each(drop));
    assert_eq!(err.kind(), ErrorKind::Malformed, "{err:?}");
}

#[test]
fn bytes_after_the_archive_are_refused() {
    let err = refuse(|m| m.bytes.extend_from_slice(b"junk"));
    assert!(
        matches!(err, ArtifactError::DataAfterArchive { bytes: 4 }),
        "{err:?}"
    );
}

#[test]
fn sizes_over_their_bound_are_refused() {
    let err = refuse(|m| {
        let (cd, local) = m.find(names::VERIFIER);
        let n = names::VERIFIER.len();
        let huge = 17u64 << 20;
        set64(&mut m.bytes, cd + 46 + n + 4, huge);
        set64(&mut m.bytes, cd + 46 + n + 12, huge);
        set64(&mut m.bytes, local + 30 + n + 4, huge);
        set64(&mut m.bytes, local + 30 + n + 12, huge);
    });
    assert!(
        matches!(&err, ArtifactError::TooLarge { name, bound, .. } if name == names::VERIFIER && *bound == 16 << 20),
        "{err:?}"
    );
}

#[test]
fn a_truncated_central_directory_is_refused() {
    // The end record claims a directory longer than what precedes it.
    let err = refuse(|m| {
        let z = m.zip64_end;
        let size = le64(&m.bytes, z + 40);
        set64(&mut m.bytes, z + 40, size + 100);
    });
    assert!(
        matches!(err, ArtifactError::TruncatedCentralDirectory { .. }),
        "{err:?}"
    );

    // More records claimed than the directory holds.
    let err = refuse(|m| {
        let z = m.zip64_end;
        let count = le64(&m.bytes, z + 24);
        set64(&mut m.bytes, z + 24, count + 1);
        set64(&mut m.bytes, z + 32, count + 1);
    });
    assert!(
        matches!(err, ArtifactError::TruncatedCentralDirectory { .. }),
        "{err:?}"
    );

    // The file cut short inside the central directory.
    let err = refuse(|m| {
        let cut = m.cd_offset + 30;
        m.bytes.truncate(cut);
    });
    assert!(matches!(err, ArtifactError::NotAnArchive { .. }), "{err:?}");
}

#[test]
fn lying_sizes_are_refused() {
    // Central and local headers agree, but the size runs into the next entry.
    let err = refuse(|m| {
        let (cd, local) = m.find(A);
        let n = A.len();
        let size = le64(&m.bytes, cd + 46 + n + 4) + 4096;
        for at in [
            cd + 46 + n + 4,
            cd + 46 + n + 12,
            local + 30 + n + 4,
            local + 30 + n + 12,
        ] {
            set64(&mut m.bytes, at, size);
        }
    });
    assert!(
        matches!(&err, ArtifactError::LyingSize { name, .. } if name == A),
        "{err:?}"
    );

    // Stored size and size disagree.
    let err = refuse(|m| {
        let (cd, _) = m.find(A);
        let at = cd + 46 + A.len() + 12;
        let size = le64(&m.bytes, at);
        set64(&mut m.bytes, at, size - 1);
    });
    assert!(
        matches!(&err, ArtifactError::LyingSize { name, .. } if name == A),
        "{err:?}"
    );

    // The local header says another size than the central directory.
    let err = refuse(|m| {
        let (_, local) = m.find(A);
        let at = local + 30 + A.len() + 4;
        let size = le64(&m.bytes, at);
        set64(&mut m.bytes, at, size - 1);
    });
    assert!(
        matches!(&err, ArtifactError::LocalHeaderMismatch { name, field: "size" } if name == A),
        "{err:?}"
    );
}

#[test]
fn misaligned_data_is_refused() {
    let err = refuse(|m| {
        let (_, local) = m.find(A);
        let n = A.len();
        let extra_len = le16(&m.bytes, local + 28);
        m.bytes[local + 28..local + 30].copy_from_slice(&(extra_len as u16 - 1).to_le_bytes());
        let pad_len = le16(&m.bytes, local + 30 + n + 22);
        m.bytes[local + 30 + n + 22..local + 30 + n + 24]
            .copy_from_slice(&(pad_len as u16 - 1).to_le_bytes());
    });
    assert!(
        matches!(&err, ArtifactError::Misaligned { name, .. } if name == A),
        "{err:?}"
    );
}

/// Builds an archive by hand: `entries` are written as given, the statement
/// lists `listed` (name, data) and may be edited before signing.
fn hand_built(
    dir: &Path,
    entries: &[(&str, &[u8])],
    listed: &[(&str, &[u8])],
    payload_type: &str,
    edit: impl FnOnce(&mut Statement),
) -> PathBuf {
    let path = dir.join("hand.kolm");
    let mut zip = ZipWriter::new(File::create(&path).unwrap());
    for (name, data) in entries {
        zip.add_entry(name, &mut Cursor::new(data), &NoProgress)
            .unwrap();
    }
    let records = listed
        .iter()
        .map(|(name, data)| {
            use sha2::Digest;
            let role = names::classify(name).unwrap();
            EntryRecord {
                name: (*name).into(),
                role,
                size: data.len() as u64,
                media_type: role.media_type().into(),
                sha256: hex::encode(sha2::Sha256::digest(data)),
            }
        })
        .collect();
    let mut statement = Statement::new(Predicate {
        format_version: 1,
        name: "hand".into(),
        version: "1".into(),
        created: "2026-01-01T00:00:00Z".into(),
        task: None,
        base: BaseModel {
            name: None,
            architecture: "llama".into(),
            quantization: "F16".into(),
            parameter_count: 1,
        },
        entries: records,
        k_score: None,
        teacher: None,
        compile: None,
        receipts: ReceiptsHead {
            length: 0,
            head: None,
        },
    });
    edit(&mut statement);
    let payload = serde_json::to_vec(&statement).unwrap();
    let envelope = Envelope::sign(payload_type, &payload, &[&test_key()]);
    let bytes = serde_json::to_vec(&envelope).unwrap();
    zip.add_entry(names::MANIFEST, &mut Cursor::new(bytes), &NoProgress)
        .unwrap();
    zip.finish().unwrap();
    path
}

const BASE_BYTES: &[u8] = b"GGUF pretend base";
const EVAL_BYTES: &[u8] = b"{\"input\":\"a\"}\n";

#[test]
fn a_hand_built_archive_verifies_when_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let entries = [(names::BASE, BASE_BYTES), (names::EVAL, EVAL_BYTES)];
    let path = hand_built(dir.path(), &entries, &entries, IN_TOTO_PAYLOAD_TYPE, |_| {});
    verify(&path, &trusting(&test_key()), &NoProgress).unwrap();
}

#[test]
fn entries_missing_from_the_archive_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = hand_built(
        dir.path(),
        &[(names::BASE, BASE_BYTES)],
        &[(names::BASE, BASE_BYTES), (names::EVAL, EVAL_BYTES)],
        IN_TOTO_PAYLOAD_TYPE,
        |_| {},
    );
    let err = open(&path, &trusting(&test_key())).unwrap_err();
    assert!(
        matches!(&err, ArtifactError::MissingEntry { name } if name == names::EVAL),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Integrity);
}

#[test]
fn entries_not_in_the_manifest_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = hand_built(
        dir.path(),
        &[(names::BASE, BASE_BYTES), (names::EVAL, EVAL_BYTES)],
        &[(names::BASE, BASE_BYTES)],
        IN_TOTO_PAYLOAD_TYPE,
        |_| {},
    );
    let err = open(&path, &trusting(&test_key())).unwrap_err();
    assert!(
        matches!(&err, ArtifactError::UnlistedEntry { name } if name == names::EVAL),
        "{err:?}"
    );
}

#[test]
fn attestations_may_stay_unlisted() {
    let dir = tempfile::tempdir().unwrap();
    let path = hand_built(
        dir.path(),
        &[
            (names::BASE, BASE_BYTES),
            ("kolm/attestations/slsa.json", b"{}"),
        ],
        &[(names::BASE, BASE_BYTES)],
        IN_TOTO_PAYLOAD_TYPE,
        |_| {},
    );
    let verified = verify(&path, &trusting(&test_key()), &NoProgress).unwrap();
    assert_eq!(
        verified.attestations(),
        ["kolm/attestations/slsa.json".to_owned()]
    );
}

#[test]
fn wrong_payload_types_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let entries = [(names::BASE, BASE_BYTES)];
    let path = hand_built(dir.path(), &entries, &entries, "text/plain", |_| {});
    let err = open(&path, &trusting(&test_key())).unwrap_err();
    assert!(
        matches!(&err, ArtifactError::WrongPayloadType { found, .. } if found == "text/plain"),
        "{err:?}"
    );

    let path = hand_built(dir.path(), &entries, &entries, IN_TOTO_PAYLOAD_TYPE, |s| {
        s.predicate_type = "https://slsa.dev/provenance/v1".into();
    });
    let err = open(&path, &trusting(&test_key())).unwrap_err();
    assert!(
        matches!(err, ArtifactError::WrongPayloadType { .. }),
        "{err:?}"
    );
}

#[test]
fn a_manifest_listing_wrong_sizes_or_subjects_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let entries = [(names::BASE, BASE_BYTES)];
    let path = hand_built(dir.path(), &entries, &entries, IN_TOTO_PAYLOAD_TYPE, |s| {
        s.predicate.entries[0].size += 1;
        *s = Statement::new(s.predicate.clone());
    });
    let err = open(&path, &trusting(&test_key())).unwrap_err();
    assert!(matches!(err, ArtifactError::SizeMismatch { .. }), "{err:?}");

    let path = hand_built(dir.path(), &entries, &entries, IN_TOTO_PAYLOAD_TYPE, |s| {
        s.subject.clear();
    });
    let err = open(&path, &trusting(&test_key())).unwrap_err();
    assert!(
        matches!(err, ArtifactError::InvalidManifest { .. }),
        "{err:?}"
    );
}

#[test]
fn a_payload_the_signature_does_not_cover_is_refused() {
    let err = refuse(|m| {
        // Change one base64 character of the payload to another one, so it
        // still decodes but the signature no longer covers it.
        let (_, local) = m.find(names::MANIFEST);
        let data = local + 30 + names::MANIFEST.len() + le16(&m.bytes, local + 28);
        let text = String::from_utf8_lossy(&m.bytes[data..]).into_owned();
        let at = data + text.find("\"payload\": \"").expect("pretty envelope") + 20;
        m.bytes[at] = if m.bytes[at] == b'A' { b'B' } else { b'A' };
    });
    assert!(matches!(err, ArtifactError::BadSignature { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::BadSignature);
}
