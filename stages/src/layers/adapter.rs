//! [`Adapter`]: the low-rank update of LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large
//! Language Models", 2021) on a frozen [`Linear`](crate::layers::Linear):
//! `y = x·W + b + s·(x·A)·B`, with `A` `[in, r]` drawn from `N(0, 1/in)`, `B` `[r, out]` zero (so
//! a model with fresh adapters computes exactly what it did without them) and `s = α/r`.
//!
//! Invariant: every op computes the same products in the same order, so a recomputed forward
//! and a backward at any time give the same bits. With `u = s·x·A` and `g = s·dy·Bᵀ` (both
//! `[rows, r]`): the forward adds `u·B`; `I` adds `g·Aᵀ` to the frozen layer's `dy·Wᵀ`; `W` gives
//! `dA = xᵀ·g` and `dB = uᵀ·dy`, computing `u` and `g` again from the `x` and `dy` the layer keeps
//! for `W` anyway (`r` is small: two thin products instead of `r` more floats per row kept).

use crate::backend;
use crate::error::Result;
use crate::layers::weight_product;
use crate::matmul::{matmul_into, GemmShape, Trans};
use crate::precision::Precision;
use crate::rng::Stream;
use crate::tensor::Tensor;

/// A rank-`r` update `s·A·B` of a frozen `[in, out]` weight; see the module docs.
#[derive(Debug, Clone)]
pub struct Adapter {
    /// `[in, r]`, drawn.
    pub(crate) a: Tensor,
    /// `[r, out]`, zero at first.
    pub(crate) b: Tensor,
    /// `s = α/r`.
    scale: f32,
}

impl Adapter {
    /// An adapter of rank `rank` for an `[input, output]` weight, scaled by `scale`: `A` from
    /// `N(0, 1/input)` by `stream` (element `k` is draw `k`), `B` zero.
    pub fn new(input: usize, output: usize, rank: usize, scale: f32, stream: Stream) -> Adapter {
        let std = 1.0 / (input.max(1) as f32).sqrt();
        let a = Tensor::from_fn(input, rank, |r, c| std * stream.normal((r * rank + c) as u64));
        Adapter { a, b: Tensor::zeros(rank, output), scale }
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.a.cols()
    }

    /// `A`, `B`: the adapter's parameters, in gradient order.
    pub fn params(&self) -> [&Tensor; 2] {
        [&self.a, &self.b]
    }

    /// `A`, `B`, mutable.
    pub fn params_mut(&mut self) -> [&mut Tensor; 2] {
        [&mut self.a, &mut self.b]
    }

    /// Names of the parameters, in gradient order.
    pub fn param_names() -> [&'static str; 2] {
        ["lora_a", "lora_b"]
    }

    /// `s·x·A`, `[rows, r]`.
    fn down(&self, x: &Tensor, precision: Precision) -> Result<Tensor> {
        let mut u = x.scratch_like(x.rows(), self.rank())?;
        matmul_into(&mut u, x, Trans::No, &self.a, Trans::No, precision)?;
        backend::scale(&mut u, self.scale)?;
        Ok(u)
    }

    /// `s·dy·Bᵀ`, `[rows, r]`.
    fn up_grad(&self, dy: &Tensor, precision: Precision) -> Result<Tensor> {
        let mut g = dy.scratch_like(dy.rows(), self.rank())?;
        matmul_into(&mut g, dy, Trans::No, &self.b, Trans::Yes, precision)?;
        backend::scale(&mut g, self.scale)?;
        Ok(g)
    }

    /// Adds `s·(x·A)·B` to the frozen layer's output `y`.
    pub(crate) fn add_forward(&self, x: &Tensor, y: &mut Tensor, precision: Precision) -> Result<()> {
        let u = self.down(x, precision)?;
        let mut v = y.scratch_like(y.rows(), y.cols())?;
        matmul_into(&mut v, &u, Trans::No, &self.b, Trans::No, precision)?;
        y.add_assign(&v)
    }

    /// Adds `s·(dy·Bᵀ)·Aᵀ` to the frozen layer's input gradient `dx`.
    pub(crate) fn add_input_grad(&self, dy: &Tensor, dx: &mut Tensor, precision: Precision) -> Result<()> {
        let g = self.up_grad(dy, precision)?;
        let mut v = dx.scratch_like(dx.rows(), dx.cols())?;
        matmul_into(&mut v, &g, Trans::No, &self.a, Trans::Yes, precision)?;
        dx.add_assign(&v)
    }

    /// `[dA, dB]` for one micro-batch, from the layer's input `x` and output gradient `dy`.
    pub(crate) fn grads(&self, x: &Tensor, dy: &Tensor, precision: Precision) -> Result<[Tensor; 2]> {
        let g = self.up_grad(dy, precision)?;
        let mut da = x.scratch_like(self.a.rows(), self.rank())?;
        matmul_into(&mut da, x, Trans::Yes, &g, Trans::No, precision)?;
        let u = self.down(x, precision)?;
        let mut db = dy.scratch_like(self.rank(), self.b.cols())?;
        matmul_into(&mut db, &u, Trans::Yes, dy, Trans::No, precision)?;
        Ok([da, db])
    }

