//! Benchmark: `kolmctl train` (kolm-train on candle) against PyTorch + PEFT
//! on the CPU, the same LoRA run on the same GGUF base.
//!
//! Goals (issue 4): training tokens/s of kolm-train / PEFT **>= 1.0**; the
//! final loss of kolm-train within **5%** of PEFT's; peak RSS of both
//! reported.
//!
//! Run: `cargo build --release -p kolm-cli && cargo bench -p kolm-benches --bench train`.
//! The anchor needs the Python virtualenv of `scripts/pyref-venv.sh`
//! (`$KOLM_PYREF_PYTHON`, else `~/.cache/kolm/pyref-venv/bin/python`).
//! Environment: `KOLM_BENCH_STEPS` (default 20), `KOLM_BENCH_THREADS`
//! (default: every core), `KOLM_BENCH_DEVICE` (`cpu`, the default, or
//! `cuda`: both sides on the GPU; kolmctl built with `--features cuda`),
//! `KOLM_FIXTURES`, `KOLMCTL`.
//!
//! Both runs: SmolLM2-135M-Instruct Q4_1 (PEFT through transformers' GGUF
//! loader, which dequantizes to f32 as kolm-train does), 8 chat examples in
//! one full batch (so data order cannot differ), rank 8, alpha 16, dropout
//! 0, q/k/v/o, AdamW lr 1e-3 with the same warm-up and linear decay, clip
//! 1.0, the same steps and threads. Tokens/s counts prompt and answer
//! tokens (no padding) over the training loop only (loading excluded), as
//! each reports it; peak RSS is of the whole process (GNU time).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{ensure, Context, Result};
use kolm_benches::{kolmctl_path, mark, measure, Table};
use serde_json::{json, Value};

const SPEED_GOAL: f64 = 1.0;
const LOSS_TOLERANCE: f64 = 0.05;

const EXAMPLES: &[(&str, &str)] = &[
    (
        "What is the capital of France?",
        "The capital of France is Paris, a city on the Seine.",
    ),
    (
        "Name three primary colours.",
        "Red, yellow and blue are the three primary colours.",
    ),
    (
        "How many days are in a leap year?",
        "A leap year has 366 days instead of the usual 365.",
    ),
    (
        "What do bees make?",
        "Bees make honey and beeswax from the nectar of flowers.",
    ),
    (
        "Translate 'thank you' into French.",
        "'Thank you' in French is 'merci'.",
    ),
    (
        "What is 12 times 12?",
        "Twelve times twelve is one hundred and forty-four.",
    ),
    (
        "Which planet is known as the red planet?",
        "Mars is known as the red planet because of its iron oxide dust.",
    ),
    (
        "What gas do plants absorb?",
        "Plants absorb carbon dioxide and release oxygen.",
    ),
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench train: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

fn last_json(stdout: &[u8]) -> Result<Value> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON line in the output")?;
    Ok(serde_json::from_str(line)?)
}

