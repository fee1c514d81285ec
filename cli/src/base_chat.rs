//! The base model as kolmd chats with it, loaded once through llama.cpp
//! (`kolm-runtime`): its vocabulary and its chat template. `kolmctl train`
//! tokenizes training conversations with it; `kolmctl compile` shares one
//! between the student engine and the trainer.

use std::path::Path;

use anyhow::Context;
use kolm_runtime::{BaseHandle, BaseOptions, ChatMessage, ChatTemplate, Runtime};
use kolm_train::{ChatTokenizer, Message};

/// A loaded base and its compiled chat template.
pub struct BaseChat {
    base: BaseHandle,
    template: ChatTemplate,
}

impl std::fmt::Debug for BaseChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseChat").finish_non_exhaustive()
    }
}

impl BaseChat {
    /// Loads the GGUF at `path` (memory-mapped, CPU) and compiles its chat
    /// template; a base without one is refused.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let base = Runtime
            .load_base(path, &BaseOptions { gpu_layers: 0 })
            .with_context(|| format!("cannot load the base model {}", path.display()))?;
        let info = base.info();
        let source = info.chat_template.clone().with_context(|| {
            format!(
                "the base {} has no chat template (tokenizer.chat_template): kolm needs an instruct model",
                path.display()
            )
        })?;
        let template = ChatTemplate::new(&source, &info.bos, &info.eos)?;
        Ok(BaseChat { base, template })
    }

    /// The loaded base.
    pub fn base(&self) -> &BaseHandle {
        &self.base
    }

    /// Renders `(role, content)` messages with the base's template, opening
    /// the assistant's turn when `add_generation_prompt`.
    pub fn render<'a>(
        &self,
        messages: impl IntoIterator<Item = (&'a str, &'a str)>,
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let chat: Vec<ChatMessage> = messages
            .into_iter()
            .map(|(role, content)| ChatMessage {
                role: role.to_owned(),
                content: content.to_owned(),
            })
            .collect();
        self.template
            .render_with(&chat, add_generation_prompt)
            .map_err(|e| e.to_string())
    }
}

impl ChatTokenizer for BaseChat {
    fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        BaseChat::render(
            self,
            messages
                .iter()
                .map(|m| (m.role.as_str(), m.content.as_str())),
            add_generation_prompt,
        )
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
        // As the engine does for a chat prompt: a BOS the template wrote is
        // kept as text, otherwise one is added if the vocabulary wants it.
        let info = self.base.info();
        let (text, bos) = match text.strip_prefix(info.bos.as_str()) {
            Some(rest) if !info.bos.is_empty() && info.add_bos => (rest, true),
            _ => (text, info.add_bos),
        };
        let mut ids: Vec<u32> = Vec::new();
        if bos {
            let b = self.base.tokenize(&info.bos).map_err(|e| e.to_string())?;
            ids.extend(b.iter().map(|&t| t as u32));
        }
        let t = self.base.tokenize(text).map_err(|e| e.to_string())?;
        ids.extend(t.iter().map(|&t| t as u32));
        Ok(ids)
    }
}
