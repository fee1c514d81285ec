//! Ingest: walking a corpus (a folder or one file) and turning each file
//! into text segments by its kind. Files that cannot be read as text —
//! binary, empty, unreadable, media without an embedder for their modality,
//! symlink loops, names that are not UTF-8 — are reported as skipped with the
//! reason, never dropped silently. Text is streamed in blocks, so a huge file
//! needs bounded memory.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chunk::Segment;
use crate::embed::Modality;
use crate::error::{RecallError, Result};
use crate::extract;
use crate::kind::{self, Kind};

/// Limits of ingestion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestOptions {
    /// Largest HTML, PDF or single JSON document read whole (they cannot be
    /// streamed); larger ones are skipped with the reason.
    pub max_document_bytes: u64,
    /// Block size in which text, JSONL and CSV are streamed.
    pub block_bytes: usize,
    /// Media modalities an embedder is configured for; media of other
    /// modalities are skipped with the reason.
    pub modalities: Vec<Modality>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_document_bytes: 64 << 20,
            block_bytes: 1 << 20,
            modalities: Vec::new(),
        }
    }
}

/// A regular file of the corpus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorpusFile {
    pub path: PathBuf,
    /// The path relative to the corpus (with `/`), as cited.
    pub source: String,
    pub size: u64,
}

/// A file that was not indexed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    pub reason: String,
}

/// The files of a corpus and those skipped while walking it.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    pub files: Vec<CorpusFile>,
    pub skipped: Vec<Skipped>,
}

/// Walks `corpus` (a folder, recursively, in name order, following
/// symlinks once; or a single file).
pub fn walk(corpus: &Path) -> Result<Walk> {
    let meta =
        std::fs::metadata(corpus).map_err(|_| RecallError::NoCorpus(corpus.to_path_buf()))?;
    let mut walk = Walk::default();
    if meta.is_file() {
        let source = corpus
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| corpus.display().to_string());
        walk.files.push(CorpusFile {
            path: corpus.to_path_buf(),
            source,
            size: meta.len(),
        });
        return Ok(walk);
    }
    if !meta.is_dir() {
        return Err(RecallError::NoCorpus(corpus.to_path_buf()));
    }
    let mut visited = HashSet::new();
    let root = std::fs::canonicalize(corpus).map_err(RecallError::io(corpus))?;
    visited.insert(root);
    walk_dir(corpus, "", &mut visited, &mut walk)?;
    Ok(walk)
}

fn walk_dir(
    dir: &Path,
    prefix: &str,
    visited: &mut HashSet<PathBuf>,
    walk: &mut Walk,
) -> Result<()> {
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).collect(),
        Err(e) => {
            walk.skipped.push(Skipped {
                source: display_prefix(prefix),
                kind: None,
                reason: format!("cannot read the folder: {e}"),
            });
            return Ok(());
        }
    };
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            walk.skipped.push(Skipped {
                source: format!("{prefix}{}", name.to_string_lossy()),
                kind: None,
                reason: "the name is not valid UTF-8".into(),
            });
            continue;
        };
        let source = format!("{prefix}{name}");
        if matches!(name, ".git" | ".hg" | ".svn") {
            walk.skipped.push(Skipped {
                source,
                kind: None,
                reason: "version-control folder".into(),
            });
            continue;
        }
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                let reason = if e.raw_os_error() == Some(40) {
                    "symlink loop (too many levels of symbolic links)".to_owned()
                } else if is_link {
                    format!("broken symlink: {e}")
                } else {
                    format!("cannot read: {e}")
                };
                walk.skipped.push(Skipped {
                    source,
                    kind: None,
                    reason,
                });
                continue;
            }
        };
        if meta.is_dir() {
            let real = match std::fs::canonicalize(&path) {
                Ok(r) => r,
                Err(e) => {
                    walk.skipped.push(Skipped {
                        source,
                        kind: None,
                        reason: format!("cannot resolve the folder: {e}"),
                    });
                    continue;
                }
            };
            if !visited.insert(real.clone()) {
                walk.skipped.push(Skipped {
                    source,
                    kind: None,
                    reason: format!(
                        "symlink loop: leads back to {} which is already indexed",
                        real.display()
                    ),
                });
                continue;
            }
            walk_dir(&path, &format!("{source}/"), visited, walk)?;
        } else if meta.is_file() {
            walk.files.push(CorpusFile {
                path,
                source,
                size: meta.len(),
            });
        } else {
            walk.skipped.push(Skipped {
                source,
                kind: None,
                reason: "not a regular file (device, socket or pipe)".into(),
            });
        }
    }
    Ok(())
}

