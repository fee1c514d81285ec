//! The compile's generalization levers end to end: `--synthesize` and base
//! choice (several `--base`, or none), with the scripted teacher
//! (`common::scripted_teacher`, a TEST DOUBLE that implements the meetings
//! task's rule; its numbers say what the pipeline does, never how good a
//! real teacher would make the student) and real SmolLM2 / gemma-3 students.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;

use common::kolmctl_path;
use common::scripted_teacher::{rule, synthetic_inputs, ScriptedTeacher};
use serde_json::{json, Value};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/meetings")
        .join(name)
}

fn run(args: &[&str], home: &Path) -> Output {
    run_with(args, home, &[])
}

fn run_with(args: &[&str], home: &Path, env: &[(&str, &Path)]) -> Output {
    Command::new(kolmctl_path())
        .args(args)
        .envs(env.iter().copied())
        .env("KOLM_HOME", home)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `kolmctl compile --file TASK --epochs EPOCHS --out OUT --json` plus
/// `extra`; asserts it succeeded and returns its report.
fn compile_json(task: &Path, epochs: &str, out: &Path, extra: &[&str], home: &Path) -> Value {
    let mut args = vec![
        "compile",
        "--file",
        task.to_str().unwrap(),
        "--epochs",
        epochs,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let compiled = run(&args, home);
    let report = json_of(&compiled);
    assert!(
        compiled.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    report
}

/// The meetings task file: the scripted teacher, k = 2, gate 0, the teacher
/// cache under `dir`, `base` when given, and `extra` keys.
fn write_task(
    task: &Path,
    teacher: &ScriptedTeacher,
    dir: &Path,
    base: Option<&Path>,
    extra: &str,
) {
    let base = base.map(|b| format!("base = {b:?}\n")).unwrap_or_default();
    std::fs::write(
        task,
        format!(
            "task = \"Extract who the meeting is with and its time as 24-hour HH:MM, as JSON.\"\nexamples = {:?}\ntests = {:?}\n{base}teacher = \"openai:scripted\"\nk = 2\ngate = 0.0\n{extra}\n[teacher_config]\nbase_url = \"{}\"\napi_key_env = \"\"\ncache_dir = {:?}\n",
            data("examples.jsonl"),
            data("tests.jsonl"),
            teacher.base_url(),
            dir.join("cache"),
        ),
    )
    .unwrap();
}

#[test]
fn the_scripted_teacher_reads_the_phrasings_it_writes() {
    for set in 0..3 {
        for input in synthetic_inputs(10, set) {
            assert!(rule(&input).is_some(), "{input}");
        }
    }
    assert_eq!(
        rule("Call with Ana at 9:15 tomorrow"),
        Some(json!({"who": "Ana", "time": "09:15"}))
    );
    assert_eq!(rule("bo 7pm"), Some(json!({"who": "Bo", "time": "19:00"})));
    assert_eq!(
        rule("Meet Cy at 12:30 a.m."),
        Some(json!({"who": "Cy", "time": "00:30"}))
    );
    for (text, time) in [
        ("fyi 12 am design review, Bo leads", "00:00"),
        ("Bo asked for a slot at 0h05", "00:05"),
        ("sync Bo @ 7.50", "07:50"),
        ("Bo? 4:20 p.m.? coffee", "16:20"),
        ("can u do 3pm with Bo??", "15:00"),
    ] {
        assert_eq!(
            rule(text),
            Some(json!({"who": "Bo", "time": time})),
            "{text}"
        );
    }
    assert_eq!(rule("nothing here"), None);
    // Its rule agrees with every reference in the task's files.
    for file in ["examples.jsonl", "tests.jsonl", "tests-unseen.jsonl"] {
        for line in std::fs::read_to_string(data(file)).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let reference: Value = serde_json::from_str(v["output"].as_str().unwrap()).unwrap();
            assert_eq!(
                rule(v["input"].as_str().unwrap()),
                Some(reference),
                "{line}"
            );
        }
    }
}

#[test]
fn synthesized_inputs_are_deduplicated_labelled_trained_on_and_cached() {
    let teacher = ScriptedTeacher::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let task = dir.path().join("kolm.toml");
    write_task(
        &task,
        &teacher,
        dir.path(),
        Some(&common::smollm2()),
        "synthesize = 12\n",
    );
    let out = dir.path().join("meetings.kolm");
    let report = compile_json(&task, "2", &out, &[], &home);
    eprintln!(
        "synthesis {}, validation {}, accuracy {}",
        report["synthesis"], report["validation"], report["accuracy"]["student"]
    );
    let s = &report["synthesis"];
    assert_eq!(s["requested"], 12, "{s}");
    assert_eq!(s["requests"], 2, "{s}");
    assert_eq!(s["received"], 12, "{s}");
    let kept = s["kept"].as_u64().unwrap();
    let dropped = ["duplicates", "failed_gates", "disagreed"]
        .iter()
        .map(|k| s[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(kept + dropped, 12, "{s}");
    // The scripted teacher repeats an example it was shown: dropped, never
    // trained on twice.
    assert!(s["duplicates"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        kept >= 8,
        "the scripted teacher labels its own inputs consistently: {s}"
    );
    // 16 examples, 4 held out for validation, the kept synthetic ones added.
    assert_eq!(report["validation"]["examples"], 4, "{report}");
    assert_eq!(report["distill"]["examples"].as_u64().unwrap(), 12 + kept);
    // The teacher is right on every input, so every winner is its sample:
    // the student is trained on the teacher's answers, not the references.
    assert_eq!(
        report["distill"]["from_teacher"], report["distill"]["examples"],
        "{}",
        report["distill"]
    );
    assert_eq!(report["distill"]["from_reference"], 0);
    assert_eq!(report["accuracy"]["student"]["accuracy"]["n"], 8);
    // Requests: 2 for inputs, k per labelled input (distillation replays
    // them from the cache), k per training example, 1 per test.
    let labelled = 12 - s["duplicates"].as_u64().unwrap();
    assert_eq!(
        report["teacher_calls"].as_u64().unwrap(),
        2 + 2 * labelled + 2 * 12 + 8,
        "{report}"
    );
    assert_eq!(
        teacher.requests.load(Ordering::SeqCst) as u64,
        report["teacher_calls"].as_u64().unwrap()
    );
    // The manifest records the synthesis; its receipt comes first.
    let inspect = json_of(&run(&["inspect", out.to_str().unwrap(), "--json"], &home));
    let predicate = &inspect["manifest"]["predicate"];
    assert_eq!(predicate["compile"]["synthesis"], *s, "{predicate}");
    assert_eq!(predicate["receipts"]["length"], 6, "{predicate}");

    // A recompile asks the teacher nothing.
    let before = teacher.requests.load(Ordering::SeqCst);
    let report2 = compile_json(&task, "1", &dir.path().join("again.kolm"), &[], &home);
    assert_eq!(report2["teacher_calls"], 0, "{report2}");
    assert_eq!(report2["synthesis"], *s);
    assert_eq!(teacher.requests.load(Ordering::SeqCst), before);
}

/// A compile whose K cannot reach its gate exits 7, prints its report
/// (`ok: false`, the K it reached) and writes nothing at `--out`.
#[test]
fn a_compile_below_its_gate_exits_7_and_writes_nothing() {
    let teacher = ScriptedTeacher::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let task = dir.path().join("kolm.toml");
    write_task(&task, &teacher, dir.path(), Some(&common::smollm2()), "");
    let out = dir.path().join("meetings.kolm");
    let compiled = run(
        &[
            "compile",
            "--file",
            task.to_str().unwrap(),
            "--epochs",
            "1",
            "--validation",
            "0",
            "--gate",
            "1.0",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &home,
    );
    let report = json_of(&compiled);
    assert_eq!(compiled.status.code(), Some(7), "{report}");
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["passed_gate"], false);
    assert!(report["k_score"].as_f64().unwrap() < 1.0, "{report}");
    assert_eq!(report["artifact"], Value::Null);
    assert!(!out.exists(), "nothing is written below the gate");
    let stderr = String::from_utf8_lossy(&compiled.stderr);
    assert!(stderr.contains("below the gate"), "{stderr}");
}

fn gemma3() -> PathBuf {
    kolm_fixtures::gemma()
}

/// A second instruct base that is larger than SmolLM2 with the same weights:
/// the file with 4 MiB of zeros after its tensor data, which llama.cpp never
/// reads.
fn larger_copy(base: &Path, to: &Path) {
    let mut bytes = std::fs::read(base).unwrap();
    bytes.resize(bytes.len() + (4 << 20), 0);
    std::fs::write(to, bytes).unwrap();
}

#[test]
fn without_a_base_the_smallest_known_base_that_passes_the_gate_ships() {
    let teacher = ScriptedTeacher::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let task = dir.path().join("kolm.toml");
    write_task(&task, &teacher, dir.path(), None, "");
    let out = dir.path().join("meetings.kolm");
    let args = [
        "compile",
        "--file",
        task.to_str().unwrap(),
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];

    // Nothing installed and no fixtures: the error says what to do.
    let empty = dir.path().join("no-fixtures");
    std::fs::create_dir_all(&empty).unwrap();
    let none = run_with(&args, &home, &[("KOLM_FIXTURES", &empty)]);
    assert!(!none.status.success());
    let error = json_of(&none);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no base given and none known") && message.contains("--base"),
        "{error}"
    );
    assert_eq!(
        teacher.requests.load(Ordering::SeqCst),
        0,
        "refused before any work"
    );

    // The fixtures directory holds the SmolLM2 instruct base, a larger copy
    // of it, the pretrained gemma-3 base (no chat template: skipped) and a
    // file that is not a model (ignored). The compile tries the smallest,
    // it passes gate 0, and the larger one is never trained.
    let fixtures = dir.path().join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    let small = fixtures.join("c-smollm2.gguf");
    std::os::unix::fs::symlink(common::smollm2(), &small).unwrap();
    larger_copy(&common::smollm2(), &fixtures.join("b-smollm2-padded.gguf"));
    std::os::unix::fs::symlink(gemma3(), fixtures.join("a-gemma3.gguf")).unwrap();
    std::fs::write(fixtures.join("notes.gguf"), b"not a model").unwrap();
    let compiled = run_with(&args, &home, &[("KOLM_FIXTURES", &fixtures)]);
    let report = json_of(&compiled);
    assert!(compiled.status.success(), "{report}");
    let stderr = String::from_utf8_lossy(&compiled.stderr);
    assert!(
        stderr.contains("no --base given: trying the known bases"),
        "{stderr}"
    );
    assert_eq!(report["base"], small.to_str().unwrap(), "{report}");
    let tried = report["base_candidates"].as_array().unwrap();
    assert_eq!(tried.len(), 1, "{report}");
    assert_eq!(tried[0]["base"], small.to_str().unwrap());
    assert_eq!(tried[0]["passed_gate"], true);
    assert_eq!(tried[0]["k"], report["k_score"], "{report}");
}

#[test]
fn every_base_is_tried_smallest_first_and_its_k_recorded() {
    let teacher = ScriptedTeacher::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let task = dir.path().join("kolm.toml");
    write_task(&task, &teacher, dir.path(), None, "");
    let out = dir.path().join("meetings.kolm");
    let padded = dir.path().join("smollm2-padded.gguf");
    larger_copy(&common::smollm2(), &padded);

    // A base that cannot chat is refused before any work.
    let refused = run(
        &[
            "compile",
            "--file",
            task.to_str().unwrap(),
            "--base",
            gemma3().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &home,
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("has no chat template"), "{stderr}");
    assert_eq!(teacher.requests.load(Ordering::SeqCst), 0);

    // No K reaches 0.999: both bases are trained, the best K ships (forced).
    let smollm2 = common::smollm2();
    let extra = [
        "--base",
        padded.to_str().unwrap(),
        "--base",
        smollm2.to_str().unwrap(),
    ];
    let report = compile_json(
        &task,
        "1",
        &out,
        &[&extra[..], &["--gate", "0.999", "--force"]].concat(),
        &home,
    );
    let tried = report["base_candidates"].as_array().unwrap();
    assert_eq!(tried.len(), 2, "{report}");
    assert_eq!(tried[0]["base"], common::smollm2().to_str().unwrap());
    assert_eq!(tried[1]["base"], padded.to_str().unwrap());
    assert!(tried[0]["bytes"].as_u64() < tried[1]["bytes"].as_u64());
    let best = tried
        .iter()
        .max_by(|a, b| a["k"].as_f64().partial_cmp(&b["k"].as_f64()).unwrap())
        .unwrap();
    assert_eq!(report["base"], best["base"], "{report}");
    assert_eq!(report["k_score"], best["k"], "{report}");
    // The second base's compile asks the teacher nothing new: its labels
    // and test answers are cached from the first.
    assert_eq!(
        teacher.requests.load(Ordering::SeqCst) as u64,
        report["teacher_calls"].as_u64().unwrap(),
    );
    // The manifest's receipts keep every candidate's K.
    let inspect = json_of(&run(&["inspect", out.to_str().unwrap(), "--json"], &home));
    let recorded = &inspect["manifest"]["predicate"]["compile"];
    assert_eq!(
        recorded["base_candidates"], report["base_candidates"],
        "{recorded}"
    );
}
