//! The drift log end to end: the meetings task compiled for real (SmolLM2
//! student; the scripted teacher, a TEST DOUBLE that implements the task's
//! rule) records its drift thresholds in the manifest, equal to a recount
//! of the eval pack's figures; kolmd serving it logs nothing for the
//! tests' own inputs and logs out-of-domain inputs with reasons that a
//! recount of their figures against the thresholds confirms, over HTTP
//! (whole and streamed) and gRPC; `/metrics`, gRPC Status and `kolmctl
//! drift` agree on the counts; `drift = false` and redaction are honoured;
//! a locked database never delays a response; and `kill -9` during a burst
//! of logged requests leaves a database whose integrity check passes and
//! whose entries are whole.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::scripted_teacher::ScriptedTeacher;
use common::{eventually, kolmctl_path, Daemon};
use kolm_artifact::drift::{DriftThresholds, LOGPROB_MARGIN, SHARE_MARGIN};
use kolm_compile::pipeline::EvalPack;
use serde_json::{json, Value};

const NAME: &str = "meetings";

/// Inputs unlike anything the meetings task was compiled on.
const OUT_OF_DOMAIN: &[&str] = &[
    "Write a short poem about the sea and the wind.",
    "What is the capital of France, and why is it famous?",
    "Translate 'good morning, how are you' into German.",
    "List three prime numbers greater than one hundred.",
];

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/meetings")
        .join(name)
}

fn kolmctl(args: &[&str], home: &Path) -> Output {
    Command::new(kolmctl_path())
        .args(args)
        .env("KOLM_HOME", home)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The compiled artifact, installed in the test binary's home: compiled
/// once (1 epoch, no validation share) and shared by the tests.
fn compiled() -> &'static (PathBuf, EvalPack, DriftThresholds) {
    static COMPILED: OnceLock<(PathBuf, EvalPack, DriftThresholds)> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let teacher = ScriptedTeacher::start();
        let dir = tempfile::tempdir().unwrap().keep();
        let task = dir.join("kolm.toml");
        std::fs::write(
            &task,
            format!(
                "task = \"Extract who the meeting is with and its time as 24-hour HH:MM, as JSON.\"\nexamples = {:?}\ntests = {:?}\nbase = {:?}\nteacher = \"openai:scripted\"\nk = 2\ngate = 0.0\n[teacher_config]\nbase_url = \"{}\"\napi_key_env = \"\"\ncache_dir = {:?}\n",
                data("examples.jsonl"),
                data("tests.jsonl"),
                common::smollm2(),
                teacher.base_url(),
                dir.join("cache"),
            ),
        )
        .unwrap();
        let out = dir.join("meetings.kolm");
        let home = common::home();
        json_of(&kolmctl(
            &[
                "compile",
                "--file",
                task.to_str().unwrap(),
                "--epochs",
                "1",
                "--validation",
                "0",
                "--out",
                out.to_str().unwrap(),
                "--json",
            ],
            home,
        ));
        json_of(&kolmctl(&["install", out.to_str().unwrap(), "--json"], home));
        let policy = kolm_artifact::TrustPolicy {
            keys: Vec::new(),
            allow_untrusted: true,
        };
        let verified = kolm_artifact::verify(&out, &policy, &kolm_artifact::NoProgress).unwrap();
        let eval = EvalPack::parse(&verified.read_entry("eval/heldout.jsonl").unwrap()).unwrap();
        let thresholds = DriftThresholds::from_compile(
            verified.statement().predicate.compile.as_ref(),
        )
        .unwrap()
        .expect("a compiled artifact records its drift thresholds");
        (out, eval, thresholds)
    })
}

/// The artifact's reference as the daemon labels it.
fn reference() -> String {
    let listed = json_of(&kolmctl(&["list", "--json"], common::home()));
    let version = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == NAME)
        .expect("installed")["version"]
        .as_str()
        .unwrap()
        .to_owned();
    format!("{NAME}:{version}")
}

