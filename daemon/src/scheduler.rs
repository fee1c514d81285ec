//! The scheduler: which artifacts are loaded, on which base, for how long.
//!
//! - An artifact is loaded on its first request ([`Scheduler::acquire`]) or
//!   explicitly ([`Scheduler::load`], optionally pinned).
//! - Artifacts share bases: one [`BaseHandle`] per base blob digest, counted
//!   by the artifacts attached to it; the base unloads with its last one.
//! - Before loading, memory is checked: the base's weights (its blob size)
//!   if the base is not loaded yet, then the KV cache of the new context
//!   (`context × slots` positions, sized from the loaded model's shape)
//!   plus, for an artifact with a recall index, its embedder's weights.
//!   Against the configured `memory_limit`, free RAM minus the reserve, and
//!   free VRAM when layers go to a GPU. Idle unpinned artifacts are evicted,
//!   least recently used first, until it fits; if it cannot,
//!   [`SchedulerError::Busy`] (models in use hold the memory: try later) or
//!   [`SchedulerError::TooLarge`] (it does not fit even on an empty machine).
//! - `keep_alive`: each request sets the artifact's keep-alive (its own or
//!   the default); `0` unloads it when its last request ends, `Forever`
//!   keeps it; a background task ([`Scheduler::run_expiry`]) unloads expired
//!   ones. Pinned artifacts are never evicted nor expired.
//!
//! - An artifact with a recall index (`recall/index.sqlite` and
//!   `recall/embedder/*`) gets a [`kolm_recall::Recall`] beside its context:
//!   the index is opened read-only in place from its verified blob and the
//!   embedder is loaded from its blobs; [`Lease::recall`] queries it and
//!   [`Lease::embed`] uses its embedder instead of the base model.
//!
//! Every method is what a control API needs: the HTTP server calls
//! `acquire`, a gRPC service maps Load, Unload, ListLoaded, Generate and
//! Embed onto `load`, `unload`, `list_loaded` and a [`Lease`]'s methods.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use kolm_artifact::names;
use kolm_runtime::{
    BaseHandle, BaseInfo, BaseOptions, ChatMessage, ChatTemplate, ContextHandle, ContextSpec,
    Embeddings, GenerateRequest, GenerationStream, Runtime, RuntimeError,
};
use kolm_store::{ArtifactRecord, Home, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, GpuLayers, KeepAlive};
use crate::hardware::Hardware;

/// What the scheduler needs from the configuration.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub slots: u32,
    pub context_per_slot: u32,
    pub batch: u32,
    pub threads: u32,
    pub max_queue: usize,
    pub keep_alive: KeepAlive,
    pub gpu_layers: GpuLayers,
    pub memory_limit: Option<u64>,
    pub memory_reserve: u64,
}

impl From<&Config> for SchedulerConfig {
    fn from(c: &Config) -> Self {
        SchedulerConfig {
            slots: c.slots,
            context_per_slot: c.context,
            batch: c.batch,
            threads: c.threads,
            max_queue: c.queue as usize,
            keep_alive: c.keep_alive,
            gpu_layers: c.gpu_layers,
            memory_limit: c.memory_limit,
            memory_reserve: c.memory_reserve,
        }
    }
}

/// Why the scheduler refused.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("the model `{0}` does not exist: install it with `kolmctl install`")]
    ModelNotFound(String),
    #[error("the artifact {0} has no base model")]
    NoBase(String),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(
        "not enough memory to load {model}: it needs {need} bytes and only {available} are \
         free; the rest is held by models serving requests, retry later"
    )]
    Busy {
        model: String,
        need: u64,
        available: u64,
    },
    #[error(
        "{model} does not fit: it needs {need} bytes and at most {available} are available \
         with every other model unloaded (lower `context` or `slots`, or raise `memory_limit`)"
    )]
    TooLarge {
        model: String,
        need: u64,
        available: u64,
    },
    #[error("kolmd is shutting down")]
    ShuttingDown,
    #[error("the recall index of {model} cannot be used: {source}")]
    Recall {
        model: String,
        #[source]
        source: kolm_recall::RecallError,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Options of an explicit load.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// `None`: the default keep-alive.
    pub keep_alive: Option<KeepAlive>,
    /// Never evict nor expire it.
    pub pin: bool,
}

