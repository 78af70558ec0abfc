//! `LayerNorm` with affine parameters: `y = γ ⊙ x̂ + β`, `x̂ = (x − mean) · rstd` per row.
//!
//! Invariant: `gamma` and `beta` are `[1, width]`. The arithmetic is the backend's
//! ([`backend::layer_norm`](crate::backend::layer_norm)): the same row always normalises to the
//! same bits. The backward needs `x̂` and `rstd` (not `x`); `W` needs `x̂` and `dy`.

use crate::backend;
use crate::error::{Error, Result};
use crate::layers::{held_frozen, keep_if, trained, Ctx, Layer, Saved, WNeeds};
use crate::tensor::Tensor;

/// Added to the variance before the square root.
pub const NORM_EPS: f32 = 1e-5;

/// Layer normalisation over the columns of each row, with learnt scale and shift.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Scale `γ`, `[1, width]`, initialised to ones.
    pub(crate) gamma: Tensor,
    /// Shift `β`, `[1, width]`, initialised to zeros.
    pub(crate) beta: Tensor,
    /// Whether `γ` and `β` are frozen (then `W` computes nothing).
    pub(crate) frozen: bool,
}

/// What the backward of a [`LayerNorm`] needs from its forward.
#[derive(Debug)]
pub struct NormStats {
    /// The normalised input `x̂`, `[batch, width]`.
    pub xhat: Tensor,
    /// `1/√(var + ε)` of each row, `[batch, 1]`.
    pub rstd: Tensor,
}

impl LayerNorm {
    /// `γ = 1`, `β = 0`.
    pub fn new(width: usize) -> LayerNorm {
        LayerNorm { gamma: Tensor::full(1, width, 1.0), beta: Tensor::zeros(1, width), frozen: false }
    }

    /// The layer with `γ` and `β` frozen.
    pub fn freeze(self) -> LayerNorm {
        LayerNorm { frozen: true, ..self }
    }

    /// Width normalised over.
    pub fn width(&self) -> usize {
        self.gamma.cols()
    }

    /// The parameters it trains, in gradient order: `γ`, `β` (none when frozen).
    pub fn params(&self) -> Vec<&Tensor> {
        trained(self.frozen, [&self.gamma, &self.beta])
    }

    /// The parameters it trains, mutable, in gradient order.
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        trained(self.frozen, [&mut self.gamma, &mut self.beta])
    }

    /// Names of the parameters it trains.
    pub fn param_names(&self) -> Vec<String> {
        trained(self.frozen, ["gamma", "beta"]).into_iter().map(String::from).collect()
    }

    /// The frozen parameters: `γ`, `β`, or none.
    pub fn frozen(&self) -> Vec<&Tensor> {
        held_frozen(self.frozen, [&self.gamma, &self.beta])
    }

    /// The frozen parameters, mutable.
    pub fn frozen_mut(&mut self) -> Vec<&mut Tensor> {
        held_frozen(self.frozen, [&mut self.gamma, &mut self.beta])
    }

    /// Names of the frozen parameters.
    pub fn frozen_names(&self) -> Vec<String> {
        held_frozen(self.frozen, ["gamma", "beta"]).into_iter().map(String::from).collect()
    }

    fn check(&self, t: &Tensor, what: &str) -> Result<()> {
        if t.cols() == self.width() {
            return Ok(());
        }
        Err(Error::Shape {
            place: format!("LayerNorm {what}"),
            reason: format!("{:?}, width {}", t.shape(), self.width()),
        })
    }

    /// The output `y` and the statistics its backward needs.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, NormStats)> {
        self.check(x, "forward")?;
        let [y, xhat, rstd] = backend::layer_norm(x, &self.gamma, &self.beta, NORM_EPS)?;
        Ok((y, NormStats { xhat, rstd }))
    }

    /// `I`: `dx = rstd · (d − mean(d) − x̂ · mean(d ⊙ x̂))` with `d = dy ⊙ γ`.
    pub fn backward_input(&self, stats: &NormStats, dy: &Tensor) -> Result<Tensor> {
        self.check(dy, "backward_input")?;
        backend::layer_norm_backward_input(&stats.xhat, &stats.rstd, &self.gamma, dy)
    }

    /// `W`: this micro-batch's `[dγ, dβ] = [Σ_rows dy ⊙ x̂, Σ_rows dy]`, in gradient order
    /// (none when frozen).
    pub fn weight_grads(&self, xhat: &Tensor, dy: &Tensor) -> Result<Vec<Tensor>> {
        if self.frozen {
            return Ok(Vec::new());
        }
        self.check(dy, "weight_grads")?;
        Ok(vec![backend::layer_norm_gamma_grad(xhat, dy)?, dy.column_sums()?])
    }
}

