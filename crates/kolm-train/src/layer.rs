//! One transformer layer as one node of candle's graph, on the CPU.
//!
//! Op by op a layer is a dozen nodes, and for every node input candle's
//! backward allocates a zero tensor and adds the gradient into it: single-
//! threaded passes over activation-sized tensors that cost about a fifth
//! of a step on two cores. [`LayerNode`] runs the layer's forward pass on
//! host values with the kernels of `linear`, `attention` and `fused`, keeps
//! the activations its backward pass needs, and computes that backward
//! pass itself: the gradient of the layer's input and of its LoRA
//! parameters, which enter the node packed in one tensor ([`pack`]) so
//! that the node has two inputs however many modules are adapted.
//!
//! The layer is the one of `model.rs`'s op-by-op path (which other devices
//! run): pre-norm attention with optional q/k/v biases, per-head q/k norms
//! and post-norms, and a gated feed-forward.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use crate::attention::FusedAttention;
use crate::fused::{
    add_host, gate_grad_host, gate_host, rms_norm_grad_host, rms_norm_host, Gating,
};
use crate::linear::{backward_host, cpu_slice, cpu_tensor, cpu_values, forward_host, HostLora};
use crate::lora::{Lora, Target};

/// Where one module's `A` and `B` sit in the packed parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    a_at: usize,
    b_at: usize,
    rank: usize,
    scale: f32,
}

/// Layer `layer`'s LoRA parameters flattened into one tensor (`A` then `B`
/// of each adapted module, in [`Target::ALL`] order), and their slots.
/// Without LoRA the tensor is empty.
pub(crate) fn pack(
    lora: Option<&Lora>,
    layer: usize,
) -> candle_core::Result<(Tensor, [Option<Slot>; 7])> {
    let mut slots = [None; 7];
    let mut parts = Vec::new();
    let mut at = 0;
    for t in Target::ALL {
        let Some(pair) = lora.and_then(|l| l.get(layer, t)) else {
            continue;
        };
        let (a, b) = (pair.a.as_tensor(), pair.b.as_tensor());
        slots[t as usize] = Some(Slot {
            a_at: at,
            b_at: at + a.elem_count(),
            rank: a.dim(0)?,
            scale: pair.scale as f32,
        });
        at += a.elem_count() + b.elem_count();
        parts.push(a.flatten_all()?);
        parts.push(b.flatten_all()?);
    }
    let packed = if parts.is_empty() {
        Tensor::zeros(0, candle_core::DType::F32, &candle_core::Device::Cpu)?
    } else {
        Tensor::cat(&parts, 0)?
    };
    Ok((packed, slots))
}

/// The frozen parts of one layer, as the node needs them.
pub(crate) struct LayerWeights {
    /// Indexed by `Target as usize`, each `[out, in]`.
    pub weights: [Tensor; 7],
    /// q, k, v biases.
    pub biases: [Option<Vec<f32>>; 3],
    pub attn_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub post_attn_norm: Option<Vec<f32>>,
    pub post_ffn_norm: Option<Vec<f32>>,
}

/// The activations the backward pass reads. `*_raw` are the inputs of the
/// optional norms (absent when the layer has none).
struct Saved {
    xn: Vec<f32>,
    q_raw: Option<Vec<f32>>,
    k_raw: Option<Vec<f32>>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o_raw: Option<Vec<f32>>,
    x1: Vec<f32>,
    xn2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    m: Vec<f32>,
    d_raw: Option<Vec<f32>>,
}

/// See the module docs: the op over `(x [N, E], packed LoRA)`.
pub(crate) struct LayerNode {
    pub frozen: LayerWeights,
    pub slots: [Option<Slot>; 7],
    /// Dropout masks over each adapted module's input, when training
    /// with dropout.
    pub masks: [Option<Vec<f32>>; 7],
    pub attention: FusedAttention,
    pub gating: Gating,
    pub eps: f32,
    /// Keep the activations for a backward pass (training).
    pub keep: bool,
    saved: Mutex<Option<Saved>>,
}

/// `norm(x)` when the layer has that norm, keeping its input.
fn optional_norm(x: Vec<f32>, w: Option<&Vec<f32>>, eps: f32) -> (Vec<f32>, Option<Vec<f32>>) {
    match w {
        Some(w) => (rms_norm_host(&x, w, eps), Some(x)),
        None => (x, None),
    }
}

