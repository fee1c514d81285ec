//! The recall verbs: `index build` (corpus → index file) and `recall query`
//! (an index file, or the index inside a verified artifact).

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use kolm_recall::{BuildOptions, ChunkOptions, Mode, Quantization, Recall};
use kolm_store::Home;

use crate::cli::{IndexBuildArgs, RecallQueryArgs};
use crate::output;
use crate::progress::Bar;

pub fn build(args: IndexBuildArgs, bar: &Bar) -> anyhow::Result<()> {
    let options = BuildOptions {
        embedder: args.embedder.clone(),
        chunk: ChunkOptions {
            max_tokens: args.chunk_tokens,
            overlap: args.overlap,
        },
        quantization: Quantization::parse(&args.quantization).expect("clap checked it"),
        ..Default::default()
    };
    let report = kolm_recall::build_index(&args.corpus, &args.out, &options, bar)
        .with_context(|| format!("cannot index {}", args.corpus.display()))?;
    if args.json {
        return output::json(&report);
    }
    let indexed = report
        .files
        .iter()
        .filter(|f| f.status == kolm_recall::FileStatus::Indexed)
        .count();
    outln!(
        "indexed {} into {}: {} files ({indexed} new or changed, {} unchanged), {} chunks ({} embedded) in {:.1}s",
        args.corpus.display(),
        args.out.display(),
        report.files.len(),
        report.files.len() - indexed,
        report.chunks_total,
        report.chunks_embedded,
        report.seconds
    );
    if !report.removed.is_empty() {
        outln!(
            "removed {} files gone from the corpus",
            report.removed.len()
        );
    }
    if !report.skipped.is_empty() {
        outln!("skipped {}:", report.skipped.len());
        for s in &report.skipped {
            outln!("  {}: {}", s.source, s.reason);
        }
    }
    Ok(())
}

fn is_sqlite(path: &Path) -> anyhow::Result<bool> {
    let mut head = [0u8; 16];
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let n = f.read(&mut head)?;
    Ok(n == 16 && &head == b"SQLite format 3\0")
}

pub fn query(home: &Home, args: RecallQueryArgs, bar: &Bar) -> anyhow::Result<()> {
    let mode = Mode::parse(&args.mode).expect("clap checked it");
    let recall = if is_sqlite(&args.target)? {
        let index = kolm_recall::Index::open(&args.target)?;
        let embedder = match &args.embedder {
            Some(e) => e.clone(),
            None => index
                .note("embedder_source")?
                .map(std::path::PathBuf::from)
                .context("the index does not say where its embedder is: pass --embedder")?,
        };
        let model = kolm_recall::MiniLm::load(&embedder)
            .with_context(|| format!("cannot load the embedder {}", embedder.display()))?;
        Recall::new(index, Box::new(model))?
    } else {
        let keyring = home.keyring();
        let policy = super::trust_policy(&keyring, &args.trust)?;
        let verified = kolm_artifact::verify(&args.target, &policy, bar)
            .with_context(|| format!("{} failed verification", args.target.display()))?;
        kolm_recall::artifact::open(&verified)
            .with_context(|| format!("cannot open the recall index of {}", args.target.display()))?
    };
    let hits = recall.query(&args.question, args.k, mode)?;
    if args.json {
        return output::json(&hits);
    }
    if hits.is_empty() {
        outln!("no match");
    }
    for (i, h) in hits.iter().enumerate() {
        outln!(
            "{}. {}  (score {:.4})",
            i + 1,
            kolm_recall::prompt::label(h),
            h.score
        );
        let text: String = h.text.chars().take(400).collect();
        for line in text.lines() {
            outln!("   {line}");
        }
        if h.text.chars().count() > 400 {
            outln!("   …");
        }
    }
    Ok(())
}
