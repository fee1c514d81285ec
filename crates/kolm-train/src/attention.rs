//! Causal self-attention over projected queries, keys and values
//! `[B·T, heads·D]`: the rotary embedding, the scaled and masked softmax
//! (optionally a sliding window) and the weighted sum of values, with
//! grouped key/value heads.
//!
//! [`attention`] composes it from candle's ops (any device).
//! [`FusedAttention`] is the CPU
//! kernel of the fused layer node (`layer.rs`): forward and backward on
//! host values, computed per (sequence, query head) over rayon's threads
//! with no `T × T` tensor kept (the backward pass recomputes the
//! probabilities).

use std::sync::Arc;

use candle_core::{Tensor, D};
use rayon::prelude::*;

use crate::fused;

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
    let (b, t, h, kvh, hd) = (
        spec.batch,
        spec.seq,
        spec.heads,
        spec.kv_heads,
        spec.head_dim,
    );
    let rep = h / kvh;
    let heads = |x: &Tensor, n: usize| x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous();
    let q = rope(&heads(q, h)?, spec.cos, spec.sin, spec.neox)?.reshape((b, kvh, rep * t, hd))?;
    let k = rope(&heads(k, kvh)?, spec.cos, spec.sin, spec.neox)?;
    let v = heads(v, kvh)?;
    // llama.cpp masks `j > i` and, with a window, `i - j >= window`.
    let window = spec.window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i || i - j >= window { -1e9 } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), q.device())?.to_dtype(q.dtype())?;
    let scores = q.matmul(&k.t()?)?.reshape((b, kvh, rep, t, t))?;
    let scores = ((scores * (1.0 / (hd as f64).sqrt()))?).broadcast_add(&mask)?;
    let max = scores.max_keepdim(D::Minus1)?.detach();
    let e = scores.broadcast_sub(&max)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    p.reshape((b, kvh, rep * t, t))?
        .matmul(&v)?
        .reshape((b, h, t, hd))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * t, h * hd))
}

/// Rotates `x [B, H, T, D]` by the angles whose cosines and sines are
/// `cos`, `sin [T, D/2]`: pairs `(i, i + D/2)` when `neox`, else adjacent
/// pairs `(2i, 2i + 1)` (llama.cpp's two layouts).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, neox: bool) -> candle_core::Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    let half = d / 2;
    if neox {
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
    }
}

/// See [`attention`]: the CPU kernel, on host values.
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

