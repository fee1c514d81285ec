//! The gRPC control API (`kolm.daemon.v1`, see `proto/`): [`ControlService`]
//! implements it over the same [`AppState`] the HTTP API uses, so both see
//! one scheduler, one store and one set of metrics. Protobuf types convert
//! to the daemon's own here and nowhere else; [`status_from`] maps the
//! daemon's errors to gRPC codes (with the artifact error's class in the
//! `kolm-error-kind` metadata key, so `kolmctl` keeps its exit codes).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::Stream;
use kolm_artifact::{ErrorKind, Progress};
use kolm_proto::daemon::v1 as pb;
use kolm_proto::daemon::v1::daemon_server::Daemon;
use kolm_runtime::{ChatMessage, FinishReason, GenerateEvent, GenerationStream, RuntimeError};
use kolm_store::{InstallOutcome, StoreError};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::config::KeepAlive;
use crate::request::{Inference, Prompt, RequestError, ResponseFormat};
use crate::scheduler::{Lease, LoadOptions, SchedulerError};
use crate::state::AppState;
use crate::verify::{Tally, Verified};

/// The metadata key that carries an artifact or store error's class
/// (`malformed`, `bad_signature`, `untrusted`, `integrity`).
pub const ERROR_KIND_KEY: &str = "kolm-error-kind";

/// The addresses kolmd serves on, reported by `Status`.
#[derive(Clone, Debug, Default)]
pub struct Listening {
    pub http: Vec<String>,
    pub grpc: Vec<String>,
}

/// The `Daemon` service over the daemon's state.
#[derive(Clone, Debug)]
pub struct ControlService {
    state: AppState,
    listening: Arc<Listening>,
}

