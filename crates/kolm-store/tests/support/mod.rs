//! Shared helpers for the store tests: tiny GGUF files, fixed keys, and
//! artifacts packed into a temp directory.
#![allow(dead_code)]

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kolm_artifact::gguf;
use kolm_artifact::{pack, Component, NoProgress, PackSpec, ReceiptKey, SecretKey, TrustPolicy};

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

pub fn trusted() -> TrustPolicy {
    trusting(&test_key())
}

/// Packs `name:version` on `base` with extra entries (`(entry name,
/// content)`), signed by the test key, into `dir/<name>-<version>.kolm`.
pub fn artifact(
    dir: &Path,
    name: &str,
    version: &str,
    base: &Path,
    extras: &[(&str, &[u8])],
) -> PathBuf {
    let mut spec = PackSpec::new(name, version, base);
    for (i, (entry, content)) in extras.iter().enumerate() {
        let src = dir.join(format!("{name}-{version}-extra{i}"));
        fs::write(&src, content).unwrap();
        spec.components.push(Component::new(entry, src));
    }
    let out = dir.join(format!("{name}-{version}.kolm"));
    pack(spec, &[&test_key()], &receipt_key(), &out, &NoProgress).unwrap();
    out
}

/// An artifact with a verifier whose content depends on `name` and `version`.
pub fn with_verifier(dir: &Path, name: &str, version: &str, base: &Path) -> PathBuf {
    let verifier = format!(r#"{{"kind":"label","labels":["{name}","{version}"]}}"#);
    artifact(
        dir,
        name,
        version,
        base,
        &[("verifier/verifier.json", verifier.as_bytes())],
    )
}

/// Flips one byte of `path` in the middle, first making it writable, and
/// puts its modification time back (like `touch -r`).
pub fn flip_byte(path: &Path) {
    let meta = fs::metadata(path).unwrap();
    let mtime = meta.modified().unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let at = meta.len() / 2;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x01;
    file.write_all_at(&b, at).unwrap();
    file.set_modified(mtime).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o444)).unwrap();
}

/// The names of the files in `dir` (none if it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

pub fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}
