//! Benchmark (issue 15): drafting with no draft model. A compiled
//! structured-output artifact decodes with drafting (grammar-forced tokens,
//! its recipe pack, prompt lookup) against the same artifact decoding token
//! by token, and against llama.cpp's own n-gram drafting on the same base,
//! adapter and prompts.
//!
//! Two tasks, each compiled here by the release `kolmctl` with a replayed
//! teacher (`kolm_benches::teacher`: the tasks' reference answers, standing
//! in for a frontier API): the compile bench's orders task
//! (`daemon/tests/data/orders`) and a contact extraction task with 44
//! examples (`benches/data/contacts`). Each test input is sent as the same
//! raw prompt (the base's chat template around the artifact's system
//! message) to:
//!
//! - kolmd with drafting on and with `"draft": false` (same daemon,
//!   alternating): decode tokens/s (first to last streamed token) and
//!   `kolm.draft`'s acceptance; the texts must be identical;
//! - `llama-lookup` with a static n-gram cache made by `llama-lookup-create`
//!   from the same verified training outputs (the examples' answers the
//!   teacher replayed), the same adapter and JSON schema: its own decode
//!   speed and acceptance;
//! - `llama-server` with its n-gram cache speculation on the same static
//!   cache (`--spec-type ngram-cache`) and adapter: `timings.predicted_per_second`
//!   and its draft counts.
//!
//! Then aggregate tokens/s at 4 and 8 concurrent streams with drafting on
//! and off. Goals: decode on/off >= 1.5 per task, kolm / llama-lookup >= 1.0,
//! aggregate on/off >= 0.95 at both stream counts.
//!
//! Run: `cargo build --release -p kolm-cli -p kolmd && scripts/llama-tools.sh
//! && cargo bench -p kolm-benches --bench draft`. Environment:
//! `KOLM_BENCH_REPS` (default 3), `KOLM_BENCH_THREADS` (default all CPUs),
//! `KOLM_BENCH_EPOCHS` (default 3), `KOLMCTL`, `KOLMD`, `KOLM_LLAMA_TOOLS`.
//! Without llama.cpp's tools the anchors are reported as missing.
//!
//! Output: progress on stderr; tables on stdout, then one JSON line
//! `{"bench":"draft",...}`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kolm_artifact::serving::{Serving, ShapeGrammar};
use kolm_benches::daemon::Kolmd;
use kolm_benches::teacher::{read_pairs, ReplayTeacher};
use kolm_benches::{
    env_or, http, kolmctl_path, kolmd_path, llama_tools_dir, mark, median, run_ok, smollm2_fixture,
    workspace_root, Table,
};
use serde_json::{json, Value};

/// Decode tokens/s with drafting / without, per task.
const DECODE_GOAL: f64 = 1.5;
/// kolm's drafted decode tokens/s / llama-lookup's.
const LOOKUP_GOAL: f64 = 1.0;
/// Aggregate tokens/s with drafting auto / off, at each stream count.
const AGGREGATE_GOAL: f64 = 0.95;
/// Tokens drafted per step, everywhere.
const DRAFT_MAX: u32 = 8;
/// The stream counts of the aggregate measure.
const STREAMS: [usize; 2] = [4, 8];
/// SmolLM2's default system message (its template adds it when a chat
/// has none).
const SMOLLM2_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
const TIMEOUT: Duration = Duration::from_secs(300);

struct Task {
    name: &'static str,
    description: &'static str,
    dir: PathBuf,
}

/// A compiled, installed task.
struct Compiled {
    task: Task,
    /// Test inputs rendered as raw prompts.
    prompts: Vec<String>,
    max_tokens: u32,
    schema: Option<Value>,
    adapter: PathBuf,
    /// The verified training outputs, one per line (llama-lookup-create's
    /// corpus).
    corpus: PathBuf,
    coverage: Option<f64>,
}

/// One request's figures.
#[derive(Clone, Debug, Default)]
struct Decode {
    text: String,
    /// Tokens after the first.
    tokens: u64,
    /// Seconds from the first to the last streamed token.
    seconds: f64,
    drafted: u64,
    accepted: u64,
}