impl Layer for LayerNorm {
    fn kind(&self) -> &str {
        "norm"
    }
    fn input_width(&self) -> usize {
        self.width()
    }
    fn output_width(&self) -> usize {
        self.width()
    }
    fn params(&self) -> Vec<&Tensor> {
        LayerNorm::params(self)
    }
    fn params_mut(&mut self) -> Vec<&mut Tensor> {
        LayerNorm::params_mut(self)
    }
    fn param_names(&self) -> Vec<String> {
        LayerNorm::param_names(self)
    }
    fn frozen(&self) -> Vec<&Tensor> {
        LayerNorm::frozen(self)
    }
    fn frozen_mut(&mut self) -> Vec<&mut Tensor> {
        LayerNorm::frozen_mut(self)
    }
    fn frozen_names(&self) -> Vec<String> {
        LayerNorm::frozen_names(self)
    }
    fn forward(&self, x: Tensor, _ctx: &Ctx) -> Result<Tensor> {
        Ok(LayerNorm::forward(self, &x)?.0)
    }
    /// Keeps `x̂` and `rstd`.
    fn forward_saving(&self, x: Tensor, _ctx: &Ctx) -> Result<(Tensor, Saved)> {
        let (y, NormStats { xhat, rstd }) = LayerNorm::forward(self, &x)?;
        Ok((y, Saved(vec![xhat, rstd])))
    }
    fn backward_input(&self, saved: Saved, dy: Tensor, _ctx: &Ctx) -> Result<(Tensor, WNeeds)> {
        let [xhat, rstd] = saved.take(self.kind())?;
        let stats = NormStats { xhat, rstd };
        let dx = LayerNorm::backward_input(self, &stats, &dy)?;
        let trains = !self.frozen;
        Ok((dx, WNeeds(vec![keep_if(trains, stats.xhat), keep_if(trains, dy)])))
    }
    fn weight_grads(&self, needs: &WNeeds) -> Result<Vec<Tensor>> {
        let [xhat, dy] = needs.get(self.kind())?;
        LayerNorm::weight_grads(self, xhat, dy)
    }
    /// `x̂` and `rstd`.
    fn saved_per_row(&self) -> usize {
        self.width() + 1
    }
    /// `x̂` and `dy` (nothing when frozen).
    fn w_per_row(&self) -> usize {
        if self.frozen {
            0
        } else {
            2 * self.width()
        }
    }
    /// Made of backend operations and matrix products: runs on every device.
    fn runs_on(&self, _device: crate::device::Device) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::check::{assert_close, dot, numeric_grad, probe};

    #[test]
    fn normalises_rows() {
        let n = LayerNorm::new(4);
        let (y, stats) = n.forward(&Tensor::new(1, 4, vec![1.0, 2.0, 3.0, 4.0]).unwrap()).unwrap();
        assert!(y.data().iter().sum::<f32>().abs() < 1e-6);
        let var = y.data().iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((var - 1.0).abs() < 1e-4, "{var}");
        assert_eq!(stats.rstd.shape(), [1, 1]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut n = LayerNorm::new(6);
        n.gamma = probe(1, 6, 11);
        n.beta = probe(1, 6, 12);
        let x = probe(3, 6, 13);
        let r = probe(3, 6, 14);
        let (_, stats) = n.forward(&x).unwrap();
        let dx = n.backward_input(&stats, &r).unwrap();
        let [dg, db] = <[Tensor; 2]>::try_from(n.weight_grads(&stats.xhat, &r).unwrap()).unwrap();
        let loss = |n: &LayerNorm, x: &Tensor| dot(&n.forward(x).unwrap().0, &r);
        assert_close(&dx, &numeric_grad(&x, |x| loss(&n, x)));
        assert_close(&dg, &numeric_grad(&n.gamma, |g| loss(&LayerNorm { gamma: g.clone(), ..n.clone() }, &x)));
        assert_close(&db, &numeric_grad(&n.beta, |b| loss(&LayerNorm { beta: b.clone(), ..n.clone() }, &x)));
    }
}
