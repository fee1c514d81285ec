//! The signed payload: an in-toto Statement v1 whose predicate (RS-1 v1) lists
//! every signed entry with its role, size, media type and SHA-256, plus the
//! artifact's identity, base model, K-score, teacher and receipt-chain head.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{ArtifactError, Result};
use crate::names::{self, Role};

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of an RS-1 v1 manifest.
pub const PREDICATE_TYPE: &str = "https://kolm.dev/rs-1/v1";
/// The RS-1 format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// An in-toto Statement v1 carrying an RS-1 predicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Predicate,
}

/// An in-toto subject: one signed entry and its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

/// The RS-1 predicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Predicate {
    pub format_version: u32,
    pub name: String,
    pub version: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub task: Option<String>,
    pub base: BaseModel,
    pub entries: Vec<EntryRecord>,
    pub k_score: Option<KScore>,
    pub teacher: Option<Teacher>,
    pub compile: Option<BTreeMap<String, serde_json::Value>>,
    pub receipts: ReceiptsHead,
}

/// The base model, as its GGUF header describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseModel {
    pub name: Option<String>,
    pub architecture: String,
    pub quantization: String,
    pub parameter_count: u64,
}

/// One signed entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntryRecord {
    pub name: String,
    pub role: Role,
    pub size: u64,
    pub media_type: String,
    /// Lower-case hex.
    pub sha256: String,
}

/// The K-score and its five parts, each in [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KScore {
    pub value: f64,
    pub accuracy: f64,
    pub size: f64,
    pub latency: f64,
    pub cost: f64,
    pub coverage: f64,
}

/// Who taught the adapter (never a key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Teacher {
    pub provider: String,
    pub model: String,
}

/// Length and head of the receipt chain in `kolm/receipts.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsHead {
    pub length: u64,
    /// `sha256:<hex>` of the last receipt line, or null for an empty chain.
    pub head: Option<String>,
}

impl Statement {
    /// A statement whose subjects mirror the predicate's entries.
    pub fn new(predicate: Predicate) -> Self {
        let subject = predicate
            .entries
            .iter()
            .map(|e| Subject {
                name: e.name.clone(),
                digest: BTreeMap::from([("sha256".to_owned(), e.sha256.clone())]),
            })
            .collect();
        Statement {
            statement_type: STATEMENT_TYPE.to_owned(),
            subject,
            predicate_type: PREDICATE_TYPE.to_owned(),
            predicate,
        }
    }

    /// Parses and validates a statement (types, version, entries, subjects).
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let statement: Statement = serde_json::from_slice(payload)
            .map_err(|e| ArtifactError::invalid_manifest(format!("not an RS-1 statement: {e}")))?;
        statement.validate()?;
        Ok(statement)
    }

    /// Checks every rule a reader relies on.
    pub fn validate(&self) -> Result<()> {
        if self.statement_type != STATEMENT_TYPE {
            return Err(ArtifactError::WrongPayloadType {
                found: self.statement_type.clone(),
                expected: STATEMENT_TYPE,
            });
        }
        if self.predicate_type != PREDICATE_TYPE {
            return Err(ArtifactError::WrongPayloadType {
                found: self.predicate_type.clone(),
                expected: PREDICATE_TYPE,
            });
        }
        let p = &self.predicate;
        if p.format_version != FORMAT_VERSION {
            return Err(ArtifactError::invalid_manifest(format!(
                "format version {} is not supported (this kolm reads version {FORMAT_VERSION})",
                p.format_version
            )));
        }
        check_artifact_name(&p.name).map_err(ArtifactError::invalid_manifest)?;
        check_version(&p.version).map_err(ArtifactError::invalid_manifest)?;
        time::OffsetDateTime::parse(&p.created, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
                ArtifactError::invalid_manifest(format!("created `{}` is not RFC 3339", p.created))
            })?;
        let mut names = BTreeSet::new();
        for e in &p.entries {
            let role = names::classify(&e.name).map_err(|reason| ArtifactError::BadName {
                name: e.name.clone(),
                reason,
            })?;
            if !role.is_signed() {
                return Err(ArtifactError::invalid_manifest(format!(
                    "`{}` is outside the signed scope and cannot be listed",
                    e.name
                )));
            }
            if role != e.role || e.media_type != role.media_type() {
                return Err(ArtifactError::invalid_manifest(format!(
                    "`{}` must have role `{}` and media type `{}`",
                    e.name,
                    serde_json::to_value(role)
                        .unwrap_or_default()
                        .as_str()
                        .unwrap_or("?"),
                    role.media_type()
                )));
            }
            if e.size > role.max_size() {
                return Err(ArtifactError::TooLarge {
                    name: e.name.clone(),
                    size: e.size,
                    bound: role.max_size(),
                });
            }
            if !is_sha256_hex(&e.sha256) {
                return Err(ArtifactError::invalid_manifest(format!(
                    "`{}` has a malformed sha256",
                    e.name
                )));
            }
            if !names.insert(e.name.as_str()) {
                return Err(ArtifactError::invalid_manifest(format!(
                    "`{}` is listed twice",
                    e.name
                )));
            }
        }
        if !names.contains(names::BASE) {
            return Err(ArtifactError::invalid_manifest("it lists no base model"));
        }
        let expected = Statement::new(p.clone()).subject;
        if self.subject != expected {
            return Err(ArtifactError::invalid_manifest(
                "the statement's subjects differ from the predicate's entries",
            ));
        }
        if names.contains(names::RECEIPTS) != (p.receipts.length > 0)
            || (p.receipts.length > 0) != p.receipts.head.is_some()
        {
            return Err(ArtifactError::invalid_manifest(
                "the receipt chain's length and head disagree with the receipts entry",
            ));
        }
        Ok(())
    }

    /// The entry record called `name`.
    pub fn entry(&self, name: &str) -> Option<&EntryRecord> {
        self.predicate.entries.iter().find(|e| e.name == name)
    }
}

/// Artifact names: lower-case letters, digits, `.`, `_`, `-`; start with a
/// letter or digit; at most 64 bytes. They become store paths.
pub fn check_artifact_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name `{name}` is invalid: use lower-case letters, digits, `.`, `_` or `-`, starting with a letter or digit, at most 64"
        ))
    }
}

/// Versions: letters, digits, `.`, `_`, `+`, `-`; start with a letter or
/// digit; at most 64 bytes (semver fits).
pub fn check_version(version: &str) -> std::result::Result<(), String> {
    let ok = !version.is_empty()
        && version.len() <= 64
        && version.as_bytes()[0].is_ascii_alphanumeric()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "version `{version}` is invalid: use letters, digits, `.`, `_`, `+` or `-`, at most 64"
        ))
    }
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
