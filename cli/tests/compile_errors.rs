//! `kolmctl compile` refuses bad input with a clear error and writes
//! nothing at `--out`: a malformed examples line (named by line), outputs
//! that contradict each other, a base that does not exist, a missing
//! teacher key, a teacher that is down, a missing output directory, and a
//! bad corpus (missing, no embedder, an embedder that does not exist, a bad
//! `--recall-k`, nothing readable in it). None of these needs a working
//! teacher.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn smollm2() -> PathBuf {
    kolm_fixtures::dir().join(kolm_fixtures::SMOLLM2)
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let c = Case {
            dir: tempfile::tempdir().unwrap(),
        };
        c.write(
            "examples.jsonl",
            "{\"input\":\"two apples\",\"output\":\"{\\\"item\\\":\\\"apple\\\",\\\"qty\\\":2}\"}\n\
             {\"input\":\"one pear\",\"output\":\"{\\\"item\\\":\\\"pear\\\",\\\"qty\\\":1}\"}\n\
             {\"input\":\"three figs\",\"output\":\"{\\\"item\\\":\\\"fig\\\",\\\"qty\\\":3}\"}\n",
        );
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, text).unwrap();
        p
    }

    fn out(&self) -> PathBuf {
        self.path("out.kolm")
    }

    /// A `kolm.toml` whose teacher is a port that was free a moment ago:
    /// nothing listens there. One quick retry.
    fn dead_teacher_task(&self) -> PathBuf {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        self.write(
            "kolm.toml",
            &format!(
                "[teacher_config]\nbase_url = \"http://127.0.0.1:{port}/v1\"\napi_key_env = \"\"\nmax_retries = 1\nbackoff_secs = 0.05\n"
            ),
        )
    }

    /// `kolmctl compile TASK --examples ... --base ... --out ...` plus `extra`.
    fn compile(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kolmctl"));
        cmd.args(["--quiet", "compile", "Orders to JSON."])
            .arg("--examples")
            .arg(self.path("examples.jsonl"))
            .arg("--out")
            .arg(self.out())
            .args(extra)
            .env("KOLM_HOME", self.path("home"))
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_BASE_URL")
            .env_remove("KOLM_EMBEDDER")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Asserts a failure (exit 1) whose message contains every `needle`,
    /// and that nothing was written at `--out` (nor a temporary file).
    fn fails_with(&self, out: Output, needles: &[&str]) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{n:?} not in: {stderr}");
        }
        assert!(!self.out().exists(), "something was written at --out");
        let leftovers: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("out.kolm"))
            .collect();
        assert!(leftovers.is_empty(), "leftovers: {leftovers:?}");
    }
}

fn base_arg() -> String {
    smollm2().to_string_lossy().into_owned()
}

#[test]
fn a_malformed_examples_line_is_named() {
    let c = Case::new();
    c.write(
        "examples.jsonl",
        "{\"input\":\"a\",\"output\":\"1\"}\n{\"input\":\"b\",\"output\":\n",
    );
    let out = c.compile(
        &["--base", &base_arg(), "--teacher", "openai:m"],
        &[("OPENAI_API_KEY", "x")],
    );
    c.fails_with(out, &["examples.jsonl:2", "malformed JSON"]);
}

#[test]
fn contradicting_outputs_are_listed() {
    let c = Case::new();
    c.write(
        "examples.jsonl",
        "{\"input\":\"a\",\"output\":\"1\"}\n{\"input\":\"b\",\"output\":\"2\"}\n{\"input\":\"a\",\"output\":\"3\"}\n",
    );
    let out = c.compile(
        &["--base", &base_arg(), "--teacher", "openai:m"],
        &[("OPENAI_API_KEY", "x")],
    );
    c.fails_with(
        out,
        &["contradicting outputs", "examples.jsonl:3 contradicts"],
    );
}

#[test]
fn a_base_that_does_not_exist_is_refused() {
    let c = Case::new();
    let missing = c.path("nope.gguf");
    let out = c.compile(
        &["--base", missing.to_str().unwrap(), "--teacher", "openai:m"],
        &[("OPENAI_API_KEY", "x")],
    );
    c.fails_with(out, &["nope.gguf does not exist"]);
    let out = c.compile(
        &["--base", "not-installed", "--teacher", "openai:m"],
        &[("OPENAI_API_KEY", "x")],
    );
    c.fails_with(out, &["not-installed", "kolmctl list"]);
}

#[test]
fn a_missing_teacher_key_is_named_before_any_work() {
    let c = Case::new();
    let out = c.compile(
        &["--base", &base_arg(), "--teacher", "anthropic:claude"],
        &[],
    );
    c.fails_with(out, &["ANTHROPIC_API_KEY is not set"]);
}

#[test]
fn a_teacher_that_is_down_fails_clearly() {
    let c = Case::new();
    let task = c.dead_teacher_task();
    let out = c.compile(
        &[
            "--file",
            task.to_str().unwrap(),
            "--base",
            &base_arg(),
            "--teacher",
            "openai:m",
            "--k",
            "1",
        ],
        &[],
    );
    c.fails_with(out, &["the teacher failed", "cannot reach the teacher"]);
}

#[test]
fn a_missing_output_directory_is_refused() {
    let c = Case::new();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kolmctl"));
    let out = cmd
        .args(["compile", "Orders.", "--examples"])
        .arg(c.path("examples.jsonl"))
        .args(["--base", &base_arg(), "--teacher", "openai:m", "--out"])
        .arg(c.path("no/such/dir/x.kolm"))
        .env("KOLM_HOME", c.path("home"))
        .env("OPENAI_API_KEY", "x")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("does not exist"), "{stderr}");
}

/// Each bad corpus is refused before any teacher call: the teacher here is
/// a port nothing listens on, so reaching it would be a different error.
#[test]
fn a_bad_corpus_is_refused_before_the_teacher() {
    let c = Case::new();
    let task = c.dead_teacher_task();
    let embedder = smollm2().with_file_name("all-MiniLM-L6-v2.zip");
    let images = c.path("images");
    fs::create_dir(&images).unwrap();
    fs::write(images.join("logo.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let docs = c.path("docs");
    fs::create_dir(&docs).unwrap();
    fs::write(docs.join("a.md"), "# A\n\nSome text.\n").unwrap();
    let base = base_arg();
    let run = |corpus: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "--file",
            task.to_str().unwrap(),
            "--base",
            &base,
            "--teacher",
            "openai:m",
            "--k",
            "1",
            "--corpus",
            corpus.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        c.compile(&args, &[])
    };
    let emb = ["--embedder", embedder.to_str().unwrap()];
    c.fails_with(
        run(&c.path("no-such-dir"), &emb),
        &["the corpus", "no-such-dir", "does not exist"],
    );
    c.fails_with(
        run(&docs, &[]),
        &["--corpus needs an embedder", "KOLM_EMBEDDER"],
    );
    c.fails_with(
        run(&docs, &["--embedder", c.path("nope.zip").to_str().unwrap()]),
        &["the embedder", "nope.zip", "does not exist"],
    );
    let mut zero = emb.to_vec();
    zero.extend(["--recall-k", "0"]);
    c.fails_with(run(&docs, &zero), &["--recall-k must be in 1..=32, got 0"]);
    c.fails_with(run(&images, &emb), &["has no text to index", "logo.png"]);
}

#[test]
fn missing_required_fields_are_listed() {
    let c = Case::new();
    let out = c.compile(&[], &[]);
    c.fails_with(out, &["missing required field(s): teacher"]);
}
