//! The OpenAI response bodies and kolm's control bodies as serde structs:
//! one definition per shape, so a completion, its chunks and its usage
//! cannot drift apart. Field names and order are the wire's; `kolm` is the
//! one extension object (citations, drafting, artifact facts). Nothing here decides
//! anything: the handlers in `openai.rs` fill these in.

use serde::Serialize;

use crate::scheduler::LoadedInfo;

/// `usage` of a completion.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// `usage.prompt_tokens_details`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose KV cache was reused.
    pub cached_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32, cached_tokens: u32) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens },
        }
    }
}

/// One source a grounded answer was given (`kolm.citations`).
#[derive(Clone, Debug, Serialize)]
pub struct Citation {
    pub source: String,
    /// Byte offsets of the chunk in the source.
    pub offset: u64,
    pub end: u64,
    pub score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
}

impl From<&kolm_recall::Hit> for Citation {
    fn from(h: &kolm_recall::Hit) -> Citation {
        Citation {
            source: h.source.clone(),
            offset: h.offset,
            end: h.end,
            score: h.score,
            page: h.page,
            record: h.record,
        }
    }
}

/// The `kolm` extension object of a completion (citations, drafting, the
/// verifier's word), a stream's first chunk (citations) or its finishing
/// chunk (drafting, verifier).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CompletionExtension {
    /// The chunks a grounded chat was given; absent when it was not
    /// grounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citations: Option<Vec<Citation>>,
    /// What drafting did; absent when the request did not draft.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft: Option<Draft>,
    /// The artifact's verifier on the answer; absent when it was not
    /// checked (a raw prompt, or an artifact with no verifier).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
}

impl CompletionExtension {
    /// `None` when there is nothing to say (no `kolm` object on the wire).
    pub fn some(self) -> Option<CompletionExtension> {
        (self.citations.is_some() || self.draft.is_some() || self.verified.is_some())
            .then_some(self)
    }
}

pub use crate::verify::Verified;

/// `kolm.draft`: tokens drafted with no draft model and checked by the
/// model (`docs/kolmd.md`, "Drafting").
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Draft {
    pub drafted: u32,
    pub accepted: u32,
    pub steps: u32,
}

impl From<kolm_runtime::DraftStats> for Draft {
    fn from(d: kolm_runtime::DraftStats) -> Draft {
        Draft {
            drafted: d.drafted,
            accepted: d.accepted,
            steps: d.steps,
        }
    }
}

/// The assistant's message in a chat completion.
#[derive(Clone, Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

/// One choice of a completion: a chat message or a text.
#[derive(Clone, Debug, Serialize)]
pub struct Choice {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<AssistantMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Always `null`: kolmd does not return log-probabilities.
    pub logprobs: (),
    pub finish_reason: &'static str,
}

/// `chat.completion` and `text_completion` bodies.
#[derive(Clone, Debug, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kolm: Option<CompletionExtension>,
}

/// A chat chunk's `delta`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a streamed chunk: a chat `delta` or a `text`.
#[derive(Clone, Debug, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub logprobs: (),
    pub finish_reason: Option<&'static str>,
}

/// `chat.completion.chunk` and streamed `text_completion` bodies.
#[derive(Clone, Debug, Serialize)]
pub struct Chunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// With `stream_options.include_usage`: `null` on every chunk but the
    /// last, which has no choices and the usage. Absent otherwise.
    #[serde(skip_serializing_if = "UsageField::is_absent")]
    pub usage: UsageField,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kolm: Option<CompletionExtension>,
}

/// A chunk's `usage`: absent, `null`, or the figures.
#[derive(Clone, Copy, Debug)]
pub enum UsageField {
    Absent,
    Null,
    Some(Usage),
}

impl UsageField {
    fn is_absent(&self) -> bool {
        matches!(self, UsageField::Absent)
    }
}

impl Serialize for UsageField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            UsageField::Absent | UsageField::Null => s.serialize_none(),
            UsageField::Some(u) => u.serialize(s),
        }
    }
}

/// `/v1/embeddings`.
#[derive(Clone, Debug, Serialize)]
pub struct EmbeddingList {
    pub object: &'static str,
    pub data: Vec<EmbeddingObject>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

/// One embedding.
#[derive(Clone, Debug, Serialize)]
pub struct EmbeddingObject {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingValue,
}

/// An embedding as floats, or as base64 of little-endian f32s.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

/// `usage` of `/v1/embeddings`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
}

/// `/v1/models`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<Model>,
}

/// One installed artifact as an OpenAI model.
#[derive(Clone, Debug, Serialize)]
pub struct Model {
    /// `name:version`.
    pub id: String,
    pub object: &'static str,
    /// Unix seconds of the install.
    pub created: i64,
    pub owned_by: &'static str,
    pub kolm: ModelExtension,
}

/// A model's `kolm` object.
#[derive(Clone, Debug, Serialize)]
pub struct ModelExtension {
    pub name: String,
    pub version: String,
    pub loaded: bool,
    /// Bytes of the artifact.
    pub size: u64,
    /// Whether its signer is trusted.
    pub trusted: bool,
    /// The base model as the manifest names it.
    pub base: serde_json::Value,
}

