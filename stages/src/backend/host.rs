//! The host backend: the tensor operations of [`backend`](crate::backend) on buffers in main
//! memory, one thread, each written once for both element types ([`Element`]: `f32` for
//! training, `f64` for gradient checks). Each function takes host tensors whose shapes and type
//! the dispatcher has checked. The CUDA kernels in `kernels/ops.cu` repeat these operations in the same order per
//! element (tested bit for bit in `cuda/emulate/`), so a stage's results do not depend on the
//! device beyond the matrix products.

use super::{lanes, wide};
use crate::element::Element;
use crate::optim::AdamScalars;
use crate::rng::Stream;
use crate::tensor::Tensor;

/// Element `k` of a dropout: `v·scale` iff draw `k` of `stream` is at least the rate, else 0 —
/// decided in integers, `at_least` being [`Stream::at_least`] of the rate. The mask is the same
/// whatever `E`, so both types drop the same elements.
#[inline(always)]
fn keep<E: Element>(v: E, stream: &Stream, k: usize, at_least: u64, scale: E) -> E {
    if stream.draw24(k as u64) >= at_least {
        v * scale
    } else {
        E::ZERO
    }
}

wide::twin! {
    /// Inverted dropout in place: element `k` is kept (and scaled by `scale`) iff draw `k` of
    /// `stream` is at least `rate`.
    pub(crate) fn dropout(t: &mut Tensor, stream: &Stream, rate: f32, scale: f32) = dropout_in
}

#[inline(always)]
fn dropout_in<E: Element>(t: &mut Tensor, stream: &Stream, rate: f32, scale: f32) {
    let (scale, at_least) = (E::from_f32(scale), Stream::at_least(rate));
    for (k, v) in t.host_of_mut::<E>().iter_mut().enumerate() {
        *v = keep(*v, stream, k, at_least, scale);
    }
}

wide::twin! {
    /// [`dropout`] on the causal past of `[rows, heads·seq]` scores (row `r` token `r mod seq`), the
    /// future set to zero.
    pub(crate) fn causal_dropout(t: &mut Tensor, stream: &Stream, rate: f32, scale: f32, seq: usize) = causal_dropout_in
}

#[inline(always)]
fn causal_dropout_in<E: Element>(t: &mut Tensor, stream: &Stream, rate: f32, scale: f32, seq: usize) {
    let (cols, scale, at_least) = (t.cols(), E::from_f32(scale), Stream::at_least(rate));
    for (r, row) in t.host_of_mut::<E>().chunks_exact_mut(cols).enumerate() {
        let past = r % seq + 1;
        for (h, head) in row.chunks_exact_mut(seq).enumerate() {
            let first = r * cols + h * seq;
            let (kept, future) = head.split_at_mut(past);
            for (j, v) in kept.iter_mut().enumerate() {
                *v = keep(*v, stream, first + j, at_least, scale);
            }
            future.fill(E::ZERO);
        }
    }
}

wide::twin! {
    /// Softmax over the causal past of each head of each row of `s` (`[rows, heads·seq]`, row `r`
    /// being token `r mod seq`): the first `i + 1` of a head's `seq` scores of token `i`, scaled by
    /// `scale`, become probabilities (max subtracted, [`Element::exp`], summed in [`lanes`] order,
    /// multiplied by the sum's reciprocal); the rest become 0.
    pub(crate) fn causal_softmax(s: &mut Tensor, seq: usize, scale: f32) = causal_softmax_in
}

