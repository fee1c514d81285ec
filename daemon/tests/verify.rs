//! The artifact's verifier at run time, through kolmd, on real SmolLM2
//! artifacts whose verifiers bound the answer's length: a chat's answer is
//! checked and reported as `kolm.verified` on both doors (HTTP whole and
//! streamed, gRPC through `kolmctl run`), the verdict is the test's own
//! recount of the rule, raw prompts and artifacts without a verifier are
//! not checked, `/metrics` recounts the verdicts; retries repair an answer
//! that fails (with fixed seeds: attempt i takes the request's seed plus i,
//! which the test replays), return the best failing one when none passes,
//! and are refused where they cannot be honoured.

mod common;

use std::collections::BTreeMap;

use common::Daemon;
use kolm_artifact::{names, Component, NoProgress, PackSpec};
use serde_json::{json, Value};

const QUESTION: &str = "Describe the sea in one sentence.";
const MAX_TOKENS: u32 = 24;

/// Installs `name`: the SmolLM2 base with a free-text verifier whose
/// answers must have `min..=max` characters.
fn install_checked(name: &str, min: u64, max: u64) {
    let dir = tempfile::tempdir().unwrap();
    let verifier = dir.path().join("verifier.json");
    std::fs::write(
        &verifier,
        json!({
            "version": 2,
            "output": {"kind": "text"},
            "length": {"min": min, "max": max},
            "observed": 1
        })
        .to_string(),
    )
    .unwrap();
    let home = kolm_store::Home::at(common::home());
    let keyring = home.keyring();
    let (key, _) = keyring.signing_key_or_create_default(None).unwrap();
    let receipt_key = keyring.receipt_key().unwrap();
    let mut spec = PackSpec::new(name, "0.1.0", common::smollm2());
    spec.components
        .push(Component::new(names::VERIFIER, &verifier));
    let out = dir.path().join(format!("{name}.kolm"));
    kolm_artifact::pack(spec, &[&key], &receipt_key, &out, &NoProgress).unwrap();
    let policy = keyring.trust_policy(false).unwrap();
    home.store()
        .unwrap()
        .install(&out, &policy, &NoProgress)
        .unwrap();
}

fn chat(model: &str, extra: Value) -> Value {
    let mut b = json!({
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": MAX_TOKENS,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        b[k] = v.clone();
    }
    b
}

/// A whole chat completion: (text, the response).
fn answer(d: &Daemon, body: &Value) -> (String, Value) {
    let r = d.post("/v1/chat/completions", body);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.log());
    let v = r.json();
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    (text, v)
}

/// The test's own recount of the length rule.
fn within(text: &str, min: u64, max: u64) -> bool {
    let n = text.chars().count() as u64;
    (min..=max).contains(&n)
}

fn verdict(passed: bool, attempts: u32) -> Value {
    let rules: Vec<&str> = if passed { vec![] } else { vec!["length"] };
    json!({"passed": passed, "rules": rules, "attempts": attempts})
}

