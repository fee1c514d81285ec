//! One request path for both APIs. [`Inference`] is a generation request
//! as kolmd understands it, whatever door it came in by: `http/openai.rs`
//! and `grpc.rs` only convert their wire shapes into it and the engine's
//! events back. [`prepare`] checks it, leases the model, grounds a chat in
//! the artifact's recall index, fills every unset setting (from the
//! artifact's evaluation record for a chat on a compiled artifact, else the
//! defaults below), renders the chat and builds the engine's request;
//! [`start`] queues it and waits for the first event, so a prompt the
//! engine refuses is a plain error on either API; [`complete`] generates a
//! whole answer, checked by the artifact's verifier and retried when it
//! fails and the request allows it ([`crate::verify`]), and observed by the
//! drift log ([`crate::drift`]) as streamed answers are at their end.
//!
//! The rules, the same on both doors (`docs/kolmd.md`, the proto):
//! - temperature 1.0, top_p 1, top_k and min_p off, no penalties, unless
//!   set (or the evaluation record says otherwise for a chat);
//! - the model's BOS token is added wherever its vocabulary asks for one,
//!   chat or raw prompt, never twice;
//! - a seed is 0 to 2^32-1 (the engine's seeds are 32-bit), never cast;
//! - a setting that cannot be honoured is refused, never ignored.

use kolm_recall::Hit;
use std::sync::Arc;

use kolm_runtime::{
    ChatMessage, Completion, GenerateEvent, GenerateRequest, GenerationStream, Grammar,
    RuntimeError, SamplingParams,
};
use tokio_util::sync::CancellationToken;

use crate::config::{KeepAlive, MAX_VERIFY_RETRIES};
use crate::drift::{DriftLog, Observation};
use crate::scheduler::{Lease, Scheduler, SchedulerError};
use crate::verify::{pick, Check, Verified, RETRY_TEMPERATURE};

/// Temperature of a request that sets none (OpenAI's default).
pub const DEFAULT_TEMPERATURE: f32 = 1.0;
/// The most stop sequences a request may give.
pub const MAX_STOP: usize = 16;
/// Chunks a grounded chat gets unless the request says otherwise.
pub const DEFAULT_RECALL_K: usize = kolm_recall::prompt::DEFAULT_K;
/// The most chunks a request may ask for.
pub const MAX_RECALL_K: usize = kolm_recall::prompt::MAX_K;

/// What to complete.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// A raw prompt, used as it is.
    Text(String),
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
}

/// The output constraint a request asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    /// Free text, even where the artifact's verifier has a shape.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid under this schema.
    JsonSchema(serde_json::Value),
}

/// A generation request, transport-neutral. `None` leaves a setting to the
/// defaults.
#[derive(Clone, Debug)]
pub struct Inference {
    /// `NAME` or `NAME:VERSION`.
    pub model: String,
    pub prompt: Prompt,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// 0: no limit.
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub seed: Option<u64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    /// Token id and the bias added to its logit.
    pub logit_bias: Vec<(i32, f32)>,
    pub stop: Vec<String>,
    pub response_format: Option<ResponseFormat>,
    /// Chunks of the recall index a chat is grounded in; `Some(0)` turns
    /// recall off, `None` is [`DEFAULT_RECALL_K`].
    pub recall_k: Option<usize>,
    pub keep_alive: Option<KeepAlive>,
    /// `Some(false)`: decode this request token by token even when the
    /// daemon drafts.
    pub draft: Option<bool>,
    /// Answers sampled again when one fails the artifact's verifier; `None`
    /// is the daemon's setting for the artifact.
    pub verify_retries: Option<u32>,
}

