//! The engine: one worker thread per loaded base model. The thread owns the
//! weights and one llama.cpp context per attached artifact (each with its
//! own adapter and slots), and runs continuous batching: every step it
//! decodes one token for each generating slot plus a chunk of pending
//! prompts, in one batch per context. A generating slot may add a draft
//! ([`crate::draft`]): the model's logits at every drafted position are
//! sampled in order and the longest agreeing prefix is kept, so the output
//! is the one decoding token by token gives, in fewer steps.
//!
//! Why a thread owns the model: llama.cpp contexts borrow the model, and
//! initialising a LoRA adapter needs it mutably. The worker drops its
//! contexts (when all are idle), initialises the adapter, and rebuilds them;
//! nothing else ever touches the model, so no locks and no unsafe code.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llguidance::toktrie::TokEnv;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::draft::{plan, DraftConfig, DraftPolicy, DraftStats, Drafter, Source, StepCost};
use crate::error::RuntimeError;
use crate::sampling::{compile_grammar, log_probability, Grammar, SamplingParams, TokenSampler};
use crate::text::TextAssembler;

/// The process-wide llama.cpp backend (it may be initialised only once).
pub(crate) fn backend() -> Result<Arc<LlamaBackend>, RuntimeError> {
    static BACKEND: OnceLock<Result<Arc<LlamaBackend>, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init()
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(RuntimeError::Backend)
}

/// How to load a base model.
#[derive(Clone, Debug)]
pub struct BaseOptions {
    /// Layers to offload to a GPU (0 on CPU-only builds).
    pub gpu_layers: u32,
}

/// What the worker learned about a loaded base.
#[derive(Clone, Debug)]
pub struct BaseInfo {
    pub path: PathBuf,
    /// Bytes of weights as loaded.
    pub weight_bytes: u64,
    pub parameters: u64,
    pub context_train: u32,
    pub layers: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub embedding_size: u32,
    pub vocab_size: i32,
    /// `tokenizer.chat_template`, if the GGUF has one.
    pub chat_template: Option<String>,
    pub bos: String,
    pub eos: String,
    /// Whether the vocabulary asks for a BOS token before a prompt.
    pub add_bos: bool,
}

impl BaseInfo {
    /// Bytes an f16 KV cache of `cells` positions takes.
    pub fn kv_cache_bytes(&self, cells: u64) -> u64 {
        let head_dim = u64::from(self.embedding_size / self.heads.max(1));
        2 * u64::from(self.layers) * cells * u64::from(self.kv_heads) * head_dim * 2
    }
}

/// How to attach an artifact to a loaded base.
#[derive(Clone, Debug)]
pub struct ContextSpec {
    pub adapter: Option<PathBuf>,
    pub adapter_scale: f32,
    /// Sequences decoded together.
    pub slots: u32,
    /// Positions each slot may hold (prompt plus output).
    pub context_per_slot: u32,
    /// Most tokens decoded in one step.
    pub batch: u32,
    pub threads: i32,
    /// Requests that may wait for a slot before `QueueFull`.
    pub max_queue: usize,
    /// Drafting: on or off, its length, the recipe pack.
    pub draft: DraftConfig,
}

impl Default for ContextSpec {
    fn default() -> Self {
        ContextSpec {
            adapter: None,
            adapter_scale: 1.0,
            slots: 4,
            context_per_slot: 4096,
            batch: 512,
            threads: 2,
            max_queue: 64,
            draft: DraftConfig::default(),
        }
    }
}

/// One generation request. The prompt is text: the worker tokenizes it with
/// special tokens parsed (chat templates emit them as text).
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: String,
    /// Add the model's BOS token (raw completions); a leading BOS already in
    /// the text is not doubled.
    pub add_bos: bool,
    pub params: SamplingParams,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    pub grammar: Option<Grammar>,
    /// Draft when the context drafts (false: decode token by token).
    pub draft: bool,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FinishReason {
    #[default]
    /// End of generation token or a stop sequence.
    Stop,
    /// `max_tokens` or the slot's context was reached.
    Length,
}

/// The summary sent last.
#[derive(Clone, Debug, Default)]
pub struct Completion {
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    /// Prompt tokens reused from the slot's cache.
    pub cached_tokens: u32,
    pub completion_tokens: u32,
    pub time_to_first_token: Duration,
    pub total_time: Duration,
    /// What drafting did; `None` when the request did not draft.
    pub draft: Option<DraftStats>,
    /// The mean, over every token sampled (the end-of-generation token
    /// included), of the natural log of the probability the model gave it
    /// before any bias, penalty, temperature or grammar; `None` when
    /// nothing was sampled. Low values: the model was unsure of its answer.
    pub mean_logprob: Option<f64>,
    /// The answer's token ids, as sampled (no end-of-generation token).
    pub tokens: Vec<u32>,
}

