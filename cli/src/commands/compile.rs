//! `kolmctl compile`: a task and a teacher in, a signed artifact out; and
//! `kolmctl verifier explain`. The stages run in `kolm_compile::pipeline`;
//! this module resolves flags and the task file, finds the base, builds the
//! teacher, plugs in llama.cpp (`LlamaStudent`) and the LoRA trainer, shows
//! progress and prints the report.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kolm_artifact::names;
use kolm_compile::pipeline::{self, CompileOptions, CompileProgress, Compiled, SealInputs, Stage};
use kolm_compile::regression::RegressionCheck;
use kolm_compile::report::{AccuracyFigures, BaseCandidateReport, CompileEvent, CompileReport};
use kolm_compile::teacher::TeacherSettings;
use kolm_compile::{TaskFile, Teacher, TeacherConfig, Verifier};
use kolm_store::Home;
use serde_json::json;

use crate::base_chat::BaseChat;
use crate::cli::{CompileArgs, VerifierCommand};
use crate::commands::from_drift::{next_version, Previous};
use crate::exit::{BelowGate, Regressed};
use crate::grounding::CorpusRecall;
use crate::output;
use crate::progress::Bar;
use crate::student::LlamaStudent;

/// The flags as a task file, to overlay on `--file`.
fn flags_as_task_file(args: &CompileArgs) -> TaskFile {
    TaskFile {
        task: args.task.clone(),
        examples: args.examples.clone(),
        tests: args.tests.clone(),
        corpus: args.corpus.clone(),
        embedder: args.embedder.clone(),
        recall_k: args.recall_k,
        base: args.base.clone(),
        teacher: args.teacher.clone(),
        k: args.k,
        gate: args.gate,
        similarity_min: args.similarity_min,
        synthesize: args.synthesize,
        max_cost: args.max_cost,
        key: args.key.clone(),
        out: args.out.clone(),
        ..TaskFile::default()
    }
}

/// Every combination of `--rank` and `--lr`, smallest rank first, each
/// for up to `--epochs`.
fn training_candidates(args: &CompileArgs) -> anyhow::Result<Vec<pipeline::HyperParams>> {
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if args.rank.is_empty() || args.rank.contains(&0) {
        bail!("--rank must list ranks of at least 1 (for example --rank 8 or --rank 8,16)");
    }
    if args.lr.is_empty() || args.lr.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
        bail!("--lr must list positive learning rates (for example --lr 1e-3,2e-3)");
    }
    if !(0.0..0.5).contains(&args.validation) {
        bail!(
            "--validation must be a share in [0, 0.5) (0 turns validation off), got {}",
            args.validation
        );
    }
    let mut ranks = args.rank.clone();
    ranks.sort_unstable();
    ranks.dedup();
    let mut out = Vec::new();
    for rank in ranks {
        for &learning_rate in &args.lr {
            out.push(pipeline::HyperParams {
                rank,
                learning_rate,
                epochs: args.epochs,
            });
        }
    }
    Ok(out)
}

/// The resolved task file: `--file` (if any) overlaid by the flags, and
/// with `--from-drift`, completed from the version it replaces.
pub fn resolve_task_file(
    args: &CompileArgs,
    previous: Option<&Previous>,
    quiet: bool,
) -> anyhow::Result<TaskFile> {
    let file = match &args.file {
        Some(p) => TaskFile::load(p)?,
        None => TaskFile::default(),
    };
    let mut merged = file.overlay(flags_as_task_file(args));
    if let Some(previous) = previous {
        merged = previous.fill(merged, quiet);
    }
    if args.no_cache {
        merged
            .teacher_config
            .get_or_insert_with(TeacherSettings::default)
            .no_cache = Some(true);
    }
    merged.validate()?;
    Ok(merged)
}

