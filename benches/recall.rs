//! Benchmark: recall (issue 6) — indexing throughput, query latency at 10k
//! and 100k chunks against a flat float32 scan, peak RSS, and retrieval
//! quality (recall@10) of hybrid vs BM25-only vs vector-only, exact and
//! quantized, on a set built from the system's man pages.
//!
//! Run: `cargo bench -p kolm-benches --bench recall` (release build of the
//! library; no binary needed). Environment: `KOLM_EMBEDDER` (default the
//! fixture zip), `KOLM_BENCH_PAGES` (default 2000), `KOLM_BENCH_QUERIES`
//! (default 300), `KOLM_BENCH_SIZES` (default `10000,100000` chunks),
//! `KOLM_BENCH_MAN` (default `/usr/share/man/man1`).
//!
//! The quality set ("man-NAME"): each man page in section 1 with a NAME line
//! `cmd \- description` and a DESCRIPTION section of at least 200 characters
//! becomes a document (its DESCRIPTION, roff markup stripped, first 2000
//! characters, without the NAME line); every fifth page's description is a
//! query whose one relevant document is its page. Pages whose description
//! repeats another's, and `.so` redirects, are left out. recall@10: the share
//! of queries whose page is among the sources of the top 10 chunks.
//!
//! Latency at N chunks: the real chunks and vectors of the quality corpus
//! are repeated to N, each vector perturbed by seeded Gaussian noise
//! (sigma 0.05 per dimension, renormalized), inserted without re-embedding.
//! Anchor: an exact top-10 by a flat scan of the same float32 vectors in
//! Rust. Query embedding time is reported on its own.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use kolm_artifact::NoProgress;
use kolm_benches::{mark, median, Table};
use kolm_recall::chunk::Chunk;
use kolm_recall::index::requantize;
use kolm_recall::{BuildOptions, Embedder, Index, IndexMeta, Kind, MiniLm, Mode, Quantization};
use serde_json::{json, Value};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

struct Page {
    name: String,
    query: String,
    text: String,
}

