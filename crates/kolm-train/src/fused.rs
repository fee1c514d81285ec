//! Fused, multi-threaded CPU kernels for the row-wise parts of the forward
//! and backward pass: RMS norm, the rotary embedding, the attention's
//! scaled and masked softmax, the log-softmax over the vocabulary and the
//! SwiGLU gate. Composed from
//! candle's primitives they cost a dozen single-threaded passes each (on a
//! 16-core machine those passes were most of a step); here each is one
//! parallel pass forward and one backward. Each function falls back to the
//! composed primitives off the CPU, so GPU runs keep candle's own kernels.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

/// Rows of at least this many elements go one to a task; shorter rows are
/// grouped so that a task has about this much work.
const TASK: usize = 16 * 1024;

fn rows_per_task(width: usize) -> usize {
    (TASK / width.max(1)).max(1)
}

/// `f(out_row, row)` for each row of `width` elements of `a`, the rows
/// spread over rayon's threads; returns the output rows.
fn map_rows(a: &[f32], width: usize, f: impl Fn(&mut [f32], &[f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    let k = rows_per_task(width) * width;
    out.par_chunks_mut(k)
        .zip(a.par_chunks(k))
        .for_each(|(o, a)| {
            for (o, a) in o.chunks_mut(width).zip(a.chunks(width)) {
                f(o, a);
            }
        });
    out
}

/// [`map_rows`] over the rows of two inputs of the same shape.
fn map_rows2(
    a: &[f32],
    b: &[f32],
    width: usize,
    f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync,
) -> candle_core::Result<Vec<f32>> {
    if a.len() != b.len() {
        candle_core::bail!(
            "fused op: inputs of different sizes ({} and {})",
            a.len(),
            b.len()
        )
    }
    let mut out = vec![0f32; a.len()];
    let k = rows_per_task(width) * width;
    out.par_chunks_mut(k)
        .zip(a.par_chunks(k).zip(b.par_chunks(k)))
        .for_each(|(o, (a, b))| {
            for ((o, a), b) in o
                .chunks_mut(width)
                .zip(a.chunks(width))
                .zip(b.chunks(width))
            {
                f(o, a, b);
            }
        });
    Ok(out)
}

/// The f32 data of a contiguous tensor's storage.
fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op} needs a contiguous f32 input"),
    }
}

/// A small tensor (weights, mask, rotary tables) as a host vector.
pub(crate) fn host_f32(w: &Tensor) -> candle_core::Result<Vec<f32>> {
    w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

fn use_fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

// ---------------------------------------------------------------- RMS norm

/// `x / sqrt(mean(x²) + eps) * w` over the last dimension; `w` is frozen.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if !use_fused(x) {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let r = (ms + eps)?.sqrt()?.recip()?;
        return x.broadcast_mul(&r)?.broadcast_mul(w);
    }
    let op = RmsNorm {
        w: host_f32(w)?,
        eps: eps as f32,
    };
    x.contiguous()?.apply_op1(op)
}

struct RmsNorm {
    w: Vec<f32>,
    eps: f32,
}

/// `1 / sqrt(mean(row²) + eps)`.
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (ms + eps).sqrt()
}

/// RMS norm of each row of `x` (rows as long as `w`), on host values.
pub(crate) fn rms_norm_host(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    map_rows(x, w.len(), |y, x| {
        let r = inv_rms(x, eps);
        for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
            *y = x * r * w;
        }
    })
}

/// The gradient of [`rms_norm_host`]'s input given the output's, `g`:
/// `dx = r·(g⊙w) − x·r³·mean((g⊙w)⊙x)` with `r = 1/rms(x)`.
pub(crate) fn rms_norm_grad_host(
    x: &[f32],
    g: &[f32],
    w: &[f32],
    eps: f32,
) -> candle_core::Result<Vec<f32>> {
    let d = w.len();
    map_rows2(x, g, d, |dx, x, g| {
        let r = inv_rms(x, eps);
        let dot: f32 = g.iter().zip(w).zip(x).map(|((g, w), x)| g * w * x).sum();
        let c = r * r * r * dot / d as f32;
        for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(w) {
            *dx = r * g * w - x * c;
        }
    })
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let d = self.w.len();
        if l.dims().last() != Some(&d) {
            candle_core::bail!("fused-rms-norm: last dimension is not {d}")
        }
        let y = rms_norm_host(x, &self.w, self.eps);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = RmsNormGrad {
            w: self.w.clone(),
            eps: self.eps,
        };
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &op)?))
    }
}

/// See [`rms_norm_grad_host`].
struct RmsNormGrad {
    w: Vec<f32>,
    eps: f32,
}

