//! The OpenAI wire format: request types, their validation into engine
//! requests, and the handlers for chat completions, completions (both also
//! as server-sent events), embeddings and models. Domain types convert
//! here, at the boundary; nothing below knows this format.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive as SseKeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use kolm_runtime::{ChatMessage, Completion, FinishReason, GenerateEvent, GenerationStream};
use kolm_store::ArtifactRecord;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::extract::ApiJson;
use super::wire;
use crate::config::KeepAlive;
use crate::metrics::Metrics;
use crate::request::{self, Inference, Prepared, Prompt, ResponseFormat, MAX_RECALL_K};
use crate::scheduler::{blocking, Lease, LoadOptions};
use crate::state::AppState;
use crate::verify::Tally;

// ---------------------------------------------------------------------------
// Requests.

/// A string or a list of strings (`stop`, `input`, `prompt`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<Value>),
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Fields shared by chat and text completions.
#[derive(Debug, Default, Deserialize)]
pub struct Common {
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub stop: Option<OneOrMany>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub response_format: Option<Value>,
    /// kolm extension: how long the model stays loaded afterwards.
    pub keep_alive: Option<Value>,
    /// kolm extension: `false` decodes this request token by token even
    /// where the daemon drafts.
    pub draft: Option<Value>,
    /// kolm extension: `{"retries": N}` samples an answer that fails the
    /// artifact's verifier again, up to N times (not streamed).
    pub verify: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    /// kolm extension, for artifacts with a recall index: `false` turns
    /// grounding off, `{"k": N}` sets how many chunks (default 4).
    pub recall: Option<Value>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Option<OneOrMany>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: OneOrMany,
    pub encoding_format: Option<String>,
    pub dimensions: Option<i64>,
    pub keep_alive: Option<Value>,
}

/// `keep_alive`: a duration string or a number of seconds (negative:
/// forever).
pub fn keep_alive(value: &Option<Value>) -> Result<Option<KeepAlive>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => KeepAlive::from_seconds(n.as_f64().unwrap_or(f64::NAN))
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("keep_alive: {e}"), "keep_alive")),
        Some(Value::String(s)) => kolm_proto::parse_keep_alive(s)
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("keep_alive: {e}"), "keep_alive")),
        Some(_) => Err(ApiError::invalid(
            "keep_alive must be a duration like \"5m\" or a number of seconds",
            "keep_alive",
        )),
    }
}

/// How the answer travels back: at once, or as server-sent events.
struct Delivery {
    stream: bool,
    include_usage: bool,
}

