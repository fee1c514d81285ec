//! Errors of the engine, with the classes the daemon maps to HTTP statuses.

/// Everything the engine can refuse or fail at.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot initialise llama.cpp: {0}")]
    Backend(String),
    #[error("cannot load model {path}: {detail}")]
    LoadModel { path: String, detail: String },
    #[error("cannot load adapter {path}: {detail}")]
    LoadAdapter { path: String, detail: String },
    #[error("cannot create a context: {0}")]
    Context(String),
    #[error("{0}")]
    Template(String),
    #[error("the model has no chat template; send a completion (prompt) request instead")]
    NoChatTemplate,
    #[error(
        "the prompt is {prompt_tokens} tokens, over the context of {context} tokens per request"
    )]
    PromptTooLong {
        prompt_tokens: usize,
        context: usize,
    },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("invalid response format: {0}")]
    InvalidGrammar(String),
    #[error("invalid sampling parameter: {0}")]
    InvalidParameter(String),
    #[error("the queue for this model is full ({0} requests waiting); retry later")]
    QueueFull(usize),
    #[error("the model was unloaded")]
    Unloaded,
    /// The caller stopped the request (for example a daemon shutting down).
    #[error("the request was cancelled")]
    Cancelled,
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("embedding failed: {0}")]
    Embed(String),
}

impl RuntimeError {
    /// Whether the caller's request was at fault (an HTTP 400).
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            RuntimeError::NoChatTemplate
                | RuntimeError::PromptTooLong { .. }
                | RuntimeError::EmptyPrompt
                | RuntimeError::InvalidGrammar(_)
                | RuntimeError::InvalidParameter(_)
                | RuntimeError::Template(_)
        )
    }
}