#[inline(always)]
fn causal_softmax_in<E: Element>(s: &mut Tensor, seq: usize, scale: f32) {
    let (width, scale) = (s.cols(), E::from_f32(scale));
    for (r, row) in s.host_of_mut::<E>().chunks_exact_mut(width).enumerate() {
        let i = r % seq;
        for scores in row.chunks_exact_mut(seq) {
            let (past, future) = scores.split_at_mut(i + 1);
            let max = past.iter().fold(E::NEG_INFINITY, |m, &v| m.max(v * scale));
            // The exponentials first (a loop the compiler vectorises), then their sum left to
            // right: the same operations, in the same order per value, as one loop.
            for v in past.iter_mut() {
                *v = (*v * scale - max).exp();
            }
            let sum = lanes::sum(past);
            let inv = E::ONE / sum;
            for v in past.iter_mut() {
                *v *= inv;
            }
            future.fill(E::ZERO);
        }
    }
}

wide::twin! {
    /// The causal softmax's backward in place: for each head of each row, `g ← P ⊙ (g − Σ g·P)·scale`
    /// (the dot product summed in [`lanes`] order), from the probabilities `p`.
    pub(crate) fn causal_softmax_backward(p: &Tensor, g: &mut Tensor, seq: usize, scale: f32) = causal_softmax_backward_in
}

#[inline(always)]
fn causal_softmax_backward_in<E: Element>(p: &Tensor, g: &mut Tensor, seq: usize, scale: f32) {
    let scale = E::from_f32(scale);
    for (g, pr) in g.host_of_mut::<E>().chunks_exact_mut(seq).zip(p.host_of::<E>().chunks_exact(seq)) {
        let dot = lanes::sum_zip(g, pr, |g, p| g * p);
        for (g, p) in g.iter_mut().zip(pr) {
            *g = *p * (*g - dot) * scale;
        }
    }
}

/// A token id held in a tensor of `E` as an index (ids checked by the dispatcher).
#[inline(always)]
fn index<E: Element>(id: E) -> usize {
    id.to_f64() as usize
}

/// Row `r`: `tokens[ids[r]] + positions[r mod seq]` (ids checked by the dispatcher).
pub(crate) fn embedding<E: Element>(ids: &Tensor, tokens: &Tensor, positions: &Tensor) -> Tensor {
    let (w, seq) = (tokens.cols(), positions.rows());
    let mut out = Tensor::scratch_of::<E>(ids.rows(), w);
    let (tok, pos) = (tokens.host_of::<E>(), positions.host_of::<E>());
    for (r, (row, id)) in out.host_of_mut::<E>().chunks_exact_mut(w).zip(ids.host_of::<E>()).enumerate() {
        let (t, p) = (&tok[index(*id) * w..][..w], &pos[(r % seq) * w..][..w]);
        for ((o, tok), pos) in row.iter_mut().zip(t).zip(p) {
            *o = *tok + *pos;
        }
    }
    out
}

wide::twin! {
    /// `[d tokens, d positions]`: each row of `dy` added into its token's row of a `[vocab, width]`
    /// table and its position's row of a `[seq, width]` one, in row order from zero.
    pub(crate) fn embedding_grads(ids: &Tensor, dy: &Tensor, vocab: usize, seq: usize) -> [Tensor; 2] = embedding_grads_in
}

#[inline(always)]
fn embedding_grads_in<E: Element>(ids: &Tensor, dy: &Tensor, vocab: usize, seq: usize) -> [Tensor; 2] {
    let w = dy.cols();
    let mut tokens = Tensor::full_of(vocab, w, E::ZERO);
    let mut positions = Tensor::full_of(seq, w, E::ZERO);
    let (dt, dp) = (tokens.host_of_mut::<E>(), positions.host_of_mut::<E>());
    for (r, (g, id)) in dy.host_of::<E>().chunks_exact(w).zip(ids.host_of::<E>()).enumerate() {
        for (acc, v) in dt[index(*id) * w..][..w].iter_mut().zip(g) {
            *acc += *v;
        }
        for (acc, v) in dp[(r % seq) * w..][..w].iter_mut().zip(g) {
            *acc += *v;
        }
    }
    [tokens, positions]
}

wide::twin! {
    /// Layer normalisation of each row: `[y, x̂, rstd]`. Row statistics are summed in [`lanes`]
    /// order (two passes: mean, then variance), so a row always normalises to the same bits.
    pub(crate) fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> [Tensor; 3] = layer_norm_in
}