/// What [`Scheduler::list_loaded`] reports per artifact.
#[derive(Clone, Debug)]
pub struct LoadedInfo {
    /// `name:version`.
    pub model: String,
    /// SHA-256 of the base blob; artifacts sharing it share the weights.
    pub base: String,
    /// Bytes of the base's weights (counted once per base).
    pub base_bytes: u64,
    /// Bytes of this artifact's KV cache.
    pub context_bytes: u64,
    /// Bytes of its recall embedder's weights (0 without an index).
    pub recall_bytes: u64,
    /// Where its layers run: `cpu`, or `gpu:N` with N offloaded layers.
    pub device: String,
    pub slots: u32,
    pub context_per_slot: u32,
    pub pinned: bool,
    /// Seconds; negative: forever.
    pub keep_alive_seconds: f64,
    /// Seconds since its last request ended (0 while in use).
    pub idle_seconds: f64,
    /// Unix time (seconds) when it unloads, if it will.
    pub expires_at: Option<f64>,
    pub requests_served: u64,
    pub in_use: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
}

impl LoadedInfo {
    /// Memory it holds beyond its (shared) base: KV cache and embedder.
    pub fn own_bytes(&self) -> u64 {
        self.context_bytes + self.recall_bytes
    }
}

/// What [`Scheduler::unload`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unloaded {
    /// The artifacts it unloaded, as `name:version`.
    pub unloaded: Vec<String>,
    /// Their own memory plus each base that no loaded artifact uses now.
    pub freed_bytes: u64,
}

/// Whether `reference` (`NAME` or `NAME:VERSION`) names the loaded
/// artifact `model` (`name:version`).
fn names(reference: &str, model: &str) -> bool {
    model == reference
        || (!reference.contains(':') && model.split_once(':').map(|(n, _)| n) == Some(reference))
}

/// A memory snapshot for metrics.
#[derive(Clone, Debug, Default)]
pub struct MemoryReport {
    /// (base digest, weight bytes, artifacts attached).
    pub bases: Vec<(String, u64, usize)>,
    pub total_bytes: u64,
}

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
}

/// An artifact's recall: the index with its embedder, used under the lock
/// on blocking threads only, and its dimension (readable without the lock).
#[derive(Debug)]
pub struct RecallState {
    pub dimension: usize,
    pub recall: Mutex<kolm_recall::Recall>,
}

impl RecallState {
    fn lock(&self) -> MutexGuard<'_, kolm_recall::Recall> {
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

struct BaseEntry {
    base: Arc<SharedBase>,
    weight_bytes: u64,
    /// Artifacts attached.
    refs: usize,
}

struct ModelEntry {
    model: Arc<LoadedModel>,
    pinned: bool,
    keep_alive: KeepAlive,
    last_used: Instant,
    in_use: usize,
    served: u64,
}

impl ModelEntry {
    fn expires_at(&self) -> Option<Instant> {
        if self.pinned || self.in_use > 0 {
            return None;
        }
        match self.keep_alive {
            KeepAlive::Forever => None,
            KeepAlive::Duration(d) => Some(self.last_used + d),
        }
    }
}

#[derive(Default)]
struct State {
    models: HashMap<String, ModelEntry>,
    bases: HashMap<String, BaseEntry>,
    shutting_down: bool,
}

impl State {
    fn used_bytes(&self) -> u64 {
        self.bases.values().map(|b| b.weight_bytes).sum::<u64>()
            + self
                .models
                .values()
                .map(|m| m.model.own_bytes())
                .sum::<u64>()
    }
}

struct Inner {
    home: Home,
    config: SchedulerConfig,
    hardware: Hardware,
    runtime: Runtime,
    state: Mutex<State>,
    /// Loads run one at a time (memory checks must not race).
    load_lock: tokio::sync::Mutex<()>,
    loading: AtomicUsize,
    changed: Notify,
}

/// The scheduler; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The right to use a loaded artifact: while a lease lives the artifact is
/// "in use" (never evicted or expired). Dropping it records the request as
/// served and may unload the artifact (`keep_alive` 0).
#[derive(Debug)]
pub struct Lease {
    model: Arc<LoadedModel>,
    scheduler: Scheduler,
}

impl Lease {
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// Renders chat messages with the model's template.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, RuntimeError> {
        match &self.model.template {
            Some(t) => t.render(messages),
            None => Err(match &self.model.template_error {
                Some(e) => RuntimeError::Template(e.clone()),
                None => RuntimeError::NoChatTemplate,
            }),
        }
    }

