//! The task loader: examples and tests as JSONL, the `kolm.toml` task file,
//! and the seeded held-out split. It sits above the modules whose types it
//! reads into: [`crate::example`] (what a line becomes), [`crate::assertion`]
//! (a test's `assert`) and [`crate::teacher`] (the task file's teacher
//! settings and prices).
//!
//! A line is either `{"input": "...", "output": "..."}` or chat
//! `{"messages": [{"role": "...", "content": "..."}, ...]}` whose last
//! `assistant` message is the output (unless an `output` field is given, in
//! which case every message is input). Tests may carry `"assert": [...]`
//! (see [`crate::assertion::Assertion`]) and then need no `output`.
//! `docs/compile.md` is the reference for these shapes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::assertion::Assertion;
use crate::digest::sha256_hex;
use crate::example::{Example, Input, Message, Origin};
use crate::teacher::{Price, TeacherSettings, TeacherSpec};

/// Default number of teacher samples per example.
pub const DEFAULT_K: u32 = 8;
/// Default K-score gate.
pub const DEFAULT_GATE: f64 = 0.70;
/// Default split seed when no tests are given.
pub const DEFAULT_SPLIT_SEED: u64 = 0;
/// Default held-out share when no tests are given.
pub const DEFAULT_HOLDOUT: f64 = 0.2;

/// Everything that can be wrong with a task's inputs. Each variant names the
/// file (and line, where there is one).
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is not valid JSON.
    #[error("{path}:{line}: malformed JSON: {message}")]
    Json {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A line is valid JSON but not a valid example or test.
    #[error("{path}:{line}: {message}")]
    Field {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is missing or wrong.
        message: String,
    },
    /// A file (or every file of a directory) holds no example.
    #[error("{path}: no examples (the file is empty or holds only blank lines)")]
    Empty {
        /// The empty file or directory.
        path: PathBuf,
    },
    /// A directory holds no `*.jsonl` file.
    #[error("{path}: directory holds no .jsonl file")]
    NoJsonl {
        /// The directory.
        path: PathBuf,
    },
    /// The same input appears with different outputs.
    #[error("{} input(s) have contradicting outputs:\n{}", .0.len(), ContradictionList(.0))]
    Contradictions(Vec<Contradiction>),
    /// Too few examples to hold some out when no tests are given.
    #[error("{n} example(s): a held-out split needs at least 2 (or pass tests)")]
    TooFewForSplit {
        /// Number of examples.
        n: usize,
    },
    /// The task file is not valid TOML or has unknown fields.
    #[error("{path}: {message}")]
    Toml {
        /// The task file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A field of the task has an invalid value or a required one is missing.
    #[error("invalid task: {0}")]
    Invalid(String),
}

/// Two lines with the same input and different outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contradiction {
    /// The line seen first.
    pub first: Origin,
    /// The contradicting line.
    pub second: Origin,
}

struct ContradictionList<'a>(&'a [Contradiction]);

impl fmt::Display for ContradictionList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {} contradicts {}", c.second, c.first)?;
        }
        Ok(())
    }
}

/// Whether a JSONL file holds training examples or tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Every line needs an output.
    Examples,
    /// A line needs an output or at least one assertion.
    Tests,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    input: Option<serde_json::Value>,
    output: Option<serde_json::Value>,
    messages: Option<Vec<Message>>,
    #[serde(rename = "assert")]
    assertions: Option<Vec<Assertion>>,
    /// Free-form identifier, ignored.
    #[allow(dead_code)]
    id: Option<serde_json::Value>,
    /// Free-form metadata, ignored.
    #[allow(dead_code)]
    meta: Option<serde_json::Value>,
}

const ROLES: [&str; 3] = ["system", "user", "assistant"];

