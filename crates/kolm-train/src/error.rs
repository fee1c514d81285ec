//! `TrainError`: one variant per way a run can be refused or fail, so
//! callers (the CLI, the compiler) can match on the cause.

use std::path::PathBuf;

/// Why training was refused or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSONL line is not a valid example.
    #[error("{path}:{line}: {detail}")]
    Data {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    /// An example (in memory) is not valid.
    #[error("example at index {index}: {detail}")]
    Example { index: usize, detail: String },
    /// No examples to train on.
    #[error("the dataset is empty: nothing to train on")]
    EmptyDataset,
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The GGUF base is of an architecture this trainer does not implement.
    #[error("unsupported architecture '{arch}' (supported: {supported})")]
    UnsupportedArchitecture { arch: String, supported: String },
    /// The GGUF base could not be read or lacks a tensor or key.
    #[error("cannot load base {path}: {detail}")]
    Base { path: PathBuf, detail: String },
    /// An example is longer than `max_seq_len` and truncation is off.
    #[error("example at index {index} is {tokens} tokens long, more than max_seq_len {max} (raise --max-seq-len, or truncate it with --truncate)")]
    TooLong {
        index: usize,
        tokens: usize,
        max: usize,
    },
    /// An example has no assistant token left to learn from.
    #[error("example at index {index} has no assistant tokens to train on{why}")]
    NoTargets { index: usize, why: String },
    /// The adapter cannot be written where asked; found before training.
    #[error("cannot write the adapter to {path}: {detail}")]
    Output { path: PathBuf, detail: String },
    /// The run is estimated to need more memory than is available.
    #[error("the run needs about {needed_mib} MiB but only {available_mib} MiB is free on {device} (lower --max-seq-len or the batch size)")]
    OutOfMemory {
        needed_mib: u64,
        available_mib: u64,
        device: String,
    },
    /// The device asked for cannot be used.
    #[error("device: {0}")]
    Device(String),
    /// The chat tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A checkpoint does not match this run.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint { path: PathBuf, detail: String },
    /// The loss became NaN or infinite.
    #[error("the loss diverged (it is {loss} at step {step}); lower the learning rate")]
    Diverged { step: usize, loss: f32 },
    /// The progress observer asked to stop (a checkpoint was written if configured).
    #[error("stopped at step {step} on request")]
    Stopped { step: usize },
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }

    /// The index of the example an error is about, for callers that can
    /// name its source (a JSONL line).
    pub fn example_index(&self) -> Option<usize> {
        match self {
            TrainError::Example { index, .. }
            | TrainError::TooLong { index, .. }
            | TrainError::NoTargets { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// A candle error's message without the backtrace candle appends when
/// `RUST_BACKTRACE` is set: for errors in the user's input (a file that is
/// not GGUF), where a backtrace is noise.
pub(crate) fn candle_message(error: &candle_core::Error) -> String {
    match error {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
        other => other.to_string(),
    }
}
