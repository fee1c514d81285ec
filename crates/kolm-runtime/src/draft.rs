//! Drafting with no draft model: at each decoding step of a sequence, up to
//! `draft_max` tokens are guessed and then checked by the model in the same
//! batched decode (the engine's verification keeps the longest prefix the
//! model agrees with, so output never changes).
//!
//! Where a draft comes from, in order:
//! 1. [`Source::Grammar`]: tokens the active grammar forces (llguidance's
//!    fast-forward tokens of a shadow matcher that follows the output).
//! 2. [`Source::Recipes`]: the artifact's recipe pack, over the output's
//!    last tokens (it was mined from outputs).
//! 3. [`Source::Prompt`]: prompt lookup, the continuation of the latest
//!    earlier occurrence of the last 2 to 4 tokens in this request's own
//!    prompt and output (extraction copies from its input).
//!
//! Each [`Drafter`] belongs to one request and starts empty, so nothing one
//! request saw can shape another's drafts. The draft length adapts: it
//! grows while drafts are accepted whole, shrinks to what was accepted
//! otherwise, and drafting pauses (for longer each time) while acceptance
//! stays low.

use std::sync::Arc;

use kolm_artifact::recipes::{RecipePack, MAX_CONTEXT};
use llguidance::Matcher;

/// Where a drafted token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Grammar,
    Recipes,
    Prompt,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Grammar, Source::Recipes, Source::Prompt];

    /// The label in metrics and responses.
    pub fn name(self) -> &'static str {
        match self {
            Source::Grammar => "grammar",
            Source::Recipes => "recipes",
            Source::Prompt => "prompt",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Drafted and accepted tokens of one source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCount {
    pub drafted: u32,
    pub accepted: u32,
}

/// What drafting did for one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DraftStats {
    /// Tokens drafted (checked by the model).
    pub drafted: u32,
    /// Drafted tokens the model agreed with (emitted without a step of
    /// their own).
    pub accepted: u32,
    /// Decoding steps of the request's output (each emits one token of the
    /// model's own plus the accepted drafts).
    pub steps: u32,
    /// The same, per source ([`Source::ALL`] order).
    pub by_source: [SourceCount; 3],
}

impl DraftStats {
    pub fn source(&self, source: Source) -> SourceCount {
        self.by_source[source.index()]
    }
}

/// How a context drafts.
#[derive(Clone, Debug)]
pub struct DraftConfig {
    /// Off: no request of this context drafts.
    pub enabled: bool,
    /// Most tokens drafted per sequence per step.
    pub max: usize,
    /// The artifact's recipe pack, if it has one.
    pub recipes: Option<Arc<RecipePack>>,
    /// Most tokens one step decodes for sequences and their drafts
    /// together before drafting stops: past it, a batch is full enough
    /// that verifying drafts costs more than it saves.
    pub step_budget: usize,
}

impl Default for DraftConfig {
    fn default() -> Self {
        DraftConfig {
            enabled: true,
            max: 8,
            recipes: None,
            step_budget: 16,
        }
    }
}

/// Shortest n-gram prompt lookup matches on (one token matches too often
/// to be worth a verification).
const PROMPT_MIN_NGRAM: usize = 2;
/// Longest n-gram prompt lookup tries first.
const PROMPT_MAX_NGRAM: usize = 4;
/// How far back prompt lookup searches (tokens).
const PROMPT_WINDOW: usize = 4096;
/// Acceptance is judged over this many recent drafted tokens.
const WINDOW: u32 = 24;
/// Below this share accepted over the window, drafting pauses.
const LOW_ACCEPTANCE: f32 = 0.25;

/// One request's drafting state.
pub(crate) struct Drafter {
    max: usize,
    /// Current draft length, 1 to `max`.
    length: usize,
    recipes: Option<Arc<RecipePack>>,
    grammar: Option<Matcher>,
    /// Prompt then output tokens, as the model saw them.
    history: Vec<u32>,
    /// Where the output starts in `history`.
    output_from: usize,
    /// Recent drafted and accepted (for pausing).
    recent_drafted: u32,
    recent_accepted: u32,
    /// Steps left without drafting, and the next pause's length.
    paused: u32,
    next_pause: u32,
    pub stats: DraftStats,
}