/// Parses one JSONL line (already known to be non-blank).
fn parse_line(text: &str, role: Role, origin: Origin) -> Result<Example, TaskError> {
    let field = |message: String| TaskError::Field {
        path: origin.path.clone(),
        line: origin.line,
        message,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| TaskError::Json {
        path: origin.path.clone(),
        line: origin.line,
        message: e.to_string(),
    })?;
    if !value.is_object() {
        return Err(field("a line must be a JSON object".into()));
    }
    let raw: RawLine = serde_json::from_value(value).map_err(|e| field(e.to_string()))?;
    let as_text = |v: serde_json::Value, name: &str| match v {
        serde_json::Value::String(s) => Ok(s),
        other => Err(field(format!(
            "\"{name}\" must be a string, found {}",
            json_type_name(&other)
        ))),
    };
    let output = raw.output.map(|v| as_text(v, "output")).transpose()?;
    let (input, output) = match (raw.input, raw.messages) {
        (Some(_), Some(_)) => {
            return Err(field(
                "give either \"input\" or \"messages\", not both".into(),
            ))
        }
        (None, None) => return Err(field("missing \"input\" (or \"messages\")".into())),
        (Some(i), None) => (Input::Text(as_text(i, "input")?), output),
        (None, Some(mut messages)) => {
            if let Some(bad) = messages.iter().find(|m| !ROLES.contains(&m.role.as_str())) {
                return Err(field(format!(
                    "message role {:?} is not one of system, user, assistant",
                    bad.role
                )));
            }
            let output = match output {
                Some(o) => Some(o),
                None if messages.last().is_some_and(|m| m.role == "assistant") => {
                    messages.pop().map(|m| m.content)
                }
                None => None,
            };
            if !messages.iter().any(|m| m.role == "user") {
                return Err(field("\"messages\" has no user message".into()));
            }
            (Input::Chat(messages), output)
        }
    };
    let assertions = raw.assertions.unwrap_or_default();
    match role {
        Role::Examples if output.is_none() => {
            return Err(field(
                "missing \"output\" (or a final assistant message)".into(),
            ))
        }
        Role::Examples if !assertions.is_empty() => {
            return Err(field(
                "\"assert\" belongs in the tests file, not the examples".into(),
            ))
        }
        Role::Tests if output.is_none() && assertions.is_empty() => {
            return Err(field(
                "a test needs an \"output\" or at least one \"assert\"".into(),
            ))
        }
        _ => {}
    }
    Ok(Example {
        input,
        output,
        assertions,
        origin: Some(origin),
    })
}

fn json_type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Parses JSONL text; `path` names the source in errors. Blank lines are
/// skipped; an input with no example is [`TaskError::Empty`].
pub fn parse_jsonl(text: &str, path: &Path, role: Role) -> Result<Vec<Example>, TaskError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}');
        if line.trim().is_empty() {
            continue;
        }
        let origin = Origin {
            path: path.to_owned(),
            line: i + 1,
        };
        out.push(parse_line(line, role, origin)?);
    }
    if out.is_empty() {
        return Err(TaskError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(out)
}

/// Loads a JSONL file, or every `*.jsonl` file of a directory in name order.
pub fn load_jsonl(path: &Path, role: Role) -> Result<Vec<Example>, TaskError> {
    let io = |source| TaskError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(TaskError::NoJsonl {
                path: path.to_owned(),
            });
        }
        let mut out = Vec::new();
        for f in files {
            out.extend(load_jsonl(&f, role)?);
        }
        return Ok(out);
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse_jsonl(&text, path, role)
}

/// Parameters of the held-out split used when no tests are given.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitParams {
    /// Seed of the split.
    #[serde(default)]
    pub seed: u64,
    /// Share of the examples held out, in (0, 1).
    #[serde(default = "default_holdout")]
    pub holdout: f64,
}

fn default_holdout() -> f64 {
    DEFAULT_HOLDOUT
}

impl Default for SplitParams {
    fn default() -> Self {
        Self {
            seed: DEFAULT_SPLIT_SEED,
            holdout: DEFAULT_HOLDOUT,
        }
    }
}

/// The record of a seeded split: enough to reproduce and audit it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// The seed.
    pub seed: u64,
    /// The requested held-out share.
    pub holdout: f64,
    /// Digests ([`Example::digest`]) of the held-out examples, sorted.
    pub held_out: Vec<String>,
    /// Number of examples kept for training.
    pub train: usize,
}

/// A loaded, checked task.
#[derive(Clone, Debug)]
pub struct Task {
    /// The task description (the teacher's instruction).
    pub description: String,
    /// Training examples (each has an output).
    pub train: Vec<Example>,
    /// Held-out tests.
    pub tests: Vec<Example>,
    /// The split, when tests were carved out of the examples.
    pub split: Option<Split>,
    /// Exact duplicates (same input and output) dropped from the examples.
    pub duplicates_dropped: usize,
    /// Examples dropped from training because a test has the same input.
    pub leaked_dropped: usize,
}

