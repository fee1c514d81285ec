//! Wire shapes of the two teacher APIs: OpenAI chat completions
//! (`POST {base}/chat/completions`) and Anthropic Messages
//! (`POST {base}/v1/messages`). Only the fields kolm sends or reads.

use serde::{Deserialize, Serialize};

use super::ChatRequest;

/// The `anthropic-version` header kolm sends.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Serialize)]
pub(crate) struct OpenAiRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<WireMessage<'a>>,
    pub temperature: f32,
    pub max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

#[derive(Serialize)]
pub(crate) struct WireMessage<'a> {
    pub role: &'a str,
    pub content: &'a str,
}

impl<'a> OpenAiRequest<'a> {
    pub fn new(model: &'a str, req: &'a ChatRequest) -> Self {
        Self {
            model,
            messages: req
                .messages
                .iter()
                .map(|m| WireMessage {
                    role: &m.role,
                    content: &m.content,
                })
                .collect(),
            temperature: req.temperature,
            max_tokens: req.max_tokens,
            seed: req.seed,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct OpenAiResponse {
    pub choices: Vec<OpenAiChoice>,
    pub usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
pub(crate) struct OpenAiChoice {
    pub message: OpenAiMessage,
    pub finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct OpenAiMessage {
    pub content: Option<String>,
    pub refusal: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct OpenAiUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Serialize)]
pub(crate) struct AnthropicRequest<'a> {
    pub model: &'a str,
    pub max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub messages: Vec<WireMessage<'a>>,
    pub temperature: f32,
}

impl<'a> AnthropicRequest<'a> {
    /// System messages go to the top-level `system` field (joined by blank
    /// lines), as the Messages API requires.
    pub fn new(model: &'a str, req: &'a ChatRequest) -> Self {
        let system: Vec<&str> = req
            .messages
            .iter()
            .filter(|m| m.role == "system")
            .map(|m| m.content.as_str())
            .collect();
        Self {
            model,
            max_tokens: req.max_tokens,
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            messages: req
                .messages
                .iter()
                .filter(|m| m.role != "system")
                .map(|m| WireMessage {
                    role: &m.role,
                    content: &m.content,
                })
                .collect(),
            // The Messages API accepts temperature in [0, 1].
            temperature: req.temperature.clamp(0.0, 1.0),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct AnthropicResponse {
    pub content: Vec<AnthropicBlock>,
    pub stop_reason: Option<String>,
    pub usage: AnthropicUsage,
}

#[derive(Deserialize)]
pub(crate) struct AnthropicBlock {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct AnthropicUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Either API's error body: `{"error": {"message": ...}}` (OpenAI) or
/// `{"type": "error", "error": {"type": ..., "message": ...}}` (Anthropic).
#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Deserialize)]
pub(crate) struct ErrorDetail {
    pub message: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// Why a 2xx answer is not the API's response shape
/// ([`TeacherError::Malformed`](super::TeacherError::Malformed) carries it).
#[derive(Debug, thiserror::Error)]
pub enum MalformedResponse {
    /// The body is not the response's JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// An OpenAI response with an empty `choices`.
    #[error("the response has no choices")]
    NoChoices,
    /// The first choice is a refusal.
    #[error("the model refused: {0}")]
    Refused(String),
    /// The first choice has neither content nor a refusal.
    #[error("the first choice has no message content")]
    NoContent,
    /// An Anthropic response with no `text` block.
    #[error("the response has no text content block")]
    NoTextBlock,
    /// No `usage`, while the model has a price.
    #[error(
        "the response has no usage, so its cost cannot be accounted (model {model:?} has a price)"
    )]
    Unmetered {
        /// The priced model.
        model: String,
    },
}

/// The text, finish reason and token counts of a response.
pub(crate) struct Parsed {
    pub text: String,
    pub finish_reason: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The response reported its token usage.
    pub metered: bool,
}

pub(crate) fn parse_openai(body: &[u8]) -> Result<Parsed, MalformedResponse> {
    let r: OpenAiResponse = serde_json::from_slice(body)?;
    let choice = r
        .choices
        .into_iter()
        .next()
        .ok_or(MalformedResponse::NoChoices)?;
    let text = match (choice.message.content, choice.message.refusal) {
        (Some(t), _) => t,
        (None, Some(refusal)) => return Err(MalformedResponse::Refused(refusal)),
        (None, None) => return Err(MalformedResponse::NoContent),
    };
    Ok(Parsed {
        text,
        finish_reason: choice.finish_reason,
        input_tokens: r.usage.as_ref().map_or(0, |u| u.prompt_tokens),
        output_tokens: r.usage.as_ref().map_or(0, |u| u.completion_tokens),
        metered: r.usage.is_some(),
    })
}

pub(crate) fn parse_anthropic(body: &[u8]) -> Result<Parsed, MalformedResponse> {
    let r: AnthropicResponse = serde_json::from_slice(body)?;
    let texts: Vec<String> = r
        .content
        .into_iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text)
        .collect();
    if texts.is_empty() {
        return Err(MalformedResponse::NoTextBlock);
    }
    Ok(Parsed {
        text: texts.concat(),
        finish_reason: r.stop_reason,
        input_tokens: r.usage.input_tokens,
        output_tokens: r.usage.output_tokens,
        metered: true,
    })
}

/// The message of an API error body, if the body is one.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let e: ErrorBody = serde_json::from_slice(body).ok()?;
    match (e.error.kind, e.error.message) {
        (Some(k), Some(m)) => Some(format!("{k}: {m}")),
        (None, Some(m)) => Some(m),
        (Some(k), None) => Some(k),
        (None, None) => None,
    }
}