    /// The four products its `W` runs for `rows` rows: `s·x·A` and `s·dy·Bᵀ` again, then `dA` and
    /// `dB`.
    pub(crate) fn weight_products(&self, rows: usize) -> Vec<GemmShape> {
        let (input, r, output) = (self.a.rows(), self.rank(), self.b.cols());
        vec![
            GemmShape { m: rows, k: input, n: r, trans_a: false, trans_b: false },
            GemmShape { m: rows, k: output, n: r, trans_a: false, trans_b: true },
            weight_product(input, rows, r),
            weight_product(r, rows, output),
        ]
    }

    /// The `(in, out)` widths of the forward's two products: `(in, r)` and `(r, out)`.
    pub fn linear_maps(&self) -> [(usize, usize); 2] {
        [(self.a.rows(), self.rank()), (self.rank(), self.b.cols())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::check::{assert_close, dot, numeric_grad, probe};
    use crate::layers::{Ctx, Layer, Linear};

    fn adapted(b: Tensor) -> Linear {
        let mut a = Adapter::new(5, 4, 2, 1.5, Stream::new(&[3]));
        a.b = b;
        Linear::new(5, 4, Stream::new(&[1]), 1.0).freeze(Some(a)).unwrap()
    }

    #[test]
    fn fresh_adapters_change_nothing_and_train_alone() {
        let base = Linear::new(5, 4, Stream::new(&[1]), 1.0);
        let l = adapted(Tensor::zeros(2, 4));
        let x = probe(3, 5, 2);
        assert!(Layer::forward(&l, x.clone(), &Ctx::new(0, 0, 0, 0)).unwrap().bit_eq(&base.forward(&x).unwrap()));
        assert_eq!(l.param_names(), ["lora_a", "lora_b"]);
        assert_eq!(l.frozen_names(), ["weight", "bias"]);
        assert_eq!(l.params().iter().map(|p| p.shape()).collect::<Vec<_>>(), [[5, 2], [2, 4]]);
        // A frozen layer without an adapter trains nothing and its W computes nothing.
        let frozen = base.freeze(None).unwrap();
        assert!(frozen.params().is_empty() && frozen.weight_grads(&x, &probe(3, 4, 3)).unwrap().is_empty());
        let wrong = Adapter::new(4, 4, 2, 1.0, Stream::new(&[3]));
        let e = Linear::new(5, 4, Stream::new(&[1]), 1.0).freeze(Some(wrong)).unwrap_err().to_string();
        assert!(e.contains("an adapter for 4→4 on a layer of [5, 4]"), "{e}");
    }

    #[test]
    fn gradients_match_finite_differences() {
        let l = adapted(probe(2, 4, 9));
        let x = probe(3, 5, 2);
        let r = probe(3, 4, 3);
        let dx = l.backward_input(&r).unwrap();
        let [da, db] = <[Tensor; 2]>::try_from(l.weight_grads(&x, &r).unwrap()).unwrap();
        let loss = |l: &Linear, x: &Tensor| dot(&l.forward(x).unwrap(), &r);
        assert_close(&dx, &numeric_grad(&x, |x| loss(&l, x)));
        let with = |k: usize, t: &Tensor| {
            let mut l2 = l.clone();
            *l2.params_mut()[k] = t.clone();
            l2
        };
        assert_close(&da, &numeric_grad(l.params()[0], |a| loss(&with(0, a), &x)));
        assert_close(&db, &numeric_grad(l.params()[1], |b| loss(&with(1, b), &x)));
    }

    #[test]
    fn an_adapted_layer_passes_the_f64_gradient_check_and_keeps_its_frozen_bits() {
        let mut l = adapted(probe(2, 4, 9));
        let before: Vec<Vec<u32>> =
            l.frozen().iter().map(|t| t.values().unwrap().iter().map(|v| v.to_bits()).collect()).collect();
        let report =
            crate::gradcheck::check(&mut l, &probe(3, 5, 2), &Ctx::new(0, 0, 0, 0), crate::gradcheck::Settings::f64())
                .unwrap();
        let names: Vec<&str> = report.params.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["lora_a", "lora_b"]);
        assert!(report.input.unwrap() < 1e-6 && report.params.iter().all(|(_, e)| *e < 1e-6), "{report:?}");
        let after: Vec<Vec<u32>> =
            l.frozen().iter().map(|t| t.values().unwrap().iter().map(|v| v.to_bits()).collect()).collect();
        assert_eq!(before, after, "the frozen weight and bias are restored bit for bit");
    }
}
