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
use kolm_artifact::serving::Serving;
use kolm_runtime::{
    ChatMessage, Completion, FinishReason, GenerateEvent, GenerateRequest, GenerationStream,
    Grammar, RuntimeError, SamplingParams,
};
use kolm_store::ArtifactRecord;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::extract::ApiJson;
use super::AppState;
use crate::config::KeepAlive;
use crate::metrics::Metrics;
use crate::scheduler::{Lease, LoadOptions};

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
        Some(Value::String(s)) => KeepAlive::parse(s)
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("keep_alive: {e}"), "keep_alive")),
        Some(_) => Err(ApiError::invalid(
            "keep_alive must be a duration like \"5m\" or a number of seconds",
            "keep_alive",
        )),
    }
}

/// What a validated request asks of the engine. `temperature`,
/// `max_tokens` and `grammar` are what the request set; [`Plan::settle`]
/// fills the rest (from the artifact's evaluation record for chats).
struct Plan {
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    params: SamplingParams,
    stop: Vec<String>,
    /// `None`: no `response_format`; `Some(None)`: `text`.
    requested_grammar: Option<Option<Grammar>>,
    grammar: Option<Grammar>,
    stream: bool,
    include_usage: bool,
    keep_alive: Option<KeepAlive>,
}

fn plan(c: &Common) -> Result<Plan, ApiError> {
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
                if max_param == "max_tokens" {
                    "max_tokens"
                } else {
                    "max_completion_tokens"
                },
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
    let params = SamplingParams {
        temperature: c.temperature.unwrap_or(1.0),
        top_p: c.top_p.unwrap_or(1.0),
        top_k: c.top_k.unwrap_or(0),
        min_p: c.min_p.unwrap_or(0.0),
        seed: c.seed.map(|s| s as u64 as u32),
        presence_penalty: c.presence_penalty.unwrap_or(0.0),
        frequency_penalty: c.frequency_penalty.unwrap_or(0.0),
        repeat_penalty: c.repeat_penalty.unwrap_or(1.0),
        logit_bias,
        ..SamplingParams::default()
    };
    let stop = match &c.stop {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s.clone()],
        Some(OneOrMany::Many(v)) => {
            if v.len() > 16 {
                return Err(ApiError::invalid("at most 16 stop sequences", "stop"));
            }
            v.iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ApiError::invalid("stop must be strings", "stop"))
                })
                .collect::<Result<_, _>>()?
        }
    };
    let requested_grammar = match &c.response_format {
        None | Some(Value::Null) => None,
        Some(f) => Some(match f.get("type").and_then(Value::as_str) {
            Some("text") => None,
            Some("json_object") => Some(Grammar::JsonObject),
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
                if !schema.is_object() {
                    return Err(ApiError::InvalidRequest {
                        message: "response_format json_schema.schema must be a JSON object".into(),
                        param: Some("response_format"),
                        code: Some("invalid_response_format"),
                    });
                }
                Some(Grammar::JsonSchema(schema.clone()))
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
    Ok(Plan {
        max_tokens,
        temperature: c.temperature,
        params,
        stop,
        requested_grammar,
        grammar: None,
        stream: c.stream.unwrap_or(false),
        include_usage: c
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        keep_alive: keep_alive(&c.keep_alive)?,
    })
}

impl Plan {
    /// Fills the settings the request left unset: from `serving` (a
    /// compiled artifact's chat), else the OpenAI defaults.
    fn settle(&mut self, serving: Option<&Serving>, context: u32) {
        let resolved = crate::serving::resolve(
            crate::serving::Requested {
                temperature: self.temperature,
                max_tokens: self.max_tokens,
                grammar: self.requested_grammar.take(),
            },
            serving,
            1.0,
            context,
        );
        self.params.temperature = resolved.temperature;
        self.max_tokens = resolved.max_tokens;
        self.grammar = resolved.grammar;
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

fn usage(c: &Completion) -> Value {
    json!({
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": c.cached_tokens},
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// The next event, or a cancellation when the daemon's shutdown grace
/// period ends.
async fn next_event(
    stream: &mut GenerationStream,
    cancel: &CancellationToken,
) -> Option<GenerateEvent> {
    tokio::select! {
        e = stream.next() => e,
        () = cancel.cancelled() => Some(GenerateEvent::Failed(RuntimeError::Cancelled)),
    }
}

/// Starts generation and waits for its first event, so that a request the
/// engine refuses (prompt too long, bad schema) is a plain HTTP error.
async fn start(
    state: &AppState,
    lease: &Lease,
    plan: &Plan,
    prompt: String,
) -> Result<(GenerationStream, GenerateEvent), ApiError> {
    let context = lease.model().context.context_per_slot();
    if let Some(m) = plan.max_tokens {
        if m >= context {
            return Err(ApiError::invalid(
                format!("max_tokens is {m}, but the context holds {context} tokens per request (prompt included)"),
                "max_tokens",
            ));
        }
    }
    let request = GenerateRequest {
        prompt,
        add_bos: true,
        params: plan.params.clone(),
        max_tokens: plan.max_tokens.unwrap_or(context),
        stop: plan.stop.clone(),
        grammar: plan.grammar.clone(),
    };
    let mut stream = lease.generate(request)?;
    match next_event(&mut stream, &state.cancel).await {
        Some(GenerateEvent::Failed(e)) => Err(e.into()),
        Some(first) => Ok((stream, first)),
        None => Err(ApiError::Internal(
            "the engine ended the request without an answer".into(),
        )),
    }
}

fn record(metrics: &Metrics, model: &str, c: &Completion) {
    metrics.generation(
        model,
        c.prompt_tokens,
        c.completion_tokens,
        c.time_to_first_token,
        c.total_time,
    );
}

async fn respond(
    state: AppState,
    kind: Kind,
    lease: Lease,
    plan: Plan,
    prompt: String,
    citations: Option<Value>,
) -> Result<Response, ApiError> {
    let (mut stream, first) = start(&state, &lease, &plan, prompt).await?;
    let model = lease.model().reference.clone();
    let id = new_id(if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    });
    let created = now_seconds();
    if plan.stream {
        let sse = SseState {
            kind,
            id,
            created,
            model,
            include_usage: plan.include_usage,
            first: Some(first),
            stream,
            _lease: lease,
            pending: VecDeque::new(),
            done: false,
            metrics: state.metrics.clone(),
            cancel: state.cancel.clone(),
        };
        if kind == Kind::Chat {
            let mut sse = sse;
            let mut chunk = sse.chunk_value(json!({"role": "assistant", "content": ""}), None);
            if let Some(c) = citations {
                // The citations ride on the first chunk.
                chunk["kolm"] = json!({ "citations": c });
            }
            sse.pending
                .push_back(Event::default().data(chunk.to_string()));
            return Ok(sse_response(sse));
        }
        return Ok(sse_response(sse));
    }
    let mut text = String::new();
    let mut event = Some(first);
    let completion = loop {
        match event {
            Some(GenerateEvent::Text(t)) => text.push_str(&t),
            Some(GenerateEvent::Done(c)) => break c,
            Some(GenerateEvent::Failed(e)) => return Err(e.into()),
            None => {
                return Err(ApiError::Internal(
                    "the engine ended the request early".into(),
                ))
            }
        }
        event = next_event(&mut stream, &state.cancel).await;
    };
    drop(stream);
    drop(lease);
    record(&state.metrics, &model, &completion);
    let reason = finish_reason(completion.finish_reason);
    let mut body = match kind {
        Kind::Chat => json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": null, "finish_reason": reason}],
            "usage": usage(&completion),
        }),
        Kind::Text => json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": reason}],
            "usage": usage(&completion),
        }),
    };
    if let Some(c) = citations {
        body["kolm"] = json!({ "citations": c });
    }
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
    _lease: Lease,
    pending: VecDeque<Event>,
    done: bool,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
}

impl SseState {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Event {
        Event::default().data(self.chunk_value(delta, finish).to_string())
    }

    fn chunk_value(&self, delta: Value, finish: Option<&str>) -> Value {
        let mut body = match self.kind {
            Kind::Chat => json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            }),
            Kind::Text => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": delta, "logprobs": null, "finish_reason": finish}],
            }),
        };
        if self.include_usage {
            body["usage"] = Value::Null;
        }
        body
    }

    fn handle(&mut self, event: Option<GenerateEvent>) {
        match event {
            Some(GenerateEvent::Text(t)) => {
                let delta = match self.kind {
                    Kind::Chat => json!({"content": t}),
                    Kind::Text => json!(t),
                };
                let e = self.chunk(delta, None);
                self.pending.push_back(e);
            }
            Some(GenerateEvent::Done(c)) => {
                record(&self.metrics, &self.model, &c);
                let empty = match self.kind {
                    Kind::Chat => json!({}),
                    Kind::Text => json!(""),
                };
                let e = self.chunk(empty, Some(finish_reason(c.finish_reason)));
                self.pending.push_back(e);
                if self.include_usage {
                    let object = match self.kind {
                        Kind::Chat => "chat.completion.chunk",
                        Kind::Text => "text_completion",
                    };
                    let body = json!({
                        "id": self.id, "object": object, "created": self.created,
                        "model": self.model, "choices": [], "usage": usage(&c),
                    });
                    self.pending
                        .push_back(Event::default().data(body.to_string()));
                }
                self.pending.push_back(Event::default().data("[DONE]"));
                self.done = true;
            }
            Some(GenerateEvent::Failed(e)) => {
                let error = ApiError::from(e);
                self.pending
                    .push_back(Event::default().data(error.body().to_string()));
                self.done = true;
            }
            None => self.done = true,
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
                Some(first) => Some(first),
                None => next_event(&mut st.stream, &st.cancel).await,
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
    check_model(&req.model)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages must not be empty", "messages"));
    }
    let mut plan = plan(&req.common)?;
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
    let recall_k = recall_k(&req.recall)?;
    let lease = state.scheduler.acquire(&req.model, plan.keep_alive).await?;
    let (mut messages, citations) = ground(&lease, messages, recall_k).await?;
    let serving = lease.model().serving.as_ref();
    plan.settle(serving, lease.model().context.context_per_slot());
    crate::serving::prepend_system(serving, &mut messages);
    let prompt = lease.render_chat(&messages).map_err(|e| match e {
        RuntimeError::NoChatTemplate => ApiError::InvalidRequest {
            message: format!(
                "the model `{}` has no chat template; use /v1/completions with a prompt instead",
                req.model
            ),
            param: Some("messages"),
            code: Some("no_chat_template"),
        },
        e => e.into(),
    })?;
    respond(state, Kind::Chat, lease, plan, prompt, citations).await
}