impl Task {
    /// Checks and assembles a task. Exact duplicate examples are dropped
    /// (counted); the same input with different outputs anywhere in the
    /// examples or tests is [`TaskError::Contradictions`], listing every pair;
    /// an example whose input is also a test's is dropped from training
    /// (counted), so held-out tests stay unseen.
    /// With no tests, a seeded share of the examples is held out.
    pub fn assemble(
        description: impl Into<String>,
        examples: Vec<Example>,
        tests: Option<Vec<Example>>,
        split: SplitParams,
    ) -> Result<Task, TaskError> {
        let description = description.into();
        if description.trim().is_empty() {
            return Err(TaskError::Invalid("the task description is empty".into()));
        }
        let mut seen: BTreeMap<String, (Option<String>, Option<Origin>)> = BTreeMap::new();
        let mut contradictions = Vec::new();
        let mut train = Vec::with_capacity(examples.len());
        let mut duplicates_dropped = 0;
        for (is_test, ex) in examples
            .into_iter()
            .map(|e| (false, e))
            .chain(tests.iter().flatten().cloned().map(|e| (true, e)))
        {
            let key = ex.input.digest();
            match seen.get(&key) {
                Some((out, origin)) if ex.output.is_some() && out.is_some() => {
                    if out != &ex.output {
                        contradictions.push(Contradiction {
                            first: origin.clone().unwrap_or_else(unknown_origin),
                            second: ex.origin.clone().unwrap_or_else(unknown_origin),
                        });
                        continue;
                    }
                    if !is_test {
                        duplicates_dropped += 1;
                        continue;
                    }
                }
                Some(_) => {}
                None => {
                    seen.insert(key, (ex.output.clone(), ex.origin.clone()));
                }
            }
            if !is_test {
                train.push(ex);
            }
        }
        if !contradictions.is_empty() {
            return Err(TaskError::Contradictions(contradictions));
        }
        let mut leaked_dropped = 0;
        let (train, tests, split) = match tests {
            Some(t) => {
                // Held out means unseen: a test's input never trains.
                let test_inputs: BTreeSet<String> = t.iter().map(|e| e.input.digest()).collect();
                let before = train.len();
                let train: Vec<Example> = train
                    .into_iter()
                    .filter(|e| !test_inputs.contains(&e.input.digest()))
                    .collect();
                leaked_dropped = before - train.len();
                (train, t, None)
            }
            None => {
                let (train, held, record) = split_examples(train, split)?;
                (train, held, Some(record))
            }
        };
        Ok(Task {
            description,
            train,
            tests,
            split,
            duplicates_dropped,
            leaked_dropped,
        })
    }
}

fn unknown_origin() -> Origin {
    Origin {
        path: PathBuf::from("<memory>"),
        line: 0,
    }
}

/// Splits `examples` into (train, held-out) deterministically: examples are
/// ordered by SHA-256(seed as 8 little-endian bytes ‖ example digest as hex
/// text) and the first `max(1, round(n × holdout))` are held out (at least
/// one stays for training). Both halves keep the original order.
pub fn split_examples(
    examples: Vec<Example>,
    params: SplitParams,
) -> Result<(Vec<Example>, Vec<Example>, Split), TaskError> {
    let n = examples.len();
    if n < 2 {
        return Err(TaskError::TooFewForSplit { n });
    }
    if !(params.holdout > 0.0 && params.holdout < 1.0) {
        return Err(TaskError::Invalid(format!(
            "split.holdout must be in (0, 1), got {}",
            params.holdout
        )));
    }
    let held_n = ((n as f64 * params.holdout).round() as usize).clamp(1, n - 1);
    let mut order: Vec<(String, usize)> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut buf = params.seed.to_le_bytes().to_vec();
            buf.extend_from_slice(e.digest().as_bytes());
            (sha256_hex(&buf), i)
        })
        .collect();
    order.sort();
    let mut held_idx: Vec<usize> = order[..held_n].iter().map(|(_, i)| *i).collect();
    held_idx.sort_unstable();
    let mut train = Vec::with_capacity(n - held_n);
    let mut held = Vec::with_capacity(held_n);
    for (i, e) in examples.into_iter().enumerate() {
        if held_idx.binary_search(&i).is_ok() {
            held.push(e);
        } else {
            train.push(e);
        }
    }
    let mut digests: Vec<String> = held.iter().map(Example::digest).collect();
    digests.sort();
    let record = Split {
        seed: params.seed,
        holdout: params.holdout,
        held_out: digests,
        train: train.len(),
    };
    Ok((train, held, record))
}

