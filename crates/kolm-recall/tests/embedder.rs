//! The MiniLM embedder against sentence-transformers' own vectors
//! (tests/reference/minilm.json, made by minilm_reference.py).

mod common;

use kolm_recall::{Embedder, MiniLm};

#[test]
fn matches_sentence_transformers() {
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("reference/minilm.json")).unwrap();
    let sentences: Vec<&str> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let expected: Vec<Vec<f32>> = reference["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let m = common::minilm();
    assert_eq!(m.id(), kolm_recall::embed::MINILM_ID);
    assert_eq!(m.dimension(), 384);
    assert_eq!(m.max_tokens(), 256);
    // Batched together (padding and length sorting must not change them)...
    let batched = m.embed(&sentences).unwrap();
    for ((s, got), want) in sentences.iter().zip(&batched).zip(&expected) {
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{s:?}: norm {norm}");
        let c = common::cosine(got, want);
        assert!(c >= 0.999, "{s:?}: cosine {c} to the reference");
    }
    // ...and one at a time.
    for (s, want) in sentences.iter().zip(&expected) {
        let got = m.embed(&[s]).unwrap().pop().unwrap();
        let c = common::cosine(&got, want);
        assert!(c >= 0.999, "{s:?} alone: cosine {c}");
    }
    // Different sentences are not the same vector (the check can fail).
    assert!(common::cosine(&batched[0], &expected[1]) < 0.9);
}

#[test]
fn loads_from_a_folder_too() {
    let dir = tempfile::tempdir().unwrap();
    let files = kolm_recall::EmbedderFiles::load(&common::minilm_zip()).unwrap();
    files.write_to(dir.path()).unwrap();
    let m = MiniLm::load(dir.path()).unwrap();
    let a = m.embed(&["harbour"]).unwrap().pop().unwrap();
    let b = common::minilm().embed(&["harbour"]).unwrap().pop().unwrap();
    assert!(common::cosine(&a, &b) > 0.99999);
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let err = MiniLm::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json is missing"), "{err}");
}
