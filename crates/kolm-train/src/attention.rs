//! Causal self-attention over projected queries, keys and values
//! `[B·T, heads·D]`: the rotary embedding, the scaled and masked softmax
//! (optionally a sliding window) and the weighted sum of values, with
//! grouped key/value heads.
//!
//! On the CPU it is one node of the graph ([`FusedAttention`]), forward and
//! backward computed per (sequence, key/value head) over rayon's threads
//! with no `T × T` tensor kept: the backward pass recomputes the
//! probabilities. Composed from candle's ops it was some twenty nodes a
//! layer, each paying candle's per-node gradient bookkeeping. Elsewhere the
//! composed ops run (with [`crate::fused`]'s rope and softmax).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::fused;
use crate::linear::{cpu_slice, cpu_tensor, cpu_values};

/// The shape and rules of one layer's attention.
pub(crate) struct Attention<'a> {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// A position attends to at most this many positions (itself
    /// included); `None`: to every earlier one.
    pub window: Option<usize>,
    /// Rotate halves (NeoX) rather than adjacent pairs.
    pub neox: bool,
    /// Rotary tables `[seq, head_dim / 2]`.
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
}

/// `softmax(rope(q)·rope(k)ᵀ / √D + mask) · v` for `q [B·T, H·D]` and
/// `k`, `v [B·T, KVH·D]`; returns `[B·T, H·D]`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spec: &Attention<'_>,
) -> candle_core::Result<Tensor> {
    if q.device().is_cpu() && q.dtype() == DType::F32 {
        return q.contiguous()?.apply_op3(
            &k.contiguous()?,
            &v.contiguous()?,
            FusedAttention::new(spec)?,
        );
    }
    composed(q, k, v, spec)
}

/// The same attention from candle's primitives, for the other devices.
fn composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spec: &Attention<'_>,
) -> candle_core::Result<Tensor> {
    let (b, t, h, kvh, hd) = (
        spec.batch,
        spec.seq,
        spec.heads,
        spec.kv_heads,
        spec.head_dim,
    );
    let rep = h / kvh;
    let heads = |x: &Tensor, n: usize| x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous();
    let q = fused::rope(&heads(q, h)?, spec.cos, spec.sin, spec.neox)?.reshape((
        b,
        kvh,
        rep * t,
        hd,
    ))?;
    let k = fused::rope(&heads(k, kvh)?, spec.cos, spec.sin, spec.neox)?;
    let v = heads(v, kvh)?;
    // llama.cpp masks `j > i` and, with a window, `i - j >= window`.
    let window = spec.window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i || i - j >= window { -1e9 } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), q.device())?.to_dtype(q.dtype())?;
    let scores = q.matmul(&k.t()?)?.reshape((b, kvh, rep, t, t))?;
    let p = fused::masked_softmax(&scores, &mask, 1.0 / (hd as f64).sqrt())?;
    p.reshape((b, kvh, rep * t, t))?
        .matmul(&v)?
        .reshape((b, h, t, hd))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * t, h * hd))
}

/// See [`attention`]: the CPU kernel, on host values or as an op over
/// `(q, k, v)`.
pub(crate) struct FusedAttention {
    batch: usize,
    seq: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    window: usize,
    neox: bool,
    scale: f32,
    cos: Arc<[f32]>,
    sin: Arc<[f32]>,
}

