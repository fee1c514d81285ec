//! Ingest on real files: PDF and HTML extraction, every kind of bad input
//! (reported as skipped with its reason), and a file larger than the
//! streaming block.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use kolm_artifact::NoProgress;
use kolm_recall::chunk::Segment;
use kolm_recall::ingest::{self, CorpusFile, IngestOptions};
use kolm_recall::{build_index_with, BuildOptions, Kind, Skipped};

fn corpus_file(path: &Path) -> CorpusFile {
    CorpusFile {
        path: path.to_path_buf(),
        source: path.file_name().unwrap().to_string_lossy().into_owned(),
        size: std::fs::metadata(path).unwrap().len(),
    }
}

fn segments_of(path: &Path, options: &IngestOptions) -> (Kind, Vec<Segment>) {
    let file = corpus_file(path);
    let kind = ingest::sniff(&file).unwrap().kind;
    let mut out = Vec::new();
    let r = ingest::segments(&file, kind, options, &mut |s| {
        out.push(s);
        Ok(())
    });
    assert!(r.is_ok(), "{path:?}: {r:?}");
    (kind, out)
}

#[test]
fn pdf_text_by_page() {
    let (kind, pages) = segments_of(
        &common::fixture("lighthouse.pdf"),
        &IngestOptions::default(),
    );
    assert_eq!(kind, Kind::Pdf);
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].page, Some(1));
    assert_eq!(pages[1].page, Some(2));
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let p1 = norm(&pages[0].text);
    let p2 = norm(&pages[1].text);
    assert!(p1.contains("Lighthouse keeping manual"), "{p1}");
    assert!(p1.contains("trimmed every evening at dusk"), "{p1}");
    assert!(!p1.contains("foghorn"), "{p1}");
    assert!(
        p2.contains("sounds the foghorn twice every thirty seconds"),
        "{p2}"
    );
}

#[test]
fn html_visible_text_only() {
    let (kind, segs) = segments_of(&common::fixture("tides.html"), &IngestOptions::default());
    assert_eq!(kind, Kind::Html);
    assert_eq!(segs.len(), 1);
    let text = &segs[0].text;
    assert!(text.starts_with("Tide tables & harbour notes"), "{text}");
    assert!(text.contains("# Tide tables for Port Isaac"), "{text}");
    assert!(
        text.contains("comes about forty minutes after high water at Plymouth."),
        "{text}"
    );
    assert!(text.contains("## Mooring"), "{text}");
    assert!(
        text.contains("harbourmaster’s fee is £12 a night"),
        "{text}"
    );
    assert!(
        text.contains("Spring range:  6.8 m\nNeap range:    3.1 m"),
        "{text}"
    );
    for hidden in [
        "dataLayer",
        "font-family",
        "harbour CMS",
        "not text",
        "Enable JavaScript",
    ] {
        assert!(!text.contains(hidden), "{hidden:?} leaked into {text}");
    }
}

#[test]
fn text_larger_than_a_block_streams_with_exact_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.txt");
    let mut text = String::new();
    for i in 0..600 {
        text.push_str(&format!(
            "Paragraph {i} talks about résumé item number {i} at length.\n"
        ));
        if i % 7 == 0 {
            text.push('\n');
        }
    }
    std::fs::write(&p, &text).unwrap();
    let options = IngestOptions {
        block_bytes: 4096,
        ..Default::default()
    };
    let (kind, segs) = segments_of(&p, &options);
    assert_eq!(kind, Kind::Text);
    assert!(segs.len() >= 8, "{} segments", segs.len());
    // Segments tile the file exactly, none larger than the block.
    let mut at = 0u64;
    for s in &segs {
        assert_eq!(s.start, at);
        assert!(s.text.len() <= 4096);
        assert_eq!(
            &text[s.start as usize..s.start as usize + s.text.len()],
            s.text
        );
        at += s.text.len() as u64;
    }
    assert_eq!(at, text.len() as u64);

    // Built into an index, every chunk's offsets point at its bytes.
    let out = dir.path().join("i.sqlite");
    let build = BuildOptions {
        ingest: options,
        chunk: kolm_recall::ChunkOptions {
            max_tokens: 64,
            overlap: 8,
        },
        ..Default::default()
    };
    let report = build_index_with(&p, &out, common::minilm(), &build, &NoProgress).unwrap();
    assert!(report.chunks_total > 40, "{}", report.chunks_total);
    let r = kolm_recall::Recall::new(
        kolm_recall::Index::open(&out).unwrap(),
        Box::new(kolm_recall::MiniLm::load(&common::minilm_zip()).unwrap()),
    )
    .unwrap();
    let hits = r
        .query("Paragraph 433", 5, kolm_recall::Mode::Bm25)
        .unwrap();
    assert!(!hits.is_empty());
    for h in &hits {
        assert_eq!(&text[h.offset as usize..h.end as usize], h.text);
    }
    assert!(hits.iter().any(|h| h.text.contains("Paragraph 433 ")));
}

