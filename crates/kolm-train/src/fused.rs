//! Fused, multi-threaded CPU kernels for the row-wise parts of the forward
//! and backward pass. Composed from candle's primitives they cost a dozen
//! single-threaded passes each; here each is one parallel pass forward and
//! one backward.
//!
//! - As candle ops, for the model's head: [`rms_norm`] and [`log_softmax`]
//!   over the vocabulary (each falls back to the composed primitives off
//!   the CPU, so GPU runs keep candle's own kernels).
//! - On host values, for the fused layer (`layer.rs`): RMS norm and its
//!   gradient, the SiLU/GELU gate and its gradients, adds.

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

// ------------------------------------------------ gating, on host values

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
    use candle_core::Var;

    use super::*;

    /// The fused op and the composed primitives (run on a tensor that opts
    /// out of fusion by being f64) agree on values and input gradients.
    fn check(shape: &[usize], f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) {
        let mut rng = crate::rng::Rng::new(5);
        let x = rng.normal(0.0, 1.0, shape);
        let probe = rng.normal(0.0, 1.0, shape);
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
        let w = crate::rng::Rng::new(6).normal(1.0, 0.5, 48);
        check(&[3, 5, 48], |x| {
            let w = w.to_dtype(x.dtype())?;
            rms_norm(x, &w, 1e-5)
        });
    }

    #[test]
    fn log_softmax_matches_the_composed_ops() {
        check(&[6, 300], log_softmax);
    }
}
