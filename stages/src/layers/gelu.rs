//! GELU, tanh approximation: `gelu(x) = ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
//!
//! The tanh form (Hendrycks & Gimpel's approximation, used by GPT-2) differs from the exact
//! erf form by under 1e-3 and needs only `tanh`. Invariant: the derivative below is the exact
//! derivative of this approximation (not of the erf form), so finite differences agree with it.
//! GELU has no parameters, so it has no `W`; its backward needs its input.

use crate::error::Result;
use crate::tensor::Tensor;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const CUBIC: f32 = 0.044_715;

fn inner(x: f32) -> f32 {
    SQRT_2_OVER_PI * (x + CUBIC * x * x * x)
}

/// `gelu` of every element.
pub fn gelu(x: &Tensor) -> Tensor {
    let mut y = Tensor::scratch(x.rows(), x.cols());
    for (o, &v) in y.data_mut().iter_mut().zip(x.data()) {
        *o = 0.5 * v * (1.0 + inner(v).tanh());
    }
    y
}

/// The input gradient `dx = gelu'(x) ⊙ dy`, written over `dy`'s buffer.
pub fn gelu_backward(x: &Tensor, mut dy: Tensor) -> Result<Tensor> {
    x.check_same(&dy, "GELU backward (x vs dy)")?;
    for (g, &v) in dy.data_mut().iter_mut().zip(x.data()) {
        let t = inner(v).tanh();
        let slope = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * v * v);
        *g *= slope;
    }
    Ok(dy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::check::{assert_close, dot, numeric_grad, probe};

    #[test]
    fn known_values() {
        let y = gelu(&Tensor::new(1, 3, vec![0.0, 1.0, -1.0]).unwrap());
        assert_eq!(y.data()[0], 0.0);
        assert!((y.data()[1] - 0.841_192).abs() < 1e-5, "{}", y.data()[1]);
        assert!((y.data()[2] + 0.158_808).abs() < 1e-5, "{}", y.data()[2]);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let x = probe(4, 5, 21);
        let x = Tensor::from_fn(4, 5, |r, c| 3.0 * x.get(r, c).unwrap());
        let r = probe(4, 5, 22);
        let dx = gelu_backward(&x, r.clone()).unwrap();
        assert_close(&dx, &numeric_grad(&x, |x| dot(&gelu(x), &r)));
    }
}