fn run() -> Result<()> {
    let steps = env_usize("KOLM_BENCH_STEPS", 20)?;
    let threads = env_usize(
        "KOLM_BENCH_THREADS",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )?;
    let device = std::env::var("KOLM_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    ensure!(
        device == "cpu" || device == "cuda",
        "KOLM_BENCH_DEVICE={device}: expected cpu or cuda"
    );
    let base = kolm_fixtures::find(kolm_fixtures::SMOLLM2)?;
    let python = std::env::var_os("KOLM_PYREF_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/kolm/pyref-venv/bin/python")
        });
    ensure!(
        python.exists(),
        "{} is missing: run scripts/pyref-venv.sh",
        python.display()
    );
    let kolmctl = kolmctl_path()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("train.jsonl");
    let mut text = String::new();
    for (p, c) in EXAMPLES {
        text.push_str(&json!({"prompt": p, "completion": c}).to_string());
        text.push('\n');
    }
    std::fs::write(&data, text)?;
    let batch = EXAMPLES.len();
    let warmup = steps / 10;
    let (rank, alpha, lr, max_len) = (8, 16.0, 1e-3, 128);

    eprintln!("kolmctl train: {steps} steps, {threads} threads, {device}...");
    let mut k = Command::new(&kolmctl);
    k.args(["train", "-q", "--json", "--base"])
        .arg(&base)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("a.gguf"))
        .args(["--rank", &rank.to_string(), "--alpha", &alpha.to_string()])
        .args([
            "--dropout",
            "0",
            "--lr",
            &lr.to_string(),
            "--targets",
            "q,k,v,o",
        ])
        .args([
            "--max-seq-len",
            &max_len.to_string(),
            "--batch-size",
            &batch.to_string(),
        ])
        .args(["--max-steps", &steps.to_string(), "--seed", "0"])
        .args(["--device", &device])
        // Both sides keep the base in f32 (kolm-train's GPU default is bf16).
        .args(["--precision", "f32"])
        .env("RAYON_NUM_THREADS", threads.to_string());
    let km = measure(&k)?;
    ensure!(km.success(), "kolmctl train failed: {}", km.stderr_text());
    let kr: Value = serde_json::from_slice(&km.output.stdout)
        .context("kolmctl train --json printed no JSON object")?;

    eprintln!("PyTorch + PEFT: {steps} steps, {threads} threads, {device}...");
    let settings = dir.path().join("settings.json");
    std::fs::write(
        &settings,
        json!({
            "base": base, "data": data, "rank": rank, "alpha": alpha, "dropout": 0.0,
            "targets": ["q", "k", "v", "o"], "lr": lr, "warmup": warmup, "steps": steps,
            "batch_size": batch, "max_seq_len": max_len, "threads": threads, "seed": 0,
            "device": device,
        })
        .to_string(),
    )?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("train_peft.py");
    let mut p = Command::new(&python);
    p.arg(&script)
        .arg(&settings)
        .env("OMP_NUM_THREADS", threads.to_string());
    let pm = measure(&p)?;
    ensure!(pm.success(), "the PEFT run failed: {}", pm.stderr_text());
    let pr = last_json(&pm.output.stdout)?;

    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let (ktps, ptps) = (f(&kr, "tokens_per_second"), f(&pr, "tokens_per_second"));
    let (kloss, ploss) = (f(&kr, "last_loss"), f(&pr, "last_loss"));
    let ratio = ktps / ptps;
    let loss_gap = (kloss - ploss).abs() / ploss;
    let rss = |m: &kolm_benches::Measured| m.peak_rss_kib.map_or(f64::NAN, |k| k as f64 / 1024.0);
    let mut t = Table::new([
        "",
        "tokens/s",
        "first loss",
        "last loss",
        "peak RSS MiB",
        "wall s",
    ]);
    t.row([
        "kolm-train".to_owned(),
        format!("{ktps:.0}"),
        format!("{:.4}", f(&kr, "first_loss")),
        format!("{kloss:.4}"),
        format!("{:.0}", rss(&km)),
        format!("{:.1}", km.secs()),
    ]);
    t.row([
        "PyTorch + PEFT".to_owned(),
        format!("{ptps:.0}"),
        format!("{:.4}", f(&pr, "first_loss")),
        format!("{ploss:.4}"),
        format!("{:.0}", rss(&pm)),
        format!("{:.1}", pm.secs()),
    ]);
    println!("{t}");
    println!(
        "tokens/s kolm/PEFT = {ratio:.2} (goal >= {SPEED_GOAL}) {}",
        mark(ratio >= SPEED_GOAL)
    );
    println!(
        "final loss gap = {:.1}% (goal <= {:.0}%) {}",
        loss_gap * 100.0,
        LOSS_TOLERANCE * 100.0,
        mark(loss_gap <= LOSS_TOLERANCE)
    );
    println!(
        "{}",
        json!({
            "bench": "train", "steps": steps, "threads": threads, "device": device,
            "kolm": {"tokens_per_second": ktps, "first_loss": f(&kr, "first_loss"),
                     "last_loss": kloss, "peak_rss_mib": rss(&km), "wall_s": km.secs()},
            "peft": {"tokens_per_second": ptps, "first_loss": f(&pr, "first_loss"),
                     "last_loss": ploss, "peak_rss_mib": rss(&pm), "wall_s": pm.secs(),
                     "losses": pr["losses"]},
            "ratio_tokens_per_second": ratio, "final_loss_gap": loss_gap,
        })
    );
    Ok(())
}