impl CustomOp2 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "fused-rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(xs, xl, self.name())?;
        let g = contiguous(gs, gl, self.name())?;
        let dx = rms_norm_grad_host(x, g, &self.w, self.eps)?;
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

// --------------------------------------------------- attention's softmax

/// `softmax(s · scale + mask)` over the last dimension of scores
/// `[.., T, T]`; `mask [T, T]` is added to each `T × T` block (0 or a large
/// negative number).
pub fn masked_softmax(s: &Tensor, mask: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    if !use_fused(s) {
        let scores = (s * scale)?.broadcast_add(mask)?;
        let max = scores.max_keepdim(D::Minus1)?.detach();
        let e = scores.broadcast_sub(&max)?.exp()?;
        return e.broadcast_div(&e.sum_keepdim(D::Minus1)?);
    }
    let op = MaskedSoftmax {
        mask: host_f32(mask)?,
        t: mask.dim(D::Minus1)?,
        scale: scale as f32,
    };
    s.contiguous()?.apply_op1(op)
}

struct MaskedSoftmax {
    mask: Vec<f32>,
    t: usize,
    scale: f32,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let t = self.t;
        if l.dims().last() != Some(&t) || x.len() % (t * t) != 0 {
            candle_core::bail!("fused-masked-softmax: scores are not [.., {t}, {t}]")
        }
        // Whole T × T blocks, so that rows line up with the mask's.
        let p = map_rows(x, t * t, |p, x| {
            for ((p, x), m) in p.chunks_mut(t).zip(x.chunks(t)).zip(self.mask.chunks(t)) {
                softmax_row(p, x.iter().zip(m).map(|(x, m)| x * self.scale + m));
            }
        });
        Ok((CpuStorage::F32(p), l.shape().clone()))
    }

    fn bwd(&self, _s: &Tensor, p: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = SoftmaxGrad { scale: self.scale };
        Ok(Some(p.apply_op2_no_bwd(&g.contiguous()?, &op)?))
    }
}

/// Writes `softmax(values)` into `out`.
fn softmax_row(out: &mut [f32], values: impl Iterator<Item = f32>) {
    for (o, v) in out.iter_mut().zip(values) {
        *o = v;
    }
    let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for o in out.iter_mut() {
        *o = (*o - max).exp();
        sum += *o;
    }
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// `ds = scale · p ⊙ (g − Σ g⊙p)` per row.
struct SoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        ps: &CpuStorage,
        pl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = contiguous(ps, pl, self.name())?;
        let g = contiguous(gs, gl, self.name())?;
        let t = pl.dims().last().copied().unwrap_or(1);
        let ds = map_rows2(p, g, t, |ds, p, g| {
            let dot: f32 = p.iter().zip(g).map(|(p, g)| p * g).sum();
            for ((ds, p), g) in ds.iter_mut().zip(p).zip(g) {
                *ds = self.scale * p * (g - dot);
            }
        })?;
        Ok((CpuStorage::F32(ds), pl.shape().clone()))
    }
}

// ------------------------------------------------------------ log-softmax

/// `log_softmax` over the last dimension.
pub fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    if !use_fused(x) {
        let max = x.max_keepdim(D::Minus1)?.detach();
        let shifted = x.broadcast_sub(&max)?;
        let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        return shifted.broadcast_sub(&lse);
    }
    x.contiguous()?.apply_op1(LogSoftmax)
}

struct LogSoftmax;

impl CustomOp1 for LogSoftmax {
    fn name(&self) -> &'static str {
        "fused-log-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let v = l.dims().last().copied().unwrap_or(1);
        let y = map_rows(x, v, |y, x| {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = x.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
            for (y, x) in y.iter_mut().zip(x) {
                *y = x - lse;
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &LogSoftmaxGrad)?))
    }
}

/// `dx = g − exp(y) · Σ g` per row.
struct LogSoftmaxGrad;

impl CustomOp2 for LogSoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-log-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = contiguous(ys, yl, self.name())?;
        let g = contiguous(gs, gl, self.name())?;
        let v = yl.dims().last().copied().unwrap_or(1);
        let dx = map_rows2(y, g, v, |dx, y, g| {
            let sum: f32 = g.iter().sum();
            for ((dx, y), g) in dx.iter_mut().zip(y).zip(g) {
                *dx = g - y.exp() * sum;
            }
        })?;
        Ok((CpuStorage::F32(dx), yl.shape().clone()))
    }
}

// ------------------------------------------------------------ rotary

