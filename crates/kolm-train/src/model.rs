//! The frozen base: its GGUF header (architecture, shapes) read before any
//! weight, its weights dequantized (f32, or bf16/f16 on a GPU, see
//! [`crate::Precision`]), and its forward pass. On the CPU each layer is
//! one fused node with its own backward (`layer.rs`); elsewhere, and as the
//! tests' reference, the layer is written with differentiable candle
//! primitives (candle's fused `rms_norm`, `softmax_last_dim` and `rope`
//! have no backward pass). The output norm and log-softmax use
//! [`crate::fused`]'s multi-threaded kernels.
//!
//! Weights stay in the GGUF's own layout, so the rotary embedding follows
//! llama.cpp's convention per architecture (adjacent pairs for `llama`,
//! halves for `qwen2` and `gemma3`) and the adapter's tensors need no
//! permutation.
//!
//! `gemma3` follows llama.cpp's graph: embeddings scaled by `sqrt(E)`, RMS
//! norms on each head's query and key, norms after attention and after the
//! feed-forward, GELU (tanh) gating, and five sliding-window layers (window
//! and rotary base 10 000) to each global one (the GGUF's rotary base).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};

use crate::attention::{attention, Attention, FusedAttention};
use crate::error::{candle_message, TrainError};
use crate::fused::{self, Gating};
use crate::layer::{self, LayerNode, LayerWeights};
use crate::linear::{frozen_linear, lora_linear, Delta};
use crate::lora::{Lora, Target};
use crate::rng::Rng;

/// Architectures the trainer implements (`general.architecture`).
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "gemma3"];

/// Gemma 3: one global-attention layer after every five sliding-window
/// layers, whose rotary base is fixed (llama.cpp's `set_swa_pattern(6)` and
/// `rope_freq_base_train_swa`).
const GEMMA3_SWA_PATTERN: usize = 6;
const GEMMA3_SWA_ROPE_BASE: f32 = 10_000.0;

/// Shapes and constants of a base, from its GGUF metadata.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: String,
    pub layers: usize,
    pub embedding: usize,
    pub feed_forward: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rope_base: f32,
    pub rms_eps: f64,
    /// Rotate halves (NeoX: Qwen2, Gemma 3) rather than adjacent pairs (Llama).
    pub rope_neox: bool,
    /// Embeddings are multiplied by this (Gemma 3: `sqrt(E)`).
    pub embed_scale: Option<f32>,
    /// GELU (tanh) instead of SiLU in the gated feed-forward (Gemma 3).
    pub gelu: bool,
    /// Sliding-window attention (Gemma 3): the window, and the rotary base
    /// of the windowed layers. Every [`GEMMA3_SWA_PATTERN`]-th layer is global.
    pub sliding_window: Option<(usize, f32)>,
    pub context_train: usize,
    /// Bytes of the dequantized f32 weights.
    pub f32_bytes: u64,
}

