//! Embedders: the [`Embedder`] trait every modality's encoder implements,
//! and [`MiniLm`], all-MiniLM-L6-v2 (BERT) on candle with the `tokenizers`
//! crate: batched, mean-pooled over the attention mask, L2-normalized —
//! the same vectors sentence-transformers computes.

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::{Deserialize, Serialize};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{RecallError, Result};

/// What an embedder reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Modality {
    Text,
    Image,
    Audio,
    Video,
}

/// Turns inputs into unit vectors of a fixed dimension. Text embedders also
/// expose their tokenizer's spans so chunks are measured in its tokens.
pub trait Embedder: Send + Sync {
    /// A stable identity recorded in the index and the manifest
    /// (e.g. `sentence-transformers/all-MiniLM-L6-v2`).
    fn id(&self) -> &str;
    /// Length of every vector.
    fn dimension(&self) -> usize;
    /// What it reads.
    fn modality(&self) -> Modality;
    /// Most tokens one input may have; longer inputs are truncated.
    fn max_tokens(&self) -> usize;
    /// Byte ranges in `text` of its tokens, without special tokens.
    fn token_spans(&self, text: &str) -> Result<Vec<Range<usize>>>;
    /// One unit vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
}

/// The files of a sentence-transformers BERT embedder, held in memory.
#[derive(Clone, Default)]
pub struct EmbedderFiles {
    files: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for EmbedderFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: BTreeMap<&str, usize> = self
            .files
            .iter()
            .map(|(k, v)| (k.as_str(), v.len()))
            .collect();
        f.debug_struct("EmbedderFiles")
            .field("files", &sizes)
            .finish()
    }
}

/// The files an embedder needs, and those that are kept when present.
pub const REQUIRED_FILES: &[&str] = &["config.json", "tokenizer.json", "model.safetensors"];
const OPTIONAL_FILES: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentence_bert_config.json",
    "modules.json",
    "config_sentence_transformers.json",
];

impl EmbedderFiles {
    /// Files by name (as under `recall/embedder/` in an artifact).
    pub fn from_map(files: BTreeMap<String, Vec<u8>>) -> Result<Self> {
        let f = EmbedderFiles { files };
        for name in REQUIRED_FILES {
            if !f.files.contains_key(*name) {
                return Err(RecallError::Embedder(format!("{name} is missing")));
            }
        }
        Ok(f)
    }

    /// Reads a folder or a `.zip` (sentence-transformers layout: the files at
    /// the top, or inside one folder).
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let mut files = BTreeMap::new();
            for name in REQUIRED_FILES.iter().chain(OPTIONAL_FILES) {
                let p = path.join(name);
                if p.is_file() {
                    files.insert(
                        (*name).to_owned(),
                        std::fs::read(&p).map_err(RecallError::io(&p))?,
                    );
                }
            }
            return Self::from_map(files);
        }
        let file = std::fs::File::open(path).map_err(RecallError::io(path))?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| {
            RecallError::Embedder(format!(
                "{} is neither a folder nor a zip: {e}",
                path.display()
            ))
        })?;
        let mut files = BTreeMap::new();
        for i in 0..zip.len() {
            let mut entry = zip
                .by_index(i)
                .map_err(|e| RecallError::Embedder(format!("{}: {e}", path.display())))?;
            let name = entry.name().to_owned();
            let base = name.rsplit('/').next().unwrap_or(&name);
            // Only top-level files (or one folder deep); `1_Pooling/config.json`
            // must not shadow the model's config.
            let depth = name.trim_end_matches('/').matches('/').count();
            let wanted = REQUIRED_FILES.contains(&base) || OPTIONAL_FILES.contains(&base);
            if !entry.is_file() || !wanted || depth > 1 || files.contains_key(base) {
                continue;
            }
            if depth == 1 && name.starts_with("1_Pooling/") {
                continue;
            }
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut data)
                .map_err(RecallError::io(path))?;
            files.insert(base.to_owned(), data);
        }
        Self::from_map(files)
    }

    /// The files by name.
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }

    /// Writes the files into `dir` (created), for packing.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
        std::fs::create_dir_all(dir).map_err(RecallError::io(dir))?;
        let mut paths = Vec::new();
        for (name, data) in &self.files {
            let p = dir.join(name);
            std::fs::write(&p, data).map_err(RecallError::io(&p))?;
            paths.push(p);
        }
        Ok(paths)
    }
}

