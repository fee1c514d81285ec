//! Recall from a verified artifact: `recall/index.sqlite` is copied to a
//! temporary file (sqlite needs a file) and `recall/embedder/*` is read into
//! memory, both through `VerifiedArtifact::copy_entry`, which re-hashes
//! what it copies, so nothing unverified is ever used.

use std::collections::BTreeMap;
use std::io::Write;

use kolm_artifact::names::{EMBEDDER_DIR, RECALL_INDEX};
use kolm_artifact::verify::VerifiedArtifact;

use crate::embed::{EmbedderFiles, MiniLm};
use crate::error::{RecallError, Result};
use crate::index::Index;
use crate::Recall;

/// Whether the artifact carries a recall index.
pub fn has_recall(artifact: &VerifiedArtifact) -> bool {
    artifact.entry(RECALL_INDEX).is_some()
}

/// The embedder's files packed in the artifact.
pub fn embedder_files(artifact: &VerifiedArtifact) -> Result<EmbedderFiles> {
    let mut files = BTreeMap::new();
    for e in artifact.entries() {
        if let Some(name) = e.record.name.strip_prefix(EMBEDDER_DIR) {
            files.insert(name.to_owned(), artifact.read_entry(&e.record.name)?);
        }
    }
    if files.is_empty() {
        return Err(RecallError::NotInArtifact("embedder (recall/embedder/)"));
    }
    EmbedderFiles::from_map(files)
}

/// Opens the artifact's index with its embedder.
pub fn open(artifact: &VerifiedArtifact) -> Result<Recall> {
    if !has_recall(artifact) {
        return Err(RecallError::NotInArtifact(
            "recall index (recall/index.sqlite)",
        ));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix("kolm-recall-")
        .suffix(".sqlite")
        .tempfile()
        .map_err(RecallError::io(std::env::temp_dir()))?;
    artifact.copy_entry(RECALL_INDEX, tmp.as_file_mut())?;
    tmp.as_file_mut()
        .flush()
        .map_err(RecallError::io(tmp.path()))?;
    let tmp = tmp.into_temp_path();
    let index = Index::open(&tmp)?;
    let embedder = MiniLm::from_files(&embedder_files(artifact)?)?;
    Recall::with_tmp(index, Box::new(embedder), Some(tmp))
}