/// What one (sequence, query head) unit contributes to the gradients, each
/// `[T, D]`: its query's, and its share of its key/value head's.
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
    pub fn forward_host(&self, q: &[f32], k: &[f32], v: &[f32]) -> candle_core::Result<Vec<f32>> {
        self.check(q, k, v)?;
        let units: Vec<Vec<f32>> = self
            .units()
            .map(|(s, g)| self.forward_unit(q, k, v, s, g))
            .collect();
        let width = self.heads * self.head_dim;
        let mut out = vec![0f32; self.batch * self.seq * width];
        for (u, unit) in units.iter().enumerate() {
            self.scatter(&mut out, width, unit, u / self.heads, u % self.heads, false);
        }
        Ok(out)
    }

    /// The gradients `(dq, dk, dv)` given `go`, the output's gradient.
    pub fn backward_host(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        go: &[f32],
    ) -> candle_core::Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        self.check(q, k, v)?;
        if go.len() != q.len() {
            candle_core::bail!(
                "fused attention: a gradient of {} values for {}",
                go.len(),
                q.len()
            )
        }
        let units: Vec<UnitGrads> = self
            .units()
            .map(|(s, g)| self.backward_unit(q, k, v, go, s, g))
            .collect();
        let (qw, kw) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let n = self.batch * self.seq;
        let (mut dq, mut dk, mut dv) = (vec![0f32; n * qw], vec![0f32; n * kw], vec![0f32; n * kw]);
        for (u, unit) in units.iter().enumerate() {
            let (s, h) = (u / self.heads, u % self.heads);
            let g = h / self.rep();
            self.scatter(&mut dq, qw, &unit.dq, s, h, false);
            self.scatter(&mut dk, kw, &unit.dk, s, g, true);
            self.scatter(&mut dv, kw, &unit.dv, s, g, true);
        }
        Ok((dq, dk, dv))
    }

    fn rep(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Checks the sizes of `q`, `k`, `v` and of the rotary tables.
    fn check(&self, q: &[f32], k: &[f32], v: &[f32]) -> candle_core::Result<()> {
        let n = self.batch * self.seq;
        let half = self.head_dim / 2;
        if q.len() != n * self.heads * self.head_dim
            || k.len() != n * self.kv_heads * self.head_dim
            || v.len() != k.len()
            || !self.heads.is_multiple_of(self.kv_heads)
            || self.cos.len() != self.seq * half
            || self.sin.len() != self.seq * half
        {
            candle_core::bail!(
                "fused attention: q, k, v of {}, {}, {} values do not fit {} sequences of {} with {}/{} heads of {}",
                q.len(),
                k.len(),
                v.len(),
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

    /// The output rows `[T, D]` of sequence `s`, query head `h`.
    fn forward_unit(&self, q: &[f32], k: &[f32], v: &[f32], s: usize, h: usize) -> Vec<f32> {
        let (t, d) = (self.seq, self.head_dim);
        let (kv_width, g) = (self.kv_heads * d, h / self.rep());
        let kr = self.head_rows(k, kv_width, s, g, true);
        let vs = self.head_rows(v, kv_width, s, g, false);
        let qr = self.head_rows(q, self.heads * d, s, h, true);
        let mut out = vec![0f32; t * d];
        let mut p = vec![0f32; t];
        for (pos, o) in out.chunks_mut(d).enumerate() {
            self.probs(&mut p, &qr[pos * d..(pos + 1) * d], &kr, pos);
            for j in self.span(pos) {
                axpy(o, p[j], &vs[j * d..(j + 1) * d]);
            }
        }
        out
    }

    /// The gradients from sequence `s`, query head `h`, given `go`, the
    /// output's gradient `[B·T, H·D]`: its query's, and its share of its
    /// key/value head's.
    fn backward_unit(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        go: &[f32],
        s: usize,
        h: usize,
    ) -> UnitGrads {
        let (t, d) = (self.seq, self.head_dim);
        let (kv_width, g) = (self.kv_heads * d, h / self.rep());
        let kr = self.head_rows(k, kv_width, s, g, true);
        let vs = self.head_rows(v, kv_width, s, g, false);
        let qr = self.head_rows(q, self.heads * d, s, h, true);
        let gh = self.head_rows(go, self.heads * d, s, h, false);
        let mut grads = UnitGrads {
            dq: vec![0f32; t * d],
            dk: vec![0f32; t * d],
            dv: vec![0f32; t * d],
        };
        let mut dkr = vec![0f32; t * d];
        let (mut p, mut ds, mut dqr) = (vec![0f32; t], vec![0f32; t], vec![0f32; d]);
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
            self.rotate(&mut grads.dq[pos * d..(pos + 1) * d], &dqr, pos, true);
        }
        for (pos, (dk, dkr)) in grads.dk.chunks_mut(d).zip(dkr.chunks(d)).enumerate() {
            self.rotate(dk, dkr, pos, true);
        }
        grads
    }

    /// Copies (or, when `add`, adds) unit rows `[T, D]` of sequence `s`
    /// into head `head` of `x [B·T, width]`.
    fn scatter(&self, x: &mut [f32], width: usize, unit: &[f32], s: usize, head: usize, add: bool) {
        let d = self.head_dim;
        for (pos, row) in unit.chunks(d).enumerate() {
            let at = (s * self.seq + pos) * width + head * d;
            let dst = &mut x[at..at + d];
            if add {
                axpy(dst, 1.0, row);
            } else {
                dst.copy_from_slice(row);
            }
        }
    }

    /// (sequence, query head) pairs, the units of work, over rayon.
    fn units(&self) -> impl IndexedParallelIterator<Item = (usize, usize)> + '_ {
        (0..self.batch * self.heads)
            .into_par_iter()
            .map(|u| (u / self.heads, u % self.heads))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Var};

    use super::*;
    use crate::test_support::{assert_close, value_and_grads};

    /// The host kernel and the composed ops (in f64, through candle's
    /// autograd) agree on the output and the gradients of q, k and v, for
    /// grouped heads, both rotary layouts and a sliding window.
    #[test]
    fn the_host_kernel_matches_the_composed_ops() {
        let (b, t, h, kvh, d) = (2, 7, 4, 2, 8);
        let mut rng = crate::rng::Rng::new(5);
        let angles = rng.normal(0.0, 2.0, (t, d / 2));
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let mut rand = |w: usize| rng.normal(0.0, 1.0, (b * t, w * d));
        let (q, k, v, probe) = (rand(h), rand(kvh), rand(kvh), rand(h));
        let host = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let f64_of = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        for (neox, window) in [(true, None), (false, None), (true, Some(3))] {
            let spec = |cos, sin| Attention {
                batch: b,
                seq: t,
                heads: h,
                kv_heads: kvh,
                head_dim: d,
                window,
                neox,
                cos,
                sin,
            };
            let vars: Vec<Var> = [&q, &k, &v]
                .iter()
                .map(|t| Var::from_tensor(&f64_of(t)).unwrap())
                .collect();
            let (c64, s64) = (f64_of(&cos), f64_of(&sin));
            let y = attention(
                vars[0].as_tensor(),
                vars[1].as_tensor(),
                vars[2].as_tensor(),
                &spec(&c64, &s64),
            )
            .unwrap();
            let want = value_and_grads(y, &f64_of(&probe), &vars);
            let kernel = FusedAttention::new(&spec(&cos, &sin)).unwrap();
            let (qv, kv, vv) = (host(&q), host(&k), host(&v));
            let out = kernel.forward_host(&qv, &kv, &vv).unwrap();
            let (dq, dk, dv) = kernel.backward_host(&qv, &kv, &vv, &host(&probe)).unwrap();
            for (what, (got, want)) in ["out", "dq", "dk", "dv"]
                .iter()
                .zip([out, dq, dk, dv].iter().zip(&want))
            {
                assert_close(
                    &format!("{what} (neox {neox}, window {window:?})"),
                    got,
                    want,
                    1e-4,
                );
            }
        }
        // A wrong size is an error, not a panic.
        let kernel = FusedAttention::new(&Attention {
            batch: b,
            seq: t,
            heads: h,
            kv_heads: kvh,
            head_dim: d,
            window: None,
            neox: true,
            cos: &cos,
            sin: &sin,
        })
        .unwrap();
        assert!(kernel
            .forward_host(&[0.0; 3], &[0.0; 3], &[0.0; 3])
            .is_err());
    }
}
