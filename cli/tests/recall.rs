//! `kolmctl index build`, `kolmctl recall query` on the index and on an
//! artifact packed with `--index --embedder`: the real binary, real weights.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

fn fixtures() -> PathBuf {
    kolm_fixtures::dir()
}

fn kolmctl(home: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kolmctl"))
        .args(args)
        .env("KOLM_HOME", home)
        .env_remove("KOLM_EMBEDDER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok_json(home: &std::path::Path, args: &[&str]) -> Value {
    let (ok, out, err) = kolmctl(home, args);
    assert!(ok, "kolmctl {args:?} failed:\n{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn build_query_pack_and_query_the_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::write(
        corpus.join("kestrels.md"),
        "# Kestrels\n\nKestrels hover in the wind while hunting voles in grassland.\n",
    )
    .unwrap();
    std::fs::write(
        corpus.join("glaciers.txt"),
        "Glaciers carve U-shaped valleys as the ice slowly grinds the rock beneath.\n",
    )
    .unwrap();
    std::fs::write(corpus.join("empty.txt"), "").unwrap();
    let embedder = fixtures().join("all-MiniLM-L6-v2.zip");
    let index = dir.path().join("index.sqlite");
    let (i, e, s) = (
        index.to_str().unwrap(),
        embedder.to_str().unwrap(),
        corpus.to_str().unwrap(),
    );

    let report = ok_json(
        &home,
        &[
            "index",
            "build",
            s,
            "--out",
            i,
            "--embedder",
            e,
            "--json",
            "-q",
        ],
    );
    assert_eq!(report["files"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["skipped"][0]["source"], "empty.txt");
    assert_eq!(report["skipped"][0]["reason"], "empty file");
    // Again: nothing re-embedded.
    let again = ok_json(
        &home,
        &[
            "index",
            "build",
            s,
            "--out",
            i,
            "--embedder",
            e,
            "--json",
            "-q",
        ],
    );
    assert_eq!(again["chunks_embedded"], 0);

    // The index remembers its embedder.
    let hits = ok_json(
        &home,
        &[
            "recall",
            "query",
            i,
            "which bird hovers over fields?",
            "--k",
            "2",
            "--json",
        ],
    );
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["source"], "kestrels.md");
    assert_eq!(hits[0]["offset"], 0);
    assert!(hits[0]["text"].as_str().unwrap().contains("voles"));
    assert!(hits[0]["score"].as_f64().unwrap() > hits[1]["score"].as_f64().unwrap());

    // Packed into an artifact, queried from it.
    let base = fixtures().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let art = dir.path().join("nature.kolm");
    let packed = ok_json(
        &home,
        &[
            "pack",
            "--base",
            base.to_str().unwrap(),
            "--index",
            i,
            "--embedder",
            e,
            "--name",
            "nature",
            "--out",
            art.to_str().unwrap(),
            "--json",
            "-q",
        ],
    );
    let recall = &packed["manifest"]["predicate"]["compile"]["recall"];
    assert_eq!(
        recall["embedder"], "sentence-transformers/all-MiniLM-L6-v2",
        "{packed}"
    );
    assert_eq!(recall["dimension"], 384);
    assert_eq!(recall["skipped"][0]["source"], "empty.txt");
    let names: Vec<&str> = packed["manifest"]["predicate"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"recall/index.sqlite"), "{names:?}");
    assert!(
        names.contains(&"recall/embedder/model.safetensors"),
        "{names:?}"
    );
    assert!(
        names.contains(&"recall/embedder/tokenizer.json"),
        "{names:?}"
    );
    let hits = ok_json(
        &home,
        &[
            "recall",
            "query",
            art.to_str().unwrap(),
            "how are valleys shaped by ice",
            "--json",
            "-q",
        ],
    );
    assert_eq!(hits[0]["source"], "glaciers.txt", "{hits}");

    // --index without --embedder is a usage error; a non-index is refused.
    let (ok, _, err) = kolmctl(
        &home,
        &[
            "pack",
            "--base",
            base.to_str().unwrap(),
            "--index",
            i,
            "--out",
            "x.kolm",
        ],
    );
    assert!(!ok && err.contains("--embedder"), "{err}");
    let (ok, _, err) = kolmctl(&home, &["recall", "query", base.to_str().unwrap(), "q"]);
    assert!(!ok, "{err}");
}
