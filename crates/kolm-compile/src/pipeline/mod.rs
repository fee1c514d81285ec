//! The compile pipeline: (index →) distill → train → decompose → evaluate →
//! K-score, then [`seal`] writes the signed artifact.
//!
//! This module owns the order of the stages, what each one records (a
//! receipt per stage) and the report. [`compile`] reads as that order: one
//! function per stage, each run through a single recorder that announces
//! the stage to the progress sink, times it and appends its receipt, so no
//! stage keeps books of its own. The heavy parts are traits the caller
//! plugs in, so this crate stays free of llama.cpp, candle and sqlite:
//! [`StudentEngine`] (the base model through llama.cpp: tokenize, answer
//! greedily with or without an adapter, drafting or token by token),
//! [`AdapterTrainer`] (LoRA
//! training) and, when the task has a corpus, [`Grounding`] (the recall
//! index: built first, then every prompt is grounded in it). `kolmctl
//! compile` implements them with `kolm-runtime`, `kolm-train` and
//! `kolm-recall`.
//!
//! Prompts ([`prompts`]): the teacher sees the task description and a few
//! solved examples; the student is trained and evaluated on the input
//! alone, as users will send it; the base alone is evaluated zero-shot with
//! the task description. With a corpus, every one of these conversations
//! (teacher, student, base) is grounded by [`Grounding::ground`] in the
//! chunks recalled for its last user message: the template kolmd applies
//! to the artifact's requests at run time, so the student is trained on
//! exactly what it will be served.
//!
//! Drafting: the evaluate stage has the student answer every held-out test
//! twice, drafting with the recipe pack the decompose stage just mined (as
//! kolmd serves the artifact) and token by token. The drafted answer is
//! the one judged (it is what kolmd serves); the eval pack records both
//! decodes per test ([`eval::DecodeFigures`]), whether the two answers were
//! identical among them, and K's latency is the drafted run's.

pub mod eval;
pub mod prompts;
mod seal;
pub mod synthesize;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kolm_artifact::receipts::{digest_ref, DigestRef, Receipt, ReceiptChain, ReceiptKey};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::example::{Example, Input, Message};
use crate::kscore::{KScore, KScoreError, KScoreInputs};
use crate::recipes::{Coverage, MineParams, PackStats, RecipeError, RecipePack};
use crate::task::{Task, TaskError};
use crate::teacher::{Accounting, ChatRequest, Teacher, TeacherError};
use crate::verifier::{Verifier, VerifierError};
use kolm_artifact::serving::Serving;

pub use eval::{
    Answer, DecodeFigures, DraftingSummary, DriftFigures, EvalPack, EvalPackError, Measures,
    TestRecord,
};
pub use seal::{seal, SealError, SealInputs};

/// The stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Building the recall index of the corpus (only with a corpus).
    Index,
    /// Synthetic inputs from the teacher (only with `--synthesize`).
    Synthesize,
    /// Drifted inputs labelled by the teacher (only with `--from-drift`).
    Drift,
    /// k teacher samples per example, the verifier picks the winner.
    Distill,
    /// LoRA training on the winners.
    Train,
    /// Mining the recipe pack from the winners.
    Decompose,
    /// Student, base and teacher on the held-out tests.
    Evaluate,
    /// Writing and signing the artifact.
    Seal,
}

impl Stage {
    /// The stage's name in reports and receipts.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Index => "index",
            Stage::Synthesize => "synthesize",
            Stage::Drift => "drift",
            Stage::Distill => "distill",
            Stage::Train => "train",
            Stage::Decompose => "decompose",
            Stage::Evaluate => "evaluate",
            Stage::Seal => "seal",
        }
    }
}

/// Where a compile reports progress. Every method has a default that does
/// nothing.
pub trait CompileProgress: Send + Sync {
    /// A stage starts with `total` units of work (0 when unknown).
    fn stage_started(&self, _stage: Stage, _total: u64) {}
    /// `n` more units of the current stage are done.
    fn advance(&self, _n: u64) {}
    /// A line of information (the trainer's loss, a dropped example).
    fn note(&self, _message: &str) {}
    /// A stage ended after `elapsed`.
    fn stage_finished(&self, _stage: Stage, _elapsed: Duration) {}
}

/// A progress sink that reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl CompileProgress for Silent {}

/// The error a plugged-in part of the pipeline ([`StudentEngine`],
/// [`AdapterTrainer`], [`Grounding`]) returns: any error, boxed, so that its
/// cause chain reaches the caller through [`CompileError`]'s source.
pub type StageError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A greedy answer, how long it took and how it was decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct StudentAnswer {
    /// The text.
    pub text: String,
    /// From the request to the whole answer.
    pub latency: Duration,
    /// Tokens of the answer.
    pub tokens: u32,
    /// From the first token to the end of the answer (the latency less the
    /// time to the first token).
    pub decode: Duration,
    /// What drafting did; `None` when the answer was decoded token by
    /// token.
    pub draft: Option<DraftCounts>,
    /// The mean natural log-probability of its sampled tokens, as the
    /// engine reports it (`None` when the engine does not).
    pub mean_logprob: Option<f64>,
    /// Its token ids as sampled (empty when the engine does not say).
    pub token_ids: Vec<u32>,
}

/// What drafting did for one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DraftCounts {
    /// Tokens drafted (each checked by the model).
    pub drafted: u32,
    /// Drafted tokens the model agreed with.
    pub accepted: u32,
    /// Decoding steps of the answer, the first included (each emits one
    /// token of the model's own plus the drafts accepted).
    pub steps: u32,
}

/// How the student decodes.
#[derive(Clone, Debug)]
pub enum Drafting {
    /// Token by token.
    Off,
    /// Drafting without a draft model, as kolmd serves: from this recipe
    /// pack, the grammar's forced tokens and prompt lookup.
    Recipes(Arc<RecipePack>),
}

/// The base model as the compiler needs it. Implemented over llama.cpp by
/// `kolmctl`; called from blocking threads.
pub trait StudentEngine: Send + Sync {
    /// The base's token ids of `text` (no BOS/EOS): mines the recipe pack
    /// and sizes answers.
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, StageError>;
    /// Answers to each conversation by the base alone (`adapter` `None`)
    /// or with the adapter, prompted and decoded as `serving` says (the
    /// record kolmd serves the artifact by), drafting as `drafting` says
    /// (greedy text must not depend on it); `on_answer` is called after
    /// each.
    fn answer_all(
        &self,
        adapter: Option<&Path>,
        conversations: &[Vec<Message>],
        serving: &Serving,
        drafting: &Drafting,
        on_answer: &(dyn Fn() + Sync),
    ) -> Result<Vec<StudentAnswer>, StageError>;
}

/// What a training run reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Loss at the first step.
    pub first_loss: f64,
    /// Loss at the last step.
    pub last_loss: f64,
    /// Optimizer steps.
    pub steps: u64,
    /// Training tokens per second.
    pub tokens_per_second: f64,
    /// The hyper-parameters, recorded in the manifest and the receipt.
    pub params: serde_json::Value,
}

/// The settings of one training run the compile may try.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HyperParams {
    /// LoRA rank.
    pub rank: u32,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Most passes over the data (validation may stop earlier).
    pub epochs: u32,
}

/// Called at the end of each epoch (1-based) with the adapter as it stands;
/// `Break` ends the run there.
pub type OnEpoch<'a> = dyn FnMut(u32, &Path) -> std::ops::ControlFlow<()> + 'a;

/// LoRA training. Implemented over `kolm-train` by `kolmctl`; called from a
/// blocking thread.
pub trait AdapterTrainer: Send + Sync {
    /// Trains an adapter with `params` on `conversations` (each ends with
    /// the assistant's answer; the loss covers that answer only) and writes
    /// it to `out`. With `epochs_dir`, each epoch's adapter is written
    /// there and `on_epoch` is called with it.
    fn train(
        &self,
        conversations: &[Vec<Message>],
        params: HyperParams,
        out: &Path,
        epochs_dir: Option<&Path>,
        on_epoch: &mut OnEpoch<'_>,
        progress: &dyn CompileProgress,
    ) -> Result<TrainSummary, StageError>;
}

