//! GELU, tanh approximation: `gelu(x) = ½·x·(1 + tanh(z))`, `z = √(2/π)·(x + 0.044715·x³)`.
//!
//! The tanh form (Hendrycks & Gimpel's approximation, used by GPT-2) differs from the exact erf
//! form by under 1e-3. We evaluate it through the identity `½(1 + tanh z) = σ(2z) =
//! 1/(1 + e^(−2z))`, so `gelu(x) = x·σ(2z)` and `gelu'(x) = σ + 2x·σ(1 − σ)·z'(x)`, with an `exp`
//! of our own ([`exp_approx`], pure `f32` arithmetic, relative error ≈ 1e-7) instead of libm's
//! `tanhf`, which took a third of a training step. In `f64` (gradient checks) the same code runs
//! with libm's `exp` and the constants to `f64` precision ([`Element`]). Invariants: the derivative is the exact
//! derivative of the function computed here (finite differences agree with it), and every
//! element is computed by the same operations in the same order, so results are deterministic
//! whether or not the compiler vectorises the loop. GELU has no parameters, so it has no `W`;
//! its backward needs its input.

use crate::element::Element;
use crate::tensor::Tensor;

/// `√(2/π)` in `f32`.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// `√(2/π)` in `f64`.
const SQRT_2_OVER_PI_F64: f64 = 0.797_884_560_802_865_4;
const CUBIC: f32 = 0.044_715;
/// The cubic coefficient in `f64`.
const CUBIC_F64: f64 = 0.044_715;

/// `e^x` by range reduction `x = n·ln 2 + r`, `|r| ≤ ½ ln 2`, and the degree-7 Taylor polynomial
/// of `e^r`; relative error about 1e-7 on `[−87, 88]`, inputs clamped to that range. No libm
/// call and no branch, so loops over it vectorise.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2^11.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5·2^23 rounds an f32 of magnitude < 2^22 to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p * r + c;
    }
    // 2^n built from `t`'s bits: `t` has `ROUND`'s exponent and `n` (|n| ≤ 127) added to its
    // significand, so the integer difference of the bits is `n` — integer operations only (a
    // float-to-int conversion `n as i32` saturates, which kept the loops from vectorising).
    let biased = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    p * f32::from_bits(biased << 23)
}

/// `√(2/π)` in `E`'s precision.
#[inline(always)]
fn sqrt_2_over_pi<E: Element>() -> E {
    E::constant(SQRT_2_OVER_PI, SQRT_2_OVER_PI_F64)
}

/// The cubic coefficient in `E`'s precision.
#[inline(always)]
fn cubic<E: Element>() -> E {
    E::constant(CUBIC, CUBIC_F64)
}

/// `σ(2z(x))`, i.e. `½(1 + tanh z)`.
#[inline(always)]
fn gate<E: Element>(x: E) -> E {
    let z = sqrt_2_over_pi::<E>() * (x + cubic::<E>() * x * x * x);
    E::ONE / (E::ONE + (E::from_f32(-2.0) * z).exp())
}

/// `gelu'(x)` from the gate `s = gate(x)`.
#[inline(always)]
fn slope<E: Element>(v: E, s: E) -> E {
    let dz = sqrt_2_over_pi::<E>() * (E::ONE + E::from_f32(3.0) * cubic::<E>() * v * v);
    s + E::from_f32(2.0) * v * s * (E::ONE - s) * dz
}

/// `gelu` of every element of a host tensor of `E`.
pub(crate) fn forward<E: Element>(x: &Tensor) -> Tensor {
    let mut y = Tensor::scratch_of::<E>(x.rows(), x.cols());
    let (out, input) = (y.host_of_mut::<E>(), x.host_of::<E>());
    super::wide::run(|| {
        for (o, &v) in out.iter_mut().zip(input) {
            *o = v * gate(v);
        }
    });
    y
}

