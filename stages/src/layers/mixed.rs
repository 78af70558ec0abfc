//! [`MixedPrecision`]: a layer whose parameters and whatever it keeps between ops are stored in a
//! 16-bit format, around any layer that computes in `f32` — how a model trains under
//! `mixed-bf16` or `mixed-f16` (see `precision.rs`).
//!
//! Invariants: at rest the wrapper owns the only copy of the parameters, trained and frozen,
//! stored in its format (the inner layer's own parameter tensors are empty). Each op widens the parameters and its
//! 16-bit inputs into `f32` temporaries, runs the inner layer, and stores what it returns in the
//! format, rounded to nearest even: the output (what the next layer or stage receives), what the
//! forward keeps ([`Saved`]), the input gradient, what `I` keeps for `W` ([`WNeeds`]) and the
//! parameter gradients. Exact values the inner layer keeps — its leading
//! [`exact_per_row`](Layer::exact_per_row) columns of [`Saved`] and [`WNeeds`], token ids — are
//! kept as they are. Rounding happens at the same points whatever the schedule or recompute
//! policy (each layer's output and state, each time it is made), so the bitwise-gradient
//! contract holds in 16-bit storage as in `f32`.

use std::sync::Mutex;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::layers::{Ctx, Layer, Saved, WNeeds};
use crate::matmul::GemmShape;
use crate::precision::Format;
use crate::tensor::Tensor;

/// A layer stored in a 16-bit format: see the module docs.
#[derive(Debug)]
pub struct MixedPrecision {
    /// The layer, with empty parameter tensors at rest.
    inner: Mutex<Box<dyn Layer>>,
    /// Its parameters, stored in `format`.
    params: Vec<Tensor>,
    /// Its frozen parameters, stored in `format`.
    frozen: Vec<Tensor>,
    format: Format,
    /// What the inner layer says of itself, read once.
    kind: String,
    widths: (usize, usize),
    names: Vec<String>,
    frozen_names: Vec<String>,
    per_row: [usize; 4],
    maps: Vec<(usize, usize)>,
    /// `W`'s products for 0 rows: every width is at least 1, so the zero dimensions are the rows.
    weight_products: Vec<GemmShape>,
}

impl MixedPrecision {
    /// `layer` stored in `format`: its parameters are rounded to it now. An error for parameters
    /// on a GPU (16-bit storage is on the host).
    pub fn new(mut layer: Box<dyn Layer>, format: Format) -> Result<MixedPrecision> {
        // What the layer says of itself is read while it still holds its parameters.
        let per_row = [layer.saved_per_row(), layer.w_per_row(), layer.selective_per_row(), layer.exact_per_row()];
        let (kind, widths) = (layer.kind().to_string(), (layer.input_width(), layer.output_width()));
        let (names, frozen_names, maps) = (layer.param_names(), layer.frozen_names(), layer.linear_maps());
        let weight_products = layer.weight_products(0);
        let take = |all: Vec<&mut Tensor>| -> Result<Vec<Tensor>> {
            all.into_iter().map(|p| std::mem::replace(p, Tensor::zeros(0, 0)).into_stored(format)).collect()
        };
        let params = take(layer.params_mut())?;
        let frozen = take(layer.frozen_mut())?;
        Ok(MixedPrecision {
            kind,
            widths,
            names,
            frozen_names,
            maps,
            weight_products,
            per_row,
            params,
            frozen,
            format,
            inner: Mutex::new(layer),
        })
    }

    /// Runs `op` on the inner layer with its parameters widened to `f32`; they are dropped again
    /// after it.
    fn with_inner<T>(&self, op: impl FnOnce(&dyn Layer) -> Result<T>) -> Result<T> {
        let mut inner = self.inner.lock().map_err(|_| Error::Order {
            place: format!("{} layer ({} storage)", self.kind, self.format),
            reason: "an earlier op on this layer panicked; rebuild the stage".into(),
        })?;
        for (p, stored) in inner.params_mut().into_iter().zip(&self.params) {
            *p = stored.widened()?;
        }
        for (p, stored) in inner.frozen_mut().into_iter().zip(&self.frozen) {
            *p = stored.widened()?;
        }
        let out = op(inner.as_ref());
        for p in inner.params_mut() {
            *p = Tensor::zeros(0, 0);
        }
        for p in inner.frozen_mut() {
            *p = Tensor::zeros(0, 0);
        }
        out
    }

    /// `t` stored in the format.
    fn store(&self, t: Tensor) -> Result<Tensor> {
        t.into_stored(self.format)
    }

    /// What the inner layer keeps, stored: all but its leading exact columns.
    fn store_kept(&self, kept: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let mut exact = self.per_row[3];
        kept.into_iter()
            .map(|t| {
                if exact > 0 {
                    exact = exact.saturating_sub(t.cols());
                    Ok(t)
                } else {
                    self.store(t)
                }
            })
            .collect()
    }
}

/// `f32` copies of stored tensors (others as they are).
fn widened(kept: Vec<Tensor>) -> Result<Vec<Tensor>> {
    kept.into_iter().map(Tensor::into_widened).collect()
}

