//! The training run: [`TrainConfig`] → validation (before any weight is
//! read) → tokenization → memory check → base loading → the loop (micro-
//! batches padded on the right under the causal mask, gradient
//! accumulation, clipping, AdamW, schedule, checkpoints) → the adapter.
//!
//! Everything random derives from `(seed, purpose, step)`, so a run is
//! repeatable and a run resumed from a checkpoint continues exactly as the
//! uninterrupted one would have.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::adapter::{check_output, write_adapter};
use crate::data::TrainExample;
use crate::device::{device_name, dtype_name, free_memory, DeviceChoice, Precision};
use crate::error::TrainError;
use crate::lora::{Lora, Target};
use crate::model::{activation_bytes, read_config, Dropout, Model};
use crate::optim::{clip_grad_norm, learning_rate, AdamW, AdamWParams};
use crate::rng::Rng;
use crate::tokenize::{encode, ChatTokenizer, Encoded};

/// Everything that defines a run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// The GGUF base.
    pub base: PathBuf,
    /// Where the GGUF adapter is written.
    pub out: PathBuf,
    pub rank: usize,
    pub alpha: f32,
    /// LoRA dropout on the adapted modules' inputs.
    pub dropout: f32,
    pub targets: Vec<Target>,
    /// Passes over the data (ignored when `max_steps` is set).
    pub epochs: usize,
    /// Optimizer steps; `None` runs `epochs`.
    pub max_steps: Option<usize>,
    pub learning_rate: f64,
    /// Warm-up steps; `None` uses a tenth of the run.
    pub warmup_steps: Option<usize>,
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 turns it off).
    pub max_grad_norm: f64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Longest example in tokens.
    pub max_seq_len: usize,
    /// Cut longer examples to `max_seq_len` (with a warning) instead of
    /// refusing the run.
    pub truncate: bool,
    pub seed: u64,
    /// Where checkpoints go; `None` writes none.
    pub checkpoint_dir: Option<PathBuf>,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Continue from the checkpoint in `checkpoint_dir` if there is one.
    pub resume: bool,
    /// Bytes the run may use; `None` uses the memory free on the device
    /// (the system's available memory for the CPU).
    pub memory_limit: Option<u64>,
    /// Where the run computes.
    pub device: DeviceChoice,
    /// The dtype the frozen base is kept and multiplied in.
    pub precision: Precision,
    /// When set, the adapter as it stands at the end of every epoch is
    /// written into this directory as `epoch-N.gguf` (N from 1) and
    /// [`Progress::epoch_end`] is told, which may end the run there: the
    /// compiler's validation picks its checkpoint and stops early this way.
    pub epoch_adapters: Option<PathBuf>,
}

impl TrainConfig {
    /// The defaults: rank 8, alpha 16, dropout 0.05, q/k/v/o, 3 epochs,
    /// lr 2e-4, batch 4, sequences up to 512 tokens, seed 0, a GPU if this
    /// build and machine have one, else the CPU.
    pub fn new(base: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        TrainConfig {
            base: base.into(),
            out: out.into(),
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            targets: Target::DEFAULT.to_vec(),
            epochs: 3,
            max_steps: None,
            learning_rate: 2e-4,
            warmup_steps: None,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            batch_size: 4,
            grad_accum: 1,
            max_seq_len: 512,
            truncate: false,
            seed: 0,
            checkpoint_dir: None,
            checkpoint_every: 50,
            resume: false,
            memory_limit: None,
            device: DeviceChoice::Auto,
            precision: Precision::Auto,
            epoch_adapters: None,
        }
    }

    /// Checks ranges; called by [`train`] before anything is read.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Config(m.into()));
        if self.rank == 0 {
            return bad("rank must be at least 1");
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad("alpha must be positive");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout must be in [0, 1)");
        }
        if self.targets.is_empty() {
            return bad("at least one LoRA target is needed");
        }
        if self.max_steps == Some(0) || (self.max_steps.is_none() && self.epochs == 0) {
            return bad("epochs (or max_steps) must be at least 1");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("the learning rate must be positive");
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch size and gradient accumulation must be at least 1");
        }
        if self.max_seq_len < 2 {
            return bad("max_seq_len must be at least 2");
        }
        if self.checkpoint_every == 0 {
            return bad("checkpoint_every must be at least 1");
        }
        Ok(())
    }
}

