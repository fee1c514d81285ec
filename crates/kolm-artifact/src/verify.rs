//! The reader. [`open`] checks the container, verifies the manifest's
//! signature before parsing its payload, and cross-checks the signed entry
//! list against the archive; [`AuthenticatedArtifact::verify`] then hashes
//! every signed entry. Only that produces a [`VerifiedArtifact`].

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::container::{read_layout, ZipEntry, ZipLayout, CHUNK};
use crate::dsse::{Envelope, SignerStatus, IN_TOTO_PAYLOAD_TYPE};
use crate::error::{ArtifactError, Result};
use crate::manifest::{EntryRecord, Statement};
use crate::names::{self, Role};
use crate::progress::Progress;
use crate::receipts::ReceiptChain;

/// Which signers to accept.
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    /// Public keys whose signatures are accepted.
    pub keys: Vec<VerifyingKey>,
    /// Accept an artifact that no trusted key signed, checking integrity only.
    pub allow_untrusted: bool,
}

/// An archive whose structure and signature have been checked and whose
/// manifest agrees with its entries; entry data is not yet hashed.
#[derive(Debug)]
pub struct AuthenticatedArtifact {
    path: PathBuf,
    file: File,
    layout: ZipLayout,
    envelope_bytes: Vec<u8>,
    statement: Statement,
    signers: SignerStatus,
}

/// An artifact every signed byte of which matched its manifest.
#[derive(Debug)]
pub struct VerifiedArtifact {
    path: PathBuf,
    envelope_bytes: Vec<u8>,
    statement: Statement,
    signers: SignerStatus,
    entries: Vec<VerifiedEntry>,
    receipts: ReceiptChain,
    attestations: Vec<String>,
}

/// A signed entry and where its data sits in the archive.
#[derive(Clone, Debug)]
pub struct VerifiedEntry {
    pub record: EntryRecord,
    /// Offset of the entry's first byte in the archive (4096-aligned).
    pub data_offset: u64,
}

/// Opens `path`, checks its structure and signature; see the module docs.
pub fn open(path: &Path, trust: &TrustPolicy) -> Result<AuthenticatedArtifact> {
    let file = File::open(path).map_err(ArtifactError::io(path))?;
    let layout = read_layout(&file).map_err(|e| with_path(e, path))?;
    let manifest = layout
        .entry(names::MANIFEST)
        .ok_or(ArtifactError::MissingManifest)?;
    let mut envelope_bytes = vec![0u8; manifest.size as usize];
    file.read_exact_at(&mut envelope_bytes, manifest.data_offset)
        .map_err(ArtifactError::io(path))?;

    let envelope: Envelope =
        serde_json::from_slice(&envelope_bytes).map_err(|e| ArtifactError::InvalidEnvelope {
            detail: e.to_string(),
        })?;
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(ArtifactError::WrongPayloadType {
            found: envelope.payload_type,
            expected: IN_TOTO_PAYLOAD_TYPE,
        });
    }
    let payload = envelope.payload_bytes()?;
    // The signature is checked over the raw bytes before they are parsed.
    let signers = envelope.check_signatures(&payload, &trust.keys, trust.allow_untrusted)?;
    let statement = Statement::parse(&payload)?;
    cross_check(&statement, &layout)?;
    Ok(AuthenticatedArtifact {
        path: path.to_path_buf(),
        file,
        layout,
        envelope_bytes,
        statement,
        signers,
    })
}

/// Opens and fully verifies `path`.
pub fn verify(
    path: &Path,
    trust: &TrustPolicy,
    progress: &dyn Progress,
) -> Result<VerifiedArtifact> {
    open(path, trust)?.verify(progress)
}

/// Every signed entry in the archive is listed, every listed entry is there
/// with the listed size.
fn cross_check(statement: &Statement, layout: &ZipLayout) -> Result<()> {
    for e in &layout.entries {
        if e.role.is_signed() && statement.entry(&e.name).is_none() {
            return Err(ArtifactError::UnlistedEntry {
                name: e.name.clone(),
            });
        }
    }
    for r in &statement.predicate.entries {
        let e = layout
            .entry(&r.name)
            .ok_or_else(|| ArtifactError::MissingEntry {
                name: r.name.clone(),
            })?;
        if e.size != r.size {
            return Err(ArtifactError::SizeMismatch {
                name: r.name.clone(),
                manifest: r.size,
                archive: e.size,
            });
        }
    }
    Ok(())
}

impl AuthenticatedArtifact {
    /// The signed statement.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// How the signatures were judged.
    pub fn signers(&self) -> &SignerStatus {
        &self.signers
    }

    /// The manifest entry's bytes (the DSSE envelope as stored).
    pub fn envelope_bytes(&self) -> &[u8] {
        &self.envelope_bytes
    }

    /// Total size of the signed entries, for progress bars.
    pub fn signed_bytes(&self) -> u64 {
        self.statement
            .predicate
            .entries
            .iter()
            .map(|e| e.size)
            .sum()
    }

    /// Hashes every signed entry and checks it against the manifest.
    pub fn verify(self, progress: &dyn Progress) -> Result<VerifiedArtifact> {
        self.verify_with(progress, |_| Ok(None))
    }

