//! Synthetic inputs from the teacher (`--synthesize N`): the teacher sees
//! the task and its examples and writes new inputs in phrasings unlike
//! them; duplicates and near-duplicates of any example, test or earlier
//! synthetic input are dropped (a test is never trained on); each survivor
//! is labelled k times with the teacher prompt, and kept only when every
//! sample passes the verifier's gates and all samples agree. The kept
//! inputs join the training examples (never the validation share). Every
//! teacher call goes through the response cache, so a recompile makes
//! none.

use serde::{Deserialize, Serialize};

use super::prompts;
use crate::example::{Example, Input, Message};
use crate::task::Task;
use crate::verifier::{json_equal, similarity, Verifier};

/// Inputs asked for in one teacher request.
pub const BATCH: usize = 10;

/// A synthetic input this similar (ROUGE-L F1) to an existing one is a
/// near-duplicate.
pub const NEAR_DUPLICATE: f64 = 0.9;

/// What synthesis did, for the report and the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthesisReport {
    /// Inputs asked for.
    pub requested: usize,
    /// Inputs the teacher's replies held.
    pub received: usize,
    /// Dropped: equal or near-equal to an example, a test or an earlier
    /// synthetic input.
    pub duplicates: usize,
    /// Dropped: a label sample failed the verifier's gates.
    pub failed_gates: usize,
    /// Dropped: the label samples disagreed.
    pub disagreed: usize,
    /// Kept and trained on.
    pub kept: usize,
    /// Teacher requests that asked for inputs.
    pub requests: usize,
}

/// What the drift stage did with the drifted inputs of `--from-drift`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbsorbReport {
    /// Drifted inputs given.
    pub inputs: usize,
    /// Dropped: equal or near-equal to an example, a test or an earlier
    /// drifted input.
    pub duplicates: usize,
    /// Dropped: a label sample failed the verifier's gates.
    pub failed_gates: usize,
    /// Dropped: the label samples disagreed.
    pub disagreed: usize,
    /// Kept and trained on.
    pub kept: usize,
    /// The kept inputs' digests (the drift log's `input_digest`): the new
    /// version does not log them again.
    pub covered: Vec<String>,
}

/// The teacher's conversation asking for `n` new inputs (request `batch`).
pub fn request_messages(task: &Task, n: usize, batch: usize) -> Vec<Message> {
    let mut system = format!(
        "You write test inputs for a task.\n\nTask: {}\n\nHere are examples of inputs and their outputs:",
        task.description.trim()
    );
    for e in task.train.iter().take(prompts::DEFAULT_SHOTS * 2) {
        if let Some(out) = &e.output {
            system.push_str("\n\nInput: ");
            system.push_str(&prompts::render_input(&e.input));
            system.push_str("\nOutput: ");
            system.push_str(out);
        }
    }
    let user = format!(
        "Write {n} new inputs for this task (set {batch}). Make each one unlike the examples: other word orders, other names and values, 12- and 24-hour times, abbreviations, typos and extra words, longer and shorter messages. Each must still have one correct output. Reply with the inputs only, one per line, each as a JSON string, nothing else."
    );
    vec![Message::new("system", system), Message::new("user", user)]
}

/// The inputs in a reply: a JSON array of strings, or one input per line
/// (a JSON string, or plain text stripped of list numbering and bullets).
pub fn parse_inputs(text: &str) -> Vec<String> {
    let trimmed = text.trim();
    if let Ok(list) = serde_json::from_str::<Vec<String>>(trimmed) {
        return list
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
    }
    trimmed
        .lines()
        .filter_map(|line| {
            let line = line
                .trim()
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start_matches(['.', ')', '-', '*', ' '])
                .trim()
                .trim_end_matches(',');
            let value = serde_json::from_str::<String>(line).unwrap_or_else(|_| line.to_owned());
            let value = value.trim();
            (!value.is_empty()).then(|| value.to_owned())
        })
        .collect()
}

/// Whether `candidate` equals, or is a near-duplicate of, any of `known`.
pub fn is_near_duplicate(candidate: &str, known: &[String]) -> bool {
    let c = similarity::normalize(candidate);
    known.iter().any(|k| {
        similarity::normalize(k) == c || similarity::rouge_l(candidate, k) >= NEAR_DUPLICATE
    })
}

/// Why a labelled input was not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// A sample failed the gates.
    Gates,
    /// The samples disagree.
    Disagree,
}