    /// Queues a generation (503-worthy `QueueFull` at once past the bound).
    /// Keep the lease alive as long as the stream.
    pub fn generate(&self, request: GenerateRequest) -> Result<GenerationStream, RuntimeError> {
        self.model.context.generate(request)
    }

    /// Length of the vectors [`embed`](Self::embed) returns.
    pub fn embedding_size(&self) -> usize {
        match &self.model.recall {
            Some(r) => r.dimension,
            None => self.model.info().embedding_size as usize,
        }
    }

    /// The top `k` chunks of the artifact's recall index for `question`
    /// (`None` when it has no index), off the async threads.
    pub async fn recall(
        &self,
        question: String,
        k: usize,
    ) -> Option<Result<Vec<kolm_recall::Hit>, kolm_recall::RecallError>> {
        let recall = self.model.recall.clone()?;
        let result = tokio::task::spawn_blocking(move || {
            recall.lock().query(&question, k, kolm_recall::Mode::Hybrid)
        })
        .await;
        Some(result.unwrap_or_else(|e| {
            Err(kolm_recall::RecallError::Embedder(format!(
                "the query task failed: {e}"
            )))
        }))
    }

    /// Grounds a chat in the artifact's recall index (the template of
    /// `docs/recall.md`, `kolm_recall::prompt`): the last user message is
    /// the query and the top `k` chunks join the system message. Returns
    /// the hits, or `None` when the artifact has no index or the chat no
    /// user message (then `messages` are unchanged).
    pub async fn ground(
        &self,
        messages: &mut Vec<ChatMessage>,
        k: usize,
    ) -> Option<Result<Vec<kolm_recall::Hit>, kolm_recall::RecallError>> {
        let question = messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone())?;
        let hits = match self.recall(question, k).await? {
            Ok(hits) => hits,
            Err(e) => return Some(Err(e)),
        };
        kolm_recall::prompt::ground(
            messages,
            &hits,
            |m| &m.role,
            |m| &mut m.content,
            |content| ChatMessage {
                role: "system".into(),
                content,
            },
        );
        Some(Ok(hits))
    }

    /// Embeds texts, off the async threads: with the artifact's recall
    /// embedder when it has one, else with the base model.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embeddings, RuntimeError> {
        if let Some(recall) = self.model.recall.clone() {
            return tokio::task::spawn_blocking(move || {
                let r = recall.lock();
                let e = r.embedder();
                let mut tokens = 0usize;
                for t in &texts {
                    // The model's two special tokens, truncated like the input.
                    tokens += (e.token_spans(t).map_or(0, |s| s.len()) + 2).min(e.max_tokens());
                }
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let vectors = e
                    .embed(&refs)
                    .map_err(|e| RuntimeError::Embed(e.to_string()))?;
                Ok(Embeddings {
                    vectors,
                    prompt_tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
                })
            })
            .await
            .map_err(|e| RuntimeError::Embed(e.to_string()))?;
        }
        let base = self.model.base.clone();
        tokio::task::spawn_blocking(move || base.handle().embed(texts))
            .await
            .map_err(|e| RuntimeError::Embed(e.to_string()))?
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.scheduler.release(&self.model);
    }
}

