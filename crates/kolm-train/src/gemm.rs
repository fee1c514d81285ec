//! Row-major f32 matrix products on the CPU, written into a caller's
//! buffer, for the fused ops of [`crate::linear`] and [`crate::attention`]:
//! `C = α·A·B` or `C += α·A·B`, either operand read transposed in place.
//! They run on the gemm crate (the kernels behind candle's own CPU matmul,
//! multi-threaded over rayon's pool). The only unsafe code of kolm-train
//! is here, behind the size checks that make it sound.

/// A `rows × cols` matrix: a row-major slice, read as is or transposed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    /// Shape of the stored (untransposed) matrix.
    stored_rows: usize,
    stored_cols: usize,
    transposed: bool,
}

impl<'a> Mat<'a> {
    /// The `rows × cols` matrix stored row-major in `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> candle_core::Result<Mat<'a>> {
        if data.len() < rows * cols {
            candle_core::bail!(
                "matrix of {rows}×{cols} over a buffer of {} values",
                data.len()
            )
        }
        Ok(Mat {
            data,
            stored_rows: rows,
            stored_cols: cols,
            transposed: false,
        })
    }

    /// The transpose, read in place.
    pub fn t(self) -> Mat<'a> {
        Mat {
            transposed: !self.transposed,
            ..self
        }
    }

    /// Rows and columns as read.
    fn shape(&self) -> (usize, usize) {
        if self.transposed {
            (self.stored_cols, self.stored_rows)
        } else {
            (self.stored_rows, self.stored_cols)
        }
    }

    /// Row and column strides as read.
    fn strides(&self) -> (isize, isize) {
        let row = self.stored_cols as isize;
        if self.transposed {
            (1, row)
        } else {
            (row, 1)
        }
    }
}

/// `c = alpha · a · b`, or `c += alpha · a · b` when `accumulate`; `c` is
/// row-major `m × n` with `a` read as `m × k` and `b` as `k × n`.
pub(crate) fn matmul(
    c: &mut [f32],
    a: Mat<'_>,
    b: Mat<'_>,
    alpha: f32,
    accumulate: bool,
) -> candle_core::Result<()> {
    let (m, n) = product_shape(a, b)?;
    if c.len() != m * n {
        candle_core::bail!(
            "matmul of {m}×{} by {}×{n} into a buffer of {} values",
            a.shape().1,
            b.shape().0,
            c.len()
        )
    }
    if a.shape().1 == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return Ok(());
    }
    // SAFETY: `c` holds exactly `m × n` values and is borrowed mutably, so
    // it cannot alias `a` or `b`.
    #[allow(unsafe_code)]
    unsafe {
        gemm_raw(c.as_mut_ptr(), a, b, alpha, accumulate);
    }
    Ok(())
}

/// `alpha · a · b` in a new row-major buffer, which is not zero-filled
/// first (the product writes every value): most of a layer's buffers are
/// products, and filling them cost a serial pass each.
pub(crate) fn matmul_new(a: Mat<'_>, b: Mat<'_>, alpha: f32) -> candle_core::Result<Vec<f32>> {
    let (m, n) = product_shape(a, b)?;
    if a.shape().1 == 0 {
        return Ok(vec![0f32; m * n]);
    }
    let mut c = Vec::<f32>::with_capacity(m * n);
    // SAFETY: the capacity is `m × n` values; with `accumulate` false gemm
    // writes every one of them (`c := alpha·a·b`) without reading any, so
    // all are initialised when the length is set.
    #[allow(unsafe_code)]
    unsafe {
        gemm_raw(c.as_mut_ptr(), a, b, alpha, false);
        c.set_len(m * n);
    }
    Ok(c)
}

/// The `(m, n)` of `a · b`, or an error when the inner sizes differ.
fn product_shape(a: Mat<'_>, b: Mat<'_>) -> candle_core::Result<(usize, usize)> {
    let (m, k) = a.shape();
    let (k2, n) = b.shape();
    if k != k2 {
        candle_core::bail!("matmul of {m}×{k} by {k2}×{n}")
    }
    Ok((m, n))
}

/// The gemm call behind [`matmul`] and [`matmul_new`].
///
/// # Safety
/// `c` must be valid for writes (and, when `accumulate`, reads) of
/// `m × n` values at row stride `n`, and must not alias `a` or `b`; `a`'s
/// inner size must equal `b`'s and be non-zero. `Mat::new` has checked
/// that each operand's strides stay inside its buffer.
#[allow(unsafe_code)]
unsafe fn gemm_raw(c: *mut f32, a: Mat<'_>, b: Mat<'_>, alpha: f32, accumulate: bool) {
    let (m, k) = a.shape();
    let (_, n) = b.shape();
    if m == 0 || n == 0 {
        return;
    }
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: guaranteed by the caller, see above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..cols)
            .flat_map(|j| (0..rows).map(move |i| a[i * cols + j]))
            .collect()
    }

    #[test]
    fn products_in_every_layout_match_the_triple_loop() {
        let (m, k, n) = (37, 19, 23);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        let want = reference(&a, &b, m, k, n);
        let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
        let layouts = [
            (Mat::new(&a, m, k).unwrap(), Mat::new(&b, k, n).unwrap()),
            (
                Mat::new(&at, k, m).unwrap().t(),
                Mat::new(&b, k, n).unwrap(),
            ),
            (
                Mat::new(&a, m, k).unwrap(),
                Mat::new(&bt, n, k).unwrap().t(),
            ),
            (
                Mat::new(&at, k, m).unwrap().t(),
                Mat::new(&bt, n, k).unwrap().t(),
            ),
        ];
        for (a, b) in layouts {
            let mut c = vec![1f32; m * n];
            matmul(&mut c, a, b, 2.0, false).unwrap();
            assert!(c.iter().zip(&want).all(|(c, w)| (c - 2.0 * w).abs() < 1e-3));
            matmul(&mut c, a, b, -1.0, true).unwrap();
            assert!(c.iter().zip(&want).all(|(c, w)| (c - w).abs() < 1e-3));
            let fresh = matmul_new(a, b, 3.0).unwrap();
            assert!(fresh
                .iter()
                .zip(&want)
                .all(|(c, w)| (c - 3.0 * w).abs() < 1e-3));
        }
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let a = vec![0f32; 6];
        assert!(Mat::new(&a, 4, 2).is_err());
        let (x, y) = (Mat::new(&a, 2, 3).unwrap(), Mat::new(&a, 2, 3).unwrap());
        assert!(matmul(&mut [0f32; 4], x, y, 1.0, false).is_err());
        assert!(matmul(&mut [0f32; 5], x, y.t(), 1.0, false).is_err());
        assert!(matmul(&mut [0f32; 4], x, y.t(), 1.0, false).is_ok());
        assert!(matmul_new(x, y, 1.0).is_err());
        assert_eq!(matmul_new(x, y.t(), 1.0).unwrap().len(), 4);
    }
}
