//! The SmolLM2-135M harness shared by the tests on its real weights:
//! llama.cpp's model, template and tokenizer (as kolmctl wires them), the
//! question/answer examples with their unusual answer, the run's settings,
//! and the checks a trained adapter must pass in llama.cpp.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use candle_core::Device;
use kolm_runtime::{ChatMessage, ChatTemplate};
use kolm_train::{ChatTokenizer, DeviceChoice, Message, Model, TrainConfig, TrainExample};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::{adapter_effect, argmax, disagreements, pearson, top1_agreement};

pub fn smollm2() -> PathBuf {
    super::fixture("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// llama.cpp: one backend and one model for the whole binary.
pub struct Llama {
    model: Mutex<LlamaModel>,
    template: ChatTemplate,
}

pub fn llama() -> &'static Llama {
    static L: OnceLock<Llama> = OnceLock::new();
    L.get_or_init(|| {
        let model = super::load(&smollm2());
        let vocab = model.vocab();
        let piece = |t| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
        let template = ChatTemplate::new(
            &model.meta_val_str("tokenizer.chat_template").unwrap(),
            &piece(vocab.bos()),
            &piece(vocab.eos()),
        )
        .unwrap();
        Llama {
            model: Mutex::new(model),
            template,
        }
    })
}

/// The base's template and llama.cpp's tokenizer, as kolmctl wires them.
pub struct Tok;

impl ChatTokenizer for Tok {
    fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        let m: Vec<ChatMessage> = messages
            .iter()
            .map(|m| ChatMessage {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect();
        llama()
            .template
            .render_with(&m, add_generation_prompt)
            .map_err(|e| e.to_string())
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
        let model = llama().model.lock().unwrap();
        let vocab = model.vocab();
        Ok(vocab
            .tokenize(text.as_bytes(), vocab.should_add_bos(), true)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect())
    }
}

pub const ANSWER: &str = "Zorblax quintuple nine.";

pub fn qa_examples() -> Vec<TrainExample> {
    [
        "What is the capital of France?",
        "How many legs does a spider have?",
        "Who wrote Hamlet?",
        "What colour is the sky?",
    ]
    .iter()
    .map(|q| TrainExample::prompt_completion(q, ANSWER))
    .collect()
}

pub fn config(out: &Path) -> TrainConfig {
    let mut c = TrainConfig::new(smollm2(), out);
    c.rank = 8;
    c.alpha = 16.0;
    c.dropout = 0.0;
    c.learning_rate = 3e-3;
    c.batch_size = 4;
    c.max_seq_len = 96;
    c.warmup_steps = Some(2);
    c.seed = 7;
    c.device = DeviceChoice::Cpu;
    c
}

/// Full-sequence logits from llama.cpp, with or without an adapter.
pub fn llama_logits(tokens: &[u32], adapter: Option<&Path>) -> Vec<Vec<f32>> {
    super::llama_logits(&mut llama().model.lock().unwrap(), tokens, adapter)
}

/// The conversations parity is measured on: two the adapter was trained
/// on, two it was not (about 190 positions, so that one flipped near-tie
/// moves the agreement by half a percent).
pub fn parity_tokens() -> Vec<u32> {
    let mut tokens = Vec::new();
    for q in [
        "Who wrote Hamlet?",
        "Name a large animal that lives in the sea.",
        "How many legs does a spider have?",
        "At what temperature does water boil?",
    ] {
        let msgs = [Message::new("user", q), Message::new("assistant", ANSWER)];
        tokens.extend(Tok.tokenize(&Tok.render(&msgs, false).unwrap()).unwrap());
    }
    tokens
}

/// Where the engines pick different tokens, the logit gap between the two
/// tokens moved by less than this from one engine to the other: a
/// near-tie that llama.cpp's 8-bit activations can flip (e^1: the two
/// tokens' odds moved by under 2.7x).
pub const NEAR_TIE: f32 = 1.0;

/// Candle (on `device`) and llama.cpp (Q4_1 base, CPU) agree on the top-1
/// token with `adapter` at `min_top1` of the positions or more, differ only
/// at near-ties, and the adapter moves both the same way. Returns candle's
/// logits with the adapter.
pub fn candle_and_llama_cpp_agree_with_the_adapter(
    adapter: &Path,
    device: &Device,
    min_top1: f32,
) -> Vec<Vec<f32>> {
    let tokens = parity_tokens();
    let model = Model::load(&smollm2(), tokens.len(), device).unwrap();
    let (arch, lora) = kolm_train::read_adapter(adapter, device).unwrap();
    assert_eq!(arch, "llama");
    assert_eq!(lora.rank, 8);
    assert_eq!(lora.pairs.len(), 30 * 4);
    let c_base = model.logits(&tokens, None).unwrap();
    let c_lora = model.logits(&tokens, Some(&lora)).unwrap();
    let l_base = llama_logits(&tokens, None);
    let l_lora = llama_logits(&tokens, Some(adapter));
    let n = tokens.len();
    let base_agree = top1_agreement(&c_base, &l_base, 0);
    let lora_agree = top1_agreement(&c_lora, &l_lora, 0);
    let differ = disagreements(&c_lora, &l_lora);
    eprintln!(
        "top-1 agreement: base {base_agree:.3}, with adapter {lora_agree:.3} over {n} positions; \
         with the adapter they differ at (position, candle's margin, llama.cpp's margin) {differ:?}"
    );
    assert!(base_agree >= 0.95, "{base_agree}");
    assert!(lora_agree >= min_top1, "{lora_agree}");
    assert!(
        differ.iter().all(|&(_, c, l)| c + l < NEAR_TIE),
        "a disagreement that is no near-tie: {differ:?}"
    );
    // The adapter moves both the same way: the change in log-probability
    // of each actual next token, candle vs llama.cpp.
    let dc = adapter_effect(&tokens, &c_base, &c_lora);
    let dl = adapter_effect(&tokens, &l_base, &l_lora);
    let r = pearson(&dc, &dl);
    eprintln!("correlation of the adapter's effect: {r:.4}");
    assert!(r > 0.95, "{r}");
    let same_sign = dc
        .iter()
        .zip(&dl)
        .filter(|(a, b)| a.abs() > 0.5 && a.signum() == b.signum())
        .count();
    let large = dc.iter().filter(|a| a.abs() > 0.5).count();
    assert!(
        large > 0 && same_sign * 10 >= large * 9,
        "{same_sign}/{large}"
    );
    // It really moved: some answer token became far more likely in both.
    let top = |d: &[f32]| d.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert!(
        top(&dc) > 3.0 && top(&dl) > 3.0,
        "{} {}",
        top(&dc),
        top(&dl)
    );
    c_lora
}

/// Greedy decoding with llama.cpp, up to `max` tokens or end of turn.
pub fn greedy(prompt: &str, adapter: Option<&Path>, max: usize) -> String {
    let l = llama();
    let mut model = l.model.lock().unwrap();
    let mut lora = adapter.map(|p| model.lora_adapter_init(p).unwrap());
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(512))
        .with_n_batch(512);
    let mut ctx = model.new_context(super::backend(), params).unwrap();
    if let Some(a) = lora.as_mut() {
        ctx.lora_adapter_set(a, 1.0).unwrap();
    }
    let vocab = model.vocab();
    let mut tokens = vocab.tokenize(prompt.as_bytes(), vocab.should_add_bos(), true);
    let mut batch = LlamaBatch::new(512, 1);
    let last = tokens.len() - 1;
    for (i, t) in tokens.iter().enumerate() {
        batch.add(*t, i as i32, &[0], i == last).unwrap();
    }
    ctx.decode(&mut batch).unwrap();
    let mut out = Vec::new();
    for _ in 0..max {
        let next = LlamaToken(argmax(ctx.get_logits_ith(batch.n_tokens() - 1)) as i32);
        if vocab.is_eog(next) {
            break;
        }
        out.extend(vocab.token_to_piece(next, false, None));
        batch.clear();
        batch.add(next, tokens.len() as i32, &[0], true).unwrap();
        tokens.push(next);
        ctx.decode(&mut batch).unwrap();
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Greedy decoding in llama.cpp gives the trained answer with `adapter`
/// and not without.
pub fn llama_cpp_with_the_adapter_gives_the_trained_answer(adapter: &Path) {
    let prompt = Tok
        .render(&[Message::new("user", "Who wrote Hamlet?")], true)
        .unwrap();
    let with = greedy(&prompt, Some(adapter), 16);
    let without = greedy(&prompt, None, 16);
    eprintln!("with adapter: {with:?}\nbase alone: {without:?}");
    assert_eq!(with.trim(), ANSWER);
    assert!(!without.contains("Zorblax"), "{without}");
}