/// What a generation stream yields.
#[derive(Clone, Debug)]
pub enum GenerateEvent {
    /// A text delta: whole UTF-8 characters, never part of a stop sequence.
    Text(String),
    /// Generation ended; nothing follows.
    Done(Completion),
    /// Generation failed; nothing follows.
    Failed(RuntimeError),
}

/// Receives a request's events. Dropping it cancels the request and frees
/// its slot at the worker's next step.
#[derive(Debug)]
pub struct GenerationStream {
    events: UnboundedReceiver<GenerateEvent>,
    _load: LoadGuard,
}

impl GenerationStream {
    /// The next event; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<GenerateEvent> {
        self.events.recv().await
    }

    /// The next event, blocking the thread (not for async code).
    pub fn blocking_next(&mut self) -> Option<GenerateEvent> {
        self.events.blocking_recv()
    }
}

/// Counts a request as in flight until its stream is dropped.
#[derive(Debug)]
struct LoadGuard(Arc<AtomicUsize>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Mean-pooled, L2-normalised embeddings.
#[derive(Clone, Debug)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
}

type Reply<T> = mpsc::Sender<Result<T, RuntimeError>>;

enum Command {
    Attach {
        spec: ContextSpec,
        reply: Reply<u64>,
    },
    Detach {
        context: u64,
    },
    Generate {
        context: u64,
        request: GenerateRequest,
        events: UnboundedSender<GenerateEvent>,
    },
    Embed {
        texts: Vec<String>,
        reply: Reply<Embeddings>,
    },
    Tokenize {
        text: String,
        reply: Reply<Vec<i32>>,
    },
    Shutdown,
}

/// Loads base models.
#[derive(Debug, Clone, Copy, Default)]
pub struct Runtime;

impl Runtime {
    /// Whether this build of llama.cpp can offload layers to a GPU (false on
    /// CPU-only builds, so the daemon keeps every layer on the CPU).
    pub fn supports_gpu_offload(&self) -> bool {
        backend().is_ok_and(|b| b.supports_gpu_offload())
    }

    /// Loads the GGUF at `path` (memory-mapped) on a new worker thread.
    pub fn load_base(
        &self,
        path: &Path,
        options: &BaseOptions,
    ) -> Result<BaseHandle, RuntimeError> {
        let backend = backend()?;
        let params = LlamaModelParams::default().with_n_gpu_layers(options.gpu_layers);
        let model = LlamaModel::load_from_file(&backend, path, &params).map_err(|e| {
            RuntimeError::LoadModel {
                path: path.display().to_string(),
                detail: e.to_string(),
            }
        })?;
        let info = Arc::new(base_info(&model, path));
        let (commands, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kolm-engine".into())
            .spawn(move || Worker::new(model, backend).run(receiver))
            .map_err(|e| RuntimeError::Backend(e.to_string()))?;
        Ok(BaseHandle {
            info,
            commands,
            thread: Some(thread),
        })
    }
}

fn base_info(model: &LlamaModel, path: &Path) -> BaseInfo {
    let vocab = model.vocab();
    let special =
        |t: LlamaToken| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
    BaseInfo {
        path: path.to_path_buf(),
        weight_bytes: model.size(),
        parameters: model.n_params(),
        context_train: model.n_ctx_train(),
        layers: model.n_layer(),
        heads: model.n_head(),
        kv_heads: model.n_head_kv(),
        embedding_size: u32::try_from(model.n_embd()).unwrap_or(0),
        vocab_size: model.n_vocab(),
        chat_template: model.meta_val_str("tokenizer.chat_template").ok(),
        bos: special(vocab.bos()),
        eos: special(vocab.eos()),
        add_bos: vocab.should_add_bos(),
    }
}

/// A loaded base model and its worker. Dropping it stops the worker and
/// frees the weights once every attached context is gone.
#[derive(Debug)]
pub struct BaseHandle {
    info: Arc<BaseInfo>,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl BaseHandle {
    pub fn info(&self) -> &BaseInfo {
        &self.info
    }

    /// Creates a context (with its adapter) for one artifact.
    pub fn attach(&self, spec: ContextSpec) -> Result<ContextHandle, RuntimeError> {
        if spec.slots == 0 || spec.context_per_slot < 16 || spec.batch < spec.slots {
            return Err(RuntimeError::InvalidParameter(
                "slots must be positive, context at least 16, and batch at least the slot count"
                    .into(),
            ));
        }
        let capacity = spec.slots as usize + spec.max_queue;
        let context_per_slot = spec.context_per_slot;
        let (reply, answer) = mpsc::channel();
        self.send(Command::Attach { spec, reply })?;
        let id = answer.recv().map_err(|_| RuntimeError::Unloaded)??;
        Ok(ContextHandle {
            id,
            commands: self.commands.clone(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            capacity,
            context_per_slot,
        })
    }

    /// Embeds each text with the base model (mean pooling, normalised).
    pub fn embed(&self, texts: Vec<String>) -> Result<Embeddings, RuntimeError> {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Embed { texts, reply })?;
        answer.recv().map_err(|_| RuntimeError::Unloaded)?
    }

    /// Token ids of `text` (special tokens parsed, no BOS added).
    pub fn tokenize(&self, text: &str) -> Result<Vec<i32>, RuntimeError> {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Tokenize {
            text: text.to_owned(),
            reply,
        })?;
        answer.recv().map_err(|_| RuntimeError::Unloaded)?
    }

