//! Pack, open and verify on real and synthetic models; every entry, flipped
//! one byte at a time, makes verification fail naming that entry.

mod support;

use std::fs;
use std::os::unix::fs::FileExt;

use kolm_artifact::names;
use kolm_artifact::{
    open, pack, verify, ArtifactError, ErrorKind, NoProgress, PackSpec, SignerStatus, TrustPolicy,
};
use support::*;

#[test]
fn real_smollm2_round_trips_and_reads_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let base = smollm2();
    let out = dir.path().join("smollm2.kolm");
    let spec = PackSpec::new("smollm2", "0.1.2", &base);
    let report = pack(spec, &[&test_key()], &receipt_key(), &out, &NoProgress).unwrap();

    let p = &report.statement.predicate;
    assert_eq!(p.base.architecture, "llama");
    assert_eq!(p.base.quantization, "Q4_1");
    assert!(
        p.base.parameter_count > 100_000_000,
        "{}",
        p.base.parameter_count
    );

    let verified = verify(&out, &trusting(&test_key()), &NoProgress).unwrap();
    assert_eq!(verified.statement(), &report.statement);
    assert_eq!(
        verified.signers(),
        &SignerStatus::Trusted(vec![test_key().public().keyid()])
    );
    let entry = verified.entry(names::BASE).unwrap();
    assert_eq!(entry.record.sha256, sha256_file(&base));
    assert_eq!(entry.data_offset % 4096, 0);

    // The GGUF can be read in place: its magic sits at the entry's offset.
    let file = fs::File::open(&out).unwrap();
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, entry.data_offset).unwrap();
    assert_eq!(&magic, b"GGUF");
    assert_eq!(verified.receipts().len(), 1);
    assert_eq!(verified.receipts().check_tags(&receipt_key()), vec![true]);
}

#[test]
fn every_entry_flipped_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = full_artifact(dir.path());
    let verified = verify(&good, &trusting(&test_key()), &NoProgress).unwrap();
    let layout = kolm_artifact::container::read_layout(&fs::File::open(&good).unwrap()).unwrap();
    assert_eq!(layout.entries.len(), 7, "{:?}", layout.entries);
    for entry in &layout.entries {
        let mut bytes = read(&good);
        let at = (entry.data_offset + entry.size / 2) as usize;
        bytes[at] ^= 0x01;
        let bad = dir.path().join("flipped.kolm");
        fs::write(&bad, &bytes).unwrap();
        let err = verify(&bad, &trusting(&test_key()), &NoProgress).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&entry.name),
            "flipping `{}` gave an error not naming it: {message}",
            entry.name
        );
        if entry.name == names::MANIFEST {
            assert!(matches!(
                err,
                ArtifactError::BadSignature { .. } | ArtifactError::InvalidEnvelope { .. }
            ));
        } else {
            assert!(
                matches!(&err, ArtifactError::DigestMismatch { name, .. } if name == &entry.name),
                "{err:?}"
            );
            assert_eq!(err.kind(), ErrorKind::Integrity);
        }
    }
    assert_eq!(verified.entries().len(), 6);
}

#[test]
fn untrusted_signers_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let good = full_artifact(dir.path());
    let err = open(&good, &trusting(&other_key())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Untrusted);
    assert!(err.to_string().contains(&test_key().public().keyid()));

    let integrity_only = TrustPolicy {
        keys: vec![],
        allow_untrusted: true,
    };
    let verified = verify(&good, &integrity_only, &NoProgress).unwrap();
    assert!(
        matches!(verified.signers(), SignerStatus::Unchecked(ids) if ids == &[test_key().public().keyid()])
    );
}

#[test]
fn several_signatures_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = PackSpec::new("two", "1", tiny_gguf(dir.path(), "b.gguf", 1));
    let out = dir.path().join("two.kolm");
    pack(
        spec,
        &[&test_key(), &other_key()],
        &receipt_key(),
        &out,
        &NoProgress,
    )
    .unwrap();
    let verified = verify(&out, &trusting(&other_key()), &NoProgress).unwrap();
    assert_eq!(
        verified.signers(),
        &SignerStatus::Trusted(vec![other_key().public().keyid()])
    );
}

