//! kolm-train on the real SmolLM2-135M weights: the loss falls, the written
//! adapter loads in llama.cpp on the Q4_1 base and agrees with candle, it
//! changes greedy answers as trained, resume reproduces the loss curve, and
//! bad input is refused before training.

mod common;

use std::ops::ControlFlow;
use std::sync::OnceLock;

use common::smollm2::{
    candle_and_llama_cpp_agree_with_the_adapter, config,
    llama_cpp_with_the_adapter_gives_the_trained_answer, qa_examples, smollm2, Tok,
};
use kolm_train::{
    NoProgress, Progress, StepStats, Target, TrainConfig, TrainError, TrainExample, TrainReport,
};

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
    let (dir, report) = trained();
    let adapter = dir.path().join("adapter.gguf");
    let device = candle_core::Device::Cpu;
    assert_eq!(report.device, "cpu");
    candle_and_llama_cpp_agree_with_the_adapter(&adapter, &device, 0.95);
    llama_cpp_with_the_adapter_gives_the_trained_answer(&adapter);
}

fn the_loss_falls_by_half() {
    let (_, r) = trained();
    assert_eq!(r.steps, 10);
    assert!(r.first_loss.is_finite() && r.first_loss > 0.5, "{r:?}");
    assert!(r.last_loss <= r.first_loss / 2.0, "{:?}", r.losses);
    assert_eq!(r.examples_used, 4);
    assert!(r.tokens_per_second > 0.0);
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
    // An adapter that could not be written: a missing directory, a
    // directory, the base itself (which is left as it was).
    let mut c = config(&out);
    c.out = dir.path().join("no-such-dir").join("a.gguf");
    let e = quick(&c, &qa_examples());
    assert!(matches!(e, TrainError::Output { .. }), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    c.out = dir.path().to_path_buf();
    let e = quick(&c, &qa_examples());
    assert!(e.to_string().contains("is a directory"), "{e}");
    let base = dir.path().join("base.gguf");
    std::fs::copy(smollm2(), &base).unwrap();
    let before = std::fs::metadata(&base).unwrap().len();
    c.base = base.clone();
    c.out = base.clone();
    let e = quick(&c, &qa_examples());
    assert!(e.to_string().contains("is an input of this run"), "{e}");
    assert_eq!(std::fs::metadata(&base).unwrap().len(), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Unknown targets are a parse error.
    assert!(kolm_train::parse_targets("q,x").is_err());
    assert_eq!(
        kolm_train::parse_targets("q_proj,v").unwrap(),
        vec![Target::Q, Target::V]
    );
}
