//! The keyring: this machine's signing keys, the public keys it trusts, and
//! the receipt key that tags build steps.
//!
//! ```text
//! keys/NAME.key       secret key, 0600   `kolm-ed25519-secret <base64 seed> NAME`
//! keys/NAME.pub       its public half    `kolm-ed25519-public <base64 key> NAME`
//! keys/receipt.key    receipt HMAC key, 0600, 64 hex digits
//! trust/<keyid>.pub   every trusted public key, own keys included
//! ```
//!
//! Secret keys and the receipt key are created atomically and never
//! overwritten: two processes racing to create one agree on the winner's.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kolm_artifact::keys::check_key_name;
use kolm_artifact::{PublicKey, ReceiptKey, SecretKey, TrustPolicy};
use rand_core::{OsRng, RngCore};
use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::fsutil;

/// The key used when none is named.
pub const DEFAULT_KEY: &str = "default";
/// The name of the receipt key's file in `keys/`; no signing key may use it.
const RECEIPT_KEY_NAME: &str = "receipt";

/// One key the keyring knows: an own key (`has_secret`) or a trusted one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub name: String,
    /// Hex SHA-256 of the raw public key.
    pub keyid: String,
    /// Whether this machine holds the secret half (an own key).
    pub has_secret: bool,
    /// Whether artifacts signed by it install without `--allow-untrusted`.
    pub trusted: bool,
    /// The public key file (for own keys without one, the secret key file).
    pub path: PathBuf,
}

/// The keys under a home directory. Directories are created on first write.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: PathBuf,
    trust: PathBuf,
}

impl Keyring {
    pub(crate) fn new(root: &Path) -> Self {
        Keyring {
            keys: root.join("keys"),
            trust: root.join("trust"),
        }
    }

    /// `keys/`: own keys and the receipt key.
    pub fn keys_dir(&self) -> &Path {
        &self.keys
    }

    /// `trust/`: trusted public keys.
    pub fn trust_dir(&self) -> &Path {
        &self.trust
    }

    /// Where the secret key `name` is (whether or not it exists).
    pub fn secret_path(&self, name: &str) -> PathBuf {
        self.keys.join(format!("{name}.key"))
    }

    /// Where the public key `name` is (whether or not it exists).
    pub fn public_path(&self, name: &str) -> PathBuf {
        self.keys.join(format!("{name}.pub"))
    }

    fn trust_path(&self, keyid: &str) -> PathBuf {
        self.trust.join(format!("{keyid}.pub"))
    }

    /// Creates the signing key `name` (secret 0600, public 0644) and trusts
    /// it. Refuses to overwrite an existing key.
    pub fn generate(&self, name: &str) -> Result<PublicKey> {
        Ok(self.generate_secret(name)?.public())
    }

    fn generate_secret(&self, name: &str) -> Result<SecretKey> {
        check_name(name)?;
        fsutil::create_dirs(&self.keys, 0o700)?;
        let exists = |path: PathBuf| StoreError::KeyExists {
            name: name.to_owned(),
            path,
        };
        let public_path = self.public_path(name);
        if public_path.exists() {
            return Err(exists(public_path));
        }
        let secret = SecretKey::generate(name).map_err(|e| invalid_name(name, e))?;
        let secret_path = self.secret_path(name);
        if !fsutil::write_new(&secret_path, secret.to_line().as_bytes(), 0o600)? {
            return Err(exists(secret_path));
        }
        let public = secret.public();
        fsutil::write_atomic(&self.keys, &public_path, public.to_line().as_bytes(), 0o644)?;
        self.add_trusted(&public)?;
        Ok(secret)
    }

