//! Sampling parameters and the sampler built from them. Plain greedy
//! decoding (no bias, no penalties) is done here: the argmax of the logits,
//! checked against the grammar, whose full mask is computed only when the
//! argmax is not allowed. Everything else is llama.cpp's sampler chain:
//! grammar (llguidance) first, then logit bias, penalties, top-k, top-p,
//! min-p, temperature and a seeded draw.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::TokEnv;
use llguidance::{Matcher, ParserFactory};

use crate::error::RuntimeError;

/// How to pick each next token. Defaults follow llama.cpp's server.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0 disables.
    pub top_k: i32,
    /// 0.0 disables.
    pub min_p: f32,
    /// None draws a fresh seed.
    pub seed: Option<u32>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// 1.0 disables.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: i32,
    /// Token id and bias added to its logit (-100 bans it).
    pub logit_bias: Vec<(i32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repeat_penalty: 1.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks ranges; the message names the parameter.
    pub fn validate(&self, n_vocab: i32) -> Result<(), RuntimeError> {
        let bad = |m: String| Err(RuntimeError::InvalidParameter(m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if self.top_k < 0 {
            return bad(format!("top_k must be >= 0, got {}", self.top_k));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(format!("{name} must be in [-2, 2], got {v}"));
            }
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return bad(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            ));
        }
        for &(token, bias) in &self.logit_bias {
            if token < 0 || token >= n_vocab {
                return bad(format!(
                    "logit_bias names token {token}, outside the vocabulary of {n_vocab}"
                ));
            }
            if !(-100.0..=100.0).contains(&bias) {
                return bad(format!(
                    "logit_bias for token {token} must be in [-100, 100], got {bias}"
                ));
            }
        }
        Ok(())
    }
}

/// A constraint on the output.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// Any JSON object.
    JsonObject,
    /// JSON valid under this schema.
    JsonSchema(serde_json::Value),
    /// Text matching this regular expression as a whole (llguidance's
    /// syntax: no look-around, no back-references).
    Regex(String),
}

/// Compiles a grammar into an llguidance matcher; an invalid schema is an
/// error here, before any decoding.
pub(crate) fn compile_grammar(env: &TokEnv, grammar: &Grammar) -> Result<Matcher, RuntimeError> {
    let top = match grammar {
        Grammar::JsonObject => {
            TopLevelGrammar::from_json_schema(serde_json::json!({"type": "object"}))
        }
        Grammar::JsonSchema(schema) => {
            if !schema.is_object() && !schema.is_boolean() {
                return Err(RuntimeError::InvalidGrammar(
                    "a JSON schema must be an object".into(),
                ));
            }
            TopLevelGrammar::from_json_schema(schema.clone())
        }
        Grammar::Regex(rx) => TopLevelGrammar::from_regex(rx),
    };
    let factory =
        ParserFactory::new_simple(env).map_err(|e| RuntimeError::InvalidGrammar(e.to_string()))?;
    let parser = factory
        .create_parser(top)
        .map_err(|e| RuntimeError::InvalidGrammar(e.to_string()))?;
    let matcher = Matcher::new(Ok(parser));
    if let Some(e) = matcher.get_error() {
        return Err(RuntimeError::InvalidGrammar(e));
    }
    Ok(matcher)
}

/// Picks each next token of one request.
pub(crate) enum TokenSampler {
    /// Greedy with nothing that changes the logits but the grammar. The
    /// same token as llama.cpp's greedy chain with an llguidance grammar
    /// (the tok env is not canonical, so the mask never forces a token: it
    /// is exactly the set of tokens the grammar allows, plus end of text
    /// where the grammar may end), at a fraction of the cost: most argmaxes
    /// are allowed, and checking one token is far cheaper than a mask over
    /// the vocabulary.
    Greedy(Option<Box<Matcher>>),
    /// llama.cpp's sampler chain.
    Chain(LlamaSampler),
}