#[inline(always)]
fn layer_norm_in<E: Element>(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> [Tensor; 3] {
    let (w, eps) = (gamma.cols(), E::from_f32(eps));
    let mut xhat = Tensor::scratch_of::<E>(x.rows(), w);
    let mut rstd = Tensor::scratch_of::<E>(x.rows(), 1);
    let mut y = Tensor::scratch_of::<E>(x.rows(), w);
    let (g, b) = (gamma.host_of::<E>(), beta.host_of::<E>());
    let (xs, xh, rs, ys) = (x.host_of::<E>(), xhat.host_of_mut::<E>(), rstd.host_of_mut::<E>(), y.host_of_mut::<E>());
    for r in 0..x.rows() {
        let row = &xs[r * w..(r + 1) * w];
        let mean = lanes::sum(row) / E::from_usize(w);
        let var = lanes::sum_map(row, |v| (v - mean) * (v - mean)) / E::from_usize(w);
        let s = E::ONE / (var + eps).sqrt();
        rs[r] = s;
        let xh = &mut xh[r * w..(r + 1) * w];
        for (o, v) in xh.iter_mut().zip(row) {
            *o = (*v - mean) * s;
        }
        for (((o, xv), gv), bv) in ys[r * w..(r + 1) * w].iter_mut().zip(xh.iter()).zip(g).zip(b) {
            *o = *xv * *gv + *bv;
        }
    }
    [y, xhat, rstd]
}

wide::twin! {
    /// `dx = rstd · (d − mean(d) − x̂ · mean(d ⊙ x̂))` with `d = dy ⊙ γ`, per row.
    pub(crate) fn layer_norm_backward_input(xhat: &Tensor, rstd: &Tensor, gamma: &Tensor, dy: &Tensor) -> Tensor = layer_norm_backward_input_in
}

#[inline(always)]
fn layer_norm_backward_input_in<E: Element>(xhat: &Tensor, rstd: &Tensor, gamma: &Tensor, dy: &Tensor) -> Tensor {
    let w = gamma.cols();
    let mut dx = Tensor::scratch_of::<E>(dy.rows(), w);
    let mut d = vec![E::ZERO; w];
    let (xhat, rstd, gamma, dys) = (xhat.host_of::<E>(), rstd.host_of::<E>(), gamma.host_of::<E>(), dy.host_of::<E>());
    let out = dx.host_of_mut::<E>();
    for r in 0..dy.rows() {
        let xh = &xhat[r * w..(r + 1) * w];
        for ((o, g), gamma) in d.iter_mut().zip(&dys[r * w..(r + 1) * w]).zip(gamma) {
            *o = *g * *gamma;
        }
        let mean_d = lanes::sum(&d) / E::from_usize(w);
        let mean_dx = lanes::sum_zip(&d, xh, |a, b| a * b) / E::from_usize(w);
        let s = rstd[r];
        for ((o, dv), xv) in out[r * w..(r + 1) * w].iter_mut().zip(&d).zip(xh) {
            *o = s * (*dv - mean_d - *xv * mean_dx);
        }
    }
    dx
}

wide::twin! {
    /// `dγ = Σ_rows dy ⊙ x̂`, summed over rows in order.
    pub(crate) fn layer_norm_gamma_grad(xhat: &Tensor, dy: &Tensor) -> Tensor = layer_norm_gamma_grad_in
}

#[inline(always)]
fn layer_norm_gamma_grad_in<E: Element>(xhat: &Tensor, dy: &Tensor) -> Tensor {
    let w = dy.cols();
    let mut dg = Tensor::full_of(1, w, E::ZERO);
    let sums = dg.host_of_mut::<E>();
    for (g, xh) in dy.host_of::<E>().chunks_exact(w.max(1)).zip(xhat.host_of::<E>().chunks_exact(w.max(1))) {
        for ((o, g), xv) in sums.iter_mut().zip(g).zip(xh) {
            *o += *g * *xv;
        }
    }
    dg
}

wide::twin! {
    /// Softmax cross-entropy of each row of `logits` against the class index in `target`: the mean
    /// loss over rows (`[1, 1]`) and the probabilities its backward needs.
    pub(crate) fn cross_entropy(logits: &Tensor, target: &Tensor) -> (Tensor, Tensor) = cross_entropy_in
}

#[inline(always)]
fn cross_entropy_in<E: Element>(logits: &Tensor, target: &Tensor) -> (Tensor, Tensor) {
    let (rows, cols) = (logits.rows(), logits.cols());
    let mut probs = Tensor::scratch_of::<E>(rows, cols);
    let mut total = E::ZERO;
    let (xs, ps, ts) = (logits.host_of::<E>(), probs.host_of_mut::<E>(), target.host_of::<E>());
    for r in 0..rows {
        let x = &xs[r * cols..(r + 1) * cols];
        let max = x.iter().copied().fold(E::NEG_INFINITY, E::max);
        let p = &mut ps[r * cols..(r + 1) * cols];
        for (o, v) in p.iter_mut().zip(x) {
            *o = (*v - max).exp();
        }
        let sum = lanes::sum(p);
        for o in p.iter_mut() {
            *o /= sum;
        }
        total += max + sum.ln() - x[index(ts[r])];
    }
    (Tensor::full_of(1, 1, total / E::from_usize(rows)), probs)
}

wide::twin! {
    /// The cross-entropy gradient in place over `probs`: `(p − onehot(target)) · factor`.
    pub(crate) fn cross_entropy_backward(probs: &mut Tensor, target: &Tensor, factor: f32) = cross_entropy_backward_in
}

#[inline(always)]
fn cross_entropy_backward_in<E: Element>(probs: &mut Tensor, target: &Tensor, factor: f32) {
    let (cols, factor) = (probs.cols(), E::from_f32(factor));
    let ts = target.host_of::<E>();
    for (r, row) in probs.host_of_mut::<E>().chunks_exact_mut(cols).enumerate() {
        row[index(ts[r])] -= E::ONE;
        for g in row.iter_mut() {
            *g *= factor;
        }
    }
}

/// Mean squared error: the mean over elements (`[1, 1]`) and `pred − target`.
pub(crate) fn mse<E: Element>(pred: &Tensor, target: &Tensor) -> (Tensor, Tensor) {
    let mut diff = pred.clone();
    for (d, t) in diff.host_of_mut::<E>().iter_mut().zip(target.host_of::<E>()) {
        *d -= *t;
    }
    let total: E = diff.host_of::<E>().iter().map(|d| *d * *d).sum();
    let loss = total / E::from_usize(diff.len());
    (Tensor::full_of(1, 1, loss), diff)
}

/// `x ← factor · x`.
pub(crate) fn scale<E: Element>(x: &mut Tensor, factor: f32) {
    let factor = E::from_f32(factor);
    for d in x.host_of_mut::<E>() {
        *d *= factor;
    }
}

/// One SGD-momentum update (`f32` only: optimizers train), element by element: `v ← μ·v + g; p ← p − lr·v`.
pub(crate) fn sgd_step(p: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, momentum: f32) {
    for ((p, g), v) in p.iter_mut().zip(g).zip(v) {
        *v = momentum * *v + g;
        *p -= lr * *v;
    }
}

/// One Adam update, element by element, in exactly this order of operations (the CUDA kernel
/// `k_adam_step` repeats it).
pub(crate) fn adam_step(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamScalars) {
    let AdamScalars { lr, beta1, beta2, eps, c1, c2 } = s;
    for (((p, g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
        *m = beta1 * *m + (1.0 - beta1) * g;
        *v = beta2 * *v + (1.0 - beta2) * g * g;
        *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
    }
}