/// The gradient through an optional norm: unchanged without one.
fn optional_norm_grad(
    g: Vec<f32>,
    raw: Option<&Vec<f32>>,
    w: Option<&Vec<f32>>,
    eps: f32,
) -> candle_core::Result<Vec<f32>> {
    match (raw, w) {
        (Some(raw), Some(w)) => rms_norm_grad_host(raw, &g, w, eps),
        _ => Ok(g),
    }
}

/// Adds `bias` to every row of `x`.
fn add_bias(x: &mut [f32], bias: Option<&Vec<f32>>) {
    if let Some(b) = bias {
        for row in x.chunks_mut(b.len()) {
            for (x, b) in row.iter_mut().zip(b) {
                *x += b;
            }
        }
    }
}

impl LayerNode {
    pub fn new(
        frozen: LayerWeights,
        slots: [Option<Slot>; 7],
        masks: [Option<Vec<f32>>; 7],
        attention: FusedAttention,
        gating: Gating,
        eps: f32,
        keep: bool,
    ) -> LayerNode {
        LayerNode {
            frozen,
            slots,
            masks,
            attention,
            gating,
            eps,
            keep,
            saved: Mutex::new(None),
        }
    }

    fn lora<'a>(&'a self, t: Target, packed: &'a [f32]) -> Option<HostLora<'a>> {
        let s = self.slots[t as usize]?;
        let (out, inp) = self.frozen.weights[t as usize].dims2().ok()?;
        Some(HostLora {
            a: packed.get(s.a_at..s.a_at + s.rank * inp)?,
            b: packed.get(s.b_at..s.b_at + out * s.rank)?,
            rank: s.rank,
            scale: s.scale,
            mask: self.masks[t as usize].as_deref(),
        })
    }

    fn check(&self, x: &Shape, packed: &Shape) -> candle_core::Result<usize> {
        let (n, e) = x.dims2()?;
        let (_, w_in) = self.frozen.weights[Target::Q as usize].dims2()?;
        let need = self
            .slots
            .iter()
            .zip(&self.frozen.weights)
            .filter_map(|(s, w)| s.map(|s| s.rank * (w.dims()[0] + w.dims()[1])))
            .sum::<usize>();
        if e != w_in || packed.elem_count() != need {
            candle_core::bail!(
                "fused-layer: input {x:?} or packed LoRA {packed:?} does not fit the layer"
            )
        }
        Ok(n)
    }

    /// The layer's output for `x [n, E]`, and the activations it saw.
    fn forward(
        &self,
        x: &[f32],
        n: usize,
        packed: &[f32],
        w: &[&[f32]; 7],
    ) -> candle_core::Result<(Vec<f32>, Saved)> {
        let f = &self.frozen;
        let out = |t: Target| f.weights[t as usize].dims()[0];
        let lin = |input: &[f32], t: Target| {
            forward_host(
                input,
                n,
                w[t as usize],
                out(t),
                self.lora(t, packed).as_ref(),
            )
        };
        let xn = rms_norm_host(x, &f.attn_norm, self.eps);
        let mut q = lin(&xn, Target::Q)?;
        let mut k = lin(&xn, Target::K)?;
        let mut v = lin(&xn, Target::V)?;
        add_bias(&mut q, f.biases[0].as_ref());
        add_bias(&mut k, f.biases[1].as_ref());
        add_bias(&mut v, f.biases[2].as_ref());
        let (q, q_raw) = optional_norm(q, f.q_norm.as_ref(), self.eps);
        let (k, k_raw) = optional_norm(k, f.k_norm.as_ref(), self.eps);
        let att = self.attention.forward_host(&q, &k, &v)?;
        let (o, o_raw) = optional_norm(lin(&att, Target::O)?, f.post_attn_norm.as_ref(), self.eps);
        let x1 = add_host(x, &o)?;
        let xn2 = rms_norm_host(&x1, &f.ffn_norm, self.eps);
        let gate = lin(&xn2, Target::Gate)?;
        let up = lin(&xn2, Target::Up)?;
        let m = gate_host(self.gating, &gate, &up)?;
        let (d, d_raw) = optional_norm(lin(&m, Target::Down)?, f.post_ffn_norm.as_ref(), self.eps);
        let y = add_host(&x1, &d)?;
        let saved = Saved {
            xn,
            q_raw,
            k_raw,
            q,
            k,
            v,
            att,
            o_raw,
            x1,
            xn2,
            gate,
            up,
            m,
            d_raw,
        };
        Ok((y, saved))
    }

