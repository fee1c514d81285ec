//! `kolmctl drift` against a drift log written with `kolm-drift` under a
//! temporary `KOLM_HOME`: the table, JSON, filters, export, clear and the
//! refusals of bad flags.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kolm_drift::{DriftDb, DriftInput, Message, NewEntry, Reason, Scores};
use serde_json::Value;

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

    fn db_path(&self) -> PathBuf {
        kolm_drift::default_path(&self.home())
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kolmctl"))
            .args(args)
            .env("KOLM_HOME", self.home())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kolmctl {args:?} failed ({:?}):\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args).0).unwrap()
    }

    /// Four entries: text and chat, one redacted, two artifacts, 2026-12-07.
    fn sample(&self) {
        let mut db = DriftDb::open(&self.db_path()).unwrap();
        let chat = DriftInput::Chat(vec![
            Message {
                role: "system".into(),
                content: "be brief".into(),
            },
            Message {
                role: "user".into(),
                content: "what is the total\nof invoice 7 and also a very long tail of words"
                    .into(),
            },
        ]);
        let t0 = 1_796_637_600_000; // 2026-12-07T10:00:00Z
        db.insert(&[
            entry(
                "invoices",
                "0.1.0",
                t0,
                &[Reason::Verifier],
                Some(DriftInput::Text("first question".into())),
            ),
            entry(
                "invoices",
                "0.2.0",
                t0 + 60_000,
                &[Reason::Logprob, Reason::Recall],
                Some(chat),
            ),
            entry("invoices", "0.2.0", t0 + 120_000, &[Reason::Logprob], None),
            entry(
                "tickets",
                "1.0.0",
                t0 + 180_000,
                &[Reason::Distance],
                Some(DriftInput::Text("first question".into())),
            ),
        ])
        .unwrap();
    }
}