/// The base as a GGUF path: the file itself, the base inside a `.kolm`
/// (verified, then copied into `work`), or an installed artifact's base blob.
fn resolve_base(home: &Home, base: &str, work: &Path) -> anyhow::Result<PathBuf> {
    let path = Path::new(base);
    if path.is_file() {
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .with_context(|| format!("cannot read the base {base}"))?;
        if &magic == b"GGUF" {
            return Ok(path.to_owned());
        }
        let keyring = home.keyring();
        let policy = keyring.trust_policy(false)?;
        let verified = kolm_artifact::verify(path, &policy, &kolm_artifact::NoProgress)
            .with_context(|| {
                format!("the base {base} is neither a GGUF file nor a valid artifact")
            })?;
        let out = work.join("base.gguf");
        let mut dst = std::io::BufWriter::new(std::fs::File::create(&out)?);
        verified
            .copy_entry(names::BASE, &mut dst)
            .with_context(|| format!("cannot copy the base out of {base}"))?;
        dst.flush()?;
        return Ok(out);
    }
    if path.components().count() > 1 || base.ends_with(".gguf") || base.ends_with(".kolm") {
        bail!("the base {base} does not exist: give a GGUF file, a .kolm artifact or an installed artifact's name");
    }
    let store = home.store()?;
    let record = store.get(base).with_context(|| {
        format!("the base {base} is not a file and not an installed artifact (see `kolmctl list`)")
    })?;
    let blob = store
        .entry_blob(&record, names::BASE)?
        .context("the installed artifact has no base model")?;
    Ok(blob.path)
}

/// A base the compile may train: where it came from, its GGUF, its size, its
/// work directory and its loaded chat template.
struct BaseCandidate {
    spec: String,
    path: PathBuf,
    bytes: u64,
    dir: PathBuf,
    chat: Arc<BaseChat>,
}