impl Layer for MixedPrecision {
    fn kind(&self) -> &str {
        &self.kind
    }
    fn input_width(&self) -> usize {
        self.widths.0
    }
    fn output_width(&self) -> usize {
        self.widths.1
    }
    fn params(&self) -> Vec<&Tensor> {
        self.params.iter().collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Tensor> {
        self.params.iter_mut().collect()
    }
    fn param_names(&self) -> Vec<String> {
        self.names.clone()
    }
    fn frozen(&self) -> Vec<&Tensor> {
        self.frozen.iter().collect()
    }
    fn frozen_mut(&mut self) -> Vec<&mut Tensor> {
        self.frozen.iter_mut().collect()
    }
    fn frozen_names(&self) -> Vec<String> {
        self.frozen_names.clone()
    }
    fn forward_saving(&self, x: Tensor, ctx: &Ctx) -> Result<(Tensor, Saved)> {
        let (y, saved) = self.with_inner(|l| l.forward_saving(x.into_widened()?, ctx))?;
        Ok((self.store(y)?, Saved(self.store_kept(saved.0)?)))
    }
    fn forward(&self, x: Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.store(self.with_inner(|l| l.forward(x.into_widened()?, ctx))?)
    }
    fn forward_selective(&self, x: Tensor, ctx: &Ctx) -> Result<(Tensor, Saved)> {
        let (y, kept) = self.with_inner(|l| l.forward_selective(x.into_widened()?, ctx))?;
        Ok((self.store(y)?, Saved(self.store_kept(kept.0)?)))
    }
    fn restore(&self, kept: Saved, ctx: &Ctx) -> Result<Saved> {
        let saved = self.with_inner(|l| l.restore(Saved(widened(kept.0)?), ctx))?;
        Ok(Saved(self.store_kept(saved.0)?))
    }
    fn backward_input(&self, saved: Saved, dy: Tensor, ctx: &Ctx) -> Result<(Tensor, WNeeds)> {
        let (dx, needs) = self.with_inner(|l| l.backward_input(Saved(widened(saved.0)?), dy.into_widened()?, ctx))?;
        Ok((self.store(dx)?, WNeeds(self.store_kept(needs.0)?)))
    }
    fn weight_grads(&self, needs: &WNeeds) -> Result<Vec<Tensor>> {
        let wide = WNeeds(needs.0.iter().map(Tensor::widened).collect::<Result<_>>()?);
        let grads = self.with_inner(|l| l.weight_grads(&wide))?;
        grads.into_iter().map(|g| self.store(g)).collect()
    }
    fn saved_per_row(&self) -> usize {
        self.per_row[0]
    }
    fn w_per_row(&self) -> usize {
        self.per_row[1]
    }
    fn selective_per_row(&self) -> usize {
        self.per_row[2]
    }
    fn exact_per_row(&self) -> usize {
        self.per_row[3]
    }
    fn storage(&self) -> Option<Format> {
        Some(self.format)
    }
    fn linear_maps(&self) -> Vec<(usize, usize)> {
        self.maps.clone()
    }
    fn weight_products(&self, rows: usize) -> Vec<GemmShape> {
        let or_rows = |d: usize| if d == 0 { rows } else { d };
        let at = |g: &GemmShape| GemmShape { m: or_rows(g.m), k: or_rows(g.k), n: or_rows(g.n), ..*g };
        self.weight_products.iter().map(at).collect()
    }
    fn activation_products(&self, rows: usize) -> [Vec<GemmShape>; 2] {
        match self.inner.lock() {
            Ok(inner) => inner.activation_products(rows),
            Err(_) => [Vec::new(), Vec::new()],
        }
    }
    /// The host only: 16-bit storage is host memory.
    fn runs_on(&self, device: Device) -> bool {
        device == Device::Cpu
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Embedding, Linear};
    use crate::rng::Stream;

    #[test]
    fn stores_parameters_outputs_and_state_in_16_bits_and_keeps_ids_exact() {
        let inner = Linear::new(3, 2, Stream::new(&[1]), 1.0);
        let want = inner.weight.values().unwrap();
        let l = MixedPrecision::new(Box::new(inner), Format::Bf16).unwrap();
        let w = l.params()[0].values().unwrap();
        assert!(w.iter().zip(&want).all(|(a, b)| *a == crate::Precision::MixedBf16.round(*b)));
        assert_eq!(l.params()[0].bytes(), 12, "3·2 weights at 2 bytes");
        let ctx = Ctx::new(0, 0, 0, 0);
        let (y, saved) = l.forward_saving(Tensor::from_fn(4, 3, |r, c| (r + c) as f32 / 3.0), &ctx).unwrap();
        assert_eq!((y.bytes(), saved.bytes()), (16, 24));
        let (dx, needs) = l.backward_input(saved, Tensor::full(4, 2, 0.25), &ctx).unwrap();
        assert_eq!((dx.bytes(), needs.bytes()), (24, 24 + 16));
        let g = l.weight_grads(&needs).unwrap();
        assert_eq!(g.iter().map(Tensor::bytes).collect::<Vec<_>>(), [12, 4]);
        // Token ids stay f32 (exact past 256), the rest is stored.
        let e = Embedding::new(300, 4, 2, Stream::new(&[2])).unwrap();
        let e = MixedPrecision::new(Box::new(e), Format::Bf16).unwrap();
        let ids = Tensor::new(2, 1, vec![257.0, 3.0]).unwrap();
        let (y, saved) = e.forward_saving(ids, &ctx).unwrap();
        assert_eq!(saved.0[0].values().unwrap(), [257.0, 3.0]);
        assert_eq!((y.bytes(), saved.bytes()), (16, 8));
        let (_, needs) = e.backward_input(saved, y, &ctx).unwrap();
        assert_eq!(needs.bytes(), 8 + 16);
        assert!(!e.runs_on(Device::Cuda(0)));
    }
}
