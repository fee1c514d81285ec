//! Shared by kolm-train's tests against llama.cpp: the fixture folder, one
//! llama.cpp backend per test binary, full-sequence logits with or without
//! an adapter, and the measures the parity tests compare.

#![allow(dead_code)]

pub mod smollm2;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kolm_train::{ChatTokenizer, Message};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

/// A model file of `scripts/fixtures.sh` (`$KOLM_FIXTURES`, default
/// `~/.cache/kolm/fixtures`).
pub fn fixture(name: &str) -> PathBuf {
    kolm_fixtures::path(name)
}

/// llama.cpp's backend: initialized once per process.
pub fn backend() -> &'static LlamaBackend {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| LlamaBackend::init().unwrap())
}

/// Loads a GGUF with llama.cpp (CPU).
pub fn load(path: &Path) -> LlamaModel {
    LlamaModel::load_from_file(backend(), path, &LlamaModelParams::default()).unwrap()
}

/// Full-sequence logits from llama.cpp, with or without an adapter.
pub fn llama_logits(
    model: &mut LlamaModel,
    tokens: &[u32],
    adapter: Option<&Path>,
) -> Vec<Vec<f32>> {
    let mut lora = adapter.map(|p| {
        model
            .lora_adapter_init(p)
            .expect("llama.cpp loads the adapter")
    });
    let n = tokens.len() as u32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n.max(64)))
        .with_n_batch(n.max(64))
        .with_n_ubatch(n.max(64));
    let mut ctx = model.new_context(backend(), params).unwrap();
    if let Some(a) = lora.as_mut() {
        ctx.lora_adapter_set(a, 1.0).unwrap();
    }
    let mut batch = LlamaBatch::new(tokens.len(), 1);
    for (i, t) in tokens.iter().enumerate() {
        batch
            .add(LlamaToken(*t as i32), i as i32, &[0], true)
            .unwrap();
    }
    ctx.decode(&mut batch).unwrap();
    (0..tokens.len())
        .map(|i| ctx.get_logits_ith(i as i32).to_vec())
        .collect()
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

/// Share of positions from `from` on where `a` and `b` have the same top-1.
pub fn top1_agreement(a: &[Vec<f32>], b: &[Vec<f32>], from: usize) -> f32 {
    let n = a.len();
    (from..n)
        .filter(|&i| argmax(&a[i]) == argmax(&b[i]))
        .count() as f32
        / (n - from) as f32
}

/// Where `a` and `b` pick different top-1 tokens: the position and by how
/// much each engine prefers its own pick over the other's (logits). Small
/// margins on both sides are near-ties that rounding can flip.
pub fn disagreements(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<(usize, f32, f32)> {
    (0..a.len())
        .filter_map(|i| {
            let (ta, tb) = (argmax(&a[i]), argmax(&b[i]));
            (ta != tb).then(|| (i, a[i][ta] - a[i][tb], b[i][tb] - b[i][ta]))
        })
        .collect()
}

pub fn log_prob(v: &[f32], i: usize) -> f32 {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = v.iter().map(|x| (x - m).exp()).sum::<f32>().ln() + m;
    v[i] - lse
}

/// What an adapter did to each actual next token: its log-probability with
/// the adapter minus without.
pub fn adapter_effect(tokens: &[u32], base: &[Vec<f32>], lora: &[Vec<f32>]) -> Vec<f32> {
    (0..tokens.len() - 1)
        .map(|i| {
            let t = tokens[i + 1] as usize;
            log_prob(&lora[i], t) - log_prob(&base[i], t)
        })
        .collect()
}

pub fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() as f32;
    let (ma, mb) = (a.iter().sum::<f32>() / n, b.iter().sum::<f32>() / n);
    let cov: f32 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f32 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f32 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va.sqrt() * vb.sqrt())
}

/// A plain chat template for bases without one (`role:\ncontent\n` per
/// message, `assistant:\n` to open the answer): each turn starts after a
/// newline, so a rendered prefix always tokenizes to a prefix.
pub fn render_plain(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut s: String = messages
        .iter()
        .map(|m| format!("{}:\n{}\n", m.role, m.content))
        .collect();
    if add_generation_prompt {
        s.push_str("assistant:\n");
    }
    s
}

/// The seeded two-layer Qwen2 of `tests/data` (written by
/// `make_tiny_qwen2.py`), with a byte vocabulary.
pub fn tiny_qwen2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-qwen2.gguf")
}

/// A byte-level tokenizer matching the tiny model's vocabulary (ids
/// 3..259), with the plain template.
pub struct Bytes;

impl ChatTokenizer for Bytes {
    fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        Ok(render_plain(messages, add_generation_prompt))
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(text.bytes().map(|b| 3 + u32::from(b)).collect())
    }
}

pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
