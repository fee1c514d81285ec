//! The base's linear layers: `x · Wᵀ` with `W` frozen, plus, on the
//! modules being trained, the LoRA delta `scale · (x ⊙ mask) · Aᵀ · Bᵀ`
//! (`mask`: the dropout's, `1/keep` or 0 per input value).
//!
//! [`lora_linear`] composes it from candle's ops (any device); the frozen
//! product is [`FrozenLinear`], which computes no gradient for `W`
//! (candle's matmul would: a third of the work and a copy of every
//! weight). [`forward_host`] and [`backward_host`] are the same layer on
//! host values, forward and backward, for the CPU's fused layer node
//! (`layer.rs`).

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, Device, Layout, MetalStorage, Shape, Storage, Tensor,
};

use crate::gemm::{matmul, matmul_new, Mat};

/// `x [N, in] · Wᵀ` for a frozen `W [out, in]`. A half-precision `W`
/// multiplies `x` cast to its dtype; the result comes back in `x`'s.
pub(crate) fn frozen_linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let op = FrozenLinear { w: w.clone() };
    if x.dtype() == w.dtype() {
        return x.contiguous()?.apply_op1(op);
    }
    x.to_dtype(w.dtype())?
        .contiguous()?
        .apply_op1(op)?
        .to_dtype(x.dtype())
}

/// A LoRA pair of one module: `A [r, in]`, `B [out, r]` and the scale.
pub(crate) struct Delta<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub scale: f64,
    /// The dropout mask over `x`, `N × in` values, when dropout is on.
    pub mask: Option<Vec<f32>>,
}

/// `x · Wᵀ + scale · (x ⊙ mask) · Aᵀ · Bᵀ`.
pub(crate) fn lora_linear(x: &Tensor, w: &Tensor, delta: Delta<'_>) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let xd = match delta.mask {
        Some(mask) => (&x * Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?)?,
        None => x.clone(),
    };
    // Scaled at rank width ([N, r]), not at the output's ([N, out]).
    let d = (xd.matmul(&delta.a.t()?)? * delta.scale)?.matmul(&delta.b.t()?)?;
    frozen_linear(&x, w)? + d
}

/// See [`frozen_linear`]. The forward pass is the backend's own matmul, so
/// the op runs on every device candle has.
struct FrozenLinear {
    w: Tensor,
}

impl FrozenLinear {
    /// `x [n, k] · Wᵀ` on one backend's storage; `weight_of` picks the
    /// weight's storage of that backend.
    fn forward<S: BackendStorage>(
        &self,
        x: &S,
        x_layout: &Layout,
        weight_of: fn(&Storage) -> Option<&S>,
    ) -> candle_core::Result<(S, Shape)> {
        let (n, k) = x_layout.shape().dims2()?;
        let (out, w_k) = self.w.dims2()?;
        if k != w_k {
            candle_core::bail!("frozen-linear: input width {k} does not match the weight's {w_k}")
        }
        let (storage, w_layout) = self.w.storage_and_layout();
        let Some(w) = weight_of(&storage) else {
            candle_core::bail!("frozen-linear: the weight is on another device than its input")
        };
        let y = x.matmul(w, (1, n, out, k), x_layout, &w_layout.transpose(0, 1)?)?;
        Ok((y, Shape::from((n, out))))
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward(x, layout, |s| match s {
            Storage::Cpu(w) => Some(w),
            _ => None,
        })
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.forward(x, layout, |s| match s {
            Storage::Cuda(w) => Some(w),
            _ => None,
        })
    }

    fn metal_fwd(
        &self,
        x: &MetalStorage,
        layout: &Layout,
    ) -> candle_core::Result<(MetalStorage, Shape)> {
        self.forward(x, layout, |s| match s {
            Storage::Metal(w) => Some(w),
            _ => None,
        })
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w)?))
    }
}

/// The f32 values of a contiguous CPU storage.
pub(crate) fn cpu_values<'a>(s: &'a Storage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match s {
        Storage::Cpu(s) => cpu_slice(s, l),
        _ => candle_core::bail!("a fused CPU op got a tensor of another device"),
    }
}

/// The f32 values of a contiguous CPU tensor's storage.
pub(crate) fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("a fused CPU op needs contiguous f32 inputs"),
    }
}

/// A CPU tensor of `values`.
pub(crate) fn cpu_tensor(values: Vec<f32>, shape: impl Into<Shape>) -> candle_core::Result<Tensor> {
    Tensor::from_vec(values, shape, &Device::Cpu)
}

/// One module's LoRA pair as host values, for the CPU kernels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HostLora<'a> {
    /// `A [rank, in]`, `B [out, rank]`, row-major.
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub rank: usize,
    pub scale: f32,
    /// The dropout mask over `x` (`N × in`), when dropout is on.
    pub mask: Option<&'a [f32]>,
}

impl HostLora<'_> {
    /// `x ⊙ mask`, or `x` itself without dropout.
    fn dropped<'x>(&self, x: &'x [f32]) -> std::borrow::Cow<'x, [f32]> {
        match self.mask {
            Some(mask) => x.iter().zip(mask).map(|(x, m)| x * m).collect(),
            None => x.into(),
        }
    }
}

