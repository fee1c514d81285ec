//! The template that grounds a request in retrieved chunks (documented in
//! `docs/recall.md`): the hits become numbered sources in a system message
//! placed before the conversation, and the model is asked to cite them.

use crate::index::Hit;

/// Chunks recalled per request unless the request says otherwise (kolmd),
/// and per prompt of a compile unless the task says otherwise, so a student
/// is trained on the grounding it is served with.
pub const DEFAULT_K: usize = 4;

/// The most chunks one request or prompt may ask for.
pub const MAX_K: usize = 32;

/// The instruction that precedes the sources.
pub const INSTRUCTION: &str = "Answer using the numbered sources below when they are relevant, \
and cite them by number like [1]. If they do not contain the answer, say so.";

/// How a source is labelled: `path, page 3`, `path, record 7` or
/// `path, bytes 0-312`.
pub fn label(hit: &Hit) -> String {
    source_label(&hit.source, hit.page, hit.record, hit.offset, hit.end)
}

/// [`label`] from a citation's parts (as clients receive them).
pub fn source_label(
    source: &str,
    page: Option<u32>,
    record: Option<u64>,
    offset: u64,
    end: u64,
) -> String {
    match (page, record) {
        (Some(p), _) => format!("{source}, page {p}"),
        (None, Some(r)) => format!("{source}, record {r}"),
        (None, None) => format!("{source}, bytes {offset}-{end}"),
    }
}

/// The grounding context for `hits`:
///
/// ```text
/// Answer using the numbered sources below ... say so.
///
/// [1] (notes/paris.md, bytes 0-312)
/// <chunk text>
///
/// [2] ...
/// ```
///
/// Empty when there are no hits.
pub fn context(hits: &[Hit]) -> String {
    if hits.is_empty() {
        return String::new();
    }
    let mut out = String::from(INSTRUCTION);
    for (i, hit) in hits.iter().enumerate() {
        out.push_str(&format!(
            "\n\n[{}] ({})\n{}",
            i + 1,
            label(hit),
            hit.text.trim()
        ));
    }
    out
}

/// Grounds a conversation of `(role, content)` messages in `hits`: the
/// context joins the first message when it is a system message, else goes
/// into a new system message in front. Unchanged when there are no hits.
pub fn ground<M>(
    messages: &mut Vec<M>,
    hits: &[Hit],
    role: impl Fn(&M) -> &str,
    content: impl Fn(&mut M) -> &mut String,
    system: impl FnOnce(String) -> M,
) {
    if hits.is_empty() {
        return;
    }
    match messages.first_mut() {
        Some(m) if role(m) == "system" => {
            let c = content(m);
            *c = system_message(Some(c), hits);
        }
        _ => messages.insert(0, system(system_message(None, hits))),
    }
}

/// The best cosine similarity to the query among `hits` (those that came
/// from vector search); `None` when none did. How well the corpus answers
/// a request: the drift log's recall figure, at compile and at run time.
pub fn best_similarity(hits: &[Hit]) -> Option<f64> {
    hits.iter()
        .filter_map(|h| h.similarity)
        .map(f64::from)
        .reduce(f64::max)
}

/// The system message of a grounded request: the request's own system
/// message (if any), a blank line, then [`context`].
pub fn system_message(existing: Option<&str>, hits: &[Hit]) -> String {
    let ctx = context(hits);
    match existing {
        Some(s) if !s.trim().is_empty() && !ctx.is_empty() => format!("{}\n\n{ctx}", s.trim_end()),
        Some(s) if ctx.is_empty() => s.to_owned(),
        _ => ctx,
    }
}