    fn send(&self, command: Command) -> Result<(), RuntimeError> {
        self.commands
            .send(command)
            .map_err(|_| RuntimeError::Unloaded)
    }
}

impl Drop for BaseHandle {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One artifact's context on a loaded base. Dropping it frees the context.
#[derive(Debug)]
pub struct ContextHandle {
    id: u64,
    commands: mpsc::Sender<Command>,
    in_flight: Arc<AtomicUsize>,
    capacity: usize,
    context_per_slot: u32,
}

impl ContextHandle {
    /// Queues a request; past the queue bound, `QueueFull` at once.
    pub fn generate(&self, request: GenerateRequest) -> Result<GenerationStream, RuntimeError> {
        let previous = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let load = LoadGuard(self.in_flight.clone());
        if previous >= self.capacity {
            return Err(RuntimeError::QueueFull(previous));
        }
        let (events, receiver) = unbounded_channel();
        self.commands
            .send(Command::Generate {
                context: self.id,
                request,
                events,
            })
            .map_err(|_| RuntimeError::Unloaded)?;
        Ok(GenerationStream {
            events: receiver,
            _load: load,
        })
    }

    /// Requests queued or running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Positions available to one request.
    pub fn context_per_slot(&self) -> u32 {
        self.context_per_slot
    }
}

impl Drop for ContextHandle {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Detach { context: self.id });
    }
}

// ---------------------------------------------------------------------------
// The worker thread.

struct Worker {
    model: LlamaModel,
    backend: Arc<LlamaBackend>,
    specs: Vec<(u64, ContextSpec)>,
    adapters: Vec<(u64, LlamaLoraAdapter)>,
    next_id: u64,
    tok_env: Option<TokEnv>,
}

/// Why the serving loop returned.
enum Exit {
    Shutdown,
    /// An adapter must be initialised: needs the model mutably.
    InitAdapter {
        spec: ContextSpec,
        reply: Reply<u64>,
    },
}

impl Worker {
    fn new(model: LlamaModel, backend: Arc<LlamaBackend>) -> Self {
        Worker {
            model,
            backend,
            specs: Vec::new(),
            adapters: Vec::new(),
            next_id: 1,
            tok_env: None,
        }
    }

