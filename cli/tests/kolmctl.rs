//! End-to-end tests of the `kolmctl` binary: real model files, real keys and
//! a real store under a temporary `KOLM_HOME`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One isolated kolm home.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kolmctl"));
        c.args(args)
            .env("KOLM_HOME", self.home())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kolmctl {args:?} failed ({:?}):\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    /// A small valid GGUF base.
    fn tiny_base(&self, name: &str, seed: u8) -> PathBuf {
        let path = self.path(name);
        let mut f = fs::File::create(&path).unwrap();
        kolm_artifact::gguf::write_minimal(
            &mut f,
            "llama",
            name,
            &[("w", &[256, 64], 0)],
            |_, len, w| w.write_all(&(0..len).map(|i| (i as u8) ^ seed).collect::<Vec<_>>()),
        )
        .unwrap();
        path
    }

    fn pack_tiny(&self, name: &str, seed: u8) -> PathBuf {
        let base = self.tiny_base(&format!("{name}.gguf"), seed);
        let out = self.path(&format!("{name}.kolm"));
        self.ok(&[
            "-q",
            "pack",
            "--base",
            s(&base),
            "--name",
            name,
            "--out",
            s(&out),
        ]);
        out
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn smollm2() -> PathBuf {
    kolm_fixtures::smollm2()
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

#[test]
fn smollm2_packs_verifies_installs_and_shows() {
    let env = Env::new();
    let artifact = env.path("smollm2.kolm");
    let packed = env.json(&[
        "-q",
        "pack",
        "--base",
        s(&smollm2()),
        "--name",
        "smollm2",
        "--version",
        "0.1.2",
        "--task",
        "chat",
        "--out",
        s(&artifact),
        "--json",
    ]);
    assert_eq!(packed["ok"], true);
    assert_eq!(
        packed["manifest"]["predicate"]["base"]["architecture"],
        "llama"
    );
    assert_eq!(
        packed["signer"]["name"], "default",
        "a default key is created on first use"
    );

    let verified = env.json(&["-q", "verify", s(&artifact), "--json"]);
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["signature"]["trusted"], true);
    assert_eq!(verified["receipts"]["written_by_this_machine"], 1);
    assert!(verified["bytes_verified"].as_u64().unwrap() > 98_000_000);

    let inspected = env.ok(&["inspect", s(&artifact)]);
    for needle in [
        "smollm2 0.1.2",
        "llama",
        "Q4_1",
        "model/base.gguf",
        "trusted, signed by `default`",
    ] {
        assert!(
            inspected.contains(needle),
            "inspect lacks {needle:?}:\n{inspected}"
        );
    }

    let installed = env.json(&["-q", "install", s(&artifact), "--json"]);
    assert_eq!(installed["outcome"], "installed");
    let again = env.json(&["-q", "install", s(&artifact), "--json"]);
    assert_eq!(again["outcome"], "already_installed");
    assert_eq!(again["written_bytes"], 0);

    let list = env.json(&["list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "smollm2");
    let shown = env.ok(&["-q", "show", "smollm2"]);
    assert!(shown.contains("re-checked"), "{shown}");
    env.ok(&["rm", "smollm2:0.1.2"]);
    assert_eq!(env.json(&["list", "--json"]).as_array().unwrap().len(), 0);
    let gc = env.json(&["gc", "--json"]);
    assert!(gc["freed_bytes"].as_u64().unwrap() > 98_000_000, "{gc}");
}

#[test]
fn verify_exit_codes_follow_the_contract() {
    let env = Env::new();
    let good = env.pack_tiny("codes", 1);
    assert_eq!(env.run(&["verify", s(&good)]).status.code(), Some(0));

    // 2: usage.
    assert_eq!(env.run(&["verify"]).status.code(), Some(2));

    // 3: malformed (truncated).
    let bytes = fs::read(&good).unwrap();
    let truncated = env.path("truncated.kolm");
    fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    let out = env.run(&["verify", s(&truncated), "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["error"]["kind"], "malformed");

    // 4: bad signature (a payload character changed).
    let needle = b"\"payload\": \"";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + 20;
    let mut forged = bytes.clone();
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged_path = env.path("forged.kolm");
    fs::write(&forged_path, &forged).unwrap();
    let out = env.run(&["verify", s(&forged_path)]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 5: signer not trusted (another home), unless --key or --allow-untrusted.
    let stranger = Env::new();
    let out = stranger.run(&["verify", s(&good)]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keys trust"));
    let pubkey = env.path("default.pub");
    fs::write(&pubkey, env.ok(&["keys", "export"])).unwrap();
    assert_eq!(
        stranger
            .run(&["verify", s(&good), "--key", s(&pubkey)])
            .status
            .code(),
        Some(0)
    );
    let integrity = stranger.ok(&["verify", s(&good), "--allow-untrusted"]);
    assert!(
        integrity.contains("integrity only") && integrity.contains("NOT CHECKED"),
        "{integrity}"
    );

    // 6: digest mismatch (a byte of the base flipped).
    let tampered = env.path("tampered.kolm");
    fs::copy(&good, &tampered).unwrap();
    flip(&tampered, 4096 + 1000);
    let out = env.run(&["verify", s(&tampered)]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model/base.gguf"));

    // Not a file at all: a clear error, exit 1.
    let out = env.run(&["verify", s(&env.path("nope.kolm"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.kolm"));
}

#[test]
fn keys_generate_list_export_and_trust() {
    let alice = Env::new();
    let created = alice.json(&["keys", "generate", "--name", "alice", "--json"]);
    let keyid = created["keyid"].as_str().unwrap().to_owned();
    let secret = alice.home().join("keys/alice.key");
    assert_eq!(
        fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = alice.run(&["keys", "generate", "--name", "alice"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an existing key is never overwritten"
    );

    let exported = alice.ok(&["keys", "export", "alice"]);
    assert!(exported.starts_with("kolm-ed25519-public "));
    let pubfile = alice.path("alice.pub");
    fs::write(&pubfile, &exported).unwrap();
    let base = alice.tiny_base("a.gguf", 3);
    let artifact = alice.path("a.kolm");
    alice.ok(&[
        "-q",
        "pack",
        "--base",
        s(&base),
        "--key",
        "alice",
        "--out",
        s(&artifact),
    ]);

    let bob = Env::new();
    assert_eq!(bob.run(&["verify", s(&artifact)]).status.code(), Some(5));
    let trusted = bob.json(&["keys", "trust", s(&pubfile), "--json"]);
    assert_eq!(trusted["keyid"], keyid.as_str());
    bob.ok(&["verify", s(&artifact)]);
    let keys = bob.json(&["keys", "list", "--json"]);
    let entry = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["keyid"] == keyid.as_str())
        .unwrap();
    assert_eq!(entry["trusted"], true);
    assert_eq!(entry["has_secret"], false);

    let junk = bob.path("junk.pub");
    fs::write(&junk, "ssh-ed25519 AAAA me@host\n").unwrap();
    let out = bob.run(&["keys", "trust", s(&junk)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kolm-ed25519-public"));
    assert!(bob.run(&["keys", "export", "nobody"]).status.code() == Some(1));
}

#[test]
fn pack_refuses_bad_input_clearly() {
    let env = Env::new();
    let not_gguf = env.path("notes.gguf");
    fs::write(&not_gguf, "hello").unwrap();
    let out = env.run(&[
        "pack",
        "--base",
        s(&not_gguf),
        "--out",
        s(&env.path("x.kolm")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notes.gguf") && err.contains("GGUF"), "{err}");
    assert!(!env.path("x.kolm").exists());

    let base = env.tiny_base("b.gguf", 1);
    let out = env.run(&[
        "pack",
        "--base",
        s(&base),
        "--adapter",
        s(&base),
        "--out",
        s(&env.path("x.kolm")),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a LoRA adapter"));
    let out = env.run(&[
        "pack",
        "--base",
        s(&base),
        "--name",
        "Has Spaces",
        "--out",
        s(&env.path("x.kolm")),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Has Spaces"));
    let out = env.run(&[
        "pack",
        "--base",
        s(&base),
        "--key",
        "missing",
        "--out",
        s(&env.path("x.kolm")),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("keys generate"));
}

#[test]
fn installs_share_a_base_and_refuse_corrupted_blobs() {
    let env = Env::new();
    let base = env.tiny_base("shared.gguf", 9);
    let (one, two) = (env.path("one.kolm"), env.path("two.kolm"));
    env.ok(&[
        "-q",
        "pack",
        "--base",
        s(&base),
        "--name",
        "one",
        "--out",
        s(&one),
    ]);
    env.ok(&[
        "-q",
        "pack",
        "--base",
        s(&base),
        "--name",
        "two",
        "--task",
        "other",
        "--out",
        s(&two),
    ]);
    env.ok(&["-q", "install", s(&one)]);
    let second = env.json(&["-q", "install", s(&two), "--json"]);
    let base_size = fs::metadata(&base).unwrap().len();
    assert_eq!(second["reused_bytes"], base_size, "{second}");

    let blobs = env.home().join("store/blobs/sha256");
    let base_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(fs::read(&base).unwrap()))
    };
    let blob = blobs.join(&base_sha);
    assert!(blob.exists());
    env.ok(&["-q", "show", "one"]);

    let mut perms = fs::metadata(&blob).unwrap().permissions();
    perms.set_mode(0o644);
    fs::set_permissions(&blob, perms).unwrap();
    flip(&blob, 100);
    let out = env.run(&["-q", "show", "two"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&base_sha[..12]) && err.to_lowercase().contains("corrupt"),
        "{err}"
    );
}

#[test]
fn a_killed_install_leaves_the_store_consistent() {
    let env = Env::new();
    let artifact = env.path("big.kolm");
    env.ok(&[
        "-q",
        "pack",
        "--base",
        s(&smollm2()),
        "--name",
        "big",
        "--out",
        s(&artifact),
    ]);
    let tmp = env.home().join("store/tmp");
    let mut killed_mid_copy = 0;
    for _ in 0..3 {
        let mut child = env.cmd(&["-q", "install", s(&artifact)]).spawn().unwrap();
        let start = Instant::now();
        // Kill it as soon as it has started writing a blob.
        loop {
            let writing = fs::read_dir(&tmp).map(|d| d.count() > 0).unwrap_or(false);
            if writing || start.elapsed() > Duration::from_secs(20) {
                killed_mid_copy += usize::from(writing);
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill();
        let _ = child.wait();
        let listed = env.json(&["list", "--json"]);
        if listed.as_array().unwrap().is_empty() {
            continue;
        }
        // It finished before the kill landed: start over.
        env.ok(&["rm", "big"]);
    }
    assert!(killed_mid_copy > 0, "never caught the install mid-copy");
    assert_eq!(env.json(&["list", "--json"]).as_array().unwrap().len(), 0);
    let gc = env.json(&["gc", "--json"]);
    assert!(gc["removed_temp_files"].as_u64().unwrap() > 0, "{gc}");
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    env.ok(&["-q", "install", s(&artifact)]);
    env.ok(&["-q", "show", "big"]);
}

/// `kolmctl list | head` (a reader that goes away) ends kolmctl quietly
/// with status 0, not with a panic. The reader is gone before kolmctl
/// writes, so its first write meets a closed pipe.
#[test]
fn a_closed_stdout_pipe_ends_kolmctl_quietly() {
    let env = Env::new();
    env.pack_tiny("alpha", 1);
    env.ok(&["-q", "install", s(&env.path("alpha.kolm"))]);
    for args in [&["list"][..], &["list", "--json"], &["keys", "list"]] {
        let mut child = env
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
