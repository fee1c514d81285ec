//! The real `openai` Python package (in a virtualenv that
//! `scripts/openai-venv.sh` creates once) against a real kolmd serving real
//! SmolLM2 artifacts: `tests/openai/test_api.py` under pytest.

mod common;

use std::path::Path;
use std::process::Command;

use common::Daemon;

#[test]
fn the_openai_python_client_passes_its_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let venv = Command::new(root.join("scripts/openai-venv.sh"))
        .output()
        .expect("scripts/openai-venv.sh runs");
    assert!(
        venv.status.success(),
        "cannot create the openai virtualenv:\n{}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8(venv.stdout).unwrap();
    let python = python.lines().last().unwrap().trim().to_owned();

    let d = Daemon::start("slots = 2");
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests/openai"))
        .env("KOLMD_BASE_URL", format!("{}/v1", d.url()))
        .env("KOLMD_MODEL", "smollm2")
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "pytest failed:\n{stdout}\n{}\nkolmd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}
