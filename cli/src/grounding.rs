//! The compiler's grounding over `kolm-recall` (`kolmctl compile --corpus`):
//! the corpus is indexed into the work dir with the embedder the artifact
//! will carry, and every prompt of the compile is grounded in the chunks
//! recalled for its last user message by the template kolmd applies at run
//! time (`kolm_recall::prompt`), so the student learns on what it is served.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use kolm_artifact::names;
use kolm_artifact::receipts::DigestRef;
use kolm_compile::example::Message;
use kolm_compile::pipeline::{CompileProgress, Grounding, IndexBuilt, StageError};
use kolm_recall::{BuildOptions, Embedder, EmbedderFiles, Index, MiniLm, Mode, Recall};

/// The corpus of a compile and, once built, its index.
pub struct CorpusRecall {
    corpus: PathBuf,
    work_dir: PathBuf,
    embedder: PathBuf,
    k: usize,
    recall: Mutex<Option<Recall>>,
}

impl std::fmt::Debug for CorpusRecall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorpusRecall")
            .field("corpus", &self.corpus)
            .field("embedder", &self.embedder)
            .field("k", &self.k)
            .finish()
    }
}

impl CorpusRecall {
    /// Checks the corpus and the embedder before any paid work; the index
    /// is built by [`Grounding::build`] into `work_dir`.
    pub fn new(corpus: &Path, embedder: &Path, k: usize, work_dir: &Path) -> anyhow::Result<Self> {
        if !corpus.exists() {
            anyhow::bail!(
                "the corpus {} does not exist: give a folder of documents or one file",
                corpus.display()
            );
        }
        if !embedder.exists() {
            anyhow::bail!(
                "the embedder {} does not exist: pass --embedder (a sentence-transformers folder or zip) or set KOLM_EMBEDDER",
                embedder.display()
            );
        }
        let max = kolm_recall::prompt::MAX_K;
        if !(1..=max).contains(&k) {
            anyhow::bail!("--recall-k must be in 1..={max}, got {k}");
        }
        Ok(CorpusRecall {
            corpus: corpus.to_owned(),
            work_dir: work_dir.to_owned(),
            embedder: embedder.to_owned(),
            k,
            recall: Mutex::new(None),
        })
    }

    fn build_index(&self, progress: &dyn CompileProgress) -> anyhow::Result<IndexBuilt> {
        let files = EmbedderFiles::load(&self.embedder)
            .with_context(|| format!("cannot read the embedder {}", self.embedder.display()))?;
        let model = MiniLm::from_files(&files)
            .with_context(|| format!("cannot load the embedder {}", self.embedder.display()))?;
        let index = self.work_dir.join("recall.sqlite");
        let options = BuildOptions {
            embedder: self.embedder.clone(),
            ..BuildOptions::default()
        };
        let report = kolm_recall::build_index_with(
            &self.corpus,
            &index,
            &model,
            &options,
            &kolm_artifact::NoProgress,
        )
        .with_context(|| format!("cannot index the corpus {}", self.corpus.display()))?;
        if report.chunks_total == 0 {
            let skipped: Vec<String> = report
                .skipped
                .iter()
                .map(|s| format!("{}: {}", s.source, s.reason))
                .collect();
            anyhow::bail!(
                "the corpus {} has no text to index{}: give documents kolm can read (text, Markdown, code, HTML, PDF, JSON, CSV)",
                self.corpus.display(),
                if skipped.is_empty() {
                    String::from(" (it is empty)")
                } else {
                    format!(" (skipped {})", skipped.join("; "))
                }
            );
        }
        for s in &report.skipped {
            progress.note(&format!("corpus: skipped {}: {}", s.source, s.reason));
        }
        progress.note(&format!(
            "indexed {} file(s) of {} into {} chunk(s) with {}",
            report.files.len(),
            self.corpus.display(),
            report.chunks_total,
            model.id()
        ));
        let staged = self.work_dir.join("embedder");
        let embedder_files = files
            .write_to(&staged)?
            .into_iter()
            .map(|p| {
                let name = p
                    .file_name()
                    .expect("written files have names")
                    .to_string_lossy()
                    .into_owned();
                (format!("{}{name}", names::EMBEDDER_DIR), p)
            })
            .collect();
        let sources = report
            .files
            .iter()
            .map(|f| DigestRef {
                name: f.source.clone(),
                digest: format!("sha256:{}", f.digest),
            })
            .collect();
        let mut summary = report.manifest_json();
        summary["k"] = serde_json::json!(self.k);
        let recall = Recall::new(Index::open(&index)?, Box::new(model))?;
        *self.recall.lock().expect("recall lock") = Some(recall);
        Ok(IndexBuilt {
            index,
            embedder_files,
            sources,
            summary,
        })
    }
}

impl Grounding for CorpusRecall {
    fn build(&self, progress: &dyn CompileProgress) -> Result<IndexBuilt, StageError> {
        Ok(self.build_index(progress)?)
    }

    fn ground(&self, mut messages: Vec<Message>) -> Result<Vec<Message>, StageError> {
        let Some(question) = messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone())
        else {
            return Ok(messages);
        };
        let guard = self.recall.lock().expect("recall lock");
        let recall = guard
            .as_ref()
            .ok_or("the corpus is grounded in before it was indexed")?;
        let hits = recall.query(&question, self.k, Mode::Hybrid)?;
        kolm_recall::prompt::ground(
            &mut messages,
            &hits,
            |m| &m.role,
            |m| &mut m.content,
            |content| Message::new("system", content),
        );
        Ok(messages)
    }

    fn best_similarity(&self, messages: &[Message]) -> Result<Option<f64>, StageError> {
        let Some(question) = messages.iter().rev().find(|m| m.role == "user") else {
            return Ok(None);
        };
        let guard = self.recall.lock().expect("recall lock");
        let recall = guard
            .as_ref()
            .ok_or("the corpus is searched before it was indexed")?;
        let hits = recall.query(&question.content, self.k, Mode::Hybrid)?;
        Ok(kolm_recall::prompt::best_similarity(&hits))
    }
}
