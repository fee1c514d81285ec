//! Benchmark: `kolmctl compile` on the orders task (issue 5): wall time by
//! stage, teacher calls and cost with a cold cache and with the warm cache
//! (the anchor: the same compile, teacher answers replayed), and the
//! student's latency per answer against the teacher's.
//!
//! The teacher is a release kolmd serving SmolLM2-135M-Instruct on
//! 127.0.0.1; the student is a LoRA adapter on the same base. The teacher
//! is priced like a small API model (`KOLM_BENCH_PRICE_IN` /
//! `KOLM_BENCH_PRICE_OUT`, USD per million tokens, default 0.15 / 0.60) so
//! the cost accounting has something to count.
//!
//! Run: `cargo build --release -p kolm-cli -p kolmd && cargo bench -p kolm-benches --bench compile`.
//! Environment: `KOLM_BENCH_K` (teacher samples per example, default 4),
//! `KOLM_BENCH_EPOCHS` (default 3), `KOLM_BENCH_THREADS` (default all
//! CPUs), `KOLMCTL`, `KOLMD`.
//!
//! Output: progress on stderr; a table on stdout, then one JSON line
//! `{"bench":"compile",...}`.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kolm_benches::daemon::Kolmd;
use kolm_benches::{
    env_or, kolmctl_path, kolmd_path, run_ok, smollm2_fixture, workspace_root, Table,
};
use kolm_compile::pipeline::Stage;
use kolm_compile::report::CompileReport;
use serde_json::json;

fn compile(
    kolmctl: &Path,
    home: &Path,
    task: &Path,
    out: &Path,
    epochs: u32,
    threads: usize,
) -> Result<(CompileReport, f64)> {
    let started = Instant::now();
    let output = Command::new(kolmctl)
        .args(["-q", "compile", "--file"])
        .arg(task)
        .args([
            "--epochs",
            &epochs.to_string(),
            "--threads",
            &threads.to_string(),
            "--json",
            "--out",
        ])
        .arg(out)
        .env("KOLM_HOME", home)
        .stdin(Stdio::null())
        .output()?;
    let wall = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "compile failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // A report without a figure this bench prints is an error, never a 0.
    let report: CompileReport = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "compile printed no complete report: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    Ok((report, wall))
}

