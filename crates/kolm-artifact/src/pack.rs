//! The writer: streams components from files into a canonical archive,
//! hashing as it writes, appends the `pack` receipt, signs the manifest, and
//! moves the finished file into place atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Cursor};
use std::path::{Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::container::ZipWriter;
use crate::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::error::{ArtifactError, Result};
use crate::gguf::{self, GgufSummary};
use crate::keys::SecretKey;
use crate::manifest::{
    check_artifact_name, check_version, BaseModel, EntryRecord, KScore, Predicate, ReceiptsHead,
    Statement, Teacher, FORMAT_VERSION,
};
use crate::names::{self, Role};
use crate::progress::Progress;
use crate::receipts::{digest_ref, DigestRef, Receipt, ReceiptChain, ReceiptKey};

/// A file to pack under an allow-listed entry name.
#[derive(Clone, Debug)]
pub struct Component {
    pub name: String,
    pub source: PathBuf,
}

impl Component {
    pub fn new(name: &str, source: impl Into<PathBuf>) -> Self {
        Component {
            name: name.to_owned(),
            source: source.into(),
        }
    }
}

/// Everything an artifact is made of.
#[derive(Clone, Debug)]
pub struct PackSpec {
    pub name: String,
    pub version: String,
    pub created: OffsetDateTime,
    /// Use `created` for every time stamp, so the same inputs and keys give
    /// the same bytes (test vectors, reproducible builds).
    pub reproducible: bool,
    pub task: Option<String>,
    /// Must include `model/base.gguf`.
    pub components: Vec<Component>,
    pub k_score: Option<KScore>,
    pub teacher: Option<Teacher>,
    pub compile: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// Build steps so far; packing appends its own.
    pub receipts: ReceiptChain,
}

impl PackSpec {
    /// An uncompiled artifact: a base model and nothing else.
    pub fn new(name: &str, version: &str, base: impl Into<PathBuf>) -> Self {
        PackSpec {
            name: name.to_owned(),
            version: version.to_owned(),
            created: OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .expect("0 is a valid nanosecond"),
            reproducible: false,
            task: None,
            components: vec![Component::new(names::BASE, base)],
            k_score: None,
            teacher: None,
            compile: None,
            receipts: ReceiptChain::new(),
        }
    }
}

/// What `pack` wrote.
#[derive(Clone, Debug)]
pub struct PackReport {
    pub path: PathBuf,
    pub statement: Statement,
    pub size: u64,
}

/// Removes the temporary file unless the pack committed it.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Packs `spec` into `out`, signed by every key in `signers`.
pub fn pack(
    mut spec: PackSpec,
    signers: &[&SecretKey],
    receipt_key: &ReceiptKey,
    out: &Path,
    progress: &dyn Progress,
) -> Result<PackReport> {
    let invalid = |detail: String| ArtifactError::InvalidInput { detail };
    check_artifact_name(&spec.name).map_err(invalid)?;
    check_version(&spec.version).map_err(invalid)?;
    if signers.is_empty() {
        return Err(invalid("an artifact needs at least one signing key".into()));
    }
    let base = check_components(&mut spec.components)?;
    let started = stamp(&spec, OffsetDateTime::now_utc());

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(invalid(format!(
            "cannot write {}: the directory {} does not exist",
            out.display(),
            parent.display()
        )));
    }
    let file_name = out
        .file_name()
        .ok_or_else(|| invalid(format!("{} is not a file path", out.display())))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(ArtifactError::io(&tmp))?;
    let mut guard = TempGuard(Some(tmp.clone()));
    let mut zip = ZipWriter::new(BufWriter::with_capacity(crate::container::CHUNK, file));

    let mut entries = Vec::new();
    let mut inputs = Vec::new();
    for c in &spec.components {
        let mut source = File::open(&c.source).map_err(ArtifactError::io(&c.source))?;
        let size = source
            .metadata()
            .map_err(ArtifactError::io(&c.source))?
            .len();
        progress.start(&format!("packing {}", c.name), size);
        let written = zip
            .add_entry(&c.name, &mut source, progress)
            .map_err(ArtifactError::io(&tmp))?;
        progress.finish();
        let sha256 = hex::encode(written.sha256);
        inputs.push(DigestRef {
            name: c
                .source
                .file_name()
                .map_or_else(|| c.name.clone(), |n| n.to_string_lossy().into_owned()),
            digest: format!("sha256:{sha256}"),
        });
        entries.push(EntryRecord {
            name: c.name.clone(),
            role: written.role,
            size: written.size,
            media_type: written.role.media_type().to_owned(),
            sha256,
        });
    }

    // A struct, not `json!`: a map's key order depends on serde_json's
    // features, and these bytes are hashed into the receipt.
    #[derive(serde::Serialize)]
    struct PackParams<'a> {
        name: &'a str,
        task: Option<&'a str>,
        version: &'a str,
    }
    let params = serde_json::to_string(&PackParams {
        name: &spec.name,
        task: spec.task.as_deref(),
        version: &spec.version,
    })
    .expect("parameters serialize");
    spec.receipts.append(
        Receipt {
            step: "pack".into(),
            inputs,
            outputs: entries
                .iter()
                .map(|e| DigestRef {
                    name: e.name.clone(),
                    digest: format!("sha256:{}", e.sha256),
                })
                .collect(),
            params: digest_ref(params.as_bytes()),
            started,
            finished: stamp(&spec, OffsetDateTime::now_utc()),
            prev: None,
        },
        receipt_key,
    );
    let receipts_bytes = spec.receipts.to_jsonl();
    let written = zip
        .add_entry(names::RECEIPTS, &mut Cursor::new(&receipts_bytes), progress)
        .map_err(ArtifactError::io(&tmp))?;
    entries.push(EntryRecord {
        name: names::RECEIPTS.into(),
        role: Role::Receipts,
        size: written.size,
        media_type: Role::Receipts.media_type().into(),
        sha256: hex::encode(written.sha256),
    });

    let statement = Statement::new(Predicate {
        format_version: FORMAT_VERSION,
        name: spec.name.clone(),
        version: spec.version.clone(),
        created: spec
            .created
            .format(&Rfc3339)
            .expect("RFC 3339 formats any date"),
        task: spec.task.clone(),
        base: BaseModel {
            name: base.name,
            architecture: base.architecture,
            quantization: base.quantization,
            parameter_count: base.parameter_count,
        },
        entries,
        k_score: spec.k_score.clone(),
        teacher: spec.teacher.clone(),
        compile: spec.compile.clone(),
        receipts: ReceiptsHead {
            length: spec.receipts.len(),
            head: spec.receipts.head(),
        },
    });
    statement.validate()?;
    let payload = serde_json::to_vec(&statement).expect("statements serialize");
    let envelope = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &payload, signers);
    let mut envelope_bytes = serde_json::to_vec_pretty(&envelope).expect("envelopes serialize");
    envelope_bytes.push(b'\n');
    zip.add_entry(names::MANIFEST, &mut Cursor::new(&envelope_bytes), progress)
        .map_err(ArtifactError::io(&tmp))?;

    let writer = zip.finish().map_err(ArtifactError::io(&tmp))?;
    let file = writer.into_inner().map_err(|e| ArtifactError::Io {
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(ArtifactError::io(&tmp))?;
    let size = file.metadata().map_err(ArtifactError::io(&tmp))?.len();
    drop(file);
    fs::rename(&tmp, out).map_err(ArtifactError::io(out))?;
    guard.0 = None;
    if let Ok(dir) = File::open(&parent) {
        let _ = dir.sync_all();
    }
    Ok(PackReport {
        path: out.to_path_buf(),
        statement,
        size,
    })
}

/// Checks names, roles and the GGUF headers; sorts into canonical order.
/// Returns the base model's header summary.
fn check_components(components: &mut [Component]) -> Result<GgufSummary> {
    let invalid = |detail: String| ArtifactError::InvalidInput { detail };
    let mut seen = std::collections::HashSet::new();
    for c in components.iter() {
        let role = names::classify(&c.name).map_err(|reason| ArtifactError::BadName {
            name: c.name.clone(),
            reason,
        })?;
        if !role.is_signed() || role == Role::Receipts {
            return Err(invalid(format!(
                "`{}` is written by the packer itself and cannot be given as a component",
                c.name
            )));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(invalid(format!("`{}` is given twice", c.name)));
        }
    }
    components.sort_by_key(|c| {
        (
            names::classify(&c.name)
                .map(Role::canonical_rank)
                .unwrap_or(u8::MAX),
            c.name.clone(),
        )
    });
    let base_path = &components
        .iter()
        .find(|c| c.name == names::BASE)
        .ok_or_else(|| invalid("an artifact needs a base model (`model/base.gguf`)".into()))?
        .source;
    let base = read_gguf(base_path)?;
    if base.general_type.as_deref() == Some("adapter") {
        return Err(invalid(format!(
            "{} is a LoRA adapter, not a base model: pass it with --adapter",
            base_path.display()
        )));
    }
    if let Some(adapter) = components.iter().find(|c| c.name == names::ADAPTER) {
        let a = read_gguf(&adapter.source)?;
        if a.general_type.as_deref() != Some("adapter") {
            return Err(invalid(format!(
                "{} is not a LoRA adapter (its general.type is {:?})",
                adapter.source.display(),
                a.general_type
            )));
        }
        if a.architecture != base.architecture {
            return Err(invalid(format!(
                "the adapter is for `{}` but the base is `{}`",
                a.architecture, base.architecture
            )));
        }
    }
    Ok(base)
}

fn read_gguf(path: &Path) -> Result<GgufSummary> {
    gguf::read_summary_file(path).map_err(|source| ArtifactError::Gguf {
        path: path.to_path_buf(),
        source,
    })
}

fn stamp(spec: &PackSpec, now: OffsetDateTime) -> String {
    let t = if spec.reproducible { spec.created } else { now };
    t.format(&Rfc3339).expect("RFC 3339 formats any date")
}
