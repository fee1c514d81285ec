//! The compiler's student engine over llama.cpp (`kolm-runtime`): the base
//! loaded once, tokenized with its own vocabulary, and answering greedily
//! through its own chat template, alone or with an adapter (a context of
//! its own per adapter, as kolmd serves them), drafting from a recipe pack
//! or token by token; each answer carries its token count, its decode time
//! and what drafting did, from the engine's `Completion`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kolm_artifact::serving::{Serving, ShapeGrammar};
use kolm_compile::example::Message;
use kolm_compile::pipeline::{DraftCounts, Drafting, StageError, StudentAnswer, StudentEngine};
use kolm_runtime::{
    ContextSpec, DraftConfig, GenerateEvent, GenerateRequest, Grammar, SamplingParams,
};

use crate::base_chat::BaseChat;

/// Positions per answer: the longest prompt plus the answer must fit.
pub const CONTEXT: u32 = 2048;

/// A base model ready to tokenize and answer.
#[derive(Debug)]
pub struct LlamaStudent {
    chat: Arc<BaseChat>,
    threads: i32,
}

impl LlamaStudent {
    /// The student over `chat`, answering with `threads` threads.
    pub fn new(chat: Arc<BaseChat>, threads: i32) -> Self {
        LlamaStudent { chat, threads }
    }

    /// Renders a conversation with the base's template, opening the
    /// assistant's turn.
    pub fn render(&self, messages: &[Message]) -> Result<String, String> {
        self.chat.render(
            messages
                .iter()
                .map(|m| (m.role.as_str(), m.content.as_str())),
            true,
        )
    }
}

/// `conversation` with the serving record's system message first, if it
/// has one.
fn with_system(serving: &Serving, conversation: &[Message]) -> Vec<Message> {
    let mut out = Vec::with_capacity(conversation.len() + 1);
    if let Some(system) = &serving.system {
        out.push(Message::new("system", system.clone()));
    }
    out.extend_from_slice(conversation);
    out
}

/// The engine's grammar for a verifier's shape constraint.
pub fn runtime_grammar(shape: &ShapeGrammar) -> Grammar {
    match shape {
        ShapeGrammar::JsonSchema(schema) => Grammar::JsonSchema(schema.clone()),
        ShapeGrammar::Regex(rx) => Grammar::Regex(rx.clone()),
    }
}

impl StudentEngine for LlamaStudent {
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, StageError> {
        let ids = self.chat.base().tokenize(text)?;
        Ok(ids.into_iter().map(|t| t as u32).collect())
    }

    fn answer_all(
        &self,
        adapter: Option<&Path>,
        conversations: &[Vec<Message>],
        serving: &Serving,
        drafting: &Drafting,
        on_answer: &(dyn Fn() + Sync),
    ) -> Result<Vec<StudentAnswer>, StageError> {
        let grammar = serving.grammar.as_ref().map(runtime_grammar);
        let params = SamplingParams {
            temperature: serving.temperature,
            ..SamplingParams::greedy()
        };
        // Drafting as kolmd's contexts draft (the runtime's defaults), with
        // the artifact's recipe pack.
        let (draft, draft_requests) = match drafting {
            Drafting::Off => (
                DraftConfig {
                    enabled: false,
                    ..DraftConfig::default()
                },
                false,
            ),
            Drafting::Recipes(pack) => (
                DraftConfig {
                    recipes: Some(Arc::clone(pack)),
                    ..DraftConfig::default()
                },
                true,
            ),
        };
        let context = self.chat.base().attach(ContextSpec {
            adapter: adapter.map(Path::to_owned),
            adapter_scale: 1.0,
            slots: 1,
            context_per_slot: CONTEXT,
            batch: 512,
            threads: self.threads,
            max_queue: 1,
            draft,
        })?;
        let mut answers = Vec::with_capacity(conversations.len());
        for conv in conversations {
            let prompt = self.render(&with_system(serving, conv))?;
            let started = Instant::now();
            let mut stream = context.generate(GenerateRequest {
                prompt,
                add_bos: true,
                params: params.clone(),
                max_tokens: serving.max_tokens,
                stop: Vec::new(),
                grammar: grammar.clone(),
                draft: draft_requests,
            })?;
            let mut text = String::new();
            let done = loop {
                match stream.blocking_next() {
                    Some(GenerateEvent::Text(t)) => text.push_str(&t),
                    Some(GenerateEvent::Done(c)) => break c,
                    Some(GenerateEvent::Failed(e)) => return Err(e.into()),
                    None => return Err("the engine ended an answer without finishing it".into()),
                }
            };
            answers.push(StudentAnswer {
                text,
                latency: started.elapsed(),
                tokens: done.completion_tokens,
                decode: done.total_time.saturating_sub(done.time_to_first_token),
                draft: done.draft.map(|d| DraftCounts {
                    drafted: d.drafted,
                    accepted: d.accepted,
                    steps: d.steps,
                }),
                mean_logprob: done.mean_logprob,
                token_ids: done.tokens,
            });
            on_answer();
        }
        Ok(answers)
    }
}