/// `x [n, in] · Wᵀ` (`W [out, in]`) plus the LoRA delta, on host values.
pub(crate) fn forward_host(
    x: &[f32],
    n: usize,
    w: &[f32],
    out: usize,
    lora: Option<&HostLora<'_>>,
) -> candle_core::Result<Vec<f32>> {
    let inp = x.len() / n.max(1);
    let mut y = matmul_new(Mat::new(x, n, inp)?, Mat::new(w, out, inp)?.t(), 1.0)?;
    if let Some(l) = lora {
        let xd = l.dropped(x);
        let h = matmul_new(Mat::new(&xd, n, inp)?, Mat::new(l.a, l.rank, inp)?.t(), 1.0)?;
        // Scaled at rank width ([N, r]), not at the output's ([N, out]).
        matmul(
            &mut y,
            Mat::new(&h, n, l.rank)?,
            Mat::new(l.b, out, l.rank)?.t(),
            l.scale,
            true,
        )?;
    }
    Ok(y)
}

/// The backward pass of [`forward_host`] given `g = ∂L/∂y [n, out]`: adds
/// `∂L/∂x` into `dx` (or, when `dx` is empty, fills it with `∂L/∂x`) and
/// returns `(∂L/∂A, ∂L/∂B)` with a LoRA. With `xd = x ⊙ mask`,
/// `h = xd·Aᵀ` and `gB = g·B`: `dx = g·W + scale·(gB·A) ⊙ mask`,
/// `dA = scale·gBᵀ·xd`, `dB = scale·gᵀ·h`.
pub(crate) fn backward_host(
    x: &[f32],
    g: &[f32],
    n: usize,
    w: &[f32],
    lora: Option<&HostLora<'_>>,
    dx: &mut Vec<f32>,
) -> candle_core::Result<Option<(Vec<f32>, Vec<f32>)>> {
    let inp = x.len() / n.max(1);
    let out = g.len() / n.max(1);
    let g = Mat::new(g, n, out)?;
    if dx.is_empty() {
        *dx = matmul_new(g, Mat::new(w, out, inp)?, 1.0)?;
    } else {
        matmul(dx, g, Mat::new(w, out, inp)?, 1.0, true)?;
    }
    let Some(l) = lora else {
        return Ok(None);
    };
    let (a, b) = (Mat::new(l.a, l.rank, inp)?, Mat::new(l.b, out, l.rank)?);
    let gb = matmul_new(g, b, 1.0)?;
    let gb = Mat::new(&gb, n, l.rank)?;
    match l.mask {
        None => matmul(dx, gb, a, l.scale, true)?,
        Some(mask) => {
            let t = matmul_new(gb, a, l.scale)?;
            for ((dx, t), m) in dx.iter_mut().zip(&t).zip(mask) {
                *dx += t * m;
            }
        }
    }
    let xd = l.dropped(x);
    let xd = Mat::new(&xd, n, inp)?;
    let h = matmul_new(xd, a.t(), 1.0)?;
    let da = matmul_new(gb.t(), xd, l.scale)?;
    let db = matmul_new(g.t(), Mat::new(&h, n, l.rank)?, l.scale)?;
    Ok(Some((da, db)))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Var};

    use super::*;
    use crate::test_support::{assert_close, value_and_grads};

    /// The host kernels and the composed ops (in f64, through candle's
    /// autograd) agree on the output and the gradients of x, A and B.
    #[test]
    fn the_host_kernels_match_the_composed_ops_with_and_without_dropout() {
        let (n, inp, out, rank, scale) = (13, 24, 20, 4, 1.5);
        let mut rng = crate::rng::Rng::new(5);
        let mut rand = |shape: (usize, usize)| rng.normal(0.0, 0.5, shape);
        let (w, x, a, b, probe) = (
            rand((out, inp)),
            rand((n, inp)),
            rand((rank, inp)),
            rand((out, rank)),
            rand((n, out)),
        );
        let host = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mask: Vec<f32> = (0..n * inp)
            .map(|i| if i % 5 == 0 { 0.0 } else { 1.25 })
            .collect();
        for mask in [None, Some(mask)] {
            // Composed, in f64.
            let f64_of = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
            let vars: Vec<Var> = [&x, &a, &b]
                .iter()
                .map(|t| Var::from_tensor(&f64_of(t)).unwrap())
                .collect();
            let delta = Delta {
                a: vars[1].as_tensor(),
                b: vars[2].as_tensor(),
                scale,
                mask: mask.clone(),
            };
            let y = lora_linear(vars[0].as_tensor(), &f64_of(&w), delta).unwrap();
            let want = value_and_grads(y, &f64_of(&probe), &vars);
            // Host kernels, in f32.
            let (av, bv) = (host(&a), host(&b));
            let lora = HostLora {
                a: &av,
                b: &bv,
                rank,
                scale: scale as f32,
                mask: mask.as_deref(),
            };
            let (xv, wv) = (host(&x), host(&w));
            let y = forward_host(&xv, n, &wv, out, Some(&lora)).unwrap();
            let mut dx = Vec::new();
            let (da, db) = backward_host(&xv, &host(&probe), n, &wv, Some(&lora), &mut dx)
                .unwrap()
                .unwrap();
            for (what, (got, want)) in ["y", "dx", "dA", "dB"]
                .iter()
                .zip([y, dx, da, db].iter().zip(&want))
            {
                assert_close(what, got, want, 1e-4);
            }
        }
    }
}