impl Drafter {
    /// A drafter for a request with this prompt; `grammar` is a copy of
    /// the request's matcher (in its initial state).
    pub fn new(config: &DraftConfig, prompt: &[u32], grammar: Option<Matcher>) -> Drafter {
        let max = config.max.max(1);
        Drafter {
            max,
            length: max,
            recipes: config.recipes.clone(),
            grammar,
            history: prompt.to_vec(),
            output_from: prompt.len(),
            recent_drafted: 0,
            recent_accepted: 0,
            paused: 0,
            next_pause: 8,
            stats: DraftStats::default(),
        }
    }

    /// Records a token the model emitted (sampled), in order.
    pub fn push(&mut self, token: u32) {
        self.history.push(token);
        if let Some(m) = self.grammar.as_mut() {
            if m.consume_token(token).is_err() {
                // The shadow lost track (it should not): stop using it.
                self.grammar = None;
            }
        }
    }

    /// Whether this sequence drafts at this step (pauses count down here).
    pub fn wants_to_draft(&mut self) -> bool {
        if self.paused > 0 {
            self.paused -= 1;
            return false;
        }
        true
    }

    /// Up to `limit` (and the current length) drafted tokens to follow the
    /// last pushed one, with their sources. `tokenize` turns the bytes a
    /// grammar forces into the model's tokens.
    pub fn draft(
        &mut self,
        limit: usize,
        tokenize: &dyn Fn(&[u8]) -> Vec<u32>,
    ) -> Vec<(u32, Source)> {
        let want = self.length.min(limit);
        let mut out: Vec<(u32, Source)> = Vec::with_capacity(want);
        if want == 0 {
            return out;
        }
        if let Some(m) = self.grammar.as_mut() {
            if !m.is_stopped() {
                // llguidance forces tokens only for tokenizers it knows to
                // be canonical; the bytes it forces work for any.
                let bytes = m.compute_ff_bytes();
                if !bytes.is_empty() {
                    for t in tokenize(&bytes).into_iter().take(want) {
                        out.push((t, Source::Grammar));
                    }
                }
            }
        }
        let base = self.history.len();
        let mut buf = std::mem::take(&mut self.history);
        buf.extend(out.iter().map(|(t, _)| *t));
        while out.len() < want {
            let next = self
                .recipe_next(&buf)
                .map(|t| (t, Source::Recipes))
                .or_else(|| prompt_lookup(&buf).map(|t| (t, Source::Prompt)));
            let Some((t, source)) = next else { break };
            out.push((t, source));
            buf.push(t);
        }
        buf.truncate(base);
        self.history = buf;
        out
    }

    fn recipe_next(&self, buf: &[u32]) -> Option<u32> {
        let pack = self.recipes.as_ref()?;
        let output = &buf[self.output_from.min(buf.len())..];
        if output.is_empty() {
            return None;
        }
        let tail = &output[output.len().saturating_sub(MAX_CONTEXT)..];
        pack.next_token(tail)
    }

    /// Records how a draft fared: `drafted` tokens (sources in order), of
    /// which the first `accepted` matched the model; one step.
    pub fn verified(&mut self, sources: &[Source], accepted: usize) {
        self.stats.steps += 1;
        if sources.is_empty() {
            return;
        }
        let drafted = sources.len();
        self.stats.drafted += drafted as u32;
        self.stats.accepted += accepted as u32;
        for (i, s) in sources.iter().enumerate() {
            let c = &mut self.stats.by_source[s.index()];
            c.drafted += 1;
            c.accepted += u32::from(i < accepted);
        }
        self.length = if accepted == drafted {
            (self.length + 2).min(self.max)
        } else {
            (accepted + 1).min(self.max)
        };
        self.recent_drafted += drafted as u32;
        self.recent_accepted += accepted as u32;
        if self.recent_drafted >= WINDOW {
            let share = self.recent_accepted as f32 / self.recent_drafted as f32;
            if share < LOW_ACCEPTANCE {
                self.paused = self.next_pause;
                self.next_pause = (self.next_pause * 2).min(256);
                self.length = 1;
            } else {
                self.next_pause = 8;
            }
            self.recent_drafted = 0;
            self.recent_accepted = 0;
        }
    }
}

