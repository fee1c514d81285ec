//! The keyring on real files: generating keys (private modes, no
//! overwrite), trusting foreign keys, malformed files, the receipt key and
//! the default signing key, also under concurrent first use.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Barrier};
use std::thread;

use kolm_artifact::ErrorKind;
use kolm_store::{Home, StoreError};
use support::mode;

#[test]
fn generate_writes_a_private_secret_and_trusts_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Home::at(dir.path()).keyring();
    let public = keyring.generate("alice").unwrap();

    let secret_path = dir.path().join("keys/alice.key");
    assert_eq!(mode(&secret_path), 0o600);
    assert_eq!(
        mode(&dir.path().join("keys")) & 0o077,
        0,
        "keys/ is private"
    );
    assert_eq!(mode(&dir.path().join("keys/alice.pub")) & 0o400, 0o400);
    assert!(dir
        .path()
        .join(format!("trust/{}.pub", public.keyid()))
        .is_file());

    let secret = keyring.secret("alice").unwrap();
    assert_eq!(secret.public(), public);
    assert_eq!(keyring.public(Some("alice")).unwrap(), public);
    assert_eq!(keyring.trusted().unwrap(), vec![public.clone()]);
    let list = keyring.list().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].name, "alice");
    assert_eq!(list[0].keyid, public.keyid());
    assert!(list[0].has_secret && list[0].trusted);
    assert_eq!(list[0].path, dir.path().join("keys/alice.pub"));

    assert_eq!(keyring.permission_warning("alice"), None);
    fs::set_permissions(&secret_path, fs::Permissions::from_mode(0o644)).unwrap();
    let warning = keyring.permission_warning("alice").unwrap();
    assert!(warning.contains("chmod 600"), "{warning}");
    // A loose mode is a warning, not an error.
    assert!(keyring.secret("alice").is_ok());
}

#[test]
fn generate_refuses_to_overwrite_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Home::at(dir.path()).keyring();
    keyring.generate("alice").unwrap();
    let before = fs::read(dir.path().join("keys/alice.key")).unwrap();
    let err = keyring.generate("alice").unwrap_err();
    assert!(
        matches!(&err, StoreError::KeyExists { name, .. } if name == "alice"),
        "{err:?}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(fs::read(dir.path().join("keys/alice.key")).unwrap(), before);
    let leftovers: Vec<_> = support::files_in(&dir.path().join("keys"))
        .into_iter()
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_key_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Home::at(dir.path()).keyring();
    for name in ["../x", "", ".hidden", "a b", "receipt"] {
        let err = keyring.generate(name).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidKeyName { .. }),
            "{name}: {err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    assert!(!dir.path().join("x.key").exists());
}

#[test]
fn missing_keys_say_how_to_create_them() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Home::at(dir.path()).keyring();
    let err = keyring.secret("nope").unwrap_err();
    assert!(matches!(err, StoreError::NoSigningKey { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("kolmctl keys generate --name nope"),
        "{err}"
    );
    let err = keyring.public(Some("nope")).unwrap_err();
    assert!(matches!(err, StoreError::NoPublicKey { .. }), "{err:?}");
    let err = keyring
        .signing_key_or_create_default(Some("nope"))
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSigningKey { .. }), "{err:?}");
    assert!(keyring.list().unwrap().is_empty());
    assert!(keyring.trusted().unwrap().is_empty());
}

#[test]
fn a_foreign_public_key_file_can_be_trusted_once() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = Home::at(dir.path().join("theirs")).keyring();
    let bob = theirs.generate("bob").unwrap();
    let ours = Home::at(dir.path().join("ours")).keyring();
    ours.generate("alice").unwrap();

    let file = dir.path().join("theirs/keys/bob.pub");
    assert_eq!(ours.trust(&file).unwrap(), bob);
    assert_eq!(ours.trust(&file).unwrap(), bob, "trusting twice is fine");
    let trust_dir = dir.path().join("ours/trust");
    assert_eq!(
        support::files_in(&trust_dir).len(),
        2,
        "alice and bob, once each"
    );

    let list = ours.list().unwrap();
    let names: Vec<_> = list
        .iter()
        .map(|k| (k.name.as_str(), k.has_secret, k.trusted))
        .collect();
    assert_eq!(names, [("alice", true, true), ("bob", false, true)]);
    assert_eq!(list[1].path, trust_dir.join(format!("{}.pub", bob.keyid())));
    assert_eq!(ours.public(Some("bob")).unwrap(), bob);
    let policy = ours.trust_policy(false).unwrap();
    assert!(policy.keys.contains(&bob.key));
    assert!(!policy.allow_untrusted);
}

