//! `Block`: the residual MLP block `x + Dropout(Linear₂(GELU(Linear₁(LayerNorm(x)))))`.
//!
//! ```text
//!  x ─┬─ LayerNorm ─ y ─ Linear₁ ─ h ─ GELU ─ a ─ Linear₂ ─ z ─ Dropout ─(+)─ out
//!     └──────────────────────────── skip ───────────────────────────────┘
//! ```
//!
//! Invariant: the forward keeps exactly `x̂`, `rstd`, `y`, `h`, `a` (the dropout mask is
//! regenerated, never stored), and `I` keeps exactly each parameterised sub-layer's input and
//! output gradient — of the sub-layers that train: a frozen part (LoRA) keeps an empty tensor in
//! place of what only its `W` would read (`y` and `a` in the forward; `x̂, dy`, `y, dh` or
//! `a, dz` for `W`). The byte predictions from shapes (`layer_spec.rs`, and `lora.rs` under
//! LoRA) count these same tensors.

use crate::backend::{gelu, gelu_backward};
use crate::error::Result;
use crate::layers::{keep_if, prefixed, Adapter, Ctx, Dropout, Layer, LayerNorm, Linear, NormStats, Saved, WNeeds};
use crate::rng::Stream;
use crate::tensor::Tensor;

/// A pre-norm residual MLP block of width `width` with inner width `ffn`.
#[derive(Debug, Clone)]
pub struct Block {
    pub(crate) norm: LayerNorm,
    pub(crate) fc1: Linear,
    pub(crate) fc2: Linear,
    pub(crate) dropout: Dropout,
}

impl Block {
    /// A block drawing its weights from `stream`; the second linear's weights are scaled by
    /// `residual_gain` so a deep stack of blocks starts near the identity.
    pub fn new(width: usize, ffn: usize, dropout: Dropout, stream: Stream, residual_gain: f32) -> Block {
        let s1 = Stream::new(&[stream.bits(0), 1]);
        let s2 = Stream::new(&[stream.bits(0), 2]);
        Block {
            norm: LayerNorm::new(width),
            fc1: Linear::new(width, ffn, s1, 1.0),
            fc2: Linear::new(ffn, width, s2, residual_gain),
            dropout,
        }
    }

    /// The block with its two products in `precision`.
    pub fn with_precision(self, precision: crate::precision::Precision) -> Block {
        Block { fc1: self.fc1.with_precision(precision), fc2: self.fc2.with_precision(precision), ..self }
    }

    /// The block with every parameter frozen, its two `Linear`s training the adapters given
    /// (LoRA); an error if an adapter's widths are not its layer's.
    pub fn freeze(self, fc1: Option<Adapter>, fc2: Option<Adapter>) -> Result<Block> {
        Ok(Block { norm: self.norm.freeze(), fc1: self.fc1.freeze(fc1)?, fc2: self.fc2.freeze(fc2)?, ..self })
    }

    /// The residual width.
    pub fn width(&self) -> usize {
        self.norm.width()
    }
}