impl ControlService {
    pub fn new(state: AppState, listening: Listening) -> ControlService {
        ControlService {
            state,
            listening: Arc::new(listening),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Daemon for ControlService {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let hw = self.state.scheduler.hardware();
        let hardware = pb::Hardware {
            cpu_model: hw.cpu_model(),
            physical_cores: hw.physical_cores,
            total_memory_bytes: hw.total_ram(),
            available_memory_bytes: hw.available_ram(),
            gpus: hw
                .gpus()
                .into_iter()
                .map(|g| pb::Gpu {
                    index: g.index,
                    name: g.name,
                    total_vram_bytes: g.total_bytes,
                    free_vram_bytes: g.free_bytes,
                })
                .collect(),
        };
        Ok(Response::new(pb::StatusResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.state.started.elapsed().as_secs(),
            hardware: Some(hardware),
            listen: Some(pb::ListenAddresses {
                http: self.listening.http.clone(),
                grpc: self.listening.grpc.clone(),
            }),
            loaded_models: self.state.scheduler.list_loaded().len() as u32,
            drift: Some(drift_status(&self.state.drift)),
        }))
    }

    async fn list_artifacts(
        &self,
        _request: Request<pb::ListArtifactsRequest>,
    ) -> Result<Response<pb::ListArtifactsResponse>, Status> {
        let scheduler = self.state.scheduler.clone();
        let records = blocking(move || scheduler.installed()).await?;
        let loaded: Vec<String> = self
            .state
            .scheduler
            .list_loaded()
            .into_iter()
            .map(|m| m.model)
            .collect();
        let artifacts = records
            .into_iter()
            .map(|r| {
                let p = &r.statement.predicate;
                pb::ArtifactSummary {
                    loaded: loaded.contains(&r.reference()),
                    name: r.name.clone(),
                    version: r.version.clone(),
                    size_bytes: r.size,
                    base: Some(pb::BaseModel {
                        architecture: p.base.architecture.clone(),
                        quantization: p.base.quantization.clone(),
                        parameter_count: p.base.parameter_count,
                        name: p.base.name.clone(),
                    }),
                    k_score: p.k_score.as_ref().map(|k| k.value),
                    installed: r.installed.clone(),
                    trusted: r.is_trusted(),
                }
            })
            .collect();
        Ok(Response::new(pb::ListArtifactsResponse { artifacts }))
    }

    type InstallStream = BoxStream<pb::InstallProgress>;

    async fn install(
        &self,
        request: Request<pb::InstallRequest>,
    ) -> Result<Response<Self::InstallStream>, Status> {
        let req = request.into_inner();
        let path = PathBuf::from(&req.path);
        if req.path.trim().is_empty() {
            return Err(Status::invalid_argument("path must name a .kolm file"));
        }
        let home = self.state.scheduler.home().clone();
        let mut policy = home
            .keyring()
            .trust_policy(req.allow_untrusted)
            .map_err(|e| status_from_store(&e))?;
        for (i, line) in req.trusted_keys.iter().enumerate() {
            let key = kolm_artifact::PublicKey::parse(line).map_err(|e| {
                Status::invalid_argument(format!("trusted_keys[{i}] is not a kolm public key: {e}"))
            })?;
            policy.keys.push(key.key);
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::task::spawn_blocking(move || {
            let progress = ChannelProgress::new(tx.clone());
            let result = home
                .store()
                .and_then(|store| store.install(&path, &policy, &progress));
            let message = match result {
                Ok(report) => {
                    let (outcome, previous) = match report.outcome {
                        InstallOutcome::Installed => (pb::InstallOutcome::Installed, None),
                        InstallOutcome::AlreadyInstalled => {
                            (pb::InstallOutcome::AlreadyInstalled, None)
                        }
                        InstallOutcome::Replaced {
                            previous_manifest_sha256,
                        } => (pb::InstallOutcome::Replaced, Some(previous_manifest_sha256)),
                    };
                    Ok(pb::InstallProgress {
                        event: Some(pb::install_progress::Event::Result(pb::InstallResult {
                            name: report.record.name,
                            version: report.record.version,
                            outcome: outcome.into(),
                            written_bytes: report.written_bytes,
                            reused_bytes: report.reused_bytes,
                            previous_manifest_sha256: previous,
                        })),
                    })
                }
                Err(e) => Err(status_from_store(&e)),
            };
            let _ = tx.blocking_send(message);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let reference = request.into_inner().reference;
        let scheduler = self.state.scheduler.clone();
        let record = {
            let s = scheduler.clone();
            let r = reference.clone();
            blocking(move || s.resolve(&r)).await?
        };
        let key = record.reference();
        let was_loaded = !scheduler
            .unload(&key)
            .map_err(|e| status_from(&e))?
            .unloaded
            .is_empty();
        let home = scheduler.home().clone();
        let removed = tokio::task::spawn_blocking(move || home.store()?.remove(&key))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| status_from_store(&e))?;
        tracing::info!(model = %removed.reference(), "removed over gRPC");
        Ok(Response::new(pb::RemoveResponse {
            name: removed.name,
            version: removed.version,
            was_loaded,
        }))
    }

    async fn load(
        &self,
        request: Request<pb::LoadRequest>,
    ) -> Result<Response<pb::LoadResponse>, Status> {
        let req = request.into_inner();
        let keep_alive = parse_keep_alive(req.keep_alive.as_deref())?;
        let scheduler = &self.state.scheduler;
        let record = {
            let s = scheduler.clone();
            let r = req.reference.clone();
            blocking(move || s.resolve(&r)).await?
        };
        let key = record.reference();
        let already_loaded = scheduler.list_loaded().iter().any(|m| m.model == key);
        let started = Instant::now();
        let info = scheduler
            .load(
                &key,
                LoadOptions {
                    keep_alive,
                    pin: req.pin,
                },
            )
            .await
            .map_err(|e| status_from(&e))?;
        Ok(Response::new(pb::LoadResponse {
            reference: info.model.clone(),
            memory_bytes: info.base_bytes + info.own_bytes(),
            device: info.device.clone(),
            load_ms: if already_loaded {
                0
            } else {
                started.elapsed().as_millis() as u64
            },
            already_loaded,
        }))
    }

    async fn unload(
        &self,
        request: Request<pb::UnloadRequest>,
    ) -> Result<Response<pb::UnloadResponse>, Status> {
        let reference = request.into_inner().reference;
        if reference.trim().is_empty() {
            return Err(Status::invalid_argument(
                "reference must name an artifact as NAME or NAME:VERSION",
            ));
        }
        let scheduler = self.state.scheduler.clone();
        let unloaded = blocking(move || scheduler.unload(&reference)).await?;
        Ok(Response::new(pb::UnloadResponse {
            unloaded: unloaded.unloaded,
            freed_bytes: unloaded.freed_bytes,
        }))
    }

    async fn list_loaded(
        &self,
        _request: Request<pb::ListLoadedRequest>,
    ) -> Result<Response<pb::ListLoadedResponse>, Status> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut counted_bases: Vec<String> = Vec::new();
        let models = self
            .state
            .scheduler
            .list_loaded()
            .into_iter()
            .map(|m| {
                // Shared weights count once, on the first artifact listed.
                let memory = if counted_bases.contains(&m.base) {
                    0
                } else {
                    counted_bases.push(m.base.clone());
                    m.base_bytes
                } + m.own_bytes();
                let keep_alive =
                    KeepAlive::from_seconds(m.keep_alive_seconds).unwrap_or(KeepAlive::Forever);
                pb::LoadedModel {
                    reference: m.model,
                    base_digest: format!("sha256:{}", m.base),
                    memory_bytes: memory,
                    device: m.device,
                    idle_seconds: m.idle_seconds as u64,
                    requests_served: m.requests_served,
                    pinned: m.pinned,
                    keep_alive: kolm_proto::format_keep_alive(keep_alive),
                    expires_in_seconds: m.expires_at.map(|t| (t - now).max(0.0).ceil() as u64),
                    slots: m.slots,
                    context_length: m.context_per_slot,
                }
            })
            .collect();
        Ok(Response::new(pb::ListLoadedResponse { models }))
    }

    type GenerateStream = BoxStream<pb::GenerateResponse>;

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let arrived = Instant::now();
        let inference = inference(request.into_inner())?;
        let prepared = crate::request::prepare(&self.state.scheduler, &self.state.drift, inference)
            .await
            .map_err(|e| status_from_request(&e))?;
        let citations = prepared.citations.iter().flatten().map(citation).collect();
        // With retries the whole answer is generated (and checked) first,
        // then sent as one piece of text and the last message.
        let (source, tally, verified) = if prepared.retries > 0 {
            let answer = crate::request::complete(&prepared, &self.state.cancel)
                .await
                .map_err(|e| status_from_request(&e))?;
            let events = vec![
                GenerateEvent::Text(answer.text),
                GenerateEvent::Done(answer.completion),
            ];
            (
                Events::Done(events.into()),
                Tally::new(None, None),
                answer.verified,
            )
        } else {
            let (stream, first) = crate::request::start(&prepared, &self.state.cancel)
                .await
                .map_err(|e| status_from_request(&e))?;
            let tally = Tally::new(prepared.check.clone(), prepared.drift.clone());
            (Events::Live(Some(first), stream), tally, None)
        };
        let state = GenerationState {
            source,
            citations,
            tally,
            verified,
            _lease: prepared.lease,
            app: self.state.clone(),
            arrived,
            first_token: None,
            done: false,
        };
        let out = futures_util::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            let event = match &mut st.source {
                Events::Live(first, stream) => match first.take() {
                    Some(e) => e,
                    None => crate::request::next_event(stream, &st.app.cancel).await,
                },
                Events::Done(events) => events
                    .pop_front()
                    .unwrap_or(GenerateEvent::Failed(RuntimeError::Unloaded)),
            };
            let item = st.message(event).map(|mut m| {
                m.citations = std::mem::take(&mut st.citations);
                m
            });
            Some((item, st))
        });
        Ok(Response::new(Box::pin(out)))
    }

    type CompileStream = BoxStream<pb::CompileEvent>;

    async fn compile(
        &self,
        request: Request<pb::CompileRequest>,
    ) -> Result<Response<Self::CompileStream>, Status> {
        let req = request.into_inner();
        crate::compile::validate(&req)?;
        let (tx, rx) = mpsc::channel(256);
        let home = self.state.scheduler.home().clone();
        tokio::spawn(crate::compile::run(req, home, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let req = request.into_inner();
        if req.inputs.is_empty() {
            return Err(Status::invalid_argument(
                "inputs must hold at least one text",
            ));
        }
        if req.inputs.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("inputs must not hold empty texts"));
        }
        let keep_alive = parse_keep_alive(req.keep_alive.as_deref())?;
        let lease = self
            .state
            .scheduler
            .acquire(&req.model, keep_alive)
            .await
            .map_err(|e| status_from(&e))?;
        let embeddings = lease
            .embed(req.inputs)
            .await
            .map_err(|e| status_from_runtime(&e))?;
        Ok(Response::new(pb::EmbedResponse {
            embeddings: embeddings
                .vectors
                .into_iter()
                .map(|values| pb::Embedding { values })
                .collect(),
            prompt_tokens: embeddings.prompt_tokens,
        }))
    }
}

