//! Fuzzes the artifact reader: arbitrary bytes as a `.kolm` file must give an
//! error or a verified artifact, never a panic, a hang or a huge allocation.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use kolm_artifact::{NoProgress, TrustPolicy};
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kolm-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("input.kolm")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(data).unwrap();
    drop(file);
    // Trust the key of the seed corpus so signed inputs reach the payload
    // parser and the content checks, not just the signature check.
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    let trust = TrustPolicy { keys: vec![key], allow_untrusted: true };
    let _ = kolm_artifact::verify(path, &trust, &NoProgress);
});