    /// The gradients of `x` and of the packed LoRA given `gy = ∂L/∂y`.
    fn backward(
        &self,
        x: &[f32],
        n: usize,
        packed: &[f32],
        w: &[&[f32]; 7],
        s: &Saved,
        gy: &[f32],
    ) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let f = &self.frozen;
        let mut d_packed = vec![0f32; packed.len()];
        // Adds the gradient of `input` into `dx` (fills it when empty) and
        // stores the module's LoRA gradients in `d_packed`.
        let mut lin = |input: &[f32], g: &[f32], t: Target, dx: &mut Vec<f32>| {
            let lora = self.lora(t, packed);
            if let (Some((da, db)), Some(slot)) = (
                backward_host(input, g, n, w[t as usize], lora.as_ref(), dx)?,
                self.slots[t as usize],
            ) {
                d_packed[slot.a_at..slot.a_at + da.len()].copy_from_slice(&da);
                d_packed[slot.b_at..slot.b_at + db.len()].copy_from_slice(&db);
            }
            candle_core::Result::Ok(())
        };
        // Feed-forward block: y = x1 + norm(down(act(gate) ⊙ up)).
        let gd = optional_norm_grad(
            gy.to_vec(),
            s.d_raw.as_ref(),
            f.post_ffn_norm.as_ref(),
            self.eps,
        )?;
        let mut gm = Vec::new();
        lin(&s.m, &gd, Target::Down, &mut gm)?;
        let (g_gate, g_up) = gate_grad_host(self.gating, &s.gate, &s.up, &gm)?;
        let mut gxn2 = Vec::new();
        lin(&s.xn2, &g_gate, Target::Gate, &mut gxn2)?;
        lin(&s.xn2, &g_up, Target::Up, &mut gxn2)?;
        let gx1 = add_host(
            gy,
            &rms_norm_grad_host(&s.x1, &gxn2, &f.ffn_norm, self.eps)?,
        )?;
        // Attention block: x1 = x + norm(o(attention(q, k, v))).
        let go = optional_norm_grad(
            gx1.clone(),
            s.o_raw.as_ref(),
            f.post_attn_norm.as_ref(),
            self.eps,
        )?;
        let mut gatt = Vec::new();
        lin(&s.att, &go, Target::O, &mut gatt)?;
        let (gq, gk, gv) = self.attention.backward_host(&s.q, &s.k, &s.v, &gatt)?;
        let gq = optional_norm_grad(gq, s.q_raw.as_ref(), f.q_norm.as_ref(), self.eps)?;
        let gk = optional_norm_grad(gk, s.k_raw.as_ref(), f.k_norm.as_ref(), self.eps)?;
        let mut gxn = Vec::new();
        lin(&s.xn, &gq, Target::Q, &mut gxn)?;
        lin(&s.xn, &gk, Target::K, &mut gxn)?;
        lin(&s.xn, &gv, Target::V, &mut gxn)?;
        let gx = add_host(&gx1, &rms_norm_grad_host(x, &gxn, &f.attn_norm, self.eps)?)?;
        Ok((gx, d_packed))
    }
}

