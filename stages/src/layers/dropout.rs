//! Inverted dropout with a counter-based mask.
//!
//! Element `k` of the micro-batch's tensor is kept iff draw `k` of the stream keyed by
//! `(seed, step, global layer index, micro-batch)` — the [`Ctx`] of the op — is at least `rate`; kept elements are scaled
//! by `1/(1 − rate)`. Invariant: the mask is a pure function of that key and `k`, so it is never
//! stored: the forward, a recomputed forward, and the backward (which applies the same mask to
//! the gradient) all regenerate it bit for bit. With `rate = 0` dropout is the identity.

use crate::backend;
use crate::error::Result;
use crate::layers::Ctx;
use crate::rng::{tag, Stream};
use crate::tensor::Tensor;

/// Dropout of a given rate; the layer it belongs to is the op's [`Ctx::layer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Probability of zeroing an element, in `[0, 1)`.
    pub rate: f32,
}

impl Dropout {
    /// The mask stream of the op `ctx`.
    pub(crate) fn stream(&self, ctx: &Ctx) -> Stream {
        Stream::new(&[tag::DROPOUT, ctx.seed, ctx.step, ctx.layer as u64, ctx.mb as u64])
    }

    /// The mask stream of dropout site `site` of the op `ctx`: a layer with several dropouts
    /// numbers them, and site 0 is [`stream`](Dropout::stream).
    pub(crate) fn stream_at(&self, ctx: &Ctx, site: u64) -> Stream {
        match site {
            0 => self.stream(ctx),
            _ => Stream::new(&[tag::DROPOUT, ctx.seed, ctx.step, ctx.layer as u64, ctx.mb as u64, site]),
        }
    }

    /// Multiplies `t` by the mask (and the `1/(1 − rate)` scale) in place. The forward applies it
    /// to the activation; the backward applies the same call to the gradient.
    pub fn apply(&self, t: &mut Tensor, ctx: &Ctx) -> Result<()> {
        self.apply_at(t, ctx, 0)
    }

    /// [`apply`](Dropout::apply) at dropout site `site` of the layer (its own mask; site 0 is
    /// `apply`'s). The identity when `ctx` evaluates rather than trains.
    pub fn apply_at(&self, t: &mut Tensor, ctx: &Ctx, site: u64) -> Result<()> {
        if !ctx.training {
            return Ok(());
        }
        backend::dropout(t, &self.stream_at(ctx, site), self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::check::probe;

    #[test]
    fn mask_is_a_pure_function_of_the_key() {
        let d = Dropout { rate: 0.25 };
        let x = probe(16, 32, 1);
        let apply = |seed, step, mb, layer| {
            let mut t = x.clone();
            d.apply(&mut t, &Ctx::new(seed, step, mb, layer)).unwrap();
            t
        };
        let a = apply(7, 1, 2, 3);
        assert!(a.bit_eq(&apply(7, 1, 2, 3)));
        for other in [apply(8, 1, 2, 3), apply(7, 2, 2, 3), apply(7, 1, 3, 3), apply(7, 1, 2, 4)] {
            assert!(!a.bit_eq(&other), "each key part changes the mask");
        }
        let dropped = a.data().iter().filter(|v| **v == 0.0).count() as f32 / a.len() as f32;
        assert!((dropped - 0.25).abs() < 0.06, "{dropped}");
        let kept = a.data().iter().zip(x.data()).find(|(y, _)| **y != 0.0).unwrap();
        assert_eq!(*kept.0, kept.1 * (1.0 / 0.75));
    }

    #[test]
    fn zero_rate_is_identity() {
        let x = probe(3, 3, 2);
        let mut y = x.clone();
        Dropout { rate: 0.0 }.apply(&mut y, &Ctx::new(1, 1, 1, 0)).unwrap();
        assert!(x.bit_eq(&y));
    }
}