/// Rotates `x [B, H, T, D]` by the angles whose cosines and sines are
/// `cos`, `sin [T, D/2]`: pairs `(i, i + D/2)` when `neox`, else adjacent
/// pairs `(2i, 2i + 1)` (llama.cpp's two layouts).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, neox: bool) -> candle_core::Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    let half = d / 2;
    if !use_fused(x) {
        return if neox {
            let x1 = x.narrow(3, 0, half)?;
            let x2 = x.narrow(3, half, half)?;
            let a = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
            let c = (x1.broadcast_mul(sin)? + x2.broadcast_mul(cos)?)?;
            Tensor::cat(&[a, c], 3)
        } else {
            let xr = x.reshape((b, h, t, half, 2))?;
            let x0 = xr.narrow(4, 0, 1)?;
            let x1 = xr.narrow(4, 1, 1)?;
            let cos = cos.reshape((t, half, 1))?;
            let sin = sin.reshape((t, half, 1))?;
            let a = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
            let c = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
            Tensor::cat(&[a, c], 4)?.reshape((b, h, t, d))
        };
    }
    let op = Rope {
        cos: host_f32(cos)?.into(),
        sin: host_f32(sin)?.into(),
        neox,
        inverse: false,
    };
    x.contiguous()?.apply_op1(op)
}