fn display_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        ".".into()
    } else {
        prefix.trim_end_matches('/').to_owned()
    }
}

/// A file's kind and content digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sniffed {
    pub kind: Kind,
    /// SHA-256 of the whole file, lower-case hex.
    pub digest: String,
    pub size: u64,
}

/// Reads `file` once: its kind from the first bytes, its digest from all
/// of them (streamed).
pub fn sniff(file: &CorpusFile) -> std::io::Result<Sniffed> {
    let mut f = File::open(&file.path)?;
    let mut head = vec![0u8; kind::SNIFF_LEN];
    let mut filled = 0;
    while filled < head.len() {
        let n = f.read(&mut head[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    let mut sha = Sha256::new();
    sha.update(&head);
    let mut size = filled as u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        size += n as u64;
    }
    let ext = file
        .path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    Ok(Sniffed {
        kind: kind::detect(&head, size, ext.as_deref()),
        digest: hex::encode(sha.finalize()),
        size,
    })
}

/// Why a file's text could not be produced.
#[derive(Debug)]
pub enum ReadFailure {
    /// The file is skipped with this reason.
    Skip(String),
    /// The sink failed (embedding, the index): the build stops.
    Fatal(RecallError),
}

impl From<RecallError> for ReadFailure {
    fn from(e: RecallError) -> Self {
        ReadFailure::Fatal(e)
    }
}

/// Why a file of `kind` is not read as text, if it is not.
pub fn skip_reason(kind: Kind, options: &IngestOptions) -> Option<String> {
    match kind {
        Kind::Empty => Some("empty file".into()),
        Kind::Binary => Some("binary file (not text, PDF or a known media type)".into()),
        Kind::Image | Kind::Audio | Kind::Video => {
            let m = kind.media_modality().expect("media kinds have a modality");
            Some(if options.modalities.contains(&m) {
                format!(
                    "{} embedding is configured but not yet supported by this build",
                    kind.as_str()
                )
            } else {
                format!(
                    "{} file: no {} embedder is configured",
                    kind.as_str(),
                    kind.as_str()
                )
            })
        }
        _ => None,
    }
}

/// Produces the text segments of `file` (of kind `kind`) into `sink`.
pub fn segments(
    file: &CorpusFile,
    kind: Kind,
    options: &IngestOptions,
    sink: &mut dyn FnMut(Segment) -> Result<()>,
) -> std::result::Result<(), ReadFailure> {
    if let Some(reason) = skip_reason(kind, options) {
        return Err(ReadFailure::Skip(reason));
    }
    let io = |e: std::io::Error| ReadFailure::Skip(format!("cannot read: {e}"));
    let whole = |what: &str| -> std::result::Result<Vec<u8>, ReadFailure> {
        if file.size > options.max_document_bytes {
            return Err(ReadFailure::Skip(format!(
                "{what} of {} bytes is over the {} byte limit for documents read whole",
                file.size, options.max_document_bytes
            )));
        }
        std::fs::read(&file.path).map_err(io)
    };
    match kind {
        Kind::Text | Kind::Markdown | Kind::Source => stream_text(file, options.block_bytes, sink)
            .map_err(|e| match e {
                StreamError::Io(e) => io(e),
                StreamError::Sink(e) => ReadFailure::Fatal(e),
            }),
        Kind::Html => {
            let bytes = whole("HTML")?;
            let text = extract::html_to_text(&String::from_utf8_lossy(&bytes));
            if text.trim().is_empty() {
                return Err(ReadFailure::Skip("HTML without visible text".into()));
            }
            sink(Segment {
                text,
                start: 0,
                page: None,
                record: None,
            })?;
            Ok(())
        }
        Kind::Pdf => {
            let bytes = whole("PDF")?;
            let pages = extract::pdf_pages(&bytes).map_err(ReadFailure::Skip)?;
            if pages.iter().all(|p| p.trim().is_empty()) {
                return Err(ReadFailure::Skip(
                    "PDF without extractable text (scanned images need OCR)".into(),
                ));
            }
            for (i, text) in pages.into_iter().enumerate() {
                sink(Segment {
                    text,
                    start: 0,
                    page: Some(i as u32 + 1),
                    record: None,
                })?;
            }
            Ok(())
        }
        Kind::Json => {
            let bytes = whole("JSON")?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ReadFailure::Skip(format!("invalid JSON: {e}")))?;
            match value {
                serde_json::Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let text = extract::flatten_json(item);
                        sink(Segment {
                            text,
                            start: 0,
                            page: None,
                            record: Some(i as u64),
                        })?;
                    }
                }
                other => {
                    let text = extract::flatten_json(&other);
                    sink(Segment {
                        text,
                        start: 0,
                        page: None,
                        record: Some(0),
                    })?;
                }
            }
            Ok(())
        }
        Kind::Jsonl => {
            let f = File::open(&file.path).map_err(io)?;
            let mut reader = BufReader::with_capacity(1 << 16, f);
            let mut offset = 0u64;
            let mut record = 0u64;
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = (&mut reader)
                    .take(options.max_document_bytes)
                    .read_until(b'\n', &mut line)
                    .map_err(io)?;
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&line);
                if !text.trim().is_empty() {
                    let flat = match serde_json::from_str::<serde_json::Value>(&text) {
                        Ok(v) => extract::flatten_json(&v),
                        Err(_) => text.trim().to_owned(),
                    };
                    sink(Segment {
                        text: flat,
                        start: offset,
                        page: None,
                        record: Some(record),
                    })?;
                    record += 1;
                }
                offset += n as u64;
            }
            Ok(())
        }
        Kind::Csv => {
            let f = File::open(&file.path).map_err(io)?;
            let mut reader = BufReader::with_capacity(1 << 16, f);
            let mut parser = extract::CsvRecords::default();
            let mut header: Option<Vec<String>> = None;
            let mut offset = 0u64;
            let mut record_start = 0u64;
            let mut record = 0u64;
            let mut line = Vec::new();
            let mut emit = |row: Vec<String>,
                            start: u64,
                            header: &mut Option<Vec<String>>,
                            record: &mut u64|
             -> Result<()> {
                match header {
                    None => *header = Some(row),
                    Some(h) => {
                        let text = extract::csv_record(h, &row);
                        if !text.is_empty() {
                            sink(Segment {
                                text,
                                start,
                                page: None,
                                record: Some(*record),
                            })?;
                        }
                        *record += 1;
                    }
                }
                Ok(())
            };
            loop {
                line.clear();
                let n = (&mut reader)
                    .take(options.max_document_bytes)
                    .read_until(b'\n', &mut line)
                    .map_err(io)?;
                if n == 0 {
                    break;
                }
                if let Some(row) = parser.push_line(&String::from_utf8_lossy(&line)) {
                    emit(row, record_start, &mut header, &mut record)?;
                    record_start = offset + n as u64;
                }
                offset += n as u64;
            }
            if let Some(row) = parser.finish() {
                emit(row, record_start, &mut header, &mut record)?;
            }
            Ok(())
        }
        Kind::Image | Kind::Audio | Kind::Video | Kind::Binary | Kind::Empty => {
            unreachable!("skip_reason covers these kinds")
        }
    }
}