/// The `kolm_verif*` samples of `/metrics` for `model` (labelled by its
/// reference, `NAME:0.1.0`).
fn verify_metrics(d: &Daemon, model: &str) -> BTreeMap<String, u64> {
    let r = d.get("/metrics");
    assert_eq!(r.status, 200);
    let needle = format!("model=\"{model}:0.1.0\"");
    r.text()
        .lines()
        .filter(|l| l.starts_with("kolm_verif") && l.contains(&needle))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn answers_are_checked_on_both_doors_and_counted() {
    let d = Daemon::start("");
    // The greedy answer of the plain base decides the bounds: one
    // artifact it passes, one it fails.
    let (plain, v) = answer(&d, &chat("smollm2", json!({"temperature": 0})));
    assert!(
        v["kolm"].get("verified").is_none(),
        "no verifier, no verdict: {v}"
    );
    let n = plain.chars().count() as u64;
    assert!(n > 4, "{plain:?}");
    install_checked("roomy", 1, n + 10);
    install_checked("strict", 1, n / 2);

    let mut reported: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (model, max) in [("roomy", n + 10), ("strict", n / 2)] {
        let passes = within(&plain, 1, max);
        assert_eq!(passes, model == "roomy");
        // HTTP, whole.
        let (text, v) = answer(&d, &chat(model, json!({"temperature": 0})));
        assert_eq!(text, plain, "the same base and prompt: {v}");
        assert_eq!(v["kolm"]["verified"], verdict(passes, 1), "{v}");
        // HTTP, streamed: the verdict rides on the finishing chunk.
        let mut body = chat(model, json!({"temperature": 0}));
        body["stream"] = json!(true);
        let r = d.post("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        let chunks: Vec<Value> = r
            .events()
            .iter()
            .filter(|e| e.as_str() != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let finishing = chunks
            .iter()
            .find(|c| c["choices"][0]["finish_reason"].is_string())
            .expect("a finishing chunk");
        assert_eq!(finishing["kolm"]["verified"], verdict(passes, 1));
        assert!(chunks
            .iter()
            .filter(|c| c["choices"][0]["finish_reason"].is_null())
            .all(|c| c["kolm"].get("verified").is_none()));
        // gRPC through kolmctl.
        let grpc = d.kolmctl_json(&[
            "run",
            model,
            QUESTION,
            "--json",
            "--temperature",
            "0",
            "--max-tokens",
            &MAX_TOKENS.to_string(),
        ]);
        assert_eq!(grpc["text"], plain.as_str());
        assert_eq!(grpc["verified"], verdict(passes, 1), "{grpc}");
        let e = reported.entry(model).or_default();
        if passes {
            e.0 += 3;
        } else {
            e.1 += 3;
        }
        // A raw prompt is not a chat on the artifact's task: no verdict.
        let r = d.post(
            "/v1/completions",
            &json!({"model": model, "prompt": "The sea is", "max_tokens": 4, "temperature": 0}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["kolm"].get("verified").is_none(), "{}", r.text());
    }
    // `/metrics` recounts what the responses reported.
    for (model, (passed, failed)) in reported {
        let m = verify_metrics(&d, model);
        let get = |k: &str| m.get(k).copied().unwrap_or(0);
        assert_eq!(
            get(&format!(
                "kolm_verified_total{{model=\"{model}:0.1.0\",outcome=\"passed\"}}"
            )),
            passed,
            "{m:?}"
        );
        assert_eq!(
            get(&format!(
                "kolm_verified_total{{model=\"{model}:0.1.0\",outcome=\"failed\"}}"
            )),
            failed,
            "{m:?}"
        );
        assert_eq!(
            get(&format!(
                "kolm_verify_attempts_total{{model=\"{model}:0.1.0\"}}"
            )),
            passed + failed
        );
    }
}

#[test]
fn retries_repair_a_failing_answer_and_replay_by_seed() {
    let d = Daemon::start("");
    let sampled = |model: &str, seed: u32, extra: Value| -> (String, Value) {
        let mut body = chat(model, json!({"temperature": 1.0, "seed": seed}));
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        answer(&d, &body)
    };
    // Sampled answers of the plain base for seeds 100..112; the median
    // length bounds an artifact that passes about half of them.
    let seeds: Vec<u32> = (100..112).collect();
    let texts: Vec<String> = seeds
        .iter()
        .map(|&s| sampled("smollm2", s, json!({})).0)
        .collect();
    let mut lengths: Vec<u64> = texts.iter().map(|t| t.chars().count() as u64).collect();
    lengths.sort_unstable();
    let max = lengths[lengths.len() / 2 - 1];
    install_checked("halfway", 1, max);
    let passes: Vec<bool> = texts.iter().map(|t| within(t, 1, max)).collect();
    // A seed whose answer fails, followed within 8 seeds by one that passes.
    let (first, later) = (0..seeds.len())
        .find_map(|i| {
            (!passes[i])
                .then(|| (i + 1..seeds.len().min(i + 9)).find(|&j| passes[j]))
                .flatten()
                .map(|j| (i, j))
        })
        .unwrap_or_else(|| panic!("no failing seed before a passing one: {lengths:?}"));

    // Without retries the answer fails, as the test counted.
    let (text, v) = sampled("halfway", seeds[first], json!({}));
    assert_eq!(text, texts[first]);
    assert_eq!(v["kolm"]["verified"], verdict(false, 1), "{v}");
    // With retries: attempt i is seed + i, so the answer returned is the
    // first passing seed's, after `later - first + 1` answers.
    let attempts = (later - first + 1) as u32;
    let (text, v) = sampled("halfway", seeds[first], json!({"verify": {"retries": 8}}));
    assert_eq!(text, texts[later], "{v}");
    assert_eq!(v["kolm"]["verified"], verdict(true, attempts), "{v}");
    let usage = &v["usage"]["completion_tokens"];
    let (_, alone) = sampled("smollm2", seeds[later], json!({}));
    assert_eq!(usage, &alone["usage"]["completion_tokens"]);
    // The same over gRPC.
    let grpc = d.kolmctl_json(&[
        "run",
        "halfway",
        QUESTION,
        "--json",
        "--temperature",
        "1",
        "--seed",
        &seeds[first].to_string(),
        "--max-tokens",
        &MAX_TOKENS.to_string(),
        "--verify-retries",
        "8",
    ]);
    assert_eq!(grpc["text"], texts[later].as_str());
    assert_eq!(grpc["verified"], verdict(true, attempts), "{grpc}");

    // Where no answer can pass, every retry is used and the first of the
    // equally bad answers comes back, marked failed.
    install_checked("impossible", 10_000, 20_000);
    let (text, v) = sampled("impossible", seeds[0], json!({"verify": {"retries": 2}}));
    assert_eq!(text, texts[0]);
    assert_eq!(v["kolm"]["verified"], verdict(false, 3), "{v}");

    // A daemon default per artifact applies where the request says nothing.
    drop(d);
    let d = Daemon::start("artifacts.halfway.verify_retries = 8");
    let mut body = chat("halfway", json!({"temperature": 1.0, "seed": seeds[first]}));
    body["max_tokens"] = json!(MAX_TOKENS);
    let (text, v) = answer(&d, &body);
    assert_eq!(text, texts[later]);
    assert_eq!(v["kolm"]["verified"], verdict(true, attempts), "{v}");
    // A request's own `retries: 0` wins over it.
    body["verify"] = json!({"retries": 0});
    let (text, v) = answer(&d, &body);
    assert_eq!(text, texts[first]);
    assert_eq!(v["kolm"]["verified"], verdict(false, 1), "{v}");
    let m = verify_metrics(&d, "halfway");
    assert_eq!(
        m.get("kolm_verify_attempts_total{model=\"halfway:0.1.0\"}"),
        Some(&u64::from(attempts + 1)),
        "{m:?}"
    );
}

#[test]
fn retries_that_cannot_be_honoured_are_refused() {
    let d = Daemon::start("");
    install_checked("bounded", 1, 400);
    let refused = |body: Value, path: &str| {
        let r = d.post(path, &body);
        let e = r.error(400);
        assert_eq!(e["param"], "verify", "{e}");
        e["message"].as_str().unwrap().to_owned()
    };
    let chat_path = "/v1/chat/completions";
    let m = refused(
        chat("bounded", json!({"stream": true, "verify": {"retries": 2}})),
        chat_path,
    );
    assert!(m.contains("stream"), "{m}");
    let m = refused(
        chat("smollm2", json!({"verify": {"retries": 1}})),
        chat_path,
    );
    assert!(m.contains("no verifier"), "{m}");
    let m = refused(
        chat("bounded", json!({"verify": {"retries": 9}})),
        chat_path,
    );
    assert!(m.contains("at most 8"), "{m}");
    let m = refused(
        json!({"model": "bounded", "prompt": "The sea", "verify": {"retries": 1}}),
        "/v1/completions",
    );
    assert!(m.contains("raw prompt"), "{m}");
    for bad in [json!("twice"), json!({"tries": 1}), json!({"retries": -1})] {
        refused(chat("bounded", json!({ "verify": bad })), chat_path);
    }
    // Streaming with no retries asked is served, and checked.
    let r = d.post(
        chat_path,
        &chat("bounded", json!({"stream": true, "verify": {"retries": 0}})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // gRPC refuses the same, with the same words.
    let out = d.kolmctl(
        &[
            "run",
            "smollm2",
            QUESTION,
            "--json",
            "--verify-retries",
            "1",
        ],
        None,
    );
    assert!(!out.status.success());
    let stderr =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no verifier"), "{stderr}");
}
