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
//! request saw can shape another's drafts.
//!
//! How much is drafted is a cost decision ([`plan`]): each drafted token
//! has a chance of being accepted (the product of its source's
//! [`Chance`]s up to it, since a draft is accepted as a prefix), and adds
//! one position to the step, whose cost the [`StepCost`] model fits from
//! measured decode steps. A token is drafted when it raises the step's
//! expected tokens per second: when its chance exceeds what one more
//! position costs in the step's current rate. So a request whose drafts
//! keep failing stops drafting, and a full batch (where a position costs
//! nearly a whole sequence's share) drafts only near-certain tokens.

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
}

impl Default for DraftConfig {
    fn default() -> Self {
        DraftConfig {
            enabled: true,
            max: 8,
            recipes: None,
        }
    }
}

/// Shortest n-gram prompt lookup matches on (one token matches too often
/// to be worth a verification).
const PROMPT_MIN_NGRAM: usize = 2;
/// Longest n-gram prompt lookup tries first.
const PROMPT_MAX_NGRAM: usize = 4;
/// How far back prompt lookup searches (tokens).
const PROMPT_WINDOW: usize = 2048;
/// What each source's chance starts at, before the request has shown how
/// its drafts fare: grammar-forced bytes are nearly always what the model
/// writes (it may tokenize them otherwise), a mined recipe usually is,
/// prompt lookup is a guess.
const PRIOR_CHANCE: [f64; 3] = [0.9, 0.7, 0.5];
/// Weight of the prior, in drafted tokens.
const PRIOR_WEIGHT: f64 = 4.0;
/// Each observation fades the older ones by this, so a chance follows the
/// request's recent drafts (about the last 20).
const FADE: f64 = 0.95;

/// The estimated chance that a source's next drafted token is accepted:
/// a faded Beta estimate over this request's outcomes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chance {
    accepted: f64,
    rejected: f64,
}

impl Chance {
    fn prior(source: Source) -> Chance {
        let p = PRIOR_CHANCE[source.index()];
        Chance {
            accepted: p * PRIOR_WEIGHT,
            rejected: (1.0 - p) * PRIOR_WEIGHT,
        }
    }

    pub fn value(self) -> f64 {
        self.accepted / (self.accepted + self.rejected)
    }

    fn observe(&mut self, accepted: bool) {
        self.accepted *= FADE;
        self.rejected *= FADE;
        if accepted {
            self.accepted += 1.0;
        } else {
            self.rejected += 1.0;
        }
    }
}

/// One request's drafting state.
pub(crate) struct Drafter {
    max: usize,
    recipes: Option<Arc<RecipePack>>,
    grammar: Option<Matcher>,
    /// Prompt then output tokens, as the model saw them.
    history: Vec<u32>,
    /// Where the output starts in `history`.
    output_from: usize,
    chances: [Chance; 3],
    pub stats: DraftStats,
}

impl Drafter {
    /// A drafter for a request with this prompt; `grammar` is a copy of
    /// the request's matcher (in its initial state).
    pub fn new(config: &DraftConfig, prompt: &[u32], grammar: Option<Matcher>) -> Drafter {
        Drafter {
            max: config.max.max(1),
            recipes: config.recipes.clone(),
            grammar,
            history: prompt.to_vec(),
            output_from: prompt.len(),
            chances: Source::ALL.map(Chance::prior),
            stats: DraftStats::default(),
        }
    }

    /// The chance of the likeliest first drafted token: with less, no
    /// draft of this request can pay.
    pub fn best_chance(&self) -> f64 {
        let mut sources = vec![Source::Prompt];
        if self.recipes.is_some() {
            sources.push(Source::Recipes);
        }
        if self.grammar.is_some() {
            sources.push(Source::Grammar);
        }
        sources
            .into_iter()
            .map(|s| self.chances[s.index()].value())
            .fold(0.0, f64::max)
    }