/// The fields chat and text completions share, as the transport-neutral
/// request (`crate::request`); only the wire's own rules are checked here
/// (`n`, JSON types, which of the two max-token names was used).
fn inference(model: &str, prompt: Prompt, c: &Common) -> Result<(Inference, Delivery), ApiError> {
    if let Some(n) = c.n {
        if n != 1 {
            return Err(ApiError::invalid(
                format!("n must be 1 (kolmd generates one choice per request), got {n}"),
                "n",
            ));
        }
    }
    let (max_param, max) = match (c.max_completion_tokens, c.max_tokens) {
        (Some(m), _) => ("max_completion_tokens", Some(m)),
        (None, m) => ("max_tokens", m),
    };
    let max_tokens = match max {
        None => None,
        Some(m) if m < 1 => {
            return Err(ApiError::invalid(
                format!("{max_param} must be at least 1, got {m}"),
                max_param,
            ))
        }
        Some(m) => Some(u32::try_from(m).unwrap_or(u32::MAX)),
    };
    let mut logit_bias = Vec::new();
    for (token, bias) in c.logit_bias.iter().flatten() {
        let id: i32 = token.trim().parse().map_err(|_| {
            ApiError::invalid(
                format!("logit_bias keys are token ids, got `{token}`"),
                "logit_bias",
            )
        })?;
        logit_bias.push((id, *bias));
    }
    // Token ids in a map are in no order; the engine's bias is the same
    // whatever the order, the request's text should be too.
    logit_bias.sort_by_key(|(id, _)| *id);
    let seed =
        match c.seed {
            None => None,
            Some(s) => Some(u64::try_from(s).map_err(|_| {
                ApiError::invalid(format!("seed must be 0 or more, got {s}"), "seed")
            })?),
        };
    let stop = match &c.stop {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s.clone()],
        Some(OneOrMany::Many(v)) => v
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::invalid("stop must be strings", "stop"))
            })
            .collect::<Result<_, _>>()?,
    };
    let response_format = match &c.response_format {
        None | Some(Value::Null) => None,
        Some(f) => Some(match f.get("type").and_then(Value::as_str) {
            Some("text") => ResponseFormat::Text,
            Some("json_object") => ResponseFormat::JsonObject,
            Some("json_schema") => {
                let schema = f
                    .get("json_schema")
                    .and_then(|j| j.get("schema"))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "response_format json_schema needs json_schema.schema",
                            "response_format",
                        )
                    })?;
                ResponseFormat::JsonSchema(schema.clone())
            }
            other => {
                return Err(ApiError::invalid(
                    format!(
                        "response_format type must be text, json_object or json_schema, got {}",
                        other.map_or("nothing".into(), |t| format!("`{t}`"))
                    ),
                    "response_format",
                ))
            }
        }),
    };
    let request = Inference {
        max_tokens,
        temperature: c.temperature,
        top_p: c.top_p,
        // OpenAI-style clients send -1 or 0 for "no limit".
        top_k: c.top_k.map(|k| u32::try_from(k).unwrap_or(0)),
        min_p: c.min_p,
        seed,
        presence_penalty: c.presence_penalty,
        frequency_penalty: c.frequency_penalty,
        repeat_penalty: c.repeat_penalty,
        logit_bias,
        stop,
        response_format,
        keep_alive: keep_alive(&c.keep_alive)?,
        draft: match &c.draft {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                return Err(ApiError::invalid(
                    format!("draft must be true or false, got {other}"),
                    "draft",
                ))
            }
        },
        verify_retries: verify_retries(&c.verify)?,
        ..Inference::new(model, prompt)
    };
    let delivery = Delivery {
        stream: c.stream.unwrap_or(false),
        include_usage: c
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    };
    if delivery.stream && request.verify_retries.is_some_and(|n| n > 0) {
        return Err(ApiError::invalid(
            "verify retries need the whole answer before it is sent: send the request \
             without `stream`, or without `verify.retries`",
            "verify",
        ));
    }
    Ok((request, delivery))
}

/// `verify`: `{"retries": N}` (the range is checked with the other fields).
fn verify_retries(value: &Option<Value>) -> Result<Option<u32>, ApiError> {
    let bad = |what: String| {
        ApiError::invalid(
            format!("verify must be an object like {{\"retries\": 2}}, {what}"),
            "verify",
        )
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| k.as_str() != "retries") {
                return Err(bad(format!("and `{k}` is not one of its keys")));
            }
            match o.get("retries") {
                None | Some(Value::Null) => Ok(None),
                Some(n) => n
                    .as_u64()
                    .map(|n| Some(u32::try_from(n).unwrap_or(u32::MAX)))
                    .ok_or_else(|| bad(format!("with a whole number of retries, got {n}"))),
            }
        }
        Some(other) => Err(bad(format!("got {other}"))),
    }
}

/// Text of a message: a string, or the text parts of a list.
fn message_text(content: &Option<Value>) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::invalid(
                            format!(
                                "only text content parts are supported, got {}",
                                kind.unwrap_or("a part without a type")
                            ),
                            "messages",
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(ApiError::invalid(
            "message content must be a string or a list of parts",
            "messages",
        )),
    }
}