/// all-MiniLM-L6-v2 (or any sentence-transformers BERT with mean pooling).
pub struct MiniLm {
    id: String,
    model: BertModel,
    tokenizer: Tokenizer,
    /// The tokenizer without truncation or padding, for chunking.
    plain: Tokenizer,
    dimension: usize,
    max_tokens: usize,
    batch: usize,
    device: Device,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm")
            .field("id", &self.id)
            .field("dimension", &self.dimension)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

/// The identity recorded for all-MiniLM-L6-v2.
pub const MINILM_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

impl MiniLm {
    /// Loads from a folder or zip (see [`EmbedderFiles::load`]).
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_files(&EmbedderFiles::load(path)?)
    }

    /// Builds the model from files in memory, on the CPU.
    pub fn from_files(files: &EmbedderFiles) -> Result<Self> {
        let get = |n: &str| files.files.get(n).expect("checked by from_map");
        let config: Config = serde_json::from_slice(get("config.json"))
            .map_err(|e| RecallError::Embedder(format!("config.json: {e}")))?;
        // sentence-transformers truncates at max_seq_length (256 for MiniLM).
        let max_tokens = files
            .files
            .get("sentence_bert_config.json")
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v.get("max_seq_length").and_then(serde_json::Value::as_u64))
            .map_or(256, |n| n as usize)
            .min(config.max_position_embeddings);
        let mut plain = Tokenizer::from_bytes(get("tokenizer.json"))
            .map_err(|e| RecallError::Tokenizer(e.to_string()))?;
        plain
            .with_truncation(None)
            .map_err(|e| RecallError::Tokenizer(e.to_string()))?;
        plain.with_padding(None);
        let mut tokenizer = plain.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| RecallError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id: config.pad_token_id as u32,
            ..Default::default()
        }));
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(
            get("model.safetensors").clone(),
            DType::F32,
            &device,
        )?;
        let model = BertModel::load(vb, &config)?;
        let id = if config.hidden_size == 384 && config.num_hidden_layers == 6 {
            MINILM_ID.to_owned()
        } else {
            format!(
                "bert-mean-pooled/{}x{}",
                config.num_hidden_layers, config.hidden_size
            )
        };
        Ok(MiniLm {
            id,
            dimension: config.hidden_size,
            model,
            tokenizer,
            plain,
            max_tokens,
            batch: 32,
            device,
        })
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| RecallError::Tokenizer(e.to_string()))?;
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let n = encodings.len();
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        // Mean over the tokens the mask keeps.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let unit = mean.broadcast_div(&norm)?;
        Ok(unit.to_vec2::<f32>()?)
    }
}

impl Embedder for MiniLm {
    fn id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn modality(&self) -> Modality {
        Modality::Text
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn token_spans(&self, text: &str) -> Result<Vec<Range<usize>>> {
        let enc = self
            .plain
            .encode(text, false)
            .map_err(|e| RecallError::Tokenizer(e.to_string()))?;
        Ok(enc.get_offsets().iter().map(|&(a, b)| a..b).collect())
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        // Sort by length so each batch pads little; restore the order after.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let mut out = vec![Vec::new(); texts.len()];
        for group in order.chunks(self.batch) {
            let batch: Vec<&str> = group.iter().map(|&i| texts[i]).collect();
            for (i, v) in group.iter().zip(self.embed_batch(&batch)?) {
                out[*i] = v;
            }
        }
        Ok(out)
    }
}
