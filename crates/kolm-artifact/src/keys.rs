//! Ed25519 signing keys and their text formats. A key's id is the hex SHA-256
//! of its raw 32-byte public key. Files are one line each:
//! `kolm-ed25519-public <base64 key> <name>` and
//! `kolm-ed25519-secret <base64 seed> <name>`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

const PUBLIC_TAG: &str = "kolm-ed25519-public";
const SECRET_TAG: &str = "kolm-ed25519-secret";

/// Why a key file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a kolm {expected} key: the line must be `{tag} <base64> <name>`")]
    Format {
        expected: &'static str,
        tag: &'static str,
    },
    #[error("the key is not valid base64 of 32 bytes")]
    Encoding,
    #[error("the bytes are not a valid Ed25519 public key")]
    InvalidPoint,
    #[error("invalid key name `{0}`: use letters, digits, `.`, `_` or `-`, at most 64")]
    Name(String),
}

/// The hex SHA-256 of a public key's raw bytes.
pub fn keyid(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A public key with the name it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    pub key: VerifyingKey,
}

impl PublicKey {
    /// The key's id.
    pub fn keyid(&self) -> String {
        keyid(&self.key)
    }

    /// The one-line file form.
    pub fn to_line(&self) -> String {
        format!(
            "{PUBLIC_TAG} {} {}\n",
            B64.encode(self.key.as_bytes()),
            self.name
        )
    }

    /// Parses the one-line file form.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (bytes, name) = parse_line(text, PUBLIC_TAG, "public")?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPoint)?;
        Ok(PublicKey { name, key })
    }
}

/// A signing key with its name.
#[derive(Clone, Debug)]
pub struct SecretKey {
    pub name: String,
    pub key: SigningKey,
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        check_key_name(name)?;
        let key = SigningKey::generate(&mut rand_core::OsRng);
        Ok(SecretKey {
            name: name.to_owned(),
            key,
        })
    }

    /// A key from a fixed 32-byte seed (test vectors).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        check_key_name(name)?;
        Ok(SecretKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The one-line file form (holds the secret: write it 0600).
    pub fn to_line(&self) -> String {
        format!(
            "{SECRET_TAG} {} {}\n",
            B64.encode(self.key.to_bytes()),
            self.name
        )
    }

    /// Parses the one-line file form.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (seed, name) = parse_line(text, SECRET_TAG, "secret")?;
        Ok(SecretKey {
            name,
            key: SigningKey::from_bytes(&seed),
        })
    }
}

/// Key names become file names: keep them plain.
pub fn check_key_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::Name(name.to_owned()))
    }
}

fn parse_line(
    text: &str,
    tag: &'static str,
    expected: &'static str,
) -> Result<([u8; 32], String), KeyError> {
    let mut parts = text.split_whitespace();
    let format = KeyError::Format { expected, tag };
    if parts.next() != Some(tag) {
        return Err(format);
    }
    let (Some(b64), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format);
    };
    check_key_name(name)?;
    let bytes = B64.decode(b64).map_err(|_| KeyError::Encoding)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Encoding)?;
    Ok((bytes, name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines_round_trip() {
        let secret = SecretKey::from_seed("alice", [7; 32]).unwrap();
        let parsed = SecretKey::parse(&secret.to_line()).unwrap();
        assert_eq!(parsed.key.to_bytes(), secret.key.to_bytes());
        let public = PublicKey::parse(&secret.public().to_line()).unwrap();
        assert_eq!(public, secret.public());
        assert_eq!(public.keyid().len(), 64);
    }

    #[test]
    fn malformed_key_lines_are_refused() {
        assert!(matches!(
            PublicKey::parse("ssh-ed25519 AAAA x"),
            Err(KeyError::Format { .. })
        ));
        assert!(matches!(
            PublicKey::parse("kolm-ed25519-public !!! x"),
            Err(KeyError::Encoding)
        ));
        let secret = SecretKey::from_seed("a", [1; 32]).unwrap();
        assert!(
            PublicKey::parse(&secret.to_line()).is_err(),
            "a secret is not a public key"
        );
        assert!(matches!(
            SecretKey::generate("../x"),
            Err(KeyError::Name(_))
        ));
    }
}