    fn run(mut self, commands: mpsc::Receiver<Command>) {
        let mut carried = VecDeque::new();
        let mut attached = None;
        loop {
            match self.serve(&commands, &mut carried, attached.take()) {
                Exit::Shutdown => return,
                Exit::InitAdapter { spec, reply } => {
                    let path = spec.adapter.clone().expect("only adapters need this");
                    match self.model.lora_adapter_init(&path) {
                        Ok(adapter) => {
                            let id = self.next_id;
                            self.next_id += 1;
                            self.adapters.push((id, adapter));
                            self.specs.push((id, spec));
                            // Serving resumes by building its context.
                            attached = Some((id, reply));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(RuntimeError::LoadAdapter {
                                path: path.display().to_string(),
                                detail: e.to_string(),
                            }));
                        }
                    }
                }
            }
        }
    }

    /// Serves until shutdown or until the model must be mutated.
    fn serve(
        &mut self,
        commands: &mpsc::Receiver<Command>,
        carried: &mut VecDeque<Command>,
        attached: Option<(u64, Reply<u64>)>,
    ) -> Exit {
        let model = &self.model;
        let backend = &*self.backend;
        let mut contexts: Vec<Slots<'_>> = Vec::new();
        let mut failed = Vec::new();
        for (id, spec) in &self.specs {
            let adapter = self
                .adapters
                .iter_mut()
                .find(|(a, _)| a == id)
                .map(|(_, a)| a);
            match Slots::new(model, backend, *id, spec.clone(), adapter) {
                Ok(c) => contexts.push(c),
                Err(e) => failed.push((*id, e)),
            }
        }
        for (id, e) in &failed {
            tracing::error!(context = id, "cannot build a context: {e}");
            self.specs.retain(|(s, _)| s != id);
            self.adapters.retain(|(a, _)| a != id);
        }
        if let Some((id, reply)) = attached {
            let result = match failed.into_iter().find(|(f, _)| *f == id) {
                Some((_, e)) => Err(e),
                None => Ok(id),
            };
            let _ = reply.send(result);
        }
        let mut embedder: Option<LlamaContext<'_>> = None;
        let mut deferred: Option<(ContextSpec, Reply<u64>)> = None;
        loop {
            let busy = contexts.iter().any(Slots::has_work);
            if deferred.is_some() && !busy {
                let (spec, reply) = deferred.take().expect("checked");
                return Exit::InitAdapter { spec, reply };
            }
            let next = if let Some(c) = carried.pop_front() {
                Some(c)
            } else if busy || deferred.is_some() {
                commands.try_recv().ok()
            } else {
                match commands.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return Exit::Shutdown,
                }
            };
            if let Some(command) = next {
                match command {
                    Command::Shutdown => return Exit::Shutdown,
                    Command::Attach { spec, reply } => {
                        if spec.adapter.is_some() {
                            if deferred.is_some() {
                                carried.push_back(Command::Attach { spec, reply });
                            } else {
                                deferred = Some((spec, reply));
                            }
                            continue;
                        }
                        let id = self.next_id;
                        self.next_id += 1;
                        match Slots::new(model, backend, id, spec.clone(), None) {
                            Ok(c) => {
                                contexts.push(c);
                                self.specs.push((id, spec));
                                let _ = reply.send(Ok(id));
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                        }
                    }
                    Command::Detach { context } => {
                        for c in contexts.iter_mut().filter(|c| c.id == context) {
                            c.fail_all(&RuntimeError::Unloaded);
                        }
                        contexts.retain(|c| c.id != context);
                        self.specs.retain(|(s, _)| *s != context);
                        self.adapters.retain(|(a, _)| *a != context);
                    }
                    Command::Generate {
                        context,
                        request,
                        events,
                    } => match contexts.iter_mut().find(|c| c.id == context) {
                        Some(c) => {
                            // llguidance's token table takes a pass over the
                            // whole vocabulary: build it on the first request
                            // that needs a grammar, not on a base's first
                            // request (it delayed every cold first token).
                            let env = request.grammar.is_some().then(|| {
                                &*self
                                    .tok_env
                                    .get_or_insert_with(|| LlamaSampler::llguidance_tok_env(model))
                            });
                            c.enqueue(model, env, request, events);
                        }
                        None => {
                            let _ = events.send(GenerateEvent::Failed(RuntimeError::Unloaded));
                        }
                    },
                    Command::Embed { texts, reply } => {
                        let _ = reply.send(embed(model, backend, &mut embedder, &texts));
                    }
                    Command::Tokenize { text, reply } => {
                        let tokens = model.vocab().tokenize(text.as_bytes(), false, true);
                        let _ = reply.send(Ok(tokens.into_iter().map(|t| t.0).collect()));
                    }
                }
                continue;
            }
            for c in contexts.iter_mut() {
                if c.has_work() {
                    c.step(model);
                }
            }
        }
    }
}