    /// Each drafted token's chance of being accepted: the product of its
    /// sources' chances up to it.
    pub fn chances(&self, draft: &[(u32, Source)]) -> Vec<f64> {
        let mut p = 1.0;
        draft
            .iter()
            .map(|(_, s)| {
                p *= self.chances[s.index()].value();
                p
            })
            .collect()
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

    /// Up to `limit` (and `draft_max`) drafted tokens to follow the last
    /// pushed one, with their sources. `tokenize` turns the bytes a grammar
    /// forces into the model's tokens.
    pub fn draft(
        &mut self,
        limit: usize,
        tokenize: &dyn Fn(&[u8]) -> Vec<u32>,
    ) -> Vec<(u32, Source)> {
        let want = self.max.min(limit);
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
        // What the model decided: the accepted ones, then the first
        // rejected one; the tokens after it were never judged.
        for (i, s) in sources.iter().enumerate().take(accepted + 1) {
            self.chances[s.index()].observe(i < accepted);
        }
    }
}

/// The cost of a decode step (the batched decode and the sampling that
/// verifies every drafted position) as a function of the positions it
/// decodes, `seconds = fixed + per_position × positions`, fitted by faded
/// least squares over measured steps (only steps that decode no prompt chunk:
/// prompts run at another rate) and held toward a prior where the
/// measurements cannot tell (a batch that never varies in size).
#[derive(Clone, Debug)]
pub(crate) struct StepCost {
    weight: f64,
    sum_n: f64,
    sum_t: f64,
    sum_nn: f64,
    sum_nt: f64,
}

/// The prior: a step's fixed part costs as much as this many positions.
const PRIOR_FIXED_POSITIONS: f64 = 3.0;
/// Weight of the prior slope, in squared positions.
const PRIOR_SLOPE_WEIGHT: f64 = 8.0;
/// Fading of older steps (about the last 50 count).
const STEP_FADE: f64 = 0.98;

impl Default for StepCost {
    fn default() -> Self {
        StepCost {
            weight: 0.0,
            sum_n: 0.0,
            sum_t: 0.0,
            sum_nn: 0.0,
            sum_nt: 0.0,
        }
    }
}

impl StepCost {
    /// Records a measured step of `positions` positions.
    pub fn record(&mut self, positions: usize, seconds: f64) {
        if !(seconds.is_finite() && seconds > 0.0) || positions == 0 {
            return;
        }
        let n = positions as f64;
        self.weight = self.weight * STEP_FADE + 1.0;
        self.sum_n = self.sum_n * STEP_FADE + n;
        self.sum_t = self.sum_t * STEP_FADE + seconds;
        self.sum_nn = self.sum_nn * STEP_FADE + n * n;
        self.sum_nt = self.sum_nt * STEP_FADE + n * seconds;
    }

