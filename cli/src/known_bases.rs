//! The bases a compile tries when no `--base` is given: the distinct bases of
//! the installed artifacts (by the store's `NAME:VERSION`) and the GGUF files
//! in the fixtures directory that `scripts/fixtures.sh` fills
//! (`$KOLM_FIXTURES`, else `$XDG_CACHE_HOME/kolm/fixtures`, else
//! `~/.cache/kolm/fixtures`). A file whose digest equals an installed base is
//! listed once.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kolm_artifact::names;
use kolm_store::Home;
use sha2::{Digest, Sha256};

/// Every base this machine knows, as specs that `--base` accepts.
pub fn known_bases(home: &Home) -> anyhow::Result<Vec<String>> {
    let mut digests = HashSet::new();
    let mut sizes = HashSet::new();
    let mut specs = Vec::new();
    let records = match home.store() {
        Ok(store) => store
            .list()
            .context("cannot list the installed artifacts")?,
        Err(_) => Vec::new(),
    };
    for record in records {
        if let Some(base) = record.entry(names::BASE) {
            if digests.insert(base.sha256.clone()) {
                sizes.insert(base.size);
                specs.push(record.reference());
            }
        }
    }
    if let Some(dir) = fixtures_dir() {
        for path in gguf_files(&dir) {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            // Hash only a file that could be an installed base.
            if sizes.contains(&size) && digests.contains(&sha256_of(&path)?) {
                continue;
            }
            specs.push(path.to_string_lossy().into_owned());
        }
    }
    Ok(specs)
}

/// Where `scripts/fixtures.sh` puts the model files.
pub fn fixtures_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KOLM_FIXTURES").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("kolm/fixtures"))
}

/// The `.gguf` files in `dir` that start with the GGUF magic, by name.
fn gguf_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf") && has_gguf_magic(p))
        .collect();
    files.sort();
    files
}

fn has_gguf_magic(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|_| &magic == b"GGUF")
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}