/// `GET /kolm/v1/loaded`.
#[derive(Clone, Debug, Serialize)]
pub struct Loaded {
    pub models: Vec<LoadedModel>,
    pub bases: Vec<LoadedBase>,
    /// Bytes of every loaded base and artifact together.
    pub memory_bytes: u64,
}

/// One loaded base and how many artifacts use it.
#[derive(Clone, Debug, Serialize)]
pub struct LoadedBase {
    /// SHA-256 of the base blob.
    pub base: String,
    pub bytes: u64,
    pub artifacts: usize,
}

/// One loaded artifact (`/kolm/v1/loaded`'s `models`, `/kolm/v1/load`'s
/// answer).
#[derive(Clone, Debug, Serialize)]
pub struct LoadedModel {
    /// `name:version`.
    pub model: String,
    /// SHA-256 of its base blob; artifacts sharing it share the weights.
    pub base: String,
    pub base_bytes: u64,
    /// Bytes of its KV cache.
    pub context_bytes: u64,
    /// Bytes of its recall embedder (0 without an index).
    pub recall_bytes: u64,
    /// `cpu`, or `gpu:N` with N offloaded layers.
    pub device: String,
    pub slots: u32,
    pub context_per_slot: u32,
    pub pinned: bool,
    /// Seconds; negative: forever.
    pub keep_alive_seconds: f64,
    /// Seconds since its last request ended (0 while in use).
    pub idle_seconds: f64,
    /// Unix seconds when it unloads, if it will.
    pub expires_at: Option<f64>,
    pub requests_served: u64,
    pub in_use: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
}

impl From<LoadedInfo> for LoadedModel {
    fn from(i: LoadedInfo) -> LoadedModel {
        LoadedModel {
            model: i.model,
            base: i.base,
            base_bytes: i.base_bytes,
            context_bytes: i.context_bytes,
            recall_bytes: i.recall_bytes,
            device: i.device,
            slots: i.slots,
            context_per_slot: i.context_per_slot,
            pinned: i.pinned,
            keep_alive_seconds: i.keep_alive_seconds,
            idle_seconds: i.idle_seconds,
            expires_at: i.expires_at,
            requests_served: i.requests_served,
            in_use: i.in_use,
            queued: i.queued,
        }
    }
}

/// `POST /kolm/v1/unload`: the same figures as gRPC's `UnloadResponse`.
#[derive(Clone, Debug, Serialize)]
pub struct Unloaded {
    /// The artifacts unloaded, as `name:version`.
    pub unloaded: Vec<String>,
    pub freed_bytes: u64,
}

impl From<crate::scheduler::Unloaded> for Unloaded {
    fn from(u: crate::scheduler::Unloaded) -> Unloaded {
        Unloaded {
            unloaded: u.unloaded,
            freed_bytes: u.freed_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The shapes OpenAI clients parse, field for field.
    #[test]
    fn bodies_have_the_openai_shape() {
        let usage = Usage::new(5, 3, 2);
        let body = Completion {
            id: "chatcmpl-1".into(),
            object: "chat.completion",
            created: 7,
            model: "m:1".into(),
            choices: vec![Choice {
                index: 0,
                message: Some(AssistantMessage {
                    role: "assistant",
                    content: "hi".into(),
                }),
                text: None,
                logprobs: (),
                finish_reason: "stop",
            }],
            usage,
            kolm: None,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m:1",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                "logprobs": null, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
                             "prompt_tokens_details": {"cached_tokens": 2}}})
        );
        let chunk = |usage| Chunk {
            id: "c".into(),
            object: "chat.completion.chunk",
            created: 7,
            model: "m:1".into(),
            choices: vec![ChunkChoice {
                index: 0,
                delta: Some(Delta {
                    role: None,
                    content: Some("x".into()),
                }),
                text: None,
                logprobs: (),
                finish_reason: None,
            }],
            usage,
            kolm: None,
        };
        let v = serde_json::to_value(chunk(UsageField::Absent)).unwrap();
        assert!(v.get("usage").is_none(), "{v}");
        assert_eq!(v["choices"][0]["delta"], json!({"content": "x"}));
        assert_eq!(v["choices"][0]["finish_reason"], json!(null));
        let v = serde_json::to_value(chunk(UsageField::Null)).unwrap();
        assert_eq!(v["usage"], json!(null));
        let v = serde_json::to_value(chunk(UsageField::Some(usage))).unwrap();
        assert_eq!(v["usage"]["total_tokens"], 8);
        let e = EmbeddingValue::Base64("AAAA".into());
        assert_eq!(serde_json::to_value(e).unwrap(), json!("AAAA"));
    }
}

/// `GET /health`.
#[derive(Clone, Debug, Serialize)]
pub struct Health {
    /// `ok`, or `loading` while a model loads (then the status is 503).
    pub status: &'static str,
    /// Loads in progress.
    pub loading: usize,
    /// Models loaded.
    pub loaded: usize,
    pub version: &'static str,
    pub uptime_seconds: f64,
}