/// `dy ⊙= gelu'(x)` on host tensors of `E` of one shape.
pub(crate) fn backward<E: Element>(x: &Tensor, dy: &mut Tensor) {
    let (grad, input) = (dy.host_of_mut::<E>(), x.host_of::<E>());
    super::wide::run(|| {
        for (g, &v) in grad.iter_mut().zip(input) {
            *g *= slope(v, gate(v));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{gelu, gelu_backward};
    use crate::layers::check::{assert_close, dot, numeric_grad, probe};

    #[test]
    fn the_wide_build_gives_the_baseline_bits() {
        // `forward` and `backward` run their loops through `wide::run` (AVX2 where the CPU has
        // it); the same arithmetic outside it, in the baseline build, must give the same bits.
        let x = Tensor::from_fn(37, 29, |r, c| ((r * 29 + c) as f32 - 500.0) / 97.0);
        let dy = Tensor::from_fn(37, 29, |r, c| ((r + 3 * c) % 11) as f32 - 5.0);
        let y = forward::<f32>(&x);
        let mut g = dy.clone();
        backward::<f32>(&x, &mut g);
        for (k, &v) in x.data().iter().enumerate() {
            let s: f32 = gate(v);
            let dz = SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * v * v);
            assert_eq!(y.data()[k].to_bits(), (v * s).to_bits(), "forward, element {k}");
            let want = dy.data()[k] * (s + 2.0 * v * s * (1.0 - s) * dz);
            assert_eq!(g.data()[k].to_bits(), want.to_bits(), "backward, element {k}");
        }
    }

    #[test]
    fn the_exponent_from_the_rounding_bits_is_the_converted_integer() {
        // 2^n taken from the rounded value's bits equals 2^n from the float-to-int conversion,
        // for every n the clamp allows and for inputs past both ends of it.
        let by_conversion = |x: f32| {
            let x = x.clamp(-87.0, 88.0);
            let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
            let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
            let mut p = 1.0 / 5040.0;
            for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
                p = p * r + c;
            }
            p * f32::from_bits(((n as i32 + 127) as u32) << 23)
        };
        let mut x = -200.0f32;
        while x < 200.0 {
            assert_eq!(exp_approx(x).to_bits(), by_conversion(x).to_bits(), "x = {x}");
            x += 0.0137;
        }
        for x in [-87.0, 88.0, -86.99, 87.99, 0.0, -0.0, f32::MIN, f32::MAX, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]
        {
            assert_eq!(exp_approx(x).to_bits(), by_conversion(x).to_bits(), "x = {x}");
        }
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        for k in -8700..=8800 {
            let x = k as f32 / 100.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp_approx(x) as f64) - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_approx(0.0), 1.0);
        assert!(exp_approx(-1000.0) > 0.0 && exp_approx(1000.0).is_finite());
    }

    #[test]
    fn matches_the_tanh_formula() {
        for k in -800..=800 {
            let x = k as f64 / 100.0;
            let z = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            let want = 0.5 * x * (1.0 + z.tanh());
            let got = gelu(&Tensor::scalar(x as f32)).unwrap().data()[0] as f64;
            assert!((got - want).abs() < 1e-6 * (1.0 + want.abs()), "gelu({x}) = {got}, want {want}");
        }
        assert_eq!(gelu(&Tensor::scalar(0.0)).unwrap().data()[0], 0.0);
        assert!(gelu(&Tensor::scalar(-30.0)).unwrap().data()[0].abs() < 1e-20);
        assert_eq!(gelu(&Tensor::scalar(30.0)).unwrap().data()[0], 30.0);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let x = probe(4, 5, 21);
        let x = Tensor::from_fn(4, 5, |r, c| 3.0 * x.get(r, c).unwrap());
        let r = probe(4, 5, 22);
        let dx = gelu_backward(&x, r.clone()).unwrap();
        assert_close(&dx, &numeric_grad(&x, |x| dot(&gelu(x).unwrap(), &r)));
    }
}
