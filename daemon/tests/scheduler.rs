//! The scheduler through a real kolmd: artifacts on one base share one
//! loaded copy of the weights; a memory limit evicts the least recently
//! used idle artifact; pinned ones stay; keep_alive 0 and short durations
//! unload on time.

mod common;

use std::time::Duration;

use common::{eventually, Daemon};
use serde_json::json;

#[test]
fn shared_base_eviction_pinning_and_keep_alive() {
    // Measure one artifact's cost, then allow the base and two contexts.
    let (base_bytes, context_bytes) = {
        let d = Daemon::start("slots = 1");
        d.chat("alpha", json!({}));
        let l = d.loaded();
        let m = &l["models"][0];
        (
            m["base_bytes"].as_u64().unwrap(),
            m["context_bytes"].as_u64().unwrap(),
        )
    };
    assert!(base_bytes > 50_000_000 && context_bytes > 0);
    let limit = base_bytes + context_bytes * 5 / 2;
    let d = Daemon::start(&format!(
        "slots = 1\nmemory_limit = \"{limit}\"\nmemory_reserve = \"0\""
    ));

    // Two artifacts on one base: one base, its weights counted once.
    d.chat("alpha", json!({}));
    d.chat("beta", json!({}));
    let l = d.loaded();
    assert_eq!(l["bases"].as_array().unwrap().len(), 1, "{l}");
    assert_eq!(l["bases"][0]["artifacts"], 2, "{l}");
    let models = l["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["base"], models[1]["base"]);
    assert_eq!(
        l["memory_bytes"].as_u64().unwrap(),
        base_bytes + 2 * context_bytes,
        "{l}"
    );
    let metrics = d.get("/metrics").text();
    assert!(metrics.contains("kolm_loaded_bases 1"), "{metrics}");
    assert_eq!(
        metrics.matches("kolm_base_memory_bytes{").count(),
        1,
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "kolm_memory_used_bytes {}",
        base_bytes + 2 * context_bytes
    )));

    // alpha is used last, so beta is the least recently used: gamma evicts it.
    d.chat("alpha", json!({}));
    d.chat("gamma", json!({}));
    assert_eq!(d.loaded_names(), ["alpha", "gamma"], "{}", d.log());

    // Pin gamma; make it the least recently used; beta must evict alpha.
    let r = d.post("/kolm/v1/load", &json!({"model": "gamma", "pin": true}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["pinned"], true);
    d.chat("alpha", json!({}));
    d.chat("beta", json!({}));
    assert_eq!(d.loaded_names(), ["beta", "gamma"], "{}", d.log());

    // keep_alive 0: unloaded as soon as the request ends.
    d.chat("beta", json!({"keep_alive": 0}));
    assert!(
        eventually(Duration::from_secs(2), || d.loaded_names() == ["gamma"]),
        "{}",
        d.loaded()
    );

    // A short keep_alive: loaded right after, gone once it passes.
    d.chat("alpha", json!({"keep_alive": "1s"}));
    let l = d.loaded();
    let alpha = l["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "alpha:0.1.0")
        .unwrap()
        .clone();
    assert_eq!(alpha["keep_alive_seconds"], 1.0);
    assert!(alpha["expires_at"].is_number(), "{alpha}");
    assert!(
        eventually(Duration::from_secs(5), || d.loaded_names() == ["gamma"]),
        "{}",
        d.loaded()
    );

    // The pinned model never expires; unloading it explicitly works.
    let r = d.post("/kolm/v1/unload", &json!({"model": "gamma"}));
    let unloaded = r.json();
    let names = unloaded["unloaded"].as_array().unwrap();
    assert_eq!(names.len(), 1, "{unloaded}");
    assert!(
        names[0].as_str().unwrap().starts_with("gamma:"),
        "{unloaded}"
    );
    assert!(unloaded["freed_bytes"].as_u64().unwrap() > 0, "{unloaded}");
    assert!(d.loaded_names().is_empty());
    assert!(
        d.loaded()["bases"].as_array().unwrap().is_empty(),
        "the base goes with its last artifact"
    );
}

#[test]
fn a_model_that_cannot_fit_is_refused_clearly() {
    let d = Daemon::start("memory_limit = \"10MiB\"");
    let r = d.post(
        "/v1/chat/completions",
        &json!({"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
    );
    let e = r.error(507);
    assert_eq!(e["code"], "insufficient_memory");
    assert!(
        e["message"].as_str().unwrap().contains("does not fit"),
        "{e}"
    );
    assert_eq!(d.get("/health").status, 200);
}

/// The daemon's resident memory in bytes (file-backed weight pages
/// included), from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn a_second_artifact_on_the_same_base_adds_no_second_copy_of_the_weights() {
    let d = Daemon::start("slots = 1");
    let pid = d.child.id();
    let idle = rss_bytes(pid);
    d.chat("alpha", json!({}));
    let one = rss_bytes(pid);
    d.chat("beta", json!({}));
    let two = rss_bytes(pid);
    let l = d.loaded();
    let base_bytes = l["models"][0]["base_bytes"].as_u64().unwrap();
    let first = one.saturating_sub(idle);
    let second = two.saturating_sub(one);
    eprintln!("RSS idle {idle}, +alpha {first}, +beta (same base) {second}, weights {base_bytes}");
    // The first artifact brings the weights and a context; the second only
    // a context. What the first adds beyond the second is the weights.
    assert!(
        first > second + base_bytes * 7 / 10,
        "alpha added {first} bytes, beta {second}; the weights are {base_bytes}"
    );
    assert!(second < base_bytes, "beta added {second} bytes");
}