impl Inference {
    /// A request for `prompt` on `model` with every setting left unset.
    pub fn new(model: impl Into<String>, prompt: Prompt) -> Inference {
        Inference {
            model: model.into(),
            prompt,
            max_tokens: None,
            temperature: None,
            top_p: None,
            top_k: None,
            min_p: None,
            seed: None,
            presence_penalty: None,
            frequency_penalty: None,
            repeat_penalty: None,
            logit_bias: Vec::new(),
            draft: None,
            verify_retries: None,
            stop: Vec::new(),
            response_format: None,
            recall_k: None,
            keep_alive: None,
        }
    }
}

/// Why a request was refused or failed before its first token.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A field is wrong; `param` names it as both APIs spell it.
    #[error("{message}")]
    Invalid {
        message: String,
        param: &'static str,
    },
    /// A chat on a model without a chat template.
    #[error("the model `{model}` has no chat template")]
    NoChatTemplate { model: String },
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("recall failed: {0}")]
    Recall(#[source] kolm_recall::RecallError),
}

fn invalid(param: &'static str, message: impl Into<String>) -> RequestError {
    RequestError::Invalid {
        message: message.into(),
        param,
    }
}

/// A request ready for the engine: the lease that keeps its model loaded,
/// the engine's request, and what grounding it got.
#[derive(Debug)]
pub struct Prepared {
    pub lease: Lease,
    pub request: GenerateRequest,
    /// The chunks the chat was grounded in; `None` when it was not (no
    /// index, recall off, no user message, or a raw prompt).
    pub citations: Option<Vec<Hit>>,
    /// The verifier's check of the answer: a chat on an artifact with a
    /// verifier.
    pub check: Option<Check>,
    /// Answers sampled again when one fails the check.
    pub retries: u32,
    /// The drift log's observation of the answer: a chat on a compiled
    /// artifact whose drift is logged.
    pub drift: Option<Observation>,
}

/// Checks what can be checked without the model.
fn check(req: &Inference) -> Result<(), RequestError> {
    if req.model.trim().is_empty() {
        return Err(invalid("model", "model is required"));
    }
    match &req.prompt {
        Prompt::Text(t) if t.is_empty() => {
            return Err(invalid("prompt", "the prompt must not be empty"))
        }
        Prompt::Chat(m) if m.is_empty() => {
            return Err(invalid("messages", "messages must not be empty"))
        }
        Prompt::Text(_) if req.recall_k.is_some_and(|k| k > 0) => {
            return Err(invalid(
                "recall",
                "recall grounds chats; a raw prompt cannot be grounded (send messages, or \
                 leave recall unset)",
            ))
        }
        _ => {}
    }
    if req.max_tokens == Some(0) {
        return Err(invalid("max_tokens", "max_tokens must be at least 1"));
    }
    let finite = |param: &'static str, v: Option<f32>, ok: fn(f32) -> bool, range: &str| match v {
        Some(x) if !(x.is_finite() && ok(x)) => {
            Err(invalid(param, format!("{param} must be {range}, got {x}")))
        }
        _ => Ok(()),
    };
    finite("temperature", req.temperature, |x| x >= 0.0, "0 or more")?;
    finite(
        "top_p",
        req.top_p,
        |x| x > 0.0 && x <= 1.0,
        "above 0 and at most 1",
    )?;
    finite(
        "min_p",
        req.min_p,
        |x| (0.0..1.0).contains(&x),
        "at least 0 and below 1",
    )?;
    let penalty = |x: f32| (-2.0..=2.0).contains(&x);
    finite(
        "presence_penalty",
        req.presence_penalty,
        penalty,
        "between -2 and 2",
    )?;
    finite(
        "frequency_penalty",
        req.frequency_penalty,
        penalty,
        "between -2 and 2",
    )?;
    finite("repeat_penalty", req.repeat_penalty, |x| x > 0.0, "above 0")?;
    if let Some(seed) = req.seed {
        if u32::try_from(seed).is_err() {
            return Err(invalid(
                "seed",
                format!(
                    "seed must be between 0 and {} (the engine's seeds are 32-bit), got {seed}",
                    u32::MAX
                ),
            ));
        }
    }
    if req.stop.len() > MAX_STOP {
        return Err(invalid(
            "stop",
            format!("at most {MAX_STOP} stop sequences"),
        ));
    }
    if req.stop.iter().any(String::is_empty) {
        return Err(invalid("stop", "a stop sequence must not be empty"));
    }
    if let Some(k) = req.recall_k {
        if k > MAX_RECALL_K {
            return Err(invalid(
                "recall",
                format!(
                    "recall asks for {k} chunks (`recall.k` over HTTP, `recall_k` over gRPC), \
                     at most {MAX_RECALL_K}; 0 turns recall off"
                ),
            ));
        }
    }
    if let Some(n) = req.verify_retries {
        if n > MAX_VERIFY_RETRIES {
            return Err(invalid(
                "verify",
                format!(
                    "verify retries is {n} (`verify.retries` over HTTP, `verify_retries` over \
                     gRPC), at most {MAX_VERIFY_RETRIES}"
                ),
            ));
        }
    }
    if let Some(ResponseFormat::JsonSchema(schema)) = &req.response_format {
        if !schema.is_object() {
            return Err(invalid(
                "response_format",
                "response_format's JSON schema must be a JSON object",
            ));
        }
    }
    Ok(())
}

