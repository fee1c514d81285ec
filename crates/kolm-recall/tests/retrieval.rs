//! Building an index of a small corpus and finding the right document, by
//! hybrid, vector and BM25 retrieval, exact and quantized; incremental
//! rebuilds.

mod common;

use std::path::Path;

use kolm_artifact::NoProgress;
use kolm_recall::{
    build_index_with, BuildOptions, FileStatus, Index, Kind, Mode, Quantization, Recall,
};

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Seven documents of seven kinds, each about something else.
fn corpus(root: &Path) {
    write(
        root,
        "garden/roses.md",
        "# Pruning roses\n\nCut rose bushes back in late winter, just above an outward-facing bud, \
         and remove dead or crossing canes.\n\n## Feeding\n\nGive them a balanced fertiliser in spring \
         and mulch with compost.\n",
    );
    write(
        root,
        "kitchen/bread.txt",
        "Sourdough rises with a starter: a culture of wild yeast and lactic acid bacteria.\n\
         Feed the starter equal weights of flour and water every day, and bake the loaf at 230 degrees.\n",
    );
    write(
        root,
        "src/retry.rs",
        "/// Sends a request again after a failure, doubling the wait each time.\n\
         pub fn retry_with_backoff(attempts: u32, base_ms: u64) -> Vec<u64> {\n    \
         (0..attempts).map(|i| base_ms << i).collect()\n}\n",
    );
    write(
        root,
        "data/planets.jsonl",
        "{\"name\": \"Venus\", \"fact\": \"Venus spins backwards and its day is longer than its year.\"}\n\
         {\"name\": \"Mars\", \"fact\": \"Mars has two small moons, Phobos and Deimos.\"}\n\
         {\"name\": \"Saturn\", \"fact\": \"Saturn's rings are made mostly of water ice.\"}\n",
    );
    write(
        root,
        "data/trains.csv",
        "route,departure,platform\nLondon to Edinburgh,07:00,4\nYork to Leeds,09:30,2\n\"Bristol, Temple Meads to Bath\",10:15,1\n",
    );
    std::fs::create_dir_all(root.join("web")).unwrap();
    std::fs::copy(common::fixture("tides.html"), root.join("web/tides.html")).unwrap();
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::copy(
        common::fixture("lighthouse.pdf"),
        root.join("docs/lighthouse.pdf"),
    )
    .unwrap();
}

const QUESTIONS: &[(&str, &str)] = &[
    ("when should I trim my rose plants?", "garden/roses.md"),
    (
        "how do I keep my wild yeast culture alive",
        "kitchen/bread.txt",
    ),
    (
        "function that retries failed network calls with increasing delays",
        "src/retry.rs",
    ),
    (
        "which planet has the moons Phobos and Deimos",
        "data/planets.jsonl",
    ),
    (
        "what time does the train to Edinburgh leave",
        "data/trains.csv",
    ),
    ("how often is the fog signal sounded", "docs/lighthouse.pdf"),
    ("mooring fee for visitors in the harbour", "web/tides.html"),
];

fn build(root: &Path, out: &Path, q: Quantization) -> kolm_recall::BuildReport {
    let options = BuildOptions {
        quantization: q,
        ..Default::default()
    };
    build_index_with(root, out, common::minilm(), &options, &NoProgress).unwrap()
}

fn recall(out: &Path) -> Recall {
    let m = kolm_recall::MiniLm::load(&common::minilm_zip()).unwrap();
    Recall::new(Index::open(out).unwrap(), Box::new(m)).unwrap()
}