enum StreamError {
    Io(std::io::Error),
    Sink(RecallError),
}

/// Streams a text file in blocks of about `block` bytes, each cut after a
/// paragraph break (else a line break, else a character boundary) so no
/// block boundary splits a word when it can be helped.
fn stream_text(
    file: &CorpusFile,
    block: usize,
    sink: &mut dyn FnMut(Segment) -> Result<()>,
) -> std::result::Result<(), StreamError> {
    let mut f = File::open(&file.path).map_err(StreamError::Io)?;
    let mut buf: Vec<u8> = Vec::with_capacity(block * 2);
    let mut offset = 0u64;
    let mut eof = false;
    while !eof || !buf.is_empty() {
        while !eof && buf.len() < block {
            let old = buf.len();
            buf.resize(old + block, 0);
            let n = f.read(&mut buf[old..]).map_err(StreamError::Io)?;
            buf.truncate(old + n);
            if n == 0 {
                eof = true;
            }
        }
        let cut = if eof && buf.len() <= block {
            buf.len()
        } else {
            cut_point(&buf[..block.min(buf.len())])
        };
        let piece = &buf[..cut];
        let text = String::from_utf8_lossy(piece).into_owned();
        sink(Segment {
            text,
            start: offset,
            page: None,
            record: None,
        })
        .map_err(StreamError::Sink)?;
        offset += cut as u64;
        buf.drain(..cut);
    }
    Ok(())
}

fn cut_point(window: &[u8]) -> usize {
    let half = window.len() / 2;
    if let Some(i) = window[half..].windows(2).rposition(|w| w == b"\n\n") {
        return half + i + 2;
    }
    if let Some(i) = window[half..].iter().rposition(|&b| b == b'\n') {
        return half + i + 1;
    }
    // A character boundary: not inside a UTF-8 sequence.
    let mut i = window.len();
    while i > 1 && (window[i - 1] & 0xC0) == 0x80 {
        i -= 1;
    }
    if i > 0 && window[i - 1] >= 0xC0 {
        i -= 1;
    }
    i.max(1)
}
