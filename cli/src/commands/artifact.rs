//! The verbs that work on an artifact file: `pack`, `inspect`, `verify`.

use anyhow::Context;
use kolm_artifact::{names, Component, PackSpec, Predicate, SignerStatus, Statement};
use kolm_compile::pipeline::eval::AllScores;
use kolm_store::{Home, Keyring};
use serde_json::json;

use crate::cli::{InspectArgs, PackArgs, VerifyArgs};
use crate::output;
use crate::progress::Bar;

pub fn pack(home: &Home, args: PackArgs, bar: &Bar) -> anyhow::Result<()> {
    let keyring = home.keyring();
    let (key, created) = keyring.signing_key_or_create_default(args.key.as_deref())?;
    if created {
        eprintln!(
            "created signing key `{}` in {} (share it with `kolmctl keys export`)",
            key.name,
            home.root().join("keys").display()
        );
    }
    if let Some(warning) = keyring.permission_warning(&key.name) {
        eprintln!("warning: {warning}");
    }
    let receipt_key = keyring.receipt_key()?;
    let name = match args.name {
        Some(n) => n,
        None => default_name(&args.base)?,
    };
    let mut spec = PackSpec::new(&name, &args.version, &args.base);
    spec.task = args.task;
    if let Some(adapter) = &args.adapter {
        spec.components
            .push(Component::new(names::ADAPTER, adapter));
    }
    // The embedder's files are staged in a temporary folder for the writer.
    let _staged = match (&args.index, &args.embedder) {
        (Some(index), Some(embedder)) => Some(add_recall(&mut spec, index, embedder)?),
        _ => None,
    };
    let report = kolm_artifact::pack(spec, &[&key], &receipt_key, &args.out, bar)
        .with_context(|| format!("cannot pack {}", args.out.display()))?;
    let keyid = key.public().keyid();
    if args.json {
        return output::json(&json!({
            "ok": true,
            "path": report.path,
            "size": report.size,
            "name": name,
            "version": args.version,
            "signer": { "name": key.name, "keyid": keyid },
            "manifest": report.statement,
        }));
    }
    outln!(
        "packed {name} {} into {} ({}), signed by `{}` ({})",
        args.version,
        report.path.display(),
        output::size(report.size),
        key.name,
        output::short(&keyid)
    );
    Ok(())
}

/// Adds a recall index and its embedder to `spec`, after checking that the
/// index was built with that embedder; records them in `compile.recall`.
fn add_recall(
    spec: &mut PackSpec,
    index: &std::path::Path,
    embedder: &std::path::Path,
) -> anyhow::Result<tempfile::TempDir> {
    let opened = kolm_recall::Index::open(index)
        .with_context(|| format!("{} is not a recall index", index.display()))?;
    let files = kolm_recall::EmbedderFiles::load(embedder)
        .with_context(|| format!("cannot read the embedder {}", embedder.display()))?;
    let model = kolm_recall::MiniLm::from_files(&files)
        .with_context(|| format!("cannot load the embedder {}", embedder.display()))?;
    let meta = opened.meta();
    use kolm_recall::Embedder as _;
    if meta.embedder != model.id() || meta.dimension != model.dimension() {
        anyhow::bail!(
            "{} was built with `{}` ({} dimensions), not with {} (`{}`, {} dimensions)",
            index.display(),
            meta.embedder,
            meta.dimension,
            embedder.display(),
            model.id(),
            model.dimension()
        );
    }
    let stats = opened.stats()?;
    let staged = tempfile::tempdir().context("cannot create a temporary folder")?;
    for path in files.write_to(staged.path())? {
        let name = path
            .file_name()
            .expect("written files have names")
            .to_string_lossy()
            .into_owned();
        spec.components.push(Component::new(
            &format!("{}{name}", names::EMBEDDER_DIR),
            path,
        ));
    }
    spec.components
        .push(Component::new(names::RECALL_INDEX, index));
    let recall = json!({
        "embedder": meta.embedder,
        "dimension": meta.dimension,
        "quantization": meta.quantization,
        "chunk": meta.chunk,
        "files": stats.files,
        "chunks": stats.chunks,
        "skipped": opened.skipped()?,
    });
    spec.compile
        .get_or_insert_with(Default::default)
        .insert("recall".to_owned(), recall);
    Ok(staged)
}