/// The bases to try, smallest first, each loaded and checked before any
/// teacher call: the given ones (a base that cannot serve chats is an error),
/// or without any, every base this machine knows that has a chat template.
fn candidate_bases(
    home: &Home,
    given: &[String],
    work: &Path,
    quiet: bool,
) -> anyhow::Result<Vec<BaseCandidate>> {
    let known = given.is_empty();
    let specs = if known {
        let specs = crate::known_bases::known_bases(home)?;
        if !quiet && !specs.is_empty() {
            eprintln!(
                "no --base given: trying the known bases {}",
                specs.join(", ")
            );
        }
        specs
    } else {
        given.to_vec()
    };
    let mut bases = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let dir = work.join(format!("base-{i}"));
        std::fs::create_dir_all(&dir).context("cannot create a work directory")?;
        let path = resolve_base(home, spec, &dir)?;
        let bytes = std::fs::metadata(&path)
            .with_context(|| format!("cannot read the base {spec}"))?
            .len();
        let chat = match BaseChat::load(&path) {
            Ok(chat) => Arc::new(chat),
            Err(e) if known => {
                if !quiet {
                    eprintln!("skipping the known base {spec}: {e:#}");
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        bases.push(BaseCandidate {
            spec: spec.clone(),
            path,
            bytes,
            dir,
            chat,
        });
    }
    if bases.is_empty() {
        bail!(
            "no base given and none known: pass --base MODEL.gguf (an instruct model with a chat template, or an installed artifact), install an artifact with `kolmctl install`, or fetch the fixture bases with scripts/fixtures.sh"
        );
    }
    bases.sort_by_key(|b| b.bytes);
    Ok(bases)
}

/// Progress for people (a bar per stage) or for programs (JSON lines).
struct StageBars {
    json: bool,
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl StageBars {
    fn emit(&self, event: CompileEvent) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", serde_json::to_string(&event).unwrap_or_default());
    }
}

impl CompileProgress for StageBars {
    fn stage_started(&self, stage: Stage, total: u64) {
        if self.json {
            return self.emit(CompileEvent::StageStarted { stage, total });
        }
        if self.quiet {
            return;
        }
        let bar = if total > 0 {
            ProgressBar::new(total)
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let template = if total > 0 {
            "{prefix:<10} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}"
        } else {
            "{prefix:<10} {spinner} {elapsed_precise} {msg}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(stage.name());
        bar.enable_steady_tick(Duration::from_millis(250));
        *self.bar.lock().expect("bar lock") = Some(bar);
    }

    fn advance(&self, n: u64) {
        if self.json {
            return self.emit(CompileEvent::Advance { n });
        }
        if let Some(b) = self.bar.lock().expect("bar lock").as_ref() {
            b.inc(n);
        }
    }

    fn note(&self, message: &str) {
        if self.json {
            return self.emit(CompileEvent::Note {
                message: message.to_owned(),
            });
        }
        match self.bar.lock().expect("bar lock").as_ref() {
            Some(b) if message.starts_with("step ") => b.set_message(message.to_owned()),
            Some(b) => b.println(message),
            None if !self.quiet => eprintln!("{message}"),
            None => {}
        }
    }

    fn stage_finished(&self, stage: Stage, elapsed: Duration) {
        if self.json {
            return self.emit(CompileEvent::StageFinished {
                stage,
                seconds: elapsed.as_secs_f64(),
            });
        }
        if let Some(b) = self.bar.lock().expect("bar lock").take() {
            b.finish_and_clear();
        }
        if !self.quiet {
            eprintln!("{:<10} done in {:.1}s", stage.name(), elapsed.as_secs_f64());
        }
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn compile(home: &Home, args: CompileArgs, quiet: bool) -> anyhow::Result<()> {
    if args.via_daemon {
        return crate::commands::daemon::compile_via_daemon(home, &args);
    }
    let previous = args
        .from_drift
        .as_deref()
        .map(|r| Previous::load(home, r))
        .transpose()?;
    if previous.is_none() && args.regression_tolerance != 0.0 {
        bail!("--regression-tolerance applies to --from-drift recompiles only");
    }
    let file = resolve_task_file(&args, previous.as_ref(), quiet)?;
    let out = file.out.clone().expect("validated");
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!(
            "cannot write {}: the directory {} does not exist",
            out.display(),
            parent.display()
        );
    }
    let task = match &previous {
        Some(p) => p.task()?,
        None => file.load_task()?,
    };
    if let Some(p) = &previous {
        if !quiet {
            eprintln!(
                "recompiling {} from {} drifted input(s) ({} entr{} in {}, {} redacted)",
                p.reference,
                p.drift_log.inputs,
                p.drift_log.entries,
                if p.drift_log.entries == 1 { "y" } else { "ies" },
                p.drift_log.database.display(),
                p.drift_log.redacted
            );
        }
    }

    // Keys before any paid work: a missing key fails now, not after the teacher.
    let keyring = home.keyring();
    let (key, _) = keyring.signing_key_or_create_default(file.key.as_deref())?;
    let receipt_key = keyring.receipt_key()?;

    let mut settings = file.teacher_config.clone().unwrap_or_default();
    if settings.cache_dir.is_none() {
        settings.cache_dir = Some(home.root().join("cache").join("teacher"));
    }
    let teacher_spec = file.teacher.clone().expect("validated");
    let config = TeacherConfig::resolve(
        &teacher_spec,
        Some(&settings),
        &file.prices,
        file.max_cost,
        |k| std::env::var(k).ok(),
    )?;
    let (provider, model) = (config.provider.to_string(), config.model.clone());
    let teacher = Arc::new(Teacher::new(config)?);

    let work = tempfile::Builder::new()
        .prefix("kolm-compile-")
        .tempdir()
        .context("cannot create a work directory")?;
    let grounding = match &file.corpus {
        None => None,
        Some(corpus) => {
            let embedder = file.embedder.as_deref().context(
                "--corpus needs an embedder: pass --embedder (all-MiniLM-L6-v2 as a folder or zip) or set KOLM_EMBEDDER",
            )?;
            let k = file.recall_k.unwrap_or(kolm_recall::prompt::DEFAULT_K);
            let recall = CorpusRecall::new(corpus, embedder, k, work.path())?;
            Some(Arc::new(recall) as Arc<dyn pipeline::Grounding>)
        }
    };
    // Every base, smallest first: the smallest whose K passes the gate ships.
    let bases = candidate_bases(home, &file.base, work.path(), quiet)?;
    let threads = args.threads.unwrap_or_else(default_threads);
    let candidates = training_candidates(&args)?;
    let progress = Arc::new(StageBars {
        json: args.progress_json,
        bar: Mutex::new(None),
        quiet,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut tried: Vec<BaseCandidateReport> = Vec::new();
    let mut best: Option<(Compiled, PathBuf, CompileOptions)> = None;
    for BaseCandidate {
        spec,
        path: base,
        bytes,
        dir,
        chat,
    } in &bases
    {
        if bases.len() > 1 {
            progress.note(&format!("base {spec} ({})", output::size(*bytes)));
        }
        let chat = Arc::clone(chat);
        let student = Arc::new(LlamaStudent::new(Arc::clone(&chat), threads as i32));
        let trainer = Arc::new(crate::trainer::LoraTrainer::new(base, chat)?);
        let mut options = CompileOptions::new(base, dir);
        options.k = file.k_or_default();
        options.gate = file.gate_or_default();
        options.similarity_min = file.similarity_min;
        options.candidates = candidates.clone();
        options.validation.share = args.validation;
        options.synthesize = file.synthesize.unwrap_or(0);
        options.grounding = grounding.clone();
        if let Some(p) = &previous {
            options.absorb = p.drifted.clone();
            options.recipes_floor = p.recipes.clone().map(Arc::new);
        }
        let compiled = runtime.block_on(pipeline::compile(
            &task,
            Arc::clone(&teacher),
            student,
            trainer,
            &options,
            &receipt_key,
            progress.clone(),
        ))?;
        tried.push(BaseCandidateReport {
            base: spec.clone(),
            bytes: *bytes,
            k: compiled.kscore.k,
            accuracy: compiled.kscore_inputs.student_pass_rate,
            passed_gate: compiled.passed_gate,
        });
        let passed = compiled.passed_gate;
        let better = best
            .as_ref()
            .is_none_or(|(b, _, _)| !b.passed_gate && compiled.kscore.k > b.kscore.k);
        if better {
            best = Some((compiled, base.clone(), options));
        }
        if passed {
            break;
        }
    }
    let (mut compiled, base, options) = best.expect("validate requires a base");
    compiled
        .params
        .insert("base_candidates".into(), json!(tried));

    // The regression gate: the old version's eval pack, both judged alike.
    let regression = previous
        .as_ref()
        .map(|p| {
            RegressionCheck::compare(
                &p.reference,
                &compiled.verifier,
                &p.eval,
                &compiled.eval,
                args.regression_tolerance,
            )
        })
        .transpose()?;
    let below_gate = !compiled.passed_gate && !args.force;
    let regressed = regression.as_ref().is_some_and(|r| !r.passed) && !args.force;
    let sealed = if below_gate || regressed {
        None
    } else {
        let started = std::time::Instant::now();
        progress.stage_started(Stage::Seal, 0);
        let name = match (&args.name, &previous) {
            (Some(n), _) => n.clone(),
            (None, Some(p)) => p.name.clone(),
            (None, None) => out
                .file_stem()
                .map(|s| s.to_string_lossy().to_lowercase())
                .unwrap_or_else(|| "compiled".into()),
        };
        let report = pipeline::seal(
            &compiled,
            SealInputs {
                name,
                version: args.version.clone().unwrap_or_else(|| match &previous {
                    Some(p) => next_version(&p.version),
                    None => "0.1.0".into(),
                }),
                task: task.description.clone(),
                base: &base,
                provider: provider.clone(),
                model: model.clone(),
                signers: &[&key],
                receipt_key: &receipt_key,
                out: &out,
            },
            &Bar::new(true),
        )?;
        progress.stage_finished(Stage::Seal, started.elapsed());
        Some(report)
    };
    let accounting = teacher.accounting();
    let (s, b, t) = compiled.eval.pass_rates();
    let scores = compiled.eval.scores();
    let report = CompileReport {
        ok: !below_gate && !regressed,
        artifact: sealed.as_ref().map(|r| r.path.clone()),
        size: sealed.as_ref().map(|r| r.size),
        student_pass_rate: s,
        base_pass_rate: b,
        teacher_pass_rate: t,
        accuracy: AccuracyFigures::from(&scores),
        k_score: compiled.kscore.k,
        k_parts: compiled.kscore.clone(),
        k_inputs: compiled.kscore_inputs.clone(),
        gate: options.gate,
        passed_gate: compiled.passed_gate,
        teacher: format!("{provider}:{model}"),
        teacher_calls: accounting.calls,
        cache_hits: accounting.cache_hits,
        cost_usd: accounting.cost_usd,
        teacher_accounting: accounting,
        distill: compiled.distill.clone(),
        train: compiled.train.clone(),
        validation: compiled.validation.clone(),
        synthesis: compiled.synthesis.clone(),
        absorbed: compiled.absorbed.clone(),
        regression: regression.clone(),
        base,
        base_candidates: tried,
        recipes: compiled.recipes_stats.clone(),
        recall: compiled.recall.as_ref().map(|r| r.summary.clone()),
        coverage: compiled.coverage.clone(),
        drafting: compiled.eval.drafting(),
        stages: compiled.times.clone(),
        examples: task.train.len(),
        tests: task.tests.len(),
    };
    if args.json {
        output::json(&report)?;
    } else {
        print_report(
            &compiled,
            &report,
            sealed.as_ref().map(|r| r.path.as_path()),
        );
    }
    if below_gate {
        return Err(BelowGate {
            k: compiled.kscore.k,
            gate: options.gate,
        }
        .into());
    }
    if let (true, Some(r)) = (regressed, &regression) {
        return Err(Regressed {
            from: r.from.clone(),
            old: r.old.value(),
            new: r.new.value(),
        }
        .into());
    }
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn print_report(compiled: &Compiled, report: &CompileReport, artifact: Option<&Path>) {
    let k = &compiled.kscore;
    let m = &compiled.kscore_inputs;
    let acct = &compiled.teacher;
    super::scores::print_scores(&compiled.eval.scores());
    outln!("K-score              {:.3}", k.k);
    outln!(
        "  accuracy           {:.3}  (the student's accuracy above)",
        k.accuracy
    );
    outln!(
        "  size               {:.3}  (student {} vs teacher {}{})",
        k.size,
        output::size(m.student_bytes),
        output::size(
            m.teacher_bytes
                .unwrap_or(kolm_compile::kscore::DEFAULT_TEACHER_BYTES)
        ),
        if m.teacher_bytes.is_none() {
            ", assumed"
        } else {
            ""
        }
    );
    outln!(
        "  latency            {:.3}  (student {:.2} s drafting vs teacher {:.2} s per answer)",
        k.latency,
        m.student_latency_s,
        m.teacher_latency_s
    );
    outln!(
        "  cost               {:.3}  (student ${:.4} vs teacher ${:.4} per 1,000 answers)",
        k.cost,
        m.student_cost_per_1k,
        m.teacher_cost_per_1k
    );
    outln!(
        "  coverage           {:.3}  (recipe pack on the held-out references)",
        k.coverage
    );
    outln!(
        "distill              {} example(s): {} from the teacher, {} from the reference, {} dropped",
        compiled.distill.examples,
        compiled.distill.from_teacher,
        compiled.distill.from_reference,
        compiled.distill.dropped.len()
    );
    outln!(
        "train                {} step(s), loss {:.3} -> {:.3}, {:.0} tokens/s",
        compiled.train.steps,
        compiled.train.first_loss,
        compiled.train.last_loss,
        compiled.train.tokens_per_second
    );
    if report.base_candidates.len() > 1 {
        for t in &report.base_candidates {
            outln!(
                "base candidate       {} ({}): K {:.3}, accuracy {:.2}{}",
                t.base,
                output::size(t.bytes),
                t.k,
                t.accuracy,
                if t.passed_gate {
                    ", passes the gate"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(r) = &compiled.absorbed {
        outln!(
            "drift                {} of {} drifted input(s) absorbed ({} duplicate(s) of an example or test, {} failed the gates, {} disagreed)",
            r.kept, r.inputs, r.duplicates, r.failed_gates, r.disagreed
        );
    }
    if let Some(r) = &report.regression {
        outln!("regression gate      {}", r.describe());
    }
    if let Some(r) = &compiled.synthesis {
        outln!(
            "synthesis            {} of {} input(s) kept ({} received, {} duplicate(s), {} failed the gates, {} disagreed; {} request(s))",
            r.kept, r.requested, r.received, r.duplicates, r.failed_gates, r.disagreed, r.requests
        );
    }
    match &compiled.validation {
        None => outln!(
            "validation           off (too few examples, or --validation 0): the last epoch ships"
        ),
        Some(v) => {
            let c = v.chosen();
            outln!(
                "validation           {} held-out example(s), {} candidate(s): shipped rank {} lr {} epoch {} at {}",
                v.examples,
                v.candidates.len(),
                c.params.rank,
                c.params.learning_rate,
                c.best_epoch,
                v.accuracy().describe()
            );
            for r in &v.candidates {
                let curve: Vec<String> = r
                    .curve
                    .iter()
                    .map(|x| format!("{:.2}", x.value()))
                    .collect();
                outln!(
                    "  rank {:<3} lr {:<8} accuracy by epoch {}{}",
                    r.params.rank,
                    r.params.learning_rate,
                    curve.join(", "),
                    if r.stopped_early {
                        " (stopped early)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    outln!(
        "recipes              {} context(s), coverage {}",
        compiled.recipes_stats.entries.iter().sum::<u32>(),
        pct(compiled.coverage.share)
    );
    if let Some(d) = &report.drafting {
        outln!("drafting             {}", d.describe());
    }
    outln!(
        "teacher              {} call(s), {} cache hit(s), ${:.4}",
        acct.calls,
        acct.cache_hits,
        acct.cost_usd
    );
    if let Some(r) = &compiled.recall {
        outln!(
            "recall               {} file(s), {} chunk(s), {} skipped; prompts grounded in {} chunk(s)",
            r.summary["files"],
            r.summary["chunks"],
            r.summary["skipped"].as_array().map_or(0, |s| s.len()),
            r.summary["k"]
        );
    }
    let times: Vec<String> = compiled
        .times
        .iter()
        .map(|t| format!("{} {:.1}s", t.stage.name(), t.seconds))
        .collect();
    outln!("time                 {}", times.join(", "));
    match artifact {
        Some(p) => outln!(
            "wrote {} ({})",
            p.display(),
            output::size(report.size.unwrap_or(0))
        ),
        None => outln!(
            "no artifact written: K is below the gate {:.2}",
            report.gate
        ),
    }
}

/// `kolmctl verifier explain`.
pub fn verifier(home: &Home, command: VerifierCommand) -> anyhow::Result<()> {
    let VerifierCommand::Explain { artifact, json } = command;
    let bytes = if artifact.extension().is_some_and(|e| e == "json") {
        std::fs::read(&artifact).with_context(|| format!("cannot read {}", artifact.display()))?
    } else {
        let keyring = home.keyring();
        let policy = keyring.trust_policy(true)?;
        let verified = kolm_artifact::verify(&artifact, &policy, &kolm_artifact::NoProgress)
            .with_context(|| format!("{} failed verification", artifact.display()))?;
        if verified.entry(names::VERIFIER).is_none() {
            bail!(
                "{} has no verifier (it was packed, not compiled)",
                artifact.display()
            );
        }
        verified.read_entry(names::VERIFIER)?
    };
    let verifier = Verifier::from_json(&bytes)?;
    if json {
        let value: serde_json::Value = serde_json::from_slice(&verifier.to_json())?;
        return output::json(&value);
    }
    out!("{}", verifier.explain());
    Ok(())
}
