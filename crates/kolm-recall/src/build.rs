//! [`build_index`]: corpus → index file, incrementally. Each file is sniffed
//! and hashed; a file whose digest matches the index is left as it is
//! (not re-read, not re-embedded); changed and new files are extracted,
//! chunked and embedded in batches as their text streams in; files gone
//! from the corpus are removed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kolm_artifact::Progress;
use serde::{Deserialize, Serialize};

use crate::chunk::{chunk_segment, Chunk, ChunkOptions};
use crate::embed::{Embedder, MiniLm};
use crate::error::{RecallError, Result};
use crate::index::{Index, IndexMeta, Quantization, SCHEMA_VERSION};
use crate::ingest::{self, IngestOptions, ReadFailure, Skipped};
use crate::kind::Kind;

/// How to build an index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildOptions {
    /// The embedder's folder or zip (sentence-transformers layout); used by
    /// [`build_index`], which loads it.
    pub embedder: PathBuf,
    pub chunk: ChunkOptions,
    pub ingest: IngestOptions,
    pub quantization: Quantization,
}

/// What happened to an indexed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileStatus {
    /// New or changed: read, chunked and embedded.
    Indexed,
    /// Same digest as in the index: left as it was.
    Unchanged,
}

/// One indexed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    pub source: String,
    pub kind: Kind,
    pub digest: String,
    pub size: u64,
    pub chunks: u64,
    pub status: FileStatus,
}

/// What a build did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildReport {
    pub index: PathBuf,
    pub embedder: String,
    pub dimension: usize,
    pub quantization: Quantization,
    pub chunk: ChunkOptions,
    pub files: Vec<FileReport>,
    pub skipped: Vec<Skipped>,
    /// Files that were indexed before and are gone from the corpus.
    pub removed: Vec<String>,
    /// Chunks in the index after the build.
    pub chunks_total: u64,
    /// Chunks embedded by this build (0 when nothing changed).
    pub chunks_embedded: u64,
    pub seconds: f64,
}

impl BuildReport {
    /// The summary recorded in an artifact's manifest (`compile.recall`).
    pub fn manifest_json(&self) -> serde_json::Value {
        serde_json::json!({
            "embedder": self.embedder,
            "dimension": self.dimension,
            "quantization": self.quantization,
            "chunk": self.chunk,
            "files": self.files.len(),
            "chunks": self.chunks_total,
            "skipped": self.skipped,
        })
    }
}

