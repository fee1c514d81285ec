//! The RS-1 test vector in `docs/test-vectors/`: rebuilt from its fixed
//! inputs it must come out byte for byte the same, and it must verify under
//! the committed public key with the digests `docs/rs-1.md` lists. Set
//! `KOLM_REGENERATE_VECTORS=1` to rewrite it after a deliberate format change.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use kolm_artifact::names;
use kolm_artifact::{
    pack, verify, Component, NoProgress, PackSpec, ReceiptKey, SecretKey, TrustPolicy,
};

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/test-vectors")
}

/// The fixed, public signing key of the test vector: seed bytes 0, 1, .., 31.
fn vector_key() -> SecretKey {
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    SecretKey::from_seed("rs1-test-vector", seed).unwrap()
}

fn build(dir: &Path) -> PathBuf {
    let base = dir.join("base.gguf");
    let mut out = fs::File::create(&base).unwrap();
    kolm_artifact::gguf::write_minimal(
        &mut out,
        "llama",
        "rs1-vector",
        &[("w", &[32, 2], 0)],
        |_, len, w| w.write_all(&(0..len).map(|i| i as u8).collect::<Vec<u8>>()),
    )
    .unwrap();
    let verifier = dir.join("verifier.json");
    fs::write(&verifier, b"{\"kind\":\"exact\"}\n").unwrap();
    let mut spec = PackSpec::new("rs1-vector", "1.0.0", &base);
    spec.components
        .push(Component::new(names::VERIFIER, &verifier));
    spec.task = Some("the RS-1 test vector".into());
    spec.created = time::macros::datetime!(2026-01-01 00:00:00 UTC);
    spec.reproducible = true;
    let path = dir.join("rs1-vector.kolm");
    pack(
        spec,
        &[&vector_key()],
        &ReceiptKey([0x42; 32]),
        &path,
        &NoProgress,
    )
    .unwrap();
    path
}

#[test]
fn the_test_vector_is_reproducible_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let built = build(dir.path());
    let vectors = vector_dir();
    let committed = vectors.join("rs1-vector.kolm");
    if std::env::var_os("KOLM_REGENERATE_VECTORS").is_some() {
        fs::create_dir_all(&vectors).unwrap();
        fs::copy(&built, &committed).unwrap();
        fs::write(
            vectors.join("rs1-vector.pub"),
            vector_key().public().to_line(),
        )
        .unwrap();
        let verified = verify(
            &committed,
            &TrustPolicy {
                keys: vec![vector_key().key.verifying_key()],
                allow_untrusted: false,
            },
            &NoProgress,
        )
        .unwrap();
        let mut digests = format!("{}  rs1-vector.kolm\n", support::sha256_file(&committed));
        for e in verified.entries() {
            digests.push_str(&format!(
                "{}  {} @ {} ({} bytes)\n",
                e.record.sha256, e.record.name, e.data_offset, e.record.size
            ));
        }
        fs::write(vectors.join("rs1-vector.sha256"), digests).unwrap();
    }
    assert_eq!(
        support::read(&built),
        support::read(&committed),
        "the writer's output changed; if deliberate, regenerate with KOLM_REGENERATE_VECTORS=1 and update docs/rs-1.md"
    );
    let public = kolm_artifact::PublicKey::parse(
        &fs::read_to_string(vectors.join("rs1-vector.pub")).unwrap(),
    )
    .unwrap();
    let trust = TrustPolicy {
        keys: vec![public.key],
        allow_untrusted: false,
    };
    let verified = verify(&committed, &trust, &NoProgress).unwrap();
    let expected = fs::read_to_string(vectors.join("rs1-vector.sha256")).unwrap();
    let mut lines = expected.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("{}  rs1-vector.kolm", support::sha256_file(&committed))
    );
    for (e, line) in verified.entries().iter().zip(lines) {
        assert!(
            line.starts_with(&format!(
                "{}  {} @ {} ",
                e.record.sha256, e.record.name, e.data_offset
            )),
            "{line}"
        );
    }
}