fn meta_int(c: &Content, key: &str) -> Option<u64> {
    match c.metadata.get(key)? {
        Value::U8(v) => Some(u64::from(*v)),
        Value::U16(v) => Some(u64::from(*v)),
        Value::U32(v) => Some(u64::from(*v)),
        Value::U64(v) => Some(*v),
        Value::I8(v) => u64::try_from(*v).ok(),
        Value::I16(v) => u64::try_from(*v).ok(),
        Value::I32(v) => u64::try_from(*v).ok(),
        Value::I64(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

fn meta_f32(c: &Content, key: &str) -> Option<f32> {
    match c.metadata.get(key)? {
        Value::F32(v) => Some(*v),
        Value::F64(v) => Some(*v as f32),
        _ => None,
    }
}

/// Reads the GGUF header of `path` (no tensor data) and refuses an
/// unsupported architecture by name.
pub fn read_config(path: &Path) -> Result<(ModelConfig, Content), TrainError> {
    let base_err = |detail: String| TrainError::Base {
        path: path.to_path_buf(),
        detail,
    };
    let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    let content = Content::read(&mut BufReader::new(file))
        .map_err(|e| base_err(format!("not a readable GGUF file: {}", candle_message(&e))))?;
    let arch = match content.metadata.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(base_err("general.architecture is missing".into())),
    };
    if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(TrainError::UnsupportedArchitecture {
            arch,
            supported: SUPPORTED_ARCHITECTURES.join(", "),
        });
    }
    let int = |k: &str| {
        meta_int(&content, &format!("{arch}.{k}"))
            .map(|v| v as usize)
            .ok_or_else(|| base_err(format!("{arch}.{k} is missing")))
    };
    let layers = int("block_count")?;
    let embedding = int("embedding_length")?;
    let feed_forward = int("feed_forward_length")?;
    let heads = int("attention.head_count")?;
    let kv_heads = meta_int(&content, &format!("{arch}.attention.head_count_kv"))
        .map_or(heads, |v| v as usize);
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
        return Err(base_err("inconsistent head counts".into()));
    }
    // Gemma 3's heads are wider than embedding / heads.
    let head_dim = match meta_int(&content, &format!("{arch}.attention.key_length")) {
        Some(k) => k as usize,
        None if embedding % heads == 0 => embedding / heads,
        None => return Err(base_err("inconsistent head counts".into())),
    };
    if let Some(v) = meta_int(&content, &format!("{arch}.attention.value_length")) {
        if v as usize != head_dim {
            return Err(base_err(format!(
                "value heads of {v} differ from key heads of {head_dim}: not implemented"
            )));
        }
    }
    let gemma3 = arch == "gemma3";
    let sliding_window = if gemma3 {
        meta_int(&content, &format!("{arch}.attention.sliding_window"))
            .map(|w| (w as usize, GEMMA3_SWA_ROPE_BASE))
    } else {
        None
    };
    if let Some(rot) = meta_int(&content, &format!("{arch}.rope.dimension_count")) {
        if rot as usize != head_dim {
            return Err(base_err(format!(
                "partial rotary embeddings ({rot} of {head_dim}) are not implemented"
            )));
        }
    }
    let vocab = content
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims()[0])
        .ok_or_else(|| base_err("token_embd.weight is missing".into()))?;
    let f32_bytes = content
        .tensor_infos
        .values()
        .map(|t| t.shape.elem_count() as u64 * 4)
        .sum();
    let config = ModelConfig {
        rope_base: meta_f32(&content, &format!("{arch}.rope.freq_base")).unwrap_or(10_000.0),
        rms_eps: f64::from(
            meta_f32(
                &content,
                &format!("{arch}.attention.layer_norm_rms_epsilon"),
            )
            .unwrap_or(1e-5),
        ),
        rope_neox: arch == "qwen2" || gemma3,
        embed_scale: gemma3.then(|| (embedding as f32).sqrt()),
        gelu: gemma3,
        sliding_window,
        context_train: meta_int(&content, &format!("{arch}.context_length"))
            .map_or(usize::MAX, |v| v as usize),
        arch,
        layers,
        embedding,
        feed_forward,
        heads,
        kv_heads,
        head_dim,
        vocab,
        f32_bytes,
    };
    Ok((config, content))
}

struct Layer {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    /// Per-head RMS norms of the query and key (Gemma 3).
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    /// Norms of the attention's and the feed-forward's outputs (Gemma 3).
    post_attn_norm: Option<Tensor>,
    post_ffn_norm: Option<Tensor>,
    /// Sliding-window attention with the windowed rotary tables (Gemma 3).
    sliding: bool,
    /// Indexed by `Target as usize`.
    weights: [Tensor; 7],
    /// q, k, v biases (Qwen2).
    biases: [Option<Tensor>; 3],
}

/// The dequantized, frozen base.
pub struct Model {
    pub config: ModelConfig,
    pub path: PathBuf,
    embed: Tensor,
    layers: Vec<Layer>,
    out_norm: Tensor,
    output: Tensor,
    cos: Tensor,
    sin: Tensor,
    /// Rotary tables of the sliding-window layers, when their base differs.
    swa_rope: Option<(Tensor, Tensor)>,
    device: Device,
    /// On the CPU, run each layer as one fused node (`layer.rs`) rather
    /// than op by op; tests compare the two.
    pub(crate) fused_layers: bool,
    /// The dtype of the big matrices (projections, embeddings, output).
    dtype: DType,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Per-step randomness: LoRA dropout masks.
pub(crate) struct Dropout<'a> {
    pub p: f32,
    pub rng: &'a mut Rng,
}

impl Model {
    /// Loads and dequantizes the base at `path` to f32 for sequences up to
    /// `max_seq_len`.
    pub fn load(path: &Path, max_seq_len: usize, device: &Device) -> Result<Model, TrainError> {
        Model::load_as(path, max_seq_len, device, DType::F32)
    }

