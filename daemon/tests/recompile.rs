//! The recompile loop end to end: the meetings task compiled for real on a
//! narrow example set (four phrasings; SmolLM2 student; the scripted
//! teacher, a TEST DOUBLE that implements the task's rule), served by
//! kolmd, sent inputs in phrasings it was never shown; kolmd logs them as
//! drift; `kolmctl compile --from-drift meetings --via-daemon` (kolmd's
//! Compile call) labels them with the teacher, retrains, passes the
//! regression gate on the old eval pack and installs the new version,
//! whose recipe pack holds every recipe of the old one and which does not
//! log the inputs it absorbed. A recompile that scores below the old
//! version on its eval pack is refused with exit 7 and writes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::scripted_teacher::{rule, ScriptedTeacher};
use common::{eventually, kolmctl_path, Daemon};
use kolm_artifact::drift::DriftThresholds;
use kolm_compile::pipeline::EvalPack;
use kolm_compile::RecipePack;
use serde_json::{json, Value};

const NAME: &str = "meetings";

/// An input no meeting rule can label: the teacher's answer fails the
/// gates, so the drift stage drops it.
const UNLABELLABLE: &str = "Write a short poem about the sea and the wind.";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/meetings")
        .join(name)
}

fn kolmctl(args: &[&str], home: &Path, cwd: &Path, socket: Option<&Path>) -> Output {
    let mut cmd = Command::new(kolmctl_path());
    cmd.args(args)
        .env("KOLM_HOME", home)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .current_dir(cwd)
        .stdin(Stdio::null());
    if let Some(s) = socket {
        cmd.env("KOLM_GRPC_SOCKET", s);
    }
    cmd.output().unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(out)
}

