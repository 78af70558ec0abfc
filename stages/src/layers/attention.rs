//! `Attention`: the pre-norm causal self-attention sub-layer of a GPT block,
//! `x + Dropout(Linear_out(MHA(Linear_qkv(LayerNorm(x)))))`.
//!
//! ```text
//!  x ─┬─ LayerNorm ─ y ─ Linear_qkv ─ [Q K V] ─ softmax(QKᵀ/√d + causal) ─ P ─ Dropout ─ ·V ─ o ─ Linear_out ─ z ─ Dropout ─(+)─ out
//!     └──────────────────────────────────────────── skip ─────────────────────────────────────────────────────────────┘
//! ```
//!
//! Rows are tokens: a micro-batch of `n` sequences of `seq` tokens is `n·seq` consecutive rows,
//! sequence after sequence, and head `h` is columns `h·d..(h+1)·d` of Q, K, V and `o` (the layout
//! `tensor.rs` documents). The attention core runs one head of every sequence at a time, read
//! in place through strides ([`batched_product`]: `gemm` block by block on the host, one cuBLAS
//! strided-batched product on a GPU); the causal softmax, its backward and the dropout on the
//! probabilities are backend operations (`backend::causal_softmax`, …), so the layer runs on
//! every device. Its products are in `f32` whatever the model's precision (which applies to the
//! two `Linear`s).
//!
//! Invariant: the forward keeps exactly `x̂`, `rstd`, `y`, `qkv`, `P` (the probabilities before
//! dropout, `heads·seq` per row) and `o`; both dropout masks are regenerated from the op's
//! [`Ctx`], never stored (site 0 on the output, site 1 on the probabilities). `I` keeps exactly
//! each parameterised sub-layer's input and output gradient. A frozen part (LoRA) keeps an empty
//! tensor in place of what only its `W` would read (`y` and `o` in the forward; `x̂, dy`,
//! `y, dqkv` or `o, dz` for `W`). Row `i` of a sequence has `seq`
//! probabilities per head of which the `seq − 1 − i` future ones are zero: they are kept all
//! the same, so every row keeps the same number of floats.

use crate::error::{Error, Result};
use crate::layers::{keep_if, prefixed, Adapter, Ctx, Dropout, Layer, LayerNorm, Linear, NormStats, Saved, WNeeds};
use crate::matmul::{batched_product, Batch, Block, GemmShape};
use crate::rng::Stream;
use crate::tensor::Tensor;

/// Causal multi-head self-attention over sequences of `seq` tokens, with its pre-norm and
/// residual.
#[derive(Debug, Clone)]
pub struct Attention {
    pub(crate) norm: LayerNorm,
    pub(crate) qkv: Linear,
    pub(crate) out: Linear,
    heads: usize,
    seq: usize,
    dropout: Dropout,
}

/// The dropout site of the attention probabilities (site 0 is the output's).
const PROBS: u64 = 1;

impl Attention {
    /// The sub-layer of residual width `width` split into `heads` heads over sequences of `seq`
    /// tokens, weights drawn from `stream`, the output projection scaled by `residual_gain`;
    /// `dropout` applies to the probabilities and to the output. An error unless `heads` divides
    /// `width` and every size is at least 1.
    pub fn new(
        width: usize,
        heads: usize,
        seq: usize,
        dropout: Dropout,
        stream: Stream,
        residual_gain: f32,
    ) -> Result<Attention> {
        if width == 0 || heads == 0 || seq == 0 || width % heads != 0 {
            return Err(Error::Spec(format!(
                "attention: width {width}, heads {heads}, seq {seq}: every size must be at least 1 and heads must divide the width"
            )));
        }
        let s1 = Stream::new(&[stream.bits(0), 1]);
        let s2 = Stream::new(&[stream.bits(0), 2]);
        Ok(Attention {
            norm: LayerNorm::new(width),
            qkv: Linear::new(width, 3 * width, s1, 1.0),
            out: Linear::new(width, width, s2, residual_gain),
            heads,
            seq,
            dropout,
        })
    }

    /// The sub-layer with every parameter frozen, its two `Linear`s training the adapters given
    /// (LoRA); an error if an adapter's widths are not its layer's.
    pub fn freeze(self, qkv: Option<Adapter>, out: Option<Adapter>) -> Result<Attention> {
        Ok(Attention { norm: self.norm.freeze(), qkv: self.qkv.freeze(qkv)?, out: self.out.freeze(out)?, ..self })
    }