fn check_model(model: &str) -> Result<(), ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::invalid("model is required", "model"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Shared generation.

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn new_id(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{prefix}-{:x}{:04x}",
        nanos & 0xffff_ffff_ffff,
        NEXT_ID.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn usage(c: &Completion) -> wire::Usage {
    wire::Usage::new(c.prompt_tokens, c.completion_tokens, c.cached_tokens)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

impl Kind {
    /// The `object` of a whole answer.
    fn object(self) -> &'static str {
        match self {
            Kind::Chat => "chat.completion",
            Kind::Text => "text_completion",
        }
    }

    /// The `object` of a streamed chunk.
    fn chunk_object(self) -> &'static str {
        match self {
            Kind::Chat => "chat.completion.chunk",
            Kind::Text => "text_completion",
        }
    }
}

async fn respond(
    state: AppState,
    kind: Kind,
    prepared: Prepared,
    delivery: Delivery,
) -> Result<Response, ApiError> {
    let citations = prepared
        .citations
        .as_deref()
        .map(|hits| hits.iter().map(wire::Citation::from).collect::<Vec<_>>());
    let model = prepared.lease.model().reference.clone();
    let id = new_id(if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    });
    let created = now_seconds();
    if delivery.stream {
        let (stream, first) = request::start(&prepared, &state.cancel).await?;
        let sse = SseState {
            kind,
            id,
            created,
            model,
            include_usage: delivery.include_usage,
            first: Some(first),
            stream,
            tally: Tally::new(prepared.check.clone(), prepared.drift.clone()),
            _lease: prepared.lease,
            pending: VecDeque::new(),
            done: false,
            metrics: state.metrics.clone(),
            cancel: state.cancel.clone(),
        };
        if kind == Kind::Chat {
            let mut sse = sse;
            let mut chunk = sse.chunk(
                wire::Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                },
                None,
            );
            // The citations ride on the first chunk.
            chunk.kolm = wire::CompletionExtension {
                citations,
                ..Default::default()
            }
            .some();
            sse.push(&chunk);
            return Ok(sse_response(sse));
        }
        return Ok(sse_response(sse));
    }
    let request::Answer {
        text,
        completion,
        verified,
    } = request::complete(&prepared, &state.cancel).await?;
    drop(prepared);
    state.metrics.generation(&model, &completion);
    state.metrics.verified(&model, verified.as_ref());
    let (message, text) = match kind {
        Kind::Chat => (
            Some(wire::AssistantMessage {
                role: "assistant",
                content: text,
            }),
            None,
        ),
        Kind::Text => (None, Some(text)),
    };
    let body = wire::Completion {
        id,
        object: kind.object(),
        created,
        model,
        choices: vec![wire::Choice {
            index: 0,
            message,
            text,
            logprobs: (),
            finish_reason: finish_reason(completion.finish_reason),
        }],
        usage: usage(&completion),
        kolm: wire::CompletionExtension {
            citations,
            draft: completion.draft.map(wire::Draft::from),
            verified,
        }
        .some(),
    };
    Ok(Json(body).into_response())
}

/// The state of one server-sent event stream. It owns the generation and
/// the lease: a client that goes away drops it, which cancels the request
/// and frees its slot.
struct SseState {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    first: Option<GenerateEvent>,
    stream: GenerationStream,
    /// The answer so far, for the verifier's check at its end.
    tally: Tally,
    _lease: Lease,
    pending: VecDeque<Event>,
    done: bool,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
}

