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

mod lease;
mod loading;
mod residency;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use kolm_runtime::{Runtime, RuntimeError};
use kolm_store::{ArtifactRecord, Home, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use lease::Lease;
pub use loading::{blocking, LoadedModel, RecallState, SharedBase};

use crate::config::{Config, GpuLayers, KeepAlive};
use crate::hardware::Hardware;
use residency::{Residency, Room};

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
    /// Whether loaded artifacts draft, and how far.
    pub draft: crate::config::DraftMode,
    pub draft_max: u32,
    /// Retries of answers that fail their artifact's verifier.
    pub verify_retries: crate::config::VerifyRetries,
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
            draft: c.draft,
            draft_max: c.draft_max,
            verify_retries: c.verify_retries.clone(),
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
    #[error("the recipe pack of {model} cannot be used: {source}")]
    Recipes {
        model: String,
        #[source]
        source: kolm_artifact::recipes::RecipeError,
    },
    #[error("the verifier of {model} cannot be used: {source}")]
    Verifier {
        model: String,
        #[source]
        source: kolm_compile::verifier::VerifierError,
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

#[derive(Default)]
struct State {
    residents: Residency<Arc<LoadedModel>, Arc<SharedBase>>,
    shutting_down: bool,
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
            loading::blocking(move || this.resolve(&r)).await?
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
        let admitted = state.residents.admit(
            key,
            model.clone(),
            &model.base_digest,
            model.own_bytes(),
            keep_alive,
            Instant::now(),
        );
        if admitted.is_none() {
            return Err(SchedulerError::Internal(
                "the base was unloaded while loading".into(),
            ));
        }
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
        Ok(state.residents.lease(key, keep_alive).map(|e| Lease {
            model: e.model.clone(),
            scheduler: self.clone(),
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
        if let Some(e) = self.state().residents.model_mut(&key) {
            e.pinned = options.pin;
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
        let mut state = self.state();
        let mut targets: Vec<String> = state
            .residents
            .models()
            .map(|(k, _)| k.clone())
            .filter(|k| names(reference, k))
            .collect();
        if targets.is_empty() {
            drop(state);
            self.resolve(reference)?;
            return Ok(Unloaded::default());
        }
        targets.sort();
        let before = state.residents.used_bytes();
        for key in &targets {
            state.residents.remove(key, None);
            tracing::info!(model = %key, "unloaded");
        }
        let freed_bytes = before - state.residents.used_bytes();
        drop(state);
        self.inner.changed.notify_one();
        Ok(Unloaded {
            unloaded: targets,
            freed_bytes,
        })
    }

    pub(super) fn release(&self, model: &Arc<LoadedModel>) {
        let unloaded = self
            .state()
            .residents
            .release(&model.reference, Instant::now(), |m| Arc::ptr_eq(m, model));
        if unloaded {
            tracing::info!(model = %model.reference, "unloaded (keep_alive 0)");
        }
        self.inner.changed.notify_one();
    }

    /// Unloads every artifact whose keep-alive has passed; returns the next
    /// deadline.
    pub fn expire(&self, now: Instant) -> Option<Instant> {
        let mut state = self.state();
        let (due, next) = state.residents.due(now);
        for key in &due {
            tracing::info!(model = %key, "keep_alive expired");
            state.residents.remove(key, None);
        }
        next
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
        state.residents.clear();
    }

    /// What is loaded, most recently used first.
    pub fn list_loaded(&self) -> Vec<LoadedInfo> {
        let state = self.state();
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut out: Vec<(Instant, LoadedInfo)> = state
            .residents
            .models()
            .map(|(_, e)| {
                let m = &e.model;
                let base = state.residents.base(&m.base_digest);
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
            .residents
            .bases()
            .map(|(d, b)| (d.clone(), b.weight_bytes, b.refs))
            .collect();
        bases.sort();
        MemoryReport {
            bases,
            total_bytes: state.residents.used_bytes(),
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

    /// Evicts idle unpinned artifacts, least recently used first, until
    /// `need` more bytes fit (the plan is [`Residency::plan_room`]'s).
    /// `keep_base` is never unloaded (the caller is about to attach to it).
    fn make_room(
        &self,
        model: &str,
        need: u64,
        keep_base: Option<&str>,
        on_gpu: bool,
    ) -> Result<(), SchedulerError> {
        let config = &self.inner.config;
        let hw = &self.inner.hardware;
        let room = Room {
            limit: config.memory_limit,
            free_ram: hw.available_ram(),
            reserve: config.memory_reserve,
            free_vram: if on_gpu { hw.free_vram() } else { None },
        };
        let mut state = self.state();
        match state.residents.plan_room(need, room, keep_base) {
            Ok(victims) => {
                for victim in victims {
                    tracing::info!(model = %victim, for_model = model, "evicting (least recently used)");
                    state.residents.remove(&victim, keep_base);
                }
                Ok(())
            }
            Err(shortfall) if shortfall.busy => Err(SchedulerError::Busy {
                model: model.to_owned(),
                need,
                available: shortfall.available,
            }),
            Err(shortfall) => Err(SchedulerError::TooLarge {
                model: model.to_owned(),
                need,
                available: shortfall.available,
            }),
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