    /// The sub-layer with its two `Linear` products in `precision`.
    pub fn with_precision(self, precision: crate::precision::Precision) -> Attention {
        Attention { qkv: self.qkv.with_precision(precision), out: self.out.with_precision(precision), ..self }
    }

    /// The residual width.
    pub fn width(&self) -> usize {
        self.norm.width()
    }

    /// Width of one head.
    fn head(&self) -> usize {
        self.width() / self.heads
    }

    /// Probabilities per row: `heads·seq`.
    fn probs_width(&self) -> usize {
        self.heads * self.seq
    }

    /// An error unless `t` (named `what`) is whole sequences of rows.
    fn check(&self, t: &Tensor, what: &str) -> Result<()> {
        if t.rows() % self.seq != 0 {
            return Err(Error::Shape {
                place: format!("attention {what}"),
                reason: format!("{:?}: the attention core runs over whole sequences of {} rows", t.shape(), self.seq),
            });
        }
        Ok(())
    }

    /// Each head's batches over the sequences of `rows` rows: its Q, K, V inside `qkv`
    /// (`[rows, 3w]`), its `[seq, seq]` probabilities inside `[rows, heads·seq]`, and its
    /// columns of a `[rows, w]` tensor, one block per sequence.
    fn heads(&self, rows: usize) -> impl Iterator<Item = Heads> {
        let (w, d, t, pw) = (self.width(), self.head(), self.seq, self.probs_width());
        let seqs = move |first: Block, stride: usize| Batch { first, count: rows / t, stride };
        (0..self.heads).map(move |h| Heads {
            q: seqs(Block::at(h * d, t, d, 3 * w), t * 3 * w),
            k: seqs(Block::at(w + h * d, t, d, 3 * w), t * 3 * w),
            v: seqs(Block::at(2 * w + h * d, t, d, 3 * w), t * 3 * w),
            p: seqs(Block::at(h * t, t, t, pw), t * pw),
            o: seqs(Block::at(h * d, t, d, w), t * w),
        })
    }

    /// `P = softmax(QKᵀ/√d)` over the causal past of each row, `[rows, heads·seq]`.
    fn probabilities(&self, qkv: &Tensor) -> Result<Tensor> {
        let t = self.seq;
        let mut p = qkv.scratch_like(qkv.rows(), self.probs_width())?;
        let scale = 1.0 / (self.head() as f32).sqrt();
        for b in self.heads(qkv.rows()) {
            batched_product(&mut p, b.p, qkv, b.q, qkv, b.k.t())?;
        }
        crate::backend::causal_softmax(&mut p, t, scale)?;
        Ok(p)
    }

    /// Dropout on `[rows, heads·seq]` probabilities or their gradient, drawing for the causal
    /// past of each row only (the future of `P` is zero, and so is what it contributes): the
    /// mask of [`Dropout::apply_at`] at site [`PROBS`] on the past, zero on the future (with a
    /// rate of 0, nothing changes: the future of a gradient is then left as it is, and the
    /// softmax's backward multiplies it by `P`'s zeros).
    fn drop_probs(&self, t: &mut Tensor, ctx: &Ctx) -> Result<()> {
        if !ctx.training {
            return Ok(());
        }
        let stream = self.dropout.stream_at(ctx, PROBS);
        crate::backend::causal_dropout(t, &stream, self.dropout.rate, self.seq)
    }

    /// The probabilities as the values see them: `P` after dropout (a copy when dropout is on).
    fn dropped(&self, p: &Tensor, ctx: &Ctx) -> Result<Option<Tensor>> {
        if self.dropout.rate <= 0.0 || !ctx.training {
            return Ok(None);
        }
        let mut d = p.try_clone()?;
        self.drop_probs(&mut d, ctx)?;
        Ok(Some(d))
    }

    /// `o = Dropout(P)·V`, head by head, `[rows, w]`.
    fn mix(&self, p: &Tensor, qkv: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let dropped = self.dropped(p, ctx)?;
        let p = dropped.as_ref().unwrap_or(p);
        let mut o = qkv.scratch_like(qkv.rows(), self.width())?;
        for b in self.heads(qkv.rows()) {
            batched_product(&mut o, b.o, p, b.p, qkv, b.v)?;
        }
        Ok(o)
    }

