//! `kolmctl compile --from-drift NAME[:VERSION]`: what a recompile starts
//! from. The installed version gives its task, the examples it learned from
//! (`train/examples.jsonl`), its eval pack (the new version's tests, so the
//! regression gate compares the two on the same inputs), its recipe pack
//! (the new pack is grown by it), its base, its teacher and its `k` and
//! gate; the drift log gives the inputs kolmd logged for that version.

use std::path::PathBuf;

use anyhow::{bail, Context};
use kolm_artifact::names;
use kolm_compile::pipeline::EvalPack;
use kolm_compile::task::{parse_jsonl, Role, SplitParams};
use kolm_compile::{Example, Input, Message, RecipePack, Task, TaskFile};
use kolm_drift::{DriftDb, DriftError, DriftInput, Filter};
use kolm_store::Home;
use serde::Serialize;

/// The installed version a recompile replaces, and its drifted inputs.
pub struct Previous {
    /// `NAME:VERSION`.
    pub reference: String,
    pub name: String,
    pub version: String,
    description: String,
    teacher: Option<String>,
    k: Option<u32>,
    gate: Option<f64>,
    /// The base blob (a GGUF file in the store).
    base: PathBuf,
    /// The examples blob (`train/examples.jsonl`).
    examples_path: PathBuf,
    examples: Vec<Example>,
    /// Its eval pack: the tests of the new version, and the gate's "before".
    pub eval: EvalPack,
    /// Its recipe pack, which the new one grows from.
    pub recipes: Option<RecipePack>,
    /// The drifted inputs (no outputs), oldest first, one per input.
    pub drifted: Vec<Example>,
    /// What was read from the drift log.
    pub drift_log: DriftRead,
}

/// What the drift log held for the version.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DriftRead {
    /// The database read.
    pub database: PathBuf,
    /// Entries logged for the version.
    pub entries: usize,
    /// Distinct inputs among them (what the drift stage is given).
    pub inputs: usize,
    /// Entries stored redacted (a digest only): nothing to learn from.
    pub redacted: usize,
}

impl Previous {
    /// Reads `reference` from the store and its drifted inputs from the
    /// drift log under the kolm home.
    pub fn load(home: &Home, reference: &str) -> anyhow::Result<Previous> {
        let store = home.store()?;
        let record = store.get(reference).with_context(|| {
            format!("--from-drift {reference}: not an installed artifact (see `kolmctl list`)")
        })?;
        let (name, version) = (record.name.clone(), record.version.clone());
        let reference = record.reference();
        let predicate = &record.statement.predicate;
        let blob = |entry: &str| -> anyhow::Result<Option<PathBuf>> {
            Ok(store
                .entry_blob(&record, entry)
                .with_context(|| format!("cannot read {entry} of {reference}"))?
                .map(|b| b.path))
        };
        let examples_path = blob(names::EXAMPLES)?.with_context(|| {
            format!(
                "{reference} does not carry the examples it learned from ({}): it was compiled before artifacts did, or packed rather than compiled; recompile it from its task file once, then --from-drift works",
                names::EXAMPLES
            )
        })?;
        let eval_path = blob(names::EVAL)?
            .with_context(|| format!("{reference} has no eval pack: it was not compiled"))?;
        let base = blob(names::BASE)?.context("the installed artifact has no base model")?;
        let examples_text = std::fs::read_to_string(&examples_path)
            .with_context(|| format!("cannot read {}", examples_path.display()))?;
        let examples = parse_jsonl(&examples_text, &examples_path, Role::Examples)
            .with_context(|| format!("the examples of {reference} do not parse"))?;
        let eval = EvalPack::parse(
            &std::fs::read(&eval_path)
                .with_context(|| format!("cannot read {}", eval_path.display()))?,
        )
        .with_context(|| format!("the eval pack of {reference} does not parse"))?;
        let recipes = match blob(names::RECIPES)? {
            None => None,
            Some(p) => Some(
                RecipePack::from_bytes(
                    &std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?,
                )
                .with_context(|| format!("the recipe pack of {reference} does not parse"))?,
            ),
        };
        let compile = predicate.compile.as_ref();
        let number = |key: &str| compile.and_then(|c| c.get(key));
        let (drifted, drift_log) = drifted_inputs(home, &name, &version)?;
        Ok(Previous {
            description: predicate.task.clone().unwrap_or_default(),
            teacher: predicate
                .teacher
                .as_ref()
                .map(|t| format!("{}:{}", t.provider, t.model)),
            k: number("k")
                .and_then(serde_json::Value::as_u64)
                .and_then(|k| u32::try_from(k).ok()),
            gate: number("gate").and_then(serde_json::Value::as_f64),
            reference,
            name,
            version,
            base,
            examples_path,
            examples,
            eval,
            recipes,
            drifted,
            drift_log,
        })
    }