    /// [`Model::load`] with the projection, embedding and output matrices
    /// in `dtype` (norms and biases stay f32).
    pub fn load_as(
        path: &Path,
        max_seq_len: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Model, TrainError> {
        let (config, content) = read_config(path)?;
        let base_err = |detail: String| TrainError::Base {
            path: path.to_path_buf(),
            detail,
        };
        let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let mut load = |name: &str| -> Result<Tensor, TrainError> {
            if !content.tensor_infos.contains_key(name) {
                return Err(base_err(format!("tensor {name} is missing")));
            }
            let q = content
                .tensor(&mut reader, name, device)
                .map_err(|e| base_err(format!("{name}: {}", candle_message(&e))))?;
            Ok(q.dequantize(device)?.to_dtype(DType::F32)?)
        };
        let embed = load("token_embd.weight")?.to_dtype(dtype)?;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let mut w = |t: Target| {
                load(&format!("blk.{i}.{}.weight", t.gguf_name()))?
                    .to_dtype(dtype)
                    .map_err(TrainError::from)
            };
            let weights = [
                w(Target::Q)?,
                w(Target::K)?,
                w(Target::V)?,
                w(Target::O)?,
                w(Target::Gate)?,
                w(Target::Up)?,
                w(Target::Down)?,
            ];
            let mut optional = |name: String| -> Result<Option<Tensor>, TrainError> {
                if content.tensor_infos.contains_key(&name) {
                    load(&name).map(Some)
                } else {
                    Ok(None)
                }
            };
            let biases = [
                optional(format!("blk.{i}.attn_q.bias"))?,
                optional(format!("blk.{i}.attn_k.bias"))?,
                optional(format!("blk.{i}.attn_v.bias"))?,
            ];
            let q_norm = optional(format!("blk.{i}.attn_q_norm.weight"))?;
            let k_norm = optional(format!("blk.{i}.attn_k_norm.weight"))?;
            let post_attn_norm = optional(format!("blk.{i}.post_attention_norm.weight"))?;
            let post_ffn_norm = optional(format!("blk.{i}.post_ffw_norm.weight"))?;
            layers.push(Layer {
                attn_norm: load(&format!("blk.{i}.attn_norm.weight"))?,
                ffn_norm: load(&format!("blk.{i}.ffn_norm.weight"))?,
                q_norm,
                k_norm,
                post_attn_norm,
                post_ffn_norm,
                sliding: config.sliding_window.is_some()
                    && i % GEMMA3_SWA_PATTERN < GEMMA3_SWA_PATTERN - 1,
                weights,
                biases,
            });
        }
        let out_norm = load("output_norm.weight")?;
        let output = if content.tensor_infos.contains_key("output.weight") {
            load("output.weight")?.to_dtype(dtype)?
        } else {
            embed.clone()
        };
        // Rotary tables, with llama 3's per-frequency factors when present.
        let half = config.head_dim / 2;
        let factors = if content.tensor_infos.contains_key("rope_freqs.weight") {
            Some(load("rope_freqs.weight")?.to_vec1::<f32>()?)
        } else {
            None
        };
        let n = max_seq_len.max(1);
        let tables = |base: f32| -> candle_core::Result<(Tensor, Tensor)> {
            let inv: Vec<f32> = (0..half)
                .map(|i| {
                    let f = 1.0 / base.powf(2.0 * i as f32 / config.head_dim as f32);
                    f / factors
                        .as_ref()
                        .and_then(|v| v.get(i))
                        .copied()
                        .unwrap_or(1.0)
                })
                .collect();
            let mut angles = Vec::with_capacity(n * half);
            for p in 0..n {
                angles.extend(inv.iter().map(|f| p as f32 * f));
            }
            let angles = Tensor::from_vec(angles, (n, half), device)?;
            Ok((angles.cos()?, angles.sin()?))
        };
        let (cos, sin) = tables(config.rope_base)?;
        let swa_rope = match config.sliding_window {
            Some((_, base)) if base != config.rope_base => Some(tables(base)?),
            _ => None,
        };
        Ok(Model {
            cos,
            sin,
            swa_rope,
            config,
            path: path.to_path_buf(),
            embed,
            layers,
            out_norm,
            output,
            device: device.clone(),
            fused_layers: true,
            dtype,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Longest sequence the rotary tables cover.
    pub fn max_seq_len(&self) -> usize {
        self.cos.dims()[0]
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        fused::rms_norm(x, w, self.config.rms_eps)
    }

    /// A linear layer of the base plus its LoRA delta, if any.
    fn linear(
        &self,
        x: &Tensor,
        layer: usize,
        target: Target,
        lora: Option<&Lora>,
        dropout: &mut Option<Dropout<'_>>,
    ) -> candle_core::Result<Tensor> {
        let w = &self.layers[layer].weights[target as usize];
        let Some(pair) = lora.and_then(|l| l.get(layer, target)) else {
            return frozen_linear(x, w);
        };
        let mask = dropout_mask(dropout, x.elem_count());
        let delta = Delta {
            a: pair.a.as_tensor(),
            b: pair.b.as_tensor(),
            scale: pair.scale,
            mask,
        };
        lora_linear(x, w, delta)
    }

    /// Layer `li` as one fused CPU node (see `layer.rs`).
    fn fused_layer(
        &self,
        x: &Tensor,
        li: usize,
        lora: Option<&Lora>,
        dropout: &mut Option<Dropout<'_>>,
        spec: &Attention<'_>,
    ) -> candle_core::Result<Tensor> {
        let layer = &self.layers[li];
        let n = x.dim(0)?;
        let (packed, slots) = layer::pack(lora, li)?;
        let mut masks: [Option<Vec<f32>>; 7] = Default::default();
        for t in Target::ALL {
            if slots[t as usize].is_some() {
                let inputs = layer.weights[t as usize].dim(1)?;
                masks[t as usize] = dropout_mask(dropout, n * inputs);
            }
        }
        let host = |t: &Option<Tensor>| t.as_ref().map(fused::host_f32).transpose();
        let frozen = LayerWeights {
            weights: layer.weights.clone(),
            biases: [
                host(&layer.biases[0])?,
                host(&layer.biases[1])?,
                host(&layer.biases[2])?,
            ],
            attn_norm: fused::host_f32(&layer.attn_norm)?,
            ffn_norm: fused::host_f32(&layer.ffn_norm)?,
            q_norm: host(&layer.q_norm)?,
            k_norm: host(&layer.k_norm)?,
            post_attn_norm: host(&layer.post_attn_norm)?,
            post_ffn_norm: host(&layer.post_ffn_norm)?,
        };
        let gating = if self.config.gelu {
            Gating::Gelu
        } else {
            Gating::Silu
        };
        let node = LayerNode::new(
            frozen,
            slots,
            masks,
            FusedAttention::new(spec)?,
            gating,
            self.config.rms_eps as f32,
            dropout.is_some(),
        );
        x.contiguous()?.apply_op2(&packed, node)
    }

    /// Final hidden states `[B*T, E]` (before the output norm) of `tokens [B, T]`.
    pub(crate) fn hidden(
        &self,
        tokens: &Tensor,
        lora: Option<&Lora>,
        mut dropout: Option<Dropout<'_>>,
    ) -> candle_core::Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let c = &self.config;
        let (h, kvh, hd) = (c.heads, c.kv_heads, c.head_dim);
        let mut x = self
            .embed
            .index_select(&tokens.flatten_all()?, 0)? // [B*T, E]
            .to_dtype(DType::F32)?;
        if let Some(s) = c.embed_scale {
            x = (x * f64::from(s))?;
        }
        let narrow = |table: &Tensor| table.narrow(0, 0, t);
        let (cos, sin) = (narrow(&self.cos)?, narrow(&self.sin)?);
        let swa_tables = match &self.swa_rope {
            Some((c, s)) => Some((narrow(c)?, narrow(s)?)),
            None => None,
        };
        let spec = |sliding: bool| {
            let (cos, sin) = match (&swa_tables, sliding) {
                (Some((c, s)), true) => (c, s),
                _ => (&cos, &sin),
            };
            Attention {
                batch: b,
                seq: t,
                heads: h,
                kv_heads: kvh,
                head_dim: hd,
                window: c.sliding_window.filter(|_| sliding).map(|(w, _)| w),
                neox: c.rope_neox,
                cos,
                sin,
            }
        };
        let fused_layers = self.fused_layers && self.device.is_cpu() && self.dtype == DType::F32;
        for (li, layer) in self.layers.iter().enumerate() {
            if fused_layers {
                x = self.fused_layer(&x, li, lora, &mut dropout, &spec(layer.sliding))?;
                continue;
            }
            let xn = self.rms_norm(&x, &layer.attn_norm)?;
            let mut q = self.linear(&xn, li, Target::Q, lora, &mut dropout)?;
            let mut k = self.linear(&xn, li, Target::K, lora, &mut dropout)?;
            let mut v = self.linear(&xn, li, Target::V, lora, &mut dropout)?;
            if let Some(bq) = &layer.biases[0] {
                q = q.broadcast_add(bq)?;
            }
            if let Some(bk) = &layer.biases[1] {
                k = k.broadcast_add(bk)?;
            }
            if let Some(bv) = &layer.biases[2] {
                v = v.broadcast_add(bv)?;
            }
            // Gemma 3 normalises each head's query and key.
            if let Some(n) = &layer.q_norm {
                q = self
                    .rms_norm(&q.reshape((b * t, h, hd))?, n)?
                    .reshape((b * t, h * hd))?;
            }
            if let Some(n) = &layer.k_norm {
                k = self
                    .rms_norm(&k.reshape((b * t, kvh, hd))?, n)?
                    .reshape((b * t, kvh * hd))?;
            }
            let att = attention(&q, &k, &v, &spec(layer.sliding))?;
            let mut o = self.linear(&att, li, Target::O, lora, &mut dropout)?;
            if let Some(n) = &layer.post_attn_norm {
                o = self.rms_norm(&o, n)?;
            }
            x = (x + o)?;
            let xn = self.rms_norm(&x, &layer.ffn_norm)?;
            let g = self.linear(&xn, li, Target::Gate, lora, &mut dropout)?;
            let u = self.linear(&xn, li, Target::Up, lora, &mut dropout)?;
            let m = if c.gelu {
                (g.gelu()? * u)?
            } else {
                (g.silu()? * u)?
            };
            let mut d = self.linear(&m, li, Target::Down, lora, &mut dropout)?;
            if let Some(n) = &layer.post_ffn_norm {
                d = self.rms_norm(&d, n)?;
            }
            x = (x + d)?;
        }
        Ok(x)
    }

    /// Log-probabilities `[M, V]` of the rows `rows` of `hidden [N, E]`.
    pub(crate) fn log_probs(&self, hidden: &Tensor, rows: &Tensor) -> candle_core::Result<Tensor> {
        let hs = hidden.index_select(rows, 0)?;
        let hs = self.rms_norm(&hs, &self.out_norm)?;
        fused::log_softmax(&frozen_linear(&hs, &self.output)?)
    }

    /// Logits `[T, V]` of one sequence, with an optional LoRA (no dropout).
    pub fn logits(&self, tokens: &[u32], lora: Option<&Lora>) -> Result<Vec<Vec<f32>>, TrainError> {
        let t = tokens.len();
        let ids = Tensor::from_vec(tokens.to_vec(), (1, t), &self.device)?;
        let hidden = self.hidden(&ids, lora, None)?;
        let hs = self.rms_norm(&hidden, &self.out_norm)?;
        let logits = frozen_linear(&hs, &self.output)?;
        Ok(logits.to_vec2::<f32>()?)
    }

    /// Input and output sizes of `target`'s weight.
    pub fn shape_of(&self, target: Target) -> (usize, usize) {
        let d = self.layers[0].weights[target as usize].dims();
        (d[1], d[0])
    }

    /// Weights of every layer's `target`, for tests.
    pub fn weight(&self, layer: usize, target: Target) -> &Tensor {
        &self.layers[layer].weights[target as usize]
    }
}

/// A dropout mask of `len` values (`1/keep` or 0) from the step's
/// generator, or `None` without dropout.
fn dropout_mask(dropout: &mut Option<Dropout<'_>>, len: usize) -> Option<Vec<f32>> {
    let d = dropout.as_mut().filter(|d| d.p > 0.0)?;
    let keep = 1.0 - d.p;
    Some(
        (0..len)
            .map(|_| {
                if d.rng.next_f32() < keep {
                    1.0 / keep
                } else {
                    0.0
                }
            })
            .collect(),
    )
}

/// Rough bytes of one micro-batch's activations and gradients.
pub fn activation_bytes(c: &ModelConfig, batch: usize, seq: usize, targets: usize) -> u64 {
    let tokens = (batch * seq) as u64;
    let per_layer = tokens * (24 * c.embedding as u64 + 8 * c.feed_forward as u64)
        + 6 * (batch * c.heads * seq * seq) as u64;
    let head = 6 * (batch * targets) as u64 * c.vocab as u64;
    4 * (c.layers as u64 * per_layer + head)
}
