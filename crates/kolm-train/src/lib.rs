//! kolm-train: LoRA fine-tuning of GGUF bases on candle, writing adapters
//! that llama.cpp loads on the quantized base.
//!
//! The compiler calls [`train`] with a [`TrainConfig`], its examples and a
//! [`ChatTokenizer`] (the base's own chat template and tokenizer, provided
//! by the caller so this crate stays free of llama.cpp); `kolmctl train` is
//! the same call behind flags. `docs/train.md` describes the choices.
//!
//! - [`data`]: examples and the JSONL reader.
//! - [`device`]: the CPU or GPU a run computes on, and its free memory.
//! - [`tokenize`]: the tokenizer trait and assistant-only loss masks.
//! - [`model`]: the GGUF header, the dequantized frozen base and its
//!   differentiable forward pass (llama, qwen2, gemma3).
//! - [`fused`]: multi-threaded CPU kernels for the row-wise ops.
//! - `linear`, `attention`: the frozen linear layers with their LoRA
//!   delta, and causal attention (CPU kernels, and the composed ops for
//!   other devices); `layer`: a whole layer as one CPU node with its own
//!   backward; `gemm`: the CPU matrix products.
//! - [`lora`], [`optim`], [`rng`]: parameters, AdamW and schedule, seeds.
//! - [`adapter`]: the llama.cpp GGUF adapter writer and reader.
//! - [`train`](mod@train): the run itself, checkpoints and resume.

pub mod adapter;
mod attention;
pub mod data;
pub mod device;
pub mod error;
pub mod fused;
mod gemm;
mod layer;
mod linear;
pub mod lora;
pub mod model;
pub mod optim;
pub mod rng;
#[cfg(test)]
mod test_support;
pub mod tokenize;
pub mod train;

pub use adapter::{check_output, read_adapter, write_adapter};
pub use data::{load_jsonl, load_jsonl_numbered, Message, TrainExample};
pub use device::{available_memory, device_name, dtype_name, free_memory, DeviceChoice, Precision};
pub use error::TrainError;
pub use lora::{parse_targets, Lora, Target};
pub use model::{Model, ModelConfig, SUPPORTED_ARCHITECTURES};
pub use tokenize::{encode, ChatTokenizer, Encoded};
pub use train::{train, NoProgress, Progress, StepStats, TrainConfig, TrainReport};