#[test]
fn malformed_key_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Home::at(dir.path()).keyring();
    let garbage = dir.path().join("garbage.pub");
    fs::write(&garbage, "ssh-ed25519 AAAA someone\n").unwrap();
    let err = keyring.trust(&garbage).unwrap_err();
    assert!(
        matches!(&err, StoreError::MalformedKey { path, .. } if path == &garbage),
        "{err:?}"
    );
    assert!(err.to_string().contains("garbage.pub"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Malformed);

    // A secret key file is not a public key.
    keyring.generate("alice").unwrap();
    let err = keyring
        .trust(&dir.path().join("keys/alice.key"))
        .unwrap_err();
    assert!(matches!(err, StoreError::MalformedKey { .. }), "{err:?}");

    let err = keyring.trust(&dir.path().join("missing.pub")).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.pub"), "{err}");

    fs::write(
        dir.path().join("keys/broken.key"),
        "kolm-ed25519-secret !!! broken\n",
    )
    .unwrap();
    let err = keyring.secret("broken").unwrap_err();
    assert!(matches!(err, StoreError::MalformedKey { .. }), "{err:?}");
    assert!(err.to_string().contains("broken.key"), "{err}");
}

#[test]
fn the_receipt_key_is_created_once_and_stays() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Home::at(dir.path()).keyring();
    let first = keyring.receipt_key().unwrap();
    let path = dir.path().join("keys/receipt.key");
    assert_eq!(mode(&path), 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim(), hex::encode(first.0));
    assert_eq!(keyring.receipt_key().unwrap().0, first.0);
    assert_eq!(
        Home::at(dir.path()).keyring().receipt_key().unwrap().0,
        first.0
    );
    assert!(
        keyring.list().unwrap().is_empty(),
        "the receipt key is not a signing key"
    );

    fs::write(&path, "not hex\n").unwrap();
    let err = keyring.receipt_key().unwrap_err();
    assert!(
        matches!(err, StoreError::MalformedReceiptKey { .. }),
        "{err:?}"
    );
}

#[test]
fn racing_first_uses_agree_on_one_receipt_key() {
    let dir = tempfile::tempdir().unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let keys: BTreeSet<[u8; 32]> = (0..8)
        .map(|_| {
            let home = Home::at(dir.path());
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                home.keyring().receipt_key().unwrap().0
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(keys.len(), 1);
}

#[test]
fn the_default_signing_key_is_created_on_first_use_only() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Home::at(dir.path()).keyring();
    let (first, created) = keyring.signing_key_or_create_default(None).unwrap();
    assert!(created);
    assert_eq!(first.name, "default");
    assert_eq!(mode(&dir.path().join("keys/default.key")), 0o600);
    let (again, created) = keyring.signing_key_or_create_default(None).unwrap();
    assert!(!created);
    assert_eq!(again.key.to_bytes(), first.key.to_bytes());
    let (named, created) = keyring
        .signing_key_or_create_default(Some("default"))
        .unwrap();
    assert!(!created);
    assert_eq!(named.key.to_bytes(), first.key.to_bytes());
    assert_eq!(keyring.public(None).unwrap(), first.public());
}

#[test]
fn racing_first_uses_create_one_default_key() {
    let dir = tempfile::tempdir().unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let results: Vec<([u8; 32], bool)> = (0..8)
        .map(|_| {
            let home = Home::at(dir.path());
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let (key, created) = home.keyring().signing_key_or_create_default(None).unwrap();
                (key.key.to_bytes(), created)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    let distinct: BTreeSet<_> = results.iter().map(|(k, _)| *k).collect();
    assert_eq!(distinct.len(), 1);
    assert_eq!(Home::at(dir.path()).keyring().list().unwrap().len(), 1);
}