#[test]
fn finds_the_right_document() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    corpus(&root);
    let out = dir.path().join("index.sqlite");
    let report = build(&root, &out, Quantization::F32);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.files.len(), 7);
    let kinds: Vec<(String, Kind)> = report
        .files
        .iter()
        .map(|f| (f.source.clone(), f.kind))
        .collect();
    for (source, kind) in [
        ("data/planets.jsonl", Kind::Jsonl),
        ("data/trains.csv", Kind::Csv),
        ("docs/lighthouse.pdf", Kind::Pdf),
        ("garden/roses.md", Kind::Markdown),
        ("kitchen/bread.txt", Kind::Text),
        ("src/retry.rs", Kind::Source),
        ("web/tides.html", Kind::Html),
    ] {
        assert!(
            kinds.contains(&(source.to_owned(), kind)),
            "{source} as {kind:?} in {kinds:?}"
        );
    }
    assert_eq!(report.chunks_total, report.chunks_embedded);

    let r = recall(&out);
    for mode in [Mode::Hybrid, Mode::Vector] {
        for (q, want) in QUESTIONS {
            let hits = r.query(q, 3, mode).unwrap();
            assert_eq!(hits[0].source, *want, "{mode:?}: {q:?} -> {hits:#?}");
            assert!(
                hits.windows(2).all(|w| w[0].score >= w[1].score),
                "best first"
            );
        }
    }
    // Records and pages are cited as such.
    let mars = r
        .query(
            "which planet has the moons Phobos and Deimos",
            1,
            Mode::Hybrid,
        )
        .unwrap();
    assert_eq!(mars[0].record, Some(1));
    assert!(mars[0].text.contains("Phobos"));
    let fog = r
        .query("how often is the fog signal sounded", 1, Mode::Hybrid)
        .unwrap();
    assert_eq!(fog[0].page, Some(2));
    let edinburgh = r
        .query(
            "what time does the train to Edinburgh leave",
            1,
            Mode::Hybrid,
        )
        .unwrap();
    assert!(
        edinburgh[0].text.contains("departure: 07:00"),
        "{}",
        edinburgh[0].text
    );
    // Offsets of a text file point at the chunk's bytes in the file.
    let bread = r.query("sourdough starter", 1, Mode::Bm25).unwrap();
    assert_eq!(bread[0].source, "kitchen/bread.txt");
    let file = std::fs::read_to_string(root.join("kitchen/bread.txt")).unwrap();
    assert_eq!(
        &file[bread[0].offset as usize..bread[0].end as usize],
        bread[0].text
    );
    // BM25 finds exact words; a query with FTS5 syntax is taken literally.
    let hits = r.query("Deimos", 2, Mode::Bm25).unwrap();
    assert_eq!(hits[0].source, "data/planets.jsonl");
    assert!(r.query("\"unbalanced AND (quote", 2, Mode::Bm25).is_ok());
    assert!(r
        .query("\"zebra* (quagga^ \"", 2, Mode::Bm25)
        .unwrap()
        .is_empty());
}

#[test]
fn quantized_indexes_agree_with_float32() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    corpus(&root);
    for q in [Quantization::Int8, Quantization::Binary] {
        let out = dir.path().join(format!("{}.sqlite", q.as_str()));
        build(&root, &out, q);
        let r = recall(&out);
        assert_eq!(r.index().meta().quantization, q);
        for (question, want) in QUESTIONS {
            let hits = r.query(question, 3, Mode::Hybrid).unwrap();
            assert_eq!(hits[0].source, *want, "{q:?}: {question:?}");
            // Rescored in float32: similarities are real cosines.
            let v = r.query(question, 1, Mode::Vector).unwrap();
            let s = v[0].similarity.unwrap();
            assert!(s > 0.2 && s <= 1.0001, "{q:?}: similarity {s}");
        }
    }
}

#[test]
fn rebuilds_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    corpus(&root);
    let out = dir.path().join("index.sqlite");
    let first = build(&root, &out, Quantization::F32);

    let again = build(&root, &out, Quantization::F32);
    assert_eq!(again.chunks_embedded, 0);
    assert!(again
        .files
        .iter()
        .all(|f| f.status == FileStatus::Unchanged));
    assert_eq!(again.chunks_total, first.chunks_total);

    write(
        &root,
        "kitchen/bread.txt",
        "Rye bread needs a longer proof than wheat bread.\n",
    );
    std::fs::remove_file(root.join("src/retry.rs")).unwrap();
    let third = build(&root, &out, Quantization::F32);
    let changed: Vec<&str> = third
        .files
        .iter()
        .filter(|f| f.status == FileStatus::Indexed)
        .map(|f| f.source.as_str())
        .collect();
    assert_eq!(changed, vec!["kitchen/bread.txt"]);
    assert_eq!(third.removed, vec!["src/retry.rs".to_owned()]);
    let r = recall(&out);
    let hits = r.query("rye proofing time", 1, Mode::Hybrid).unwrap();
    assert_eq!(hits[0].source, "kitchen/bread.txt");
    assert!(hits[0].text.contains("Rye"));
    assert!(r
        .query("backoff attempts", 5, Mode::Bm25)
        .unwrap()
        .is_empty());

    // Another quantization cannot reuse the index: it is rebuilt whole.
    let int8 = build(&root, &out, Quantization::Int8);
    assert!(int8.files.iter().all(|f| f.status == FileStatus::Indexed));
}

#[test]
fn refuses_to_overwrite_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    write(&root, "a.txt", "some text");
    let out = dir.path().join("precious.sqlite");
    std::fs::write(&out, "not an index").unwrap();
    let options = BuildOptions::default();
    let err = build_index_with(&root, &out, common::minilm(), &options, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "not an index");
}