fn inputs_of(file: &str) -> Vec<String> {
    std::fs::read_to_string(data(file))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["input"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The model's answer and whether the run-time verifier passed it.
fn chat(d: &Daemon, model: &str, input: &str) -> (String, bool) {
    let r = d.post(
        "/v1/chat/completions",
        &json!({"model": model, "messages": [{"role": "user", "content": input}]}),
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.log());
    let v = r.json();
    (
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned(),
        v["kolm"]["verified"]["passed"].as_bool().unwrap_or(false),
    )
}

/// Whether `answer` is the rule's answer for `input` (JSON-equal).
fn correct(input: &str, answer: &str) -> bool {
    serde_json::from_str::<Value>(answer).ok() == rule(input)
}

fn drift_entries(home: &Path, version: &str) -> Vec<Value> {
    ok_json(&kolmctl(
        &[
            "drift",
            "list",
            "--artifact",
            &format!("{NAME}:{version}"),
            "--json",
        ],
        home,
        home,
        None,
    ))
    .as_array()
    .cloned()
    .unwrap()
}

fn verified(path: &Path) -> kolm_artifact::VerifiedArtifact {
    let policy = kolm_artifact::TrustPolicy {
        keys: Vec::new(),
        allow_untrusted: true,
    };
    kolm_artifact::verify(path, &policy, &kolm_artifact::NoProgress).unwrap()
}

#[test]
fn drifted_inputs_are_absorbed_by_a_recompile_that_does_not_regress() {
    let home = common::home();
    let teacher = ScriptedTeacher::start();
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("kolm.toml");
    let teacher_only = format!(
        "[teacher_config]\nbase_url = \"{}\"\napi_key_env = \"\"\ncache_dir = {:?}\n",
        teacher.base_url(),
        dir.path().join("cache"),
    );
    std::fs::write(
        &task,
        format!(
            "task = \"Extract who the meeting is with and its time as 24-hour HH:MM, as JSON.\"\nexamples = {:?}\ntests = {:?}\nbase = {:?}\nteacher = \"openai:scripted\"\nk = 2\ngate = 0.0\n{teacher_only}",
            data("examples.jsonl"),
            data("tests.jsonl"),
            common::smollm2(),
        ),
    )
    .unwrap();
    let first = dir.path().join("meetings.kolm");
    ok_json(&kolmctl(
        &[
            "compile",
            "--file",
            task.to_str().unwrap(),
            "--epochs",
            "1",
            "--validation",
            "0",
            "--out",
            first.to_str().unwrap(),
            "--json",
        ],
        home,
        dir.path(),
        None,
    ));
    ok_json(&kolmctl(
        &["install", first.to_str().unwrap(), "--json"],
        home,
        dir.path(),
        None,
    ));
    let old = verified(&first);
    let old_eval = EvalPack::parse(&old.read_entry("eval/heldout.jsonl").unwrap()).unwrap();
    let old_pack = RecipePack::from_bytes(&old.read_entry("recipes/pack.bin").unwrap()).unwrap();
    // The artifact carries the examples it learned from, in the task format.
    let carried = String::from_utf8(old.read_entry("train/examples.jsonl").unwrap()).unwrap();
    assert_eq!(
        carried.lines().count(),
        inputs_of("examples.jsonl").len(),
        "{carried}"
    );

    // Served: the unseen phrasings, and one input nothing can label.
    let d = Daemon::start("");
    let unseen = inputs_of("tests-unseen.jsonl");
    let mut old_answers = Vec::new();
    for input in unseen.iter().chain([&UNLABELLABLE.to_owned()]) {
        old_answers.push(chat(&d, "meetings:0.1.0", input));
    }
    // The writer is off the request path: wait for it to settle.
    let mut logged = 0;
    assert!(eventually(Duration::from_secs(20), || {
        let now = drift_entries(home, "0.1.0").len();
        let settled = now > 0 && now == logged;
        logged = now;
        settled
    }));
    std::thread::sleep(Duration::from_millis(500));
    let entries = drift_entries(home, "0.1.0");
    let drifted: Vec<String> = entries
        .iter()
        .map(|e| e["input"].as_str().unwrap().to_owned())
        .collect();
    let drifted_unseen: Vec<&String> = drifted.iter().filter(|i| unseen.contains(i)).collect();
    assert!(
        drifted_unseen.len() >= 3,
        "the unseen phrasings should drift: {entries:#?}"
    );
    let old_right = drifted_unseen
        .iter()
        .filter(|i| {
            let at = unseen.iter().position(|u| u == **i).unwrap();
            correct(i, &old_answers[at].0)
        })
        .count();

    // Recompile through kolmd from a task file holding only the teacher's
    // endpoint: everything else comes from the installed version.
    let endpoint = dir.path().join("teacher.toml");
    std::fs::write(&endpoint, &teacher_only).unwrap();
    let second = dir.path().join("meetings-next.kolm");
    let out = kolmctl(
        &[
            "compile",
            "--from-drift",
            NAME,
            "--file",
            endpoint.to_str().unwrap(),
            "--epochs",
            "1",
            "--validation",
            "0",
            "--out",
            second.to_str().unwrap(),
            "--via-daemon",
            "--json",
        ],
        home,
        dir.path(),
        Some(&d.socket),
    );
    let report = json_of(&out);
    assert!(
        out.status.success(),
        "{report:#}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    assert_eq!(report["installed"], "meetings:0.1.1", "{report:#}");
    let absorbed = &report["absorbed"];
    assert_eq!(absorbed["inputs"].as_u64().unwrap() as usize, drifted.len());
    let kept = absorbed["kept"].as_u64().unwrap() as usize;
    // Every unseen input has one right answer the teacher agrees on; the
    // poem has none.
    assert_eq!(kept, drifted_unseen.len(), "{absorbed:#}");
    assert_eq!(
        absorbed["failed_gates"].as_u64().unwrap() as usize,
        drifted.len() - drifted_unseen.len(),
        "{absorbed:#}"
    );
    // The gate: both versions on the old eval pack, recounted by hand.
    let gate = &report["regression"];
    assert_eq!(gate["from"], "meetings:0.1.0");
    assert_eq!(gate["passed"], true, "{gate:#}");
    let old_passed = old_eval
        .tests
        .iter()
        .filter(|t| match &t.input {
            kolm_compile::Input::Text(i) => {
                serde_json::from_str::<Value>(&t.student.output).ok() == rule(i)
            }
            kolm_compile::Input::Chat(_) => false,
        })
        .count();
    assert_eq!(gate["old"]["passed"].as_u64().unwrap() as usize, old_passed);
    assert_eq!(
        gate["old"]["n"].as_u64().unwrap() as usize,
        old_eval.tests.len()
    );
    assert!(gate["new"]["passed"].as_u64() >= gate["old"]["passed"].as_u64());
    assert_eq!(
        report["tests"].as_u64().unwrap() as usize,
        old_eval.tests.len()
    );

    // The new artifact: more examples, a pack that only grew, and the
    // absorbed inputs recorded as covered.
    let new = verified(&second);
    let carried = String::from_utf8(new.read_entry("train/examples.jsonl").unwrap()).unwrap();
    assert_eq!(
        carried.lines().count(),
        inputs_of("examples.jsonl").len() + kept
    );
    let new_pack = RecipePack::from_bytes(&new.read_entry("recipes/pack.bin").unwrap()).unwrap();
    assert!(new_pack.contains_every_context_of(&old_pack));
    let thresholds = DriftThresholds::from_compile(new.statement().predicate.compile.as_ref())
        .unwrap()
        .unwrap();
    assert_eq!(thresholds.covered.len(), kept);

    // Served again: more of the absorbed inputs pass the verifier and are
    // answered right than before (one epoch does not make every one pass),
    // and none is logged for the new version.
    let old_passed_verifier = drifted_unseen
        .iter()
        .filter(|i| old_answers[unseen.iter().position(|u| u == **i).unwrap()].1)
        .count();
    let (mut new_right, mut new_passed_verifier) = (0, 0);
    for input in &drifted_unseen {
        let (answer, passed) = chat(&d, "meetings:0.1.1", input);
        new_passed_verifier += usize::from(passed);
        new_right += usize::from(correct(input, &answer));
    }
    eprintln!(
        "drifted inputs: right {old_right} of {n} before, {new_right} after; verifier passed {old_passed_verifier} before, {new_passed_verifier} after",
        n = drifted_unseen.len()
    );
    assert!(
        new_passed_verifier >= old_passed_verifier,
        "{new_passed_verifier} vs {old_passed_verifier}"
    );
    // Not asserted: that more of them are answered right. At one epoch
    // over 16 examples and 8 absorbed inputs the new version answers none
    // of them right yet (issue 16's note records the figure).
    let _ = (new_right, old_right);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        drift_entries(home, "0.1.1").is_empty(),
        "{:#?}",
        drift_entries(home, "0.1.1")
    );

    // A recompile that loses what the old version had is refused: a
    // learning rate too small to learn anything leaves the student near
    // its base, below 0.1.0 on its own eval pack.
    let refused = dir.path().join("meetings-worse.kolm");
    let out = kolmctl(
        &[
            "compile",
            "--from-drift",
            "meetings:0.1.0",
            "--file",
            endpoint.to_str().unwrap(),
            "--epochs",
            "1",
            "--validation",
            "0",
            "--lr",
            "1e-9",
            "--out",
            refused.to_str().unwrap(),
            "--json",
        ],
        home,
        dir.path(),
        None,
    );
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(7), "{report:#}");
    assert_eq!(report["ok"], false);
    assert_eq!(report["regression"]["passed"], false, "{report:#}");
    assert!(
        report["regression"]["new"]["passed"].as_u64()
            < report["regression"]["old"]["passed"].as_u64()
    );
    assert!(
        !refused.exists(),
        "nothing is written when the gate refuses"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("below its"), "{stderr}");
}

#[test]
fn from_drift_errors_say_what_is_missing() {
    let home = tempfile::tempdir().unwrap();
    let out = kolmctl(
        &[
            "compile",
            "--from-drift",
            "nothing",
            "--teacher",
            "openai:x",
        ],
        home.path(),
        home.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not an installed artifact"), "{stderr}");

    // A packed (not compiled) artifact carries no examples.
    let packed = home.path().join("plain.kolm");
    ok_json(&kolmctl(
        &[
            "pack",
            "--base",
            common::smollm2().to_str().unwrap(),
            "--name",
            "plain",
            "--out",
            packed.to_str().unwrap(),
            "--json",
        ],
        home.path(),
        home.path(),
        None,
    ));
    ok_json(&kolmctl(
        &[
            "install",
            packed.to_str().unwrap(),
            "--allow-untrusted",
            "--json",
        ],
        home.path(),
        home.path(),
        None,
    ));
    let out = kolmctl(
        &["compile", "--from-drift", "plain", "--teacher", "openai:x"],
        home.path(),
        home.path(),
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not carry the examples it learned from"),
        "{stderr}"
    );
    let out = kolmctl(
        &[
            "compile",
            "--regression-tolerance",
            "0.1",
            "--teacher",
            "openai:x",
            "t",
        ],
        home.path(),
        home.path(),
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--from-drift recompiles only"), "{stderr}");
}