/// What one optimizer step did.
#[derive(Clone, Debug)]
pub struct StepStats {
    /// 1-based.
    pub step: usize,
    pub total_steps: usize,
    /// Mean loss over the step's assistant tokens.
    pub loss: f32,
    pub learning_rate: f64,
    pub grad_norm: f64,
    pub tokens_per_second: f64,
    pub elapsed: Duration,
    pub eta: Duration,
}

/// Observes a run; `step` may stop it (a checkpoint is written first when a
/// checkpoint directory is set).
pub trait Progress {
    /// Called once before the first step (`start_step` > 0 on resume).
    fn start(&mut self, _total_steps: usize, _start_step: usize) {}
    fn step(&mut self, _stats: &StepStats) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    fn warn(&mut self, _message: &str) {}
    /// Called at the end of epoch `epoch` (1-based) with the adapter as it
    /// stands, when [`TrainConfig::epoch_adapters`] is set. `Break` ends the
    /// run there, normally: the final adapter is that epoch's.
    fn epoch_end(&mut self, _epoch: usize, _adapter: &Path) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub adapter: PathBuf,
    pub first_loss: f32,
    pub last_loss: f32,
    /// Loss of every step (including those before a resume).
    pub losses: Vec<f32>,
    pub steps: usize,
    /// Step the run resumed from (0 when it started fresh).
    pub resumed_from: usize,
    /// Tokens (prompt and answer, no padding) per second of training.
    pub tokens_per_second: f64,
    pub tokens: u64,
    pub seconds: f64,
    pub examples_used: usize,
    pub examples_truncated: usize,
    /// The epoch after which [`Progress::epoch_end`] ended the run early.
    pub stopped_after_epoch: Option<usize>,
    pub trainable_parameters: usize,
    /// The device the run computed on: `cpu`, `cuda:0`, `metal:0`.
    pub device: String,
    /// The frozen base's dtype there: `f32`, `bf16` or `f16`.
    pub precision: String,
}

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    step: usize,
    adam_t: usize,
    losses: Vec<f32>,
    fingerprint: String,
}

fn fingerprint(c: &TrainConfig, examples: usize, total_steps: usize) -> String {
    let targets: Vec<&str> = c.targets.iter().map(|t| t.short_name()).collect();
    format!(
        "base={} rank={} alpha={} dropout={} targets={} lr={} wd={} clip={} batch={} accum={} seq={} seed={} examples={} steps={}",
        c.base.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        c.rank, c.alpha, c.dropout, targets.join(","), c.learning_rate, c.weight_decay,
        c.max_grad_norm, c.batch_size, c.grad_accum, c.max_seq_len, c.seed, examples, total_steps
    )
}

/// The settings two fingerprints differ in, as `key: theirs there, ours
/// here`; both whole where they cannot be paired setting by setting (a base
/// name with spaces shifts them).
fn fingerprint_difference(theirs: &str, ours: &str) -> String {
    let differing: Vec<String> = theirs
        .split(' ')
        .zip(ours.split(' '))
        .filter(|(a, b)| a != b)
        .map(|(a, b)| {
            let (key, old) = a.split_once('=').unwrap_or((a, ""));
            let new = b.split_once('=').map_or(b, |(_, v)| v);
            format!("{key}: {old} there, {new} here")
        })
        .collect();
    if differing.is_empty() || theirs.split(' ').count() != ours.split(' ').count() {
        return format!("{theirs} there, {ours} here");
    }
    differing.join(", ")
}

/// Micro-batch `m` of the run: examples of its epoch's shuffled order.
struct Schedule {
    n: usize,
    batch: usize,
    per_epoch: usize,
    seed: u64,
    cache: HashMap<usize, Vec<usize>>,
}

impl Schedule {
    fn micro_batch(&mut self, m: usize) -> Vec<usize> {
        let epoch = m / self.per_epoch;
        let k = m % self.per_epoch;
        let (n, seed) = (self.n, self.seed);
        let order = self.cache.entry(epoch).or_insert_with(|| {
            let mut o: Vec<usize> = (0..n).collect();
            Rng::derive(seed, 2, epoch as u64).shuffle(&mut o);
            o
        });
        let end = ((k + 1) * self.batch).min(n);
        order[k * self.batch..end].to_vec()
    }
}

