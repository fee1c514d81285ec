//! Sampling parameters and the llama.cpp sampler chain built from them:
//! grammar (llguidance) first, then logit bias, penalties, top-k, top-p,
//! min-p, temperature and a seeded draw; greedy when the temperature is 0.

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

/// The sampler chain for one request.
pub(crate) fn build_chain(
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
