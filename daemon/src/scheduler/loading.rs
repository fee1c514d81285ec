//! Loading an artifact: its base (shared by digest), its context with the
//! adapter and recipe pack, its recall index and embedder, its chat
//! template and serving defaults. The memory check before each step is the scheduler's
//! ([`Scheduler::make_room`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use kolm_artifact::names;
use kolm_artifact::recipes::RecipePack;
use kolm_compile::verifier::Verifier;
use kolm_runtime::{
    BaseHandle, BaseInfo, BaseOptions, ChatTemplate, ContextHandle, ContextSpec, DraftConfig,
    DraftPolicy,
};
use kolm_store::ArtifactRecord;

use super::{Scheduler, SchedulerError};
use crate::config::DraftMode;

/// One loaded artifact: its context on a shared base.
#[derive(Debug)]
pub struct LoadedModel {
    pub reference: String,
    pub name: String,
    pub base_digest: String,
    pub context: ContextHandle,
    pub base: Arc<SharedBase>,
    pub template: Option<ChatTemplate>,
    /// Why the model's own template could not be used, if it has one.
    pub template_error: Option<String>,
    pub context_bytes: u64,
    /// The recall embedder's weights, held in memory beside the context.
    pub recall_bytes: u64,
    pub slots: u32,
    /// The artifact's recall index and embedder, if it has them.
    pub recall: Option<Arc<RecallState>>,
    /// How a compiled artifact was evaluated, and so how its chats are
    /// served by default ([`crate::serving`]).
    pub serving: Option<kolm_artifact::serving::Serving>,
    /// The artifact's verifier, which checks chat answers at run time
    /// ([`crate::verify`]).
    pub verifier: Option<Arc<Verifier>>,
    /// The artifact's recipe pack (drafting and the drift log's coverage
    /// figure).
    pub recipes: Option<Arc<RecipePack>>,
    /// What counts as drift for a compiled artifact (`crate::drift`).
    pub drift: Option<Arc<kolm_artifact::drift::DriftThresholds>>,
}

/// An artifact's recall: the index with its embedder, used under the lock
/// on blocking threads only, and its dimension (readable without the lock).
#[derive(Debug)]
pub struct RecallState {
    pub dimension: usize,
    pub recall: Mutex<kolm_recall::Recall>,
}

impl RecallState {
    pub(super) fn lock(&self) -> MutexGuard<'_, kolm_recall::Recall> {
        self.recall.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LoadedModel {
    /// Facts about the base model.
    pub fn info(&self) -> &BaseInfo {
        self.base.handle().info()
    }

    /// Memory this artifact holds beyond its (shared) base: the KV cache
    /// and the recall embedder.
    pub fn own_bytes(&self) -> u64 {
        self.context_bytes + self.recall_bytes
    }
}

/// A base shared by artifacts. Dropping it stops the engine's worker on a
/// plain thread, so async tasks never block on the join.
#[derive(Debug)]
pub struct SharedBase {
    handle: Option<BaseHandle>,
    pub gpu_layers: u32,
}

impl SharedBase {
    pub fn handle(&self) -> &BaseHandle {
        self.handle.as_ref().expect("present until drop")
    }
}

impl Drop for SharedBase {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = std::thread::Builder::new()
                .name("kolm-unload".into())
                .spawn(move || drop(h));
        }
    }
}

impl Scheduler {
    /// Loads the base (if needed) and attaches a context for `record`; the
    /// caller holds the load lock.
    pub(super) async fn load_record(
        &self,
        record: &ArtifactRecord,
    ) -> Result<Arc<LoadedModel>, SchedulerError> {
        let reference = record.reference();
        let base_entry = record
            .entry(names::BASE)
            .ok_or_else(|| SchedulerError::NoBase(reference.clone()))?;
        let digest = base_entry.sha256.clone();
        let gpu_layers = self.gpu_layers();
        let existing = self.state().residents.base(&digest).map(|b| b.base.clone());
        let base = match existing {
            Some(b) => b,
            None => {
                let store = self.inner.home.store()?;
                let d = digest.clone();
                let blob = blocking(move || store.open_blob(&d)).await?;
                self.make_room(&reference, blob.size, None, gpu_layers > 0)?;
                let runtime = self.inner.runtime;
                let path = blob.path.clone();
                let handle =
                    blocking(move || runtime.load_base(&path, &BaseOptions { gpu_layers })).await?;
                let weight_bytes = handle.info().weight_bytes.max(blob.size);
                let base = Arc::new(SharedBase {
                    handle: Some(handle),
                    gpu_layers,
                });
                self.state()
                    .residents
                    .add_base(digest.clone(), base.clone(), weight_bytes);
                base
            }
        };
        let result = self.attach(record, &reference, &digest, base).await;
        if result.is_err() {
            // A base loaded for this artifact alone goes again.
            self.state().residents.drop_unused_base(&digest);
        }
        result
    }