/// One padded micro-batch.
struct Batch {
    tokens: Tensor,
    rows: Tensor,
    labels: Tensor,
    targets: usize,
    real_tokens: usize,
}

fn make_batch(encoded: &[Encoded], ids: &[usize], device: &Device) -> Result<Batch, TrainError> {
    let t = ids
        .iter()
        .map(|&i| encoded[i].tokens.len())
        .max()
        .unwrap_or(1);
    let mut tokens = Vec::with_capacity(ids.len() * t);
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    let mut real = 0;
    for (b, &i) in ids.iter().enumerate() {
        let e = &encoded[i];
        real += e.tokens.len();
        tokens.extend_from_slice(&e.tokens);
        tokens.extend(std::iter::repeat_n(0u32, t - e.tokens.len()));
        for p in 1..e.tokens.len() {
            if e.target[p] {
                rows.push((b * t + p - 1) as u32);
                labels.push(e.tokens[p]);
            }
        }
    }
    let m = rows.len();
    Ok(Batch {
        tokens: Tensor::from_vec(tokens, (ids.len(), t), device)?,
        rows: Tensor::from_vec(rows, m, device)?,
        labels: Tensor::from_vec(labels, (m, 1), device)?,
        targets: m,
        real_tokens: real,
    })
}

fn save_checkpoint(
    dir: &Path,
    lora: &Lora,
    opt: &AdamW,
    meta: &CheckpointMeta,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (i, (name, var)) in lora.names().into_iter().zip(lora.vars()).enumerate() {
        map.insert(format!("adam.m.{name}"), opt.m[i].clone());
        map.insert(format!("adam.v.{name}"), opt.v[i].clone());
        map.insert(name, var.as_tensor().clone());
    }
    let st = dir.join("checkpoint.safetensors");
    let tmp = dir.join("checkpoint.safetensors.tmp");
    candle_core::safetensors::save(&map, &tmp)?;
    std::fs::rename(&tmp, &st).map_err(|e| TrainError::io(&st, e))?;
    let js = dir.join("checkpoint.json");
    let tmp = dir.join("checkpoint.json.tmp");
    let text = serde_json::to_vec_pretty(meta).expect("plain data serializes");
    std::fs::write(&tmp, text).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, &js).map_err(|e| TrainError::io(&js, e))?;
    Ok(())
}