/// Validates `req`, leases its model (loading it if needed) and builds the
/// engine's request; see the module docs for the order and the defaults.
pub async fn prepare(
    scheduler: &Scheduler,
    drift: &Arc<DriftLog>,
    req: Inference,
) -> Result<Prepared, RequestError> {
    check(&req)?;
    let lease = scheduler.acquire(&req.model, req.keep_alive).await?;
    let verification = match (&req.prompt, &lease.model().verifier) {
        (Prompt::Chat(messages), Some(v)) => Some(Check::new(Arc::clone(v), messages)),
        _ => None,
    };
    let retries = match req.verify_retries {
        Some(n) if n > 0 && verification.is_none() => {
            let why = match req.prompt {
                Prompt::Text(_) => "a raw prompt is not checked (send messages)".to_owned(),
                Prompt::Chat(_) => format!("the model `{}` has no verifier", req.model),
            };
            return Err(invalid(
                "verify",
                format!("verify retries need an answer the artifact's verifier checks: {why}"),
            ));
        }
        Some(n) => n,
        None if verification.is_some() => scheduler
            .config()
            .verify_retries
            .for_artifact(&lease.model().name),
        None => 0,
    };
    let context = lease.model().context.context_per_slot();
    if let Some(m) = req.max_tokens {
        if m >= context {
            return Err(invalid(
                "max_tokens",
                format!(
                    "max_tokens is {m}, but the context holds {context} tokens per request \
                     (prompt included)"
                ),
            ));
        }
    }
    let requested_grammar = req.response_format.map(|f| match f {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(Grammar::JsonObject),
        ResponseFormat::JsonSchema(s) => Some(Grammar::JsonSchema(s)),
    });
    let mut observation = None;
    let (prompt, serving, citations) = match req.prompt {
        // A raw prompt is not a chat on the artifact's task: no record.
        Prompt::Text(text) => (text, None, None),
        Prompt::Chat(mut messages) => {
            let model = lease.model();
            observation = drift.observe(
                &model.name,
                &model.reference,
                model.drift.as_ref(),
                model.recipes.as_ref(),
                &messages,
            );
            let k = req.recall_k.unwrap_or(DEFAULT_RECALL_K);
            let citations = match k {
                0 => None,
                k => lease
                    .ground(&mut messages, k)
                    .await
                    .transpose()
                    .map_err(RequestError::Recall)?,
            };
            if let Some(o) = observation.as_mut() {
                o.recall_best = citations
                    .as_deref()
                    .and_then(kolm_recall::prompt::best_similarity);
            }
            let serving = lease.model().serving.as_ref();
            crate::serving::prepend_system(serving, &mut messages);
            let prompt = lease.render_chat(&messages).map_err(|e| match e {
                RuntimeError::NoChatTemplate => RequestError::NoChatTemplate {
                    model: req.model.clone(),
                },
                e => e.into(),
            })?;
            (prompt, serving, citations)
        }
    };
    let settled = crate::serving::resolve(
        crate::serving::Requested {
            temperature: req.temperature,
            max_tokens: req.max_tokens,
            grammar: requested_grammar,
        },
        serving,
        DEFAULT_TEMPERATURE,
        context,
    );
    let request = GenerateRequest {
        prompt,
        add_bos: true,
        params: SamplingParams {
            temperature: settled.temperature,
            top_p: req.top_p.unwrap_or(1.0),
            top_k: req
                .top_k
                .map_or(0, |k| i32::try_from(k).unwrap_or(i32::MAX)),
            min_p: req.min_p.unwrap_or(0.0),
            seed: req.seed.and_then(|s| u32::try_from(s).ok()),
            presence_penalty: req.presence_penalty.unwrap_or(0.0),
            frequency_penalty: req.frequency_penalty.unwrap_or(0.0),
            repeat_penalty: req.repeat_penalty.unwrap_or(1.0),
            logit_bias: req.logit_bias,
            ..SamplingParams::default()
        },
        max_tokens: settled.max_tokens.unwrap_or(context),
        stop: req.stop,
        grammar: settled.grammar,
        draft: req.draft.unwrap_or(true),
    };
    Ok(Prepared {
        lease,
        request,
        citations,
        check: verification,
        retries,
        drift: observation,
    })
}

