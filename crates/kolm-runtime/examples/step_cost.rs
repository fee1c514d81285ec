//! Times llama.cpp decode steps of 1 to 9 positions on one sequence, the
//! cost a drafted position adds (run: `cargo run --release -p kolm-runtime
//! --example step_cost -- MODEL.gguf [THREADS]`).

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: step_cost MODEL.gguf [THREADS]");
    let threads: i32 = args.get(2).map_or(2, |t| t.parse().unwrap());
    let backend = LlamaBackend::init().unwrap();
    let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default()).unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(1024))
        .with_n_batch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(&backend, params).unwrap();
    let prompt = model.vocab().tokenize(
        "<|im_start|>system\nYou extract contacts as JSON.<|im_end|>\n<|im_start|>user\nPedro Kim, pedro.kim@mail.example.org, +1-555-223-5980, lives in Lisbon.<|im_end|>\n<|im_start|>assistant\n".as_bytes(),
        true,
        true,
    );
    let mut batch = LlamaBatch::new(512, 1);
    for (i, t) in prompt.iter().enumerate() {
        batch
            .add(*t, i as i32, &[0], i + 1 == prompt.len())
            .unwrap();
    }
    ctx.decode(&mut batch).unwrap();
    let base = prompt.len() as i32;
    let filler = prompt[..16].to_vec();
    for _ in 0..2 {
        for n in 1..=9usize {
            let mut times = Vec::new();
            for _ in 0..40 {
                batch.clear();
                for (k, &token) in filler.iter().enumerate().take(n) {
                    batch.add(token, base + k as i32, &[0], true).unwrap();
                }
                let t = Instant::now();
                ctx.decode(&mut batch).unwrap();
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                ctx.clear_kv_cache_seq(Some(0), Some(base as u32), None)
                    .unwrap();
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!("n={n}: median {:.2} ms", times[times.len() / 2]);
        }
    }
}