fn reason<'a>(skipped: &'a [Skipped], source: &str) -> &'a str {
    &skipped
        .iter()
        .find(|s| s.source == source)
        .unwrap_or_else(|| panic!("{source} is not reported as skipped: {skipped:#?}"))
        .reason
}

#[test]
fn bad_inputs_are_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(
        root.join("good.txt"),
        "The only readable document, about kestrels hovering.",
    )
    .unwrap();
    std::fs::write(root.join("empty.txt"), "").unwrap();
    std::fs::write(root.join("blank.md"), "\n\n   \n").unwrap();
    std::fs::write(
        root.join("program.txt"),
        b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0>\0",
    )
    .unwrap();
    std::fs::write(
        root.join("photo.md"),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0",
    )
    .unwrap();
    let mut wav = b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x44\xac\0\0\x88\x58\x01\0\x02\0\x10\0data\0\0\0\0".to_vec();
    wav.extend_from_slice(&[0u8; 16]);
    std::fs::write(root.join("sound.wav"), wav).unwrap();
    std::fs::write(
        root.join("clip.mp4"),
        b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom\0\0\0\x08free",
    )
    .unwrap();
    std::fs::write(root.join("broken.json"), "{\"a\": [1, 2").unwrap();
    std::fs::write(
        root.join("fake.pdf"),
        "%PDF-1.4\nthis is not really a PDF\n%%EOF\n",
    )
    .unwrap();
    // A folder symlink back to its parent, a file symlink loop, a dangling link.
    std::os::unix::fs::symlink(&root, root.join("sub/loop")).unwrap();
    std::os::unix::fs::symlink(root.join("b-link"), root.join("a-link")).unwrap();
    std::os::unix::fs::symlink(root.join("a-link"), root.join("b-link")).unwrap();
    std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
    // A name that is not UTF-8.
    let bad_name = std::ffi::OsStr::from_bytes(b"latin1-caf\xe9.txt");
    std::fs::write(root.join(bad_name), "text behind a bad name").unwrap();
    // A named pipe (opening it would block a naive reader).
    let fifo = root.join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());

    let out = dir.path().join("i.sqlite");
    let report = build_index_with(
        &root,
        &out,
        common::minilm(),
        &BuildOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let indexed: Vec<&str> = report.files.iter().map(|f| f.source.as_str()).collect();
    assert_eq!(indexed, vec!["good.txt"]);
    let s = &report.skipped;
    assert_eq!(reason(s, "empty.txt"), "empty file");
    assert_eq!(reason(s, "blank.md"), "no text in the file");
    assert!(reason(s, "program.txt").starts_with("binary file"));
    assert_eq!(
        reason(s, "photo.md"),
        "image file: no image embedder is configured"
    );
    assert_eq!(
        reason(s, "sound.wav"),
        "audio file: no audio embedder is configured"
    );
    assert_eq!(
        reason(s, "clip.mp4"),
        "video file: no video embedder is configured"
    );
    assert!(
        reason(s, "broken.json").starts_with("invalid JSON"),
        "{}",
        reason(s, "broken.json")
    );
    assert!(
        reason(s, "fake.pdf").contains("PDF"),
        "{}",
        reason(s, "fake.pdf")
    );
    assert!(
        reason(s, "sub/loop").starts_with("symlink loop"),
        "{}",
        reason(s, "sub/loop")
    );
    assert!(
        reason(s, "a-link").starts_with("symlink loop"),
        "{}",
        reason(s, "a-link")
    );
    assert!(reason(s, "b-link").starts_with("symlink loop"));
    assert!(
        reason(s, "dangling").starts_with("broken symlink"),
        "{}",
        reason(s, "dangling")
    );
    assert_eq!(
        reason(s, "latin1-caf\u{fffd}.txt"),
        "the name is not valid UTF-8"
    );
    assert!(reason(s, "pipe").starts_with("not a regular file"));
    assert_eq!(s.len(), 14, "{s:#?}");
    // The kinds are recorded with the reasons, and the index keeps the list.
    assert_eq!(
        s.iter().find(|x| x.source == "photo.md").unwrap().kind,
        Some(Kind::Image)
    );
    let index = kolm_recall::Index::open(&out).unwrap();
    assert_eq!(index.skipped().unwrap(), report.skipped);
    assert_eq!(index.stats().unwrap().files, 1);
}

#[test]
fn documents_over_the_limit_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("page.html");
    std::fs::write(
        &p,
        format!("<html><body><p>{}</p></body></html>", "word ".repeat(400)),
    )
    .unwrap();
    let file = corpus_file(&p);
    let options = IngestOptions {
        max_document_bytes: 1000,
        ..Default::default()
    };
    let r = ingest::segments(&file, Kind::Html, &options, &mut |_| Ok(()));
    match r {
        Err(ingest::ReadFailure::Skip(reason)) => {
            assert!(reason.contains("over the 1000 byte limit"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_corpus_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = build_index_with(
        &dir.path().join("nope"),
        &dir.path().join("i.sqlite"),
        common::minilm(),
        &BuildOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        matches!(err, kolm_recall::RecallError::NoCorpus(_)),
        "{err}"
    );
}
