//! The receipt chain: one JSON line per build step, each naming the digest of
//! the line before it, each tagged with HMAC-SHA256 under the building
//! machine's receipt key. Anyone can check the links and the head (it is in
//! the signed predicate); only the machine holding the key can check the tags.
//!
//! A line is the receipt's JSON object with `"hmac":"<64 hex>"` as its last
//! member. The tag covers the line with that member removed: the line minus
//! its last 75 bytes (`,"hmac":"` + 64 hex + `"}`), followed by `}`. A
//! receipt's digest is the SHA-256 of its whole line, without the newline.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ArtifactError, Result};

type HmacSha256 = Hmac<Sha256>;

const TAG_SUFFIX_LEN: usize = 75;
const TAG_PREFIX: &str = ",\"hmac\":\"";

/// An input or output of a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestRef {
    pub name: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// One build step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub step: String,
    pub inputs: Vec<DigestRef>,
    pub outputs: Vec<DigestRef>,
    /// `sha256:<hex>` of the step's parameters as JSON.
    pub params: String,
    /// RFC 3339.
    pub started: String,
    /// RFC 3339.
    pub finished: String,
    /// `sha256:<hex>` of the previous line, null for the first.
    pub prev: Option<String>,
}

/// The machine-local HMAC key for receipt tags.
#[derive(Clone)]
pub struct ReceiptKey(pub [u8; 32]);

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptKey(..)")
    }
}

impl ReceiptKey {
    fn tag(&self, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest_ref(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A chain of receipt lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiptChain {
    lines: Vec<String>,
}

impl ReceiptChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a step, linking it to the current head and tagging it.
    pub fn append(&mut self, mut receipt: Receipt, key: &ReceiptKey) {
        receipt.prev = self.head();
        let body = serde_json::to_string(&receipt).expect("receipts serialize");
        let tag = key.tag(body.as_bytes());
        let line = format!("{}{TAG_PREFIX}{tag}\"}}", &body[..body.len() - 1]);
        self.lines.push(line);
    }

    /// Number of receipts.
    pub fn len(&self) -> u64 {
        self.lines.len() as u64
    }

    /// Whether the chain has no receipts.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// `sha256:<hex>` of the last line.
    pub fn head(&self) -> Option<String> {
        self.lines.last().map(|l| digest_ref(l.as_bytes()))
    }

    /// The chain as JSON lines, each ending in `\n`.
    pub fn to_jsonl(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in &self.lines {
            out.extend_from_slice(l.as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// The receipts, parsed.
    pub fn receipts(&self) -> Vec<Receipt> {
        self.lines
            .iter()
            .map(|l| split_line(l).expect("lines were checked").0)
            .collect()
    }

    /// Parses JSON lines and checks every link.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(bytes).map_err(|_| chain_error("not UTF-8"))?;
        let mut lines = Vec::new();
        let mut prev: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            let (receipt, _) =
                split_line(line).map_err(|e| chain_error(format!("line {}: {e}", i + 1)))?;
            if receipt.prev != prev {
                return Err(chain_error(format!(
                    "line {} does not link to the line before it",
                    i + 1
                )));
            }
            prev = Some(digest_ref(line.as_bytes()));
            lines.push(line.to_owned());
        }
        if !text.is_empty() && !text.ends_with('\n') {
            return Err(chain_error("the last line has no newline"));
        }
        Ok(ReceiptChain { lines })
    }

    /// For each receipt, whether its tag verifies under `key`.
    pub fn check_tags(&self, key: &ReceiptKey) -> Vec<bool> {
        self.lines
            .iter()
            .map(|l| {
                let (_, body) = split_line(l).expect("lines were checked");
                let tag = &l[l.len() - TAG_SUFFIX_LEN + TAG_PREFIX.len()..l.len() - 2];
                key.tag(body.as_bytes()) == tag
            })
            .collect()
    }
}

/// Splits a line into its receipt and the tagged body.
fn split_line(line: &str) -> std::result::Result<(Receipt, String), String> {
    if line.len() < TAG_SUFFIX_LEN + 2
        || !line.is_char_boundary(line.len() - TAG_SUFFIX_LEN)
        || !line[line.len() - TAG_SUFFIX_LEN..].starts_with(TAG_PREFIX)
        || !line.ends_with("\"}")
    {
        return Err("it does not end with an `hmac` member".into());
    }
    let body = format!("{}}}", &line[..line.len() - TAG_SUFFIX_LEN]);
    let receipt: Receipt = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok((receipt, body))
}

fn chain_error(detail: impl Into<String>) -> ArtifactError {
    ArtifactError::ReceiptChain {
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str) -> Receipt {
        Receipt {
            step: name.into(),
            inputs: vec![],
            outputs: vec![DigestRef {
                name: "x".into(),
                digest: digest_ref(name.as_bytes()),
            }],
            params: digest_ref(b"{}"),
            started: "2026-01-01T00:00:00Z".into(),
            finished: "2026-01-01T00:00:01Z".into(),
            prev: None,
        }
    }

    #[test]
    fn chain_links_and_tags_round_trip() {
        let key = ReceiptKey([9; 32]);
        let mut chain = ReceiptChain::new();
        chain.append(step("distill"), &key);
        chain.append(step("pack"), &key);
        let parsed = ReceiptChain::parse(&chain.to_jsonl()).unwrap();
        assert_eq!(parsed, chain);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed.check_tags(&key), vec![true, true]);
        assert_eq!(parsed.check_tags(&ReceiptKey([8; 32])), vec![false, false]);
        assert_eq!(
            parsed.receipts()[1].prev,
            Some(digest_ref(chain.lines[0].as_bytes()))
        );
    }

    #[test]
    fn a_reordered_or_edited_chain_is_refused() {
        let key = ReceiptKey([9; 32]);
        let mut chain = ReceiptChain::new();
        chain.append(step("a"), &key);
        chain.append(step("b"), &key);
        let swapped = format!("{}\n{}\n", chain.lines[1], chain.lines[0]);
        assert!(ReceiptChain::parse(swapped.as_bytes()).is_err());
        let edited = String::from_utf8(chain.to_jsonl())
            .unwrap()
            .replace("\"a\"", "\"z\"");
        let parsed = ReceiptChain::parse(edited.as_bytes()).unwrap_err();
        assert!(parsed.to_string().contains("line 2"), "{parsed}");
    }
}