    /// The gradient of `qkv` from the gradient of `o`.
    fn core_backward(&self, qkv: &Tensor, p: &Tensor, d_o: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let rows = qkv.rows();
        let dropped = self.dropped(p, ctx)?;
        let pd = dropped.as_ref().unwrap_or(p);
        let mut dqkv = qkv.scratch_like(rows, 3 * self.width())?;
        let mut dp = qkv.scratch_like(rows, self.probs_width())?;
        for b in self.heads(rows) {
            // dV = Dropout(P)ᵀ·dO, d(Dropout(P)) = dO·Vᵀ.
            batched_product(&mut dqkv, b.v, pd, b.p.t(), d_o, b.o)?;
            batched_product(&mut dp, b.p, d_o, b.o, qkv, b.v.t())?;
        }
        drop(dropped);
        self.drop_probs(&mut dp, ctx)?;
        // dS = P ⊙ (dP − Σ_j dP_j·P_j) / √d: the softmax's backward, with the score scale.
        crate::backend::causal_softmax_backward(p, &mut dp, self.seq, 1.0 / (self.head() as f32).sqrt())?;
        for b in self.heads(rows) {
            // dQ = dS·K, dK = dSᵀ·Q.
            batched_product(&mut dqkv, b.q, &dp, b.p, qkv, b.k)?;
            batched_product(&mut dqkv, b.k, &dp, b.p.t(), qkv, b.q)?;
        }
        Ok(dqkv)
    }
}

/// The blocks of one head, one per sequence.
struct Heads {
    q: Batch,
    k: Batch,
    v: Batch,
    p: Batch,
    o: Batch,
}