struct Rope {
    cos: std::sync::Arc<[f32]>,
    sin: std::sync::Arc<[f32]>,
    neox: bool,
    /// Rotates by the opposite angles: the backward pass.
    inverse: bool,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let (_, _, t, d) = l.shape().dims4()?;
        let half = d / 2;
        if self.cos.len() != t * half {
            candle_core::bail!("fused-rope: tables are not [{t}, {half}]")
        }
        let sign = if self.inverse { -1.0 } else { 1.0 };
        // Whole [T, D] blocks, so that a row's position is its index.
        let y = map_rows(x, t * d, |y, x| {
            for (p, (y, x)) in y.chunks_mut(d).zip(x.chunks(d)).enumerate() {
                let cos = &self.cos[p * half..(p + 1) * half];
                let sin = &self.sin[p * half..(p + 1) * half];
                for i in 0..half {
                    let (ia, ic) = if self.neox {
                        (i, i + half)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (a, c, sn) = (x[ia], x[ic], sign * sin[i]);
                    y[ia] = a * cos[i] - c * sn;
                    y[ic] = a * sn + c * cos[i];
                }
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            neox: self.neox,
            inverse: !self.inverse,
        };
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

// ------------------------------------------------------------------ SwiGLU

/// `silu(gate) ⊙ up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    if !use_fused(gate) {
        return gate.silu()? * up;
    }
    gate.contiguous()?
        .apply_op2(&up.contiguous()?, Swiglu::Forward)
}

#[derive(Clone, Copy)]
enum Swiglu {
    Forward,
    /// `d gate = (g ⊙ up) ⊙ silu'(gate)`; its inputs are `gate` and `g ⊙ up`.
    GradGate,
    /// `d up = g ⊙ silu(gate)`.
    GradUp,
}

/// `f(a, b)` element by element, over rayon's threads.
fn elementwise(
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> candle_core::Result<Vec<f32>> {
    map_rows2(a, b, TASK, |o, a, b| {
        for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
            *o = f(*a, *b);
        }
    })
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl CustomOp2 for Swiglu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = contiguous(s1, l1, self.name())?;
        let b = contiguous(s2, l2, self.name())?;
        let out = match self {
            Swiglu::Forward => elementwise(a, b, |x, u| x * sigmoid(x) * u)?,
            // a = gate, b = g ⊙ up.
            Swiglu::GradGate => elementwise(a, b, |x, gu| {
                let s = sigmoid(x);
                gu * s * (1.0 + x * (1.0 - s))
            })?,
            // a = gate, b = g.
            Swiglu::GradUp => elementwise(a, b, |x, g| g * x * sigmoid(x))?,
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let d_gate = gate.apply_op2_no_bwd(&(&g * up)?, &Swiglu::GradGate)?;
        let d_up = gate.apply_op2_no_bwd(&g, &Swiglu::GradUp)?;
        Ok((Some(d_gate), Some(d_up)))
    }
}

// ------------------------------------------------ gating, on host values

/// The feed-forward's gate activation: `act(gate) ⊙ up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gating {
    /// SwiGLU (llama, qwen2).
    Silu,
    /// GELU, tanh approximation as candle's `gelu` (gemma3).
    Gelu,
}

const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;

impl Gating {
    /// `act(x)` and `act'(x)`.
    fn eval(self, x: f32) -> (f32, f32) {
        match self {
            Gating::Silu => {
                let s = sigmoid(x);
                (x * s, s * (1.0 + x * (1.0 - s)))
            }
            Gating::Gelu => {
                let t = (SQRT_TWO_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh();
                let dt = SQRT_TWO_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
                (
                    0.5 * x * (1.0 + t),
                    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dt,
                )
            }
        }
    }
}

/// `act(gate) ⊙ up`, element by element over rayon's threads.
pub(crate) fn gate_host(kind: Gating, gate: &[f32], up: &[f32]) -> candle_core::Result<Vec<f32>> {
    elementwise(gate, up, |x, u| kind.eval(x).0 * u)
}

/// The gradients of `gate` and `up` given the output's, `g`.
pub(crate) fn gate_grad_host(
    kind: Gating,
    gate: &[f32],
    up: &[f32],
    g: &[f32],
) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
    if gate.len() != up.len() || gate.len() != g.len() {
        candle_core::bail!("gate gradient: inputs of different sizes")
    }
    let (mut d_gate, mut d_up) = (vec![0f32; gate.len()], vec![0f32; gate.len()]);
    d_gate
        .par_chunks_mut(TASK)
        .zip(d_up.par_chunks_mut(TASK))
        .zip(
            gate.par_chunks(TASK)
                .zip(up.par_chunks(TASK))
                .zip(g.par_chunks(TASK)),
        )
        .for_each(|((dg, du), ((x, u), g))| {
            for ((((dg, du), x), u), g) in dg.iter_mut().zip(du).zip(x).zip(u).zip(g) {
                let (act, slope) = kind.eval(*x);
                *dg = g * u * slope;
                *du = g * act;
            }
        });
    Ok((d_gate, d_up))
}

/// `a + b`, element by element over rayon's threads.
pub(crate) fn add_host(a: &[f32], b: &[f32]) -> candle_core::Result<Vec<f32>> {
    elementwise(a, b, |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The fused op and the composed primitives (run on a tensor that opts
    /// out of fusion by being f64) agree on values and input gradients.
    fn check(shape: &[usize], f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) {
        let x = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
        let probe = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
        let run = |x: Tensor| {
            let v = Var::from_tensor(&x).unwrap();
            let y = f(v.as_tensor()).unwrap();
            let loss = (y.to_dtype(DType::F64).unwrap() * probe.to_dtype(DType::F64).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            let dx = grads
                .get(v.as_tensor())
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap();
            (y.to_dtype(DType::F64).unwrap(), dx)
        };
        let (y_fused, dx_fused) = run(x.clone());
        let (y_ref, dx_ref) = run(x.to_dtype(DType::F64).unwrap());
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert!(
            diff(&y_fused, &y_ref) < 1e-4,
            "values {}",
            diff(&y_fused, &y_ref)
        );
        assert!(
            diff(&dx_fused, &dx_ref) < 1e-4,
            "gradients {}",
            diff(&dx_fused, &dx_ref)
        );
    }

    #[test]
    fn rms_norm_matches_the_composed_ops() {
        let w = Tensor::randn(1f32, 0.5, 48, &Device::Cpu).unwrap();
        check(&[3, 5, 48], |x| {
            let w = w.to_dtype(x.dtype())?;
            rms_norm(x, &w, 1e-5)
        });
    }

    #[test]
    fn masked_softmax_matches_the_composed_ops() {
        let t = 7;
        let mask: Vec<f32> = (0..t * t)
            .map(|k| if k % t > k / t { -1e9 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
        check(&[2, 3, t, t], |x| {
            masked_softmax(x, &mask.to_dtype(x.dtype())?, 0.125)
        });
    }

    #[test]
    fn rope_matches_the_composed_ops_in_both_layouts() {
        let (t, half) = (5, 4);
        let angles = Tensor::randn(0f32, 2.0, (t, half), &Device::Cpu).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        for neox in [true, false] {
            check(&[2, 3, t, 2 * half], |x| {
                let (c, s) = (cos.to_dtype(x.dtype())?, sin.to_dtype(x.dtype())?);
                rope(x, &c, &s, neox)
            });
        }
    }

    #[test]
    fn log_softmax_matches_the_composed_ops() {
        check(&[6, 300], log_softmax);
    }

    #[test]
    fn swiglu_matches_the_composed_ops() {
        let other = Tensor::randn(0f32, 1.0, (4, 40), &Device::Cpu).unwrap();
        // The gradient of the gate, then of the up projection.
        check(&[4, 40], |x| swiglu(x, &other.to_dtype(x.dtype())?));
        check(&[4, 40], |x| swiglu(&other.to_dtype(x.dtype())?, x));
    }
}