/// Sums of several requests.
#[derive(Clone, Debug, Default)]
struct Totals {
    tokens: u64,
    seconds: f64,
    drafted: u64,
    accepted: u64,
}

impl Totals {
    fn add(&mut self, d: &Decode) {
        self.tokens += d.tokens;
        self.seconds += d.seconds;
        self.drafted += d.drafted;
        self.accepted += d.accepted;
    }

    fn tps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tokens as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn acceptance(&self) -> Option<f64> {
        (self.drafted > 0).then(|| self.accepted as f64 / self.drafted as f64)
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench draft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let kolmctl = kolmctl_path()?;
    let kolmd_bin = kolmd_path()?;
    let reps: usize = env_or("KOLM_BENCH_REPS", 3)?;
    ensure!(reps > 0, "KOLM_BENCH_REPS must be at least 1");
    let epochs: u32 = env_or("KOLM_BENCH_EPOCHS", 3)?;
    let threads: usize = env_or(
        "KOLM_BENCH_THREADS",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )?;
    let root = workspace_root();
    let base = smollm2_fixture()?;
    let tasks = vec![
        Task {
            name: "orders",
            description: "Turn a free-text fruit order into compact JSON with the item (singular) and the quantity as an integer.",
            dir: root.join("daemon/tests/data/orders"),
        },
        Task {
            name: "contacts",
            description: "Extract the contact in a note as compact JSON with the name, email, phone and city; a field the note does not give is null.",
            dir: root.join("benches/data/contacts"),
        },
    ];
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    let files: Vec<PathBuf> = tasks
        .iter()
        .flat_map(|t| [t.dir.join("examples.jsonl"), t.dir.join("tests.jsonl")])
        .collect();
    let teacher = ReplayTeacher::start(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    let mut compiled = Vec::new();
    for task in tasks {
        eprintln!("compiling the {} task...", task.name);
        compiled.push(compile(
            &kolmctl,
            &home,
            dir.path(),
            &base,
            &teacher,
            task,
            epochs,
            threads,
        )?);
    }

    let daemon = Kolmd::start(
        &kolmd_bin,
        &home,
        dir.path(),
        &format!(
            "slots = 8\ncontext = 1024\nbatch = 512\nthreads = {threads}\nkeep_alive = \"-1\"\n\
             draft = \"auto\"\ndraft_max = {DRAFT_MAX}\ngrpc_socket = \"off\""
        ),
    )?;
    let tools = llama_tools_dir().ok().filter(|d| {
        ["llama-lookup", "llama-lookup-create", "llama-server"]
            .iter()
            .all(|t| d.join(t).exists())
    });
    if tools.is_none() {
        eprintln!("llama.cpp's tools are not built (scripts/llama-tools.sh): anchors skipped");
    }

    let mut report = Vec::new();
    let mut goals: Vec<(String, f64, f64, bool)> = Vec::new();
    let mut table = Table::new([
        "task",
        "side",
        "decode tok/s",
        "acceptance",
        "vs kolm off",
        "goal",
        "mark",
    ]);
    for c in &compiled {
        eprintln!("[{}] warming up", c.task.name);
        kolm_decode(daemon.addr, c, &c.prompts[0], true)?;
        kolm_decode(daemon.addr, c, &c.prompts[0], false)?;
        let mut on_reps = Vec::new();
        let mut off_reps = Vec::new();
        let mut on_total = Totals::default();
        // Prompts whose drafted answer matched the token-by-token one, per rep.
        let mut identical = 0usize;
        for rep in 0..reps {
            let mut on = Totals::default();
            let mut off = Totals::default();
            for (i, prompt) in c.prompts.iter().enumerate() {
                // Alternate which goes first.
                let order = if (rep + i) % 2 == 0 {
                    [true, false]
                } else {
                    [false, true]
                };
                let mut texts = [String::new(), String::new()];
                for draft in order {
                    let d = kolm_decode(daemon.addr, c, prompt, draft)?;
                    texts[usize::from(draft)] = d.text.clone();
                    if draft {
                        on.add(&d);
                    } else {
                        off.add(&d);
                    }
                }
                if texts[0] == texts[1] {
                    identical += 1;
                } else {
                    eprintln!(
                        "[{}] prompt {i}: drafted text differs:\n  off: {:?}\n  on:  {:?}",
                        c.task.name, texts[0], texts[1]
                    );
                }
            }
            eprintln!(
                "[{}] rep {}/{reps}: drafting {:.1} tok/s, off {:.1} tok/s, acceptance {:.2}",
                c.task.name,
                rep + 1,
                on.tps(),
                off.tps(),
                on.acceptance().unwrap_or(0.0)
            );
            on_reps.push(on.tps());
            off_reps.push(off.tps());
            on_total.drafted += on.drafted;
            on_total.accepted += on.accepted;
        }
        let by_source = draft_sources(daemon.addr, c.task.name)?;
        eprintln!(
            "[{}] accepted / drafted by source: {}",
            c.task.name,
            by_source
                .iter()
                .map(|(s, a, d)| format!("{s} {a}/{d}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let on = median(&on_reps);
        let off = median(&off_reps);
        let speedup = on / off;
        let ok = speedup >= DECODE_GOAL;
        let answers = reps * c.prompts.len();
        goals.push((
            format!("{}: decode drafting / off", c.task.name),
            speedup,
            DECODE_GOAL,
            ok,
        ));
        table.row([
            c.task.name.to_owned(),
            "kolmd, drafting off".into(),
            format!("{off:.1}"),
            "-".into(),
            "1.00".into(),
            String::new(),
            String::new(),
        ]);
        table.row([
            c.task.name.to_owned(),
            format!("kolmd, drafting ({identical} of {answers} answers identical)"),
            format!("{on:.1}"),
            pct(on_total.acceptance()),
            format!("{speedup:.2}"),
            format!(">= {DECODE_GOAL}"),
            mark(ok).into(),
        ]);
        let mut anchors = json!({});
        if let Some(tools) = &tools {
            let cache = dir.path().join(format!("{}-ngram.bin", c.task.name));
            run_ok(
                Command::new(tools.join("llama-lookup-create"))
                    .arg("-m")
                    .arg(&base)
                    .arg("-f")
                    .arg(&c.corpus)
                    .arg("-lcs")
                    .arg(&cache)
                    .stdin(Stdio::null()),
            )
            .context("llama-lookup-create")?;
            let mut lookup_reps = Vec::new();
            let mut lookup_total = Totals::default();
            for rep in 0..reps {
                let mut t = Totals::default();
                for prompt in &c.prompts {
                    let d = llama_lookup(tools, &base, c, &cache, prompt, threads)?;
                    t.add(&d);
                }
                eprintln!(
                    "[{}] rep {}/{reps}: llama-lookup {:.1} tok/s, acceptance {:.2}",
                    c.task.name,
                    rep + 1,
                    t.tps(),
                    t.acceptance().unwrap_or(0.0)
                );
                lookup_reps.push(t.tps());
                lookup_total.drafted += t.drafted;
                lookup_total.accepted += t.accepted;
            }
            let lookup = median(&lookup_reps);
            let ratio = on / lookup;
            let ok = ratio >= LOOKUP_GOAL;
            goals.push((
                format!("{}: kolm drafting / llama-lookup", c.task.name),
                ratio,
                LOOKUP_GOAL,
                ok,
            ));
            table.row([
                c.task.name.to_owned(),
                "llama-lookup (static n-gram cache)".into(),
                format!("{lookup:.1}"),
                pct(lookup_total.acceptance()),
                format!("{:.2}", lookup / off),
                format!("kolm/it >= {LOOKUP_GOAL}"),
                format!("{} ({ratio:.2})", mark(ok)),
            ]);
            let server = llama_server_decode(tools, &base, c, &cache, threads, reps)?;
            match &server {
                Ok((tps, totals)) => {
                    table.row([
                        c.task.name.to_owned(),
                        "llama-server --spec-type ngram-cache".into(),
                        format!("{tps:.1}"),
                        pct(totals.acceptance()),
                        format!("{:.2}", tps / off),
                        "informational".into(),
                        format!("kolm/it {:.2}", on / tps),
                    ]);
                }
                Err(why) => eprintln!("[{}] llama-server n-gram speculation: {why}", c.task.name),
            }
            anchors = json!({
                "llama_lookup": {"tps": lookup, "reps": lookup_reps,
                                 "acceptance": lookup_total.acceptance(),
                                 "drafted": lookup_total.drafted, "accepted": lookup_total.accepted},
                "llama_server_ngram_cache": match &server {
                    Ok((tps, t)) => json!({"tps": tps, "acceptance": t.acceptance(),
                                            "drafted": t.drafted, "accepted": t.accepted}),
                    Err(why) => json!({"error": why}),
                },
            });
        }
        report.push(json!({
            "task": c.task.name,
            "prompts": c.prompts.len(),
            "recipes_coverage": c.coverage,
            "kolm_on_tps": on, "kolm_on_reps": on_reps,
            "kolm_off_tps": off, "kolm_off_reps": off_reps,
            "speedup": speedup,
            "identical_answers": identical, "answers": answers,
            "by_source": by_source.iter().map(|(s, a, d)| json!({"source": s, "accepted": a, "drafted": d})).collect::<Vec<_>>(),
            "drafted": on_total.drafted, "accepted": on_total.accepted,
            "acceptance": on_total.acceptance(),
            "anchors": anchors,
        }));
    }

    // Aggregate throughput: every task's prompts, round robin, N streams.
    let all: Vec<(&Compiled, &String)> = compiled
        .iter()
        .flat_map(|c| c.prompts.iter().map(move |p| (c, p)))
        .collect();
    let mut agg_table = Table::new([
        "streams",
        "drafting tok/s",
        "off tok/s",
        "ratio",
        "goal",
        "mark",
    ]);
    let mut aggregate = Vec::new();
    for streams in STREAMS {
        let mut on_reps = Vec::new();
        let mut off_reps = Vec::new();
        for rep in 0..reps {
            let order = if rep % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for draft in order {
                let tps = aggregate_tps(daemon.addr, &all, streams, draft)?;
                if draft {
                    on_reps.push(tps);
                } else {
                    off_reps.push(tps);
                }
            }
            eprintln!(
                "[aggregate] {streams} streams rep {}/{reps}: drafting {:.1} tok/s, off {:.1} tok/s",
                rep + 1,
                on_reps[rep],
                off_reps[rep]
            );
        }
        let on = median(&on_reps);
        let off = median(&off_reps);
        let ratio = on / off;
        let ok = ratio >= AGGREGATE_GOAL;
        goals.push((
            format!("aggregate at {streams} streams: drafting / off"),
            ratio,
            AGGREGATE_GOAL,
            ok,
        ));
        agg_table.row([
            streams.to_string(),
            format!("{on:.1}"),
            format!("{off:.1}"),
            format!("{ratio:.2}"),
            format!(">= {AGGREGATE_GOAL}"),
            mark(ok).into(),
        ]);
        aggregate.push(
            json!({"streams": streams, "on_tps": on, "off_tps": off, "ratio": ratio,
                              "on_reps": on_reps, "off_reps": off_reps}),
        );
    }
    drop(daemon);

    println!(
        "drafting, SmolLM2-135M-Instruct Q4_1 + a compiled adapter, {threads} threads, \
         draft_max {DRAFT_MAX}, medians of {reps} reps"
    );
    println!("{table}");
    println!("{agg_table}");
    println!(
        "{}",
        json!({
            "bench": "draft",
            "threads": threads,
            "reps": reps,
            "draft_max": DRAFT_MAX,
            "tasks": report,
            "aggregate": aggregate,
            "goals": goals.iter().map(|(m, r, g, ok)| json!({"measure": m, "ratio": r, "goal": g, "pass": ok})).collect::<Vec<_>>(),
        })
    );
    Ok(())
}

/// `(source, accepted, drafted)` of `model` so far, from kolmd's
/// `kolm_draft_tokens_total`.
fn draft_sources(addr: SocketAddr, model: &str) -> Result<Vec<(String, u64, u64)>> {
    let r = http::request(addr, "GET", "/metrics", None, TIMEOUT)?;
    ensure!(r.status == 200, "/metrics answered {}", r.status);
    let mut out: Vec<(String, u64, u64)> = Vec::new();
    // The model label is the reference, `NAME:VERSION`.
    let prefix = format!("kolm_draft_tokens_total{{model=\"{model}:");
    for line in r.text().lines() {
        let Some(rest) = line
            .strip_prefix(&prefix)
            .and_then(|r| r.split_once("\",source=\""))
            .map(|(_, rest)| rest)
        else {
            continue;
        };
        let (source, rest) = rest.split_once('"').context("a source label")?;
        let accepted = rest.contains("outcome=\"accepted\"");
        let n: u64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .context("a count")?;
        let i = match out.iter().position(|(s, _, _)| s == source) {
            Some(i) => i,
            None => {
                out.push((source.to_owned(), 0, 0));
                out.len() - 1
            }
        };
        out[i].2 += n;
        if accepted {
            out[i].1 += n;
        }
    }
    Ok(out)
}

fn pct(share: Option<f64>) -> String {
    share.map_or_else(|| "-".into(), |s| format!("{:.0}%", 100.0 * s))
}

/// Compiles `task` into an artifact, installs it and reads back what the
/// measurements need.
#[allow(clippy::too_many_arguments)]
fn compile(
    kolmctl: &Path,
    home: &Path,
    dir: &Path,
    base: &Path,
    teacher: &ReplayTeacher,
    task: Task,
    epochs: u32,
    threads: usize,
) -> Result<Compiled> {
    let examples = task.dir.join("examples.jsonl");
    let tests = task.dir.join("tests.jsonl");
    let toml = dir.join(format!("{}.toml", task.name));
    std::fs::write(
        &toml,
        format!(
            "task = {:?}\nexamples = {:?}\ntests = {:?}\nbase = {:?}\nteacher = \"openai:replay\"\n\
             k = 1\ngate = 0.0\n\n[teacher_config]\nbase_url = {:?}\napi_key_env = \"\"\n\
             concurrency = 4\ncache_dir = {:?}\n",
            task.description,
            examples,
            tests,
            base,
            teacher.base_url(),
            dir.join("cache"),
        ),
    )?;
    let out = dir.join(format!("{}.kolm", task.name));
    let started = Instant::now();
    let output = Command::new(kolmctl)
        .args(["-q", "compile", "--file"])
        .arg(&toml)
        .args([
            "--name",
            task.name,
            "--synthesize",
            "0",
            "--validation",
            "0",
        ])
        .args(["--epochs", &epochs.to_string()])
        .args(["--threads", &threads.to_string(), "--json", "--out"])
        .arg(&out)
        .env("KOLM_HOME", home)
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        bail!(
            "compiling {} failed: {}\n{}",
            task.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    eprintln!(
        "[{}] compiled in {:.0} s",
        task.name,
        started.elapsed().as_secs_f64()
    );
    run_ok(
        Command::new(kolmctl)
            .args(["-q", "install"])
            .arg(&out)
            .env("KOLM_HOME", home),
    )?;
    let inspect = run_ok(
        Command::new(kolmctl)
            .args(["inspect", "--json"])
            .arg(&out)
            .env("KOLM_HOME", home),
    )?;
    let inspect: Value = serde_json::from_slice(&inspect.stdout)?;
    let predicate = &inspect["manifest"]["predicate"];
    let compile: std::collections::BTreeMap<String, Value> =
        serde_json::from_value(predicate["compile"].clone()).context("the manifest's compile")?;
    let serving = Serving::from_compile(Some(&compile))?
        .context("the compiled artifact has no serving record")?;
    let adapter_digest = predicate["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == kolm_artifact::names::ADAPTER)
        .and_then(|e| e["sha256"].as_str())
        .context("the artifact has no adapter")?;
    let adapter = home
        .join("store/blobs/sha256")
        .join(adapter_digest.trim_start_matches("sha256:"));
    ensure!(
        adapter.exists(),
        "{} is not in the store",
        adapter.display()
    );
    let schema = match &serving.grammar {
        Some(ShapeGrammar::JsonSchema(s)) => Some(s.clone()),
        _ => None,
    };
    let system = serving.system.as_deref().unwrap_or(SMOLLM2_SYSTEM);
    let prompts = read_pairs(&tests)?
        .into_iter()
        .map(|(input, _)| {
            format!(
                "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"
            )
        })
        .collect();
    let corpus = dir.join(format!("{}-outputs.txt", task.name));
    let outputs: Vec<String> = read_pairs(&examples)?.into_iter().map(|(_, o)| o).collect();
    std::fs::write(&corpus, outputs.join("\n") + "\n")?;
    let coverage = compile
        .get("recipes")
        .and_then(|r| r["coverage"]["share"].as_f64());
    Ok(Compiled {
        task,
        prompts,
        max_tokens: serving.max_tokens,
        schema,
        adapter,
        corpus,
        coverage,
    })
}

/// One streamed, greedy `/v1/completions` request to kolmd.
fn kolm_decode(addr: SocketAddr, c: &Compiled, prompt: &str, draft: bool) -> Result<Decode> {
    let mut body = json!({
        "model": c.task.name,
        "prompt": prompt,
        "max_tokens": c.max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
        "draft": draft,
    });
    if let Some(schema) = &c.schema {
        body["response_format"] =
            json!({"type": "json_schema", "json_schema": {"name": "shape", "schema": schema}});
    }
    let s = http::stream(addr, "/v1/completions", &body, TIMEOUT)?;
    ensure!(
        s.status == 200,
        "kolmd answered {}: {}",
        s.status,
        s.error.unwrap_or_default()
    );
    let mut d = Decode::default();
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let mut completion_tokens = 0u64;
    for e in &s.events {
        let v: Value = serde_json::from_str(&e.data)?;
        if let Some(t) = v["choices"][0]["text"].as_str() {
            if !t.is_empty() {
                first.get_or_insert(e.at);
                last = Some(e.at);
                d.text.push_str(t);
            }
        }
        if let Some(k) = v["kolm"].get("draft") {
            d.drafted = k["drafted"].as_u64().unwrap_or(0);
            d.accepted = k["accepted"].as_u64().unwrap_or(0);
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            completion_tokens = n;
        }
    }
    ensure!(completion_tokens > 0, "kolmd sent no usage");
    d.tokens = completion_tokens.saturating_sub(1);
    d.seconds = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    Ok(d)
}

/// Aggregate tokens/s: `streams` workers send the prompts round robin
/// (each prompt twice over), every answer counted.
fn aggregate_tps(
    addr: SocketAddr,
    prompts: &[(&Compiled, &String)],
    streams: usize,
    draft: bool,
) -> Result<f64> {
    let jobs: Vec<(&Compiled, &String)> = prompts.iter().chain(prompts).copied().collect();
    let next = Arc::new(Mutex::new(0usize));
    let tokens = Arc::new(Mutex::new(0u64));
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..streams)
            .map(|_| {
                let next = Arc::clone(&next);
                let tokens = Arc::clone(&tokens);
                let jobs = &jobs;
                scope.spawn(move || -> Result<()> {
                    loop {
                        let i = {
                            let mut n = next.lock().expect("not poisoned");
                            let i = *n;
                            *n += 1;
                            i
                        };
                        let Some((c, prompt)) = jobs.get(i) else {
                            return Ok(());
                        };
                        let d = kolm_decode(addr, c, prompt, draft)?;
                        *tokens.lock().expect("not poisoned") += d.tokens + 1;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(())
    })?;
    let total = *tokens.lock().expect("not poisoned");
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// `llama-lookup` on one prompt: its own "decoded N tokens in S seconds"
/// and its draft counts.
fn llama_lookup(
    tools: &Path,
    base: &Path,
    c: &Compiled,
    cache: &Path,
    prompt: &str,
    threads: usize,
) -> Result<Decode> {
    let mut cmd = Command::new(tools.join("llama-lookup"));
    cmd.arg("-m")
        .arg(base)
        .arg("--lora")
        .arg(&c.adapter)
        .arg("-lcs")
        .arg(cache)
        .args(["-p", prompt])
        .args(["-n", &c.max_tokens.to_string()])
        .args(["--spec-draft-n-max", &DRAFT_MAX.to_string()])
        .args(["-t", &threads.to_string()])
        .args(["-c", "1024", "--temp", "0", "--no-warmup"])
        .stdin(Stdio::null());
    if let Some(schema) = &c.schema {
        cmd.args(["-j", &schema.to_string()]);
    }
    let out = run_ok(&mut cmd).context("llama-lookup")?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |key: &str| -> Option<f64> {
        log.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|rest| rest.trim().trim_start_matches('=').trim().parse().ok())
    };
    let decoded = log
        .lines()
        .find(|l| l.trim_start().starts_with("decoded"))
        .with_context(|| format!("llama-lookup printed no decode speed:\n{log}"))?;
    // "decoded   24 tokens in    0.345 seconds, speed:   69.5 t/s"
    let words: Vec<&str> = decoded.split_whitespace().collect();
    let tokens: u64 = words
        .get(1)
        .and_then(|w| w.parse().ok())
        .context("tokens")?;
    let seconds: f64 = words
        .get(4)
        .and_then(|w| w.parse().ok())
        .context("seconds")?;
    Ok(Decode {
        text: String::new(),
        tokens,
        seconds,
        drafted: value("n_drafted").unwrap_or(0.0) as u64,
        accepted: value("n_accept").unwrap_or(0.0) as u64,
    })
}

struct Llama(Child);

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// llama-server with n-gram cache speculation over the static cache: the
/// median over reps of its own `predicted_per_second` summed over the
/// prompts. `Ok(Err(why))` when this build cannot run it.
fn llama_server_decode(
    tools: &Path,
    base: &Path,
    c: &Compiled,
    cache: &Path,
    threads: usize,
    reps: usize,
) -> Result<std::result::Result<(f64, Totals), String>> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = tempfile::NamedTempFile::new()?;
    let child = Command::new(tools.join("llama-server"))
        .arg("-m")
        .arg(base)
        .arg("--lora")
        .arg(&c.adapter)
        .args(["--spec-type", "ngram-cache", "-lcs"])
        .arg(cache)
        .args(["--spec-draft-n-max", &DRAFT_MAX.to_string()])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-t", &threads.to_string(), "-c", "1024", "-np", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen()?)
        .spawn()
        .context("starting llama-server")?;
    let _server = Llama(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ready = Instant::now();
    loop {
        if let Ok(r) = http::request(addr, "GET", "/health", None, Duration::from_secs(5)) {
            if r.status == 200 {
                break;
            }
        }
        if ready.elapsed() > Duration::from_secs(60) {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            let tail: String = text.lines().rev().take(8).collect::<Vec<_>>().join(" | ");
            return Ok(Err(format!("did not become ready: {tail}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut tps_reps = Vec::new();
    let mut totals = Totals::default();
    for _ in 0..reps {
        let mut t = Totals::default();
        for prompt in &c.prompts {
            let mut body = json!({
                "prompt": prompt, "n_predict": c.max_tokens, "temperature": 0,
                "cache_prompt": false,
            });
            if let Some(schema) = &c.schema {
                body["json_schema"] = schema.clone();
            }
            let r = http::request(addr, "POST", "/completion", Some(&body), TIMEOUT)?;
            if r.status != 200 {
                return Ok(Err(format!(
                    "/completion answered {}: {}",
                    r.status,
                    r.text()
                )));
            }
            let v = r.json()?;
            let timings = &v["timings"];
            let n = timings["predicted_n"].as_f64().unwrap_or(0.0);
            let ms = timings["predicted_ms"].as_f64().unwrap_or(0.0);
            t.add(&Decode {
                text: String::new(),
                tokens: n as u64,
                seconds: ms / 1000.0,
                drafted: timings["draft_n"].as_u64().unwrap_or(0),
                accepted: timings["draft_n_accepted"].as_u64().unwrap_or(0),
            });
        }
        tps_reps.push(t.tps());
        totals.drafted += t.drafted;
        totals.accepted += t.accepted;
    }
    Ok(Ok((median(&tps_reps), totals)))
}