/// Chunks a grounded request gets unless it sets `recall.k`.
pub const DEFAULT_RECALL_K: usize = kolm_recall::prompt::DEFAULT_K;
/// The most chunks a request may ask for.
pub const MAX_RECALL_K: usize = kolm_recall::prompt::MAX_K;

/// The `recall` extension: `None` off, else how many chunks.
fn recall_k(value: &Option<Value>) -> Result<Option<usize>, ApiError> {
    let bad = || {
        ApiError::invalid(
            format!("recall must be true, false or {{\"k\": 1..{MAX_RECALL_K}}}"),
            "recall",
        )
    };
    match value {
        None | Some(Value::Null) | Some(Value::Bool(true)) => Ok(Some(DEFAULT_RECALL_K)),
        Some(Value::Bool(false)) => Ok(None),
        Some(Value::Object(o)) => {
            if o.keys().any(|k| k != "k") {
                return Err(bad());
            }
            match o.get("k") {
                None => Ok(Some(DEFAULT_RECALL_K)),
                Some(k) => match k.as_u64() {
                    Some(0) => Ok(None),
                    Some(k) if k as usize <= MAX_RECALL_K => Ok(Some(k as usize)),
                    _ => Err(bad()),
                },
            }
        }
        Some(_) => Err(bad()),
    }
}