#[test]
fn packing_is_reproducible_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_gguf(dir.path(), "b.gguf", 3);
    let created = time::macros::datetime!(2026-01-02 03:04:05 UTC);
    let mut outputs = Vec::new();
    for i in 0..2 {
        let mut spec = PackSpec::new("repro", "1.0.0", &base);
        spec.created = created;
        spec.reproducible = true;
        let out = dir.path().join(format!("r{i}.kolm"));
        pack(spec, &[&test_key()], &receipt_key(), &out, &NoProgress).unwrap();
        outputs.push(read(&out));
    }
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn bad_pack_inputs_are_refused_clearly_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let not_gguf = write_file(dir.path(), "x.gguf", b"this is not a model");
    let out = dir.path().join("x.kolm");
    let err = pack(
        PackSpec::new("x", "1", &not_gguf),
        &[&test_key()],
        &receipt_key(),
        &out,
        &NoProgress,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("x.gguf"), "{err}");

    let base = tiny_gguf(dir.path(), "b.gguf", 1);
    let err = pack(
        PackSpec::new("Bad Name", "1", &base),
        &[&test_key()],
        &receipt_key(),
        &out,
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("Bad Name"), "{err}");

    let missing = dir.path().join("missing.gguf");
    let err = pack(
        PackSpec::new("x", "1", &missing),
        &[&test_key()],
        &receipt_key(),
        &out,
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.gguf"), "{err}");

    let mut spec = PackSpec::new("x", "1", &base);
    spec.components
        .push(kolm_artifact::Component::new("model/extra.bin", &base));
    let err = pack(spec, &[&test_key()], &receipt_key(), &out, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("model/extra.bin"), "{err}");

    let nowhere = dir.path().join("no/such/dir/x.kolm");
    let err = pack(
        PackSpec::new("x", "1", &base),
        &[&test_key()],
        &receipt_key(),
        &nowhere,
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");

    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!out.exists());
    assert!(
        names.iter().all(|n| !n.to_string_lossy().contains(".tmp")),
        "temporary files left behind: {names:?}"
    );
}

/// Bytes leave a verified artifact only through `copy_entry`, which hashes
/// them again: a file changed after `verify` (one byte of the base flipped
/// in place, or the file cut short) is refused, naming the entry.
#[test]
fn copy_entry_rehashes_and_refuses_a_file_changed_since_verify() {
    let dir = tempfile::tempdir().unwrap();
    let good = full_artifact(dir.path());
    let path = dir.path().join("changing.kolm");
    fs::copy(&good, &path).unwrap();
    let verified = verify(&path, &trusting(&test_key()), &NoProgress).unwrap();
    let entry = verified.entry(names::BASE).unwrap().clone();

    let bytes = verified.read_entry(names::BASE).unwrap();
    assert_eq!(bytes.len() as u64, entry.record.size);
    assert_eq!(sha256_bytes(&bytes), entry.record.sha256);
    assert!(matches!(
        verified.read_entry("no/such/entry"),
        Err(ArtifactError::NoSuchEntry { .. })
    ));

    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    let at = entry.data_offset + entry.record.size / 2;
    let mut byte = [0u8; 1];
    fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut byte, at)
        .unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
    let err = verified.read_entry(names::BASE).unwrap_err();
    assert!(
        matches!(err, ArtifactError::ChangedSinceVerified { ref name } if name == names::BASE),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Integrity);

    file.set_len(entry.data_offset + 1).unwrap();
    let err = verified.read_entry(names::BASE).unwrap_err();
    assert!(
        matches!(err, ArtifactError::ChangedSinceVerified { .. }),
        "{err}"
    );
}