/// A string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The `kolm.toml` task file: the same fields as `kolmctl compile`'s flags,
/// plus teacher settings and prices. Every field is optional here; flags
/// [`overlay`](TaskFile::overlay) the file and [`validate`](TaskFile::validate)
/// checks the result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    /// The task description.
    pub task: Option<String>,
    /// Examples: a JSONL file or a directory of them.
    pub examples: Option<PathBuf>,
    /// Held-out tests (JSONL).
    pub tests: Option<PathBuf>,
    /// A document corpus: a folder (walked recursively) or one file. Every
    /// prompt of the compile is grounded in it and its index ships in the
    /// artifact.
    pub corpus: Option<PathBuf>,
    /// The embedder that indexes the corpus and reads queries at run time
    /// (a sentence-transformers folder or zip) [default: `$KOLM_EMBEDDER`].
    pub embedder: Option<PathBuf>,
    /// Chunks recalled per prompt, 1 to 32 [default: 4, what kolmd recalls
    /// per request].
    pub recall_k: Option<usize>,
    /// The base: a GGUF path, an artifact or a name; or a list of them, of
    /// which the compile ships the smallest whose K passes the gate.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub base: Vec<String>,
    /// The teacher, `PROVIDER:MODEL`.
    pub teacher: Option<String>,
    /// Teacher samples per example.
    pub k: Option<u32>,
    /// K-score gate in [0, 1].
    pub gate: Option<f64>,
    /// Free-text tasks: the similarity to the reference (ROUGE-L F1) at or
    /// above which an answer counts as correct, in (0, 1] [default:
    /// inferred from the references, see `docs/compile.md`].
    pub similarity_min: Option<f64>,
    /// Synthetic inputs to ask the teacher for, in phrasings unlike the
    /// examples [default: 0].
    pub synthesize: Option<usize>,
    /// Teacher budget in USD.
    pub max_cost: Option<f64>,
    /// Signing key name.
    pub key: Option<String>,
    /// Output artifact path.
    pub out: Option<PathBuf>,
    /// Split parameters used when no tests are given.
    pub split: Option<SplitParams>,
    /// Teacher endpoint and client settings.
    pub teacher_config: Option<TeacherSettings>,
    /// Prices per model name, USD per million tokens.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, Price>,
}

