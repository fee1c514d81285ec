//! `kolmctl train`: flags → `TrainConfig`, the base's chat template and
//! tokenizer from llama.cpp (kolm-runtime, exactly what serving uses), an
//! indicatif bar with loss, tokens/s and time left, and the report.

use std::ops::ControlFlow;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kolm_train::{Progress, StepStats, TrainConfig};
use serde_json::json;

use crate::cli::TrainArgs;
use crate::output;

struct TrainBar {
    bar: ProgressBar,
}

impl Progress for TrainBar {
    fn start(&mut self, total_steps: usize, start_step: usize) {
        self.bar.set_length(total_steps as u64);
        self.bar.set_position(start_step as u64);
        self.bar.set_message("training");
    }

    fn step(&mut self, s: &StepStats) -> ControlFlow<()> {
        self.bar.set_position(s.step as u64);
        self.bar.set_message(format!(
            "loss {:.4}  {:.0} tok/s  eta {}",
            s.loss,
            s.tokens_per_second,
            eta(s.eta)
        ));
        ControlFlow::Continue(())
    }

    fn warn(&mut self, message: &str) {
        self.bar.suspend(|| eprintln!("warning: {message}"));
    }
}

fn eta(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

pub fn train(args: TrainArgs, quiet: bool) -> anyhow::Result<()> {
    let mut config = TrainConfig::new(&args.base, &args.out);
    config.rank = args.rank;
    config.alpha = args.alpha;
    config.dropout = args.dropout;
    config.epochs = args.epochs;
    config.max_steps = args.max_steps;
    config.learning_rate = args.lr;
    config.targets = kolm_train::parse_targets(&args.targets).map_err(anyhow::Error::msg)?;
    config.max_seq_len = args.max_seq_len;
    config.truncate = args.truncate;
    config.batch_size = args.batch_size;
    config.grad_accum = args.grad_accum;
    config.seed = args.seed;
    config.checkpoint_every = args.checkpoint_every;
    config.resume = args.checkpoint_dir.is_some();
    config.checkpoint_dir = args.checkpoint_dir;
    config.device = args.device;
    config.precision = args.precision;
    config.validate()?;
    // Refuse an unsupported base before llama.cpp loads it, and an output
    // that could not be written before any training.
    kolm_train::model::read_config(&args.base)?;
    let numbered = kolm_train::load_jsonl_numbered(&args.data)?;
    kolm_train::check_output(&args.out, &[&args.base, &args.data])?;
    let (lines, examples): (Vec<usize>, Vec<_>) = numbered.into_iter().unzip();
    let tokenizer = crate::base_chat::BaseChat::load(&args.base)?;

    let bar = ProgressBar::hidden();
    if !quiet {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps  {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix("train");
    let mut progress = TrainBar { bar };
    let report = kolm_train::train(&config, &examples, &tokenizer, &mut progress).map_err(|e| {
        // An error about one example names its line of the file.
        let line = e.example_index().and_then(|i| lines.get(i));
        let place = match line {
            Some(line) => format!("{}:{line}", args.data.display()),
            None => args.data.display().to_string(),
        };
        anyhow::Error::new(e).context(format!("training on {place} failed"))
    })?;
    progress.bar.finish_and_clear();
    if args.json {
        return output::json(&json!({
            "ok": true,
            "adapter": report.adapter,
            "first_loss": report.first_loss,
            "last_loss": report.last_loss,
            "steps": report.steps,
            "tokens_per_second": report.tokens_per_second,
            "tokens": report.tokens,
            "seconds": report.seconds,
            "examples_used": report.examples_used,
            "examples_truncated": report.examples_truncated,
            "trainable_parameters": report.trainable_parameters,
            "resumed_from": report.resumed_from,
            "device": report.device,
            "precision": report.precision,
        }));
    }
    outln!(
        "trained {} steps on {} ({}) in {:.1}s ({:.0} tokens/s): loss {:.4} -> {:.4}; adapter written to {}",
        report.steps,
        report.device,
        report.precision,
        report.seconds,
        report.tokens_per_second,
        report.first_loss,
        report.last_loss,
        report.adapter.display()
    );
    Ok(())
}