    async fn attach(
        &self,
        record: &ArtifactRecord,
        reference: &str,
        digest: &str,
        base: Arc<SharedBase>,
    ) -> Result<Arc<LoadedModel>, SchedulerError> {
        let c = &self.inner.config;
        let info = base.handle().info().clone();
        let cells = u64::from(c.context_per_slot) * u64::from(c.slots);
        let context_bytes = info.kv_cache_bytes(cells);
        // The embedder's weights are read into memory whole (the index
        // stays on disk, in the page cache).
        let recall_bytes: u64 = if record.entry(names::RECALL_INDEX).is_some() {
            record
                .statement
                .predicate
                .entries
                .iter()
                .filter(|e| e.name.starts_with(names::EMBEDDER_DIR))
                .map(|e| e.size)
                .sum()
        } else {
            0
        };
        self.make_room(
            reference,
            context_bytes + recall_bytes,
            Some(digest),
            base.gpu_layers > 0,
        )?;
        let adapter: Option<PathBuf> = match record.entry(names::ADAPTER) {
            Some(entry) => {
                let store = self.inner.home.store()?;
                let d = entry.sha256.clone();
                let blob = blocking(move || store.open_blob(&d)).await?;
                Some(blob.path)
            }
            None => None,
        };
        let recipes = self.open_recipes(record, reference).await?;
        let draft = DraftConfig {
            enabled: c.draft != DraftMode::Off,
            policy: if c.draft == DraftMode::Eager {
                DraftPolicy::Eager
            } else {
                DraftPolicy::Cost
            },
            max: c.draft_max as usize,
            recipes: recipes.clone().filter(|_| c.draft != DraftMode::Off),
        };
        let spec = ContextSpec {
            adapter,
            draft,
            slots: c.slots,
            context_per_slot: c.context_per_slot,
            batch: c.batch.max(c.slots),
            threads: i32::try_from(c.threads).unwrap_or(i32::MAX),
            max_queue: c.max_queue,
            ..ContextSpec::default()
        };
        let b = base.clone();
        let context = blocking(move || b.handle().attach(spec)).await?;
        let recall = self.open_recall(record, reference).await?;
        let (template, template_error) = match &info.chat_template {
            Some(src) => match ChatTemplate::new(src, &info.bos, &info.eos) {
                Ok(t) => (Some(t), None),
                Err(e) => {
                    tracing::warn!(model = reference, "the chat template is unusable: {e}");
                    (None, Some(e.to_string()))
                }
            },
            None => (None, None),
        };
        let serving = match kolm_artifact::serving::Serving::from_compile(
            record.statement.predicate.compile.as_ref(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    model = reference,
                    "serving with the daemon's defaults, not as evaluated: {e}"
                );
                None
            }
        };
        let drift = match kolm_artifact::drift::DriftThresholds::from_compile(
            record.statement.predicate.compile.as_ref(),
        ) {
            Ok(t) => t.map(Arc::new),
            Err(e) => {
                tracing::warn!(model = reference, "drift is not logged for it: {e}");
                None
            }
        };
        Ok(Arc::new(LoadedModel {
            reference: reference.to_owned(),
            name: record.name.clone(),
            base_digest: digest.to_owned(),
            context,
            base,
            template,
            template_error,
            context_bytes,
            recall_bytes,
            slots: c.slots,
            recall,
            serving,
            verifier: self.open_verifier(record, reference).await?,
            recipes,
            drift,
        }))
    }

    /// The artifact's verifier, read from its verified blob; none when the
    /// artifact has no verifier.
    async fn open_verifier(
        &self,
        record: &ArtifactRecord,
        reference: &str,
    ) -> Result<Option<Arc<Verifier>>, SchedulerError> {
        let model = reference.to_owned();
        self.read_entry(record, names::VERIFIER, move |bytes| {
            Verifier::from_json(bytes).map_err(|source| SchedulerError::Verifier { model, source })
        })
        .await
    }

    /// The artifact's recipe pack, read whole from its verified blob; none
    /// when the artifact has no pack.
    async fn open_recipes(
        &self,
        record: &ArtifactRecord,
        reference: &str,
    ) -> Result<Option<Arc<RecipePack>>, SchedulerError> {
        let model = reference.to_owned();
        self.read_entry(record, names::RECIPES, move |bytes| {
            RecipePack::from_bytes(bytes)
                .map_err(|source| SchedulerError::Recipes { model, source })
        })
        .await
    }

    /// The entry `name` of the artifact, read whole from its verified blob
    /// off the async threads and parsed by `parse`; none when the artifact
    /// has no such entry.
    async fn read_entry<T: Send + 'static>(
        &self,
        record: &ArtifactRecord,
        name: &str,
        parse: impl FnOnce(&[u8]) -> Result<T, SchedulerError> + Send + 'static,
    ) -> Result<Option<Arc<T>>, SchedulerError> {
        let Some(entry) = record.entry(name) else {
            return Ok(None);
        };
        let store = self.inner.home.store()?;
        let digest = entry.sha256.clone();
        let value = blocking(move || -> Result<_, SchedulerError> {
            let blob = store.open_blob(&digest)?;
            let bytes = std::fs::read(&blob.path).map_err(|e| {
                SchedulerError::Internal(format!("cannot read {}: {e}", blob.path.display()))
            })?;
            parse(&bytes)
        })
        .await?;
        Ok(Some(Arc::new(value)))
    }

    /// Opens the artifact's recall index (read-only, in place: the blob is
    /// verified by `open_blob`) and loads its embedder from its blobs.
    async fn open_recall(
        &self,
        record: &ArtifactRecord,
        reference: &str,
    ) -> Result<Option<Arc<RecallState>>, SchedulerError> {
        let Some(index) = record.entry(names::RECALL_INDEX) else {
            return Ok(None);
        };
        let index_digest = index.sha256.clone();
        let embedder: Vec<(String, String)> = record
            .statement
            .predicate
            .entries
            .iter()
            .filter_map(|e| {
                e.name
                    .strip_prefix(names::EMBEDDER_DIR)
                    .map(|n| (n.to_owned(), e.sha256.clone()))
            })
            .collect();
        let store = self.inner.home.store()?;
        let model = reference.to_owned();
        let recall = blocking(move || -> Result<_, SchedulerError> {
            let wrap = |source| SchedulerError::Recall {
                model: model.clone(),
                source,
            };
            let blob = store.open_blob(&index_digest)?;
            let mut files = std::collections::BTreeMap::new();
            for (name, digest) in embedder {
                let b = store.open_blob(&digest)?;
                let data = std::fs::read(&b.path).map_err(|e| {
                    wrap(kolm_recall::RecallError::Io {
                        path: b.path.clone(),
                        source: e,
                    })
                })?;
                files.insert(name, data);
            }
            let files = kolm_recall::EmbedderFiles::from_map(files).map_err(wrap)?;
            let embedder = kolm_recall::MiniLm::from_files(&files).map_err(wrap)?;
            let index = kolm_recall::Index::open(&blob.path).map_err(wrap)?;
            kolm_recall::Recall::new(index, Box::new(embedder)).map_err(wrap)
        })
        .await?;
        Ok(Some(Arc::new(RecallState {
            dimension: recall.embedder().dimension(),
            recall: Mutex::new(recall),
        })))
    }
}

/// Runs blocking work (store, file and engine calls) off the async
/// threads; a task that panicked is an [`SchedulerError::Internal`].
pub async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, SchedulerError>
where
    T: Send + 'static,
    E: Into<SchedulerError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => Err(SchedulerError::Internal(format!(
            "a blocking task failed: {e}"
        ))),
    }
}