impl TaskFile {
    /// Reads a task file; relative paths in it are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<TaskFile, TaskError> {
        let text = std::fs::read_to_string(path).map_err(|source| TaskError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut file = Self::parse(&text, path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut file.examples,
            &mut file.tests,
            &mut file.corpus,
            &mut file.embedder,
            &mut file.out,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        if let Some(c) = file
            .teacher_config
            .as_mut()
            .and_then(|t| t.cache_dir.as_mut())
        {
            if c.is_relative() {
                *c = dir.join(&*c);
            }
        }
        Ok(file)
    }

    /// Parses task-file text; `path` names it in errors. Paths stay as
    /// written.
    pub fn parse(text: &str, path: &Path) -> Result<TaskFile, TaskError> {
        toml::from_str(text).map_err(|e| TaskError::Toml {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// `self` with every field that `flags` sets replaced by the flag's value
    /// (flags win over the file). Prices are merged, flags winning.
    pub fn overlay(mut self, flags: TaskFile) -> TaskFile {
        macro_rules! take {
            ($($f:ident),*) => { $( if flags.$f.is_some() { self.$f = flags.$f; } )* };
        }
        take!(
            task,
            examples,
            tests,
            corpus,
            embedder,
            recall_k,
            teacher,
            k,
            gate,
            similarity_min,
            synthesize,
            max_cost,
            key,
            out,
            split,
            teacher_config
        );
        if !flags.base.is_empty() {
            self.base = flags.base;
        }
        self.prices.extend(flags.prices);
        self
    }

    /// Checks required fields and value ranges.
    pub fn validate(&self) -> Result<(), TaskError> {
        let missing: Vec<&str> = [
            ("task", self.task.is_none()),
            ("examples", self.examples.is_none()),
            ("teacher", self.teacher.is_none()),
            ("out", self.out.is_none()),
        ]
        .into_iter()
        .filter_map(|(n, m)| m.then_some(n))
        .collect();
        if !missing.is_empty() {
            return Err(TaskError::Invalid(format!(
                "missing required field(s): {}",
                missing.join(", ")
            )));
        }
        if self.k == Some(0) {
            return Err(TaskError::Invalid("k must be at least 1".into()));
        }

        if let Some(g) = self.gate {
            if !(0.0..=1.0).contains(&g) {
                return Err(TaskError::Invalid(format!(
                    "gate must be in [0, 1], got {g}"
                )));
            }
        }
        if let Some(m) = self.similarity_min {
            if !(m > 0.0 && m <= 1.0) {
                return Err(TaskError::Invalid(format!(
                    "similarity_min must be in (0, 1], got {m}"
                )));
            }
        }
        if let Some(c) = self.max_cost {
            if !(c.is_finite() && c >= 0.0) {
                return Err(TaskError::Invalid(format!(
                    "max_cost must be a non-negative number of USD, got {c}"
                )));
            }
        }
        if let Some(t) = &self.teacher {
            TeacherSpec::parse(t).map_err(|e| TaskError::Invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// `k`, or [`DEFAULT_K`].
    pub fn k_or_default(&self) -> u32 {
        self.k.unwrap_or(DEFAULT_K)
    }

    /// `gate`, or [`DEFAULT_GATE`].
    pub fn gate_or_default(&self) -> f64 {
        self.gate.unwrap_or(DEFAULT_GATE)
    }

    /// Loads the examples and tests and assembles the [`Task`]. Call after
    /// [`validate`](TaskFile::validate).
    pub fn load_task(&self) -> Result<Task, TaskError> {
        let examples_path = self
            .examples
            .as_deref()
            .ok_or_else(|| TaskError::Invalid("missing required field(s): examples".into()))?;
        let examples = load_jsonl(examples_path, Role::Examples)?;
        let tests = self
            .tests
            .as_deref()
            .map(|p| load_jsonl(p, Role::Tests))
            .transpose()?;
        Task::assemble(
            self.task.clone().unwrap_or_default(),
            examples,
            tests,
            self.split.unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("ex.jsonl")
    }

    #[test]
    fn parses_both_shapes_and_assertions() {
        let text = r#"{"input":"a","output":"A"}

{"messages":[{"role":"system","content":"s"},{"role":"user","content":"b"},{"role":"assistant","content":"B"}]}
"#;
        let ex = parse_jsonl(text, &p(), Role::Examples).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].input, Input::Text("a".into()));
        assert_eq!(ex[1].output.as_deref(), Some("B"));
        assert_eq!(
            ex[1].input,
            Input::Chat(vec![Message::new("system", "s"), Message::new("user", "b")])
        );
        assert_eq!(ex[1].origin.as_ref().unwrap().line, 3);

        let t = r#"{"input":"q","assert":[{"type":"contains","value":"x"},{"type":"not-regex","value":"^\\d+$"}]}"#;
        let tests = parse_jsonl(t, &p(), Role::Tests).unwrap();
        assert_eq!(tests[0].assertions.len(), 2);
        assert!(tests[0].output.is_none());
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let text = "{\"input\":\"a\",\"output\":\"b\"}\n{\"input\": \"a\",\n";
        let e = parse_jsonl(text, &p(), Role::Examples).unwrap_err();
        assert!(matches!(e, TaskError::Json { line: 2, .. }), "{e}");
        assert!(
            e.to_string().starts_with("ex.jsonl:2: malformed JSON"),
            "{e}"
        );
    }

    #[test]
    fn missing_and_wrong_fields_are_clear() {
        let cases = [
            (r#"{"input":"a"}"#, "missing \"output\""),
            (r#"{"output":"a"}"#, "missing \"input\""),
            (
                r#"{"input":1,"output":"a"}"#,
                "\"input\" must be a string, found a number",
            ),
            (r#"{"input":"a","ouput":"b"}"#, "unknown field `ouput`"),
            (r#"[1]"#, "must be a JSON object"),
            (
                r#"{"messages":[{"role":"bot","content":"x"}]}"#,
                "is not one of system",
            ),
            (
                r#"{"input":"a","output":"b","assert":[{"type":"contains","value":"b"}]}"#,
                "belongs in the tests file",
            ),
        ];
        for (line, want) in cases {
            let e = parse_jsonl(line, &p(), Role::Examples)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{line}: {e}");
            assert!(e.starts_with("ex.jsonl:1: "), "{e}");
        }
        let e = parse_jsonl(r#"{"input":"a"}"#, &p(), Role::Tests).unwrap_err();
        assert!(e
            .to_string()
            .contains("needs an \"output\" or at least one"));
        let e = parse_jsonl(
            r#"{"input":"a","assert":[{"type":"frobnicate","value":"b"}]}"#,
            &p(),
            Role::Tests,
        )
        .unwrap_err();
        assert!(e.to_string().contains("frobnicate"), "{e}");
    }

    #[test]
    fn empty_file_is_an_error() {
        let e = parse_jsonl("\n  \n", &p(), Role::Examples).unwrap_err();
        assert!(matches!(e, TaskError::Empty { .. }));
    }

    #[test]
    fn contradictions_are_all_reported_and_duplicates_dropped() {
        let text = r#"{"input":"a","output":"1"}
{"input":"a","output":"1"}
{"input":"b","output":"2"}
{"input":"a","output":"3"}
{"input":"b","output":"4"}
"#;
        let ex = parse_jsonl(text, &p(), Role::Examples).unwrap();
        let e = Task::assemble("t", ex, None, SplitParams::default()).unwrap_err();
        match &e {
            TaskError::Contradictions(c) => {
                assert_eq!(c.len(), 2);
                assert_eq!((c[0].first.line, c[0].second.line), (1, 4));
                assert_eq!((c[1].first.line, c[1].second.line), (3, 5));
            }
            other => panic!("{other}"),
        }
        assert!(
            e.to_string().contains("ex.jsonl:4 contradicts ex.jsonl:1"),
            "{e}"
        );

        let ex = parse_jsonl(
            &text.lines().take(3).collect::<Vec<_>>().join("\n"),
            &p(),
            Role::Examples,
        )
        .unwrap();
        let tests = parse_jsonl(
            r#"{"input":"b","output":"9"}"#,
            Path::new("t.jsonl"),
            Role::Tests,
        )
        .unwrap();
        let e = Task::assemble("t", ex.clone(), Some(tests), SplitParams::default()).unwrap_err();
        assert!(
            e.to_string().contains("t.jsonl:1 contradicts ex.jsonl:3"),
            "{e}"
        );
        let same = parse_jsonl(
            r#"{"input":"b","output":"2"}"#,
            Path::new("t.jsonl"),
            Role::Tests,
        )
        .unwrap();
        let task = Task::assemble("t", ex.clone(), Some(same), SplitParams::default()).unwrap();
        assert_eq!(
            (task.train.len(), task.leaked_dropped),
            (1, 1),
            "the test's input left training"
        );
        let task = Task::assemble("t", ex, None, SplitParams::default()).unwrap();
        assert_eq!(task.duplicates_dropped, 1);
        assert_eq!(task.train.len() + task.tests.len(), 2);
    }

    fn many(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                input: Input::Text(format!("in {i}")),
                output: Some(format!("out {i}")),
                assertions: vec![],
                origin: None,
            })
            .collect()
    }

    proptest::proptest! {
        /// Arbitrary lines never panic the parser; every error names the file
        /// and a line that exists.
        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec("[ -~]{0,40}", 1..6)) {
            let text = lines.join("\n");
            for role in [Role::Examples, Role::Tests] {
                if let Err(e) = parse_jsonl(&text, &p(), role) {
                    match e {
                        TaskError::Json { line, .. } | TaskError::Field { line, .. } => {
                            proptest::prop_assert!(line >= 1 && line <= lines.len());
                        }
                        TaskError::Empty { .. } => {}
                        other => proptest::prop_assert!(false, "unexpected {other}"),
                    }
                }
            }
        }
    }

    #[test]
    fn split_is_seeded_recorded_and_stable() {
        let params = SplitParams {
            seed: 7,
            holdout: 0.25,
        };
        let (train, held, rec) = split_examples(many(40), params).unwrap();
        assert_eq!((train.len(), held.len()), (30, 10));
        assert_eq!(rec.train, 30);
        assert_eq!(rec.seed, 7);
        let mut digests: Vec<String> = held.iter().map(Example::digest).collect();
        digests.sort();
        assert_eq!(digests, rec.held_out);
        // Same seed, same split; and independent of input order.
        let mut rev = many(40);
        rev.reverse();
        let (_, _, rec2) = split_examples(rev, params).unwrap();
        assert_eq!(rec.held_out, rec2.held_out);
        // Another seed, another split.
        let (_, _, rec3) = split_examples(many(40), SplitParams { seed: 8, ..params }).unwrap();
        assert_ne!(rec.held_out, rec3.held_out);
        // Never empties either side.
        let (train, held, _) = split_examples(
            many(2),
            SplitParams {
                seed: 0,
                holdout: 0.99,
            },
        )
        .unwrap();
        assert_eq!((train.len(), held.len()), (1, 1));
        assert!(matches!(
            split_examples(many(1), params),
            Err(TaskError::TooFewForSplit { n: 1 })
        ));
    }

    #[test]
    fn task_file_parses_overlays_and_validates() {
        let text = r#"
task = "orders to JSON"
examples = "ex.jsonl"
base = "smollm2"
teacher = "openai:gpt-4o-mini"
k = 4
out = "o.kolm"
[split]
seed = 3
[teacher_config]
base_url = "http://127.0.0.1:8080/v1"
api_key_env = ""
concurrency = 2
[prices."gpt-4o-mini"]
input_per_mtok = 0.15
output_per_mtok = 0.6
"#;
        let f = TaskFile::parse(text, Path::new("kolm.toml")).unwrap();
        f.validate().unwrap();
        assert_eq!(f.k_or_default(), 4);
        assert_eq!(f.gate_or_default(), DEFAULT_GATE);
        assert_eq!(f.split.unwrap().holdout, DEFAULT_HOLDOUT);
        assert_eq!(f.prices["gpt-4o-mini"].output_per_mtok, 0.6);
        let merged = f.overlay(TaskFile {
            k: Some(0),
            ..Default::default()
        });
        assert!(merged
            .validate()
            .unwrap_err()
            .to_string()
            .contains("k must be"));

        let two =
            TaskFile::parse(r#"base = ["a.gguf", "b.gguf"]"#, Path::new("kolm.toml")).unwrap();
        assert_eq!(two.base, ["a.gguf", "b.gguf"]);
        let one = TaskFile::parse(r#"base = "a.gguf""#, Path::new("kolm.toml")).unwrap();
        assert_eq!(one.clone().overlay(two.clone()).base, two.base);
        assert_eq!(one.clone().overlay(TaskFile::default()).base, one.base);

        let e = TaskFile::parse("tsak = 1", Path::new("kolm.toml")).unwrap_err();
        assert!(
            e.to_string().contains("kolm.toml") && e.to_string().contains("tsak"),
            "{e}"
        );
        let e = TaskFile::default().validate().unwrap_err().to_string();
        assert!(e.contains("task, examples, teacher, out"), "{e}");
        let bad = TaskFile {
            gate: Some(1.5),
            ..TaskFile::parse(text, Path::new("kolm.toml")).unwrap()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn task_file_resolves_paths_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ex")).unwrap();
        std::fs::write(
            dir.path().join("ex/a.jsonl"),
            "{\"input\":\"x\",\"output\":\"1\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("ex/b.jsonl"),
            "{\"input\":\"y\",\"output\":\"2\"}\n{\"input\":\"z\",\"output\":\"3\"}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("ex/notes.txt"), "ignored").unwrap();
        std::fs::write(
            dir.path().join("kolm.toml"),
            "task='t'\nexamples='ex'\nbase='b'\nteacher='anthropic:claude'\nout='o.kolm'\n",
        )
        .unwrap();
        let f = TaskFile::load(&dir.path().join("kolm.toml")).unwrap();
        assert_eq!(f.out.as_deref(), Some(dir.path().join("o.kolm").as_path()));
        let task = f.load_task().unwrap();
        assert_eq!(task.train.len() + task.tests.len(), 3);
        assert!(task.split.is_some());
        std::fs::write(dir.path().join("ex/b.jsonl"), "{\"input\":\"y\"\n").unwrap();
        let e = f.load_task().unwrap_err().to_string();
        assert!(e.contains("b.jsonl:1: malformed JSON"), "{e}");
    }
}