/// Counts a load in progress (for `/health`).
struct Loading<'a>(&'a AtomicUsize);

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Scheduler {
    pub fn new(home: Home, config: SchedulerConfig, hardware: Hardware) -> Scheduler {
        Scheduler {
            inner: Arc::new(Inner {
                home,
                config,
                hardware,
                runtime: Runtime,
                state: Mutex::new(State::default()),
                load_lock: tokio::sync::Mutex::new(()),
                loading: AtomicUsize::new(0),
                changed: Notify::new(),
            }),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.inner.config
    }

    pub fn hardware(&self) -> &Hardware {
        &self.inner.hardware
    }

    pub fn home(&self) -> &Home {
        &self.inner.home
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads in progress.
    pub fn loading(&self) -> usize {
        self.inner.loading.load(Ordering::SeqCst)
    }

    /// The installed artifacts.
    pub fn installed(&self) -> Result<Vec<ArtifactRecord>, SchedulerError> {
        Ok(self.inner.home.store()?.list()?)
    }

    /// The installed artifact `reference` names (`name` or `name:version`).
    pub fn resolve(&self, reference: &str) -> Result<ArtifactRecord, SchedulerError> {
        let store = self.inner.home.store()?;
        match store.get(reference) {
            Ok(r) => Ok(r),
            Err(StoreError::NotInstalled { .. } | StoreError::InvalidReference { .. }) => {
                Err(SchedulerError::ModelNotFound(reference.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A lease on `reference`, loading it first if needed. `keep_alive`
    /// (else the default) becomes the artifact's keep-alive.
    pub async fn acquire(
        &self,
        reference: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Lease, SchedulerError> {
        let record = {
            let this = self.clone();
            let r = reference.to_owned();
            tokio::task::spawn_blocking(move || this.resolve(&r))
                .await
                .map_err(|e| SchedulerError::Internal(e.to_string()))??
        };
        let keep_alive = keep_alive.unwrap_or(self.inner.config.keep_alive);
        let key = record.reference();
        if let Some(lease) = self.try_lease(&key, keep_alive)? {
            return Ok(lease);
        }
        let _serial = self.inner.load_lock.lock().await;
        if let Some(lease) = self.try_lease(&key, keep_alive)? {
            return Ok(lease);
        }
        self.inner.loading.fetch_add(1, Ordering::SeqCst);
        let _loading = Loading(&self.inner.loading);
        let model = self.load_record(&record).await?;
        let mut state = self.state();
        if state.shutting_down {
            return Err(SchedulerError::ShuttingDown);
        }
        match state.bases.get_mut(&model.base_digest) {
            Some(b) => b.refs += 1,
            None => {
                return Err(SchedulerError::Internal(
                    "the base was unloaded while loading".into(),
                ))
            }
        }
        state.models.insert(
            key,
            ModelEntry {
                model: model.clone(),
                pinned: false,
                keep_alive,
                last_used: Instant::now(),
                in_use: 1,
                served: 0,
            },
        );
        drop(state);
        self.inner.changed.notify_one();
        tracing::info!(model = %model.reference, base = %short(&model.base_digest), "loaded");
        Ok(Lease {
            model,
            scheduler: self.clone(),
        })
    }

    fn try_lease(&self, key: &str, keep_alive: KeepAlive) -> Result<Option<Lease>, SchedulerError> {
        let mut state = self.state();
        if state.shutting_down {
            return Err(SchedulerError::ShuttingDown);
        }
        Ok(state.models.get_mut(key).map(|e| {
            e.in_use += 1;
            e.keep_alive = keep_alive;
            Lease {
                model: e.model.clone(),
                scheduler: self.clone(),
            }
        }))
    }

    /// Loads `reference` (pinning it if asked) and returns what it reports.
    pub async fn load(
        &self,
        reference: &str,
        options: LoadOptions,
    ) -> Result<LoadedInfo, SchedulerError> {
        let lease = self.acquire(reference, options.keep_alive).await?;
        let key = lease.model.reference.clone();
        {
            let mut state = self.state();
            if let Some(e) = state.models.get_mut(&key) {
                e.pinned = options.pin;
            }
        }
        drop(lease);
        self.list_loaded()
            .into_iter()
            .find(|i| i.model == key)
            .ok_or_else(|| SchedulerError::Internal(format!("{key} unloaded while loading")))
    }

    /// Unloads what `reference` names, pinned or not: `NAME:VERSION` that
    /// version, `NAME` every loaded version of it. Requests in flight
    /// finish first; new ones load it again. Nothing loaded is not an
    /// error, a reference to nothing installed is.
    pub fn unload(&self, reference: &str) -> Result<Unloaded, SchedulerError> {
        let reference = reference.trim();
        let targets: Vec<LoadedInfo> = self
            .list_loaded()
            .into_iter()
            .filter(|m| names(reference, &m.model))
            .collect();
        if targets.is_empty() {
            self.resolve(reference)?;
            return Ok(Unloaded::default());
        }
        let mut state = self.state();
        let mut out = Unloaded::default();
        let mut bases: Vec<(&str, u64)> = Vec::new();
        for m in &targets {
            if Self::remove(&mut state, &m.model, None) {
                out.unloaded.push(m.model.clone());
                out.freed_bytes += m.own_bytes();
                if !bases.iter().any(|(d, _)| *d == m.base) {
                    bases.push((&m.base, m.base_bytes));
                }
            }
        }
        // A base whose last artifact went is freed too.
        out.freed_bytes += bases
            .iter()
            .filter(|(digest, _)| !state.bases.contains_key(*digest))
            .map(|(_, bytes)| bytes)
            .sum::<u64>();
        drop(state);
        if !out.unloaded.is_empty() {
            self.inner.changed.notify_one();
        }
        Ok(out)
    }

    /// Removes a model and, with its last artifact, its base (unless it is
    /// `keep_base`, about to get a new artifact).
    fn remove(state: &mut State, key: &str, keep_base: Option<&str>) -> bool {
        let Some(entry) = state.models.remove(key) else {
            return false;
        };
        let digest = &entry.model.base_digest;
        if let Some(base) = state.bases.get_mut(digest) {
            base.refs = base.refs.saturating_sub(1);
            if base.refs == 0 && keep_base != Some(digest.as_str()) {
                state.bases.remove(digest);
            }
        }
        tracing::info!(model = key, "unloaded");
        true
    }

    fn release(&self, model: &Arc<LoadedModel>) {
        let mut state = self.state();
        let key = &model.reference;
        let Some(entry) = state.models.get_mut(key) else {
            return;
        };
        if !Arc::ptr_eq(&entry.model, model) {
            return;
        }
        entry.in_use = entry.in_use.saturating_sub(1);
        entry.served += 1;
        entry.last_used = Instant::now();
        let unload_now = entry.in_use == 0
            && !entry.pinned
            && entry.keep_alive == KeepAlive::Duration(Duration::ZERO);
        if unload_now {
            Self::remove(&mut state, key, None);
        }
        drop(state);
        self.inner.changed.notify_one();
    }

    /// Unloads every artifact whose keep-alive has passed; returns the next
    /// deadline.
    pub fn expire(&self, now: Instant) -> Option<Instant> {
        let mut state = self.state();
        let due: Vec<String> = state
            .models
            .iter()
            .filter(|(_, e)| e.expires_at().is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &due {
            tracing::info!(model = %key, "keep_alive expired");
            Self::remove(&mut state, key, None);
        }
        state
            .models
            .values()
            .filter_map(ModelEntry::expires_at)
            .min()
    }

    /// The background task that unloads expired artifacts until `cancel`.
    pub async fn run_expiry(self, cancel: CancellationToken) {
        loop {
            let next = self.expire(Instant::now());
            let wait = next
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.changed.notified() => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Refuses new leases and unloads everything (in-flight requests keep
    /// their model until they end).
    pub fn shutdown(&self) {
        let mut state = self.state();
        state.shutting_down = true;
        state.models.clear();
        state.bases.clear();
    }

    /// What is loaded, most recently used first.
    pub fn list_loaded(&self) -> Vec<LoadedInfo> {
        let state = self.state();
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut out: Vec<(Instant, LoadedInfo)> = state
            .models
            .values()
            .map(|e| {
                let m = &e.model;
                let base = state.bases.get(&m.base_digest);
                let gpu_layers = m.base.gpu_layers;
                let queued = m.context.in_flight().saturating_sub(m.slots as usize);
                let info = LoadedInfo {
                    model: m.reference.clone(),
                    base: m.base_digest.clone(),
                    base_bytes: base.map_or(0, |b| b.weight_bytes),
                    context_bytes: m.context_bytes,
                    recall_bytes: m.recall_bytes,
                    device: if gpu_layers == 0 {
                        "cpu".into()
                    } else {
                        format!("gpu:{gpu_layers}")
                    },
                    slots: m.slots,
                    context_per_slot: m.context.context_per_slot(),
                    pinned: e.pinned,
                    keep_alive_seconds: e.keep_alive.as_seconds(),
                    idle_seconds: if e.in_use > 0 {
                        0.0
                    } else {
                        (now - e.last_used).as_secs_f64()
                    },
                    expires_at: e
                        .expires_at()
                        .map(|t| (wall + t.saturating_duration_since(now)).as_secs_f64()),
                    requests_served: e.served,
                    in_use: e.in_use,
                    queued,
                };
                (e.last_used, info)
            })
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.0));
        out.into_iter().map(|(_, i)| i).collect()
    }

    /// Memory held by loaded bases and contexts.
    pub fn memory(&self) -> MemoryReport {
        let state = self.state();
        let mut bases: Vec<_> = state
            .bases
            .iter()
            .map(|(d, b)| (d.clone(), b.weight_bytes, b.refs))
            .collect();
        bases.sort();
        MemoryReport {
            bases,
            total_bytes: state.used_bytes(),
        }
    }

    fn gpu_layers(&self) -> u32 {
        match self.inner.config.gpu_layers {
            GpuLayers::Fixed(n) => n,
            GpuLayers::Auto => {
                if self.inner.runtime.supports_gpu_offload()
                    && self.inner.hardware.free_vram().is_some()
                {
                    // llama.cpp clamps to the model's layer count.
                    999
                } else {
                    0
                }
            }
        }
    }

    /// Loads the base (if needed) and attaches a context for `record`; the
    /// caller holds the load lock.
    async fn load_record(
        &self,
        record: &ArtifactRecord,
    ) -> Result<Arc<LoadedModel>, SchedulerError> {
        let reference = record.reference();
        let base_entry = record
            .entry(names::BASE)
            .ok_or_else(|| SchedulerError::NoBase(reference.clone()))?;
        let digest = base_entry.sha256.clone();
        let gpu_layers = self.gpu_layers();
        let existing = self.state().bases.get(&digest).map(|b| b.base.clone());
        let base = match existing {
            Some(b) => b,
            None => {
                let store = self.inner.home.store()?;
                let d = digest.clone();
                let blob = tokio::task::spawn_blocking(move || store.open_blob(&d))
                    .await
                    .map_err(|e| SchedulerError::Internal(e.to_string()))??;
                self.make_room(&reference, blob.size, None, gpu_layers > 0)?;
                let runtime = self.inner.runtime;
                let path = blob.path.clone();
                let handle = tokio::task::spawn_blocking(move || {
                    runtime.load_base(&path, &BaseOptions { gpu_layers })
                })
                .await
                .map_err(|e| SchedulerError::Internal(e.to_string()))??;
                let weight_bytes = handle.info().weight_bytes.max(blob.size);
                let base = Arc::new(SharedBase {
                    handle: Some(handle),
                    gpu_layers,
                });
                self.state().bases.insert(
                    digest.clone(),
                    BaseEntry {
                        base: base.clone(),
                        weight_bytes,
                        refs: 0,
                    },
                );
                base
            }
        };
        let result = self.attach(record, &reference, &digest, base).await;
        if result.is_err() {
            // A base loaded for this artifact alone goes again.
            let mut state = self.state();
            if state.bases.get(&digest).is_some_and(|b| b.refs == 0) {
                state.bases.remove(&digest);
            }
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
                let blob = tokio::task::spawn_blocking(move || store.open_blob(&d))
                    .await
                    .map_err(|e| SchedulerError::Internal(e.to_string()))??;
                Some(blob.path)
            }
            None => None,
        };
        let spec = ContextSpec {
            adapter,
            slots: c.slots,
            context_per_slot: c.context_per_slot,
            batch: c.batch.max(c.slots),
            threads: i32::try_from(c.threads).unwrap_or(i32::MAX),
            max_queue: c.max_queue,
            ..ContextSpec::default()
        };
        let b = base.clone();
        let context = tokio::task::spawn_blocking(move || b.handle().attach(spec))
            .await
            .map_err(|e| SchedulerError::Internal(e.to_string()))??;
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
        }))
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
        let recall = tokio::task::spawn_blocking(move || -> Result<_, SchedulerError> {
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
        .await
        .map_err(|e| SchedulerError::Internal(e.to_string()))??;
        Ok(Some(Arc::new(RecallState {
            dimension: recall.embedder().dimension(),
            recall: Mutex::new(recall),
        })))
    }

    /// Evicts idle unpinned artifacts, least recently used first, until
    /// `need` more bytes fit. `keep_base` is never unloaded (the caller is
    /// about to attach to it).
    fn make_room(
        &self,
        model: &str,
        need: u64,
        keep_base: Option<&str>,
        on_gpu: bool,
    ) -> Result<(), SchedulerError> {
        let config = &self.inner.config;
        let hw = &self.inner.hardware;
        let mut freed = 0u64;
        loop {
            let mut state = self.state();
            let used = state.used_bytes();
            let limit_room = config
                .memory_limit
                .map_or(u64::MAX, |l| l.saturating_sub(used));
            let ram_room = (hw.available_ram() + freed).saturating_sub(config.memory_reserve);
            let vram_room = if on_gpu {
                hw.free_vram().map_or(u64::MAX, |v| v + freed)
            } else {
                u64::MAX
            };
            let room = limit_room.min(ram_room).min(vram_room);
            if need <= room {
                return Ok(());
            }
            let victim = state
                .models
                .iter()
                .filter(|(_, e)| e.in_use == 0 && !e.pinned)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else {
                // What would be free with every unpinned model unloaded.
                let held: u64 = state
                    .models
                    .values()
                    .filter(|e| !e.pinned)
                    .map(|e| e.model.own_bytes())
                    .sum::<u64>()
                    + state
                        .bases
                        .iter()
                        .filter(|(d, _)| Some(d.as_str()) != keep_base)
                        .map(|(_, b)| b.weight_bytes)
                        .sum::<u64>();
                let busy = state.models.values().any(|e| e.in_use > 0 && !e.pinned);
                let err = if busy && need <= room + held {
                    SchedulerError::Busy {
                        model: model.to_owned(),
                        need,
                        available: room,
                    }
                } else {
                    SchedulerError::TooLarge {
                        model: model.to_owned(),
                        need,
                        available: room,
                    }
                };
                return Err(err);
            };
            let entry = &state.models[&victim];
            let digest = entry.model.base_digest.clone();
            let mut gain = entry.model.own_bytes();
            let base_goes = state
                .bases
                .get(&digest)
                .is_some_and(|b| b.refs <= 1 && Some(digest.as_str()) != keep_base);
            if base_goes {
                gain += state.bases[&digest].weight_bytes;
            }
            tracing::info!(model = %victim, for_model = model, "evicting (least recently used)");
            Self::remove(&mut state, &victim, keep_base);
            freed += gain;
        }
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn a_name_is_every_version_and_a_version_only_itself() {
        assert!(names("docs", "docs:0.1.0"));
        assert!(names("docs", "docs:0.2.0"));
        assert!(names("docs:0.1.0", "docs:0.1.0"));
        assert!(!names("docs:0.1.0", "docs:0.2.0"));
        assert!(!names("doc", "docs:0.1.0"), "a prefix is not a name");
        assert!(!names("docs:0", "docs:0.1.0"), "nor a version prefix");
    }
}
