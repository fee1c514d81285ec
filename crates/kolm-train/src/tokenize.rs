//! From chat messages to training tokens: the [`ChatTokenizer`] trait (the
//! base's own chat template and tokenizer, implemented outside this crate so
//! it stays free of llama.cpp) and [`encode`], which marks the tokens the
//! loss covers (every assistant turn, including its end-of-turn marker).

use crate::data::{Message, TrainExample};
use crate::error::TrainError;

/// The base model's chat template and tokenizer, exactly as serving uses
/// them, so that training and serving see the same text and tokens.
pub trait ChatTokenizer {
    /// Renders `messages` with the base's chat template; with
    /// `add_generation_prompt` the assistant turn's opening follows.
    fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String>;

    /// Token ids of a rendered conversation, as serving tokenizes a chat
    /// prompt (special tokens parsed, BOS added when the model wants it).
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, String>;
}

/// One tokenized example: the tokens and, per token, whether the loss
/// covers it (it is part of an assistant turn).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub tokens: Vec<u32>,
    pub target: Vec<bool>,
    /// Whether it was cut to `max_seq_len`.
    pub truncated: bool,
}

impl Encoded {
    /// Tokens the loss covers (a token is predicted from the one before, so
    /// position 0 never counts).
    pub fn target_count(&self) -> usize {
        self.target.iter().skip(1).filter(|t| **t).count()
    }
}

fn tok_err(e: String) -> TrainError {
    TrainError::Tokenizer(e)
}

/// Tokenizes one example. Each assistant turn's tokens are found as the
/// difference between the conversation rendered up to that turn (with the
/// generation prompt) and rendered through it; a template whose prefix does
/// not tokenize to a prefix is refused.
pub fn encode(
    index: usize,
    example: &TrainExample,
    tokenizer: &dyn ChatTokenizer,
    max_seq_len: usize,
    truncate: bool,
) -> Result<Encoded, TrainError> {
    example
        .validate()
        .map_err(|detail| TrainError::Example { index, detail })?;
    let msgs = &example.messages;
    let full_text = tokenizer.render(msgs, false).map_err(tok_err)?;
    let tokens = tokenizer.tokenize(&full_text).map_err(tok_err)?;
    let mut target = vec![false; tokens.len()];
    for (i, m) in msgs.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = tokenizer.render(&msgs[..i], true).map_err(tok_err)?;
        let through = tokenizer.render(&msgs[..=i], false).map_err(tok_err)?;
        let start = tokenizer.tokenize(&before).map_err(tok_err)?;
        let end = tokenizer.tokenize(&through).map_err(tok_err)?;
        let aligned = |t: &[u32]| t.len() <= tokens.len() && tokens[..t.len()] == *t;
        if !aligned(&start[..]) || !aligned(&end[..]) || start.len() >= end.len() {
            return Err(TrainError::Example {
                index,
                detail: format!(
                    "the chat template does not render assistant turn {i} as a suffix of the prompt before it"
                ),
            });
        }
        for t in &mut target[start.len()..end.len()] {
            *t = true;
        }
    }
    let mut enc = Encoded {
        tokens,
        target,
        truncated: false,
    };
    if enc.tokens.len() > max_seq_len {
        if !truncate {
            return Err(TrainError::TooLong {
                index,
                tokens: enc.tokens.len(),
                max: max_seq_len,
            });
        }
        enc.tokens.truncate(max_seq_len);
        enc.target.truncate(max_seq_len);
        enc.truncated = true;
    }
    if enc.target_count() == 0 {
        return Err(TrainError::NoTargets {
            index,
            why: if enc.truncated {
                format!(" within max_seq_len {max_seq_len}")
            } else {
                String::new()
            },
        });
    }
    Ok(enc)
}
