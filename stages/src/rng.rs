//! Counter-based random numbers: every draw is a pure function of a key and an index.
//!
//! A [`Stream`] is keyed by a tuple of integers (for dropout: seed, step, global layer index,
//! micro-batch) and its `i`-th draw is a SplitMix64-style finaliser applied to
//! `key + (i + 1)·γ`. Nothing is stateful, so a recomputed forward, a different stage
//! partition, or a different thread reproduces every mask and every initial weight bit for bit.

/// The golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Domain tags, so the streams of different uses never share a key.
pub(crate) mod tag {
    /// The generated text corpus.
    pub const CORPUS: u64 = 0xC0B5;
    /// Dropout masks.
    pub const DROPOUT: u64 = 0xD0;
    /// Initial parameters.
    pub const INIT: u64 = 0x1417;
    /// Initial LoRA adapters.
    pub const LORA: u64 = 0x10BA;
    /// Synthetic task inputs.
    pub const TASK_INPUT: u64 = 0x7A5C;
    /// The synthetic task's teacher network.
    pub const TEACHER: u64 = 0x7EAC;
}

/// The SplitMix64 output function: a bijective 64-bit mix with good avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A keyed stream of random draws, addressed by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    key: u64,
}

impl Stream {
    /// The stream keyed by `parts` (order matters).
    pub fn new(parts: &[u64]) -> Stream {
        let key = parts.iter().fold(GAMMA, |k, &p| mix64(k ^ mix64(p.wrapping_add(GAMMA))));
        Stream { key }
    }

    /// The stream's 64-bit key: draw `i` is `mix64(key + (i + 1)·γ)` (what a device kernel is
    /// given to draw the same numbers).
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Draw `i` as 64 random bits.
    #[inline]
    pub fn bits(&self, i: u64) -> u64 {
        mix64(self.key.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA)))
    }

    /// Draw `i` as a uniform `f32` in `[0, 1)` (24 random bits).
    #[inline]
    pub fn uniform(&self, i: u64) -> f32 {
        self.draw24(i) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Draw `i`'s 24 random bits, the integer `x` of [`uniform`](Stream::uniform)`(i) = x·2⁻²⁴`.
    #[inline]
    pub fn draw24(&self, i: u64) -> u64 {
        self.bits(i) >> 40
    }

    /// The least 24-bit draw whose [`uniform`](Stream::uniform) is at least `rate`:
    /// `uniform(i) >= rate` exactly when `draw24(i) >= at_least(rate)`, so a dropout mask can be
    /// decided in integers (`x` and `x·2⁻²⁴` are exact in `f32`, so the test is `x ≥ rate·2²⁴`,
    /// rounded up; a NaN rate keeps nothing, as the float test does).
    pub fn at_least(rate: f32) -> u64 {
        if rate.is_nan() {
            return u64::MAX;
        }
        // ceil of a finite f64 ≥ 0 to u64 is exact below 2⁵³ and saturates above; ≤ 0 gives 0.
        (f64::from(rate) * (1u64 << 24) as f64).ceil().max(0.0) as u64
    }

    /// Draw `i` as a standard normal `f32` (Box–Muller on draws `2i` and `2i+1`, in `f64`).
    pub fn normal(&self, i: u64) -> f32 {
        let u1 = ((self.bits(2 * i) >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.bits(2 * i + 1) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_integer_test_of_a_draw_is_the_float_one() {
        let s = Stream::new(&[7, 7]);
        let step = 1.0 / (1u64 << 24) as f32;
        let mut rates = vec![0.0, -0.5, 0.1, 0.3, 0.5, 0.9, 1.0, 1.5, f32::INFINITY, f32::NAN, step, 3.0 * step];
        rates.extend((0..64).map(|k| s.uniform(1 << 20 | k)));
        rates.extend((0..64).map(|k| s.uniform(1 << 21 | k) + step / 2.0));
        for rate in rates {
            let at_least = Stream::at_least(rate);
            for i in 0..4096 {
                assert_eq!(s.uniform(i) >= rate, s.draw24(i) >= at_least, "rate {rate}, draw {i}");
            }
            // Draws exactly at the rate are kept.
            if rate.is_finite() && (0.0..1.0).contains(&rate) && (rate / step).fract() == 0.0 {
                assert_eq!(at_least as f32 * step, rate);
            }
        }
    }

    #[test]
    fn draws_are_pure_functions_of_key_and_index() {
        let a = Stream::new(&[1, 2, 3]);
        assert_eq!(a, Stream::new(&[1, 2, 3]));
        assert_eq!(a.bits(17), Stream::new(&[1, 2, 3]).bits(17));
        assert_ne!(a.bits(17), a.bits(18));
        assert_ne!(a, Stream::new(&[1, 3, 2]), "order of the key parts matters");
        assert_ne!(Stream::new(&[0, 1]), Stream::new(&[1, 0]));
    }

    #[test]
    fn uniform_and_normal_have_the_right_moments() {
        let s = Stream::new(&[tag::INIT, 9]);
        let n = 20_000;
        let u: Vec<f32> = (0..n).map(|i| s.uniform(i)).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = u.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let z: Vec<f64> = (0..n).map(|i| s.normal(i) as f64).collect();
        let m = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {m}, var {var}");
    }
}
