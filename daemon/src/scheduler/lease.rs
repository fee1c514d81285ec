//! A [`Lease`]: the right to use a loaded artifact for one request, and
//! what a request does through it (render a chat, generate, recall, embed).

use std::sync::Arc;

use kolm_runtime::{ChatMessage, Embeddings, GenerateRequest, GenerationStream, RuntimeError};

use super::loading::LoadedModel;
use super::Scheduler;

/// The right to use a loaded artifact: while a lease lives the artifact is
/// "in use" (never evicted or expired). Dropping it records the request as
/// served and may unload the artifact (`keep_alive` 0).
#[derive(Debug)]
pub struct Lease {
    pub(super) model: Arc<LoadedModel>,
    pub(super) scheduler: Scheduler,
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
