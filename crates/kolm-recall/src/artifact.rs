//! Recall from a verified artifact: `recall/index.sqlite` is copied to a
//! temporary file (sqlite needs a file; the copy is re-hashed against the
//! manifest while it is written) and `recall/embedder/*` is read into memory
//! (re-hashed too), so nothing unverified is ever used.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use kolm_artifact::names::{EMBEDDER_DIR, RECALL_INDEX};
use kolm_artifact::verify::{VerifiedArtifact, VerifiedEntry};
use sha2::{Digest, Sha256};

use crate::embed::{EmbedderFiles, MiniLm};
use crate::error::{RecallError, Result};
use crate::index::Index;
use crate::Recall;

/// Whether the artifact carries a recall index.
pub fn has_recall(artifact: &VerifiedArtifact) -> bool {
    artifact.entry(RECALL_INDEX).is_some()
}

/// Copies entry `e` of the artifact into `out`, checking its SHA-256.
fn copy_entry(artifact: &VerifiedArtifact, e: &VerifiedEntry, out: &mut dyn Write) -> Result<()> {
    let path = artifact.path();
    let mut f = File::open(path).map_err(RecallError::io(path))?;
    f.seek(SeekFrom::Start(e.data_offset))
        .map_err(RecallError::io(path))?;
    let mut left = e.record.size;
    let mut buf = vec![0u8; 1 << 20];
    let mut sha = Sha256::new();
    while left > 0 {
        let n = (left as usize).min(buf.len());
        f.read_exact(&mut buf[..n]).map_err(RecallError::io(path))?;
        sha.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(RecallError::io(path))?;
        left -= n as u64;
    }
    if hex::encode(sha.finalize()) != e.record.sha256 {
        return Err(RecallError::BadIndex {
            path: path.to_path_buf(),
            detail: format!("{} changed since it was verified", e.record.name),
        });
    }
    Ok(())
}

/// The embedder's files packed in the artifact.
pub fn embedder_files(artifact: &VerifiedArtifact) -> Result<EmbedderFiles> {
    let mut files = BTreeMap::new();
    for e in artifact.entries() {
        if let Some(name) = e.record.name.strip_prefix(EMBEDDER_DIR) {
            let mut data = Vec::with_capacity(e.record.size as usize);
            copy_entry(artifact, e, &mut data)?;
            files.insert(name.to_owned(), data);
        }
    }
    if files.is_empty() {
        return Err(RecallError::NotInArtifact("embedder (recall/embedder/)"));
    }
    EmbedderFiles::from_map(files)
}

/// Opens the artifact's index with its embedder.
pub fn open(artifact: &VerifiedArtifact) -> Result<Recall> {
    let entry = artifact
        .entry(RECALL_INDEX)
        .ok_or(RecallError::NotInArtifact(
            "recall index (recall/index.sqlite)",
        ))?;
    let mut tmp = tempfile::Builder::new()
        .prefix("kolm-recall-")
        .suffix(".sqlite")
        .tempfile()
        .map_err(RecallError::io(std::env::temp_dir()))?;
    copy_entry(artifact, entry, tmp.as_file_mut())?;
    tmp.as_file_mut()
        .flush()
        .map_err(RecallError::io(tmp.path()))?;
    let tmp = tmp.into_temp_path();
    let index = Index::open(&tmp)?;
    let embedder = MiniLm::from_files(&embedder_files(artifact)?)?;
    Recall::with_tmp(index, Box::new(embedder), Some(tmp))
}