fn embed<'m>(
    model: &'m LlamaModel,
    backend: &LlamaBackend,
    context: &mut Option<LlamaContext<'m>>,
    texts: &[String],
) -> Result<Embeddings, RuntimeError> {
    const EMBED_CONTEXT: u32 = 2048;
    if context.is_none() {
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(EMBED_CONTEXT))
            .with_n_batch(EMBED_CONTEXT)
            .with_n_ubatch(EMBED_CONTEXT)
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean);
        *context = Some(
            model
                .new_context(backend, params)
                .map_err(|e| RuntimeError::Context(e.to_string()))?,
        );
    }
    let ctx = context.as_mut().expect("created above");
    let mut vectors = Vec::with_capacity(texts.len());
    let mut prompt_tokens = 0u32;
    for text in texts {
        let tokens = model.vocab().tokenize(text.as_bytes(), true, false);
        if tokens.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        if tokens.len() > EMBED_CONTEXT as usize {
            return Err(RuntimeError::PromptTooLong {
                prompt_tokens: tokens.len(),
                context: EMBED_CONTEXT as usize,
            });
        }
        prompt_tokens += tokens.len() as u32;
        ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(tokens.len(), 1);
        batch
            .add_sequence(&tokens, 0, true)
            .map_err(|e| RuntimeError::Embed(e.to_string()))?;
        ctx.decode(&mut batch)
            .map_err(|e| RuntimeError::Embed(e.to_string()))?;
        let pooled = ctx
            .embeddings_seq_ith(0)
            .map_err(|e| RuntimeError::Embed(e.to_string()))?;
        let norm = pooled.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        vectors.push(pooled.iter().map(|x| x / norm).collect());
    }
    Ok(Embeddings {
        vectors,
        prompt_tokens,
    })
}

// ---------------------------------------------------------------------------
// One context and its slots.

struct Slots<'m> {
    id: u64,
    spec: ContextSpec,
    ctx: LlamaContext<'m>,
    slots: Vec<Slot>,
    queue: VecDeque<Pending>,
    batch: LlamaBatch<'static>,
    /// Measured cost of this context's decode steps, for drafting.
    cost: StepCost,
}

struct Pending {
    tokens: Vec<LlamaToken>,
    sampler: TokenSampler,
    drafter: Option<Drafter>,
    request: GenerateRequest,
    events: UnboundedSender<GenerateEvent>,
    received: Instant,
}

struct Slot {
    seq: i32,
    /// Tokens whose keys and values are in this sequence's cache.
    cached: Vec<LlamaToken>,
    active: Option<Active>,
}

struct Active {
    prompt: Vec<LlamaToken>,
    cached_tokens: usize,
    sampler: TokenSampler,
    text: TextAssembler,
    events: UnboundedSender<GenerateEvent>,
    max_tokens: u32,
    generated: u32,
    /// Sampled, not yet decoded.
    next: Option<LlamaToken>,
    /// Index in the current batch whose logits to sample, if any.
    logits_at: Option<i32>,
    drafter: Option<Drafter>,
    /// Drafted after `next` in the current batch, with where each one's
    /// logits are in the batch (other slots' tokens may lie between).
    drafted: Vec<(LlamaToken, Source, i32)>,
    received: Instant,
    first_token: Option<Instant>,
    /// Sum and count of the sampled tokens' log probabilities.
    logprob_sum: f64,
    sampled: u32,
    /// The tokens emitted so far.
    output: Vec<u32>,
}

impl<'m> Slots<'m> {
    fn new(
        model: &'m LlamaModel,
        backend: &LlamaBackend,
        id: u64,
        spec: ContextSpec,
        adapter: Option<&mut LlamaLoraAdapter>,
    ) -> Result<Self, RuntimeError> {
        let n_ctx = spec.context_per_slot * spec.slots;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(spec.batch)
            .with_n_ubatch(spec.batch)
            .with_n_seq_max(spec.slots)
            .with_kv_unified(false)
            .with_n_threads(spec.threads)
            .with_n_threads_batch(spec.threads);
        let mut ctx = model
            .new_context(backend, params)
            .map_err(|e| RuntimeError::Context(e.to_string()))?;
        if let Some(adapter) = adapter {
            ctx.lora_adapter_set(adapter, spec.adapter_scale)
                .map_err(|e| RuntimeError::Context(format!("cannot apply the adapter: {e}")))?;
        }
        let slots = (0..spec.slots)
            .map(|seq| Slot {
                seq: seq as i32,
                cached: Vec::new(),
                active: None,
            })
            .collect();
        Ok(Slots {
            id,
            batch: LlamaBatch::new(spec.batch as usize, 1),
            spec,
            ctx,
            slots,
            queue: VecDeque::new(),
            cost: StepCost::default(),
        })
    }

    /// Ends every queued and running request with `error`.
    fn fail_all(&mut self, error: &RuntimeError) {
        for p in self.queue.drain(..) {
            let _ = p.events.send(GenerateEvent::Failed(error.clone()));
        }
        for slot in &mut self.slots {
            if let Some(a) = slot.active.take() {
                let _ = a.events.send(GenerateEvent::Failed(error.clone()));
            }
        }
    }