/// Grounds a chat in the artifact's recall index (if it has one and the
/// request did not turn recall off): the last user message is the query,
/// and the hits go into the system message by the template of
/// `docs/recall.md` (`kolm_recall::prompt`). Returns the messages to render
/// and the citations for the response's `kolm.citations`.
async fn ground(
    lease: &Lease,
    mut messages: Vec<ChatMessage>,
    k: Option<usize>,
) -> Result<(Vec<ChatMessage>, Option<Value>), ApiError> {
    let Some(k) = k else {
        return Ok((messages, None));
    };
    let Some(result) = lease.ground(&mut messages, k).await else {
        return Ok((messages, None));
    };
    let hits = result.map_err(|e| ApiError::Internal(format!("recall failed: {e}")))?;
    let citations: Vec<Value> = hits
        .iter()
        .map(|h| {
            let mut c = json!({
                "source": h.source,
                "offset": h.offset,
                "end": h.end,
                "score": h.score,
            });
            if let Some(p) = h.page {
                c["page"] = json!(p);
            }
            if let Some(r) = h.record {
                c["record"] = json!(r);
            }
            c
        })
        .collect();
    Ok((messages, Some(Value::Array(citations))))
}

pub async fn completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    check_model(&req.model)?;
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
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt must not be empty", "prompt"));
    }
    let mut plan = plan(&req.common)?;
    let lease = state.scheduler.acquire(&req.model, plan.keep_alive).await?;
    // A raw prompt is not a chat on the artifact's task: OpenAI defaults.
    plan.settle(None, lease.model().context.context_per_slot());
    respond(state, Kind::Text, lease, plan, prompt, None).await
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
    let data: Vec<Value> = result
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }))
    .into_response())
}

