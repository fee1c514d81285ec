//! kolm-train on the real SmolLM2-135M weights: the loss falls, the written
//! adapter loads in llama.cpp on the Q4_1 base and agrees with candle, it
//! changes greedy answers as trained, resume reproduces the loss curve, and
//! bad input is refused before training.

mod common;

use std::num::NonZeroU32;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use common::{adapter_effect, argmax, pearson, top1_agreement};
use kolm_runtime::{ChatMessage, ChatTemplate};
use kolm_train::{
    ChatTokenizer, Message, Model, NoProgress, Progress, StepStats, Target, TrainConfig,
    TrainError, TrainExample, TrainReport,
};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

fn smollm2() -> PathBuf {
    common::fixture("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// llama.cpp: one backend and one model for the whole binary.
struct Llama {
    model: Mutex<LlamaModel>,
    template: ChatTemplate,
}

fn llama() -> &'static Llama {
    static L: OnceLock<Llama> = OnceLock::new();
    L.get_or_init(|| {
        let model = common::load(&smollm2());
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
struct Tok;

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

const ANSWER: &str = "Zorblax quintuple nine.";

fn qa_examples() -> Vec<TrainExample> {
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

fn config(out: &Path) -> TrainConfig {
    let mut c = TrainConfig::new(smollm2(), out);
    c.rank = 8;
    c.alpha = 16.0;
    c.dropout = 0.0;
    c.learning_rate = 3e-3;
    c.batch_size = 4;
    c.max_seq_len = 96;
    c.warmup_steps = Some(2);
    c.seed = 7;
    c
}

/// One trained adapter shared by the loss, parity and behaviour tests.
fn trained() -> &'static (tempfile::TempDir, TrainReport) {
    static T: OnceLock<(tempfile::TempDir, TrainReport)> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(&dir.path().join("adapter.gguf"));
        c.max_steps = Some(10);
        let started = std::time::Instant::now();
        let report = kolm_train::train(&c, &qa_examples(), &Tok, &mut NoProgress).unwrap();
        eprintln!(
            "trained {} steps in {:.1}s ({:.0} tok/s): {:?}",
            report.steps,
            started.elapsed().as_secs_f64(),
            report.tokens_per_second,
            report.losses
        );
        (dir, report)
    })
}

/// Training once serves three checks (nextest runs each test in its own
/// process, so separate tests would train three times).
#[test]
fn a_trained_adapter_halves_the_loss_matches_llama_cpp_and_changes_answers() {
    the_loss_falls_by_half();
    candle_and_llama_cpp_agree_with_the_adapter();
    llama_cpp_with_the_adapter_gives_the_trained_answer();
}

fn the_loss_falls_by_half() {
    let (_, r) = trained();
    assert_eq!(r.steps, 10);
    assert!(r.first_loss.is_finite() && r.first_loss > 0.5, "{r:?}");
    assert!(r.last_loss <= r.first_loss / 2.0, "{:?}", r.losses);
    assert_eq!(r.examples_used, 4);
    assert!(r.tokens_per_second > 0.0);
}

/// Full-sequence logits from llama.cpp, with or without an adapter.
fn llama_logits(tokens: &[u32], adapter: Option<&Path>) -> Vec<Vec<f32>> {
    common::llama_logits(&mut llama().model.lock().unwrap(), tokens, adapter)
}

fn candle_and_llama_cpp_agree_with_the_adapter() {
    let (dir, _) = trained();
    let adapter = dir.path().join("adapter.gguf");
    // A conversation the adapter was trained on, plus one it was not.
    let mut tokens = Vec::new();
    for q in [
        "Who wrote Hamlet?",
        "Name a large animal that lives in the sea.",
    ] {
        let msgs = [Message::new("user", q), Message::new("assistant", ANSWER)];
        tokens.extend(Tok.tokenize(&Tok.render(&msgs, false).unwrap()).unwrap());
    }
    let device = candle_core::Device::Cpu;
    let model = Model::load(&smollm2(), tokens.len(), &device).unwrap();
    let (arch, lora) = kolm_train::read_adapter(&adapter, &device).unwrap();
    assert_eq!(arch, "llama");
    assert_eq!(lora.rank, 8);
    assert_eq!(lora.pairs.len(), 30 * 4);
    let c_base = model.logits(&tokens, None).unwrap();
    let c_lora = model.logits(&tokens, Some(&lora)).unwrap();
    let l_base = llama_logits(&tokens, None);
    let l_lora = llama_logits(&tokens, Some(&adapter));
    let n = tokens.len();
    let base_agree = top1_agreement(&c_base, &l_base, 0);
    let lora_agree = top1_agreement(&c_lora, &l_lora, 0);
    eprintln!(
        "top-1 agreement: base {base_agree:.3}, with adapter {lora_agree:.3} over {n} positions"
    );
    assert!(base_agree >= 0.95, "{base_agree}");
    assert!(lora_agree >= 0.95, "{lora_agree}");
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
}

/// Greedy decoding with llama.cpp, up to `max` tokens or end of turn.
fn greedy(prompt: &str, adapter: Option<&Path>, max: usize) -> String {
    let l = llama();
    let mut model = l.model.lock().unwrap();
    let mut lora = adapter.map(|p| model.lora_adapter_init(p).unwrap());
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(512))
        .with_n_batch(512);
    let mut ctx = model.new_context(common::backend(), params).unwrap();
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

fn llama_cpp_with_the_adapter_gives_the_trained_answer() {
    let (dir, _) = trained();
    let adapter = dir.path().join("adapter.gguf");
    let prompt = Tok
        .render(&[Message::new("user", "Who wrote Hamlet?")], true)
        .unwrap();
    let with = greedy(&prompt, Some(&adapter), 16);
    let without = greedy(&prompt, None, 16);
    eprintln!("with adapter: {with:?}\nbase alone: {without:?}");
    assert_eq!(with.trim(), ANSWER);
    assert!(!without.contains("Zorblax"), "{without}");
}

struct StopAt(usize, Vec<f32>);

impl Progress for StopAt {
    fn step(&mut self, s: &StepStats) -> ControlFlow<()> {
        self.1.push(s.loss);
        if s.step == self.0 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

#[test]
fn resume_after_a_checkpoint_gives_the_same_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir.path().join("a.gguf"));
    c.max_steps = Some(4);
    c.batch_size = 2;
    c.dropout = 0.1;
    let whole = kolm_train::train(&c, &qa_examples(), &Tok, &mut NoProgress).unwrap();

    c.out = dir.path().join("b.gguf");
    c.checkpoint_dir = Some(dir.path().join("ckpt"));
    c.checkpoint_every = 1;
    c.resume = true;
    let e = kolm_train::train(&c, &qa_examples(), &Tok, &mut StopAt(2, vec![])).unwrap_err();
    assert!(matches!(e, TrainError::Stopped { step: 2 }), "{e}");
    assert!(!c.out.exists());
    let resumed = kolm_train::train(&c, &qa_examples(), &Tok, &mut NoProgress).unwrap();
    assert_eq!(resumed.resumed_from, 2);
    assert_eq!(resumed.losses.len(), 4);
    for (a, b) in whole.losses.iter().zip(&resumed.losses) {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs().max(1.0),
            "{:?} vs {:?}",
            whole.losses,
            resumed.losses
        );
    }
    // Same seed, same run: the adapters are the same bytes.
    assert_eq!(
        std::fs::read(dir.path().join("a.gguf")).unwrap().len(),
        std::fs::read(&c.out).unwrap().len()
    );
    // A checkpoint of another run is refused, not silently used.
    c.rank = 4;
    let e = kolm_train::train(&c, &qa_examples(), &Tok, &mut NoProgress).unwrap_err();
    assert!(matches!(e, TrainError::Checkpoint { .. }), "{e}");
}

#[test]
fn bad_input_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let quick = |c: &TrainConfig, ex: &[TrainExample]| {
        let t = std::time::Instant::now();
        let e = kolm_train::train(c, ex, &Tok, &mut NoProgress).unwrap_err();
        assert!(t.elapsed().as_secs() < 10, "{e} took {:?}", t.elapsed());
        assert!(!out.exists());
        e
    };
    // An unsupported architecture, by name (a GGUF with one tiny tensor).
    let other = dir.path().join("mamba.gguf");
    {
        use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
        let zeros =
            candle_core::Tensor::zeros(4, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        let t = QTensor::quantize(&zeros, GgmlDType::F32).unwrap();
        let arch = gguf_file::Value::String("mamba".into());
        let mut f = std::fs::File::create(&other).unwrap();
        gguf_file::write(
            &mut f,
            &[("general.architecture", &arch)],
            &[("token_embd.weight", &t)],
        )
        .unwrap();
    }
    let mut c = config(&out);
    c.base = other;
    let e = quick(&c, &qa_examples());
    assert!(
        matches!(&e, TrainError::UnsupportedArchitecture { arch, .. } if arch == "mamba"),
        "{e}"
    );
    assert!(e.to_string().contains("mamba"));
    assert!(e.to_string().contains("gemma3"), "the supported list: {e}");
    // An empty dataset.
    let e = quick(&config(&out), &[]);
    assert!(matches!(e, TrainError::EmptyDataset), "{e}");
    // Rank 0.
    let mut c = config(&out);
    c.rank = 0;
    assert!(matches!(quick(&c, &qa_examples()), TrainError::Config(_)));
    // An example longer than max_seq_len is refused, naming it...
    let mut c = config(&out);
    let mut ex = qa_examples();
    ex.push(TrainExample::prompt_completion(&"word ".repeat(60), "ok"));
    c.max_seq_len = 60;
    let e = quick(&c, &ex);
    assert!(
        matches!(
            e,
            TrainError::TooLong {
                index: 4,
                max: 60,
                ..
            }
        ),
        "{e}"
    );
    // ...and with truncation, one whose answer is cut away entirely is too.
    c.truncate = true;
    let e = quick(&c, &ex);
    assert!(matches!(e, TrainError::NoTargets { index: 4, .. }), "{e}");
    // A run that would not fit in memory.
    let mut c = config(&out);
    c.memory_limit = Some(200 << 20);
    let e = quick(&c, &qa_examples());
    assert!(matches!(e, TrainError::OutOfMemory { .. }), "{e}");
    // Unknown targets are a parse error.
    assert!(kolm_train::parse_targets("q,x").is_err());
    assert_eq!(
        kolm_train::parse_targets("q_proj,v").unwrap(),
        vec![Target::Q, Target::V]
    );
}
