//! Test helpers: deterministic probe tensors and central finite differences.
//!
//! Invariant: everything here is deterministic, so a failing gradient check fails the same way
//! every run. Differences are taken in `f32` compute with `f64` sums, at step [`EPS`].

pub use crate::gradcheck::probe;
use crate::tensor::Tensor;

/// Step of the central differences.
pub const EPS: f32 = 1e-2;

/// `Σ a ⊙ b` in `f64`: a scalar loss whose gradient with respect to `a` is `b`.
pub fn dot(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.data().iter().zip(b.data()).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// The central-difference gradient of `f` at `x`.
pub fn numeric_grad(x: &Tensor, mut f: impl FnMut(&Tensor) -> f64) -> Tensor {
    let mut g = Tensor::zeros(x.rows(), x.cols());
    for k in 0..x.len() {
        let mut plus = x.clone();
        plus.data_mut()[k] += EPS;
        let mut minus = x.clone();
        minus.data_mut()[k] -= EPS;
        g.data_mut()[k] = ((f(&plus) - f(&minus)) / (2.0 * EPS as f64)) as f32;
    }
    g
}

/// `max |analytic − numeric| / max |numeric|`: the relative error of a gradient check.
pub fn relative_error(analytic: &Tensor, numeric: &Tensor) -> f64 {
    let diff = analytic.data().iter().zip(numeric.data()).map(|(a, n)| (a - n).abs() as f64).fold(0.0, f64::max);
    let scale = numeric.data().iter().map(|n| n.abs() as f64).fold(0.0, f64::max);
    diff / scale.max(f64::MIN_POSITIVE)
}

/// Panics unless `analytic` and `numeric` agree to `f32` finite-difference accuracy.
pub fn assert_close(analytic: &Tensor, numeric: &Tensor) {
    assert_eq!(analytic.shape(), numeric.shape());
    for (k, (a, n)) in analytic.data().iter().zip(numeric.data()).enumerate() {
        assert!((a - n).abs() <= 3e-3 + 1e-2 * n.abs(), "element {k}: analytic {a}, numeric {n}");
    }
}