/// A store-safe name from the base file's stem: `SmolLM2-135M.Q4_1.gguf`
/// becomes `smollm2-135m.q4_1`.
fn default_name(base: &std::path::Path) -> anyhow::Result<String> {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned();
    name.truncate(64);
    if name.is_empty() {
        anyhow::bail!("cannot derive a name from {}: pass --name", base.display());
    }
    Ok(name)
}

pub fn inspect(home: &Home, args: InspectArgs) -> anyhow::Result<()> {
    let keyring = home.keyring();
    let policy = keyring.trust_policy(true)?;
    let opened = kolm_artifact::open(&args.artifact, &policy)
        .with_context(|| format!("cannot read {}", args.artifact.display()))?;
    let statement = opened.statement();
    if args.json {
        return output::json(&json!({
            "path": args.artifact,
            "signature": signer_json(opened.signers(), &keyring),
            "contents_verified": false,
            "accuracy": evaluation_json(&statement.predicate),
            "manifest": statement,
        }));
    }
    print_manifest(statement, opened.signers(), &keyring);
    outln!();
    outln!("structure and signature checked; contents not hashed (run `kolmctl verify` for that)");
    Ok(())
}

pub fn verify(home: &Home, args: VerifyArgs, bar: &Bar) -> anyhow::Result<()> {
    let keyring = home.keyring();
    let policy = super::trust_policy(&keyring, &args.trust)?;
    let verified = kolm_artifact::verify(&args.artifact, &policy, bar)
        .with_context(|| format!("{} failed verification", args.artifact.display()))?;
    let statement = verified.statement();
    let p = &statement.predicate;
    let tagged_here = keyring
        .receipt_key()
        .map(|k| {
            verified
                .receipts()
                .check_tags(&k)
                .into_iter()
                .filter(|t| *t)
                .count()
        })
        .unwrap_or(0);
    let total: u64 = verified.entries().iter().map(|e| e.record.size).sum();
    if args.json {
        return output::json(&json!({
            "ok": true,
            "path": args.artifact,
            "name": p.name,
            "version": p.version,
            "signature": signer_json(verified.signers(), &keyring),
            "entries": p.entries,
            "bytes_verified": total,
            "receipts": {
                "length": p.receipts.length,
                "head": p.receipts.head,
                "written_by_this_machine": tagged_here,
            },
            "attestations": verified.attestations(),
        }));
    }
    let how = match verified.signers() {
        SignerStatus::Trusted(_) => "OK",
        SignerStatus::Unchecked(_) => "OK (integrity only)",
    };
    outln!(
        "{how}: {} {}: {} entries, {} verified",
        p.name,
        p.version,
        verified.entries().len(),
        output::size(total)
    );
    outln!("  signature  {}", signer_text(verified.signers(), &keyring));
    outln!(
        "  receipts   {} in an intact chain, {} written by this machine",
        p.receipts.length,
        tagged_here
    );
    Ok(())
}

/// How a manifest's accuracy was judged.
#[derive(Debug)]
pub enum Evaluation {
    /// Packed, not compiled: no accuracy.
    NotCompiled,
    /// Compiled before verdicts checked the reference answer: its pass
    /// rates counted answers of the right shape with wrong values.
    ShapeOnly,
    /// Judged against the references: the scores of the eval pack.
    Judged(Box<AllScores>),
}

/// The evaluation a manifest records (`compile.evaluation`).
pub fn evaluation(p: &Predicate) -> Evaluation {
    if p.k_score.is_none() {
        return Evaluation::NotCompiled;
    }
    let scores = p
        .compile
        .as_ref()
        .and_then(|c| c.get("evaluation"))
        .and_then(|e| e.get("scores"))
        .and_then(|s| serde_json::from_value::<AllScores>(s.clone()).ok());
    match scores {
        Some(s) => Evaluation::Judged(Box::new(s)),
        None => Evaluation::ShapeOnly,
    }
}

const SHAPE_ONLY: &str = "judged by shape only: this artifact was compiled before verdicts checked the reference answer, so its pass rates and K counted answers of the right shape with wrong values; recompile it to re-judge";