impl SseState {
    /// A chunk with one choice: `delta` for a chat, its content as the
    /// `text` of a text completion.
    fn chunk(&self, delta: wire::Delta, finish: Option<&'static str>) -> wire::Chunk {
        let (delta, text) = match self.kind {
            Kind::Chat => (Some(delta), None),
            Kind::Text => (None, Some(delta.content.unwrap_or_default())),
        };
        wire::Chunk {
            id: self.id.clone(),
            object: self.kind.chunk_object(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![wire::ChunkChoice {
                index: 0,
                delta,
                text,
                logprobs: (),
                finish_reason: finish,
            }],
            usage: if self.include_usage {
                wire::UsageField::Null
            } else {
                wire::UsageField::Absent
            },
            kolm: None,
        }
    }

    fn push(&mut self, chunk: &wire::Chunk) {
        let data = serde_json::to_string(chunk).unwrap_or_default();
        self.pending.push_back(Event::default().data(data));
    }

    fn handle(&mut self, event: GenerateEvent) {
        match event {
            GenerateEvent::Text(t) => {
                self.tally.push(&t);
                let chunk = self.chunk(
                    wire::Delta {
                        role: None,
                        content: Some(t),
                    },
                    None,
                );
                self.push(&chunk);
            }
            GenerateEvent::Done(c) => {
                self.metrics.generation(&self.model, &c);
                let verified = self.tally.finish(&c);
                self.metrics.verified(&self.model, verified.as_ref());
                let mut last =
                    self.chunk(wire::Delta::default(), Some(finish_reason(c.finish_reason)));
                // What drafting did and the verifier's word ride on the
                // chunk that finishes.
                last.kolm = wire::CompletionExtension {
                    citations: None,
                    draft: c.draft.map(wire::Draft::from),
                    verified,
                }
                .some();
                self.push(&last);
                if self.include_usage {
                    let mut totals = self.chunk(wire::Delta::default(), None);
                    totals.choices.clear();
                    totals.usage = wire::UsageField::Some(usage(&c));
                    self.push(&totals);
                }
                self.pending.push_back(Event::default().data("[DONE]"));
                self.done = true;
            }
            GenerateEvent::Failed(e) => {
                let error = ApiError::from(e);
                self.pending
                    .push_back(Event::default().data(error.body().to_string()));
                self.done = true;
            }
        }
    }
}

fn sse_response(state: SseState) -> Response {
    let events = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), st));
            }
            if st.done {
                return None;
            }
            let event = match st.first.take() {
                Some(first) => first,
                None => request::next_event(&mut st.stream, &st.cancel).await,
            };
            st.handle(event);
        }
    });
    Sse::new(events)
        .keep_alive(SseKeepAlive::default())
        .into_response()
}

// ---------------------------------------------------------------------------
// Handlers.

pub async fn chat_completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let messages = req
        .messages
        .iter()
        .map(|m| {
            Ok(ChatMessage {
                role: m.role.clone(),
                content: message_text(&m.content)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let (mut inference, delivery) = inference(&req.model, Prompt::Chat(messages), &req.common)?;
    inference.recall_k = recall_k(&req.recall)?;
    let prepared = request::prepare(&state.scheduler, &state.drift, inference).await?;
    respond(state, Kind::Chat, prepared, delivery).await
}

/// The `recall` extension: `true` or absent is the default number of
/// chunks, `false` or `{"k": 0}` turns it off.
fn recall_k(value: &Option<Value>) -> Result<Option<usize>, ApiError> {
    let bad = || {
        ApiError::invalid(
            format!("recall must be true, false or {{\"k\": 1..{MAX_RECALL_K}}}"),
            "recall",
        )
    };
    match value {
        None | Some(Value::Null) | Some(Value::Bool(true)) => Ok(None),
        Some(Value::Bool(false)) => Ok(Some(0)),
        Some(Value::Object(o)) => {
            if o.keys().any(|k| k != "k") {
                return Err(bad());
            }
            match o.get("k") {
                None => Ok(None),
                Some(k) => k
                    .as_u64()
                    .and_then(|k| usize::try_from(k).ok())
                    .map(Some)
                    .ok_or_else(bad),
            }
        }
        Some(_) => Err(bad()),
    }
}

pub async fn completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let prompt = match req.prompt {
        None => return Err(ApiError::invalid("prompt is required", "prompt")),
        Some(OneOrMany::One(p)) => p,
        Some(OneOrMany::Many(v)) => match v.as_slice() {
            [Value::String(p)] => p.clone(),
            _ => {
                return Err(ApiError::invalid(
                    "prompt must be one string (a list of one string is accepted)",
                    "prompt",
                ))
            }
        },
    };
    let (inference, delivery) = inference(&req.model, Prompt::Text(prompt), &req.common)?;
    let prepared = request::prepare(&state.scheduler, &state.drift, inference).await?;
    respond(state, Kind::Text, prepared, delivery).await
}

pub async fn embeddings(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    check_model(&req.model)?;
    let texts: Vec<String> = match req.input {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::invalid(
                    "input must be a string or a list of strings (token arrays are not supported)",
                    "input",
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    if texts.is_empty() || texts.iter().any(String::is_empty) {
        return Err(ApiError::invalid("input must not be empty", "input"));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("encoding_format must be float or base64, got `{other}`"),
                "encoding_format",
            ))
        }
    };
    let keep = keep_alive(&req.keep_alive)?;
    let lease = state.scheduler.acquire(&req.model, keep).await?;
    let dim = lease.embedding_size() as i64;
    if let Some(d) = req.dimensions {
        if d != dim {
            return Err(ApiError::invalid(
                format!("this model's embeddings have {dim} dimensions, got dimensions={d}"),
                "dimensions",
            ));
        }
    }
    let model = lease.model().reference.clone();
    let result = tokio::select! {
        r = lease.embed(texts) => r?,
        () = state.cancel.cancelled() => return Err(ApiError::ShuttingDown),
    };
    drop(lease);
    state.metrics.embedding(&model, result.prompt_tokens);
    let data = result
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| wire::EmbeddingObject {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                wire::EmbeddingValue::Base64(
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                )
            } else {
                wire::EmbeddingValue::Float(v)
            },
        })
        .collect();
    Ok(Json(wire::EmbeddingList {
        object: "list",
        data,
        model,
        usage: wire::EmbeddingUsage {
            prompt_tokens: result.prompt_tokens,
            total_tokens: result.prompt_tokens,
        },
    })
    .into_response())
}

