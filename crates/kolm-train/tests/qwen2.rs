//! Qwen2 (q/k/v biases, NeoX rotary, grouped KV heads) against llama.cpp's
//! own Qwen2 graph. No Qwen2 weights ship in the registry packages kolm's
//! tests use, so the model is `tests/data/tiny-qwen2.gguf`: two layers with
//! seeded random f32 weights, written by `tests/data/make_tiny_qwen2.py`.
//! candle's forward pass must give llama.cpp's logits, without and with a
//! LoRA adapter written by kolm-train and loaded by llama.cpp; and training
//! on it must lower the loss.

mod common;

use candle_core::{Device, Tensor};
use common::{llama_logits, max_abs_diff, tiny_qwen2, top1_agreement, Bytes};
use kolm_train::{Lora, Message, Model, NoProgress, Target, TrainConfig, TrainExample};

/// Byte tokens (ids 3..259) of seeded pseudo-random text.
fn tokens(n: usize) -> Vec<u32> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            3 + (x % 256) as u32
        })
        .collect()
}

#[test]
fn candle_matches_llama_cpp_on_qwen2_with_and_without_an_adapter() {
    let device = Device::Cpu;
    let tokens = tokens(48);
    let model = Model::load(&tiny_qwen2(), tokens.len(), &device).unwrap();
    let c = model.config.clone();
    assert_eq!(c.arch, "qwen2");
    assert!(c.rope_neox);
    assert_eq!((c.heads, c.kv_heads), (4, 2));

    // An adapter with non-zero B everywhere, so every module moves.
    let targets = [Target::Q, Target::K, Target::V, Target::O];
    let kv = c.kv_heads * c.head_dim;
    let lora = Lora::init(
        c.layers,
        &targets,
        4,
        8.0,
        |t| match t {
            Target::K | Target::V => (c.embedding, kv),
            _ => (c.embedding, c.embedding),
        },
        1,
        &device,
    )
    .unwrap();
    // B from a seeded generator (uniform in ±0.5), so that the check sees
    // the same logits every run: an unseeded random B once put two tokens
    // within llama.cpp's f16 rounding of each other (top-1 0.979 with a max
    // logit difference of 0.003).
    let mut rng = kolm_train::rng::Rng::new(11);
    for (i, pair) in lora.pairs.values().enumerate() {
        let (o, r) = pair.b.as_tensor().dims2().unwrap();
        let values: Vec<f32> = (0..o * r).map(|_| rng.next_f32() - 0.5).collect();
        let b = Tensor::from_vec(values, (o, r), &device).unwrap();
        pair.b.set(&b).unwrap();
        assert!(i < 4 * c.layers);
    }
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("adapter.gguf");
    kolm_train::write_adapter(&adapter, &lora, &c.arch).unwrap();

    let c_base = model.logits(&tokens, None).unwrap();
    let c_lora = model.logits(&tokens, Some(&lora)).unwrap();
    let mut llama = common::load(&tiny_qwen2());
    let l_base = llama_logits(&mut llama, &tokens, None);
    let l_lora = llama_logits(&mut llama, &tokens, Some(&adapter));
    let agree = |a: &[Vec<f32>], b: &[Vec<f32>]| top1_agreement(a, b, 0);
    let (base_diff, lora_diff) = (
        max_abs_diff(&c_base, &l_base),
        max_abs_diff(&c_lora, &l_lora),
    );
    let moved = max_abs_diff(&c_base, &c_lora);
    eprintln!(
        "top-1 agreement: base {:.3}, adapter {:.3}; max |logit diff| base {base_diff:.4}, adapter {lora_diff:.4}; the adapter moved logits by up to {moved:.3}",
        agree(&c_base, &l_base),
        agree(&c_lora, &l_lora)
    );
    assert_eq!(agree(&c_base, &l_base), 1.0);
    assert_eq!(agree(&c_lora, &l_lora), 1.0);
    // llama.cpp keeps K and V in f16: differences of that order only,
    // far below what the adapter changes.
    assert!(base_diff < 0.01, "{base_diff}");
    assert!(lora_diff < 0.01, "{lora_diff}");
    assert!(moved > 1.0, "{moved}");
}

#[test]
fn training_on_qwen2_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TrainConfig::new(tiny_qwen2(), dir.path().join("adapter.gguf"));
    config.rank = 8;
    config.alpha = 16.0;
    config.learning_rate = 1e-2;
    config.max_steps = Some(30);
    config.epochs = 100;
    let examples: Vec<TrainExample> = ["a", "b", "c", "d"]
        .iter()
        .map(|q| TrainExample {
            messages: vec![Message::new("user", q), Message::new("assistant", "zz")],
        })
        .collect();
    let report = kolm_train::train(&config, &examples, &Bytes, &mut NoProgress).unwrap();
    eprintln!("loss {} -> {}", report.first_loss, report.last_loss);
    assert!(
        report.last_loss <= report.first_loss / 2.0,
        "{:?}",
        report.losses
    );
    let (arch, lora) = kolm_train::read_adapter(&config.out, &Device::Cpu).unwrap();
    assert_eq!(arch, "qwen2");
    assert_eq!(lora.pairs.len(), 2 * 4);
}