fn test_inputs() -> Vec<String> {
    std::fs::read_to_string(data("tests.jsonl"))
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

fn chat(d: &Daemon, input: &str) -> String {
    let r = d.post(
        "/v1/chat/completions",
        &json!({"model": NAME, "messages": [{"role": "user", "content": input}]}),
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.log());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `kolmctl drift list --json` for the artifact, in `home`.
fn entries(home: &Path) -> Vec<Value> {
    json_of(&kolmctl(
        &["drift", "list", "--artifact", NAME, "--json"],
        home,
    ))
    .as_array()
    .cloned()
    .unwrap()
}

/// Waits until `n` entries are in the database (the writer is off the
/// request path) and returns them.
fn wait_for(home: &Path, n: usize) -> Vec<Value> {
    assert!(
        eventually(Duration::from_secs(20), || entries(home).len() >= n),
        "expected {n} entries, found {}",
        entries(home).len()
    );
    entries(home)
}

/// The reasons a recount of `entry`'s figures against `t` gives.
fn recount(entry: &Value, t: &DriftThresholds) -> Vec<String> {
    let mut reasons = Vec::new();
    let scores = &entry["scores"];
    if !scores["failed_rules"]
        .as_array()
        .is_none_or(|r| r.is_empty())
    {
        reasons.push("verifier".to_owned());
    }
    let below = |key: &str, threshold: Option<f64>| matches!((scores[key].as_f64(), threshold), (Some(f), Some(t)) if f < t);
    if below("mean_logprob", t.mean_logprob) {
        reasons.push("logprob".into());
    }
    if below("recipe_coverage", t.recipe_coverage) {
        reasons.push("recipes".into());
    }
    if below("recall_best", t.recall_best) {
        reasons.push("recall".into());
    }
    reasons
}

/// The manifest's thresholds are the lowest eval-pack figures less the
/// margins.
fn assert_thresholds_recount(eval: &EvalPack, t: &DriftThresholds) {
    let figures: Vec<_> = eval.tests.iter().map(|r| r.drift.unwrap()).collect();
    assert_eq!(t.answers as usize, eval.tests.len());
    let low = |f: fn(&kolm_compile::pipeline::DriftFigures) -> Option<f64>| {
        figures.iter().filter_map(f).fold(f64::INFINITY, f64::min)
    };
    let logprob = low(|d| d.mean_logprob);
    assert!(logprob.is_finite() && logprob < 0.0, "{logprob}");
    assert_eq!(t.mean_logprob, Some(logprob - LOGPROB_MARGIN));
    assert_eq!(
        t.recipe_coverage,
        Some(low(|d| d.recipe_coverage) - SHARE_MARGIN)
    );
    assert_eq!(t.recall_best, None, "no corpus, no recall threshold");
}

#[test]
fn in_domain_inputs_log_nothing_and_out_of_domain_ones_log_their_reasons() {
    let (_, eval, t) = compiled();
    assert_thresholds_recount(eval, t);
    let home = common::home();
    let d = Daemon::start("");
    for input in test_inputs() {
        chat(&d, &input);
    }
    // gRPC too: the same inputs through `kolmctl run`.
    for input in test_inputs().iter().take(3) {
        d.kolmctl_json(&["run", NAME, input, "--json"]);
    }
    // Out of domain: HTTP whole, HTTP streamed, gRPC.
    chat(&d, OUT_OF_DOMAIN[0]);
    chat(&d, OUT_OF_DOMAIN[1]);
    let streamed = d.post(
        "/v1/chat/completions",
        &json!({"model": NAME, "stream": true,
                "messages": [{"role": "user", "content": OUT_OF_DOMAIN[2]}]}),
    );
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    d.kolmctl_json(&["run", NAME, OUT_OF_DOMAIN[3], "--json"]);
    let logged = wait_for(home, OUT_OF_DOMAIN.len());
    // Give a late in-domain entry (there must be none) time to land.
    std::thread::sleep(Duration::from_millis(500));
    let logged_now = entries(home);
    assert_eq!(
        logged_now.len(),
        OUT_OF_DOMAIN.len(),
        "only the out-of-domain inputs are drift: {logged_now:#?}"
    );
    let mut inputs: Vec<&str> = logged
        .iter()
        .map(|e| e["input"].as_str().unwrap())
        .collect();
    inputs.sort_unstable();
    let mut expected = OUT_OF_DOMAIN.to_vec();
    expected.sort_unstable();
    assert_eq!(inputs, expected);
    let reference = reference();
    let version = reference.rsplit_once(':').unwrap().1;
    for e in &logged {
        assert_eq!(e["artifact"], NAME);
        assert_eq!(e["version"], version);
        let reasons: Vec<String> = e["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        assert!(!reasons.is_empty());
        assert_eq!(reasons, recount(e, t), "{e:#}");
        assert!(e["output"].as_str().is_some_and(|o| !o.is_empty()), "{e:#}");
        assert_eq!(e["thresholds"]["mean_logprob"].as_f64(), t.mean_logprob);
    }
    // The counts since the start: /metrics and gRPC Status agree with the
    // database.
    let mut by_reason = std::collections::BTreeMap::<String, u64>::new();
    for e in &logged {
        for r in e["reasons"].as_array().unwrap() {
            *by_reason.entry(r.as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    let metrics = d.get("/metrics").text();
    for (reason, n) in &by_reason {
        let line =
            format!("kolm_drift_entries_total{{model=\"{reference}\",reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    assert!(metrics.contains("kolm_drift_dropped_total 0"), "{metrics}");
    let status = d.kolmctl_json(&["status", "--json"]);
    let counts = status["drift"]["counts"].as_array().unwrap();
    for (reason, n) in &by_reason {
        assert!(
            counts.iter().any(|c| c["model"] == reference.as_str()
                && c["reason"] == reason.as_str()
                && c["count"] == *n),
            "{reason} {n} not in {counts:?}"
        );
    }
    // export writes the lines compile reads, once per input.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("drift.jsonl");
    let exported = kolmctl(
        &[
            "drift",
            "export",
            "--artifact",
            NAME,
            "--out",
            file.to_str().unwrap(),
        ],
        home,
    );
    assert!(exported.status.success(), "{exported:?}");
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), OUT_OF_DOMAIN.len());
    for l in &lines {
        assert_eq!(l.as_object().unwrap().len(), 1, "{l}");
        assert!(OUT_OF_DOMAIN.contains(&l["input"].as_str().unwrap()));
    }
    // clear removes them.
    let cleared = json_of(&kolmctl(
        &["drift", "clear", "--artifact", NAME, "--json"],
        home,
    ));
    assert_eq!(cleared["deleted"], OUT_OF_DOMAIN.len(), "{cleared}");
    assert!(entries(home).is_empty());
}

/// The artifact every answer of which is drift: the SmolLM2 base packed
/// with a `compile.drift` record whose log-probability threshold is 0 (a
/// mean log-probability is below 0 unless the model is certain of every
/// token). Installed in `home`.
const ALWAYS: &str = "always";

fn install_always(home: &Path) {
    let home = kolm_store::Home::at(home);
    let keyring = home.keyring();
    let (key, _) = keyring.signing_key_or_create_default(None).unwrap();
    let receipt_key = keyring.receipt_key().unwrap();
    let mut spec = kolm_artifact::PackSpec::new(ALWAYS, "0.1.0", common::smollm2());
    let thresholds = DriftThresholds {
        version: kolm_artifact::drift::DRIFT_VERSION,
        answers: 1,
        mean_logprob: Some(0.0),
        recipe_coverage: None,
        recall_best: None,
        covered: Vec::new(),
    };
    spec.compile = Some(
        [(
            kolm_artifact::drift::DRIFT_KEY.to_owned(),
            thresholds.to_value(),
        )]
        .into_iter()
        .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("always.kolm");
    kolm_artifact::pack(
        spec,
        &[&key],
        &receipt_key,
        &out,
        &kolm_artifact::NoProgress,
    )
    .unwrap();
    let policy = keyring.trust_policy(false).unwrap();
    home.store()
        .unwrap()
        .install(&out, &policy, &kolm_artifact::NoProgress)
        .unwrap();
}

fn always_entries(home: &Path) -> Vec<Value> {
    json_of(&kolmctl(
        &["drift", "list", "--artifact", ALWAYS, "--json"],
        home,
    ))
    .as_array()
    .cloned()
    .unwrap()
}

fn chat_always(d: &Daemon, input: &str) {
    let r = d.post(
        "/v1/chat/completions",
        &json!({"model": ALWAYS, "max_tokens": 12, "temperature": 0,
                "messages": [{"role": "user", "content": input}]}),
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.log());
}

#[test]
fn drift_off_for_the_artifact_logs_nothing_and_redaction_keeps_no_text() {
    // A home of its own, so no other test's entries mix in.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    install_always(&home);
    let off = Daemon::start(&format!(
        "home = {home:?}\nartifacts.{ALWAYS}.drift = false\n"
    ));
    chat_always(&off, OUT_OF_DOMAIN[0]);
    drop(off);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        always_entries(&home).is_empty(),
        "drift is off for the artifact"
    );
    let on = Daemon::start(&format!("home = {home:?}\n"));
    chat_always(&on, OUT_OF_DOMAIN[0]);
    assert!(eventually(Duration::from_secs(20), || always_entries(
        &home
    )
    .len()
        == 1));
    let logged = always_entries(&home);
    assert_eq!(logged[0]["input"], OUT_OF_DOMAIN[0]);
    assert_eq!(logged[0]["reasons"], json!(["logprob"]));
    drop(on);
    json_of(&kolmctl(&["drift", "clear", "--json"], &home));
    let redacted = Daemon::start(&format!("home = {home:?}\ndrift_redact = true\n"));
    chat_always(&redacted, OUT_OF_DOMAIN[0]);
    assert!(eventually(Duration::from_secs(20), || always_entries(
        &home
    )
    .len()
        == 1));
    let logged = always_entries(&home);
    assert_eq!(logged[0]["input"], Value::Null, "{:#}", logged[0]);
    assert_eq!(logged[0]["output"], Value::Null);
    assert_eq!(logged[0]["input_digest"].as_str().unwrap().len(), 64);
    let exported = kolmctl(&["drift", "export"], &home);
    assert!(exported.status.success());
    assert!(
        exported.stdout.is_empty(),
        "a redacted input cannot be exported"
    );
    assert!(
        String::from_utf8_lossy(&exported.stderr).contains("1 redacted"),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
}

#[test]
fn a_locked_database_never_delays_a_response() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    install_always(&home);
    let d = Daemon::start(&format!("home = {home:?}\n"));
    // The first entry creates the database.
    chat_always(&d, OUT_OF_DOMAIN[0]);
    assert!(eventually(Duration::from_secs(20), || always_entries(
        &home
    )
    .len()
        == 1));
    let db = rusqlite::Connection::open(kolm_drift::default_path(&home)).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // A response takes what generation takes; the writer waits on the lock
    // (its busy timeout is 5 s) without the requests waiting for it.
    for input in &OUT_OF_DOMAIN[1..] {
        let started = Instant::now();
        chat_always(&d, input);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a response waited {:?} on the locked database",
            started.elapsed()
        );
    }
    db.execute_batch("COMMIT").unwrap();
    drop(db);
    // What waited is written once the lock is gone, or counted as failed.
    assert!(eventually(Duration::from_secs(20), || {
        let metrics = d.get("/metrics").text();
        let failed = metric(&metrics, "kolm_drift_failed_total");
        always_entries(&home).len() as u64 + failed >= OUT_OF_DOMAIN.len() as u64
    }));
}

#[test]
fn kill_9_during_a_burst_leaves_whole_entries() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    install_always(&home);
    let mut d = Daemon::start(&format!("home = {home:?}\n"));
    let url = d.url();
    // Two clients keep the slots busy with out-of-domain chats.
    let burst: Vec<_> = (0..2)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                for k in 0..50 {
                    let body = json!({"model": ALWAYS, "max_tokens": 12, "messages": [
                        {"role": "user", "content": format!("{} ({i}-{k})", OUT_OF_DOMAIN[k % 4])}]});
                    if ureq_post(&url, &body).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(60), || always_entries(
        &home
    )
    .len()
        >= 6));
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    for t in burst {
        t.join().unwrap();
    }
    let db = rusqlite::Connection::open(kolm_drift::default_path(&home)).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // Every entry opens whole through kolmctl (reasons, scores, input).
    let logged = always_entries(&home);
    assert!(logged.len() >= 6);
    for e in &logged {
        assert!(!e["reasons"].as_array().unwrap().is_empty(), "{e:#}");
        assert!(e["input"].as_str().is_some(), "{e:#}");
    }
}

/// One POST to kolmd's chat endpoint; an error once the daemon is gone.
fn ureq_post(url: &str, body: &Value) -> Result<(), ()> {
    let addr = url.trim_start_matches("http://").parse().map_err(|_| ())?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|_| ())?;
    let payload = body.to_string();
    use std::io::{Read, Write};
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )
    .map_err(|_| ())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|_| ())?;
    if response.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(())
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