    /// `(fixed, per_position)`, in seconds; relative units (3, 1) before
    /// any step was measured.
    pub fn fit(&self) -> (f64, f64) {
        if self.weight <= 0.0 {
            return (PRIOR_FIXED_POSITIONS, 1.0);
        }
        let mean_n = self.sum_n / self.weight;
        let mean_t = self.sum_t / self.weight;
        let var = self.sum_nn - self.weight * mean_n * mean_n;
        let cov = self.sum_nt - self.weight * mean_n * mean_t;
        let prior = mean_t / (mean_n + PRIOR_FIXED_POSITIONS);
        let slope = ((cov + PRIOR_SLOPE_WEIGHT * prior) / (var.max(0.0) + PRIOR_SLOPE_WEIGHT))
            .clamp(0.05 * prior, mean_t / mean_n.max(1.0));
        let fixed = (mean_t - slope * mean_n).max(0.0);
        (fixed, slope)
    }
}

/// Which drafts one step decodes. `offers[i]` is a sequence's drafted
/// tokens' chances of acceptance (non-increasing); `positions` the step's
/// positions without drafts (prompt chunks and one per generating
/// sequence); `emitting` the sequences that emit a token this step;
/// `room` the most drafted positions the batch takes. Returns how many of
/// each offer to decode: the greedy choice that keeps raising the step's
/// expected emitted tokens per second.
pub(crate) fn plan(
    offers: &[Vec<f64>],
    positions: usize,
    emitting: usize,
    room: usize,
    cost: (f64, f64),
) -> Vec<usize> {
    let (fixed, per_position) = cost;
    let mut take = vec![0usize; offers.len()];
    let mut expected = emitting as f64;
    let mut seconds = fixed + per_position * positions as f64;
    for _ in 0..room {
        // The likeliest next token among the sequences' next offers.
        let best = offers
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.get(take[i]).map(|&p| (i, p)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((i, p)) = best else { break };
        // Worth it when (expected + p) / (seconds + per_position) beats
        // expected / seconds.
        if p * seconds <= expected * per_position {
            break;
        }
        take[i] += 1;
        expected += p;
        seconds += per_position;
    }
    take
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
    fn acceptance_is_learned_per_source_and_counted() {
        let mut d = Drafter::new(&config(None, 8), &[], None);
        let prompt = |d: &Drafter| d.chances[Source::Prompt.index()].value();
        assert!((prompt(&d) - 0.5).abs() < 1e-12);
        // 8 drafted, 2 accepted: the 2, then the rejected third, are
        // judged (two of three accepted: the chance rises); the 5 after
        // were never judged.
        d.verified(&[Source::Prompt; 8], 2);
        let after = prompt(&d);
        assert!(after > 0.55 && after < 0.6, "{after}");
        d.verified(&[Source::Recipes, Source::Recipes, Source::Prompt], 3);
        assert_eq!(d.stats.drafted, 11);
        assert_eq!(d.stats.accepted, 5);
        assert_eq!(d.stats.steps, 2);
        assert_eq!(
            d.stats.source(Source::Prompt),
            SourceCount {
                drafted: 9,
                accepted: 3
            }
        );
        assert_eq!(
            d.stats.source(Source::Recipes),
            SourceCount {
                drafted: 2,
                accepted: 2
            }
        );
        // A step without drafts counts a step and nothing else.
        d.verified(&[], 0);
        assert_eq!((d.stats.steps, d.stats.drafted), (3, 11));
        // Drafts that keep failing drive the chance down: nothing pays.
        for _ in 0..60 {
            d.verified(&[Source::Prompt], 0);
        }
        assert!(prompt(&d) < 0.05, "{}", prompt(&d));
        let chances = d.chances(&[(1, Source::Recipes), (2, Source::Prompt)]);
        assert!(
            chances[0] > 0.7 && chances[1] < 0.05 * chances[0] + 1e-9,
            "{chances:?}"
        );
    }

    #[test]
    fn the_plan_drafts_what_pays_and_little_in_a_full_batch() {
        // One sequence, a step of fixed 3 + 1 per position.
        let cost = (3.0, 1.0);
        let sure = vec![0.99; 8];
        assert_eq!(plan(std::slice::from_ref(&sure), 1, 1, 8, cost), [8]);
        // Cumulative chances: 0.5, 0.25, 0.125…: the first pays (0.5 > 1/4),
        // the second is below the rate the first makes (1.5/5 = 0.3).
        let halving: Vec<f64> = (1..=8).map(|k| 0.5f64.powi(k)).collect();
        assert_eq!(plan(std::slice::from_ref(&halving), 1, 1, 8, cost), [1]);
        // Room caps the plan.
        assert_eq!(plan(std::slice::from_ref(&sure), 1, 1, 3, cost), [3]);
        // Eight sequences: a position costs 1 of a step of 11 emitting 8;
        // only chances above 8/11 pay, the likeliest first.
        let offers: Vec<Vec<f64>> = (0..8)
            .map(|i| {
                if i == 0 {
                    sure.clone()
                } else {
                    halving.clone()
                }
            })
            .collect();
        let take = plan(&offers, 8, 8, 64, cost);
        assert_eq!(take[1..], [0; 7], "{take:?}");
        assert!(take[0] >= 3, "{take:?}");
        // No offers, or no chance: nothing.
        assert_eq!(plan(&[vec![]], 1, 1, 8, cost), [0]);
        assert_eq!(plan(&[vec![0.1; 4]], 1, 1, 8, cost), [0]);
    }

    #[test]
    fn the_step_cost_is_fitted_from_measured_steps() {
        let mut c = StepCost::default();
        assert_eq!(c.fit(), (3.0, 1.0), "relative units before any step");
        // Steps of 10 ms + 2 ms per position, at 1 to 9 positions.
        for round in 0..20 {
            let n = 1 + (round % 9);
            c.record(n, 0.010 + 0.002 * n as f64);
        }
        let (fixed, per) = c.fit();
        assert!((per - 0.002).abs() < 0.0004, "{per}");
        assert!((fixed - 0.010).abs() < 0.002, "{fixed}");
        // Steps that never vary in size: the prior slope (a fixed part of
        // 3 positions) holds.
        let mut c = StepCost::default();
        for _ in 0..50 {
            c.record(4, 0.014);
        }
        let (fixed, per) = c.fit();
        assert!((per - 0.002).abs() < 1e-6, "{per}");
        assert!((fixed - 0.006).abs() < 1e-6, "{fixed}");
        // Nonsense is ignored.
        c.record(0, 1.0);
        c.record(3, f64::NAN);
        assert!((c.fit().1 - per).abs() < 1e-12);
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
