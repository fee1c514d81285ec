//! kolm-recall: the recall index of a corpus, built at compile time and
//! queried locally at run time.
//!
//! - [`ingest`] walks a corpus and turns files into text by their kind
//!   ([`kind`], [`extract`]), reporting what it skips;
//! - [`chunk`] cuts text into token-aware chunks;
//! - [`embed`] has the [`Embedder`] trait and all-MiniLM-L6-v2 on candle;
//! - [`index`] stores chunks, vectors (sqlite-vec) and BM25 (FTS5) in one
//!   sqlite file and retrieves by vector, BM25 or both fused;
//! - [`build`] ties them into [`build_index`]; [`Recall`] answers queries;
//! - [`prompt`] is the template that grounds a request in the hits;
//! - [`artifact`] reads an index and embedder out of a verified artifact.

pub mod artifact;
pub mod build;
pub mod chunk;
pub mod embed;
pub mod error;
pub mod extract;
pub mod index;
pub mod ingest;
pub mod kind;
pub mod prompt;
mod sqlite;

use std::path::Path;

pub use build::{build_index, build_index_with, BuildOptions, BuildReport, FileReport, FileStatus};
pub use chunk::{Chunk, ChunkOptions};
pub use embed::{Embedder, EmbedderFiles, MiniLm, Modality};
pub use error::{RecallError, Result};
pub use index::{Hit, Index, IndexMeta, Mode, Quantization};
pub use ingest::{IngestOptions, Skipped};
pub use kind::Kind;

/// An index and the embedder that reads its queries.
pub struct Recall {
    index: Index,
    embedder: Box<dyn Embedder>,
    /// Keeps a temporary copy of the index (from an artifact) alive.
    _tmp: Option<tempfile::TempPath>,
}

impl std::fmt::Debug for Recall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recall")
            .field("index", &self.index)
            .field("embedder", &self.embedder.id())
            .finish()
    }
}

impl Recall {
    /// Pairs an index with an embedder, checking they agree.
    pub fn new(index: Index, embedder: Box<dyn Embedder>) -> Result<Self> {
        Self::with_tmp(index, embedder, None)
    }

    pub(crate) fn with_tmp(
        index: Index,
        embedder: Box<dyn Embedder>,
        tmp: Option<tempfile::TempPath>,
    ) -> Result<Self> {
        let meta = index.meta();
        if meta.embedder != embedder.id() || meta.dimension != embedder.dimension() {
            return Err(RecallError::EmbedderMismatch {
                index: meta.embedder.clone(),
                index_dim: meta.dimension,
                given: embedder.id().to_owned(),
                given_dim: embedder.dimension(),
            });
        }
        Ok(Recall {
            index,
            embedder,
            _tmp: tmp,
        })
    }

    /// Opens the index file at `path` with the embedder at `embedder` (a
    /// folder or zip).
    pub fn open(path: &Path, embedder: &Path) -> Result<Self> {
        let index = Index::open(path)?;
        let embedder = MiniLm::load(embedder)?;
        Self::new(index, Box::new(embedder))
    }

    /// The top `k` chunks for `question`, best first.
    pub fn query(&self, question: &str, k: usize, mode: Mode) -> Result<Vec<Hit>> {
        let vector = if mode == Mode::Bm25 {
            Vec::new()
        } else {
            self.embedder.embed(&[question])?.pop().unwrap_or_default()
        };
        self.index.search(question, &vector, k, mode)
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The embedder.
    pub fn embedder(&self) -> &dyn Embedder {
        self.embedder.as_ref()
    }
}
