//! Helpers shared by the unit tests that compare a host kernel with
//! candle's composed ops.

use candle_core::{Tensor, Var};

/// `y` and the gradients of `vars` of `sum(y ⊙ probe)`, through candle's
/// autograd.
pub fn value_and_grads(y: Tensor, probe: &Tensor, vars: &[Var]) -> Vec<Tensor> {
    let grads = (&y * probe).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![y];
    out.extend(
        vars.iter()
            .map(|v| grads.get(v.as_tensor()).unwrap().clone()),
    );
    out
}

/// Asserts that host values `got` are within `tol` of the f64 tensor `want`.
pub fn assert_close(what: &str, got: &[f32], want: &Tensor, tol: f64) {
    let want = want.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: sizes");
    let diff = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (f64::from(*g) - w).abs())
        .fold(0.0, f64::max);
    assert!(diff < tol, "{what}: max difference {diff}");
}