    fn has_work(&self) -> bool {
        !self.queue.is_empty() || self.slots.iter().any(|s| s.active.is_some())
    }

    /// Tokenizes and checks a request; failures are reported at once.
    fn enqueue(
        &mut self,
        model: &LlamaModel,
        env: Option<&TokEnv>,
        request: GenerateRequest,
        events: UnboundedSender<GenerateEvent>,
    ) {
        match self.prepare(model, env, &request) {
            Ok((tokens, sampler, drafter)) => self.queue.push_back(Pending {
                tokens,
                sampler,
                drafter,
                request,
                events,
                received: Instant::now(),
            }),
            Err(e) => {
                let _ = events.send(GenerateEvent::Failed(e));
            }
        }
    }

    fn prepare(
        &self,
        model: &LlamaModel,
        env: Option<&TokEnv>,
        request: &GenerateRequest,
    ) -> Result<(Vec<LlamaToken>, TokenSampler, Option<Drafter>), RuntimeError> {
        request.params.validate(model.n_vocab())?;
        let vocab = model.vocab();
        let bos_text =
            String::from_utf8_lossy(&vocab.token_to_piece(vocab.bos(), true, None)).into_owned();
        let (text, add_bos) = match request.prompt.strip_prefix(bos_text.as_str()) {
            Some(rest) if !bos_text.is_empty() && vocab.should_add_bos() => (rest, true),
            _ => (
                request.prompt.as_str(),
                request.add_bos && vocab.should_add_bos(),
            ),
        };
        let tokens = vocab.tokenize(text.as_bytes(), add_bos, true);
        if tokens.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        let limit = self.spec.context_per_slot as usize;
        if tokens.len() >= limit {
            return Err(RuntimeError::PromptTooLong {
                prompt_tokens: tokens.len(),
                context: limit,
            });
        }
        let grammar = request
            .grammar
            .as_ref()
            .map(|g| {
                let env = env.ok_or_else(|| {
                    RuntimeError::InvalidGrammar("no token table for the grammar".into())
                })?;
                compile_grammar(env, g)
            })
            .transpose()?;
        let drafter = (request.draft && self.spec.draft.enabled).then(|| {
            let prompt: Vec<u32> = tokens.iter().map(|t| t.0 as u32).collect();
            let shadow = grammar.as_ref().map(llguidance::Matcher::deep_clone);
            Drafter::new(&self.spec.draft, &prompt, shadow)
        });
        let seed = request.params.seed.unwrap_or_else(fresh_seed);
        Ok((
            tokens,
            TokenSampler::new(model, &request.params, grammar, seed),
            drafter,
        ))
    }