    /// Like [`verify`](Self::verify), and also streams each entry for which
    /// `sink` returns a writer into it while hashing (one read of the
    /// archive). The sinks' data is only trustworthy if this returns `Ok`.
    pub fn verify_with(
        self,
        progress: &dyn Progress,
        mut sink: impl FnMut(&EntryRecord) -> io::Result<Option<Box<dyn Write>>>,
    ) -> Result<VerifiedArtifact> {
        progress.start("verifying", self.signed_bytes());
        let mut entries = Vec::new();
        let mut receipts_bytes = None;
        let mut buf = vec![0u8; CHUNK];
        for zip_entry in &self.layout.entries {
            if !zip_entry.role.is_signed() {
                continue;
            }
            let record = self
                .statement
                .entry(&zip_entry.name)
                .expect("cross_check listed every signed entry");
            let mut writer = sink(record).map_err(ArtifactError::io(&self.path))?;
            let keep = (zip_entry.role == Role::Receipts).then(Vec::new);
            let (digest, kept) =
                self.hash_entry(zip_entry, &mut buf, writer.as_deref_mut(), keep, progress)?;
            let actual = hex::encode(digest);
            if actual != record.sha256 {
                return Err(ArtifactError::DigestMismatch {
                    name: record.name.clone(),
                    expected: record.sha256.clone(),
                    actual,
                });
            }
            if let Some(mut w) = writer {
                w.flush().map_err(ArtifactError::io(&self.path))?;
            }
            if kept.is_some() {
                receipts_bytes = kept;
            }
            entries.push(VerifiedEntry {
                record: record.clone(),
                data_offset: zip_entry.data_offset,
            });
        }
        progress.finish();

        let receipts = match receipts_bytes {
            Some(bytes) => ReceiptChain::parse(&bytes)?,
            None => ReceiptChain::new(),
        };
        let head = &self.statement.predicate.receipts;
        if receipts.len() != head.length || receipts.head() != head.head {
            return Err(ArtifactError::ReceiptChain {
                detail: "its length or head differs from the signed manifest".into(),
            });
        }
        let attestations = self
            .layout
            .entries
            .iter()
            .filter(|e| e.role == Role::Attestation)
            .map(|e| e.name.clone())
            .collect();
        Ok(VerifiedArtifact {
            path: self.path,
            envelope_bytes: self.envelope_bytes,
            statement: self.statement,
            signers: self.signers,
            entries,
            receipts,
            attestations,
        })
    }

    fn hash_entry(
        &self,
        entry: &ZipEntry,
        buf: &mut [u8],
        mut writer: Option<&mut (dyn Write + 'static)>,
        mut keep: Option<Vec<u8>>,
        progress: &dyn Progress,
    ) -> Result<([u8; 32], Option<Vec<u8>>)> {
        let mut sha = Sha256::new();
        let mut offset = entry.data_offset;
        let end = entry.data_offset + entry.size;
        while offset < end {
            let n = ((end - offset) as usize).min(buf.len());
            let chunk = &mut buf[..n];
            self.file
                .read_exact_at(chunk, offset)
                .map_err(ArtifactError::io(&self.path))?;
            sha.update(&*chunk);
            if let Some(w) = writer.as_deref_mut() {
                w.write_all(chunk).map_err(ArtifactError::io(&self.path))?;
            }
            if let Some(k) = keep.as_mut() {
                k.extend_from_slice(chunk);
            }
            offset += n as u64;
            progress.advance(n as u64);
        }
        Ok((sha.finalize().into(), keep))
    }
}

impl VerifiedArtifact {
    /// Where the archive is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The signed statement.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// How the signatures were judged.
    pub fn signers(&self) -> &SignerStatus {
        &self.signers
    }

    /// The manifest entry's bytes.
    pub fn envelope_bytes(&self) -> &[u8] {
        &self.envelope_bytes
    }

    /// The signed entries in archive order.
    pub fn entries(&self) -> &[VerifiedEntry] {
        &self.entries
    }

    /// The signed entry called `name`.
    pub fn entry(&self, name: &str) -> Option<&VerifiedEntry> {
        self.entries.iter().find(|e| e.record.name == name)
    }

    /// The checked receipt chain.
    pub fn receipts(&self) -> &ReceiptChain {
        &self.receipts
    }

    /// Names of unsigned attestation entries.
    pub fn attestations(&self) -> &[String] {
        &self.attestations
    }

    /// Copies the signed entry `name` into `out`, hashing it again as it
    /// goes: the only way an entry's bytes leave a verified artifact. A file
    /// changed since [`verify`](AuthenticatedArtifact::verify) is
    /// [`ArtifactError::ChangedSinceVerified`]; what was written to `out`
    /// then must be thrown away. Returns the bytes copied.
    pub fn copy_entry(&self, name: &str, out: &mut dyn Write) -> Result<u64> {
        let entry = self.entry(name).ok_or_else(|| ArtifactError::NoSuchEntry {
            name: name.to_owned(),
        })?;
        let file = File::open(&self.path).map_err(ArtifactError::io(&self.path))?;
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut offset = entry.data_offset;
        let end = entry.data_offset + entry.record.size;
        while offset < end {
            let n = ((end - offset) as usize).min(buf.len());
            let chunk = &mut buf[..n];
            file.read_exact_at(chunk, offset)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => ArtifactError::ChangedSinceVerified {
                        name: name.to_owned(),
                    },
                    _ => ArtifactError::io(&self.path)(e),
                })?;
            sha.update(&*chunk);
            out.write_all(chunk)
                .map_err(ArtifactError::io(format!("(the copy of `{name}`)")))?;
            offset += n as u64;
        }
        if hex::encode(sha.finalize()) != entry.record.sha256 {
            return Err(ArtifactError::ChangedSinceVerified {
                name: name.to_owned(),
            });
        }
        Ok(entry.record.size)
    }

    /// The signed entry `name` in memory, re-hashed ([`copy_entry`](Self::copy_entry)).
    pub fn read_entry(&self, name: &str) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.copy_entry(name, &mut bytes)?;
        Ok(bytes)
    }
}

fn with_path(e: ArtifactError, path: &Path) -> ArtifactError {
    match e {
        ArtifactError::Io { source, .. } => ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    }
}