fn citation(hit: &kolm_recall::Hit) -> pb::Citation {
    pb::Citation {
        source: hit.source.clone(),
        offset: hit.offset,
        end: hit.end,
        score: hit.score,
        page: hit.page,
        record: hit.record,
    }
}

/// The drift log's counts, as Status reports them.
fn drift_status(drift: &crate::drift::DriftLog) -> pb::DriftStatus {
    pb::DriftStatus {
        enabled: drift.path().is_some(),
        database: drift
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        counts: drift
            .logged()
            .into_iter()
            .map(|((model, reason), count)| pb::DriftCount {
                model,
                reason: reason.to_string(),
                count,
            })
            .collect(),
        dropped: drift.dropped(),
        failed: drift.failed(),
    }
}

/// Where a Generate call's events come from.
enum Events {
    /// The engine, as it generates (the first event already read).
    Live(Option<GenerateEvent>, GenerationStream),
    /// A whole answer generated before the call answered (retries).
    Done(std::collections::VecDeque<GenerateEvent>),
}

/// One Generate call's stream: it owns the engine's stream and the lease, so
/// a client that cancels drops both, which frees the slot at once.
struct GenerationState {
    source: Events,
    /// Sent with the first message, then empty.
    citations: Vec<pb::Citation>,
    /// The answer so far, for the verifier's check at its end.
    tally: Tally,
    /// The verifier's word on an answer generated whole (retries).
    verified: Option<Verified>,
    _lease: Lease,
    app: AppState,
    arrived: Instant,
    first_token: Option<Instant>,
    done: bool,
}

