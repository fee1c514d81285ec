//! DSSE envelopes: the pre-authentication encoding (PAE), signing with one or
//! more Ed25519 keys, and checking signatures against a set of trusted keys.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature as EdSignature, Signer, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{ArtifactError, Result};
use crate::keys::{keyid, SecretKey};

/// The payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// A DSSE envelope as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Base64 (standard, padded) of the payload bytes.
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

/// One signature in an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Hex SHA-256 of the signer's raw public key.
    pub keyid: String,
    /// Base64 of the 64-byte Ed25519 signature over the PAE.
    pub sig: String,
}

/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// How signatures were judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignerStatus {
    /// At least one signature verified under a trusted key; these key ids.
    Trusted(Vec<String>),
    /// No key was trusted and the caller allowed that: integrity only. The
    /// key ids the envelope names, none of them checked.
    Unchecked(Vec<String>),
}

impl Envelope {
    /// Signs `payload` with each key.
    pub fn sign(payload_type: &str, payload: &[u8], keys: &[&SecretKey]) -> Self {
        let mut envelope = Envelope {
            payload: B64.encode(payload),
            payload_type: payload_type.to_owned(),
            signatures: Vec::new(),
        };
        let message = pae(payload_type, payload);
        for key in keys {
            envelope.signatures.push(Signature {
                keyid: keyid(&key.key.verifying_key()),
                sig: B64.encode(key.key.sign(&message).to_bytes()),
            });
        }
        envelope
    }

    /// The decoded payload bytes (not parsed).
    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        B64.decode(&self.payload)
            .map_err(|e| ArtifactError::InvalidEnvelope {
                detail: format!("payload is not base64: {e}"),
            })
    }

    /// Checks the signatures over `payload` against `trusted` keys. Every
    /// signature by a trusted key must verify; at least one must exist unless
    /// `allow_untrusted`. Signatures by unknown keys are ignored.
    pub fn check_signatures(
        &self,
        payload: &[u8],
        trusted: &[VerifyingKey],
        allow_untrusted: bool,
    ) -> Result<SignerStatus> {
        if self.signatures.is_empty() {
            return Err(ArtifactError::Unsigned);
        }
        let message = pae(&self.payload_type, payload);
        let mut verified = Vec::new();
        for s in &self.signatures {
            let Some(key) = trusted.iter().find(|k| keyid(k) == s.keyid) else {
                continue;
            };
            let bad = || ArtifactError::BadSignature {
                keyid: s.keyid.clone(),
            };
            let bytes = B64.decode(&s.sig).map_err(|_| bad())?;
            let bytes: [u8; 64] = bytes.try_into().map_err(|_| bad())?;
            key.verify_strict(&message, &EdSignature::from_bytes(&bytes))
                .map_err(|_| bad())?;
            verified.push(s.keyid.clone());
        }
        let named: Vec<String> = self.signatures.iter().map(|s| s.keyid.clone()).collect();
        if !verified.is_empty() {
            Ok(SignerStatus::Trusted(verified))
        } else if allow_untrusted {
            Ok(SignerStatus::Unchecked(named))
        } else {
            Err(ArtifactError::UntrustedSigner { keyids: named })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // The example from the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn signatures_verify_only_under_the_right_key() {
        let alice = SecretKey::from_seed("alice", [1; 32]).unwrap();
        let bob = SecretKey::from_seed("bob", [2; 32]).unwrap();
        let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &[&alice]);
        let a = alice.key.verifying_key();
        let b = bob.key.verifying_key();
        assert!(matches!(
            env.check_signatures(b"{}", &[a], false),
            Ok(SignerStatus::Trusted(_))
        ));
        assert!(matches!(
            env.check_signatures(b"{}", &[b], false),
            Err(ArtifactError::UntrustedSigner { .. })
        ));
        assert!(matches!(
            env.check_signatures(b"{} ", &[a], false),
            Err(ArtifactError::BadSignature { .. })
        ));
        assert!(matches!(
            env.check_signatures(b"{}", &[b], true),
            Ok(SignerStatus::Unchecked(_))
        ));
    }
}