/// The token after the latest earlier occurrence of the last n tokens of
/// `history` (n from 4 down to 2), within the last [`PROMPT_WINDOW`].
fn prompt_lookup(history: &[u32]) -> Option<u32> {
    let len = history.len();
    let start = len.saturating_sub(PROMPT_WINDOW);
    for n in (PROMPT_MIN_NGRAM..=PROMPT_MAX_NGRAM.min(len.saturating_sub(1))).rev() {
        let key = &history[len - n..];
        // An occurrence ending at `end` (exclusive) with a token after it,
        // before the key itself.
        let mut end = len - 1;
        while end >= start + n {
            if &history[end - n..end] == key {
                return Some(history[end]);
            }
            end -= 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_bytes(_: &[u8]) -> Vec<u32> {
        Vec::new()
    }

    fn config(recipes: Option<RecipePack>, max: usize) -> DraftConfig {
        DraftConfig {
            enabled: true,
            max,
            recipes: recipes.map(Arc::new),
            step_budget: 16,
        }
    }

    #[test]
    fn prompt_lookup_copies_the_continuation_of_the_latest_match() {
        // "a b c d ... a b" → c, then with c: d.
        let h = [1, 2, 3, 4, 9, 9, 1, 2];
        assert_eq!(prompt_lookup(&h), Some(3));
        let h = [1, 2, 3, 4, 9, 1, 2, 3];
        assert_eq!(prompt_lookup(&h), Some(4));
        // The latest occurrence wins.
        let h = [1, 2, 5, 1, 2, 6, 7, 1, 2];
        assert_eq!(prompt_lookup(&h), Some(6));
        // One shared token is not enough; nothing repeats: no draft.
        assert_eq!(prompt_lookup(&[1, 5, 1]), None);
        assert_eq!(prompt_lookup(&[1, 2, 3, 4]), None);
        assert_eq!(prompt_lookup(&[]), None);
    }

    #[test]
    fn drafts_come_from_the_pack_then_the_prompt() {
        // The pack knows 10 → 11 → 12; the prompt holds 20 21 22 23.
        let pack = RecipePack::mine_tokens(
            &[vec![10, 11, 12], vec![10, 11, 12]],
            kolm_artifact::recipes::MineParams::default(),
        )
        .unwrap();
        let mut d = Drafter::new(&config(Some(pack), 8), &[20, 21, 22, 23, 5], None);
        d.push(10);
        let draft = d.draft(8, &no_bytes);
        assert_eq!(
            draft,
            [(11, Source::Recipes), (12, Source::Recipes)],
            "the pack drafts while it knows the context"
        );
        let mut d = Drafter::new(&config(None, 8), &[20, 21, 22, 23, 5], None);
        d.push(20);
        d.push(21);
        assert_eq!(
            d.draft(3, &no_bytes),
            [
                (22, Source::Prompt),
                (23, Source::Prompt),
                (5, Source::Prompt)
            ]
        );
        // The draft does not change the history.
        assert_eq!(d.history, [20, 21, 22, 23, 5, 20, 21]);
    }

    #[test]
    fn length_adapts_and_low_acceptance_pauses_drafting() {
        let mut d = Drafter::new(&config(None, 8), &[], None);
        assert_eq!(d.length, 8);
        d.verified(&[Source::Prompt; 8], 2);
        assert_eq!(d.length, 3, "shrinks to what was accepted plus one");
        d.verified(&[Source::Prompt; 3], 3);
        assert_eq!(d.length, 5, "grows while whole drafts are accepted");
        assert_eq!(d.stats.drafted, 11);
        assert_eq!(d.stats.accepted, 5);
        assert_eq!(d.stats.steps, 2);
        assert_eq!(
            d.stats.source(Source::Prompt),
            SourceCount {
                drafted: 11,
                accepted: 5
            }
        );
        // 16 more drafted, none accepted: 27 drafted, 5 accepted < 25%.
        d.verified(&[Source::Recipes; 16], 0);
        assert_eq!(d.paused, 8);
        let skipped = (0..10).filter(|_| !d.wants_to_draft()).count();
        assert_eq!(skipped, 8, "pauses for 8 steps, then drafts again");
    }

    #[test]
    fn a_new_drafter_knows_nothing_of_earlier_requests() {
        let mut first = Drafter::new(&config(None, 8), &[1, 2, 3, 4], None);
        first.push(1);
        first.push(2);
        assert_eq!(
            first.draft(2, &no_bytes),
            [(3, Source::Prompt), (4, Source::Prompt)]
        );
        let mut second = Drafter::new(&config(None, 8), &[7, 8], None);
        second.push(1);
        second.push(2);
        assert!(second.draft(2, &no_bytes).is_empty());
    }
}