    /// Moves queued requests into free slots, preferring the slot whose
    /// cache shares the longest prefix with the prompt.
    fn assign(&mut self) {
        while let Some(pending) = self.queue.front() {
            if pending.events.is_closed() {
                self.queue.pop_front();
                continue;
            }
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.active.is_none())
                .map(|(i, s)| (i, common_prefix(&s.cached, &pending.tokens)))
                .max_by_key(|&(_, n)| n);
            let Some((index, shared)) = best else { return };
            let pending = self.queue.pop_front().expect("front exists");
            let slot = &mut self.slots[index];
            // Keep the shared prefix, but always recompute the last prompt
            // token so there are logits to sample from.
            let mut keep = shared.min(pending.tokens.len() - 1);
            let removed = self
                .ctx
                .clear_kv_cache_seq(Some(slot.seq as u32), Some(keep as u32), None)
                .unwrap_or(false);
            if !removed {
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                keep = 0;
            }
            slot.cached.truncate(keep);
            slot.active = Some(Active {
                cached_tokens: keep,
                prompt: pending.tokens,
                sampler: pending.sampler,
                text: TextAssembler::new(&pending.request.stop),
                events: pending.events,
                max_tokens: pending.request.max_tokens,
                generated: 0,
                next: None,
                logits_at: None,
                drafter: pending.drafter,
                drafted: Vec::new(),
                received: pending.received,
                first_token: None,
                logprob_sum: 0.0,
                sampled: 0,
                output: Vec::new(),
            });
        }
    }

    /// One decode step for this context.
    fn step(&mut self, model: &LlamaModel) {
        // Cancelled requests free their slots first.
        for slot in &mut self.slots {
            if slot.active.as_ref().is_some_and(|a| a.events.is_closed()) {
                slot.active = None;
            }
        }
        self.assign();
        self.batch.clear();
        let budget = self.spec.batch as usize;
        let limit = self.spec.context_per_slot as usize;
        let mut used = 0usize;
        // Generating slots: one token each.
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            active.logits_at = None;
            active.drafted.clear();
            if let Some(token) = active.next {
                let pos = slot.cached.len() as i32;
                if self.batch.add(token, pos, &[slot.seq], true).is_ok() {
                    active.logits_at = Some(used as i32);
                    used += 1;
                    slot.cached.push(token);
                }
            }
        }
        // Prompts: chunks of what is left of the budget.
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            if active.next.is_some() || used >= budget {
                continue;
            }
            let done = slot.cached.len();
            let take = (active.prompt.len() - done).min(budget - used);
            for (k, &token) in active.prompt[done..done + take].iter().enumerate() {
                let last = done + k + 1 == active.prompt.len();
                if self
                    .batch
                    .add(token, (done + k) as i32, &[slot.seq], last)
                    .is_ok()
                    && last
                {
                    active.logits_at = Some(used as i32);
                }
                used += 1;
            }
            // Record what this batch puts in the cache.
            slot.cached
                .extend_from_slice(&active.prompt[done..done + take]);
        }
        // Drafts: each generating sequence offers what its drafter guesses,
        // and the plan keeps the drafts worth their positions in this step
        // (docs/kolmd.md, "Drafting").
        let generating: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.active
                    .as_ref()
                    .is_some_and(|a| a.logits_at.is_some() && a.next.is_some())
            })
            .map(|(i, _)| i)
            .collect();
        let with_prompts = used > generating.len();
        let room = budget - used;
        let eager = self.spec.draft.policy == DraftPolicy::Eager;
        // Below this chance no draft pays.
        let least = if eager {
            0.0
        } else {
            self.cost
                .least_chance(used, generating.len(), self.spec.draft.max)
        };
        // (slot, drafted tokens, their chances)
        let mut offers: Vec<Offer> = Vec::new();
        if room > 0 {
            for &i in &generating {
                let slot = &mut self.slots[i];
                let active = slot.active.as_mut().expect("generating slots are active");
                let Some(drafter) = active.drafter.as_mut() else {
                    continue;
                };
                if !eager && drafter.best_chance() <= least {
                    continue;
                }
                // Room left in the slot's context and in the request's
                // tokens: the step emits the drafts accepted plus one.
                let context_room = limit.saturating_sub(slot.cached.len() + 1);
                let tokens_left = (active.max_tokens - active.generated).saturating_sub(1) as usize;
                let want = room.min(context_room).min(tokens_left);
                if want == 0 {
                    continue;
                }
                let tokenize = |bytes: &[u8]| -> Vec<u32> {
                    match std::str::from_utf8(bytes) {
                        Ok(text) => model
                            .vocab()
                            .tokenize(text.as_bytes(), false, false)
                            .into_iter()
                            .map(|t| t.0 as u32)
                            .collect(),
                        Err(_) => Vec::new(),
                    }
                };
                let draft = drafter.draft(want, &tokenize);
                if !draft.is_empty() {
                    let chances = drafter.chances(&draft);
                    offers.push((i, draft, chances));
                }
            }
        }
        if !offers.is_empty() {
            let chances: Vec<Vec<f64>> = offers.iter().map(|(_, _, c)| c.clone()).collect();
            let take = if eager {
                // Everything offered; the offers already fit the room
                // left when each was made, so cap them by what is left.
                let mut left = room;
                chances
                    .iter()
                    .map(|c| {
                        let n = c.len().min(left);
                        left -= n;
                        n
                    })
                    .collect()
            } else {
                plan(&chances, used, generating.len(), room, &self.cost)
            };
            for ((i, draft, _), n) in offers.into_iter().zip(take) {
                let slot = &mut self.slots[i];
                let active = slot.active.as_mut().expect("offering slots are active");
                for (t, source) in draft.into_iter().take(n) {
                    let token = LlamaToken(t as i32);
                    let pos = slot.cached.len() as i32;
                    if self.batch.add(token, pos, &[slot.seq], true).is_err() {
                        break;
                    }
                    active.drafted.push((token, source, used as i32));
                    used += 1;
                    slot.cached.push(token);
                }
            }
        }
        if used == 0 {
            return;
        }
        // The step's cost, decode and verification (sampling at every
        // drafted position) together, is what a drafted position costs.
        let started = Instant::now();
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            let error = RuntimeError::Decode(e.to_string());
            for slot in &mut self.slots {
                if let Some(active) = slot.active.take() {
                    let _ = active.events.send(GenerateEvent::Failed(error.clone()));
                    let _ = self
                        .ctx
                        .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                    slot.cached.clear();
                }
            }
            return;
        }
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            let Some(at) = active.logits_at else { continue };
            let drafted = std::mem::take(&mut active.drafted);
            // Where the cache is valid up to: the prompt (or `next`), then
            // each drafted token the model agrees with.
            let mut valid = slot.cached.len() - drafted.len();
            let mut accepted = 0usize;
            let mut index = at;
            let finish = loop {
                let token = active.sampler.sample(&self.ctx, index);
                active.logprob_sum +=
                    log_probability(self.ctx.get_logits_ith(index), token.0 as u32);
                active.sampled += 1;
                if let Some(reason) = active.emit(model, token, valid, limit) {
                    break Some(reason);
                }
                match drafted.get(accepted) {
                    Some(&(d, _, at)) if d == token => {
                        accepted += 1;
                        valid += 1;
                        index = at;
                    }
                    _ => {
                        active.next = Some(token);
                        break None;
                    }
                }
            };
            if let Some(d) = active.drafter.as_mut() {
                let sources: Vec<Source> = drafted.iter().map(|(_, s, _)| *s).collect();
                d.verified(&sources, accepted);
            }
            if valid < slot.cached.len() {
                // Rejected drafts leave the cache.
                let removed = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot.seq as u32), Some(valid as u32), None)
                    .unwrap_or(false);
                if removed {
                    slot.cached.truncate(valid);
                } else {
                    let _ = self
                        .ctx
                        .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                    slot.cached.clear();
                    if finish.is_none() {
                        let error = RuntimeError::Decode(
                            "cannot remove rejected drafts from the cache".into(),
                        );
                        if let Some(a) = slot.active.take() {
                            let _ = a.events.send(GenerateEvent::Failed(error));
                        }
                        continue;
                    }
                }
            }
            if let Some(reason) = finish {
                let active = slot.active.take().expect("active");
                let now = Instant::now();
                let _ = active.events.send(GenerateEvent::Done(Completion {
                    finish_reason: reason,
                    prompt_tokens: active.prompt.len() as u32,
                    cached_tokens: active.cached_tokens as u32,
                    completion_tokens: active.generated,
                    time_to_first_token: active.first_token.unwrap_or(now) - active.received,
                    total_time: now - active.received,
                    draft: active.drafter.map(|d| d.stats),
                    mean_logprob: (active.sampled > 0)
                        .then(|| active.logprob_sum / f64::from(active.sampled)),
                    tokens: active.output,
                }));
            }
        }
        if !with_prompts {
            self.cost.record(used, started.elapsed().as_secs_f64());
        }
    }
}

