//! The compiler's trainer: `kolm-train`'s LoRA run behind the pipeline's
//! `AdapterTrainer`, tokenizing with the base's own llama.cpp tokenizer and
//! chat template (what kolmd serves with), reporting steps as progress
//! notes.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kolm_compile::example::Message;
use kolm_compile::pipeline::{
    AdapterTrainer, CompileProgress, HyperParams, OnEpoch, StageError, TrainSummary,
};
use kolm_train::{Progress, StepStats, TrainConfig, TrainExample};
use serde_json::json;

use crate::base_chat::BaseChat;

/// LoRA training on one base.
pub struct LoraTrainer {
    base: PathBuf,
    tokenizer: Arc<BaseChat>,
}

impl std::fmt::Debug for LoraTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraTrainer")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl LoraTrainer {
    /// Checks that the trainer supports the base's architecture (before
    /// any teacher call); `tokenizer` is the same base, loaded by llama.cpp.
    pub fn new(base: &Path, tokenizer: Arc<BaseChat>) -> anyhow::Result<Self> {
        kolm_train::model::read_config(base)?;
        Ok(LoraTrainer {
            base: base.to_owned(),
            tokenizer,
        })
    }

    fn config(&self, params: HyperParams, out: &Path) -> TrainConfig {
        let mut c = TrainConfig::new(&self.base, out);
        c.epochs = params.epochs as usize;
        c.rank = params.rank as usize;
        c.alpha = 2.0 * params.rank as f32;
        c.learning_rate = params.learning_rate;
        // The student answers in a window of this size; grounded prompts
        // (a corpus's chunks in the system message) need the room.
        c.max_seq_len = crate::student::CONTEXT as usize;
        // A distilled answer longer than the window is cut, not refused:
        // the compile already accepted it.
        c.truncate = true;
        c
    }
}

/// Forwards training steps to the compile's progress, and epoch ends to
/// the compile's validation.
struct Steps<'a, 'b> {
    progress: &'a dyn CompileProgress,
    on_epoch: &'a mut OnEpoch<'b>,
}

impl Progress for Steps<'_, '_> {
    fn step(&mut self, s: &StepStats) -> ControlFlow<()> {
        self.progress.note(&format!(
            "step {}/{} loss {:.4} {:.0} tok/s",
            s.step, s.total_steps, s.loss, s.tokens_per_second
        ));
        ControlFlow::Continue(())
    }

    fn warn(&mut self, message: &str) {
        self.progress.note(&format!("warning: {message}"));
    }

    fn epoch_end(&mut self, epoch: usize, adapter: &Path) -> ControlFlow<()> {
        (self.on_epoch)(u32::try_from(epoch).unwrap_or(u32::MAX), adapter)
    }
}

impl AdapterTrainer for LoraTrainer {
    fn train(
        &self,
        conversations: &[Vec<Message>],
        params: HyperParams,
        out: &Path,
        epochs_dir: Option<&Path>,
        on_epoch: &mut OnEpoch<'_>,
        progress: &dyn CompileProgress,
    ) -> Result<TrainSummary, StageError> {
        let examples: Vec<TrainExample> = conversations
            .iter()
            .map(|c| TrainExample {
                messages: c
                    .iter()
                    .map(|m| kolm_train::Message::new(&m.role, &m.content))
                    .collect(),
            })
            .collect();
        let mut config = self.config(params, out);
        config.epoch_adapters = epochs_dir.map(Path::to_owned);
        let report = kolm_train::train(
            &config,
            &examples,
            self.tokenizer.as_ref(),
            &mut Steps { progress, on_epoch },
        )?;
        Ok(TrainSummary {
            first_loss: f64::from(report.first_loss),
            last_loss: f64::from(report.last_loss),
            steps: report.steps as u64,
            tokens_per_second: report.tokens_per_second,
            params: json!({
                "rank": config.rank,
                "alpha": config.alpha,
                "dropout": config.dropout,
                "targets": config.targets.iter().map(|t| t.short_name()).collect::<Vec<_>>(),
                "epochs": config.epochs,
                "learning_rate": config.learning_rate,
                "batch_size": config.batch_size,
                "max_seq_len": config.max_seq_len,
                "seed": config.seed,
                "examples_truncated": report.examples_truncated,
                "stopped_after_epoch": report.stopped_after_epoch,
            }),
        })
    }
}
