//! Gemma 3 on the real gemma-3-270m weights (Q4_K_M) against llama.cpp: a
//! short training run halves the loss; then candle's forward pass on the
//! dequantized base agrees with llama.cpp on the top-1 token, without and
//! with the adapter kolm-train wrote (which llama.cpp loads on the
//! quantized base), and the adapter moves both the same way. A sequence
//! longer than the 512-token window exercises the sliding-window layers.

mod common;

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use candle_core::Device;
use common::{adapter_effect, llama_logits, pearson, top1_agreement};
use kolm_train::{ChatTokenizer, Message, Model, NoProgress, TrainConfig, TrainExample};
use llama_cpp_2::model::LlamaModel;

fn gemma3() -> PathBuf {
    common::fixture("gemma-3-270m-q4_k_m.gguf")
}

/// The fixture in llama.cpp, once per test binary.
fn llama() -> &'static Mutex<LlamaModel> {
    static L: OnceLock<Mutex<LlamaModel>> = OnceLock::new();
    L.get_or_init(|| Mutex::new(common::load(&gemma3())))
}

fn tokenize(text: &str, bos: bool) -> Vec<u32> {
    let model = llama().lock().unwrap();
    model
        .vocab()
        .tokenize(text.as_bytes(), bos, false)
        .into_iter()
        .map(|t| t.0 as u32)
        .collect()
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
    let (l_base, l_lora) = {
        let mut llama = llama().lock().unwrap();
        (
            llama_logits(&mut llama, &tokens, None),
            llama_logits(&mut llama, &tokens, Some(&config.out)),
        )
    };
    let n = tokens.len();
    let base_agree = top1_agreement(&c_base, &l_base, 0);
    let lora_agree = top1_agreement(&c_lora, &l_lora, 0);
    let windowed = top1_agreement(&c_base, &l_base, 512);
    eprintln!(
        "top-1 agreement over {n} positions: base {base_agree:.3}, adapter {lora_agree:.3}, past the window {windowed:.3}"
    );
    assert!(base_agree >= 0.95, "{base_agree}");
    assert!(lora_agree >= 0.95, "{lora_agree}");
    assert!(windowed >= 0.95, "{windowed}");
    // The adapter moves both the same way.
    let dc = adapter_effect(&tokens, &c_base, &c_lora);
    let dl = adapter_effect(&tokens, &l_base, &l_lora);
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
        Ok(common::render_plain(messages, add_generation_prompt))
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(tokenize(text, true))
    }
}
