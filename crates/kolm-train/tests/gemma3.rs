//! Gemma 3 on the real gemma-3-270m weights (Q4_K_M) against llama.cpp: a
//! short training run halves the loss; then candle's forward pass on the
//! dequantized base agrees with llama.cpp on the top-1 token, without and
//! with the adapter kolm-train wrote (which llama.cpp loads on the
//! quantized base), and the adapter moves both the same way. A sequence
//! longer than the 512-token window exercises the sliding-window layers.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use candle_core::Device;
use kolm_train::{ChatTokenizer, Message, Model, NoProgress, TrainConfig, TrainExample};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

fn gemma3() -> PathBuf {
    let dir = std::env::var_os("KOLM_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/kolm/fixtures")
        });
    let path = dir.join("gemma-3-270m-q4_k_m.gguf");
    assert!(
        path.exists(),
        "{} is missing: run scripts/fixtures.sh",
        path.display()
    );
    path
}

struct Llama {
    backend: LlamaBackend,
    model: Mutex<LlamaModel>,
}

fn llama() -> &'static Llama {
    static L: OnceLock<Llama> = OnceLock::new();
    L.get_or_init(|| {
        let backend = LlamaBackend::init().unwrap();
        let model =
            LlamaModel::load_from_file(&backend, gemma3(), &LlamaModelParams::default()).unwrap();
        Llama {
            backend,
            model: Mutex::new(model),
        }
    })
}

fn tokenize(text: &str, bos: bool) -> Vec<u32> {
    let model = llama().model.lock().unwrap();
    model
        .vocab()
        .tokenize(text.as_bytes(), bos, false)
        .into_iter()
        .map(|t| t.0 as u32)
        .collect()
}

/// Full-sequence logits from llama.cpp, with or without an adapter.
fn llama_logits(tokens: &[u32], adapter: Option<&Path>) -> Vec<Vec<f32>> {
    let l = llama();
    let mut model = l.model.lock().unwrap();
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
    let mut ctx = model.new_context(&l.backend, params).unwrap();
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

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

fn log_prob(v: &[f32], i: usize) -> f32 {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = v.iter().map(|x| (x - m).exp()).sum::<f32>().ln() + m;
    v[i] - lse
}

fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() as f32;
    let (ma, mb) = (a.iter().sum::<f32>() / n, b.iter().sum::<f32>() / n);
    let cov: f32 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f32 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f32 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va.sqrt() * vb.sqrt())
}

const TEXT: &str = "The lighthouse keeper climbed the spiral stairs at dusk, trimmed the wick, \
and wound the clockwork that turned the great lens. Ships passing the headland counted the \
flashes to know where they were: three short and one long meant the northern reef. ";

const ANSWER: &str = "Zorblax quintuple nine.";

/// Trains an adapter (8 steps on two questions with one odd answer), then
/// compares candle and llama.cpp on a text past the 512-token window
/// followed by a trained conversation, without and with the adapter.
#[test]
fn gemma3_trains_and_matches_llama_cpp_with_and_without_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TrainConfig::new(gemma3(), dir.path().join("adapter.gguf"));
    config.max_steps = Some(8);
    config.epochs = 100;
    config.learning_rate = 2e-3;
    let examples: Vec<TrainExample> = ["Who wrote Hamlet?", "What is the capital of Peru?"]
        .iter()
        .map(|q| TrainExample {
            messages: vec![Message::new("user", q), Message::new("assistant", ANSWER)],
        })
        .collect();
    let report = kolm_train::train(&config, &examples, &Plain, &mut NoProgress).unwrap();
    eprintln!("loss {:?}", report.losses);
    assert!(
        report.last_loss <= report.first_loss / 2.0,
        "{:?}",
        report.losses
    );

    // Past the 512-token window, so the sliding-window layers mask; then a
    // conversation the adapter was trained on.
    let mut tokens = tokenize(TEXT, true);
    let body = tokenize(TEXT, false);
    while tokens.len() < 540 {
        tokens.extend(&body);
    }
    let trained = Plain
        .render(
            &[
                Message::new("user", "Who wrote Hamlet?"),
                Message::new("assistant", ANSWER),
            ],
            false,
        )
        .unwrap();
    tokens.extend(tokenize(&trained, false));
    let device = Device::Cpu;
    let model = Model::load(&gemma3(), tokens.len(), &device).unwrap();
    let c = &model.config;
    assert_eq!(c.arch, "gemma3");
    assert_eq!((c.heads, c.kv_heads, c.head_dim), (4, 1, 256));
    assert_eq!(c.sliding_window.map(|w| w.0), Some(512));
    let (arch, lora) = kolm_train::read_adapter(&config.out, &device).unwrap();
    assert_eq!(arch, "gemma3");

    let c_base = model.logits(&tokens, None).unwrap();
    let c_lora = model.logits(&tokens, Some(&lora)).unwrap();
    let l_base = llama_logits(&tokens, None);
    let l_lora = llama_logits(&tokens, Some(&config.out));
    let n = tokens.len();
    let agree = |a: &[Vec<f32>], b: &[Vec<f32>], from: usize| {
        (from..n)
            .filter(|&i| argmax(&a[i]) == argmax(&b[i]))
            .count() as f32
            / (n - from) as f32
    };
    let (base_agree, lora_agree) = (agree(&c_base, &l_base, 0), agree(&c_lora, &l_lora, 0));
    let windowed = agree(&c_base, &l_base, 512);
    eprintln!(
        "top-1 agreement over {n} positions: base {base_agree:.3}, adapter {lora_agree:.3}, past the window {windowed:.3}"
    );
    assert!(base_agree >= 0.95, "{base_agree}");
    assert!(lora_agree >= 0.95, "{lora_agree}");
    assert!(windowed >= 0.95, "{windowed}");
    // The adapter moves both the same way: the change in log-probability
    // of each actual next token, candle vs llama.cpp.
    let delta = |base: &[Vec<f32>], lora: &[Vec<f32>]| -> Vec<f32> {
        (0..n - 1)
            .map(|i| {
                let t = tokens[i + 1] as usize;
                log_prob(&lora[i], t) - log_prob(&base[i], t)
            })
            .collect()
    };
    let (dc, dl) = (delta(&c_base, &c_lora), delta(&l_base, &l_lora));
    let r = pearson(&dc, &dl);
    let top = |d: &[f32]| d.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    eprintln!(
        "correlation of the adapter's effect: {r:.4}; largest gain candle {:.2}, llama.cpp {:.2}",
        top(&dc),
        top(&dl)
    );
    assert!(r > 0.95, "{r}");
    // It really moved: the trained answer became far more likely in both.
    assert!(
        top(&dc) > 3.0 && top(&dl) > 3.0,
        "{} {}",
        top(&dc),
        top(&dl)
    );
}

/// llama.cpp's Gemma vocabulary with a plain `role:\ncontent` template (the
/// fixture is a pretrained base without a chat template).
struct Plain;

impl ChatTokenizer for Plain {
    fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        let mut s: String = messages
            .iter()
            .map(|m| format!("{}:\n{}\n", m.role, m.content))
            .collect();
        if add_generation_prompt {
            s.push_str("assistant:\n");
        }
        Ok(s)
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(tokenize(text, true))
    }
}
