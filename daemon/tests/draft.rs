//! Drafting through kolmd, on a real SmolLM2 artifact whose recipe pack
//! knows the answer: the HTTP API and gRPC (`kolmctl run`) give the same
//! text as a request that does not draft, each reports `kolm.draft` (a
//! stream on its finishing chunk; how much a step drafts follows the
//! measured step cost, so the figures of two requests may differ),
//! `/metrics` recounts the figures the responses reported, a
//! `draft` field that is not a boolean is refused, and a daemon configured
//! with `draft = "off"` never drafts. The daemon drafts eagerly (`draft =
//! "eager"`) where the figures are under test: on this 2-core machine the
//! cost model rightly drafts little.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use common::Daemon;
use kolm_artifact::recipes::{MineParams, RecipePack};
use kolm_artifact::{names, Component, NoProgress, PackSpec};
use kolm_runtime::{BaseOptions, Runtime};
use serde_json::{json, Value};

const QUESTION: &str = "Name three colors.";
const MAX_TOKENS: u32 = 32;
const MODEL: &str = "drafty";

/// The greedy answer of the plain base to [`QUESTION`], asked over HTTP
/// without drafting.
fn plain_answer(d: &Daemon) -> String {
    let r = d.post("/v1/chat/completions", &body("smollm2", json!(false)));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(
        v.get("kolm").is_none(),
        "a request that does not draft reports no drafting: {v}"
    );
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn body(model: &str, draft: Value) -> Value {
    let mut b = json!({
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    });
    if !draft.is_null() {
        b["draft"] = draft;
    }
    b
}

/// Installs [`MODEL`] (once per test process): the SmolLM2 base with a
/// recipe pack mined from `answer`'s tokens.
fn install_drafty(answer: &str) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let base = Runtime
            .load_base(&common::smollm2(), &BaseOptions { gpu_layers: 0 })
            .unwrap();
        let tokens: Vec<u32> = base
            .tokenize(answer)
            .unwrap()
            .into_iter()
            .map(|t| t as u32)
            .collect();
        assert!(tokens.len() >= 8, "{answer}");
        drop(base);
        // Twice: a continuation must be seen twice to be kept.
        let pack =
            RecipePack::mine_tokens(&[tokens.clone(), tokens], MineParams::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pack_file = dir.path().join("pack.bin");
        std::fs::write(&pack_file, pack.to_bytes()).unwrap();
        let home = kolm_store::Home::at(common::home());
        let keyring = home.keyring();
        let (key, _) = keyring.signing_key_or_create_default(None).unwrap();
        let receipt_key = keyring.receipt_key().unwrap();
        let mut spec = PackSpec::new(MODEL, "0.1.0", common::smollm2());
        spec.components
            .push(Component::new(names::RECIPES, &pack_file));
        let out = dir.path().join("drafty.kolm");
        kolm_artifact::pack(spec, &[&key], &receipt_key, &out, &NoProgress).unwrap();
        let policy = keyring.trust_policy(false).unwrap();
        home.store()
            .unwrap()
            .install(&out, &policy, &NoProgress)
            .unwrap();
    });
}

/// `kolm.draft` of a completion or chunk: (drafted, accepted, steps).
fn draft_of(v: &Value) -> (u64, u64, u64) {
    let d = &v["kolm"]["draft"];
    let n = |k: &str| {
        d[k].as_u64()
            .unwrap_or_else(|| panic!("no kolm.draft.{k}: {v}"))
    };
    (n("drafted"), n("accepted"), n("steps"))
}