/// Strips roff escapes from a line of text.
fn deroff(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('f') => {
                // \fB, \fI, \fR, \fP, \f(CW, \f[...]
                match chars.next() {
                    Some('(') => {
                        chars.next();
                        chars.next();
                    }
                    Some('[') => {
                        for c in chars.by_ref() {
                            if c == ']' {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            Some('-') => out.push('-'),
            Some('e') | Some('\\') => out.push('\\'),
            Some('(') => {
                let a = chars.next();
                let b = chars.next();
                match (a, b) {
                    (Some('e'), Some('m')) | (Some('e'), Some('n')) => out.push('-'),
                    (Some('a'), Some('q')) => out.push('\''),
                    (Some('d'), Some('q')) | (Some('l'), Some('q')) | (Some('r'), Some('q')) => {
                        out.push('"')
                    }
                    _ => {}
                }
            }
            Some('*') => {
                if chars.next() == Some('(') {
                    chars.next();
                    chars.next();
                }
            }
            Some('"') => break, // comment
            Some(' ') => out.push(' '),
            Some(_) | None => {}
        }
    }
    out
}

fn parse_man(name: &str, roff: &str) -> Option<Page> {
    if roff.trim_start().starts_with(".so ") {
        return None;
    }
    let mut section = String::new();
    let mut name_line = String::new();
    let mut desc = String::new();
    for line in roff.lines() {
        if let Some(rest) = line
            .strip_prefix(".SH")
            .or_else(|| line.strip_prefix(".Sh"))
        {
            section = rest.trim().trim_matches('"').to_ascii_uppercase();
            continue;
        }
        let text = if line.starts_with('.') || line.starts_with('\'') {
            // Keep the text of font macros; drop every other request.
            let mut parts = line.splitn(2, ' ');
            let req = parts.next().unwrap_or("");
            match req {
                ".B" | ".I" | ".BR" | ".RB" | ".IR" | ".RI" | ".BI" | ".IB" | ".SM" => {
                    parts.next().unwrap_or("").replace('"', "")
                }
                _ => continue,
            }
        } else {
            line.to_owned()
        };
        let text = deroff(&text);
        match section.as_str() {
            "NAME" => {
                name_line.push_str(&text);
                name_line.push(' ');
            }
            "DESCRIPTION" if desc.len() < 2000 => {
                desc.push_str(&text);
                desc.push(if text.trim().is_empty() { '\n' } else { ' ' });
            }
            _ => {}
        }
    }
    let (_, query) = name_line.split_once(" - ")?;
    let query = query.split_whitespace().collect::<Vec<_>>().join(" ");
    if query.split_whitespace().count() < 3 || desc.trim().len() < 200 {
        return None;
    }
    let text: String = desc.chars().take(2000).collect();
    Some(Page {
        name: name.to_owned(),
        query,
        text,
    })
}

fn man_pages(dir: &Path, limit: usize) -> Result<Vec<Page>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    names.sort();
    let mut seen = std::collections::HashSet::new();
    let mut pages = Vec::new();
    for p in names {
        if pages.len() >= limit {
            break;
        }
        let Ok(f) = std::fs::File::open(&p) else {
            continue;
        };
        let mut roff = String::new();
        if flate2::read::GzDecoder::new(f)
            .read_to_string(&mut roff)
            .is_err()
        {
            continue;
        }
        let stem = p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".gz")
            .to_owned();
        if let Some(page) = parse_man(&stem, &roff) {
            if seen.insert(page.query.to_lowercase()) {
                pages.push(page);
            }
        }
    }
    Ok(pages)
}

/// Seeded xorshift + Box-Muller.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn gauss(&mut self) -> f32 {
        let u = self.next_f64().max(1e-12);
        let v = self.next_f64();
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

fn top10_flat(vectors: &[Vec<f32>], q: &[f32]) -> Vec<usize> {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(11);
    for (i, v) in vectors.iter().enumerate() {
        let s: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
        if best.len() < 10 || s > best[best.len() - 1].0 {
            let at = best.partition_point(|e| e.0 >= s);
            best.insert(at, (s, i));
            best.truncate(10);
        }
    }
    best.into_iter().map(|e| e.1).collect()
}

fn main() -> Result<()> {
    let embedder_path = std::env::var_os("KOLM_EMBEDDER")
        .map(PathBuf::from)
        .unwrap_or_else(|| kolm_fixtures::dir().join(kolm_fixtures::MINILM_ZIP));
    let pages_n = env_usize("KOLM_BENCH_PAGES", 2000);
    let queries_n = env_usize("KOLM_BENCH_QUERIES", 300);
    let sizes: Vec<usize> = std::env::var("KOLM_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let man_dir = PathBuf::from(
        std::env::var("KOLM_BENCH_MAN").unwrap_or_else(|_| "/usr/share/man/man1".into()),
    );
    let tmp = tempfile::tempdir()?;
    let mut report = serde_json::Map::new();

    eprintln!("recall: loading the embedder {}", embedder_path.display());
    let embedder = MiniLm::load(&embedder_path)?;
    eprintln!(
        "recall: reading up to {pages_n} man pages from {}",
        man_dir.display()
    );
    let pages = man_pages(&man_dir, pages_n)?;
    anyhow::ensure!(
        pages.len() >= 100,
        "only {} usable man pages in {}",
        pages.len(),
        man_dir.display()
    );
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus)?;
    for p in &pages {
        std::fs::write(corpus.join(format!("{}.txt", p.name)), &p.text)?;
    }
    let queries: Vec<&Page> = pages.iter().step_by(5).take(queries_n).collect();

    // 1. Indexing throughput (real embedding) and peak RSS.
    eprintln!("recall: indexing {} pages", pages.len());
    let f32_path = tmp.path().join("f32.sqlite");
    let rss_before = peak_rss_kib();
    let t = Instant::now();
    let built = kolm_recall::build_index_with(
        &corpus,
        &f32_path,
        &embedder,
        &BuildOptions::default(),
        &NoProgress,
    )?;
    let build_s = t.elapsed().as_secs_f64();
    let chunks_per_s = built.chunks_total as f64 / build_s;
    let rss_build = peak_rss_kib();
    // The anchor of indexing: the embedder alone on the same chunk texts.
    let exported = Index::open(&f32_path)?.export()?;
    let texts: Vec<String> = exported
        .iter()
        .flat_map(|f| f.4.iter().map(|c| c.text.clone()))
        .collect();
    let t = Instant::now();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for batch in refs.chunks(64) {
        embedder.embed(batch)?;
    }
    let embed_only_s = t.elapsed().as_secs_f64();
    let mut tb = Table::new([
        "indexing",
        "files",
        "chunks",
        "seconds",
        "chunks/s",
        "embed-only chunks/s",
        "index/embed-only",
        "peak RSS",
    ]);
    tb.row([
        "man-NAME corpus".to_owned(),
        built.files.len().to_string(),
        built.chunks_total.to_string(),
        format!("{build_s:.1}"),
        format!("{chunks_per_s:.1}"),
        format!("{:.1}", texts.len() as f64 / embed_only_s),
        format!("{:.2}", (texts.len() as f64 / embed_only_s) / chunks_per_s),
        format!("{} MiB", rss_build / 1024),
    ]);
    println!("{tb}");
    report.insert(
        "indexing".into(),
        json!({"files": built.files.len(), "chunks": built.chunks_total, "seconds": build_s,
               "chunks_per_s": chunks_per_s, "embed_only_chunks_per_s": texts.len() as f64 / embed_only_s,
               "peak_rss_kib_before": rss_before, "peak_rss_kib": rss_build}),
    );

    // 2. Quality: recall@10 by mode and quantization.
    eprintln!("recall: {} queries", queries.len());
    let qtexts: Vec<&str> = queries.iter().map(|p| p.query.as_str()).collect();
    let qvecs = embedder.embed(&qtexts)?;
    let mut quality = serde_json::Map::new();
    let mut tq = Table::new(["recall@10", "hybrid", "vector", "bm25", "MRR@10 hybrid"]);
    for q in [Quantization::F32, Quantization::Int8, Quantization::Binary] {
        let path = if q == Quantization::F32 {
            f32_path.clone()
        } else {
            let p = tmp.path().join(format!("{}.sqlite", q.as_str()));
            requantize(&f32_path, &p, q)?;
            p
        };
        let index = Index::open(&path)?;
        let mut row = vec![q.as_str().to_owned()];
        let mut entry = serde_json::Map::new();
        let mut mrr = 0.0;
        for mode in [Mode::Hybrid, Mode::Vector, Mode::Bm25] {
            let mut found = 0usize;
            for (page, v) in queries.iter().zip(&qvecs) {
                let hits = index.search(&page.query, v, 10, mode)?;
                let want = format!("{}.txt", page.name);
                if let Some(rank) = hits.iter().position(|h| h.source == want) {
                    found += 1;
                    if mode == Mode::Hybrid {
                        mrr += 1.0 / (rank as f64 + 1.0);
                    }
                }
            }
            let r = found as f64 / queries.len() as f64;
            row.push(format!("{r:.3}"));
            entry.insert(format!("{mode:?}").to_lowercase(), json!(r));
        }
        let mrr = mrr / queries.len() as f64;
        row.push(format!("{mrr:.3}"));
        entry.insert("mrr10_hybrid".into(), json!(mrr));
        tq.row(row);
        quality.insert(q.as_str().into(), Value::Object(entry));
    }
    println!("{tq}");
    let hy = quality["f32"]["hybrid"].as_f64().unwrap_or(0.0);
    let best_single = quality["f32"]["vector"]
        .as_f64()
        .unwrap_or(0.0)
        .max(quality["f32"]["bm25"].as_f64().unwrap_or(0.0));
    println!(
        "{} hybrid recall@10 >= max(vector, bm25) ({hy:.3} vs {best_single:.3})",
        mark(hy >= best_single)
    );
    report.insert("quality".into(), json!({"set": "man-NAME", "documents": pages.len(), "queries": queries.len(), "recall_at_10": quality}));

    // 3. Latency at N chunks.
    let base: Vec<(Chunk, Vec<f32>)> = exported
        .iter()
        .flat_map(|f| f.4.iter().cloned().zip(f.5.iter().cloned()))
        .collect();
    let meta = Index::open(&f32_path)?.meta().clone();
    let mut tl = Table::new([
        "chunks",
        "quant",
        "insert chunks/s",
        "search p50 ms",
        "search p99 ms",
        "flat p50 ms",
        "search/flat",
        "embed p50 ms",
        "file MiB",
        "peak RSS",
    ]);
    let mut lat = Vec::new();
    for &n in &sizes {
        eprintln!("recall: synthetic index of {n} chunks");
        let path = tmp.path().join(format!("syn-{n}.sqlite"));
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
        let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(n);
        let (mut index, _) = Index::create_or_open(
            &path,
            &IndexMeta {
                quantization: Quantization::F32,
                ..meta.clone()
            },
        )?;
        let t = Instant::now();
        let per_file = 100;
        for f in 0..n.div_ceil(per_file) {
            let id = index.begin_file(&format!("syn/{f:06}.txt"), Kind::Text, "0", 0)?;
            let mut cs = Vec::new();
            let mut vs = Vec::new();
            for i in f * per_file..((f + 1) * per_file).min(n) {
                let (c, v) = &base[i % base.len()];
                let mut p: Vec<f32> = v.iter().map(|x| x + 0.05 * rng.gauss()).collect();
                let norm = p.iter().map(|x| x * x).sum::<f32>().sqrt();
                p.iter_mut().for_each(|x| *x /= norm);
                cs.push(c.clone());
                vs.push(p);
            }
            index.add_chunks(id, 0, &cs, &vs)?;
            index.commit_file(id, cs.len() as u64)?;
            vectors.extend(vs);
        }
        index.optimize()?;
        let insert_rate = n as f64 / t.elapsed().as_secs_f64();
        drop(index);
        let mut quants = vec![(Quantization::F32, path.clone())];
        if n == *sizes.iter().max().unwrap_or(&n) {
            for q in [Quantization::Int8, Quantization::Binary] {
                let p = tmp.path().join(format!("syn-{n}-{}.sqlite", q.as_str()));
                requantize(&path, &p, q)?;
                quants.push((q, p));
            }
        }
        // Flat scan anchor.
        let mut flat = Vec::new();
        for v in &qvecs {
            let t = Instant::now();
            std::hint::black_box(top10_flat(&vectors, v));
            flat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut embed_ms = Vec::new();
        for q in qtexts.iter().take(100) {
            let t = Instant::now();
            embedder.embed(&[q])?;
            embed_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for (q, p) in quants {
            let index = Index::open(&p)?;
            for (page, v) in queries.iter().zip(&qvecs).take(20) {
                index.search(&page.query, v, 10, Mode::Hybrid)?; // warm
            }
            let mut hybrid = Vec::new();
            let mut vector = Vec::new();
            for (page, v) in queries.iter().zip(&qvecs) {
                let t = Instant::now();
                index.search(&page.query, v, 10, Mode::Hybrid)?;
                hybrid.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                index.search(&page.query, v, 10, Mode::Vector)?;
                vector.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let size = std::fs::metadata(&p)?.len();
            let fp50 = median(&flat);
            tl.row([
                n.to_string(),
                q.as_str().to_owned(),
                if q == Quantization::F32 {
                    format!("{insert_rate:.0}")
                } else {
                    "-".into()
                },
                format!("{:.2} (vector {:.2})", median(&hybrid), median(&vector)),
                format!(
                    "{:.2} (vector {:.2})",
                    percentile(&hybrid, 0.99),
                    percentile(&vector, 0.99)
                ),
                format!("{fp50:.2}"),
                format!("{:.2}", median(&vector) / fp50),
                format!("{:.2}", median(&embed_ms)),
                format!("{:.1}", size as f64 / 1048576.0),
                format!("{} MiB", peak_rss_kib() / 1024),
            ]);
            lat.push(
                json!({"chunks": n, "quantization": q.as_str(), "insert_chunks_per_s": insert_rate,
                "hybrid_ms": {"p50": median(&hybrid), "p99": percentile(&hybrid, 0.99)},
                "vector_ms": {"p50": median(&vector), "p99": percentile(&vector, 0.99)},
                "flat_scan_ms": {"p50": fp50, "p99": percentile(&flat, 0.99)},
                "query_embed_ms": {"p50": median(&embed_ms), "p99": percentile(&embed_ms, 0.99)},
                "file_bytes": size, "peak_rss_kib": peak_rss_kib()}),
            );
        }
    }
    println!("{tl}");
    report.insert("latency".into(), Value::Array(lat));
    report.insert("bench".into(), json!("recall"));
    println!("{}", Value::Object(report));
    Ok(())
}