/// Validation inside the compile: a share of the training examples is held
/// out, each candidate's adapter is judged on it after every epoch (the
/// verifier's verdict against the references), and the compile keeps the
/// checkpoint with the best validation accuracy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidationParams {
    /// Share of the training examples held out; 0 turns validation off.
    pub share: f64,
    /// At least this many are held out (and validation is off when fewer
    /// than twice as many examples are there).
    pub min: usize,
    /// Stop a run after this many epochs without a better accuracy.
    pub patience: u32,
    /// Seed of the split.
    pub seed: u64,
}

impl Default for ValidationParams {
    fn default() -> Self {
        ValidationParams {
            share: 0.2,
            min: 4,
            patience: 2,
            seed: 0,
        }
    }
}

/// One candidate's validation curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateRun {
    /// Its settings.
    pub params: HyperParams,
    /// Validation accuracy after each epoch it ran.
    pub curve: Vec<eval::Rate>,
    /// The epoch whose adapter it keeps (the first with the best accuracy).
    pub best_epoch: u32,
    /// Whether it stopped before its last epoch.
    pub stopped_early: bool,
    /// Training loss at its first and last step.
    pub first_loss: f64,
    /// See `first_loss`.
    pub last_loss: f64,
}

/// What validation chose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// Examples held out for validation (not trained on).
    pub examples: usize,
    /// Every candidate, in the order tried.
    pub candidates: Vec<CandidateRun>,
    /// Index of the one shipped.
    pub chosen: usize,
}

impl ValidationReport {
    /// The shipped candidate.
    pub fn chosen(&self) -> &CandidateRun {
        &self.candidates[self.chosen]
    }

    /// The shipped checkpoint's validation accuracy.
    pub fn accuracy(&self) -> eval::Rate {
        let c = self.chosen();
        c.curve[c.best_epoch as usize - 1]
    }
}

/// The recall index a compile built from the task's corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexBuilt {
    /// The index file in the work dir (sealed as `recall/index.sqlite`).
    pub index: PathBuf,
    /// The embedder's files to seal beside it, by entry name
    /// (`recall/embedder/...`).
    pub embedder_files: Vec<(String, PathBuf)>,
    /// The indexed files by digest (the index receipt's inputs).
    pub sources: Vec<DigestRef>,
    /// The summary recorded in the manifest as `compile.recall`.
    pub summary: serde_json::Value,
}

/// Retrieval over the task's corpus. Implemented over `kolm-recall` by
/// `kolmctl`; called from blocking threads.
pub trait Grounding: Send + Sync + std::fmt::Debug {
    /// Builds the index of the corpus (in the caller's work dir).
    fn build(&self, progress: &dyn CompileProgress) -> Result<IndexBuilt, StageError>;
    /// `messages` grounded in the chunks recalled for their last user
    /// message, by the run-time template (unchanged when nothing is
    /// recalled). Only called after [`build`](Grounding::build).
    fn ground(&self, messages: Vec<Message>) -> Result<Vec<Message>, StageError>;
    /// The best cosine similarity to `messages`' last user message of a
    /// chunk [`ground`](Grounding::ground) would recall; `None` when
    /// nothing is recalled. The eval pack's drift figure, which kolmd
    /// measures the same way on the chunks it grounds a chat in.
    fn best_similarity(&self, messages: &[Message]) -> Result<Option<f64>, StageError>;
}

/// How to compile, beyond the task.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// The base GGUF.
    pub base: PathBuf,
    /// Teacher samples per training example.
    pub k: u32,
    /// Sampling temperature of the k samples.
    pub temperature: f32,
    /// Solved examples in the teacher's prompt.
    pub shots: usize,
    /// The K-score gate.
    pub gate: f64,
    /// Where intermediate files go (adapter, pack, eval); the caller owns it.
    pub work_dir: PathBuf,
    /// Recipe mining parameters.
    pub mine: MineParams,
    /// The teacher's size in bytes when known (a local teacher).
    pub teacher_bytes: Option<u64>,
    /// The task's corpus, when it has one.
    pub grounding: Option<Arc<dyn Grounding>>,
    /// The free-text similarity threshold, when the task sets one.
    pub similarity_min: Option<f64>,
    /// The training settings to try (at least one); with validation the
    /// best on the held-out share ships, without it the first.
    pub candidates: Vec<HyperParams>,
    /// Validation inside the compile.
    pub validation: ValidationParams,
    /// Synthetic inputs to ask the teacher for (0: none).
    pub synthesize: usize,
    /// Drifted inputs (without outputs) to label with the teacher and train
    /// on, as synthetic ones are (`--from-drift`).
    pub absorb: Vec<Example>,
    /// The recipe pack of the version this compile replaces: the new pack
    /// is grown by it ([`RecipePack::grown_by`]), so it only grows.
    pub recipes_floor: Option<Arc<RecipePack>>,
}