fn stage_seconds(report: &CompileReport, stage: Stage) -> Result<f64> {
    report
        .stage_seconds(stage)
        .with_context(|| format!("the report has no time for the {} stage", stage.name()))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench compile: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let kolmctl = kolmctl_path()?;
    let kolmd = kolmd_path()?;
    let k: u32 = env_or("KOLM_BENCH_K", 4)?;
    let epochs: u32 = env_or("KOLM_BENCH_EPOCHS", 3)?;
    let threads: usize = env_or(
        "KOLM_BENCH_THREADS",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )?;
    let price_in: f64 = env_or("KOLM_BENCH_PRICE_IN", 0.15)?;
    let price_out: f64 = env_or("KOLM_BENCH_PRICE_OUT", 0.60)?;
    let root = workspace_root();
    let base = smollm2_fixture()?;
    let data = root.join("daemon/tests/data/orders");

    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    eprintln!("packing and installing the teacher's artifact...");
    let artifact = dir.path().join("smollm2.kolm");
    run_ok(
        Command::new(&kolmctl)
            .args(["-q", "pack", "--name", "smollm2", "--base"])
            .arg(&base)
            .arg("--out")
            .arg(&artifact)
            .env("KOLM_HOME", &home),
    )?;
    run_ok(
        Command::new(&kolmctl)
            .args(["-q", "install"])
            .arg(&artifact)
            .env("KOLM_HOME", &home),
    )?;
    let teacher = Kolmd::start(
        &kolmd,
        &home,
        dir.path(),
        &format!("slots = 4\ncontext = 1024\nthreads = {threads}\nkeep_alive = \"-1\""),
    )?;
    let task = dir.path().join("kolm.toml");
    std::fs::write(
        &task,
        format!(
            "task = \"Turn a free-text fruit order into compact JSON with the item (singular) and the quantity as an integer.\"\n\
             examples = {:?}\ntests = {:?}\nbase = {:?}\nteacher = \"openai:smollm2\"\nk = {k}\ngate = 0.0\n\n\
             [teacher_config]\nbase_url = {:?}\napi_key_env = \"\"\nconcurrency = 4\ncache_dir = {:?}\n\n\
             [prices.smollm2]\ninput_per_mtok = {price_in}\noutput_per_mtok = {price_out}\n",
            data.join("examples.jsonl"),
            data.join("tests.jsonl"),
            base,
            teacher.base_url(),
            dir.path().join("cache"),
        ),
    )?;

    eprintln!("compile 1/2: cold teacher cache (k = {k}, {epochs} epochs, {threads} threads)...");
    let (cold, cold_wall) = compile(
        &kolmctl,
        &home,
        &task,
        &dir.path().join("cold.kolm"),
        epochs,
        threads,
    )?;
    eprintln!("compile 2/2: warm teacher cache...");
    let (warm, warm_wall) = compile(
        &kolmctl,
        &home,
        &task,
        &dir.path().join("warm.kolm"),
        epochs,
        threads,
    )?;
    drop(teacher);

    let mut stages = Table::new(["stage", "cold cache, s", "warm cache, s", "warm / cold"]);
    for stage in [
        Stage::Distill,
        Stage::Train,
        Stage::Decompose,
        Stage::Evaluate,
    ] {
        let (c, w) = (stage_seconds(&cold, stage)?, stage_seconds(&warm, stage)?);
        stages.row([
            stage.name().to_owned(),
            format!("{c:.1}"),
            format!("{w:.1}"),
            if c > 0.0 {
                format!("{:.2}", w / c)
            } else {
                "-".into()
            },
        ]);
    }
    stages.row([
        "whole compile (wall)".to_owned(),
        format!("{cold_wall:.1}"),
        format!("{warm_wall:.1}"),
        format!("{:.2}", warm_wall / cold_wall),
    ]);
    let mut teacher_table = Table::new(["", "cold cache", "warm cache"]);
    teacher_table.row([
        "teacher calls".to_owned(),
        cold.teacher_calls.to_string(),
        warm.teacher_calls.to_string(),
    ]);
    teacher_table.row([
        "cache hits".to_owned(),
        cold.cache_hits.to_string(),
        warm.cache_hits.to_string(),
    ]);
    teacher_table.row([
        "cost, USD".to_owned(),
        format!("{:.6}", cold.cost_usd),
        format!("{:.6}", warm.cost_usd),
    ]);
    let s_lat = cold.k_inputs.student_latency_s;
    let t_lat = cold.k_inputs.teacher_latency_s;
    let mut quality = Table::new(["", "student", "base alone", "teacher"]);
    quality.row([
        "held-out pass rate".to_owned(),
        format!("{:.2}", cold.student_pass_rate),
        format!("{:.2}", cold.base_pass_rate),
        format!("{:.2}", cold.teacher_pass_rate),
    ]);
    quality.row([
        "latency per answer, s".to_owned(),
        format!("{s_lat:.3}"),
        "".to_owned(),
        format!("{t_lat:.3}"),
    ]);
    println!(
        "kolmctl compile, orders task (40 examples, 20 held-out tests), k = {k}, {epochs} epochs\n"
    );
    println!("{stages}");
    println!("{teacher_table}");
    println!("{quality}");
    println!(
        "student / teacher latency per answer: {:.2}; K = {:.3} (cold), {:.3} (warm)\n",
        if t_lat > 0.0 { s_lat / t_lat } else { 0.0 },
        cold.k_score,
        warm.k_score
    );
    println!(
        "{}",
        json!({
            "bench": "compile",
            "k": k, "epochs": epochs, "threads": threads,
            "cold": {"wall_s": cold_wall, "stages": cold.stages, "teacher_calls": cold.teacher_calls,
                     "cache_hits": cold.cache_hits, "cost_usd": cold.cost_usd, "k_score": cold.k_score},
            "warm": {"wall_s": warm_wall, "stages": warm.stages, "teacher_calls": warm.teacher_calls,
                     "cache_hits": warm.cache_hits, "cost_usd": warm.cost_usd, "k_score": warm.k_score},
            "student_latency_s": s_lat, "teacher_latency_s": t_lat,
            "pass_rates": {"student": cold.student_pass_rate, "base": cold.base_pass_rate, "teacher": cold.teacher_pass_rate},
        })
    );
    Ok(())
}
