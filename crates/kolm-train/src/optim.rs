//! AdamW over the LoRA variables with global-norm gradient clipping, and the
//! learning-rate schedule: linear warm-up, then linear decay to zero.

use candle_core::{Tensor, Var};

/// AdamW hyper-parameters.
#[derive(Clone, Debug)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW state: first and second moments per variable.
#[derive(Debug)]
pub struct AdamW {
    pub params: AdamWParams,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Updates taken so far.
    pub t: usize,
}

impl AdamW {
    pub fn new(vars: &[&Var], params: AdamWParams) -> candle_core::Result<Self> {
        let zeros = |v: &&Var| v.as_tensor().zeros_like();
        Ok(AdamW {
            params,
            m: vars.iter().map(zeros).collect::<Result<_, _>>()?,
            v: vars.iter().map(zeros).collect::<Result<_, _>>()?,
            t: 0,
        })
    }

    /// One update with gradients `grads` (same order as `vars`).
    pub fn step(&mut self, vars: &[&Var], grads: &[Tensor], lr: f64) -> candle_core::Result<()> {
        self.t += 1;
        let p = &self.params;
        let bc1 = 1.0 - p.beta1.powi(self.t as i32);
        let bc2 = 1.0 - p.beta2.powi(self.t as i32);
        for (i, (var, g)) in vars.iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let v = ((&self.v[i] * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let mhat = (&m / bc1)?;
            let vhat = (&v / bc2)?;
            let upd = (mhat / (vhat.sqrt()? + p.eps)?)?;
            let w = var.as_tensor();
            let w_new = ((w * (1.0 - lr * p.weight_decay))? - (upd * lr)?)?;
            var.set(&w_new)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm`; returns
/// the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> candle_core::Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter() {
        sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * s)?;
        }
    }
    Ok(norm)
}

/// The learning rate of (0-based) `step` of `total`.
pub fn learning_rate(lr: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        lr * (step + 1) as f64 / warmup as f64
    } else {
        let left = total.saturating_sub(step) as f64;
        let span = total.saturating_sub(warmup).max(1) as f64;
        lr * (left / span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((learning_rate(1.0, 0, 10, 2) - 0.5).abs() < 1e-9);
        assert!((learning_rate(1.0, 1, 10, 2) - 1.0).abs() < 1e-9);
        assert!((learning_rate(1.0, 2, 10, 2) - 1.0).abs() < 1e-9);
        assert!(learning_rate(1.0, 9, 10, 2) < 0.2);
        assert!((learning_rate(1.0, 0, 10, 0) - 1.0).abs() < 1e-9);
    }
}