    /// The secret key `name`. Errors only if it is missing or malformed; see
    /// [`permission_warning`](Self::permission_warning) for loose modes.
    pub fn secret(&self, name: &str) -> Result<SecretKey> {
        check_name(name)?;
        let path = self.secret_path(name);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoSigningKey {
                    name: name.to_owned(),
                })
            }
            Err(e) => return Err(StoreError::io("reading", &path)(e)),
        };
        SecretKey::parse(&text).map_err(|source| StoreError::MalformedKey { path, source })
    }

    /// A warning to show if the secret key `name` is readable or writable by
    /// group or others, saying how to fix it; `None` if its mode is private
    /// (or it does not exist).
    pub fn permission_warning(&self, name: &str) -> Option<String> {
        let path = self.secret_path(name);
        let mode = fs::metadata(&path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "secret key {} is accessible by other users (mode {mode:o}): run `chmod 600 {}`",
                path.display(),
                path.display()
            )
        })
    }

    /// The signing key `name`, or with `None` the key `default`, which is
    /// created on first use (`true` in the result when it was just created).
    /// A named key must exist.
    pub fn signing_key_or_create_default(&self, name: Option<&str>) -> Result<(SecretKey, bool)> {
        if let Some(name) = name {
            return Ok((self.secret(name)?, false));
        }
        match self.secret(DEFAULT_KEY) {
            Err(StoreError::NoSigningKey { .. }) => match self.generate_secret(DEFAULT_KEY) {
                Ok(key) => Ok((key, true)),
                // Another process created it first.
                Err(StoreError::KeyExists { .. }) => Ok((self.secret(DEFAULT_KEY)?, false)),
                Err(e) => Err(e),
            },
            other => other.map(|key| (key, false)),
        }
    }

    /// The public key `name` (`None`: `default`): an own key's, or else a
    /// trusted key with that name.
    pub fn public(&self, name: Option<&str>) -> Result<PublicKey> {
        let name = name.unwrap_or(DEFAULT_KEY);
        check_name(name)?;
        let path = self.public_path(name);
        match fs::read_to_string(&path) {
            Ok(text) => return parse_public(&text, path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("reading", &path)(e)),
        }
        if self.secret_path(name).exists() {
            return Ok(self.secret(name)?.public());
        }
        self.trusted_with_paths()?
            .into_iter()
            .map(|(key, _)| key)
            .find(|key| key.name == name)
            .ok_or_else(|| StoreError::NoPublicKey {
                name: name.to_owned(),
            })
    }

    /// Own keys and trusted keys, sorted by name then key id.
    pub fn list(&self) -> Result<Vec<KeyInfo>> {
        let trusted = self.trusted_with_paths()?;
        let trusted_ids: BTreeSet<String> = trusted.iter().map(|(k, _)| k.keyid()).collect();
        let mut own_names = BTreeSet::new();
        for file in fsutil::entry_names(&self.keys)? {
            if file.starts_with('.') {
                continue;
            }
            let name = file
                .strip_suffix(".key")
                .or_else(|| file.strip_suffix(".pub"));
            if let Some(name) = name {
                if name != RECEIPT_KEY_NAME {
                    own_names.insert(name.to_owned());
                }
            }
        }
        let mut infos = Vec::new();
        let mut own_ids = BTreeSet::new();
        for name in own_names {
            let secret_path = self.secret_path(&name);
            let public_path = self.public_path(&name);
            let has_secret = secret_path.exists();
            let key = if has_secret {
                self.secret(&name)?.public()
            } else {
                let text = fs::read_to_string(&public_path)
                    .map_err(StoreError::io("reading", &public_path))?;
                parse_public(&text, public_path.clone())?
            };
            let keyid = key.keyid();
            own_ids.insert(keyid.clone());
            infos.push(KeyInfo {
                name,
                trusted: trusted_ids.contains(&keyid),
                keyid,
                has_secret,
                path: if public_path.exists() {
                    public_path
                } else {
                    secret_path
                },
            });
        }
        for (key, path) in trusted {
            let keyid = key.keyid();
            if !own_ids.contains(&keyid) {
                infos.push(KeyInfo {
                    name: key.name,
                    keyid,
                    has_secret: false,
                    trusted: true,
                    path,
                });
            }
        }
        infos.sort_by(|a, b| (&a.name, &a.keyid).cmp(&(&b.name, &b.keyid)));
        Ok(infos)
    }

    /// Trusts the public key in `public_key_file` (copied to
    /// `trust/<keyid>.pub`). Trusting a key twice changes nothing.
    pub fn trust(&self, public_key_file: &Path) -> Result<PublicKey> {
        let text = fs::read_to_string(public_key_file)
            .map_err(StoreError::io("reading", public_key_file))?;
        let key = parse_public(&text, public_key_file.to_path_buf())?;
        self.add_trusted(&key)?;
        Ok(key)
    }

    fn add_trusted(&self, key: &PublicKey) -> Result<()> {
        fsutil::create_dirs(&self.trust, 0o755)?;
        let path = self.trust_path(&key.keyid());
        if let Ok(text) = fs::read_to_string(&path) {
            if PublicKey::parse(&text).is_ok_and(|k| k.key == key.key) {
                return Ok(());
            }
        }
        fsutil::write_atomic(&self.trust, &path, key.to_line().as_bytes(), 0o644)
    }

    /// Every trusted public key, sorted by name then key id.
    pub fn trusted(&self) -> Result<Vec<PublicKey>> {
        Ok(self
            .trusted_with_paths()?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    fn trusted_with_paths(&self) -> Result<Vec<(PublicKey, PathBuf)>> {
        let mut keys = Vec::new();
        for file in fsutil::entry_names(&self.trust)? {
            if file.starts_with('.') || !file.ends_with(".pub") {
                continue;
            }
            let path = self.trust.join(&file);
            let text = fs::read_to_string(&path).map_err(StoreError::io("reading", &path))?;
            keys.push((parse_public(&text, path.clone())?, path));
        }
        keys.sort_by_cached_key(|(k, _)| (k.name.clone(), k.keyid()));
        Ok(keys)
    }

    /// A trust policy accepting every trusted key.
    pub fn trust_policy(&self, allow_untrusted: bool) -> Result<TrustPolicy> {
        Ok(TrustPolicy {
            keys: self.trusted()?.into_iter().map(|k| k.key).collect(),
            allow_untrusted,
        })
    }

    /// Where the receipt key is.
    pub fn receipt_key_path(&self) -> PathBuf {
        self.keys.join(format!("{RECEIPT_KEY_NAME}.key"))
    }

    /// This machine's receipt key, created (32 random bytes, 0600) on first
    /// use. Concurrent first uses agree on one key.
    pub fn receipt_key(&self) -> Result<ReceiptKey> {
        let path = self.receipt_key_path();
        match fs::read_to_string(&path) {
            Ok(text) => return parse_receipt_key(&text, path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("reading", &path)(e)),
        }
        fsutil::create_dirs(&self.keys, 0o700)?;
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let line = format!("{}\n", hex::encode(bytes));
        if fsutil::write_new(&path, line.as_bytes(), 0o600)? {
            return Ok(ReceiptKey(bytes));
        }
        let text = fs::read_to_string(&path).map_err(StoreError::io("reading", &path))?;
        parse_receipt_key(&text, path)
    }
}

fn invalid_name(name: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::InvalidKeyName {
        name: name.to_owned(),
        reason: e.to_string(),
    }
}

/// Key names become file names; `receipt` is taken by the receipt key.
fn check_name(name: &str) -> Result<()> {
    check_key_name(name).map_err(|e| invalid_name(name, e))?;
    if name == RECEIPT_KEY_NAME {
        return Err(invalid_name(
            name,
            "`receipt` is reserved for the receipt key; choose another name",
        ));
    }
    Ok(())
}

fn parse_public(text: &str, path: PathBuf) -> Result<PublicKey> {
    PublicKey::parse(text).map_err(|source| StoreError::MalformedKey { path, source })
}

fn parse_receipt_key(text: &str, path: PathBuf) -> Result<ReceiptKey> {
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    bytes
        .map(ReceiptKey)
        .ok_or(StoreError::MalformedReceiptKey { path })
}
