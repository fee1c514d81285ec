//! A small seeded generator (SplitMix64): LoRA initialisation, dropout
//! masks and shuffling come from it, so a seed fixes a run bit for bit and
//! a resumed run draws what the uninterrupted one would have.

/// SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator for one purpose (`stream`) at one step, independent of
    /// how many numbers earlier steps drew.
    pub fn derive(seed: u64, stream: u64, step: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let a = r.next_u64();
        Rng(a ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A tensor of normal draws (Box–Muller) for tests: seeded, unlike
    /// candle's CPU `randn`, so each run checks the same numbers.
    #[cfg(test)]
    pub(crate) fn normal(
        &mut self,
        mean: f32,
        std: f32,
        shape: impl Into<candle_core::Shape>,
    ) -> candle_core::Tensor {
        let shape = shape.into();
        let values: Vec<f32> = (0..shape.elem_count())
            .map(|_| {
                let u1 = 1.0 - self.next_f32(); // in (0, 1]: ln is finite
                let u2 = self.next_f32();
                mean + std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect();
        candle_core::Tensor::from_vec(values, shape, &candle_core::Device::Cpu)
            .expect("the shape matches the values")
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}