impl CompileOptions {
    /// Defaults for `base`, writing into `work_dir`.
    pub fn new(base: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Self {
        CompileOptions {
            base: base.into(),
            k: crate::task::DEFAULT_K,
            temperature: 0.8,
            shots: prompts::DEFAULT_SHOTS,
            gate: crate::task::DEFAULT_GATE,
            work_dir: work_dir.into(),
            mine: MineParams::default(),
            teacher_bytes: None,
            grounding: None,
            similarity_min: None,
            candidates: vec![HyperParams {
                rank: 8,
                learning_rate: 1e-3,
                epochs: 3,
            }],
            validation: ValidationParams::default(),
            synthesize: 0,
            absorb: Vec::new(),
            recipes_floor: None,
        }
    }
}

/// Why a compile failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The teacher failed for good (down, refused, malformed answers).
    #[error("the teacher failed: {0}")]
    Teacher(#[source] TeacherError),
    /// The budget ran out; `done` says how far the compile got.
    #[error("{source}; {done}. Nothing was written: raise --max-cost (cached answers are free on the next run)")]
    Budget {
        /// The teacher's error (carries the accounting).
        source: TeacherError,
        /// What was done, in words.
        done: String,
    },
    /// No training example survived distillation.
    #[error("no training example survived distillation: {0}")]
    NothingToTrain(String),
    /// The verifier could not be inferred.
    #[error(transparent)]
    Verifier(#[from] VerifierError),
    /// The student engine failed.
    #[error("the student model failed: {0}")]
    Student(#[source] StageError),
    /// Training failed.
    #[error("training failed: {0}")]
    Train(#[source] StageError),
    /// The validation share could not be split off the training examples.
    #[error("training failed: validation split: {0}")]
    ValidationSplit(#[source] TaskError),
    /// The corpus could not be indexed or queried.
    #[error("recall failed: {0}")]
    Recall(#[source] StageError),
    /// Recipe mining failed.
    #[error(transparent)]
    Recipes(#[from] RecipeError),
    /// The K-score could not be computed.
    #[error(transparent)]
    KScore(#[from] KScoreError),
    /// A work file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A blocking stage panicked or was cancelled.
    #[error("stage {0} did not finish")]
    Join(&'static str),
}

/// What became of one training example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistillSource {
    /// A teacher sample passed the verifier and won.
    Teacher,
    /// No sample passed; the reference output was kept.
    Reference,
}

/// A dropped example, with the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    /// Where it came from (`file:line`), when known.
    pub origin: String,
    /// Why.
    pub reason: String,
}

/// The distill stage's outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DistillReport {
    /// Examples distilled.
    pub examples: usize,
    /// Winners that came from the teacher.
    pub from_teacher: usize,
    /// Examples where no sample passed and the reference was kept.
    pub from_reference: usize,
    /// Examples dropped (no sample passed, no reference).
    pub dropped: Vec<Dropped>,
    /// Samples that failed (errors) without failing the stage.
    pub failed_samples: usize,
    /// Share of all samples that passed the verifier.
    pub sample_pass_rate: f64,
}

/// Seconds a stage took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    /// The stage.
    pub stage: Stage,
    /// Wall seconds.
    pub seconds: f64,
}

/// Everything a compile measured, before sealing.
#[derive(Debug)]
pub struct Compiled {
    /// The verifier (written into the artifact).
    pub verifier: Verifier,
    /// The adapter file in the work dir.
    pub adapter: PathBuf,
    /// The recipe pack file in the work dir.
    pub recipes: PathBuf,
    /// The verifier file in the work dir.
    pub verifier_file: PathBuf,
    /// The eval pack file in the work dir.
    pub eval_file: PathBuf,
    /// The recall index, when the task has a corpus.
    pub recall: Option<IndexBuilt>,
    /// The eval pack.
    pub eval: EvalPack,
    /// The K-score and its parts.
    pub kscore: KScore,
    /// The inputs it was computed from.
    pub kscore_inputs: KScoreInputs,
    /// Whether K reached the gate.
    pub passed_gate: bool,
    /// Distillation.
    pub distill: DistillReport,
    /// Training (the shipped candidate's run).
    pub train: TrainSummary,
    /// What validation chose, when it ran.
    pub validation: Option<ValidationReport>,
    /// What synthesis did, when it ran.
    pub synthesis: Option<synthesize::SynthesisReport>,
    /// What labelling the drifted inputs did, when there were any.
    pub absorbed: Option<synthesize::AbsorbReport>,
    /// The examples file in the work dir (`train/examples.jsonl`): the
    /// task's training examples and the absorbed drifted inputs, labelled.
    pub examples_file: PathBuf,
    /// Recipe pack statistics.
    pub recipes_stats: PackStats,
    /// Coverage of the held-out references.
    pub coverage: Coverage,
    /// The teacher's accounting at the end.
    pub teacher: Accounting,
    /// Per stage.
    pub times: Vec<StageTime>,
    /// One receipt per stage.
    pub receipts: ReceiptChain,
    /// Compile parameters for the manifest.
    pub params: BTreeMap<String, serde_json::Value>,
}

/// What a stage's receipt records besides its step name and its times.
struct StageReceipt {
    /// What the stage read.
    inputs: Vec<DigestRef>,
    /// What it wrote.
    outputs: Vec<DigestRef>,
    /// The digest reference of its parameters.
    params: String,
}

/// The one place a compile's stages are announced, timed and receipted.
/// [`stage`](Recorder::stage) tells the progress sink that a stage starts,
/// runs it, and when it succeeds tells the sink it finished, keeps its time
/// and appends its receipt to the chain. A stage that fails records
/// nothing and is never reported finished.
struct Recorder<'a> {
    progress: &'a dyn CompileProgress,
    key: &'a ReceiptKey,
    times: Vec<StageTime>,
    receipts: ReceiptChain,
}

impl<'a> Recorder<'a> {
    fn new(progress: &'a dyn CompileProgress, key: &'a ReceiptKey) -> Self {
        Recorder {
            progress,
            key,
            times: Vec::new(),
            receipts: ReceiptChain::new(),
        }
    }

    /// Runs `work` as `stage` (`total` units of work, 0 when unknown);
    /// `receipt` says what the stage's output read, wrote and was run with.
    async fn stage<T>(
        &mut self,
        stage: Stage,
        total: u64,
        work: impl Future<Output = Result<T, CompileError>>,
        receipt: impl FnOnce(&T) -> Result<StageReceipt, CompileError>,
    ) -> Result<T, CompileError> {
        self.progress.stage_started(stage, total);
        let t0 = Instant::now();
        let started = now_rfc3339();
        let out = work.await?;
        let elapsed = t0.elapsed();
        self.progress.stage_finished(stage, elapsed);
        self.times.push(StageTime {
            stage,
            seconds: elapsed.as_secs_f64(),
        });
        let finished = now_rfc3339();
        let StageReceipt {
            inputs,
            outputs,
            params,
        } = receipt(&out)?;
        self.receipts.append(
            Receipt {
                step: stage.name().into(),
                inputs,
                outputs,
                params,
                started,
                finished,
                prev: None,
            },
            self.key,
        );
        Ok(out)
    }
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .expect("RFC 3339 formats any UTC time")
}

fn dref(name: &str, bytes: &[u8]) -> DigestRef {
    DigestRef {
        name: name.to_owned(),
        digest: digest_ref(bytes),
    }
}

fn file_ref(name: &str, path: &Path) -> Result<DigestRef, CompileError> {
    let digest = crate::digest::sha256_file(path).map_err(|source| CompileError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(DigestRef {
        name: name.to_owned(),
        digest: format!("sha256:{digest}"),
    })
}

/// The digest reference of `value` as canonical JSON.
fn params_ref(value: &serde_json::Value) -> String {
    digest_ref(crate::digest::canonical_json(value).as_bytes())
}

/// `items` as JSON lines (what the receipts hash).
fn jsonl<T: Serialize>(items: &[T]) -> Vec<u8> {
    items
        .iter()
        .flat_map(|item| {
            let mut l = serde_json::to_vec(item).expect("examples and messages serialize");
            l.push(b'\n');
            l
        })
        .collect()
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CompileError> {
    std::fs::write(path, bytes).map_err(|source| CompileError::Io {
        path: path.to_owned(),
        source,
    })
}

fn origin_of(e: &Example) -> String {
    e.origin
        .as_ref()
        .map(|o| format!("{}:{}", o.path.display(), o.line))
        .unwrap_or_else(|| format!("example {}", &e.digest()[..12]))
}

/// The per-test decode figures of the student's drafted answer `drafted`
/// and its token-by-token answer `undrafted`. A drafted run that reports
/// no drafting counts one step per token.
fn decode_figures(drafted: &StudentAnswer, undrafted: &StudentAnswer) -> DecodeFigures {
    let identical = drafted.text == undrafted.text && drafted.tokens == undrafted.tokens;
    let draft = drafted.draft.unwrap_or(DraftCounts {
        drafted: 0,
        accepted: 0,
        steps: drafted.tokens,
    });
    DecodeFigures {
        tokens: drafted.tokens,
        identical,
        undrafted_tokens: (!identical).then_some(undrafted.tokens),
        drafted: draft.drafted,
        accepted: draft.accepted,
        steps: draft.steps,
        drafted_decode_s: drafted.decode.as_secs_f64(),
        undrafted_decode_s: undrafted.decode.as_secs_f64(),
        undrafted_latency_s: undrafted.latency.as_secs_f64(),
    }
}

/// Most tokens an answer may take: twice the longest reference, plus room.
fn answer_budget(engine: &dyn StudentEngine, task: &Task) -> Result<u32, CompileError> {
    let mut longest = 0usize;
    for e in task.train.iter().chain(&task.tests) {
        if let Some(o) = &e.output {
            longest = longest.max(engine.tokenize(o).map_err(CompileError::Student)?.len());
        }
    }
    Ok(((longest * 2 + 16) as u32).clamp(32, 1024))
}

async fn blocking<T: Send + 'static>(
    stage: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CompileError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| CompileError::Join(stage))
}

/// Runs the stages (index and synthesize when asked for, then distill,
/// train, decompose and evaluate) and computes K. Nothing is written
/// outside `options.work_dir`; [`seal`] writes the artifact.
pub async fn compile(
    task: &Task,
    teacher: Arc<Teacher>,
    engine: Arc<dyn StudentEngine>,
    trainer: Arc<dyn AdapterTrainer>,
    options: &CompileOptions,
    receipt_key: &ReceiptKey,
    progress: Arc<dyn CompileProgress>,
) -> Result<Compiled, CompileError> {
    let run = Compilation::prepare(task, teacher, engine, trainer, options, progress)?;
    let mut record = Recorder::new(run.progress.as_ref(), receipt_key);

    // Index, when the task has a corpus: every later prompt is grounded.
    let recall = match &options.grounding {
        None => None,
        Some(grounding) => Some(
            record
                .stage(Stage::Index, 0, run.index(grounding), index_receipt)
                .await?,
        ),
    };

    let (mut fit, held) = run.split_validation()?;

    // Synthesize: new inputs from the teacher join the training examples.
    let synthesis = if options.synthesize == 0 {
        None
    } else {
        let (synthetic, report) = record
            .stage(
                Stage::Synthesize,
                options.synthesize as u64,
                run.synthesize(),
                |(synthetic, report)| run.synthesize_receipt(synthetic, report),
            )
            .await?;
        fit.extend(synthetic);
        Some(report)
    };

    // Drift: inputs the previous version handled poorly, labelled like
    // synthetic ones, join the training examples.
    let absorbed = if options.absorb.is_empty() {
        None
    } else {
        let (kept, report) = record
            .stage(
                Stage::Drift,
                options.absorb.len() as u64,
                run.absorb(),
                |(kept, report)| run.absorb_receipt(kept, report),
            )
            .await?;
        fit.extend(kept.iter().cloned());
        Some((kept, report))
    };

    let distilled = record
        .stage(Stage::Distill, fit.len() as u64, run.distill(&fit), |d| {
            run.distill_receipt(d)
        })
        .await?;
    let trained = record
        .stage(Stage::Train, 0, run.train(&distilled, &held), |t| {
            run.train_receipt(&distilled, t)
        })
        .await?;
    let decomposed = record
        .stage(
            Stage::Decompose,
            distilled.winners.len() as u64,
            async { run.decompose(&distilled) },
            |d| run.decompose_receipt(&distilled, d),
        )
        .await?;
    let evaluated = record
        .stage(
            Stage::Evaluate,
            4 * task.tests.len() as u64,
            run.evaluate(&trained, &decomposed, recall.as_ref()),
            |e| run.evaluate_receipt(&trained, &decomposed, e),
        )
        .await?;

    let Recorder {
        times, receipts, ..
    } = record;
    run.score(
        Stages {
            recall,
            synthesis,
            absorbed,
            distilled,
            trained,
            decomposed,
            evaluated,
        },
        times,
        receipts,
    )
}

/// What every stage of one compile reads: the task, the options, the
/// plugged-in engines, and what is derived once before the first stage.
struct Compilation<'a> {
    task: &'a Task,
    options: &'a CompileOptions,
    teacher: Arc<Teacher>,
    engine: Arc<dyn StudentEngine>,
    trainer: Arc<dyn AdapterTrainer>,
    progress: Arc<dyn CompileProgress>,
    verifier: Verifier,
    /// Most tokens an answer may take ([`answer_budget`]).
    max_tokens: u32,
    /// How the student is evaluated, on the validation share and the
    /// held-out tests alike, and so how kolmd serves it.
    serving: Serving,
    /// `provider:model`, as the receipts record it.
    teacher_id: String,
    /// The training examples as JSON lines (the receipts' input).
    examples_json: Vec<u8>,
}

/// Inputs the teacher labelled, and why the others were not kept.
#[derive(Default)]
struct Labelled {
    kept: Vec<Example>,
    failed_gates: usize,
    disagreed: usize,
}

/// The distill stage's output.
struct Distilled {
    /// The training conversations: student prompt + winning answer.
    winners: Vec<Vec<Message>>,
    report: DistillReport,
    /// `winners` as JSON lines (the later receipts' input).
    winners_json: Vec<u8>,
}

/// The train stage's output.
struct Trained {
    /// The shipped adapter in the work dir.
    adapter: PathBuf,
    summary: TrainSummary,
    validation: Option<ValidationReport>,
}

/// The decompose stage's output.
struct Decomposed {
    /// The recipe pack (the evaluate stage drafts with it).
    pack: Arc<RecipePack>,
    coverage: Coverage,
    /// The recipe pack file in the work dir.
    recipes: PathBuf,
    /// The verifier file in the work dir.
    verifier_file: PathBuf,
}

/// The evaluate stage's output.
struct Evaluated {
    eval: EvalPack,
    /// The eval pack file in the work dir.
    eval_file: PathBuf,
}

/// Every stage's output, for [`Compilation::score`].
struct Stages {
    recall: Option<IndexBuilt>,
    synthesis: Option<synthesize::SynthesisReport>,
    absorbed: Option<(Vec<Example>, synthesize::AbsorbReport)>,
    distilled: Distilled,
    trained: Trained,
    decomposed: Decomposed,
    evaluated: Evaluated,
}

fn index_receipt(built: &IndexBuilt) -> Result<StageReceipt, CompileError> {
    Ok(StageReceipt {
        inputs: built.sources.clone(),
        outputs: vec![file_ref(kolm_artifact::names::RECALL_INDEX, &built.index)?],
        params: params_ref(&built.summary),
    })
}

impl<'a> Compilation<'a> {
    /// Infers the verifier and sizes the answers.
    fn prepare(
        task: &'a Task,
        teacher: Arc<Teacher>,
        engine: Arc<dyn StudentEngine>,
        trainer: Arc<dyn AdapterTrainer>,
        options: &'a CompileOptions,
        progress: Arc<dyn CompileProgress>,
    ) -> Result<Self, CompileError> {
        let verifier =
            Verifier::infer(&task.train, &task.tests)?.with_similarity_min(options.similarity_min);
        let max_tokens = answer_budget(engine.as_ref(), task)?;
        let serving = Serving::greedy(max_tokens, verifier.shape_grammar());
        let teacher_id = format!("{}:{}", teacher.config().provider, teacher.config().model);
        let examples_json = jsonl(&task.train);
        Ok(Compilation {
            task,
            options,
            teacher,
            engine,
            trainer,
            progress,
            verifier,
            max_tokens,
            serving,
            teacher_id,
            examples_json,
        })
    }

    /// Grounds every conversation when the task has a corpus (off the async
    /// threads); returns them as they are otherwise.
    async fn grounded(
        &self,
        conversations: Vec<Vec<Message>>,
    ) -> Result<Vec<Vec<Message>>, CompileError> {
        let Some(grounding) = self.options.grounding.clone() else {
            return Ok(conversations);
        };
        blocking("ground", move || {
            conversations
                .into_iter()
                .map(|c| grounding.ground(c))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
        .map_err(CompileError::Recall)
    }

    /// The index stage: builds the corpus's recall index.
    async fn index(&self, grounding: &Arc<dyn Grounding>) -> Result<IndexBuilt, CompileError> {
        let grounding = Arc::clone(grounding);
        let progress = Arc::clone(&self.progress);
        blocking("index", move || grounding.build(progress.as_ref()))
            .await?
            .map_err(CompileError::Recall)
    }

    /// The training examples split into (fit, validation), saying so when
    /// there are too few to validate on.
    fn split_validation(&self) -> Result<(Vec<Example>, Vec<Example>), CompileError> {
        let params = self.options.validation;
        let (fit, held) = validation_split(&self.task.train, params)?;
        if held.is_empty() && params.share > 0.0 {
            self.progress.note(&format!(
                "validation off: {} training example(s), fewer than {}",
                self.task.train.len(),
                2 * params.min
            ));
        }
        Ok((fit, held))
    }

    /// The synthesize stage: asks the teacher for `options.synthesize` new
    /// inputs, drops duplicates and near-duplicates of every example and
    /// test, labels the rest k times and keeps those whose labels pass the
    /// gates and agree.
    async fn synthesize(
        &self,
    ) -> Result<(Vec<Example>, synthesize::SynthesisReport), CompileError> {
        let (task, options) = (self.task, self.options);
        let mut report = synthesize::SynthesisReport {
            requested: options.synthesize,
            ..Default::default()
        };
        let budget = |e: TeacherError, done: String| match e {
            e @ TeacherError::BudgetExhausted { .. } => CompileError::Budget { source: e, done },
            e => CompileError::Teacher(e),
        };
        let mut known: Vec<String> = task
            .train
            .iter()
            .chain(&task.tests)
            .map(|e| prompts::render_input(&e.input))
            .collect();
        let mut inputs: Vec<String> = Vec::new();
        let batches = options.synthesize.div_ceil(synthesize::BATCH);
        for b in 0..batches {
            let n = synthesize::BATCH.min(options.synthesize - b * synthesize::BATCH);
            let request = ChatRequest {
                messages: synthesize::request_messages(task, n, b),
                temperature: 1.0,
                max_tokens: (n as u32 * 64 + 64).min(4096),
                seed: Some(b as u64),
            };
            report.requests += 1;
            let reply = self.teacher.complete(&request).await.map_err(|e| {
                budget(
                    e,
                    format!(
                        "synthesis got {} of {} inputs before it",
                        inputs.len(),
                        options.synthesize
                    ),
                )
            })?;
            for input in synthesize::parse_inputs(&reply.text).into_iter().take(n) {
                report.received += 1;
                if synthesize::is_near_duplicate(&input, &known) {
                    report.duplicates += 1;
                    continue;
                }
                known.push(input.clone());
                inputs.push(input);
            }
        }
        let labelled = self
            .label(inputs.into_iter().map(Input::Text).collect(), "synthesis")
            .await?;
        report.failed_gates = labelled.failed_gates;
        report.disagreed = labelled.disagreed;
        let kept = labelled.kept;
        report.kept = kept.len();
        self.progress.note(&format!(
            "synthesized {} of {} input(s): {} duplicate(s), {} failed the gates, {} disagreed",
            report.kept, report.requested, report.duplicates, report.failed_gates, report.disagreed
        ));
        Ok((kept, report))
    }

    fn synthesize_receipt(
        &self,
        synthetic: &[Example],
        report: &synthesize::SynthesisReport,
    ) -> Result<StageReceipt, CompileError> {
        Ok(StageReceipt {
            inputs: vec![dref("examples.jsonl", &self.examples_json)],
            outputs: vec![dref("synthetic.jsonl", &jsonl(synthetic))],
            params: params_ref(&serde_json::json!({
                "teacher": self.teacher_id, "requested": self.options.synthesize,
                "k": self.options.k, "report": report,
            })),
        })
    }

    /// Labels `inputs` k times each with the teacher prompt and keeps
    /// those whose samples pass the gates and agree ([`synthesize::agreed_label`]).
    /// `what` names the stage in a budget error.
    async fn label(&self, inputs: Vec<Input>, what: &str) -> Result<Labelled, CompileError> {
        let (task, options) = (self.task, self.options);
        let unlabelled: Vec<Example> = inputs
            .iter()
            .map(|input| Example {
                input: input.clone(),
                output: None,
                assertions: Vec::new(),
                origin: None,
            })
            .collect();
        let prompts = self
            .grounded(
                unlabelled
                    .iter()
                    .map(|e| prompts::teacher_prompt(task, e, options.shots))
                    .collect(),
            )
            .await?;
        let mut labelled = Labelled::default();
        for (input, messages) in inputs.into_iter().zip(prompts) {
            let samples = self
                .teacher
                .sample_k(&messages, options.k, options.temperature, self.max_tokens)
                .await;
            let mut texts = Vec::with_capacity(samples.len());
            for s in samples {
                texts.push(
                    s.map_err(|e| match e {
                        e @ TeacherError::BudgetExhausted { .. } => CompileError::Budget {
                            source: e,
                            done: format!("{what} stopped while labelling"),
                        },
                        e => CompileError::Teacher(e),
                    })?
                    .text,
                );
            }
            self.progress.advance(1);
            match synthesize::agreed_label(&self.verifier, &texts) {
                Ok(label) => labelled.kept.push(Example {
                    input,
                    output: Some(label),
                    assertions: Vec::new(),
                    origin: None,
                }),
                Err(synthesize::Rejected::Gates) => labelled.failed_gates += 1,
                Err(synthesize::Rejected::Disagree) => labelled.disagreed += 1,
            }
        }
        Ok(labelled)
    }

    /// The drift stage: drops drifted inputs equal or near-equal to an
    /// example or a test (a test is never trained on) or to an earlier one,
    /// labels the rest k times and keeps those whose labels pass the gates
    /// and agree.
    async fn absorb(&self) -> Result<(Vec<Example>, synthesize::AbsorbReport), CompileError> {
        let task = self.task;
        let mut known: Vec<String> = task
            .train
            .iter()
            .chain(&task.tests)
            .map(|e| prompts::render_input(&e.input))
            .collect();
        let mut report = synthesize::AbsorbReport {
            inputs: self.options.absorb.len(),
            ..Default::default()
        };
        let mut inputs = Vec::new();
        for e in &self.options.absorb {
            let text = prompts::render_input(&e.input);
            if synthesize::is_near_duplicate(&text, &known) {
                report.duplicates += 1;
                self.progress.advance(1);
                continue;
            }
            known.push(text);
            inputs.push(e.input.clone());
        }
        let labelled = self.label(inputs, "the drift stage").await?;
        report.failed_gates = labelled.failed_gates;
        report.disagreed = labelled.disagreed;
        report.kept = labelled.kept.len();
        report.covered = labelled.kept.iter().map(|e| e.input.digest()).collect();
        self.progress.note(&format!(
            "absorbed {} of {} drifted input(s): {} duplicate(s) of an example or test, {} failed the gates, {} disagreed",
            report.kept, report.inputs, report.duplicates, report.failed_gates, report.disagreed
        ));
        Ok((labelled.kept, report))
    }

    fn absorb_receipt(
        &self,
        kept: &[Example],
        report: &synthesize::AbsorbReport,
    ) -> Result<StageReceipt, CompileError> {
        Ok(StageReceipt {
            inputs: vec![dref("drift.jsonl", &jsonl(&self.options.absorb))],
            outputs: vec![dref("absorbed.jsonl", &jsonl(kept))],
            params: params_ref(&serde_json::json!({
                "teacher": self.teacher_id, "k": self.options.k, "report": report,
            })),
        })
    }

    /// The distill stage: the teacher's and the student's prompts for
    /// every example of `fit`, then [`pick_winners`](Self::pick_winners).
    async fn distill(&self, fit: &[Example]) -> Result<Distilled, CompileError> {
        let teacher_prompts = self
            .grounded(
                fit.iter()
                    .map(|e| prompts::teacher_prompt(self.task, e, self.options.shots))
                    .collect(),
            )
            .await?;
        let student_prompts = self
            .grounded(
                fit.iter()
                    .map(|e| prompts::student_messages(&e.input))
                    .collect(),
            )
            .await?;
        let (winners, report) = self
            .pick_winners(fit, teacher_prompts, student_prompts)
            .await?;
        let winners_json = jsonl(&winners);
        Ok(Distilled {
            winners,
            report,
            winners_json,
        })
    }

    fn distill_receipt(&self, distilled: &Distilled) -> Result<StageReceipt, CompileError> {
        let options = self.options;
        Ok(StageReceipt {
            inputs: vec![dref("examples.jsonl", &self.examples_json)],
            outputs: vec![dref("winners.jsonl", &distilled.winners_json)],
            params: params_ref(&serde_json::json!({
                "teacher": self.teacher_id, "k": options.k, "temperature": options.temperature,
                "shots": options.shots, "max_tokens": self.max_tokens,
                "grounded": options.grounding.is_some(),
            })),
        })
    }

    /// k samples per training example (`teacher_prompts[i]` for
    /// `examples[i]`); the verifier's pick wins, else the reference.
    /// Returns the training conversations (`student_prompts[i]` + winner).
    async fn pick_winners(
        &self,
        examples: &[Example],
        teacher_prompts: Vec<Vec<Message>>,
        student_prompts: Vec<Vec<Message>>,
    ) -> Result<(Vec<Vec<Message>>, DistillReport), CompileError> {
        let (teacher, verifier, options) = (&self.teacher, &self.verifier, self.options);
        let (max_tokens, progress) = (self.max_tokens, self.progress.as_ref());
        let mut set = tokio::task::JoinSet::new();
        for (i, messages) in teacher_prompts.into_iter().enumerate() {
            let teacher = Arc::clone(teacher);
            let k = options.k;
            let temperature = options.temperature;
            set.spawn(async move {
                (
                    i,
                    teacher
                        .sample_k(&messages, k, temperature, max_tokens)
                        .await,
                )
            });
        }
        let mut samples: Vec<Vec<Result<crate::teacher::Completion, TeacherError>>> =
            (0..examples.len()).map(|_| Vec::new()).collect();
        let mut budget: Option<TeacherError> = None;
        while let Some(joined) = set.join_next().await {
            let (i, results) = joined.map_err(|_| CompileError::Join("distill"))?;
            progress.advance(1);
            if budget.is_none() {
                budget = results.iter().find_map(|r| match r {
                    Err(e @ TeacherError::BudgetExhausted { .. }) => Some(clone_budget(e)),
                    _ => None,
                });
            }
            samples[i] = results;
        }
        if let Some(source) = budget {
            let answered = samples
                .iter()
                .filter(|s| s.iter().all(|r| r.is_ok()))
                .count();
            return Err(CompileError::Budget {
                source,
                done: format!(
                    "{answered} of {} training examples got all {} samples before it",
                    examples.len(),
                    options.k
                ),
            });
        }
        let mut report = DistillReport {
            examples: examples.len(),
            ..DistillReport::default()
        };
        let mut winners = Vec::new();
        let (mut passed, mut judged) = (0usize, 0usize);
        for ((example, results), mut conv) in examples.iter().zip(samples).zip(student_prompts) {
            let mut texts = Vec::new();
            let mut first_error = None;
            for r in results {
                match r {
                    Ok(c) => texts.push(c.text.trim().to_owned()),
                    Err(e) => {
                        report.failed_samples += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            if texts.is_empty() {
                // Every sample failed: the teacher is down or refuses; going on
                // would train on references alone without saying so.
                return Err(CompileError::Teacher(
                    first_error.expect("k >= 1, so an empty list means an error"),
                ));
            }
            let pick = verifier.pick(example, &texts);
            judged += texts.len();
            passed += pick.ranked.iter().filter(|r| r.verdict.passed).count();
            let answer = match (pick.winner, &example.output) {
                (Some(w), _) => {
                    report.from_teacher += 1;
                    texts[w].clone()
                }
                (None, Some(reference)) => {
                    report.from_reference += 1;
                    reference.clone()
                }
                (None, None) => {
                    let d = Dropped {
                        origin: origin_of(example),
                        reason: pick.reason.clone(),
                    };
                    progress.note(&format!("dropped {}: {}", d.origin, d.reason));
                    report.dropped.push(d);
                    continue;
                }
            };
            conv.push(Message::new("assistant", answer));
            winners.push(conv);
        }
        report.sample_pass_rate = if judged == 0 {
            0.0
        } else {
            passed as f64 / judged as f64
        };
        if winners.is_empty() {
            return Err(CompileError::NothingToTrain(format!(
                "{} example(s) dropped",
                report.dropped.len()
            )));
        }
        Ok((winners, report))
    }

    /// Student (base + adapter) drafting with `recipes` and token by
    /// token, base alone and teacher on every test.
    async fn eval_pack(
        &self,
        adapter: &Path,
        recipes: &Arc<RecipePack>,
        measures: Measures,
    ) -> Result<EvalPack, CompileError> {
        let (task, teacher, verifier, options) =
            (self.task, &self.teacher, &self.verifier, self.options);
        let (engine, progress, serving) = (
            Arc::clone(&self.engine),
            Arc::clone(&self.progress),
            &self.serving,
        );
        let max_tokens = serving.max_tokens;
        let student_prompts = self
            .grounded(
                task.tests
                    .iter()
                    .map(|t| prompts::student_messages(&t.input))
                    .collect(),
            )
            .await?;
        let base_prompts = self
            .grounded(
                task.tests
                    .iter()
                    .map(|t| prompts::base_messages(&task.description, &t.input))
                    .collect(),
            )
            .await?;
        let teacher_prompts = self
            .grounded(
                task.tests
                    .iter()
                    .map(|t| prompts::teacher_prompt(task, t, options.shots))
                    .collect(),
            )
            .await?;
        // The student and the base answer greedily under the verifier's shape,
        // as kolmd serves the artifact (the manifest's `compile.serving`).
        let run = |adapter: Option<PathBuf>, prompts: Vec<Vec<Message>>, drafting: Drafting| {
            let engine = Arc::clone(&engine);
            let progress = Arc::clone(&progress);
            let serving = serving.clone();
            blocking("evaluate", move || {
                engine.answer_all(adapter.as_deref(), &prompts, &serving, &drafting, &|| {
                    progress.advance(1)
                })
            })
        };
        // The student twice: drafting first (as served; the run K's latency
        // comes from), then token by token for the speedup.
        let student = run(
            Some(adapter.to_owned()),
            student_prompts.clone(),
            Drafting::Recipes(Arc::clone(recipes)),
        )
        .await?
        .map_err(CompileError::Student)?;
        let undrafted = run(Some(adapter.to_owned()), student_prompts, Drafting::Off)
            .await?
            .map_err(CompileError::Student)?;
        let decodes: Vec<DecodeFigures> = student
            .iter()
            .zip(&undrafted)
            .map(|(d, u)| decode_figures(d, u))
            .collect();
        let drift = self.drift_figures(&student, recipes).await?;
        let base = run(None, base_prompts, Drafting::Off)
            .await?
            .map_err(CompileError::Student)?;

        let price = teacher.config().price;
        let mut set = tokio::task::JoinSet::new();
        for (i, messages) in teacher_prompts.into_iter().enumerate() {
            let req = ChatRequest {
                messages,
                temperature: 0.0,
                max_tokens,
                seed: Some(0),
            };
            let teacher = Arc::clone(teacher);
            set.spawn(async move { (i, teacher.complete(&req).await) });
        }
        let mut teacher_answers: Vec<Option<Answer>> = vec![None; task.tests.len()];
        while let Some(joined) = set.join_next().await {
            let (i, result) = joined.map_err(|_| CompileError::Join("evaluate"))?;
            let c = match result {
                Ok(c) => c,
                Err(e @ TeacherError::BudgetExhausted { .. }) => {
                    return Err(CompileError::Budget {
                        source: e,
                        done:
                            "distillation and training finished; the teacher's evaluation did not"
                                .into(),
                    })
                }
                Err(e) => return Err(CompileError::Teacher(e)),
            };
            progress.advance(1);
            let text = c.text.trim().to_owned();
            let verdict = verifier.judge_example(&task.tests[i], &text);
            teacher_answers[i] = Some(Answer {
                output: text,
                passed: verdict.passed,
                checked: verdict.checked,
                failures: verdict.failures,
                fields_wrong: verdict.fields_wrong,
                latency_s: c.latency.as_secs_f64(),
                // What the answer cost when it was paid for, cached or not, so a
                // recompile measures the same teacher.
                cost_usd: price.map_or(0.0, |p| p.cost(c.input_tokens, c.output_tokens)),
            });
        }
        let judge = |test: &Example, a: &StudentAnswer| {
            let text = a.text.trim().to_owned();
            let verdict = verifier.judge_example(test, &text);
            Answer {
                output: text,
                passed: verdict.passed,
                checked: verdict.checked,
                failures: verdict.failures,
                fields_wrong: verdict.fields_wrong,
                latency_s: a.latency.as_secs_f64(),
                cost_usd: 0.0,
            }
        };
        let tests = task
            .tests
            .iter()
            .zip(student.iter().zip(&base))
            .zip(
                teacher_answers
                    .into_iter()
                    .zip(decodes.into_iter().zip(drift)),
            )
            .map(|((test, (s, b)), (t, (decode, drift)))| TestRecord {
                drafting: Some(decode),
                drift: Some(drift),
                ..TestRecord::new(
                    test,
                    judge(test, s),
                    judge(test, b),
                    t.expect("every teacher task reports"),
                )
            })
            .collect();
        Ok(EvalPack { tests, measures })
    }

    /// The drift figures of the student's answers to the tests, measured
    /// as kolmd measures them on the answers it serves.
    async fn drift_figures(
        &self,
        answers: &[StudentAnswer],
        recipes: &Arc<RecipePack>,
    ) -> Result<Vec<DriftFigures>, CompileError> {
        let recipes = Arc::clone(recipes);
        let grounding = self.options.grounding.clone();
        let inputs: Vec<Vec<Message>> = self
            .task
            .tests
            .iter()
            .map(|t| prompts::student_messages(&t.input))
            .collect();
        let answers: Vec<(Vec<u32>, Option<f64>)> = answers
            .iter()
            .map(|a| (a.token_ids.clone(), a.mean_logprob))
            .collect();
        blocking("evaluate", move || {
            answers
                .iter()
                .zip(&inputs)
                .map(|((tokens, mean_logprob), input)| {
                    let recall_best = match &grounding {
                        Some(g) => g.best_similarity(input).map_err(CompileError::Student)?,
                        None => None,
                    };
                    Ok(DriftFigures {
                        mean_logprob: *mean_logprob,
                        recipe_coverage: recipes.answer_coverage(tokens),
                        recall_best,
                    })
                })
                .collect()
        })
        .await?
    }

    /// The train stage: every candidate, each epoch judged on the
    /// validation share `held` when there is one; the best checkpoint ships
    /// as `adapter.gguf` in the work dir.
    async fn train(
        &self,
        distilled: &Distilled,
        held: &[Example],
    ) -> Result<Trained, CompileError> {
        let adapter = self.options.work_dir.join("adapter.gguf");
        let validation_prompts = self
            .grounded(
                held.iter()
                    .map(|e| prompts::student_messages(&e.input))
                    .collect(),
            )
            .await?;
        let job = TrainJob {
            trainer: Arc::clone(&self.trainer),
            engine: Arc::clone(&self.engine),
            verifier: self.verifier.clone(),
            serving: self.serving.clone(),
            winners: distilled.winners.clone(),
            held: held.to_vec(),
            validation_prompts,
            candidates: self.options.candidates.clone(),
            patience: self.options.validation.patience,
            work_dir: self.options.work_dir.clone(),
            out: adapter.clone(),
            progress: Arc::clone(&self.progress),
        };
        let (summary, validation) = blocking("train", move || job.run()).await??;
        Ok(Trained {
            adapter,
            summary,
            validation,
        })
    }

    fn train_receipt(
        &self,
        distilled: &Distilled,
        trained: &Trained,
    ) -> Result<StageReceipt, CompileError> {
        Ok(StageReceipt {
            inputs: vec![
                file_ref("model/base.gguf", &self.options.base)?,
                dref("winners.jsonl", &distilled.winners_json),
            ],
            outputs: vec![file_ref("adapter/lora.gguf", &trained.adapter)?],
            params: params_ref(&serde_json::json!({
                "train": trained.summary.params,
                "validation": trained.validation,
            })),
        })
    }

    /// The decompose stage: the recipe pack mined from the winners, its
    /// coverage of the tests' references, and the verifier's file.
    fn decompose(&self, distilled: &Distilled) -> Result<Decomposed, CompileError> {
        let engine = self.engine.as_ref();
        let mut winner_tokens = Vec::with_capacity(distilled.winners.len());
        for conv in &distilled.winners {
            let answer = conv.last().map(|m| m.content.as_str()).unwrap_or_default();
            winner_tokens.push(engine.tokenize(answer).map_err(CompileError::Student)?);
        }
        let mut pack = RecipePack::mine_tokens(&winner_tokens, self.options.mine)?;
        if let Some(older) = &self.options.recipes_floor {
            pack = pack.grown_by(older);
        }
        let mut reference_tokens = Vec::new();
        for t in &self.task.tests {
            if let Some(o) = &t.output {
                reference_tokens.push(engine.tokenize(o).map_err(CompileError::Student)?);
            }
        }
        let coverage = pack.coverage(&reference_tokens);
        let recipes = self.options.work_dir.join("recipes.bin");
        write_file(&recipes, &pack.to_bytes())?;
        let verifier_file = self.options.work_dir.join("verifier.json");
        write_file(&verifier_file, &self.verifier.to_json())?;
        Ok(Decomposed {
            pack: Arc::new(pack),
            coverage,
            recipes,
            verifier_file,
        })
    }

    fn decompose_receipt(
        &self,
        distilled: &Distilled,
        decomposed: &Decomposed,
    ) -> Result<StageReceipt, CompileError> {
        Ok(StageReceipt {
            inputs: vec![dref("winners.jsonl", &distilled.winners_json)],
            outputs: vec![
                file_ref("recipes/pack.bin", &decomposed.recipes)?,
                file_ref("verifier/verifier.json", &decomposed.verifier_file)?,
            ],
            params: digest_ref(
                serde_json::to_string(&self.options.mine)
                    .expect("params serialize")
                    .as_bytes(),
            ),
        })
    }

    /// The evaluate stage: the eval pack (see
    /// [`eval_pack`](Self::eval_pack)), written as `heldout.jsonl`.
    async fn evaluate(
        &self,
        trained: &Trained,
        decomposed: &Decomposed,
        recall: Option<&IndexBuilt>,
    ) -> Result<Evaluated, CompileError> {
        let measures = Measures {
            version: eval::EVAL_PACK_VERSION,
            // Everything the artifact serves with (docs/k-score.md).
            student_bytes: [
                &self.options.base,
                &trained.adapter,
                &decomposed.recipes,
                &decomposed.verifier_file,
            ]
            .into_iter()
            .chain(recall.into_iter().flat_map(|r| {
                std::iter::once(&r.index).chain(r.embedder_files.iter().map(|(_, p)| p))
            }))
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum(),
            teacher_bytes: self.options.teacher_bytes,
            coverage: decomposed.coverage.share,
        };
        let eval = self
            .eval_pack(&trained.adapter, &decomposed.pack, measures)
            .await?;
        let eval_file = self.options.work_dir.join("heldout.jsonl");
        write_file(&eval_file, &eval.to_jsonl())?;
        Ok(Evaluated { eval, eval_file })
    }

    fn evaluate_receipt(
        &self,
        trained: &Trained,
        decomposed: &Decomposed,
        evaluated: &Evaluated,
    ) -> Result<StageReceipt, CompileError> {
        Ok(StageReceipt {
            inputs: vec![
                file_ref("adapter/lora.gguf", &trained.adapter)?,
                file_ref("recipes/pack.bin", &decomposed.recipes)?,
                file_ref("verifier/verifier.json", &decomposed.verifier_file)?,
            ],
            outputs: vec![file_ref("eval/heldout.jsonl", &evaluated.eval_file)?],
            params: digest_ref(format!("max_tokens={}", self.max_tokens).as_bytes()),
        })
    }

    /// K from the eval pack, and the compile parameters the manifest
    /// records.
    fn score(
        self,
        stages: Stages,
        times: Vec<StageTime>,
        receipts: ReceiptChain,
    ) -> Result<Compiled, CompileError> {
        let Stages {
            recall,
            synthesis,
            absorbed,
            distilled,
            trained,
            decomposed,
            evaluated: Evaluated { eval, eval_file },
        } = stages;
        let (task, options) = (self.task, self.options);
        let kscore_inputs = eval.kscore_inputs();
        let kscore = KScore::compute(&kscore_inputs)?;
        let passed_gate = kscore.k >= options.gate;
        let mut params = BTreeMap::new();
        params.insert("k".into(), serde_json::json!(options.k));
        params.insert("temperature".into(), serde_json::json!(options.temperature));
        params.insert("shots".into(), serde_json::json!(options.shots));
        params.insert("gate".into(), serde_json::json!(options.gate));
        params.insert("max_tokens".into(), serde_json::json!(self.max_tokens));
        params.insert("train_examples".into(), serde_json::json!(task.train.len()));
        params.insert("tests".into(), serde_json::json!(task.tests.len()));
        params.insert("split".into(), serde_json::json!(task.split));
        params.insert("train".into(), trained.summary.params.clone());
        params.insert("validation".into(), serde_json::json!(trained.validation));
        if let Some(r) = &synthesis {
            params.insert("synthesis".into(), serde_json::json!(r));
        }
        params.insert("mine".into(), serde_json::json!(options.mine));
        params.insert("recipes".into(), serde_json::json!(decomposed.pack.stats()));
        params.insert("coverage".into(), serde_json::json!(decomposed.coverage));
        if let Some(r) = &recall {
            params.insert("recall".into(), r.summary.clone());
        }
        params.insert(
            "evaluation".into(),
            serde_json::json!({
                "scores": eval.scores(),
                "k_inputs": kscore_inputs,
                "drafting": eval.drafting(),
            }),
        );
        params.insert(
            kolm_artifact::serving::SERVING_KEY.into(),
            self.serving.to_value(),
        );
        if let Some(mut drift) = eval.drift_thresholds() {
            if let Some((_, report)) = &absorbed {
                drift.covered = report.covered.clone();
            }
            params.insert(kolm_artifact::drift::DRIFT_KEY.into(), drift.to_value());
        }
        if let Some((_, report)) = &absorbed {
            params.insert("absorbed".into(), serde_json::json!(report));
        }
        // What a recompile starts from: the examples and what was absorbed.
        let learned: Vec<ExampleLine> = task
            .train
            .iter()
            .chain(absorbed.iter().flat_map(|(kept, _)| kept))
            .filter_map(ExampleLine::of)
            .collect();
        let examples_file = options.work_dir.join("examples.jsonl");
        write_file(&examples_file, &jsonl(&learned))?;
        Ok(Compiled {
            verifier: self.verifier,
            adapter: trained.adapter,
            recipes: decomposed.recipes,
            verifier_file: decomposed.verifier_file,
            eval_file,
            recall,
            eval,
            kscore,
            kscore_inputs,
            passed_gate,
            distill: distilled.report,
            train: trained.summary,
            validation: trained.validation,
            synthesis,
            absorbed: absorbed.map(|(_, report)| report),
            examples_file,
            recipes_stats: decomposed.pack.stats(),
            coverage: decomposed.coverage,
            teacher: self.teacher.accounting(),
            times,
            receipts,
            params,
        })
    }
}

/// An example as a line of the task format (`{"input","output"}` for a
/// text, `{"messages","output"}` for a chat), as `train/examples.jsonl`
/// holds it and [`crate::task::parse_jsonl`] reads it back.
#[derive(Serialize)]
#[serde(untagged)]
enum ExampleLine<'a> {
    Text {
        input: &'a str,
        output: &'a str,
    },
    Chat {
        messages: &'a [Message],
        output: &'a str,
    },
}

impl<'a> ExampleLine<'a> {
    /// The line of an example with an output.
    fn of(e: &'a Example) -> Option<ExampleLine<'a>> {
        let output = e.output.as_deref()?;
        Some(match &e.input {
            Input::Text(input) => ExampleLine::Text { input, output },
            Input::Chat(messages) => ExampleLine::Chat { messages, output },
        })
    }
}

/// Splits the training examples into (fit, validation): a seeded share,
/// at least `params.min`, held out; nothing held out when validation is off
/// or fewer than `2 × min` examples are there.
fn validation_split(
    examples: &[Example],
    params: ValidationParams,
) -> Result<(Vec<Example>, Vec<Example>), CompileError> {
    let n = examples.len();
    if params.share <= 0.0 || n < 2 * params.min.max(1) {
        return Ok((examples.to_vec(), Vec::new()));
    }
    let share = params.share.max(params.min as f64 / n as f64).min(0.5);
    let (fit, held, _) = crate::task::split_examples(
        examples.to_vec(),
        crate::task::SplitParams {
            seed: params.seed,
            holdout: share,
        },
    )
    .map_err(CompileError::ValidationSplit)?;
    Ok((fit, held))
}

/// The train stage's work, moved onto a blocking thread whole.
struct TrainJob {
    trainer: Arc<dyn AdapterTrainer>,
    engine: Arc<dyn StudentEngine>,
    verifier: Verifier,
    serving: Serving,
    winners: Vec<Vec<Message>>,
    held: Vec<Example>,
    validation_prompts: Vec<Vec<Message>>,
    candidates: Vec<HyperParams>,
    patience: u32,
    work_dir: PathBuf,
    out: PathBuf,
    progress: Arc<dyn CompileProgress>,
}

impl TrainJob {
    /// Trains every candidate (only the first without validation) and
    /// copies the best checkpoint to `out`.
    fn run(self) -> Result<(TrainSummary, Option<ValidationReport>), CompileError> {
        let first = *self
            .candidates
            .first()
            .ok_or_else(|| CompileError::Train("no training settings to try".into()))?;
        if self.held.is_empty() {
            let summary = self
                .trainer
                .train(
                    &self.winners,
                    first,
                    &self.out,
                    None,
                    &mut |_, _| std::ops::ControlFlow::Continue(()),
                    self.progress.as_ref(),
                )
                .map_err(CompileError::Train)?;
            return Ok((summary, None));
        }
        let mut runs: Vec<(CandidateRun, TrainSummary, PathBuf)> = Vec::new();
        for (i, params) in self.candidates.iter().copied().enumerate() {
            let dir = self.work_dir.join(format!("candidate-{i}"));
            std::fs::create_dir_all(&dir).map_err(|source| CompileError::Io {
                path: dir.clone(),
                source,
            })?;
            let best_path = dir.join("best.gguf");
            let mut curve: Vec<eval::Rate> = Vec::new();
            let mut best: Option<(u32, usize)> = None;
            let mut failure: Option<CompileError> = None;
            let mut on_epoch = |epoch: u32, adapter: &Path| -> std::ops::ControlFlow<()> {
                let rate = match self.validate(adapter) {
                    Ok(r) => r,
                    Err(e) => {
                        failure = Some(e);
                        return std::ops::ControlFlow::Break(());
                    }
                };
                curve.push(rate);
                self.progress.note(&format!(
                    "rank {} lr {} epoch {epoch}: validation accuracy {}",
                    params.rank,
                    params.learning_rate,
                    rate.describe()
                ));
                if best.is_none_or(|(_, passed)| rate.passed > passed) {
                    if let Err(e) = std::fs::copy(adapter, &best_path) {
                        failure = Some(CompileError::Io {
                            path: best_path.clone(),
                            source: e,
                        });
                        return std::ops::ControlFlow::Break(());
                    }
                    best = Some((epoch, rate.passed));
                }
                let since = epoch - best.map_or(0, |(e, _)| e);
                if since >= self.patience {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            };
            let summary = self
                .trainer
                .train(
                    &self.winners,
                    params,
                    &dir.join("final.gguf"),
                    Some(&dir.join("epochs")),
                    &mut on_epoch,
                    self.progress.as_ref(),
                )
                .map_err(CompileError::Train);
            if let Some(e) = failure {
                return Err(e);
            }
            let summary = summary?;
            let (best_epoch, _) = best.ok_or_else(|| {
                CompileError::Train("training ended before its first epoch".into())
            })?;
            runs.push((
                CandidateRun {
                    params,
                    stopped_early: (curve.len() as u32) < params.epochs,
                    curve,
                    best_epoch,
                    first_loss: summary.first_loss,
                    last_loss: summary.last_loss,
                },
                summary,
                best_path,
            ));
        }
        // The best validation accuracy; ties go to the earlier candidate.
        let chosen = runs
            .iter()
            .enumerate()
            .max_by(|(i, a), (j, b)| {
                let acc = |r: &CandidateRun| r.curve[r.best_epoch as usize - 1].passed;
                acc(&a.0).cmp(&acc(&b.0)).then(j.cmp(i))
            })
            .map(|(i, _)| i)
            .expect("at least one candidate ran");
        std::fs::copy(&runs[chosen].2, &self.out).map_err(|e| CompileError::Io {
            path: self.out.clone(),
            source: e,
        })?;
        let summary = runs[chosen].1.clone();
        let report = ValidationReport {
            examples: self.held.len(),
            candidates: runs.into_iter().map(|(c, _, _)| c).collect(),
            chosen,
        };
        Ok((summary, Some(report)))
    }

    /// The validation accuracy of `adapter`: greedy answers, as served,
    /// judged against the held-out examples' references.
    fn validate(&self, adapter: &Path) -> Result<eval::Rate, CompileError> {
        let answers = self
            .engine
            .answer_all(
                Some(adapter),
                &self.validation_prompts,
                &self.serving,
                &Drafting::Off,
                &|| {},
            )
            .map_err(CompileError::Student)?;
        let passed = self
            .held
            .iter()
            .zip(&answers)
            .filter(|(e, a)| self.verifier.judge_example(e, a.text.trim()).passed)
            .count();
        Ok(eval::Rate {
            passed,
            n: self.held.len(),
        })
    }
}

fn clone_budget(e: &TeacherError) -> TeacherError {
    match e {
        TeacherError::BudgetExhausted { max_cost, spent } => TeacherError::BudgetExhausted {
            max_cost: *max_cost,
            spent: spent.clone(),
        },
        _ => unreachable!("only called on BudgetExhausted"),
    }
}
