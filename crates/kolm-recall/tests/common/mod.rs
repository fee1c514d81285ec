//! Shared by the tests: where the embedder fixture is, and one loaded
//! embedder per test binary (loading it takes about a second).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use kolm_recall::MiniLm;

/// The all-MiniLM-L6-v2 zip (scripts/fixtures.sh fetches it).
pub fn minilm_zip() -> PathBuf {
    kolm_fixtures::minilm_zip()
}

/// The embedder, loaded once.
pub fn minilm() -> &'static MiniLm {
    static M: OnceLock<MiniLm> = OnceLock::new();
    M.get_or_init(|| MiniLm::load(&minilm_zip()).expect("the fixture loads"))
}

/// A checked-in fixture file.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}