fn load_checkpoint(
    dir: &Path,
    config: &TrainConfig,
    fingerprint: &str,
    device: &Device,
) -> Result<Option<(Lora, AdamW, CheckpointMeta)>, TrainError> {
    let js = dir.join("checkpoint.json");
    if !js.exists() {
        return Ok(None);
    }
    let err = |detail: String| TrainError::Checkpoint {
        path: js.clone(),
        detail,
    };
    let text = std::fs::read(&js).map_err(|e| TrainError::io(&js, e))?;
    let meta: CheckpointMeta = serde_json::from_slice(&text).map_err(|e| err(e.to_string()))?;
    if meta.fingerprint != fingerprint {
        return Err(err(format!(
            "it belongs to another run ({}); use another --checkpoint-dir, or empty this one to start over",
            fingerprint_difference(&meta.fingerprint, fingerprint)
        )));
    }
    let map = candle_core::safetensors::load(dir.join("checkpoint.safetensors"), device)?;
    let weights: HashMap<String, Tensor> = map
        .iter()
        .filter(|(k, _)| !k.starts_with("adam."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let lora = Lora::from_named(&weights, config.alpha).map_err(&err)?;
    let mut m = Vec::new();
    let mut v = Vec::new();
    for name in lora.names() {
        let get = |k: String| {
            map.get(&k)
                .cloned()
                .ok_or_else(|| err(format!("{k} is missing")))
        };
        m.push(get(format!("adam.m.{name}"))?);
        v.push(get(format!("adam.v.{name}"))?);
    }
    let opt = AdamW {
        params: AdamWParams {
            weight_decay: config.weight_decay,
            ..AdamWParams::default()
        },
        m,
        v,
        t: meta.adam_t,
    };
    Ok(Some((lora, opt, meta)))
}

/// Trains a LoRA adapter on `examples` and writes it to `config.out`.
///
/// Every refusal (configuration, architecture, data, length, memory)
/// happens before the base's weights are read.
pub fn train(
    config: &TrainConfig,
    examples: &[TrainExample],
    tokenizer: &dyn ChatTokenizer,
    progress: &mut dyn Progress,
) -> Result<TrainReport, TrainError> {
    config.validate()?;
    if examples.is_empty() {
        return Err(TrainError::EmptyDataset);
    }
    check_output(&config.out, &[&config.base])?;
    let (model_config, _) = read_config(&config.base)?;
    let encoded: Vec<Encoded> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| encode(i, e, tokenizer, config.max_seq_len, config.truncate))
        .collect::<Result<_, _>>()?;
    let truncated = encoded.iter().filter(|e| e.truncated).count();
    if truncated > 0 {
        progress.warn(&format!(
            "{truncated} example(s) longer than {} tokens were truncated",
            config.max_seq_len
        ));
    }
    let longest = encoded.iter().map(|e| e.tokens.len()).max().unwrap_or(0);
    let most_targets = {
        let mut t: Vec<usize> = encoded.iter().map(|e| e.target_count()).collect();
        t.sort_unstable_by(|a, b| b.cmp(a));
        t.iter().take(config.batch_size).sum::<usize>()
    };
    let lora_params: u64 = (config.rank as u64)
        * config.targets.len() as u64
        * model_config.layers as u64
        * 4
        * model_config.embedding as u64;
    let device = config.device.open()?;
    let dtype = config.precision.resolve(&device)?;
    let needed = model_config.f32_bytes / 4 * dtype.size_in_bytes() as u64
        + activation_bytes(&model_config, config.batch_size, longest, most_targets)
        + lora_params * 4 * 5;
    if let Some(available) = config.memory_limit.or_else(|| free_memory(&device)) {
        if needed > available {
            return Err(TrainError::OutOfMemory {
                needed_mib: needed >> 20,
                available_mib: available >> 20,
                device: device_name(&device),
            });
        }
    }
    let model = Model::load_as(&config.base, longest, &device, dtype)?;
    let per_epoch = encoded.len().div_ceil(config.batch_size);
    let total_steps = config
        .max_steps
        .unwrap_or_else(|| (per_epoch * config.epochs).div_ceil(config.grad_accum));
    let warmup = config.warmup_steps.unwrap_or(total_steps / 10);
    let print = fingerprint(config, encoded.len(), total_steps);

    let resumed = match (&config.checkpoint_dir, config.resume) {
        (Some(dir), true) => load_checkpoint(dir, config, &print, &device)?,
        _ => None,
    };
    let (lora, mut opt, mut losses, start) = match resumed {
        Some((lora, opt, meta)) => (lora, opt, meta.losses, meta.step),
        None => {
            let lora = Lora::init(
                model.config.layers,
                &config.targets,
                config.rank,
                config.alpha,
                |t| model.shape_of(t),
                config.seed,
                &device,
            )?;
            let opt = AdamW::new(
                &lora.vars(),
                AdamWParams {
                    weight_decay: config.weight_decay,
                    ..AdamWParams::default()
                },
            )?;
            (lora, opt, Vec::new(), 0)
        }
    };
    let vars = lora.vars();
    let mut schedule = Schedule {
        n: encoded.len(),
        batch: config.batch_size,
        per_epoch,
        seed: config.seed,
        cache: HashMap::new(),
    };
    progress.start(total_steps, start);
    let began = Instant::now();
    let mut tokens_seen: u64 = 0;
    if let Some(dir) = &config.epoch_adapters {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::Io {
            path: dir.clone(),
            source: e,
        })?;
    }
    let mut epochs_done = (start * config.grad_accum) / per_epoch;
    let mut stopped_after_epoch = None;
    for step in start..total_steps {
        let micro: Vec<Batch> = (0..config.grad_accum)
            .map(|k| {
                let ids = schedule.micro_batch(step * config.grad_accum + k);
                make_batch(&encoded, &ids, &device)
            })
            .collect::<Result<_, _>>()?;
        let step_targets: usize = micro.iter().map(|b| b.targets).sum();
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut loss_sum = 0f32;
        for (k, batch) in micro.iter().enumerate() {
            if batch.targets == 0 {
                continue;
            }
            let mut rng = Rng::derive(config.seed, 3, (step * config.grad_accum + k) as u64);
            let dropout = Dropout {
                p: config.dropout,
                rng: &mut rng,
            };
            let hidden = model.hidden(&batch.tokens, Some(&lora), Some(dropout))?;
            let lp = model.log_probs(&hidden, &batch.rows)?;
            let nll = lp.gather(&batch.labels, 1)?.sum_all()?.neg()?;
            let loss = (nll / step_targets as f64)?;
            loss_sum += loss.to_scalar::<f32>()?;
            let store = loss.backward()?;
            for (i, v) in vars.iter().enumerate() {
                if let Some(g) = store.get(v.as_tensor()) {
                    grads[i] = Some(match grads[i].take() {
                        Some(acc) => (acc + g)?,
                        None => g.clone(),
                    });
                }
            }
            tokens_seen += batch.real_tokens as u64;
        }
        if !loss_sum.is_finite() {
            return Err(TrainError::Diverged {
                step: step + 1,
                loss: loss_sum,
            });
        }
        let mut grads: Vec<Tensor> = grads
            .into_iter()
            .zip(&vars)
            .map(|(g, v)| g.map_or_else(|| v.as_tensor().zeros_like(), Ok))
            .collect::<Result<_, _>>()?;
        let grad_norm = clip_grad_norm(&mut grads, config.max_grad_norm)?;
        let lr = learning_rate(config.learning_rate, step, total_steps, warmup);
        opt.step(&vars, &grads, lr)?;
        losses.push(loss_sum);
        let elapsed = began.elapsed();
        let done = step + 1 - start;
        let per_step = elapsed.as_secs_f64() / done as f64;
        let stats = StepStats {
            step: step + 1,
            total_steps,
            loss: loss_sum,
            learning_rate: lr,
            grad_norm,
            tokens_per_second: tokens_seen as f64 / elapsed.as_secs_f64().max(1e-9),
            elapsed,
            eta: Duration::from_secs_f64(per_step * (total_steps - step - 1) as f64),
        };
        let flow = progress.step(&stats);
        if let Some(dir) = &config.checkpoint_dir {
            let last = step + 1 == total_steps;
            if flow.is_break() || last || (step + 1) % config.checkpoint_every == 0 {
                let meta = CheckpointMeta {
                    step: step + 1,
                    adam_t: opt.t,
                    losses: losses.clone(),
                    fingerprint: print.clone(),
                };
                save_checkpoint(dir, &lora, &opt, &meta)?;
            }
        }
        if flow.is_break() {
            return Err(TrainError::Stopped { step: step + 1 });
        }
        if let Some(dir) = &config.epoch_adapters {
            if (step + 1) * config.grad_accum >= (epochs_done + 1) * per_epoch {
                epochs_done += 1;
                let path = dir.join(format!("epoch-{epochs_done}.gguf"));
                write_adapter(&path, &lora, &model.config.arch)?;
                if progress.epoch_end(epochs_done, &path).is_break() {
                    if step + 1 < total_steps {
                        stopped_after_epoch = Some(epochs_done);
                    }
                    break;
                }
            }
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    write_adapter(&config.out, &lora, &model.config.arch)?;
    Ok(TrainReport {
        adapter: config.out.clone(),
        first_loss: losses.first().copied().unwrap_or(f32::NAN),
        last_loss: losses.last().copied().unwrap_or(f32::NAN),
        steps: losses.len(),
        resumed_from: start,
        tokens_per_second: tokens_seen as f64 / seconds.max(1e-9),
        tokens: tokens_seen,
        seconds,
        losses,
        examples_used: encoded.len(),
        examples_truncated: truncated,
        stopped_after_epoch,
        trainable_parameters: lora.parameter_count(),
        device: device_name(&device),
        precision: dtype_name(dtype).to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::fingerprint_difference;

    #[test]
    fn a_checkpoint_mismatch_names_the_settings_that_differ() {
        assert_eq!(
            fingerprint_difference("base=a rank=8 steps=4", "base=a rank=4 steps=6"),
            "rank: 8 there, 4 here, steps: 4 there, 6 here"
        );
        assert_eq!(
            fingerprint_difference("base=a b rank=8", "base=a rank=8"),
            "base=a b rank=8 there, base=a rank=8 here"
        );
    }
}
