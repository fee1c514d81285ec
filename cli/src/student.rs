//! The compiler's student engine over llama.cpp (`kolm-runtime`): the base
//! loaded once, tokenized with its own vocabulary, and answering greedily
//! through its own chat template, alone or with an adapter (a context of
//! its own per adapter, as kolmd serves them).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use kolm_compile::pipeline::{StudentAnswer, StudentEngine};
use kolm_compile::task::Message;
use kolm_runtime::{
    BaseHandle, BaseOptions, ChatMessage, ChatTemplate, ContextSpec, GenerateEvent,
    GenerateRequest, Runtime, SamplingParams,
};

/// Positions per answer: the longest prompt plus the answer must fit.
const CONTEXT: u32 = 2048;

/// A base model ready to tokenize and answer.
#[derive(Debug)]
pub struct LlamaStudent {
    base: BaseHandle,
    template: ChatTemplate,
    threads: i32,
}

impl LlamaStudent {
    /// Loads the GGUF at `path` (memory-mapped, CPU).
    pub fn load(path: &Path, threads: i32) -> anyhow::Result<Self> {
        let base = Runtime
            .load_base(path, &BaseOptions { gpu_layers: 0 })
            .with_context(|| format!("cannot load the base model {}", path.display()))?;
        let info = base.info();
        let source = info.chat_template.clone().with_context(|| {
            format!(
                "the base {} has no chat template (tokenizer.chat_template): compile needs an instruct model",
                path.display()
            )
        })?;
        let template = ChatTemplate::new(&source, &info.bos, &info.eos)?;
        Ok(LlamaStudent {
            base,
            template,
            threads,
        })
    }

    /// Renders a conversation with the base's template, opening the
    /// assistant's turn.
    pub fn render(&self, messages: &[Message]) -> Result<String, String> {
        let chat: Vec<ChatMessage> = messages
            .iter()
            .map(|m| ChatMessage {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect();
        self.template.render(&chat).map_err(|e| e.to_string())
    }
}

impl StudentEngine for LlamaStudent {
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
        let ids = self.base.tokenize(text).map_err(|e| e.to_string())?;
        Ok(ids.into_iter().map(|t| t as u32).collect())
    }

    fn answer_all(
        &self,
        adapter: Option<&Path>,
        conversations: &[Vec<Message>],
        max_tokens: u32,
        on_answer: &(dyn Fn() + Sync),
    ) -> Result<Vec<StudentAnswer>, String> {
        let context = self
            .base
            .attach(ContextSpec {
                adapter: adapter.map(Path::to_owned),
                adapter_scale: 1.0,
                slots: 1,
                context_per_slot: CONTEXT,
                batch: 512,
                threads: self.threads,
                max_queue: 1,
            })
            .map_err(|e| e.to_string())?;
        let mut answers = Vec::with_capacity(conversations.len());
        for conv in conversations {
            let prompt = self.render(conv)?;
            let started = Instant::now();
            let mut stream = context
                .generate(GenerateRequest {
                    prompt,
                    add_bos: true,
                    params: SamplingParams::greedy(),
                    max_tokens,
                    stop: Vec::new(),
                    grammar: None,
                })
                .map_err(|e| e.to_string())?;
            let mut text = String::new();
            loop {
                match stream.blocking_next() {
                    Some(GenerateEvent::Text(t)) => text.push_str(&t),
                    Some(GenerateEvent::Done(_)) | None => break,
                    Some(GenerateEvent::Failed(e)) => return Err(e.to_string()),
                }
            }
            answers.push(StudentAnswer {
                text,
                latency: started.elapsed(),
            });
            on_answer();
        }
        Ok(answers)
    }
}