fn model_object(record: &ArtifactRecord, loaded: bool) -> Value {
    let created = record
        .installed_at()
        .map_or(0, |t| t.unix_timestamp().max(0));
    let p = &record.statement.predicate;
    json!({
        "id": record.reference(),
        "object": "model",
        "created": created,
        "owned_by": "kolm",
        "kolm": {
            "name": record.name,
            "version": record.version,
            "loaded": loaded,
            "size": record.size,
            "trusted": record.is_trusted(),
            "base": serde_json::to_value(&p.base).unwrap_or(Value::Null),
        },
    })
}

async fn installed(state: &AppState) -> Result<Vec<ArtifactRecord>, ApiError> {
    let scheduler = state.scheduler.clone();
    tokio::task::spawn_blocking(move || scheduler.installed())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

pub async fn list_models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let records = installed(&state).await?;
    let loaded: Vec<String> = state
        .scheduler
        .list_loaded()
        .into_iter()
        .map(|l| l.model)
        .collect();
    let data: Vec<Value> = records
        .iter()
        .map(|r| model_object(r, loaded.contains(&r.reference())))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let scheduler = state.scheduler.clone();
    let record = tokio::task::spawn_blocking(move || scheduler.resolve(&id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
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
    Json(json!({
        "models": state.scheduler.list_loaded(),
        "bases": memory.bases.iter().map(|(d, b, n)| json!({"base": d, "bytes": b, "artifacts": n})).collect::<Vec<_>>(),
        "memory_bytes": memory.total_bytes,
    }))
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
    Ok(Json(info).into_response())
}

pub async fn unload(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<UnloadRequest>,
) -> Result<Response, ApiError> {
    check_model(&req.model)?;
    let scheduler = state.scheduler.clone();
    let was = tokio::task::spawn_blocking(move || scheduler.unload(&req.model))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({"unloaded": was})).into_response())
}