/// Queues `prepared` and waits for its first event. A request the engine
/// refuses (a prompt too long for the context, a bad schema) is an error
/// here, before anything is streamed.
pub async fn start(
    prepared: &Prepared,
    cancel: &CancellationToken,
) -> Result<(GenerationStream, GenerateEvent), RequestError> {
    let mut stream = prepared.lease.generate(prepared.request.clone())?;
    match next_event(&mut stream, cancel).await {
        GenerateEvent::Failed(e) => Err(e.into()),
        first => Ok((stream, first)),
    }
}

/// A whole answer: its text, the engine's summary of it, and the
/// verifier's word where the request is checked.
#[derive(Debug)]
pub struct Answer {
    pub text: String,
    pub completion: Completion,
    pub verified: Option<Verified>,
}

/// Generates the whole answer of `prepared`. A checked answer that fails
/// is sampled again, up to `prepared.retries` times: attempt `i` (from 1)
/// takes the request's seed plus `i` (a fresh seed where it has none) and
/// [`RETRY_TEMPERATURE`] where the request is greedy. The first answer that
/// passes is returned, else the one that failed the fewest rules
/// ([`crate::verify::pick`]); `verified.attempts` counts the answers
/// generated.
pub async fn complete(
    prepared: &Prepared,
    cancel: &CancellationToken,
) -> Result<Answer, RequestError> {
    let mut answers: Vec<Answer> = Vec::new();
    let mut verdicts: Vec<Verified> = Vec::new();
    for attempt in 0..=prepared.retries {
        let mut request = prepared.request.clone();
        if attempt > 0 {
            request.params.seed = request.params.seed.map(|s| s.wrapping_add(attempt));
            if request.params.temperature <= 0.0 {
                request.params.temperature = RETRY_TEMPERATURE;
            }
        }
        let mut stream = prepared.lease.generate(request)?;
        let mut text = String::new();
        let completion = loop {
            match next_event(&mut stream, cancel).await {
                GenerateEvent::Text(t) => text.push_str(&t),
                GenerateEvent::Done(c) => break c,
                GenerateEvent::Failed(e) => return Err(e.into()),
            }
        };
        let verdict = prepared
            .check
            .as_ref()
            .map(|c| c.verdict(&text, attempt + 1));
        let passed = verdict.as_ref().is_none_or(|v| v.passed);
        answers.push(Answer {
            text,
            completion,
            verified: None,
        });
        if let Some(v) = verdict {
            verdicts.push(v);
        }
        if passed {
            break;
        }
    }
    let attempts = answers.len() as u32;
    let chosen = pick(&verdicts);
    let mut answer = answers.swap_remove(chosen.min(answers.len() - 1));
    answer.verified = verdicts
        .get(chosen)
        .cloned()
        .map(|v| Verified { attempts, ..v });
    if let Some(o) = &prepared.drift {
        o.record(&answer.text, &answer.completion, answer.verified.as_ref());
    }
    Ok(answer)
}