impl Layer for Attention {
    fn kind(&self) -> &str {
        "attention"
    }
    fn input_width(&self) -> usize {
        self.width()
    }
    fn output_width(&self) -> usize {
        self.width()
    }
    /// `γ, β, W_qkv, b_qkv, W_out, b_out` — of the sub-layers that train (under LoRA, the
    /// adapters').
    fn params(&self) -> Vec<&Tensor> {
        let mut v = self.norm.params();
        v.extend(self.qkv.params());
        v.extend(self.out.params());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v = self.norm.params_mut();
        v.extend(self.qkv.params_mut());
        v.extend(self.out.params_mut());
        v
    }
    fn param_names(&self) -> Vec<String> {
        let mut v = prefixed("norm", self.norm.param_names());
        v.extend(prefixed("qkv", self.qkv.param_names()));
        v.extend(prefixed("out", self.out.param_names()));
        v
    }
    fn frozen(&self) -> Vec<&Tensor> {
        let mut v = self.norm.frozen();
        v.extend(self.qkv.frozen());
        v.extend(self.out.frozen());
        v
    }
    fn frozen_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v = self.norm.frozen_mut();
        v.extend(self.qkv.frozen_mut());
        v.extend(self.out.frozen_mut());
        v
    }
    fn frozen_names(&self) -> Vec<String> {
        let mut v = prefixed("norm", self.norm.frozen_names());
        v.extend(prefixed("qkv", self.qkv.frozen_names()));
        v.extend(prefixed("out", self.out.frozen_names()));
        v
    }
    /// Keeps `x̂`, `rstd`, `y`, `qkv`, `P`, `o` (`y`, `o` only for a `Linear` that trains).
    /// Consumes `x`: the skip adds it into the
    /// branch's buffer.
    fn forward_saving(&self, x: Tensor, ctx: &Ctx) -> Result<(Tensor, Saved)> {
        self.check(&x, "forward")?;
        let (y, NormStats { xhat, rstd }) = self.norm.forward(&x)?;
        let qkv = self.qkv.forward(&y)?;
        let p = self.probabilities(&qkv)?;
        let o = self.mix(&p, &qkv, ctx)?;
        let mut out = self.out.forward(&o)?;
        self.dropout.apply(&mut out, ctx)?;
        out.add_assign(&x)?;
        // `y` and `o` are read only by the `W`s of the two `Linear`s.
        let (y, o) = (keep_if(self.qkv.trains(), y), keep_if(self.out.trains(), o));
        Ok((out, Saved(vec![xhat, rstd, y, qkv, p, o])))
    }
    /// Keeps `x̂`, `rstd`, `y`, `qkv`, `o`: not the probabilities, which [`restore`](Layer::restore)
    /// computes again from `qkv`.
    fn forward_selective(&self, x: Tensor, ctx: &Ctx) -> Result<(Tensor, Saved)> {
        let (out, saved) = self.forward_saving(x, ctx)?;
        let [xhat, rstd, y, qkv, _, o] = saved.take(self.kind())?;
        Ok((out, Saved(vec![xhat, rstd, y, qkv, o])))
    }
    /// The probabilities from the kept `qkv`: the same bits as the forward's.
    fn restore(&self, kept: Saved, _ctx: &Ctx) -> Result<Saved> {
        let [xhat, rstd, y, qkv, o] = kept.take(self.kind())?;
        let p = self.probabilities(&qkv)?;
        Ok(Saved(vec![xhat, rstd, y, qkv, p, o]))
    }
    /// Keeps each training sub-layer's input and output gradient: `x̂, dy, y, dqkv, o, dz`.
    fn backward_input(&self, saved: Saved, dout: Tensor, ctx: &Ctx) -> Result<(Tensor, WNeeds)> {
        self.check(&dout, "backward_input")?;
        let [xhat, rstd, y, qkv, p, o] = saved.take(self.kind())?;
        let mut dz = dout.try_clone()?;
        self.dropout.apply(&mut dz, ctx)?;
        let d_o = self.out.backward_input(&dz)?;
        let dqkv = self.core_backward(&qkv, &p, &d_o, ctx)?;
        drop((qkv, p, d_o));
        let dy = self.qkv.backward_input(&dqkv)?;
        let norm = NormStats { xhat, rstd };
        let mut dx = self.norm.backward_input(&norm, &dy)?;
        dx.add_assign(&dout)?;
        let (n, q, out) = (!self.norm.frozen, self.qkv.trains(), self.out.trains());
        let needs = [keep_if(n, norm.xhat), keep_if(n, dy), y, keep_if(q, dqkv), o, keep_if(out, dz)];
        Ok((dx, WNeeds(needs.into())))
    }
    fn weight_grads(&self, needs: &WNeeds) -> Result<Vec<Tensor>> {
        let [xhat, dy, y, dqkv, o, dz] = needs.get(self.kind())?;
        let mut g = self.norm.weight_grads(xhat, dy)?;
        g.extend(self.qkv.weight_grads(y, dqkv)?);
        g.extend(self.out.weight_grads(o, dz)?);
        Ok(g)
    }
    /// `x̂`, `y`, `o` (width each), `rstd` (1), `qkv` (3·width), `P` (heads·seq) — `y` and `o`
    /// only for a `Linear` that trains.
    fn saved_per_row(&self) -> usize {
        self.selective_per_row() + self.probs_width()
    }
    /// `x̂`, `dy`, `y`, `o`, `dz` (width each), `dqkv` (3·width) — each pair only for a
    /// sub-layer that trains.
    fn w_per_row(&self) -> usize {
        let w = self.width();
        let pair = |trains: bool, floats: usize| if trains { floats } else { 0 };
        pair(!self.norm.frozen, 2 * w) + pair(self.qkv.trains(), 4 * w) + pair(self.out.trains(), 2 * w)
    }
    /// All of [`saved_per_row`](Layer::saved_per_row) but the probabilities: `6·width + 1`
    /// with both `Linear`s training.
    fn selective_per_row(&self) -> usize {
        let w = self.width();
        4 * w + 1 + if self.qkv.trains() { w } else { 0 } + if self.out.trains() { w } else { 0 }
    }
    /// Built of backend operations and matrix products: runs on every device.
    fn runs_on(&self, _device: crate::device::Device) -> bool {
        true
    }
    /// The two `Linear`s.
    fn linear_maps(&self) -> Vec<(usize, usize)> {
        let mut maps = Layer::linear_maps(&self.qkv);
        maps.extend(Layer::linear_maps(&self.out));
        maps
    }
    fn weight_products(&self, rows: usize) -> Vec<crate::matmul::GemmShape> {
        let mut products = Layer::weight_products(&self.qkv, rows);
        products.extend(Layer::weight_products(&self.out, rows));
        products
    }
    /// Per head of each sequence: `QKᵀ` and `P·V` forward; `dV = Pᵀ·dO`, `dP = dO·Vᵀ`,
    /// `dQ = dS·K` and `dK = dSᵀ·Q` in `I` — each over the full `seq × seq` square.
    fn activation_products(&self, rows: usize) -> [Vec<GemmShape>; 2] {
        let (t, d, pairs) = (self.seq, self.head(), rows / self.seq * self.heads);
        let shape = |m, k, n, trans_a, trans_b| GemmShape { m, k, n, trans_a, trans_b };
        let forward = [shape(t, d, t, false, true), shape(t, t, d, false, false)];
        let backward = [
            shape(t, t, d, true, false),
            shape(t, d, t, false, true),
            shape(t, t, d, false, false),
            shape(t, t, d, true, false),
        ];
        [forward.repeat(pairs), backward.repeat(pairs)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::check::{assert_close, dot, numeric_grad, probe, relative_error};

    fn layer(rate: f32) -> Attention {
        let mut a = Attention::new(8, 2, 3, Dropout { rate }, Stream::new(&[7]), 0.8).unwrap();
        a.norm.gamma = probe(1, 8, 50);
        a.norm.beta = probe(1, 8, 51);
        a.qkv.bias = probe(1, 24, 52);
        a
    }

    #[test]
    fn gradients_match_finite_differences_with_dropout() {
        for rate in [0.0, 0.3] {
            let a = layer(rate);
            let ctx = Ctx::new(3, 1, 2, 5);
            let x = probe(6, 8, 53);
            let r = probe(6, 8, 54);
            let (_, saved) = Layer::forward_saving(&a, x.clone(), &ctx).unwrap();
            assert_eq!(saved.bytes(), 4 * 6 * (6 * 8 + 1 + 2 * 3) as u64);
            let (dx, needs) = a.backward_input(saved, r.clone(), &ctx).unwrap();
            assert_eq!(needs.bytes(), 4 * 6 * 8 * 8);
            let grads = a.weight_grads(&needs).unwrap();
            let loss = |a: &Attention, x: &Tensor| dot(&Layer::forward(a, x.clone(), &ctx).unwrap(), &r);
            let numeric = numeric_grad(&x, |x| loss(&a, x));
            assert_close(&dx, &numeric);
            let mut worst = relative_error(&dx, &numeric);
            for (k, g) in grads.iter().enumerate() {
                let numeric = numeric_grad(a.params()[k], |p| {
                    let mut a2 = a.clone();
                    *a2.params_mut()[k] = p.clone();
                    loss(&a2, &x)
                });
                assert_close(g, &numeric);
                worst = worst.max(relative_error(g, &numeric));
            }
            // f32 central differences at h = 0.01: observed 2.9e-5 (no dropout) and 4.6e-5.
            eprintln!("attention, dropout {rate}: I and W against central differences: relative error {worst:.1e}");
            assert!(worst < 5e-4, "{worst}");
        }
    }

    #[test]
    fn selective_keeps_all_but_the_probabilities_and_restores_them_bit_for_bit() {
        let a = layer(0.3);
        let ctx = Ctx::new(3, 1, 2, 5);
        let x = probe(6, 8, 55);
        let (out, full) = Layer::forward_saving(&a, x.clone(), &ctx).unwrap();
        let (out2, kept) = a.forward_selective(x, &ctx).unwrap();
        assert!(out.bit_eq(&out2));
        assert_eq!(kept.bytes(), 4 * 6 * a.selective_per_row() as u64);
        assert_eq!(full.bytes() - kept.bytes(), 4 * 6 * 2 * 3, "the probabilities: heads·seq per row");
        let restored = a.restore(kept, &ctx).unwrap();
        assert_eq!(restored.0.len(), full.0.len());
        for (r, f) in restored.0.iter().zip(&full.0) {
            assert!(r.bit_eq(f));
        }
    }

    #[test]
    fn a_token_sees_only_its_past_and_its_own_sequence() {
        let a = layer(0.0);
        let ctx = Ctx::new(1, 0, 0, 0);
        let x = probe(6, 8, 60);
        let y = Layer::forward(&a, x.clone(), &ctx).unwrap();
        // Change the last token of sequence 0 (row 2) and the first of sequence 1 (row 3).
        let mut x2 = x.clone();
        for c in 0..8 {
            x2.data_mut()[2 * 8 + c] += 1.0;
        }
        let y2 = Layer::forward(&a, x2, &ctx).unwrap();
        for r in [0, 1, 3, 4, 5] {
            assert_eq!(y.row(r), y2.row(r), "row {r} does not see row 2");
        }
        assert_ne!(y.row(2), y2.row(2));
        let p = a.probabilities(&a.qkv.forward(&a.norm.forward(&x).unwrap().0).unwrap()).unwrap();
        for r in 0..6 {
            for h in 0..2 {
                let probs = &p.row(r)[h * 3..(h + 1) * 3];
                let i = r % 3;
                assert!(probs[i + 1..].iter().all(|v| *v == 0.0), "row {r}: {probs:?}");
                assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(Attention::new(8, 3, 4, Dropout { rate: 0.0 }, Stream::new(&[1]), 1.0).is_err());
        let a = layer(0.0);
        let e = Layer::forward(&a, probe(4, 8, 1), &Ctx::new(1, 0, 0, 0)).unwrap_err();
        assert!(e.to_string().contains("whole sequences of 3 rows"), "{e}");
    }
}