/// The `kolm_draft_*` samples of `/metrics` for `model`, by their labels.
fn draft_metrics(d: &Daemon, model: &str) -> BTreeMap<String, u64> {
    let r = d.get("/metrics");
    assert_eq!(r.status, 200);
    let needle = format!("model=\"{model}\"");
    r.text()
        .lines()
        .filter(|l| l.starts_with("kolm_draft_") && l.contains(&needle))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn both_doors_draft_the_same_answer_and_count_it_the_same() {
    // Eager: the plumbing is under test, whatever the cost model would
    // choose on this machine.
    let d = Daemon::start("draft = \"eager\"");
    let answer = plain_answer(&d);
    install_drafty(&answer);

    // HTTP, drafting by default: the same text, every recipe accepted.
    let r = d.post("/v1/chat/completions", &body(MODEL, Value::Null));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.log());
    let http = r.json();
    assert_eq!(http["choices"][0]["message"]["content"], answer.as_str());
    let (drafted, accepted, steps) = draft_of(&http);
    let tokens = http["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(drafted > 0 && accepted > 0, "{http}");
    assert!(accepted <= drafted, "{http}");
    assert!(
        steps < tokens,
        "{tokens} tokens take fewer than {tokens} steps: {http}"
    );
    // Each step emits one token of the model's own plus what it accepted
    // (the end-of-text token, when it ends the answer, is not counted).
    let emitted = steps + accepted;
    assert!(
        emitted == tokens || emitted == tokens + 1,
        "steps {steps} + accepted {accepted} vs {tokens} tokens"
    );

    // gRPC through kolmctl: the same text and the same figures.
    let grpc = d.kolmctl_json(&[
        "run",
        MODEL,
        QUESTION,
        "--json",
        "--temperature",
        "0",
        "--max-tokens",
        &MAX_TOKENS.to_string(),
    ]);
    assert_eq!(grpc["text"], answer.as_str());
    let figures = |d: &Value| -> (u64, u64, u64) {
        let n = |k: &str| d[k].as_u64().unwrap_or_else(|| panic!("no draft.{k}: {d}"));
        (n("drafted"), n("accepted"), n("steps"))
    };
    assert!(grpc["draft"].is_object(), "{grpc}");
    let by_grpc = figures(&grpc["draft"]);
    assert!(by_grpc.1 > 0 && by_grpc.1 <= by_grpc.0, "{grpc}");
    assert!(by_grpc.2 + by_grpc.1 >= tokens, "{grpc}");
    let mut reported = vec![(drafted, accepted, steps), by_grpc];

    // A stream: the finishing chunk carries the same figures.
    let mut b = body(MODEL, Value::Null);
    b["stream"] = true.into();
    let r = d.post("/v1/chat/completions", &b);
    assert_eq!(r.status, 200, "{}", r.text());
    let chunks: Vec<Value> = r
        .events()
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, answer);
    let finishing: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finishing.len(), 1);
    let by_stream = draft_of(finishing[0]);
    assert!(
        by_stream.1 > 0 && by_stream.1 <= by_stream.0,
        "{by_stream:?}"
    );
    reported.push(by_stream);
    assert!(
        chunks
            .iter()
            .filter(|c| c["kolm"].get("draft").is_some())
            .count()
            == 1,
        "only the finishing chunk reports drafting"
    );

    // Off for one request, on either door: the same text, no figures.
    let r = d.post("/v1/chat/completions", &body(MODEL, json!(false)));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        answer.as_str()
    );
    assert!(r.json().get("kolm").is_none(), "{}", r.text());
    let grpc_off = d.kolmctl_json(&[
        "run",
        MODEL,
        QUESTION,
        "--json",
        "--temperature",
        "0",
        "--max-tokens",
        &MAX_TOKENS.to_string(),
        "--no-draft",
    ]);
    assert_eq!(grpc_off["text"], answer.as_str());
    assert!(grpc_off["draft"].is_null(), "{grpc_off}");

    // `--verbose` prints the acceptance.
    let out = d.kolmctl(
        &[
            "run",
            MODEL,
            QUESTION,
            "--temperature",
            "0",
            "--max-tokens",
            &MAX_TOKENS.to_string(),
            "--verbose",
        ],
        None,
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // "drafting: M of N drafted tokens accepted (P%), X tokens per step over S steps"
    let line = stderr
        .lines()
        .find(|l| l.starts_with("drafting: "))
        .unwrap_or_else(|| panic!("no drafting line: {stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |i: usize| -> u64 { words[i].parse().unwrap_or_else(|_| panic!("{line}")) };
    let by_verbose = (number(3), number(1), number(words.len() - 2));
    assert!(line.contains("drafted tokens accepted"), "{line}");
    let per_step = (by_verbose.2 + by_verbose.1) as f64 / by_verbose.2 as f64;
    assert!(
        line.contains(&format!("{per_step:.2} tokens per step")),
        "{line}"
    );
    reported.push(by_verbose);

    // /metrics recounts the four drafted requests (HTTP, gRPC, stream,
    // verbose gRPC) as they reported themselves: all accepted tokens came
    // from the pack.
    let m = draft_metrics(&d, &format!("{MODEL}:0.1.0"));
    let get = |source: &str, outcome: &str| {
        m.get(&format!(
            "kolm_draft_tokens_total{{model=\"{MODEL}:0.1.0\",source=\"{source}\",outcome=\"{outcome}\"}}"
        ))
        .copied()
        .unwrap_or_else(|| panic!("no {source}/{outcome} in {m:?}"))
    };
    let all_accepted: u64 = ["grammar", "recipes", "prompt"]
        .iter()
        .map(|s| get(s, "accepted"))
        .sum();
    let all_rejected: u64 = ["grammar", "recipes", "prompt"]
        .iter()
        .map(|s| get(s, "rejected"))
        .sum();
    let sum = |f: fn(&(u64, u64, u64)) -> u64| reported.iter().map(f).sum::<u64>();
    assert_eq!(all_accepted, sum(|r| r.1), "{m:?} vs {reported:?}");
    assert_eq!(
        all_accepted + all_rejected,
        sum(|r| r.0),
        "{m:?} vs {reported:?}"
    );
    assert!(get("recipes", "accepted") > 0, "{m:?}");
    assert_eq!(
        m[&format!("kolm_draft_steps_total{{model=\"{MODEL}:0.1.0\"}}")],
        sum(|r| r.2),
        "{m:?} vs {reported:?}"
    );
    // The plain base's request did not draft: nothing counted for it.
    assert!(draft_metrics(&d, "smollm2:0.1.0").is_empty());
}

#[test]
fn a_draft_field_that_is_not_a_boolean_is_refused() {
    let d = Daemon::start("");
    for bad in [json!("yes"), json!(1), json!({"max": 4})] {
        let r = d.post("/v1/chat/completions", &body("smollm2", bad.clone()));
        let e = r.error(400);
        assert_eq!(e["param"], "draft", "{bad}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains("true or false"),
            "{e}"
        );
    }
    let mut completion =
        json!({"model": "smollm2", "prompt": "Hi", "max_tokens": 2, "draft": "no"});
    let r = d.post("/v1/completions", &completion);
    assert_eq!(r.error(400)["param"], "draft");
    completion["draft"] = false.into();
    assert_eq!(d.post("/v1/completions", &completion).status, 200);
}

#[test]
fn a_daemon_with_drafting_off_never_drafts() {
    let on = Daemon::start("");
    let answer = plain_answer(&on);
    install_drafty(&answer);
    drop(on);
    let d = Daemon::start("draft = \"off\"");
    let r = d.post("/v1/chat/completions", &body(MODEL, json!(true)));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], answer.as_str());
    assert!(v.get("kolm").is_none(), "{v}");
    let grpc = d.kolmctl_json(&[
        "run",
        MODEL,
        QUESTION,
        "--json",
        "--temperature",
        "0",
        "--max-tokens",
        &MAX_TOKENS.to_string(),
    ]);
    assert_eq!(grpc["text"], answer.as_str());
    assert!(grpc["draft"].is_null(), "{grpc}");
    assert!(draft_metrics(&d, &format!("{MODEL}:0.1.0")).is_empty());
}