impl TokenSampler {
    /// The sampler for one request.
    pub(crate) fn new(
        model: &LlamaModel,
        params: &SamplingParams,
        grammar: Option<Matcher>,
        fallback_seed: u32,
    ) -> Self {
        let plain = params.logit_bias.is_empty()
            && params.repeat_penalty == 1.0
            && params.frequency_penalty == 0.0
            && params.presence_penalty == 0.0;
        if params.temperature <= 0.0 && plain {
            TokenSampler::Greedy(grammar.map(Box::new))
        } else {
            TokenSampler::Chain(build_chain(model, params, grammar, fallback_seed))
        }
    }

    /// Samples from the logits at batch index `index` and feeds the token
    /// to the grammar.
    pub(crate) fn sample(&mut self, ctx: &LlamaContext<'_>, index: i32) -> LlamaToken {
        match self {
            TokenSampler::Chain(chain) => chain.sample(ctx, index),
            TokenSampler::Greedy(grammar) => {
                LlamaToken(greedy(ctx.get_logits_ith(index), grammar.as_deref_mut()) as i32)
            }
        }
    }
}

/// The first most likely token the grammar allows, consumed by it.
pub(crate) fn greedy(logits: &[f32], grammar: Option<&mut Matcher>) -> u32 {
    let best = argmax(logits, |_| true);
    let Some(matcher) = grammar else {
        return best;
    };
    if matcher.is_stopped() || matcher.validate_tokens(&[best]).ok() != Some(1) {
        // As the chain does: the mask (only end of text once stopped);
        // a grammar in error masks nothing.
        if let Ok(mask) = matcher.compute_mask_or_eos() {
            let token = argmax(logits, |t| mask.is_allowed(t));
            if !matcher.is_stopped() {
                let _ = matcher.consume_token(token);
            }
            return token;
        }
    }
    if !matcher.is_stopped() {
        let _ = matcher.consume_token(best);
    }
    best
}

/// The first index of the largest logit among the allowed tokens (the
/// first token when none is allowed, as llama.cpp's greedy sampler does
/// over an all -inf array).
/// The natural log of the probability the model gives `token` at these
/// logits (a softmax over the whole vocabulary, before any bias, penalty,
/// temperature or grammar): how sure the model was of what it emitted.
pub(crate) fn log_probability(logits: &[f32], token: u32) -> f64 {
    let Some(&chosen) = logits.get(token as usize) else {
        return f64::NEG_INFINITY;
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    f64::from(chosen - max) - sum.ln()
}

fn argmax(logits: &[f32], allowed: impl Fn(u32) -> bool) -> u32 {
    let mut best: Option<(u32, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        let i = i as u32;
        if best.is_none_or(|(_, b)| l > b) && allowed(i) {
            best = Some((i, l));
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// The sampler chain for one request.
fn build_chain(
    model: &LlamaModel,
    params: &SamplingParams,
    grammar: Option<Matcher>,
    fallback_seed: u32,
) -> LlamaSampler {
    let mut chain = Vec::new();
    if let Some(m) = grammar {
        chain.push(LlamaSampler::from(m));
    }
    if !params.logit_bias.is_empty() {
        let biases: Vec<LlamaLogitBias> = params
            .logit_bias
            .iter()
            .map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t), b))
            .collect();
        chain.push(LlamaSampler::logit_bias(model.n_vocab(), &biases));
    }
    if params.repeat_penalty != 1.0
        || params.frequency_penalty != 0.0
        || params.presence_penalty != 0.0
    {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            params.penalty_last_n,
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        ));
    }
    if params.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if params.top_k > 0 {
            chain.push(LlamaSampler::top_k(params.top_k));
        }
        if params.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(params.top_p, 1));
        }
        if params.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(params.min_p, 1));
        }
        chain.push(LlamaSampler::temp(params.temperature));
        chain.push(LlamaSampler::dist(params.seed.unwrap_or(fallback_seed)));
    }
    LlamaSampler::chain_simple(chain)
}

#[cfg(test)]
mod tests {
    use llama_cpp_2::model::params::LlamaModelParams;

