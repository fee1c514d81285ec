//! Shared helpers for the artifact tests: fixture paths, tiny GGUF files,
//! a fixed test key, and a multi-entry artifact to mutate.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use kolm_artifact::gguf;
use kolm_artifact::names;
use kolm_artifact::{pack, Component, NoProgress, PackSpec, ReceiptKey, SecretKey, TrustPolicy};

/// Where `scripts/fixtures.sh` puts the model files.
pub fn fixtures_dir() -> PathBuf {
    kolm_fixtures::dir()
}

/// The real SmolLM2-135M-Instruct Q4_1 GGUF.
pub fn smollm2() -> PathBuf {
    let path = fixtures_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run scripts/fixtures.sh first",
        path.display()
    );
    path
}

/// A small valid GGUF whose tensor holds `seed`-dependent bytes.
pub fn tiny_gguf(dir: &Path, file: &str, seed: u8) -> PathBuf {
    let path = dir.join(file);
    let mut out = File::create(&path).unwrap();
    gguf::write_minimal(
        &mut out,
        "llama",
        "tiny",
        &[("w", &[64, 40], 1)],
        |_, len, w| {
            let data: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect();
            w.write_all(&data)
        },
    )
    .unwrap();
    path
}

pub fn write_file(dir: &Path, file: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, content).unwrap();
    path
}

pub fn test_key() -> SecretKey {
    SecretKey::from_seed("test", [1; 32]).unwrap()
}

pub fn other_key() -> SecretKey {
    SecretKey::from_seed("other", [2; 32]).unwrap()
}

pub fn receipt_key() -> ReceiptKey {
    ReceiptKey([3; 32])
}

pub fn trusting(key: &SecretKey) -> TrustPolicy {
    TrustPolicy {
        keys: vec![key.key.verifying_key()],
        allow_untrusted: false,
    }
}

/// Packs an artifact with a base, two embedder files of equal name length,
/// a verifier and an eval pack; returns its path.
pub fn full_artifact(dir: &Path) -> PathBuf {
    let mut spec = PackSpec::new("tiny", "1.0.0", tiny_gguf(dir, "base.gguf", 7));
    spec.components.push(Component::new(
        "recall/embedder/a.bin",
        write_file(dir, "a.bin", &[0xaa; 5000]),
    ));
    spec.components.push(Component::new(
        "recall/embedder/b.bin",
        write_file(dir, "b.bin", &[0xbb; 100]),
    ));
    spec.components.push(Component::new(
        names::VERIFIER,
        write_file(
            dir,
            "verifier.json",
            br#"{"kind":"label","labels":["yes","no"]}"#,
        ),
    ));
    spec.components.push(Component::new(
        names::EVAL,
        write_file(
            dir,
            "heldout.jsonl",
            b"{\"input\":\"x\",\"output\":\"yes\"}\n",
        ),
    ));
    spec.task = Some("answer yes or no".into());
    let out = dir.join("full.kolm");
    pack(spec, &[&test_key()], &receipt_key(), &out, &NoProgress).unwrap();
    out
}

pub fn read(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(path).unwrap().read_to_end(&mut v).unwrap();
    v
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    io::copy(&mut File::open(path).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