impl Layer for Block {
    fn kind(&self) -> &str {
        "block"
    }
    fn input_width(&self) -> usize {
        self.width()
    }
    fn output_width(&self) -> usize {
        self.width()
    }
    /// `γ, β, W₁, b₁, W₂, b₂` — of the sub-layers that train (under LoRA, the adapters').
    fn params(&self) -> Vec<&Tensor> {
        let mut v = self.norm.params();
        v.extend(self.fc1.params());
        v.extend(self.fc2.params());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v = self.norm.params_mut();
        v.extend(self.fc1.params_mut());
        v.extend(self.fc2.params_mut());
        v
    }
    fn param_names(&self) -> Vec<String> {
        let mut v = prefixed("norm", self.norm.param_names());
        v.extend(prefixed("fc1", self.fc1.param_names()));
        v.extend(prefixed("fc2", self.fc2.param_names()));
        v
    }
    fn frozen(&self) -> Vec<&Tensor> {
        let mut v = self.norm.frozen();
        v.extend(self.fc1.frozen());
        v.extend(self.fc2.frozen());
        v
    }
    fn frozen_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v = self.norm.frozen_mut();
        v.extend(self.fc1.frozen_mut());
        v.extend(self.fc2.frozen_mut());
        v
    }
    fn frozen_names(&self) -> Vec<String> {
        let mut v = prefixed("norm", self.norm.frozen_names());
        v.extend(prefixed("fc1", self.fc1.frozen_names()));
        v.extend(prefixed("fc2", self.fc2.frozen_names()));
        v
    }
    /// Keeps `x̂`, `rstd`, `y`, `h`, `a` (`y`, `a` only for a `Linear` that trains). Consumes
    /// `x`: the skip adds it into the branch's buffer.
    fn forward_saving(&self, x: Tensor, ctx: &Ctx) -> Result<(Tensor, Saved)> {
        let (y, NormStats { xhat, rstd }) = self.norm.forward(&x)?;
        let h = self.fc1.forward(&y)?;
        let a = gelu(&h)?;
        let mut out = self.fc2.forward(&a)?;
        self.dropout.apply(&mut out, ctx)?;
        out.add_assign(&x)?;
        // `y` and `a` are read only by the `W`s of the two `Linear`s.
        let (y, a) = (keep_if(self.fc1.trains(), y), keep_if(self.fc2.trains(), a));
        Ok((out, Saved(vec![xhat, rstd, y, h, a])))
    }
    /// Keeps each training sub-layer's input and output gradient: `x̂, dy, y, dh, a, dz`.
    fn backward_input(&self, saved: Saved, dout: Tensor, ctx: &Ctx) -> Result<(Tensor, WNeeds)> {
        let [xhat, rstd, y, h, a] = saved.take(self.kind())?;
        let mut dz = dout.try_clone()?;
        self.dropout.apply(&mut dz, ctx)?;
        let da = self.fc2.backward_input(&dz)?;
        let dh = gelu_backward(&h, da)?;
        let dy = self.fc1.backward_input(&dh)?;
        let norm = NormStats { xhat, rstd };
        let mut dx = self.norm.backward_input(&norm, &dy)?;
        dx.add_assign(&dout)?;
        let (n, f1, f2) = (!self.norm.frozen, self.fc1.trains(), self.fc2.trains());
        let needs = [keep_if(n, norm.xhat), keep_if(n, dy), y, keep_if(f1, dh), a, keep_if(f2, dz)];
        Ok((dx, WNeeds(needs.into())))
    }
    fn weight_grads(&self, needs: &WNeeds) -> Result<Vec<Tensor>> {
        let [xhat, dy, y, dh, a, dz] = needs.get(self.kind())?;
        let mut g = self.norm.weight_grads(xhat, dy)?;
        g.extend(self.fc1.weight_grads(y, dh)?);
        g.extend(self.fc2.weight_grads(a, dz)?);
        Ok(g)
    }
    /// `x̂` and `y` (width each), `rstd` (1), `h` and `GELU(h)` (ffn each) — `y` and
    /// `GELU(h)` only for a `Linear` that trains.
    fn saved_per_row(&self) -> usize {
        let (h, f) = (self.width(), self.fc1.output_width());
        h + 1 + f + if self.fc1.trains() { h } else { 0 } + if self.fc2.trains() { f } else { 0 }
    }
    /// `x̂`, `dy`, `y`, `dz` (width each), `dh` and `a` (ffn each) — each pair only for a
    /// sub-layer that trains.
    fn w_per_row(&self) -> usize {
        let (h, f) = (self.width(), self.fc1.output_width());
        let pair = |trains: bool, floats: usize| if trains { floats } else { 0 };
        pair(!self.norm.frozen, 2 * h) + pair(self.fc1.trains(), h + f) + pair(self.fc2.trains(), f + h)
    }
    fn linear_maps(&self) -> Vec<(usize, usize)> {
        let mut maps = Layer::linear_maps(&self.fc1);
        maps.extend(Layer::linear_maps(&self.fc2));
        maps
    }
    fn weight_products(&self, rows: usize) -> Vec<crate::matmul::GemmShape> {
        let mut products = Layer::weight_products(&self.fc1, rows);
        products.extend(Layer::weight_products(&self.fc2, rows));
        products
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

    fn block(rate: f32) -> Block {
        let mut b = Block::new(6, 10, Dropout { rate }, Stream::new(&[5]), 0.7);
        b.norm.gamma = probe(1, 6, 30);
        b.norm.beta = probe(1, 6, 31);
        b.fc1.bias = probe(1, 10, 32);
        b
    }

    #[test]
    fn gradients_match_finite_differences_with_dropout() {
        let b = block(0.3);
        let ctx = Ctx::new(9, 2, 1, 4);
        let x = probe(3, 6, 33);
        let r = probe(3, 6, 34);
        let (_, saved) = b.forward_saving(x.clone(), &ctx).unwrap();
        let saved_bytes = saved.bytes();
        assert_eq!(saved_bytes, 4 * (3 * 6 + 3 + 3 * 6 + 3 * 10 + 3 * 10));
        let (dx, needs) = b.backward_input(saved, r.clone(), &ctx).unwrap();
        assert_eq!(needs.bytes(), 4 * (3 * 6 * 2 + 3 * 6 + 3 * 10 + 3 * 10 + 3 * 6));
        let grads = b.weight_grads(&needs).unwrap();
        let loss = |b: &Block, x: &Tensor| dot(&b.forward(x.clone(), &ctx).unwrap(), &r);
        assert_close(&dx, &numeric_grad(&x, |x| loss(&b, x)));
        for (k, g) in grads.iter().enumerate() {
            let numeric = numeric_grad(b.params()[k], |p| {
                let mut b2 = b.clone();
                *b2.params_mut()[k] = p.clone();
                loss(&b2, &x)
            });
            assert_close(g, &numeric);
        }
    }
}