impl GenerationState {
    fn message(&mut self, event: GenerateEvent) -> Result<pb::GenerateResponse, Status> {
        match event {
            GenerateEvent::Text(text) => {
                self.first_token.get_or_insert_with(Instant::now);
                self.tally.push(&text);
                Ok(pb::GenerateResponse {
                    text,
                    ..Default::default()
                })
            }
            GenerateEvent::Done(c) => {
                self.done = true;
                let model = &self._lease.model().reference;
                self.app.metrics.generation(model, &c);
                let verified = self.verified.take().or_else(|| self.tally.finish(&c));
                self.app.metrics.verified(model, verified.as_ref());
                let now = Instant::now();
                let first = self.first_token.unwrap_or(now);
                let decode = now.saturating_duration_since(first).as_secs_f64();
                let tokens_per_second = if decode > 0.0 && c.completion_tokens > 1 {
                    f64::from(c.completion_tokens - 1) / decode
                } else {
                    0.0
                };
                Ok(pb::GenerateResponse {
                    text: String::new(),
                    finish_reason: match c.finish_reason {
                        FinishReason::Stop => pb::FinishReason::Stop,
                        FinishReason::Length => pb::FinishReason::Length,
                    }
                    .into(),
                    usage: Some(pb::Usage {
                        prompt_tokens: c.prompt_tokens,
                        completion_tokens: c.completion_tokens,
                    }),
                    timings: Some(pb::Timings {
                        ttft_ms: millis(first.saturating_duration_since(self.arrived)),
                        tokens_per_second,
                        total_ms: millis(now.saturating_duration_since(self.arrived)),
                    }),
                    citations: Vec::new(),
                    draft: c.draft.map(|d| pb::DraftStats {
                        drafted: d.drafted,
                        accepted: d.accepted,
                        steps: d.steps,
                    }),
                    verified: verified.map(|v| pb::Verified {
                        passed: v.passed,
                        rules: v.rules,
                        attempts: v.attempts,
                    }),
                })
            }
            GenerateEvent::Failed(e) => {
                self.done = true;
                Err(status_from_runtime(&e))
            }
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Reports the store's progress as `InstallStep` messages, at most one per
/// 1% of a phase (and at each phase's start and end).
struct ChannelProgress {
    tx: mpsc::Sender<Result<pb::InstallProgress, Status>>,
    phase: std::sync::Mutex<(String, u64, u64, u64)>,
}

impl ChannelProgress {
    fn new(tx: mpsc::Sender<Result<pb::InstallProgress, Status>>) -> ChannelProgress {
        ChannelProgress {
            tx,
            phase: std::sync::Mutex::new((String::new(), 0, 0, 0)),
        }
    }

    fn send(&self, phase: &str, done: u64, total: u64) {
        let step = pb::InstallStep {
            phase: phase.to_owned(),
            bytes_done: done,
            bytes_total: total,
        };
        // A client that went away only stops the reports, not the install.
        let _ = self.tx.blocking_send(Ok(pb::InstallProgress {
            event: Some(pb::install_progress::Event::Step(step)),
        }));
    }
}

impl Progress for ChannelProgress {
    fn start(&self, label: &str, total: u64) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *p = (label.to_owned(), 0, total, 0);
        self.send(label, 0, total);
    }

    fn advance(&self, bytes: u64) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        p.1 += bytes;
        let step = (p.2 / 100).max(1);
        if p.1 - p.3 >= step {
            p.3 = p.1;
            let (label, done, total) = (p.0.clone(), p.1, p.2);
            drop(p);
            self.send(&label, done, total);
        }
    }

    fn finish(&self) {
        let p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if p.3 != p.1 {
            let (label, done, total) = (p.0.clone(), p.1, p.2);
            drop(p);
            self.send(&label, done, total);
        }
    }
}

fn parse_keep_alive(text: Option<&str>) -> Result<Option<KeepAlive>, Status> {
    text.map(|t| {
        kolm_proto::parse_keep_alive(t)
            .map_err(|e| Status::invalid_argument(format!("keep_alive: {e}")))
    })
    .transpose()
}

/// A `GenerateRequest` as the transport-neutral request; only the wire's
/// own rules (a prompt given, a schema that is JSON) are checked here.
fn inference(req: pb::GenerateRequest) -> Result<Inference, Status> {
    let prompt = match req.prompt {
        Some(pb::generate_request::Prompt::Text(t)) => Prompt::Text(t),
        Some(pb::generate_request::Prompt::Messages(m)) => Prompt::Chat(
            m.messages
                .into_iter()
                .map(|m| ChatMessage {
                    role: m.role,
                    content: m.content,
                })
                .collect(),
        ),
        None => {
            return Err(Status::invalid_argument(
                "prompt is required: give `text` or `messages`",
            ))
        }
    };
    let response_format = match req.response_format {
        None => None,
        Some(f) => Some(match f.kind() {
            pb::response_format::Kind::Text => ResponseFormat::Text,
            pb::response_format::Kind::JsonObject => ResponseFormat::JsonObject,
            pb::response_format::Kind::JsonSchema => {
                ResponseFormat::JsonSchema(serde_json::from_str(&f.json_schema).map_err(|e| {
                    Status::invalid_argument(format!(
                        "response_format.json_schema is not JSON: {e}"
                    ))
                })?)
            }
        }),
    };
    let mut logit_bias: Vec<(i32, f32)> = req.logit_bias.into_iter().collect();
    logit_bias.sort_by_key(|(id, _)| *id);
    Ok(Inference {
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        min_p: req.min_p,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        repeat_penalty: req.repeat_penalty,
        logit_bias,
        stop: req.stop,
        response_format,
        recall_k: req
            .recall_k
            .map(|k| usize::try_from(k).unwrap_or(usize::MAX)),
        keep_alive: parse_keep_alive(req.keep_alive.as_deref())?,
        draft: req.draft,
        verify_retries: req.verify_retries,
        ..Inference::new(req.model, prompt)
    })
}

/// The gRPC status for a request the shared path refused.
fn status_from_request(e: &RequestError) -> Status {
    match e {
        RequestError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        RequestError::NoChatTemplate { model } => Status::invalid_argument(format!(
            "the model `{model}` has no chat template; send a `text` prompt instead"
        )),
        RequestError::Scheduler(s) => status_from(s),
        RequestError::Runtime(r) => status_from_runtime(r),
        RequestError::Recall(_) => Status::internal(e.to_string()),
    }
}

/// Runs a scheduler call that touches the disk off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SchedulerError> + Send + 'static,
) -> Result<T, Status> {
    crate::scheduler::blocking(f)
        .await
        .map_err(|e| status_from(&e))
}