fn evaluation_json(p: &Predicate) -> serde_json::Value {
    match evaluation(p) {
        Evaluation::NotCompiled => serde_json::Value::Null,
        Evaluation::ShapeOnly => json!({"judged": "shape", "note": SHAPE_ONLY}),
        Evaluation::Judged(s) => json!({
            "judged": "reference",
            "student": s.student.to_json(),
            "base": s.base.to_json(),
            "teacher": s.teacher.to_json(),
        }),
    }
}

/// The human-readable manifest, shared by `inspect` and `show`.
pub fn print_manifest(statement: &Statement, signers: &SignerStatus, keyring: &Keyring) {
    let p = &statement.predicate;
    outln!("{} {}", p.name, p.version);
    let base = &p.base;
    let k_score = p.k_score.as_ref().map_or_else(
        || "- (not compiled)".to_owned(),
        |k| {
            format!(
                "{:.3} (accuracy {:.2}, size {:.2}, latency {:.2}, cost {:.2}, coverage {:.2})",
                k.value, k.accuracy, k.size, k.latency, k.cost, k.coverage
            )
        },
    );
    let total: u64 = p.entries.iter().map(|e| e.size).sum();
    output::fields(&[
        ("created", p.created.clone()),
        ("task", p.task.clone().unwrap_or_else(|| "-".into())),
        (
            "base",
            format!(
                "{} ({}, {}, {} parameters)",
                base.name.as_deref().unwrap_or("unnamed"),
                base.architecture,
                base.quantization,
                output::params(base.parameter_count)
            ),
        ),
        ("k-score", k_score),
        (
            "teacher",
            p.teacher
                .as_ref()
                .map_or_else(|| "-".into(), |t| format!("{}:{}", t.provider, t.model)),
        ),
        (
            "receipts",
            match &p.receipts.head {
                Some(h) => format!("{} (head {})", p.receipts.length, output::short(h)),
                None => "none".into(),
            },
        ),
        ("signature", signer_text(signers, keyring)),
        ("size", output::size(total)),
    ]);
    match evaluation(p) {
        Evaluation::NotCompiled => {}
        Evaluation::ShapeOnly => outln!("accuracy: {SHAPE_ONLY}"),
        Evaluation::Judged(s) => super::scores::print_scores(&s),
    }
    outln!();
    let rows: Vec<Vec<String>> = p
        .entries
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                serde_json::to_value(e.role)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                output::size(e.size),
                output::short(&e.sha256).to_owned(),
            ]
        })
        .collect();
    output::table(&["ENTRY", "ROLE", "SIZE", "SHA256"], &rows);
}

fn key_label(keyid: &str, keyring: &Keyring) -> String {
    let name = keyring
        .list()
        .ok()
        .and_then(|keys| keys.into_iter().find(|k| k.keyid == keyid).map(|k| k.name));
    match name {
        Some(n) => format!("`{n}` ({})", output::short(keyid)),
        None => output::short(keyid).to_owned(),
    }
}

fn signer_text(signers: &SignerStatus, keyring: &Keyring) -> String {
    match signers {
        SignerStatus::Trusted(ids) => {
            let labels: Vec<String> = ids.iter().map(|id| key_label(id, keyring)).collect();
            format!("trusted, signed by {}", labels.join(", "))
        }
        SignerStatus::Unchecked(ids) => {
            let labels: Vec<String> = ids.iter().map(|id| output::short(id).to_owned()).collect();
            format!(
                "NOT CHECKED: signer {} is not trusted (`kolmctl keys trust FILE` to trust it)",
                labels.join(", ")
            )
        }
    }
}

fn signer_json(signers: &SignerStatus, keyring: &Keyring) -> serde_json::Value {
    let names = |ids: &[String]| -> Vec<serde_json::Value> {
        ids.iter()
            .map(|id| {
                let name = keyring
                    .list()
                    .ok()
                    .and_then(|keys| keys.into_iter().find(|k| &k.keyid == id).map(|k| k.name));
                json!({ "keyid": id, "name": name })
            })
            .collect()
    };
    match signers {
        SignerStatus::Trusted(ids) => {
            json!({ "trusted": true, "checked": true, "signers": names(ids) })
        }
        SignerStatus::Unchecked(ids) => {
            json!({ "trusted": false, "checked": false, "signers": names(ids) })
        }
    }
}