/// A generating slot's drafted tokens and their chances of acceptance.
type Offer = (usize, Vec<(u32, Source)>, Vec<f64>);

impl Active {
    /// Emits one sampled token: text to the client, and whether the
    /// request ends with it. `cached` is how many positions the slot's
    /// cache holds before this token.
    fn emit(
        &mut self,
        model: &LlamaModel,
        token: LlamaToken,
        cached: usize,
        limit: usize,
    ) -> Option<FinishReason> {
        self.first_token.get_or_insert_with(Instant::now);
        if model.vocab().is_eog(token) {
            let rest = self.text.finish();
            if !rest.is_empty() {
                let _ = self.events.send(GenerateEvent::Text(rest));
            }
            return Some(FinishReason::Stop);
        }
        self.generated += 1;
        self.output.push(token.0 as u32);
        let bytes = model.vocab().token_to_piece(token, false, None);
        let delta = self.text.push(&bytes);
        if !delta.text.is_empty() {
            let _ = self.events.send(GenerateEvent::Text(delta.text));
        }
        if delta.stopped {
            return Some(FinishReason::Stop);
        }
        if self.generated >= self.max_tokens || cached + 1 >= limit {
            let rest = self.text.finish();
            if !rest.is_empty() {
                let _ = self.events.send(GenerateEvent::Text(rest));
            }
            return Some(FinishReason::Length);
        }
        if let Some(d) = self.drafter.as_mut() {
            d.push(token.0 as u32);
        }
        None
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn fresh_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}
