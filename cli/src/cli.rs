//! The command-line grammar: every verb, flag and its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// kolm: compile tasks into signed `.kolm` artifacts and run them locally.
///
/// Keys, trust and the artifact store live under $KOLM_HOME when it is set,
/// else under the user's data directory.
#[derive(Debug, Parser)]
#[command(name = "kolmctl", version)]
pub struct Cli {
    /// Hide progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pack a GGUF base (and optionally a LoRA adapter) into a signed artifact.
    Pack(PackArgs),
    /// Show an artifact's manifest (checks its structure and signature, not its contents).
    Inspect(InspectArgs),
    /// Verify an artifact's structure, signature and every byte of its contents.
    ///
    /// Exit codes: 0 valid, 2 usage, 3 malformed archive, 4 bad signature,
    /// 5 signer not trusted, 6 digest mismatch, 1 anything else.
    Verify(VerifyArgs),
    /// Verify an artifact and add it to the local store.
    Install(InstallArgs),
    /// List installed artifacts.
    List(JsonArgs),
    /// Show an installed artifact and re-check its blobs.
    Show(RefArgs),
    /// Remove an installed artifact (its blobs go at the next `gc`).
    #[command(alias = "remove")]
    Rm(RefArgs),
    /// Delete blobs no installed artifact uses, and leftovers of interrupted installs.
    Gc(JsonArgs),
    /// Manage signing keys and trusted public keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show whether kolmd runs, its version, uptime, hardware and addresses.
    Status(JsonArgs),
    /// List the models kolmd has loaded: memory, device, idle time, expiry.
    Ps(JsonArgs),
    /// Load an installed artifact in kolmd now, before a request needs it.
    Load(LoadArgs),
    /// Unload a model from kolmd (pinned or not); in-flight requests finish.
    Unload(RefArgs),
    /// Generate with an artifact through kolmd, streaming tokens.
    ///
    /// With a PROMPT, answers it and exits. Without one, reads the prompt
    /// from stdin when it is not a terminal, else starts an interactive chat
    /// (`/bye` or Ctrl-D ends it, `/clear` forgets the conversation).
    Run(RunArgs),
    /// Train a LoRA adapter on a GGUF base from chat examples (JSONL).
    ///
    /// Each line is `{"messages":[{"role":..,"content":..},..]}` or
    /// `{"prompt":..,"completion":..}`. Prompts are rendered with the base's
    /// own chat template; the loss covers the assistant's tokens only. The
    /// adapter is a GGUF file llama.cpp (and `kolmctl pack --adapter`) loads.
    Train(TrainArgs),
    /// Compile a task and a teacher into a signed artifact.
    ///
    /// Distills the teacher's verified answers into a LoRA adapter on the
    /// base, mines the recipe pack, evaluates student, base and teacher on
    /// held-out tests, computes the K-score and seals the artifact. Below
    /// the gate it exits 7 with its report and writes nothing (unless
    /// `--force`). Every flag can also come from a `kolm.toml` (`--file`).
    Compile(Box<CompileArgs>),
    /// Work with an artifact's verifier.
    #[command(subcommand)]
    Verifier(VerifierCommand),
    /// Build recall indexes of document corpora.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Query a recall index, or the one inside an artifact.
    #[command(subcommand)]
    Recall(RecallCommand),
    /// Read, export and clear the drift log: answers kolmd's artifacts
    /// handled poorly, kept for the next compile
    /// ($KOLM_HOME/drift/drift.sqlite).
    #[command(subcommand)]
    Drift(DriftCommand),
}