/// The agreed label of `samples` (trimmed): every one passes the gates and
/// all are the same answer (equal JSON values for JSON tasks, normalized
/// text otherwise).
pub fn agreed_label(verifier: &Verifier, samples: &[String]) -> Result<String, Rejected> {
    let trimmed: Vec<&str> = samples.iter().map(|s| s.trim()).collect();
    let Some(first) = trimmed.first() else {
        return Err(Rejected::Disagree);
    };
    if trimmed.iter().any(|s| !verifier.judge(None, &[], s).passed) {
        return Err(Rejected::Gates);
    }
    let same = |a: &str, b: &str| match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) if x.is_object() || x.is_array() => json_equal(&x, &y),
        _ => similarity::normalize(a) == similarity::normalize(b),
    };
    if trimmed.iter().all(|s| same(first, s)) {
        Ok((*first).to_owned())
    } else {
        Err(Rejected::Disagree)
    }
}

/// A synthetic example: the input as one user message and its label.
pub fn example(input: String, output: String) -> Example {
    Example {
        input: Input::Text(input),
        output: Some(output),
        assertions: Vec::new(),
        origin: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(input: &str, output: &str) -> Example {
        example(input.into(), output.into())
    }

    #[test]
    fn replies_parse_as_arrays_json_lines_or_plain_lines() {
        assert_eq!(parse_inputs(r#"["a b", " c "]"#), ["a b", "c"]);
        assert_eq!(
            parse_inputs("\"call Bo at 9\",\n\"meet Ana 21:30\"\n\n"),
            ["call Bo at 9", "meet Ana 21:30"]
        );
        assert_eq!(
            parse_inputs("1. call Bo at 9\n2) meet Ana\n- lunch w/ Cy\n* x"),
            ["call Bo at 9", "meet Ana", "lunch w/ Cy", "x"]
        );
        assert!(parse_inputs("  \n ").is_empty());
    }

    #[test]
    fn near_duplicates_are_caught_by_text_and_similarity() {
        let known = vec!["Book a call with Ana at 9:15 tomorrow".to_owned()];
        assert!(is_near_duplicate(
            "book a  call with ana at 9:15 tomorrow",
            &known
        ));
        assert!(is_near_duplicate(
            "Book a call with Ana at 9:15 tomorrow!",
            &known
        ));
        assert!(!is_near_duplicate("ana, 21:15, quick sync pls", &known));
    }

    #[test]
    fn labels_are_kept_only_when_every_sample_passes_and_agrees() {
        let v = Verifier::infer(
            &[
                ex("a", r#"{"who":"Ana","time":"09:15"}"#),
                ex("b", r#"{"who":"Bo","time":"21:30"}"#),
            ],
            &[],
        )
        .unwrap();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            agreed_label(
                &v,
                &s(&[
                    r#"{"who":"Cy","time":"10:00"}"#,
                    r#" {"time":"10:00","who":"Cy"}"#
                ])
            ),
            Ok(r#"{"who":"Cy","time":"10:00"}"#.to_owned())
        );
        assert_eq!(
            agreed_label(
                &v,
                &s(&[
                    r#"{"who":"Cy","time":"10:00"}"#,
                    r#"{"who":"Cy","time":"22:00"}"#
                ])
            ),
            Err(Rejected::Disagree)
        );
        assert_eq!(
            agreed_label(&v, &s(&[r#"{"who":"Cy"}"#, r#"{"who":"Cy"}"#])),
            Err(Rejected::Gates)
        );
        assert_eq!(agreed_label(&v, &[]), Err(Rejected::Disagree));
    }

    #[test]
    fn the_request_shows_the_task_and_asks_for_a_count() {
        let task = Task::assemble(
            "Extract the meeting.",
            vec![
                ex("Ana at 9:15", r#"{"who":"Ana"}"#),
                ex("Bo at 10", r#"{"who":"Bo"}"#),
            ],
            Some(vec![ex("Cy at 11", r#"{"who":"Cy"}"#)]),
            Default::default(),
        )
        .unwrap();
        let m = request_messages(&task, 7, 2);
        assert!(m[0].content.contains("Task: Extract the meeting."));
        assert!(m[0].content.contains("Input: Ana at 9:15"));
        assert!(!m[0].content.contains("Cy at 11"), "tests are never shown");
        assert!(m[1].content.starts_with("Write 7 new inputs"));
        assert!(m[1].content.contains("(set 2)"));
    }
}
