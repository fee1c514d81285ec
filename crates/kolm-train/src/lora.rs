//! LoRA parameters: per chosen module of every layer, `A [rank, in]`
//! (uniform in ±1/√in, as PEFT's Kaiming init) and `B [out, rank]` (zero),
//! scaled by `alpha / rank`. The delta is `scale · B·A`, as llama.cpp
//! applies it.

use std::collections::BTreeMap;
use std::str::FromStr;

use candle_core::{Device, Tensor, Var};

use crate::error::TrainError;
use crate::rng::Rng;

/// A linear module LoRA can adapt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Q = 0,
    K = 1,
    V = 2,
    O = 3,
    Gate = 4,
    Up = 5,
    Down = 6,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The default: attention projections.
    pub const DEFAULT: [Target; 4] = [Target::Q, Target::K, Target::V, Target::O];

    /// The tensor name in GGUF (`blk.N.<name>.weight`).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        }
    }

    /// The short name used on the command line.
    pub fn short_name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    fn from_gguf(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.gguf_name() == name)
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Target::ALL
            .into_iter()
            .find(|t| {
                t.short_name() == s || t.gguf_name() == s || format!("{}_proj", t.short_name()) == s
            })
            .ok_or_else(|| {
                format!("unknown LoRA target '{s}' (expected q, k, v, o, gate, up or down)")
            })
    }
}

/// Parses `q,k,v,o`.
pub fn parse_targets(list: &str) -> Result<Vec<Target>, String> {
    let mut out: Vec<Target> = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Target::from_str)
        .collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// One adapted module.
#[derive(Debug)]
pub struct LoraPair {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
}

/// All LoRA parameters of a run, in a fixed order.
#[derive(Debug)]
pub struct Lora {
    pub rank: usize,
    pub alpha: f32,
    pub pairs: BTreeMap<(usize, Target), LoraPair>,
}

impl Lora {
    /// Fresh parameters: `A` random, `B` zero. `shape(t)` gives `(in, out)`.
    pub fn init(
        layers: usize,
        targets: &[Target],
        rank: usize,
        alpha: f32,
        shape: impl Fn(Target) -> (usize, usize),
        seed: u64,
        device: &Device,
    ) -> Result<Lora, TrainError> {
        let mut rng = Rng::derive(seed, 1, 0);
        let scale = f64::from(alpha) / rank as f64;
        let mut pairs = BTreeMap::new();
        for layer in 0..layers {
            for &t in targets {
                let (i, o) = shape(t);
                let bound = 1.0 / (i as f32).sqrt();
                let a: Vec<f32> = (0..rank * i)
                    .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (rank, i), device)?)?;
                let b =
                    Var::from_tensor(&Tensor::zeros((o, rank), candle_core::DType::F32, device)?)?;
                pairs.insert((layer, t), LoraPair { a, b, scale });
            }
        }
        Ok(Lora { rank, alpha, pairs })
    }

    pub fn get(&self, layer: usize, target: Target) -> Option<&LoraPair> {
        self.pairs.get(&(layer, target))
    }

    /// Every trainable variable, in a fixed order (A then B per module).
    pub fn vars(&self) -> Vec<&Var> {
        self.pairs.values().flat_map(|p| [&p.a, &p.b]).collect()
    }

    /// Names in the adapter's GGUF, in the order of [`Lora::vars`].
    pub fn names(&self) -> Vec<String> {
        self.pairs
            .keys()
            .flat_map(|(l, t)| {
                let base = format!("blk.{l}.{}.weight", t.gguf_name());
                [format!("{base}.lora_a"), format!("{base}.lora_b")]
            })
            .collect()
    }

    /// Rebuilds a LoRA from named tensors (an adapter or a checkpoint).
    pub fn from_named(
        tensors: &std::collections::HashMap<String, Tensor>,
        alpha: f32,
    ) -> Result<Lora, String> {
        let mut pairs = BTreeMap::new();
        let mut rank = 0;
        for (name, a) in tensors {
            let Some(stem) = name.strip_suffix(".weight.lora_a") else {
                continue;
            };
            let mut parts = stem.splitn(3, '.');
            let (Some("blk"), Some(l), Some(m)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("unexpected tensor {name}"));
            };
            let layer: usize = l.parse().map_err(|_| format!("bad layer in {name}"))?;
            let t = Target::from_gguf(m).ok_or_else(|| format!("unknown module in {name}"))?;
            let b = tensors
                .get(&format!("{stem}.weight.lora_b"))
                .ok_or_else(|| format!("{name} has no lora_b"))?;
            rank = a.dims()[0];
            let scale = f64::from(alpha) / rank as f64;
            pairs.insert(
                (layer, t),
                LoraPair {
                    a: Var::from_tensor(a).map_err(|e| e.to_string())?,
                    b: Var::from_tensor(b).map_err(|e| e.to_string())?,
                    scale,
                },
            );
        }
        if pairs.is_empty() {
            return Err("no LoRA tensors".into());
        }
        Ok(Lora { rank, alpha, pairs })
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }
}