/// The gRPC status for a scheduler error.
pub fn status_from(e: &SchedulerError) -> Status {
    match e {
        SchedulerError::ModelNotFound(_) => Status::not_found(e.to_string()),
        SchedulerError::Store(s) => status_from_store(s),
        SchedulerError::Runtime(r) => status_from_runtime(r),
        SchedulerError::Busy { .. } | SchedulerError::TooLarge { .. } => {
            Status::resource_exhausted(e.to_string())
        }
        SchedulerError::ShuttingDown => Status::unavailable(e.to_string()),
        SchedulerError::NoBase(_)
        | SchedulerError::Recall { .. }
        | SchedulerError::Recipes { .. }
        | SchedulerError::Verifier { .. } => Status::failed_precondition(e.to_string()),
        SchedulerError::Internal(_) => Status::internal(e.to_string()),
    }
}

fn status_from_runtime(e: &RuntimeError) -> Status {
    match e {
        RuntimeError::QueueFull(_) => Status::resource_exhausted(e.to_string()),
        RuntimeError::Cancelled => Status::unavailable("kolmd is shutting down"),
        RuntimeError::Unloaded => {
            Status::unavailable("the model was unloaded while the request ran; retry")
        }
        e if e.is_invalid_request() => Status::invalid_argument(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

fn status_from_store(e: &StoreError) -> Status {
    let message = e.to_string();
    let kind = e.kind();
    let mut status = match (e, kind) {
        (StoreError::NotInstalled { .. }, _) => Status::not_found(message),
        (_, ErrorKind::InvalidInput | ErrorKind::Malformed) => Status::invalid_argument(message),
        (_, ErrorKind::Untrusted | ErrorKind::BadSignature) => Status::failed_precondition(message),
        (_, ErrorKind::Integrity) => Status::data_loss(message),
        (_, ErrorKind::Io) => Status::internal(message),
    };
    let name = match kind {
        ErrorKind::Malformed => Some("malformed"),
        ErrorKind::BadSignature => Some("bad_signature"),
        ErrorKind::Untrusted => Some("untrusted"),
        ErrorKind::Integrity => Some("integrity"),
        ErrorKind::Io | ErrorKind::InvalidInput => None,
    };
    if let Some(name) = name {
        if let Ok(value) = name.parse() {
            status.metadata_mut().insert(ERROR_KIND_KEY, value);
        }
    }
    status
}
