//! The prompts of a compile: what the teacher sees (the task, a few solved
//! examples, the input), what the base alone sees at evaluation (the task
//! and the input, zero-shot), and what the student is trained and evaluated
//! on (the input as the user will send it, nothing added).

use crate::example::{Example, Input, Message};
use crate::task::Task;

/// Solved examples shown to the teacher by default.
pub const DEFAULT_SHOTS: usize = 4;

/// The teacher's conversation for `input`: a system message with the task
/// description and up to `shots.len()` solved examples, then the input's own
/// messages (its system message, if any, is appended to the task's).
pub fn teacher_messages(description: &str, shots: &[&Example], input: &Input) -> Vec<Message> {
    let mut system = format!(
        "{}\n\nReply with the output only: no explanation, no preamble, in exactly the form of the examples.",
        description.trim()
    );
    for shot in shots {
        if let Some(out) = &shot.output {
            system.push_str("\n\nInput: ");
            system.push_str(&render_input(&shot.input));
            system.push_str("\nOutput: ");
            system.push_str(out);
        }
    }
    with_system(system, input)
}

/// The teacher's conversation for `example` of `task` (a training example
/// or a test), with up to `shots` solved training examples.
pub fn teacher_prompt(task: &Task, example: &Example, shots: usize) -> Vec<Message> {
    let shots = pick_shots(&task.train, example, shots);
    teacher_messages(&task.description, &shots, &example.input)
}

/// The base model's zero-shot conversation: the task description as the
/// system message, then the input.
pub fn base_messages(description: &str, input: &Input) -> Vec<Message> {
    with_system(description.trim().to_owned(), input)
}

/// The student's conversation: the input exactly as a user sends it. The
/// adapter is trained on these and the artifact serves them.
pub fn student_messages(input: &Input) -> Vec<Message> {
    input.to_messages()
}

/// Up to `n` solved training examples to show the teacher for `current`:
/// the first `n` of `pool` in digest order that are not `current` itself,
/// so the choice does not depend on the order of the lines.
pub fn pick_shots<'a>(pool: &'a [Example], current: &Example, n: usize) -> Vec<&'a Example> {
    let mut sorted: Vec<(String, &Example)> = pool
        .iter()
        .filter(|e| e.output.is_some() && e.input != current.input)
        .map(|e| (e.digest(), e))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.into_iter().take(n).map(|(_, e)| e).collect()
}

/// The text of an input: the user turns of a chat, joined by newlines.
pub(crate) fn render_input(input: &Input) -> String {
    match input {
        Input::Text(t) => t.clone(),
        Input::Chat(messages) => messages
            .iter()
            .filter(|m| m.role == "user")
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn with_system(system: String, input: &Input) -> Vec<Message> {
    let mut messages = input.to_messages();
    match messages.first_mut() {
        Some(first) if first.role == "system" => {
            first.content = format!("{system}\n\n{}", first.content);
        }
        _ => messages.insert(0, Message::new("system", system)),
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(input: &str, output: &str) -> Example {
        Example {
            input: Input::Text(input.into()),
            output: Some(output.into()),
            assertions: vec![],
            origin: None,
        }
    }

    #[test]
    fn teacher_prompt_has_task_shots_and_input() {
        let pool = vec![ex("a", "1"), ex("b", "2"), ex("c", "3")];
        let shots = pick_shots(&pool, &pool[0], 2);
        assert_eq!(shots.len(), 2);
        assert!(shots.iter().all(|s| s.input != pool[0].input));
        let m = teacher_messages("Count.", &shots, &pool[0].input);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].role, "system");
        assert!(m[0].content.starts_with("Count."));
        assert_eq!(m[0].content.matches("\nOutput: ").count(), 2);
        assert_eq!(m[1], Message::new("user", "a"));
    }

    #[test]
    fn shots_do_not_depend_on_line_order() {
        let pool = vec![ex("a", "1"), ex("b", "2"), ex("c", "3"), ex("d", "4")];
        let mut reversed = pool.clone();
        reversed.reverse();
        let current = ex("z", "0");
        let one: Vec<_> = pick_shots(&pool, &current, 2)
            .into_iter()
            .cloned()
            .collect();
        let two: Vec<_> = pick_shots(&reversed, &current, 2)
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(one, two);
    }

    #[test]
    fn an_input_system_message_is_kept_after_the_task() {
        let input = Input::Chat(vec![
            Message::new("system", "Be terse."),
            Message::new("user", "hi"),
        ]);
        let m = base_messages("Greet.", &input);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].content, "Greet.\n\nBe terse.");
        assert_eq!(student_messages(&input), input.to_messages());
    }
}
