//! `kolmctl train` end to end on the real SmolLM2-135M: a short run with
//! `--json`; refused before training, each with a clear message: a
//! malformed data line and a too-long example (by line number), a missing
//! data file, an output that cannot be written (missing directory, a
//! directory, an input of the run), a device this build cannot use.

use std::path::{Path, PathBuf};
use std::process::Command;

fn smollm2() -> PathBuf {
    kolm_fixtures::smollm2()
}

/// `kolmctl train` on SmolLM2 with these data and output paths and flags.
fn kolmctl_train(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let home = data.parent().unwrap().join("home");
    Command::new(env!("CARGO_BIN_EXE_kolmctl"))
        .args(["train", "--base"])
        .arg(smollm2())
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("KOLM_HOME", home)
        .output()
        .unwrap()
}

/// `kolmctl train` on `data` written to a fresh directory, the adapter
/// going to `adapter.gguf` there.
fn train(data: &str, extra: &[&str]) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("train.jsonl");
    std::fs::write(&jsonl, data).unwrap();
    let out = kolmctl_train(&jsonl, &dir.path().join("adapter.gguf"), extra);
    (out, dir)
}

#[test]
fn a_short_run_prints_its_report_as_json() {
    let data = "{\"prompt\":\"Say hi.\",\"completion\":\"Hi there!\"}\n\
                {\"messages\":[{\"role\":\"user\",\"content\":\"Say bye.\"},{\"role\":\"assistant\",\"content\":\"Goodbye!\"}]}\n";
    let (out, dir) = train(
        data,
        &[
            "--max-steps",
            "2",
            "--rank",
            "4",
            "--max-seq-len",
            "64",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["steps"], 2);
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["precision"], "f32");
    for key in ["first_loss", "last_loss", "tokens_per_second"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    let adapter = dir.path().join("adapter.gguf");
    assert_eq!(v["adapter"], adapter.to_str().unwrap());
    assert!(std::fs::metadata(&adapter).unwrap().len() > 0);
}

#[test]
fn a_malformed_line_is_refused_with_its_number() {
    let (out, dir) = train(
        "{\"prompt\":\"a\",\"completion\":\"b\"}\n{\"prompt\": 3}\n",
        &["--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("train.jsonl:2:"), "{stdout}");
    assert!(!dir.path().join("adapter.gguf").exists());
}

#[test]
fn an_example_too_long_is_refused_with_its_line() {
    let long = format!(
        "{{\"prompt\":\"{}\",\"completion\":\"b\"}}",
        "word ".repeat(100)
    );
    let data = format!("{{\"prompt\":\"a\",\"completion\":\"b\"}}\n\n{long}\n");
    let (out, dir) = train(&data, &["--max-seq-len", "64"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("train.jsonl:3 failed") && stderr.contains("--truncate"),
        "{stderr}"
    );
    assert!(!dir.path().join("adapter.gguf").exists());
}

#[test]
fn an_output_that_cannot_be_written_is_refused_before_training() {
    let data = "{\"prompt\":\"a\",\"completion\":\"b\"}\n";
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("train.jsonl");
    std::fs::write(&jsonl, data).unwrap();
    let stderr = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = stderr(kolmctl_train(
        &jsonl,
        &dir.path().join("missing/a.gguf"),
        &[],
    ));
    assert!(
        e.contains("cannot write the adapter") && e.contains("does not exist"),
        "{e}"
    );
    let e = stderr(kolmctl_train(&jsonl, dir.path(), &[]));
    assert!(e.contains("is a directory"), "{e}");
    // The data file is an input: never overwritten by the adapter.
    let e = stderr(kolmctl_train(&jsonl, &jsonl, &[]));
    assert!(e.contains("is an input of this run"), "{e}");
    assert_eq!(std::fs::read_to_string(&jsonl).unwrap(), data);
}

#[test]
fn a_missing_data_file_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let out = kolmctl_train(&missing, &dir.path().join("a.gguf"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
    assert!(stderr.contains("missing.jsonl"), "{stderr}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_device_this_build_lacks_is_refused_before_training() {
    let data = "{\"prompt\":\"a\",\"completion\":\"b\"}\n";
    let (out, dir) = train(data, &["--device", "cuda"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no CUDA support") && stderr.contains("--device cpu"),
        "{stderr}"
    );
    assert!(!dir.path().join("adapter.gguf").exists());
    let (out, _) = train(data, &["--device", "tpu"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown device 'tpu'"), "{stderr}");
}

#[test]
fn half_precision_on_the_cpu_is_refused_before_training() {
    let data = "{\"prompt\":\"a\",\"completion\":\"b\"}\n";
    let (out, dir) = train(data, &["--device", "cpu", "--precision", "bf16"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--precision bf16 needs a GPU") && stderr.contains("--precision f32"),
        "{stderr}"
    );
    assert!(!dir.path().join("adapter.gguf").exists());
    let (out, _) = train(data, &["--precision", "f8"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown precision 'f8'"), "{stderr}");
}