    use super::*;

    /// A small deterministic generator (xorshift), for random logits.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 20.0 - 10.0
        }
    }

    #[test]
    fn log_probabilities_are_a_softmax_over_the_vocabulary() {
        // Two equal logits: each has probability 1/2 of the pair, and a
        // third far below takes nearly nothing.
        let logits = [3.0f32, 3.0, -40.0];
        assert!((log_probability(&logits, 0) - 0.5f64.ln()).abs() < 1e-9);
        let mut noise = Noise(7);
        let logits: Vec<f32> = (0..1000).map(|_| noise.next()).collect();
        let total: f64 = (0..1000u32)
            .map(|t| log_probability(&logits, t).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-9, "probabilities sum to {total}");
        // Shifting every logit changes nothing; a token outside the
        // vocabulary has probability 0.
        let shifted: Vec<f32> = logits.iter().map(|l| l + 5.0).collect();
        assert!((log_probability(&logits, 3) - log_probability(&shifted, 3)).abs() < 1e-5);
        assert_eq!(log_probability(&logits, 1000), f64::NEG_INFINITY);
    }

    /// What llama.cpp's chain picks: the grammar's mask (only end of text
    /// once stopped) applied as -inf, then the first largest logit.
    fn masked_argmax(logits: &[f32], matcher: &mut Matcher) -> u32 {
        let mask = matcher.compute_mask_or_eos().unwrap();
        let masked: Vec<f32> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                if mask.is_allowed(i as u32) {
                    l
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        argmax(&masked, |_| true)
    }

    #[test]
    fn greedy_with_a_grammar_is_the_argmax_of_the_masked_logits() {
        let backend = crate::engine::backend().unwrap();
        let model = LlamaModel::load_from_file(
            &backend,
            kolm_fixtures::smollm2(),
            &LlamaModelParams::default(),
        )
        .unwrap();
        let env = LlamaSampler::llguidance_tok_env(&model);
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"item": {"type": "string"}, "quantity": {"type": "integer"}},
            "required": ["item", "quantity"],
            "additionalProperties": false
        });
        let mut walk = compile_grammar(&env, &Grammar::JsonSchema(schema)).unwrap();
        let document =
            model
                .vocab()
                .tokenize(br#"{"item": "apple", "quantity": 12}"#, false, false);
        let eos = env.tok_trie().eos_token();
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let (mut fast, mut masked) = (0, 0);
        // Every step of the document, then its end (only end of text is
        // allowed once the object is closed).
        let steps: Vec<Option<u32>> = document
            .iter()
            .map(|t| Some(t.0 as u32))
            .chain([None])
            .collect();
        for next in steps {
            for trial in 0..12 {
                let mut logits: Vec<f32> = (0..model.n_vocab()).map(|_| noise.next()).collect();
                // Half the trials make the document's own token (allowed)
                // the most likely; the others leave a random argmax, which
                // the grammar almost never allows.
                if trial % 2 == 0 {
                    logits[next.unwrap_or(eos) as usize] = 11.0;
                }
                let mut reference = walk.deep_clone();
                let expected = masked_argmax(&logits, &mut reference);
                let mut ours = walk.deep_clone();
                let raw = argmax(&logits, |_| true);
                if raw == expected {
                    fast += 1;
                } else {
                    masked += 1;
                }
                assert_eq!(greedy(&logits, Some(&mut ours)), expected);
                // The token was consumed: both grammars are in one state.
                if !reference.is_stopped() {
                    reference.consume_token(expected).unwrap();
                }
                assert_eq!(
                    ours.compute_mask_or_eos().unwrap(),
                    reference.compute_mask_or_eos().unwrap()
                );
            }
            if let Some(token) = next {
                walk.consume_token(token).unwrap();
            }
        }
        assert!(fast > 10 && masked > 10, "fast {fast}, masked {masked}");
        // No grammar: the first largest logit.
        assert_eq!(greedy(&[0.0, 2.0, 1.0, 2.0], None), 1);
    }
}