    /// `file` completed from this version where it is silent: the task,
    /// the examples, the base, the teacher, `k` and the gate. The task file's
    /// own task, examples and tests are replaced (a note says so): the new
    /// version learns from what the old one did and is scored on its tests.
    pub fn fill(&self, mut file: TaskFile, quiet: bool) -> TaskFile {
        if !quiet && (file.examples.is_some() || file.tests.is_some()) {
            eprintln!(
                "--from-drift: the task, examples and tests come from {} (the task file's are not read)",
                self.reference
            );
        }
        file.task = Some(self.description.clone());
        file.examples = Some(self.examples_path.clone());
        file.tests = None;
        if file.base.is_empty() {
            file.base = vec![self.base.to_string_lossy().into_owned()];
        }
        if file.teacher.is_none() {
            file.teacher = self.teacher.clone();
        }
        if file.k.is_none() {
            file.k = self.k;
        }
        if file.gate.is_none() {
            file.gate = self.gate;
        }
        if file.out.is_none() {
            file.out = Some(PathBuf::from(format!(
                "{}-{}.kolm",
                self.name,
                next_version(&self.version)
            )));
        }
        file
    }

    /// The task: this version's description and examples, its eval pack's
    /// tests (inputs, references and assertions).
    pub fn task(&self) -> anyhow::Result<Task> {
        let tests = self
            .eval
            .tests
            .iter()
            .map(|t| Example {
                input: t.input.clone(),
                output: t.output.clone(),
                assertions: t.assertions.clone(),
                origin: None,
            })
            .collect();
        Ok(Task::assemble(
            self.description.clone(),
            self.examples.clone(),
            Some(tests),
            SplitParams::default(),
        )?)
    }
}

/// The version after `version`: its last numeric component plus one
/// (`0.1.0` → `0.1.1`, `3` → `4`), else `version.1`.
pub fn next_version(version: &str) -> String {
    match version.rsplit_once('.') {
        Some((head, last)) => match last.parse::<u64>() {
            Ok(n) => format!("{head}.{}", n + 1),
            Err(_) => format!("{version}.1"),
        },
        None => match version.parse::<u64>() {
            Ok(n) => (n + 1).to_string(),
            Err(_) => format!("{version}.1"),
        },
    }
}

/// The distinct inputs the drift log holds for `name:version`, oldest
/// first. No log, or no input in it, is an error that says why.
fn drifted_inputs(
    home: &Home,
    name: &str,
    version: &str,
) -> anyhow::Result<(Vec<Example>, DriftRead)> {
    let database = kolm_drift::default_path(home.root());
    let db = match DriftDb::open_read_only(&database) {
        Ok(db) => db,
        Err(DriftError::Missing { .. }) => bail!(
            "--from-drift {name}:{version}: there is no drift log at {} yet: kolmd writes it while it serves compiled artifacts (drift = true in its config)",
            database.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let mut entries = db.list(&Filter {
        artifact: Some(name.to_owned()),
        version: Some(version.to_owned()),
        ..Filter::default()
    })?;
    entries.sort_by_key(|e| (e.entry.created_ms, e.id));
    let mut read = DriftRead {
        database,
        entries: entries.len(),
        ..DriftRead::default()
    };
    let mut seen = std::collections::HashSet::new();
    let mut inputs = Vec::new();
    for e in entries {
        let Some(input) = e.entry.input else {
            read.redacted += 1;
            continue;
        };
        if !seen.insert(e.entry.input_digest.clone()) {
            continue;
        }
        inputs.push(Example {
            input: match input {
                DriftInput::Text(t) => Input::Text(t),
                DriftInput::Chat(messages) => Input::Chat(
                    messages
                        .into_iter()
                        .map(|m| Message {
                            role: m.role,
                            content: m.content,
                        })
                        .collect(),
                ),
            },
            output: None,
            assertions: Vec::new(),
            origin: None,
        });
    }
    read.inputs = inputs.len();
    if inputs.is_empty() {
        bail!(
            "--from-drift {name}:{version}: the drift log ({}) holds no input for it ({} entr{} logged, {} redacted): nothing to learn from",
            read.database.display(),
            read.entries,
            if read.entries == 1 { "y" } else { "ies" },
            read.redacted
        );
    }
    Ok((inputs, read))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_version_bumps_the_last_number() {
        assert_eq!(next_version("0.1.0"), "0.1.1");
        assert_eq!(next_version("1.2.9"), "1.2.10");
        assert_eq!(next_version("3"), "4");
        assert_eq!(next_version("2024.1-rc"), "2024.1-rc.1");
        assert_eq!(next_version("beta"), "beta.1");
    }
}