fn entry(
    artifact: &str,
    version: &str,
    created_ms: i64,
    reasons: &[Reason],
    input: Option<DriftInput>,
) -> NewEntry {
    let digest = input
        .clone()
        .unwrap_or_else(|| DriftInput::Text("secret".into()))
        .digest();
    NewEntry {
        created_ms,
        artifact: artifact.into(),
        version: version.into(),
        reasons: reasons.to_vec(),
        output: input.as_ref().map(|_| "an answer".to_owned()),
        input,
        input_digest: digest,
        scores: Scores {
            mean_logprob: Some(-2.31),
            failed_rules: vec!["total is a number".into()],
            ..Scores::default()
        },
        thresholds: Scores {
            mean_logprob: Some(-1.2),
            ..Scores::default()
        },
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_missing_database_is_an_empty_log_and_is_not_created() {
    let env = Env::new();
    let (out, _) = env.ok(&["drift", "list"]);
    assert!(
        out.contains("no drift entries") && out.contains(s(&env.db_path())),
        "{out}"
    );
    assert_eq!(env.json(&["drift", "list", "--json"]), Value::Array(vec![]));
    let (out, err) = env.ok(&["drift", "export"]);
    assert_eq!(out, "");
    assert!(
        err.contains("wrote 0 inputs to stdout (0 redacted skipped)"),
        "{err}"
    );
    let (out, _) = env.ok(&["drift", "clear"]);
    assert!(out.contains("deleted 0 drift entries"), "{out}");
    assert_eq!(env.json(&["drift", "clear", "--json"])["deleted"], 0);
    let out = env.run(&["drift", "show", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no drift database"));
    assert!(!env.db_path().exists(), "a read verb created the database");
    assert!(!env.home().join("drift").exists());
}

#[test]
fn list_prints_a_table_newest_first() {
    let env = Env::new();
    env.sample();
    let (out, _) = env.ok(&["drift", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    for col in ["ID", "WHEN", "MODEL", "REASONS", "INPUT"] {
        assert!(lines[0].contains(col), "{out}");
    }
    assert!(
        lines[1].starts_with("4 ")
            && lines[1].contains("2026-12-07T10:03:00Z")
            && lines[1].contains("tickets:1.0.0")
            && lines[1].contains("distance"),
        "{out}"
    );
    assert!(
        lines[2].contains("(redacted)") && lines[2].contains("invoices:0.2.0"),
        "{out}"
    );
    // The chat shows its user turn on one line, cut to 50 characters.
    assert!(lines[3].contains("logprob,recall"), "{out}");
    assert!(
        lines[3].contains("what is the total of invoice 7 and also a very lo…"),
        "{out}"
    );
    assert!(
        lines[4].starts_with("1 ") && lines[4].contains("2026-12-07T10:00:00Z"),
        "{out}"
    );
}

#[test]
fn list_json_and_filters() {
    let env = Env::new();
    env.sample();
    let all = env.json(&["drift", "list", "--json"]);
    let ids = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&all), [4, 3, 2, 1]);
    let first = &all[3];
    assert_eq!(first["artifact"], "invoices");
    assert_eq!(first["input"], "first question");
    assert_eq!(first["reasons"], serde_json::json!(["verifier"]));
    assert_eq!(first["scores"]["mean_logprob"], -2.31);
    assert_eq!(all[1]["input"], Value::Null);

    assert_eq!(
        ids(&env.json(&["drift", "list", "--json", "--artifact", "invoices"])),
        [3, 2, 1]
    );
    assert_eq!(
        ids(&env.json(&["drift", "list", "--json", "--artifact", "invoices:0.2.0"])),
        [3, 2]
    );
    assert_eq!(
        ids(&env.json(&["drift", "list", "--json", "--reason", "logprob"])),
        [3, 2]
    );
    assert_eq!(
        ids(&env.json(&["drift", "list", "--json", "--since", "2026-12-07T10:02:00Z"])),
        [4, 3]
    );
    assert_eq!(
        ids(&env.json(&["drift", "list", "--json", "--limit", "1"])),
        [4]
    );
    // A duration counts back from now: the same as the filter by hand.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day_ago: Vec<i64> = [(4, 180_000), (3, 120_000), (2, 60_000), (1, 0)]
        .into_iter()
        .filter(|(_, dt)| 1_796_637_600_000 + dt >= now_ms - 86_400_000)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids(&env.json(&["drift", "list", "--json", "--since", "1d"])),
        day_ago
    );
    assert_eq!(
        ids(&env.json(&["drift", "list", "--json", "--since", "100000d"])).len(),
        4
    );
    let (out, _) = env.ok(&["drift", "list", "--artifact", "nothing"]);
    assert!(out.contains("no drift entries match"), "{out}");
}

#[test]
fn show_prints_every_field_with_thresholds() {
    let env = Env::new();
    env.sample();
    let (out, _) = env.ok(&["drift", "show", "2"]);
    for want in [
        "drift entry 2",
        "2026-12-07T10:01:00Z",
        "invoices:0.2.0",
        "logprob,recall",
        "mean logprob",
        "-2.31 (threshold -1.20)",
        "total is a number",
        "[system]",
        "be brief",
        "[user]",
        "of invoice 7",
        "an answer",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let (out, _) = env.ok(&["drift", "show", "3"]);
    assert_eq!(out.matches("(redacted)").count(), 2, "{out}");
    let v = env.json(&["drift", "show", "2", "--json"]);
    assert_eq!(v["id"], 2);
    assert_eq!(v["input"][1]["role"], "user");
    let out = env.run(&["drift", "show", "99"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no drift entry 99"));
}

#[test]
fn export_writes_distinct_inputs_to_a_file_and_refuses_to_overwrite() {
    let env = Env::new();
    env.sample();
    let (out, err) = env.ok(&["drift", "export"]);
    assert_eq!(
        out,
        "{\"input\":\"first question\"}\n{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"what is the total\\nof invoice 7 and also a very long tail of words\"}]}\n"
    );
    assert!(
        err.contains("wrote 2 inputs to stdout (1 redacted skipped)"),
        "{err}"
    );

    let file = env.dir.path().join("drift.jsonl");
    let (_, err) = env.ok(&[
        "drift",
        "export",
        "--artifact",
        "invoices:0.2.0",
        "--out",
        s(&file),
    ]);
    assert!(
        err.contains(&format!(
            "wrote 1 inputs to {} (1 redacted skipped)",
            file.display()
        )),
        "{err}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["messages"]
    );

    let out = env.run(&["drift", "export", "--out", s(&file)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists; pass --force"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        text,
        "the file was changed"
    );
    env.ok(&[
        "drift",
        "export",
        "--out",
        s(&file),
        "--force",
        "--reason",
        "distance",
    ]);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\"input\":\"first question\"}\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".drift-export-")
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[test]
fn clear_deletes_what_the_filters_match() {
    let env = Env::new();
    env.sample();
    let (out, _) = env.ok(&["drift", "clear", "--reason", "logprob"]);
    assert!(out.contains("deleted 2 drift entries"), "{out}");
    assert_eq!(
        env.json(&["drift", "clear", "--artifact", "tickets", "--json"])["deleted"],
        1
    );
    let left = env.json(&["drift", "list", "--json"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["id"], 1);
    let (out, _) = env.ok(&["drift", "clear"]);
    assert!(out.contains("deleted 1 drift entry from"), "{out}");
    let (out, _) = env.ok(&["drift", "list"]);
    assert!(out.contains("no drift entries (database"), "{out}");
}

#[test]
fn bad_flags_exit_2_with_the_reason() {
    let env = Env::new();
    for (args, want) in [
        (
            &["drift", "list", "--since", "yesterday"][..],
            "neither an RFC 3339 time",
        ),
        (
            &["drift", "export", "--since", "7y"][..],
            "neither an RFC 3339 time",
        ),
        (
            &["drift", "list", "--reason", "vibes"][..],
            "valid reasons: verifier, logprob, recipes, recall, distance",
        ),
        (
            &["drift", "clear", "--reason", "Verifier"][..],
            "valid reasons",
        ),
        (
            &["drift", "list", "--artifact", "a:"][..],
            "NAME or NAME:VERSION",
        ),
    ] {
        let out = env.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(!env.db_path().exists());
}