/// The next event of a generation. The engine ending a stream without a
/// last event (its model went away) and the end of the daemon's shutdown
/// grace are failures.
pub async fn next_event(
    stream: &mut GenerationStream,
    cancel: &CancellationToken,
) -> GenerateEvent {
    tokio::select! {
        e = stream.next() => e.unwrap_or(GenerateEvent::Failed(RuntimeError::Unloaded)),
        () = cancel.cancelled() => GenerateEvent::Failed(RuntimeError::Cancelled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> Inference {
        Inference::new(
            "m",
            Prompt::Chat(vec![ChatMessage {
                role: "user".into(),
                content: "hi".into(),
            }]),
        )
    }

    fn refused(req: Inference) -> &'static str {
        match check(&req) {
            Err(RequestError::Invalid { param, .. }) => param,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn each_bad_field_is_refused_by_name() {
        assert!(check(&chat()).is_ok());
        let mut r = chat();
        r.model = " ".into();
        assert_eq!(refused(r), "model");
        assert_eq!(
            refused(Inference::new("m", Prompt::Chat(vec![]))),
            "messages"
        );
        assert_eq!(
            refused(Inference::new("m", Prompt::Text(String::new()))),
            "prompt"
        );
        let mut r = Inference::new("m", Prompt::Text("x".into()));
        r.recall_k = Some(2);
        assert_eq!(refused(r), "recall");
        let mut r = Inference::new("m", Prompt::Text("x".into()));
        r.recall_k = Some(0);
        assert!(check(&r).is_ok(), "recall off on a raw prompt is honoured");
        type BreakIt = fn(&mut Inference);
        let cases: [(&str, BreakIt); 12] = [
            ("verify", |r| {
                r.verify_retries = Some(MAX_VERIFY_RETRIES + 1)
            }),
            ("max_tokens", |r| r.max_tokens = Some(0)),
            ("temperature", |r| r.temperature = Some(-0.1)),
            ("temperature", |r| r.temperature = Some(f32::NAN)),
            ("top_p", |r| r.top_p = Some(0.0)),
            ("min_p", |r| r.min_p = Some(1.0)),
            ("presence_penalty", |r| r.presence_penalty = Some(2.5)),
            ("repeat_penalty", |r| r.repeat_penalty = Some(0.0)),
            ("seed", |r| r.seed = Some(u64::from(u32::MAX) + 1)),
            ("stop", |r| r.stop = vec![String::new()]),
            ("recall", |r| r.recall_k = Some(MAX_RECALL_K + 1)),
            ("response_format", |r| {
                r.response_format = Some(ResponseFormat::JsonSchema(serde_json::json!([1])))
            }),
        ];
        for (param, break_it) in cases {
            let mut r = chat();
            break_it(&mut r);
            assert_eq!(refused(r), param);
        }
        let mut r = chat();
        r.stop = vec!["x".into(); MAX_STOP + 1];
        assert_eq!(refused(r), "stop");
        let mut r = chat();
        r.seed = Some(u64::from(u32::MAX));
        r.stop = vec!["x".into(); MAX_STOP];
        assert!(
            check(&r).is_ok(),
            "the largest seed and the most stops pass"
        );
    }
}
