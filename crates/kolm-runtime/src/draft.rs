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
//! one position to the step, whose cost [`StepCost`] keeps from measured
//! decode steps by size. A step drafts the number of tokens (likeliest
//! first) that maximizes its expected emitted tokens per second. So a
//! request whose drafts keep failing stops drafting, and a busy batch
//! (where a position costs nearly a whole sequence's share) drafts only
//! near-certain tokens.

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

/// How much a step drafts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DraftPolicy {
    /// What pays: the cost decision of [`plan`].
    #[default]
    Cost,
    /// Everything the sources offer, up to the maximum, whatever it costs:
    /// to measure a pack's acceptance, and to exercise verification.
    Eager,
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
    /// How much a step drafts.
    pub policy: DraftPolicy,
}

impl Default for DraftConfig {
    fn default() -> Self {
        DraftConfig {
            enabled: true,
            max: 8,
            recipes: None,
            policy: DraftPolicy::Cost,
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
                    // The forced bytes end where the grammar leaves a
                    // choice, and the model's tokenization may merge their
                    // last token with what it chooses next (`":"` then
                    // `apple` as `":` and `"apple`): that last token is left
                    // to the other sources, or to the model.
                    let mut tokens = tokenize(&bytes);
                    if tokens.len() > 1 {
                        tokens.pop();
                    }
                    for t in tokens.into_iter().take(want) {
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
/// decodes: a table of measured steps by size (a faded mean per size, over
/// steps that decode no prompt chunk: prompts run at another rate),
/// interpolated between measured sizes and, outside them, scaled from the
/// nearest one by a prior shape in which each position past the first
/// costs [`PRIOR_EXTRA_POSITION`] of a one-position step. On a CPU a
/// decode is compute-bound and its cost is far from linear in the batch
/// (on the 2-core test machine, 1 to 9 positions of SmolLM2-135M take 9,
/// 16, 23, 24, 30, 32, 37, 40 and 44 ms), so a fitted line misjudges the
/// small drafts that matter most.
#[derive(Clone, Debug, Default)]
pub(crate) struct StepCost {
    /// `seconds[n - 1]`: the faded mean of measured steps of `n`
    /// positions; 0 where none was measured.
    seconds: Vec<f64>,
}

/// In the prior shape, each position past the first costs this share of a
/// one-position step (measured on the test machine: 0.5 to 0.8 at small
/// sizes; a prior on the dear side keeps unmeasured drafts from being
/// taken on hope).
const PRIOR_EXTRA_POSITION: f64 = 0.6;
/// Weight of a new measurement in its size's mean.
const STEP_WEIGHT: f64 = 0.2;
/// Sizes past this are not tracked one by one (the prior shape scales the
/// largest tracked one).
const MAX_TRACKED: usize = 256;

impl StepCost {
    /// Records a measured step of `positions` positions.
    pub fn record(&mut self, positions: usize, seconds: f64) {
        if !(seconds.is_finite() && seconds > 0.0) || positions == 0 || positions > MAX_TRACKED {
            return;
        }
        if self.seconds.len() < positions {
            self.seconds.resize(positions, 0.0);
        }
        let slot = &mut self.seconds[positions - 1];
        *slot = if *slot > 0.0 {
            *slot + STEP_WEIGHT * (seconds - *slot)
        } else {
            seconds
        };
    }

    /// The expected seconds of a step of `positions` positions (relative
    /// units, 1 for one position, before any step was measured).
    pub fn seconds(&self, positions: usize) -> f64 {
        let shape = |n: usize| 1.0 + PRIOR_EXTRA_POSITION * (n.max(1) - 1) as f64;
        let measured = |n: usize| {
            self.seconds
                .get(n.wrapping_sub(1))
                .copied()
                .filter(|&s| s > 0.0)
        };
        if let Some(s) = measured(positions) {
            return s;
        }
        let below = (1..positions.min(self.seconds.len() + 1))
            .rev()
            .find_map(|n| measured(n).map(|s| (n, s)));
        let above = (positions + 1..=self.seconds.len()).find_map(|n| measured(n).map(|s| (n, s)));
        match (below, above) {
            (Some((a, sa)), Some((b, sb))) => {
                sa + (sb - sa) * (positions - a) as f64 / (b - a) as f64
            }
            (Some((n, s)), None) | (None, Some((n, s))) => s * shape(positions) / shape(n),
            (None, None) => shape(positions),
        }
    }

    /// The least chance at which drafting `1..=most` tokens could pay in a
    /// step of `positions` positions emitting `emitting` tokens: below it
    /// no draft is worth computing.
    pub fn least_chance(&self, positions: usize, emitting: usize, most: usize) -> f64 {
        let base = self.seconds(positions);
        (1..=most.max(1))
            .map(|m| emitting as f64 * (self.seconds(positions + m) - base) / (m as f64 * base))
            .fold(f64::INFINITY, f64::min)
    }
}

/// Which drafts one step decodes. `offers[i]` is a sequence's drafted
/// tokens' chances of acceptance (non-increasing); `positions` the step's
/// positions without drafts (prompt chunks and one per generating
/// sequence); `emitting` the sequences that emit a token this step;
/// `room` the most drafted positions the batch takes. Drafts are ranked
/// likeliest first across the sequences, and the plan keeps the number of
/// them that maximizes the step's expected emitted tokens per second
/// (none when no number beats decoding without drafts). Returns how many
/// of each offer to decode.
pub(crate) fn plan(
    offers: &[Vec<f64>],
    positions: usize,
    emitting: usize,
    room: usize,
    cost: &StepCost,
) -> Vec<usize> {
    let mut take = vec![0usize; offers.len()];
    // The ranking: which offer each next draft comes from.
    let mut order = Vec::new();
    let mut expected = emitting as f64;
    let mut best = (0usize, expected / cost.seconds(positions));
    for m in 1..=room {
        let next = offers
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.get(take[i]).map(|&p| (i, p)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((i, p)) = next else { break };
        take[i] += 1;
        order.push(i);
        expected += p;
        let rate = expected / cost.seconds(positions + m);
        if rate > best.1 {
            best = (m, rate);
        }
    }
    let mut take = vec![0usize; offers.len()];
    for &i in &order[..best.0] {
        take[i] += 1;
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
            policy: DraftPolicy::Cost,
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

    /// The step costs measured on the 2-core test machine, 1 to 9
    /// positions (ms), and a linear tail past them.
    fn measured_cost() -> StepCost {
        let mut c = StepCost::default();
        let ms = [9.0, 16.0, 23.0, 24.0, 30.0, 32.0, 37.0, 40.0, 44.0];
        for (i, t) in ms.iter().enumerate() {
            c.record(i + 1, t / 1000.0);
        }
        for n in 10..=80 {
            c.record(n, (44.0 + 4.5 * (n - 9) as f64) / 1000.0);
        }
        c
    }

    #[test]
    fn the_plan_drafts_what_pays_and_little_in_a_full_batch() {
        let cost = measured_cost();
        // One sequence: 8 sure drafts make 9 tokens in 44 ms, against 1
        // in 9.
        let sure = vec![0.99; 8];
        assert_eq!(plan(std::slice::from_ref(&sure), 1, 1, 8, &cost), [8]);
        // Cumulative chances 0.7, 0.49, 0.34…: one draft makes 1.7 tokens
        // in 16 ms, three 2.5 in 24, both below 1 in 9; longer ones fall
        // further behind: nothing.
        let fading: Vec<f64> = (1..=8).map(|k| 0.7f64.powi(k)).collect();
        assert_eq!(plan(std::slice::from_ref(&fading), 1, 1, 8, &cost), [0]);
        // 0.95 each: 7 drafts (6.65 tokens in 40 ms) beat 8 (7.26 in 44)
        // and every shorter plan.
        let likely: Vec<f64> = (1..=8).map(|k| 0.95f64.powi(k)).collect();
        assert_eq!(plan(std::slice::from_ref(&likely), 1, 1, 8, &cost), [7]);
        // Room caps the plan.
        assert_eq!(plan(std::slice::from_ref(&sure), 1, 1, 3, &cost), [3]);
        // Eight sequences emitting 8 in 40 ms: a draft must bring more
        // than about 0.9 of a token to pay for its 4.5 ms; the sure ones
        // do, the fading ones never, and a likely run only for one token.
        let offers: Vec<Vec<f64>> = (0..8)
            .map(|i| if i == 0 { sure.clone() } else { fading.clone() })
            .collect();
        assert_eq!(plan(&offers, 8, 8, 64, &cost), [8, 0, 0, 0, 0, 0, 0, 0]);
        let mut offers = offers;
        offers[0] = likely.clone();
        assert_eq!(plan(&offers, 8, 8, 64, &cost), [1, 0, 0, 0, 0, 0, 0, 0]);
        // No offers, or no chance: nothing.
        assert_eq!(plan(&[vec![]], 1, 1, 8, &cost), [0]);
        assert_eq!(plan(&[vec![0.1; 4]], 1, 1, 8, &cost), [0]);
        // The filter agrees: a chance below the least never pays.
        let least = cost.least_chance(1, 1, 8);
        assert!(least > 0.4 && least < 0.95, "{least}");
        let below: Vec<f64> = (1..=8).map(|k| (least - 0.01).powi(k)).collect();
        assert_eq!(plan(std::slice::from_ref(&below), 1, 1, 8, &cost), [0]);
    }

    #[test]
    fn the_step_cost_is_kept_by_size_and_filled_between_and_beyond() {
        let c = StepCost::default();
        // Before any step: the prior shape, in units of one position.
        assert_eq!(c.seconds(1), 1.0);
        assert!((c.seconds(3) - 2.2).abs() < 1e-12);
        let mut c = StepCost::default();
        c.record(1, 0.010);
        c.record(5, 0.030);
        assert_eq!(c.seconds(1), 0.010);
        // Between measured sizes: the line between them.
        assert!((c.seconds(3) - 0.020).abs() < 1e-12);
        // Beyond: the largest measured, scaled by the prior shape.
        let expect = 0.030 * (1.0 + 0.6 * 7.0) / (1.0 + 0.6 * 4.0);
        assert!((c.seconds(8) - expect).abs() < 1e-12);
        // A size's mean follows new measurements by a fifth of the gap.
        c.record(5, 0.040);
        assert!((c.seconds(5) - 0.032).abs() < 1e-12);
        // Nonsense is ignored.
        c.record(0, 1.0);
        c.record(3, f64::NAN);
        c.record(4, -1.0);
        assert!((c.seconds(3) - 0.021).abs() < 1e-12);
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