/// `a · b`, summed in 16 independent lanes so that it vectorizes (a
/// single running sum is one long chain of dependent adds).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in ca.zip(cb) {
        for ((l, a), b) in lanes.iter_mut().zip(a).zip(b) {
            *l += a * b;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `acc += s · x`.
fn axpy(acc: &mut [f32], s: f32, x: &[f32]) {
    for (a, x) in acc.iter_mut().zip(x) {
        *a += s * x;
    }
}

/// What one (sequence, key/value head) unit contributes to the gradients:
/// `dq [T, rep·D]` (its query heads side by side), `dk`, `dv [T, D]`.
struct UnitGrads {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

impl FusedAttention {
    pub fn new(spec: &Attention<'_>) -> candle_core::Result<FusedAttention> {
        Ok(FusedAttention {
            batch: spec.batch,
            seq: spec.seq,
            heads: spec.heads,
            kv_heads: spec.kv_heads,
            head_dim: spec.head_dim,
            window: spec.window.unwrap_or(usize::MAX).max(1),
            neox: spec.neox,
            scale: 1.0 / (spec.head_dim as f32).sqrt(),
            cos: fused::host_f32(spec.cos)?.into(),
            sin: fused::host_f32(spec.sin)?.into(),
        })
    }

    /// The attention of `q [B·T, H·D]`, `k`, `v [B·T, KVH·D]` (host values).
    pub fn forward_host(&self, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let units: Vec<Vec<f32>> = self
            .units()
            .map(|(s, g)| self.forward_unit(q, k, v, s, g))
            .collect();
        let width = self.heads * self.head_dim;
        let mut out = vec![0f32; self.batch * self.seq * width];
        for (u, unit) in units.iter().enumerate() {
            let (s, g) = (u / self.kv_heads, u % self.kv_heads);
            self.scatter(&mut out, width, unit, s, g * self.rep());
        }
        out
    }

    /// The gradients `(dq, dk, dv)` given `go`, the output's gradient.
    pub fn backward_host(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        go: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let units: Vec<UnitGrads> = self
            .units()
            .map(|(s, g)| self.backward_unit(q, k, v, go, s, g))
            .collect();
        let (qw, kw) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let n = self.batch * self.seq;
        let (mut dq, mut dk, mut dv) = (vec![0f32; n * qw], vec![0f32; n * kw], vec![0f32; n * kw]);
        for (u, unit) in units.iter().enumerate() {
            let (s, g) = (u / self.kv_heads, u % self.kv_heads);
            self.scatter(&mut dq, qw, &unit.dq, s, g * self.rep());
            self.scatter(&mut dk, kw, &unit.dk, s, g);
            self.scatter(&mut dv, kw, &unit.dv, s, g);
        }
        (dq, dk, dv)
    }

    fn rep(&self) -> usize {
        self.heads / self.kv_heads
    }

    fn check(&self, q: &Shape, k: &Shape, v: &Shape) -> candle_core::Result<()> {
        let n = self.batch * self.seq;
        let half = self.head_dim / 2;
        if q.dims2()? != (n, self.heads * self.head_dim)
            || k.dims2()? != (n, self.kv_heads * self.head_dim)
            || v.dims2()? != k.dims2()?
            || !self.heads.is_multiple_of(self.kv_heads)
            || self.cos.len() != self.seq * half
            || self.sin.len() != self.seq * half
        {
            candle_core::bail!(
                "fused-attention: q {q:?}, k {k:?}, v {v:?} do not fit {} sequences of {} with {}/{} heads of {}",
                self.batch,
                self.seq,
                self.heads,
                self.kv_heads,
                self.head_dim
            )
        }
        Ok(())
    }

    /// The positions `pos` attends to.
    fn span(&self, pos: usize) -> std::ops::Range<usize> {
        (pos + 1).saturating_sub(self.window)..pos + 1
    }

    /// Writes `x` rotated to position `pos` into `out` (by the opposite
    /// angle when `inverse`: the rotation's transpose, for gradients).
    fn rotate(&self, out: &mut [f32], x: &[f32], pos: usize, inverse: bool) {
        let half = self.head_dim / 2;
        let cos = &self.cos[pos * half..(pos + 1) * half];
        let sin = &self.sin[pos * half..(pos + 1) * half];
        let sign = if inverse { -1.0 } else { 1.0 };
        for i in 0..half {
            let (ia, ic) = if self.neox {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (a, c, s) = (x[ia], x[ic], sign * sin[i]);
            out[ia] = a * cos[i] - c * s;
            out[ic] = a * s + c * cos[i];
        }
    }

    /// Rows `[T, D]` of one head of one sequence out of `x [B·T, width]`,
    /// rotated when `rotate`.
    fn head_rows(
        &self,
        x: &[f32],
        width: usize,
        seq: usize,
        head: usize,
        rotate: bool,
    ) -> Vec<f32> {
        let d = self.head_dim;
        let mut out = vec![0f32; self.seq * d];
        for (pos, o) in out.chunks_mut(d).enumerate() {
            let at = (seq * self.seq + pos) * width + head * d;
            let row = &x[at..at + d];
            if rotate {
                self.rotate(o, row, pos, false);
            } else {
                o.copy_from_slice(row);
            }
        }
        out
    }

    /// Writes the probabilities of query `qr` (rotated) at `pos` over the
    /// rotated keys `kr [T, D]` into `p[span]`.
    fn probs(&self, p: &mut [f32], qr: &[f32], kr: &[f32], pos: usize) {
        let d = self.head_dim;
        let span = self.span(pos);
        let mut max = f32::NEG_INFINITY;
        for j in span.clone() {
            p[j] = self.scale * dot(qr, &kr[j * d..(j + 1) * d]);
            max = max.max(p[j]);
        }
        let mut sum = 0.0;
        for p in &mut p[span.clone()] {
            *p = (*p - max).exp();
            sum += *p;
        }
        for p in &mut p[span] {
            *p /= sum;
        }
    }

    /// The output rows `[T, rep·D]` of sequence `s`, key/value head `g`.
    fn forward_unit(&self, q: &[f32], k: &[f32], v: &[f32], s: usize, g: usize) -> Vec<f32> {
        let (t, d, rep) = (self.seq, self.head_dim, self.rep());
        let kv_width = self.kv_heads * d;
        let kr = self.head_rows(k, kv_width, s, g, true);
        let vs = self.head_rows(v, kv_width, s, g, false);
        let mut out = vec![0f32; t * rep * d];
        let mut p = vec![0f32; t];
        for r in 0..rep {
            let qr = self.head_rows(q, self.heads * d, s, g * rep + r, true);
            for pos in 0..t {
                self.probs(&mut p, &qr[pos * d..(pos + 1) * d], &kr, pos);
                let o = &mut out[(pos * rep + r) * d..(pos * rep + r + 1) * d];
                for j in self.span(pos) {
                    axpy(o, p[j], &vs[j * d..(j + 1) * d]);
                }
            }
        }
        out
    }

    /// The gradients of sequence `s`, key/value head `g`, given `go`, the
    /// output's gradient `[B·T, H·D]`.
    fn backward_unit(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        go: &[f32],
        s: usize,
        g: usize,
    ) -> UnitGrads {
        let (t, d, rep) = (self.seq, self.head_dim, self.rep());
        let kv_width = self.kv_heads * d;
        let kr = self.head_rows(k, kv_width, s, g, true);
        let vs = self.head_rows(v, kv_width, s, g, false);
        let mut grads = UnitGrads {
            dq: vec![0f32; t * rep * d],
            dk: vec![0f32; t * d],
            dv: vec![0f32; t * d],
        };
        let mut dkr = vec![0f32; t * d];
        let (mut p, mut ds, mut dqr) = (vec![0f32; t], vec![0f32; t], vec![0f32; d]);
        for r in 0..rep {
            let h = g * rep + r;
            let qr = self.head_rows(q, self.heads * d, s, h, true);
            let gh = self.head_rows(go, self.heads * d, s, h, false);
            for pos in 0..t {
                let qi = &qr[pos * d..(pos + 1) * d];
                let gi = &gh[pos * d..(pos + 1) * d];
                self.probs(&mut p, qi, &kr, pos);
                let span = self.span(pos);
                let mut mean = 0.0;
                for j in span.clone() {
                    ds[j] = dot(gi, &vs[j * d..(j + 1) * d]);
                    mean += p[j] * ds[j];
                    axpy(&mut grads.dv[j * d..(j + 1) * d], p[j], gi);
                }
                dqr.fill(0.0);
                for j in span {
                    let s = self.scale * p[j] * (ds[j] - mean);
                    axpy(&mut dqr, s, &kr[j * d..(j + 1) * d]);
                    axpy(&mut dkr[j * d..(j + 1) * d], s, qi);
                }
                let at = (pos * rep + r) * d;
                self.rotate(&mut grads.dq[at..at + d], &dqr, pos, true);
            }
        }
        for (pos, (dk, dkr)) in grads.dk.chunks_mut(d).zip(dkr.chunks(d)).enumerate() {
            self.rotate(dk, dkr, pos, true);
        }
        grads
    }

    /// Copies unit rows `[T, n·D]` of sequence `s`, heads `first..first+n`
    /// into `x [B·T, width]`.
    fn scatter(&self, x: &mut [f32], width: usize, unit: &[f32], s: usize, first: usize) {
        let span = unit.len() / self.seq;
        for (pos, row) in unit.chunks(span).enumerate() {
            let at = (s * self.seq + pos) * width + first * self.head_dim;
            x[at..at + span].copy_from_slice(row);
        }
    }

    fn units(&self) -> impl IndexedParallelIterator<Item = (usize, usize)> + '_ {
        (0..self.batch * self.kv_heads)
            .into_par_iter()
            .map(|u| (u / self.kv_heads, u % self.kv_heads))
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.check(ql.shape(), kl.shape(), vl.shape())?;
        let (q, k, v) = (cpu_slice(qs, ql)?, cpu_slice(ks, kl)?, cpu_slice(vs, vl)?);
        let out = self.forward_host(q, k, v);
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.check(q.shape(), k.shape(), v.shape())?;
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (go, qv, kv, vv) = (
            cpu_values(&gs, gl)?,
            cpu_values(&qs, ql)?,
            cpu_values(&ks, kl)?,
            cpu_values(&vs, vl)?,
        );
        let (dq, dk, dv) = self.backward_host(qv, kv, vv, go);
        let (qw, kw) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let n = self.batch * self.seq;
        Ok((
            Some(cpu_tensor(dq, (n, qw))?),
            Some(cpu_tensor(dk, (n, kw))?),
            Some(cpu_tensor(dv, (n, kw))?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The fused op and the composed ops (on f64 tensors, which take the
    /// composed path) agree on the output and the gradients of q, k and v,
    /// for grouped heads, both rotary layouts and a sliding window.
    #[test]
    fn the_fused_op_matches_the_composed_ops() {
        let (b, t, h, kvh, d) = (2, 7, 4, 2, 8);
        let dev = Device::Cpu;
        let angles = Tensor::randn(0f32, 2.0, (t, d / 2), &dev).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let q0 = Tensor::randn(0f32, 1.0, (b * t, h * d), &dev).unwrap();
        let k0 = Tensor::randn(0f32, 1.0, (b * t, kvh * d), &dev).unwrap();
        let v0 = Tensor::randn(0f32, 1.0, (b * t, kvh * d), &dev).unwrap();
        let probe = Tensor::randn(0f64, 1.0, (b * t, h * d), &dev).unwrap();
        for (neox, window) in [(true, None), (false, None), (true, Some(3))] {
            let run = |dtype: DType| {
                let vars: Vec<Var> = [&q0, &k0, &v0]
                    .iter()
                    .map(|t| Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap())
                    .collect();
                let (c, s) = (cos.to_dtype(dtype).unwrap(), sin.to_dtype(dtype).unwrap());
                let spec = Attention {
                    batch: b,
                    seq: t,
                    heads: h,
                    kv_heads: kvh,
                    head_dim: d,
                    window,
                    neox,
                    cos: &c,
                    sin: &s,
                };
                let y = attention(
                    vars[0].as_tensor(),
                    vars[1].as_tensor(),
                    vars[2].as_tensor(),
                    &spec,
                )
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap();
                let grads = (&y * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let mut outs = vec![y];
                for v in &vars {
                    outs.push(
                        grads
                            .get(v.as_tensor())
                            .unwrap()
                            .to_dtype(DType::F64)
                            .unwrap(),
                    );
                }
                outs
            };
            let (fused, composed) = (run(DType::F32), run(DType::F64));
            for (what, (f, c)) in ["out", "dq", "dk", "dv"]
                .iter()
                .zip(fused.iter().zip(&composed))
            {
                let diff = (f - c)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                assert!(
                    diff < 1e-4,
                    "{what} (neox {neox}, window {window:?}): max difference {diff}"
                );
            }
        }
    }
}