impl Command {
    /// Whether the user asked for JSON (errors are then JSON too).
    pub fn wants_json(&self) -> bool {
        match self {
            Command::Pack(a) => a.json,
            Command::Inspect(a) => a.json,
            Command::Verify(a) => a.json,
            Command::Install(a) => a.json,
            Command::List(a) | Command::Gc(a) => a.json,
            Command::Show(a) | Command::Rm(a) => a.json,
            Command::Status(a) | Command::Ps(a) => a.json,
            Command::Load(a) => a.json,
            Command::Unload(a) => a.json,
            Command::Run(a) => a.json,
            Command::Train(a) => a.json,
            Command::Compile(a) => a.json,
            Command::Verifier(VerifierCommand::Explain { json, .. }) => *json,
            Command::Index(IndexCommand::Build(a)) => a.json,
            Command::Recall(RecallCommand::Query(a)) => a.json,
            Command::Drift(d) => match d {
                DriftCommand::List(a) => a.json,
                DriftCommand::Show(a) => a.json,
                DriftCommand::Export(_) => false,
                DriftCommand::Clear(a) => a.json,
            },
            Command::Keys(k) => match k {
                KeysCommand::Generate { json, .. }
                | KeysCommand::List { json }
                | KeysCommand::Trust { json, .. } => *json,
                KeysCommand::Export { .. } => false,
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// What the artifact should do, in words (the teacher's instruction).
    #[arg(value_name = "TASK")]
    pub task: Option<String>,
    /// A `kolm.toml` task file; flags override its fields.
    #[arg(long, short = 'f', value_name = "kolm.toml")]
    pub file: Option<PathBuf>,
    /// Training examples: a JSONL file or a directory of *.jsonl.
    #[arg(long, value_name = "DIR|FILE.jsonl")]
    pub examples: Option<PathBuf>,
    /// Held-out tests (JSONL, may carry assertions) [default: a seeded 20% of the examples].
    #[arg(long, value_name = "HELDOUT.jsonl")]
    pub tests: Option<PathBuf>,
    /// A document corpus (a folder or one file): indexed into the artifact,
    /// and every prompt of the compile is grounded in it.
    #[arg(long, value_name = "DIR|FILE")]
    pub corpus: Option<PathBuf>,
    /// The embedder of the corpus index: all-MiniLM-L6-v2 as a folder or
    /// zip (sentence-transformers layout); packed into the artifact.
    #[arg(long, value_name = "DIR|ZIP", env = "KOLM_EMBEDDER")]
    pub embedder: Option<PathBuf>,
    /// Chunks recalled per prompt, 1 to 32 [default: 4, what kolmd recalls per request].
    #[arg(long, value_name = "K")]
    pub recall_k: Option<usize>,
    /// The base model: a GGUF file, a .kolm artifact, or an installed
    /// artifact's name. Give it several times to try each, smallest first,
    /// and ship the smallest whose K passes the gate.
    #[arg(long, value_name = "MODEL.gguf|ARTIFACT|NAME")]
    pub base: Vec<String>,
    /// The teacher: openai:MODEL or anthropic:MODEL.
    #[arg(long, value_name = "PROVIDER:MODEL")]
    pub teacher: Option<String>,
    /// Teacher samples per training example [default: 8].
    #[arg(long)]
    pub k: Option<u32>,
    /// K-score gate in [0, 1] [default: 0.70].
    #[arg(long)]
    pub gate: Option<f64>,
    /// Free-text tasks: the similarity to the reference at or above which an
    /// answer is correct, in (0, 1] [default: inferred from the references].
    #[arg(long, value_name = "S")]
    pub similarity_min: Option<f64>,
    /// Ask the teacher for N new inputs in phrasings unlike the examples,
    /// label each k times and train on those whose labels agree.
    #[arg(long, value_name = "N")]
    pub synthesize: Option<usize>,
    /// Teacher budget in USD (needs a price for the model in the task file).
    #[arg(long, value_name = "USD")]
    pub max_cost: Option<f64>,
    /// Name of the signing key [default: `default`].
    #[arg(long, value_name = "NAME")]
    pub key: Option<String>,
    /// Where to write the artifact.
    #[arg(long, short, value_name = "X.kolm")]
    pub out: Option<PathBuf>,
    /// Artifact name [default: the output file's stem].
    #[arg(long)]
    pub name: Option<String>,
    /// Artifact version [default: 0.1.0; with --from-drift, the old
    /// version's last number plus one].
    #[arg(long)]
    pub version: Option<String>,
    /// Recompile the installed NAME[:VERSION] from the inputs kolmd logged
    /// as drift for it: its task, examples, tests (its eval pack), base and
    /// teacher are the old version's; the drifted inputs are labelled by the
    /// teacher and trained on; the new version must score at least as well
    /// on the old eval pack (else exit 7).
    #[arg(long, value_name = "NAME[:VERSION]")]
    pub from_drift: Option<String>,
    /// With --from-drift: how far (a share) the new version's accuracy on
    /// the old eval pack may fall below the old version's.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub regression_tolerance: f64,
    /// Write the artifact even when K is below the gate, or (--from-drift)
    /// when it scores below the old version.
    #[arg(long)]
    pub force: bool,
    /// Neither read nor write the teacher response cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Most training epochs over the distilled examples (validation stops
    /// earlier when accuracy stops improving).
    #[arg(long, default_value_t = 3)]
    pub epochs: u32,
    /// LoRA rank; a list (`8,16`) trains each and ships the best on
    /// validation.
    #[arg(long, value_delimiter = ',', default_value = "8")]
    pub rank: Vec<u32>,
    /// Learning rate; a list (`1e-3,2e-3`) trains each and ships the best
    /// on validation.
    #[arg(long, value_delimiter = ',', default_value = "1e-3")]
    pub lr: Vec<f64>,
    /// Share of the training examples held out to choose the checkpoint and
    /// the settings (at least 4; off below 8 examples); 0 turns it off.
    #[arg(long, default_value_t = 0.2, value_name = "SHARE")]
    pub validation: f64,
    /// Threads for the student model and training [default: physical cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run the compile in kolmd (which installs the artifact when it passes).
    #[arg(long)]
    pub via_daemon: bool,
    /// Progress as JSON lines on stderr (for kolmd and scripts).
    #[arg(long, hide = true)]
    pub progress_json: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum VerifierCommand {
    /// Print an artifact's verifier rules in words.
    Explain {
        /// The artifact file (or a verifier.json).
        #[arg(value_name = "X.kolm|verifier.json")]
        artifact: PathBuf,
        /// Print the verifier itself as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The base model, a GGUF file.
    #[arg(long, value_name = "MODEL.gguf")]
    pub base: PathBuf,
    /// A LoRA adapter for the base, a GGUF file.
    #[arg(long, value_name = "A.gguf")]
    pub adapter: Option<PathBuf>,
    /// Artifact name [default: derived from the base file name].
    #[arg(long)]
    pub name: Option<String>,
    /// Artifact version.
    #[arg(long, default_value = "0.1.0")]
    pub version: String,
    /// What the artifact is for, recorded in the manifest.
    #[arg(long)]
    pub task: Option<String>,
    /// Name of the signing key [default: `default`, created on first use].
    #[arg(long, value_name = "NAME")]
    pub key: Option<String>,
    /// A recall index to carry (`kolmctl index build`); needs --embedder.
    #[arg(long, value_name = "INDEX.sqlite", requires = "embedder")]
    pub index: Option<PathBuf>,
    /// The embedder the index was built with (a folder or zip in the
    /// sentence-transformers layout); packed under `recall/embedder/`.
    #[arg(long, value_name = "DIR|ZIP", requires = "index")]
    pub embedder: Option<PathBuf>,
    /// Where to write the artifact.
    #[arg(long, short, value_name = "X.kolm")]
    pub out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Index a folder (or one file) into one sqlite file: chunks, their
    /// vectors (sqlite-vec) and BM25 (FTS5). Rebuilding into the same file
    /// re-embeds only files whose content changed.
    Build(IndexBuildArgs),
}

#[derive(Debug, Args)]
pub struct IndexBuildArgs {
    /// The corpus: a folder (walked recursively) or one file.
    #[arg(value_name = "CORPUS")]
    pub corpus: PathBuf,
    /// The index file to create or update.
    #[arg(long, short, value_name = "INDEX.sqlite")]
    pub out: PathBuf,
    /// The embedder: all-MiniLM-L6-v2 as a folder or zip
    /// (sentence-transformers layout).
    #[arg(long, value_name = "DIR|ZIP", env = "KOLM_EMBEDDER")]
    pub embedder: PathBuf,
    /// Chunk size in the embedder's tokens.
    #[arg(long, value_name = "TOKENS", default_value_t = 200)]
    pub chunk_tokens: usize,
    /// Tokens repeated between consecutive chunks of one block.
    #[arg(long, value_name = "TOKENS", default_value_t = 32)]
    pub overlap: usize,
    /// Vector storage: f32 (exact), int8 or binary (both rescored in f32).
    #[arg(long, value_name = "KIND", default_value = "f32", value_parser = ["f32", "int8", "binary"])]
    pub quantization: String,
    /// Print the build report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RecallCommand {
    /// Retrieve the chunks that best answer a question, best first.
    Query(RecallQueryArgs),
}

#[derive(Debug, Args)]
pub struct RecallQueryArgs {
    /// A recall index file, or an artifact carrying one (verified first).
    #[arg(value_name = "ARTIFACT|INDEX")]
    pub target: PathBuf,
    /// The question.
    pub question: String,
    /// How many chunks.
    #[arg(long, short, default_value_t = 5)]
    pub k: usize,
    /// Retrieval: hybrid (vector + BM25, fused), vector or bm25.
    #[arg(long, default_value = "hybrid", value_parser = ["hybrid", "vector", "bm25"])]
    pub mode: String,
    /// The embedder for an index file [default: the one it was built with].
    #[arg(long, value_name = "DIR|ZIP")]
    pub embedder: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print the hits as a JSON list.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DriftCommand {
    /// List drift entries, newest first.
    List(DriftListArgs),
    /// Show one drift entry: input, output, scores beside their thresholds.
    Show(DriftShowArgs),
    /// Write the entries' inputs as JSONL, oldest first, one line per
    /// distinct input: `{"input":..}` or `{"messages":[..]}`, the example
    /// shape `kolmctl compile` reads (without outputs). Redacted entries
    /// are skipped and counted.
    Export(DriftExportArgs),
    /// Delete the entries the filters match (all of them without filters).
    Clear(DriftClearArgs),
}

/// Which drift entries a verb covers.
#[derive(Debug, Args)]
pub struct DriftFilterArgs {
    /// Only this artifact, or this version of it.
    #[arg(long, value_name = "NAME[:VERSION]", value_parser = parse_artifact_ref)]
    pub artifact: Option<(String, Option<String>)>,
    /// Only entries logged for this reason: verifier, logprob, recipes,
    /// recall or distance.
    #[arg(long, value_name = "REASON", value_parser = parse_reason)]
    pub reason: Option<kolm_drift::Reason>,
    /// Only entries since this time: RFC 3339 (`2026-12-07T10:00:00Z`) or
    /// a duration back from now (`30m`, `24h`, `7d`).
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<i64>,
}

#[derive(Debug, Args)]
pub struct DriftListArgs {
    #[command(flatten)]
    pub filter: DriftFilterArgs,
    /// At most N entries, the newest.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print the entries as a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DriftShowArgs {
    /// The entry's ID (as `kolmctl drift list` prints it).
    pub id: i64,
    /// Print the entry as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DriftExportArgs {
    #[command(flatten)]
    pub filter: DriftFilterArgs,
    /// Only the newest N matching entries.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Write to this file instead of stdout.
    #[arg(long, short, value_name = "FILE.jsonl")]
    pub out: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long, requires = "out")]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DriftClearArgs {
    #[command(flatten)]
    pub filter: DriftFilterArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `NAME` or `NAME:VERSION`.
fn parse_artifact_ref(s: &str) -> Result<(String, Option<String>), String> {
    let (name, version) = match s.split_once(':') {
        Some((name, version)) => (name, Some(version)),
        None => (s, None),
    };
    if name.is_empty() || version.is_some_and(str::is_empty) {
        return Err("expected NAME or NAME:VERSION".into());
    }
    Ok((name.to_owned(), version.map(str::to_owned)))
}

fn parse_reason(s: &str) -> Result<kolm_drift::Reason, String> {
    s.parse().map_err(|e: kolm_drift::DriftError| e.to_string())
}

/// `--since`: unix milliseconds from RFC 3339 or a duration back from now.
fn parse_since(s: &str) -> Result<i64, String> {
    let now = time::OffsetDateTime::now_utc();
    crate::commands::drift::since_ms(s, now)
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The artifact file.
    #[arg(value_name = "X.kolm")]
    pub artifact: PathBuf,
    /// Print the manifest as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Accept signatures by this public key file (repeatable), besides the trusted keys.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// Accept an artifact no trusted key signed: check integrity only.
    #[arg(long)]
    pub allow_untrusted: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The artifact file.
    #[arg(value_name = "X.kolm")]
    pub artifact: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print the result as JSON (also on failure).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The artifact file.
    #[arg(value_name = "X.kolm")]
    pub artifact: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RefArgs {
    /// An installed artifact: NAME (latest installed) or NAME:VERSION.
    pub name: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The artifact, as NAME (its newest version) or NAME:VERSION.
    pub name: String,
    /// Never evict it to make room for another model.
    #[arg(long)]
    pub pin: bool,
    /// How long it stays loaded after its last request: `5m`, `1h30m`,
    /// `0` (unload after each request), `-1` (until unloaded). Default:
    /// kolmd's `keep_alive`.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub keep_alive: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The artifact, as NAME (its newest version) or NAME:VERSION.
    pub name: String,
    /// What to ask. Without it: stdin, or an interactive chat on a terminal.
    pub prompt: Option<String>,
    /// A system message put before the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Send the prompt as raw text, without the model's chat template.
    #[arg(long)]
    pub raw: bool,
    /// Sampling temperature (0: greedy). Default: 1, or what a compiled
    /// artifact was evaluated with.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// The most tokens to generate per answer.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
    /// A seed, for repeatable sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when the output contains this string (repeatable).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// How long the model stays loaded afterwards (as for `load`).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub keep_alive: Option<String>,
    /// Chunks of the artifact's recall index to ground each answer in (0
    /// turns recall off; at most 32) [default: 4 for an artifact with an
    /// index].
    #[arg(long, value_name = "K")]
    pub recall_k: Option<u32>,
    /// Decode token by token, even where kolmd drafts (drafting never
    /// changes the answer; this measures it without).
    #[arg(long)]
    pub no_draft: bool,
    /// When an answer fails the artifact's verifier, sample again up to N
    /// times (0 to 8) and print the first that passes [default: kolmd's
    /// `verify_retries` for the artifact].
    #[arg(long, value_name = "N")]
    pub verify_retries: Option<u32>,
    /// Print token counts and speed after each answer, how many drafted
    /// tokens the model accepted, the verifier's word, and the sources a
    /// grounded answer was given (on stderr).
    #[arg(long)]
    pub verbose: bool,
    /// Print one JSON object with the text, usage, timings, drafting, the
    /// verifier's word and citations instead of streaming (needs a
    /// prompt).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a signing key (its public half is trusted at once).
    Generate {
        /// Key name.
        #[arg(long, default_value = "default")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List own keys and trusted public keys.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print a public key, to share with whoever verifies your artifacts.
    Export {
        /// Key name.
        #[arg(default_value = "default")]
        name: String,
    },
    /// Trust a public key file: artifacts it signs then verify.
    Trust {
        /// A public key file, as `kolmctl keys export` prints it.
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_grammar_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The base model, a GGUF file (llama family, qwen2 or gemma3 architecture).
    #[arg(long, value_name = "MODEL.gguf")]
    pub base: PathBuf,
    /// Training examples, one JSON object per line.
    #[arg(long, value_name = "TRAIN.jsonl")]
    pub data: PathBuf,
    /// Where to write the adapter.
    #[arg(long, short, value_name = "ADAPTER.gguf")]
    pub out: PathBuf,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f32,
    /// LoRA dropout.
    #[arg(long, default_value_t = 0.05)]
    pub dropout: f32,
    /// Passes over the data.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Peak learning rate (linear warm-up over a tenth of the run, then linear decay).
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Modules to adapt, from q, k, v, o, gate, up, down.
    #[arg(long, default_value = "q,k,v,o")]
    pub targets: String,
    /// Longest example in tokens; longer ones are refused unless --truncate.
    #[arg(long, default_value_t = 512)]
    pub max_seq_len: usize,
    /// Cut examples longer than --max-seq-len instead of refusing them.
    #[arg(long)]
    pub truncate: bool,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Seed for initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write checkpoints here (and resume from one found here).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Where to compute: auto (a GPU this build supports, else the CPU),
    /// cpu, cuda[:N] (builds with `--features cuda`) or metal[:N] (macOS
    /// builds with `--features metal`).
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: kolm_train::DeviceChoice,
    /// The dtype the frozen base is kept and multiplied in: auto (f32 on
    /// the CPU, bf16 on CUDA, f16 on Metal), f32, bf16 or f16 (GPU only).
    /// The LoRA parameters, norms and loss are always f32.
    #[arg(long, default_value = "auto", value_name = "DTYPE")]
    pub precision: kolm_train::Precision,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
