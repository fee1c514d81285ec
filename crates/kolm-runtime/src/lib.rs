//! The llama.cpp engine behind kolmd: loads a base GGUF once, attaches one
//! context per artifact (each with its own LoRA adapter and slots), runs
//! continuous batching across the slots, samples with the usual knobs plus
//! JSON-schema constraints, drafts with no draft model (grammar-forced
//! tokens, the artifact's recipe pack, prompt lookup; every draft checked by
//! the model), renders chat templates, and embeds text.
//!
//! Entry point: [`Runtime::load_base`] gives a [`BaseHandle`];
//! [`BaseHandle::attach`] gives a [`ContextHandle`];
//! [`ContextHandle::generate`] gives a [`GenerationStream`] of text deltas.

mod draft;
mod engine;
mod error;
mod sampling;
mod template;
mod text;

pub use draft::{DraftConfig, DraftPolicy, DraftStats, Source as DraftSource, SourceCount};
pub use engine::{
    BaseHandle, BaseInfo, BaseOptions, Completion, ContextHandle, ContextSpec, Embeddings,
    FinishReason, GenerateEvent, GenerateRequest, GenerationStream, Runtime,
};
pub use error::RuntimeError;
pub use sampling::{Grammar, SamplingParams};
pub use template::{ChatMessage, ChatTemplate};
pub use text::{Delta, TextAssembler};