/// Runs `f` with the host values of the layer's seven weights.
fn with_weights<R>(
    weights: &[Tensor; 7],
    f: impl FnOnce(&[&[f32]; 7]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let guards: Vec<_> = weights.iter().map(|w| w.storage_and_layout()).collect();
    let mut values: [&[f32]; 7] = [&[]; 7];
    for (v, (s, l)) in values.iter_mut().zip(&guards) {
        *v = cpu_values(s, l)?;
    }
    f(&values)
}

impl CustomOp2 for LayerNode {
    fn name(&self) -> &'static str {
        "fused-layer"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = self.check(xl.shape(), pl.shape())?;
        let (x, packed) = (cpu_slice(xs, xl)?, cpu_slice(ps, pl)?);
        let (y, saved) = with_weights(&self.frozen.weights, |w| self.forward(x, n, packed, w))?;
        if self.keep {
            *self
                .saved
                .lock()
                .map_err(|_| candle_core::Error::Msg("fused-layer: poisoned".into()))? =
                Some(saved);
        }
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let n = self.check(x.shape(), packed.shape())?;
        let saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused-layer: poisoned".into()))?
            .take();
        let Some(saved) = saved else {
            candle_core::bail!("fused-layer: backward without saved activations (built with keep = false, or run twice)")
        };
        let gy = gy.contiguous()?;
        let (gs, gl) = gy.storage_and_layout();
        let (xs, xl) = x.storage_and_layout();
        let (ps, pl) = packed.storage_and_layout();
        let (xv, pv) = (cpu_values(&xs, xl)?, cpu_values(&ps, pl)?);
        let (gx, gp) = with_weights(&self.frozen.weights, |w| {
            self.backward(xv, n, pv, w, &saved, cpu_values(&gs, gl)?)
        })?;
        let d_packed = (!gp.is_empty())
            .then(|| cpu_tensor(gp, packed.shape().clone()))
            .transpose()?;
        Ok((Some(cpu_tensor(gx, x.shape().clone())?), d_packed))
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use candle_core::{DType, Device, Tensor};

    use crate::lora::{Lora, Target};
    use crate::model::{Dropout, Model};
    use crate::rng::Rng;

    fn fixture(name: &str) -> PathBuf {
        kolm_fixtures::path(name)
    }

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let scale = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1e-6);
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap() / scale
    }

    /// Hidden states and every LoRA gradient, with the layers fused or op
    /// by op, under dropout and with every module adapted (B non-zero so
    /// that each gradient path carries signal).
    fn run(model: &mut Model, fused: bool, tokens: &Tensor, lora: &Lora) -> Vec<Tensor> {
        model.fused_layers = fused;
        let mut rng = Rng::derive(5, 3, 0);
        let dropout = Dropout {
            p: 0.1,
            rng: &mut rng,
        };
        let hidden = model.hidden(tokens, Some(lora), Some(dropout)).unwrap();
        // A fixed, uneven weighting of the outputs.
        let probe = (Tensor::arange(0u32, hidden.elem_count() as u32, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            * 0.37)
            .unwrap()
            .sin()
            .unwrap()
            .reshape(hidden.shape())
            .unwrap();
        let grads = (&hidden * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut out = vec![hidden];
        out.extend(
            lora.vars()
                .iter()
                .map(|v| grads.get(v.as_tensor()).unwrap().clone()),
        );
        out
    }

    fn fused_layers_match_the_op_by_op_path(path: &Path) {
        let dev = Device::Cpu;
        let (b, t) = (2, 9);
        let mut model = Model::load(path, t, &dev).unwrap();
        let shape = |target| model.shape_of(target);
        let lora = Lora::init(model.config.layers, &Target::ALL, 4, 8.0, shape, 3, &dev).unwrap();
        // B from a seeded generator, so every run checks the same numbers.
        let mut rng = crate::rng::Rng::new(7);
        for pair in lora.pairs.values() {
            pair.b.set(&rng.normal(0.0, 0.05, pair.b.shape())).unwrap();
        }
        let ids: Vec<u32> = (0..(b * t) as u32).map(|i| 3 + (i * 37) % 200).collect();
        let tokens = Tensor::from_vec(ids, (b, t), &dev).unwrap();
        let fused = run(&mut model, true, &tokens, &lora);
        let op_by_op = run(&mut model, false, &tokens, &lora);
        assert_eq!(fused.len(), op_by_op.len());
        for (i, (f, o)) in fused.iter().zip(&op_by_op).enumerate() {
            assert_eq!(f.dtype(), DType::F32);
            let d = max_rel_diff(f, o);
            eprintln!("{}: output {i}: {d:e}", path.display());
            // f32 rounding, summed in a different order: with this B at most
            // 1.4e-6 (qwen2), 1.3e-5 (SmolLM2), 6.0e-5 (gemma3).
            assert!(
                d < 1e-4,
                "{}: output {i} differs by {d} of its scale",
                path.display()
            );
        }
    }

    #[test]
    fn qwen2_layers_fused_match_op_by_op() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-qwen2.gguf");
        fused_layers_match_the_op_by_op_path(&p);
    }

    #[test]
    fn llama_layers_fused_match_op_by_op() {
        fused_layers_match_the_op_by_op_path(&fixture("SmolLM2-135M-Instruct.Q4_1.gguf"));
    }

    #[test]
    fn gemma3_layers_fused_match_op_by_op() {
        fused_layers_match_the_op_by_op_path(&fixture("gemma-3-270m-q4_k_m.gguf"));
    }
}
