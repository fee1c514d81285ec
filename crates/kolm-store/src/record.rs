//! What the store says about an installed artifact: its record (stable JSON,
//! one file per `name:version`, the commit point of an install), the reports
//! of install and gc, and `NAME[:VERSION]` references.

use std::cmp::Ordering;

use kolm_artifact::manifest::{check_artifact_name, check_version};
use kolm_artifact::{EntryRecord, Statement};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{Result, StoreError};

/// An installed artifact. Its entries' blobs and its manifest envelope's
/// blob (`manifest_sha256`) are in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub name: String,
    pub version: String,
    /// When it was installed, RFC 3339, UTC.
    pub installed: String,
    /// Hex SHA-256 of the DSSE envelope as it was in the archive; the
    /// envelope is stored as a blob under this digest.
    pub manifest_sha256: String,
    /// Key ids of the trusted keys whose signatures verified at install;
    /// empty if it was installed with `--allow-untrusted` (integrity only).
    pub signers: Vec<String>,
    /// The signed statement (entries, base model, K-score, ...).
    pub statement: Statement,
    /// Sum of the entries' sizes.
    pub size: u64,
}

impl ArtifactRecord {
    /// `name:version`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }

    /// Whether a trusted key's signature verified at install.
    pub fn is_trusted(&self) -> bool {
        !self.signers.is_empty()
    }

    /// The signed entry called `name` (e.g. `model/base.gguf`).
    pub fn entry(&self, name: &str) -> Option<&EntryRecord> {
        self.statement.entry(name)
    }

    /// The installed time.
    pub fn installed_at(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.installed, &Rfc3339).ok()
    }

    /// Checks that a record read from disk is one this store could have
    /// written (every digest is hex, so it is safe as a path).
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        self.statement.validate().map_err(|e| e.to_string())?;
        let p = &self.statement.predicate;
        if p.name != self.name || p.version != self.version {
            return Err(format!(
                "it names {} but its statement is for {}:{}",
                self.reference(),
                p.name,
                p.version
            ));
        }
        if !is_sha256_hex(&self.manifest_sha256) {
            return Err("its manifest digest is not 64 hex digits".into());
        }
        if self.installed_at().is_none() {
            return Err(format!(
                "installed time `{}` is not RFC 3339",
                self.installed
            ));
        }
        let size: u64 = p.entries.iter().map(|e| e.size).sum();
        if size != self.size {
            return Err(format!(
                "its size {} is not the sum of its entries ({size})",
                self.size
            ));
        }
        Ok(())
    }
}

/// What an install did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum InstallOutcome {
    /// No record of this `name:version` existed.
    Installed,
    /// The same artifact (same manifest) was already installed; missing
    /// blobs, if any, were restored and the record was kept.
    AlreadyInstalled,
    /// A different artifact with the same `name:version` was replaced; its
    /// blobs stay until `gc`.
    Replaced { previous_manifest_sha256: String },
}

/// The result of [`Store::install`](crate::Store::install).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstallReport {
    pub record: ArtifactRecord,
    /// Bytes of new blobs written (entries and the manifest envelope).
    pub written_bytes: u64,
    /// Bytes not written because their blob was already in the store.
    pub reused_bytes: u64,
    #[serde(flatten)]
    pub outcome: InstallOutcome,
}

/// The result of [`Store::gc`](crate::Store::gc).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Blobs no record referenced, deleted.
    pub removed_blobs: u64,
    /// Bytes of deleted blobs and temporary files.
    pub freed_bytes: u64,
    /// Leftovers of interrupted installs and blobs set aside as corrupt.
    pub removed_temp_files: u64,
    /// Verify-cache entries of blobs that are gone or changed.
    pub removed_cache_entries: u64,
}

/// A blob whose bytes matched its digest (or whose unchanged file the verify
/// cache vouches for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBlob {
    pub path: std::path::PathBuf,
    pub size: u64,
}

/// `NAME` or `NAME:VERSION`, both checked so they are safe as paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reference<'a> {
    pub name: &'a str,
    pub version: Option<&'a str>,
}

impl<'a> Reference<'a> {
    pub(crate) fn parse(reference: &'a str) -> Result<Self> {
        let invalid = |reason: String| StoreError::InvalidReference {
            reference: reference.to_owned(),
            reason,
        };
        let (name, version) = match reference.split_once(':') {
            Some((name, version)) => (name, Some(version)),
            None => (reference, None),
        };
        check_artifact_name(name).map_err(invalid)?;
        if let Some(v) = version {
            check_version(v).map_err(invalid)?;
        }
        Ok(Reference { name, version })
    }
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Orders versions naturally: runs of digits compare as numbers, so `1.10`
/// comes after `1.9`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = split_digits(a);
                let (nb, rb) = split_digits(b);
                let ta = trim_zeros(na);
                let tb = trim_zeros(nb);
                let ord = ta
                    .len()
                    .cmp(&tb.len())
                    .then(ta.cmp(tb))
                    .then(na.len().cmp(&nb.len()));
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    s.split_at(n)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b'0').count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_naturally() {
        let mut v = vec!["1.10.0", "1.9.0", "1.9.0-rc1", "0.2", "10", "2"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, ["0.2", "1.9.0", "1.9.0-rc1", "1.10.0", "2", "10"]);
        assert_eq!(compare_versions("01", "1"), Ordering::Greater);
        assert_eq!(compare_versions("1", "1"), Ordering::Equal);
    }

    #[test]
    fn references_are_checked() {
        assert_eq!(
            Reference::parse("tiny:1.0.0").unwrap(),
            Reference {
                name: "tiny",
                version: Some("1.0.0")
            }
        );
        assert_eq!(Reference::parse("tiny").unwrap().version, None);
        for bad in ["", "../x", "tiny:", "tiny:../1", "Tiny", "a:b:c", "a/b"] {
            assert!(
                matches!(
                    Reference::parse(bad),
                    Err(StoreError::InvalidReference { .. })
                ),
                "{bad}"
            );
        }
    }
}