fn model_object(record: &ArtifactRecord, loaded: bool) -> wire::Model {
    wire::Model {
        id: record.reference(),
        object: "model",
        created: record
            .installed_at()
            .map_or(0, |t| t.unix_timestamp().max(0)),
        owned_by: "kolm",
        kolm: wire::ModelExtension {
            name: record.name.clone(),
            version: record.version.clone(),
            loaded,
            size: record.size,
            trusted: record.is_trusted(),
            base: serde_json::to_value(&record.statement.predicate.base).unwrap_or(Value::Null),
        },
    }
}

async fn installed(state: &AppState) -> Result<Vec<ArtifactRecord>, ApiError> {
    let scheduler = state.scheduler.clone();
    Ok(blocking(move || scheduler.installed()).await?)
}

pub async fn list_models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let records = installed(&state).await?;
    let loaded: Vec<String> = state
        .scheduler
        .list_loaded()
        .into_iter()
        .map(|l| l.model)
        .collect();
    let data = records
        .iter()
        .map(|r| model_object(r, loaded.contains(&r.reference())))
        .collect();
    Ok(Json(wire::ModelList {
        object: "list",
        data,
    })
    .into_response())
}

pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let scheduler = state.scheduler.clone();
    let record = blocking(move || scheduler.resolve(&id)).await?;
    let loaded = state
        .scheduler
        .list_loaded()
        .iter()
        .any(|l| l.model == record.reference());
    Ok(Json(model_object(&record, loaded)).into_response())
}

// ---------------------------------------------------------------------------
// kolm's own control endpoints (the gRPC API offers the same).

#[derive(Debug, Deserialize)]
pub struct LoadRequest {
    pub model: String,
    #[serde(default)]
    pub pin: bool,
    pub keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct UnloadRequest {
    pub model: String,
}

pub async fn loaded(State(state): State<AppState>) -> Response {
    let memory = state.scheduler.memory();
    Json(wire::Loaded {
        models: state
            .scheduler
            .list_loaded()
            .into_iter()
            .map(wire::LoadedModel::from)
            .collect(),
        bases: memory
            .bases
            .into_iter()
            .map(|(base, bytes, artifacts)| wire::LoadedBase {
                base,
                bytes,
                artifacts,
            })
            .collect(),
        memory_bytes: memory.total_bytes,
    })
    .into_response()
}

pub async fn load(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoadRequest>,
) -> Result<Response, ApiError> {
    check_model(&req.model)?;
    let options = LoadOptions {
        keep_alive: keep_alive(&req.keep_alive)?,
        pin: req.pin,
    };
    let info = state.scheduler.load(&req.model, options).await?;
    Ok(Json(wire::LoadedModel::from(info)).into_response())
}

pub async fn unload(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<UnloadRequest>,
) -> Result<Response, ApiError> {
    check_model(&req.model)?;
    let scheduler = state.scheduler.clone();
    let unloaded = blocking(move || scheduler.unload(&req.model)).await?;
    Ok(Json(wire::Unloaded::from(unloaded)).into_response())
}