/// Builds (or incrementally updates) the index at `out` from `corpus`,
/// loading the embedder named in `options`.
pub fn build_index(
    corpus: &Path,
    out: &Path,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildReport> {
    let embedder = MiniLm::load(&options.embedder)?;
    let report = build_index_with(corpus, out, &embedder, options, progress)?;
    let index = crate::sqlite::open_rw(out)?;
    index
        .execute(
            "INSERT INTO meta(key, value) VALUES ('note.embedder_source', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
            // Absolute, so `recall query INDEX` works from any folder.
            [std::fs::canonicalize(&options.embedder)
                .unwrap_or_else(|_| options.embedder.clone())
                .display()
                .to_string()],
        )
        .map_err(RecallError::sql(out))?;
    Ok(report)
}

/// Chunks embedded together.
const EMBED_BATCH: usize = 64;

/// [`build_index`] with an embedder already loaded.
pub fn build_index_with(
    corpus: &Path,
    out: &Path,
    embedder: &dyn Embedder,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildReport> {
    let started = Instant::now();
    options.chunk.check(embedder.max_tokens())?;
    let walk = ingest::walk(corpus)?;
    let meta = IndexMeta {
        schema: SCHEMA_VERSION,
        embedder: embedder.id().to_owned(),
        dimension: embedder.dimension(),
        quantization: options.quantization,
        chunk: options.chunk,
    };
    let (mut index, _reused) = Index::create_or_open(out, &meta)?;
    let mut skipped = walk.skipped;
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    let mut embedded = 0u64;
    let total: u64 = walk.files.iter().map(|f| f.size).sum();
    progress.start("indexing", total);
    for file in &walk.files {
        let sniffed = match ingest::sniff(file) {
            Ok(s) => s,
            Err(e) => {
                skipped.push(Skipped {
                    source: file.source.clone(),
                    kind: None,
                    reason: format!("cannot read: {e}"),
                });
                progress.advance(file.size);
                continue;
            }
        };
        if let Some(reason) = ingest::skip_reason(sniffed.kind, &options.ingest) {
            skipped.push(Skipped {
                source: file.source.clone(),
                kind: Some(sniffed.kind),
                reason,
            });
            progress.advance(file.size);
            continue;
        }
        if let Some((digest, chunks)) = index.file_digest(&file.source)? {
            if digest == sniffed.digest {
                seen.insert(file.source.clone());
                files.push(FileReport {
                    source: file.source.clone(),
                    kind: sniffed.kind,
                    digest,
                    size: sniffed.size,
                    chunks,
                    status: FileStatus::Unchanged,
                });
                progress.advance(file.size);
                continue;
            }
        }
        let file_id =
            index.begin_file(&file.source, sniffed.kind, &sniffed.digest, sniffed.size)?;
        let mut pending: Vec<Chunk> = Vec::new();
        let mut count = 0u64;
        let flush = |index: &mut Index, pending: &mut Vec<Chunk>, count: &mut u64| -> Result<()> {
            if pending.is_empty() {
                return Ok(());
            }
            let texts: Vec<&str> = pending.iter().map(|c| c.text.as_str()).collect();
            let vectors = embedder.embed(&texts)?;
            index.add_chunks(file_id, *count, pending, &vectors)?;
            *count += pending.len() as u64;
            pending.clear();
            Ok(())
        };
        let result = ingest::segments(file, sniffed.kind, &options.ingest, &mut |segment| {
            pending.extend(chunk_segment(
                &segment,
                sniffed.kind,
                embedder,
                options.chunk,
            )?);
            while pending.len() >= EMBED_BATCH {
                let rest = pending.split_off(EMBED_BATCH);
                flush(&mut index, &mut pending, &mut count)?;
                pending = rest;
            }
            Ok(())
        });
        let result = result
            .and_then(|()| flush(&mut index, &mut pending, &mut count).map_err(ReadFailure::Fatal));
        match result {
            Ok(()) if count == 0 => {
                index.rollback_file()?;
                skipped.push(Skipped {
                    source: file.source.clone(),
                    kind: Some(sniffed.kind),
                    reason: "no text in the file".into(),
                });
            }
            Ok(()) => {
                index.commit_file(file_id, count)?;
                seen.insert(file.source.clone());
                embedded += count;
                files.push(FileReport {
                    source: file.source.clone(),
                    kind: sniffed.kind,
                    digest: sniffed.digest,
                    size: sniffed.size,
                    chunks: count,
                    status: FileStatus::Indexed,
                });
            }
            Err(ReadFailure::Skip(reason)) => {
                index.rollback_file()?;
                skipped.push(Skipped {
                    source: file.source.clone(),
                    kind: Some(sniffed.kind),
                    reason,
                });
            }
            Err(ReadFailure::Fatal(e)) => {
                let _ = index.rollback_file();
                return Err(e);
            }
        }
        progress.advance(file.size);
    }
    progress.finish();
    // A skipped file that was indexed before (now empty or unreadable) goes.
    let removed = index.remove_missing(&seen)?;
    skipped.sort_by(|a, b| a.source.cmp(&b.source));
    index.set_skipped(&skipped)?;
    if embedded > 0 || !removed.is_empty() {
        index.optimize()?;
    }
    let chunks_total = index.stats()?.chunks;
    Ok(BuildReport {
        index: out.to_path_buf(),
        embedder: meta.embedder,
        dimension: meta.dimension,
        quantization: meta.quantization,
        chunk: meta.chunk,
        files,
        skipped,
        removed,
        chunks_total,
        chunks_embedded: embedded,
        seconds: started.elapsed().as_secs_f64(),
    })
}
