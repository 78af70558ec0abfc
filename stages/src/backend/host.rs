//! The host backend: the tensor operations of [`backend`](crate::backend) on `f32` buffers in
//! main memory, one thread. Each function takes host tensors whose shapes the dispatcher has
//! checked. The CUDA kernels in `kernels/ops.cu` repeat these operations in the same order per
//! element (tested bit for bit in `cuda/emulate/`), so a stage's results do not depend on the
//! device beyond the matrix products.

use crate::backend::gelu::exp_approx;
use crate::optim::AdamScalars;
use crate::rng::Stream;
use crate::tensor::Tensor;

/// Element `k` of a dropout: `v·scale` iff draw `k` of `stream` is at least `rate`, else 0.
#[inline(always)]
fn keep(v: f32, stream: &Stream, k: usize, rate: f32, scale: f32) -> f32 {
    if stream.uniform(k as u64) >= rate {
        v * scale
    } else {
        0.0
    }
}

/// Inverted dropout in place: element `k` is kept (and scaled by `scale`) iff draw `k` of
/// `stream` is at least `rate`.
pub(crate) fn dropout(t: &mut Tensor, stream: &Stream, rate: f32, scale: f32) {
    for (k, v) in t.data_mut().iter_mut().enumerate() {
        *v = keep(*v, stream, k, rate, scale);
    }
}

/// [`dropout`] on the causal past of `[rows, heads·seq]` scores (row `r` token `r mod seq`), the
/// future set to zero.
pub(crate) fn causal_dropout(t: &mut Tensor, stream: &Stream, rate: f32, scale: f32, seq: usize) {
    let cols = t.cols();
    for (r, row) in t.data_mut().chunks_exact_mut(cols).enumerate() {
        let past = r % seq + 1;
        for (h, head) in row.chunks_exact_mut(seq).enumerate() {
            let first = r * cols + h * seq;
            let (kept, future) = head.split_at_mut(past);
            for (j, v) in kept.iter_mut().enumerate() {
                *v = keep(*v, stream, first + j, rate, scale);
            }
            future.fill(0.0);
        }
    }
}

/// Softmax over the causal past of each head of each row of `s` (`[rows, heads·seq]`, row `r`
/// being token `r mod seq`): the first `i + 1` of a head's `seq` scores of token `i`, scaled by
/// `scale`, become probabilities (max subtracted, [`exp_approx`], summed left to right from 0,
/// multiplied by the sum's reciprocal); the rest become 0.
pub(crate) fn causal_softmax(s: &mut Tensor, seq: usize, scale: f32) {
    let width = s.cols();
    for (r, row) in s.data_mut().chunks_exact_mut(width).enumerate() {
        let i = r % seq;
        for scores in row.chunks_exact_mut(seq) {
            let (past, future) = scores.split_at_mut(i + 1);
            let max = past.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
            let mut sum = 0.0f32;
            for v in past.iter_mut() {
                *v = exp_approx(*v * scale - max);
                sum += *v;
            }
            let inv = 1.0 / sum;
            for v in past.iter_mut() {
                *v *= inv;
            }
            future.fill(0.0);
        }
    }
}

/// The causal softmax's backward in place: for each head of each row, `g ← P ⊙ (g − Σ g·P)·scale`
/// (the dot product summed left to right), from the probabilities `p`.
pub(crate) fn causal_softmax_backward(p: &Tensor, g: &mut Tensor, seq: usize, scale: f32) {
    for (g, pr) in g.data_mut().chunks_exact_mut(seq).zip(p.data().chunks_exact(seq)) {
        let dot: f32 = g.iter().zip(pr).map(|(g, p)| g * p).sum();
        for (g, p) in g.iter_mut().zip(pr) {
            *g = p * (*g - dot) * scale;
        }
    }
}

/// Row `r`: `tokens[ids[r]] + positions[r mod seq]` (ids checked by the dispatcher).
pub(crate) fn embedding(ids: &Tensor, tokens: &Tensor, positions: &Tensor) -> Tensor {
    let (w, seq) = (tokens.cols(), positions.rows());
    let mut out = Tensor::scratch(ids.rows(), w);
    for (r, (row, id)) in out.data_mut().chunks_exact_mut(w).zip(ids.data()).enumerate() {
        for ((o, tok), pos) in row.iter_mut().zip(tokens.row(*id as usize)).zip(positions.row(r % seq)) {
            *o = tok + pos;
        }
    }
    out
}

/// `[d tokens, d positions]`: each row of `dy` added into its token's row of a `[vocab, width]`
/// table and its position's row of a `[seq, width]` one, in row order from zero.
pub(crate) fn embedding_grads(ids: &Tensor, dy: &Tensor, vocab: usize, seq: usize) -> [Tensor; 2] {
    let w = dy.cols();
    let mut tokens = Tensor::zeros(vocab, w);
    let mut positions = Tensor::zeros(seq, w);
    for (r, (g, id)) in dy.data().chunks_exact(w).zip(ids.data()).enumerate() {
        for (acc, v) in tokens.data_mut()[*id as usize * w..][..w].iter_mut().zip(g) {
            *acc += v;
        }
        for (acc, v) in positions.data_mut()[(r % seq) * w..][..w].iter_mut().zip(g) {
            *acc += v;
        }
    }
    [tokens, positions]
}

/// Layer normalisation of each row: `[y, x̂, rstd]`. Row statistics are summed left to right in
/// a fixed order (two passes: mean, then variance), so a row always normalises to the same bits.
pub(crate) fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> [Tensor; 3] {
    let w = gamma.cols();
    let mut xhat = Tensor::scratch(x.rows(), w);
    let mut rstd = Tensor::scratch(x.rows(), 1);
    let mut y = Tensor::scratch(x.rows(), w);
    let (g, b) = (gamma.data(), beta.data());
    for r in 0..x.rows() {
        let row = x.row(r);
        let mean = row.iter().sum::<f32>() / w as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / w as f32;
        let s = 1.0 / (var + eps).sqrt();
        rstd.data_mut()[r] = s;
        let xh = &mut xhat.data_mut()[r * w..(r + 1) * w];
        for (o, v) in xh.iter_mut().zip(row) {
            *o = (v - mean) * s;
        }
        for (((o, xv), gv), bv) in y.data_mut()[r * w..(r + 1) * w].iter_mut().zip(xh.iter()).zip(g).zip(b) {
            *o = xv * gv + bv;
        }
    }
    [y, xhat, rstd]
}

/// `dx = rstd · (d − mean(d) − x̂ · mean(d ⊙ x̂))` with `d = dy ⊙ γ`, per row.
pub(crate) fn layer_norm_backward_input(xhat: &Tensor, rstd: &Tensor, gamma: &Tensor, dy: &Tensor) -> Tensor {
    let w = gamma.cols();
    let mut dx = Tensor::scratch(dy.rows(), w);
    let mut d = vec![0.0f32; w];
    for r in 0..dy.rows() {
        let xh = xhat.row(r);
        for ((o, g), gamma) in d.iter_mut().zip(dy.row(r)).zip(gamma.data()) {
            *o = g * gamma;
        }
        let mean_d = d.iter().sum::<f32>() / w as f32;
        let mean_dx = d.iter().zip(xh).map(|(a, b)| a * b).sum::<f32>() / w as f32;
        let s = rstd.data()[r];
        for ((o, dv), xv) in dx.data_mut()[r * w..(r + 1) * w].iter_mut().zip(&d).zip(xh) {
            *o = s * (dv - mean_d - xv * mean_dx);
        }
    }
    dx
}

/// `dγ = Σ_rows dy ⊙ x̂`, summed over rows in order.
pub(crate) fn layer_norm_gamma_grad(xhat: &Tensor, dy: &Tensor) -> Tensor {
    let mut dg = Tensor::zeros(1, dy.cols());
    for r in 0..dy.rows() {
        for ((o, g), xv) in dg.data_mut().iter_mut().zip(dy.row(r)).zip(xhat.row(r)) {
            *o += g * xv;
        }
    }
    dg
}

/// Softmax cross-entropy of each row of `logits` against the class index in `target`: the mean
/// loss over rows (`[1, 1]`) and the probabilities its backward needs.
pub(crate) fn cross_entropy(logits: &Tensor, target: &Tensor) -> (Tensor, Tensor) {
    let rows = logits.rows();
    let mut probs = Tensor::scratch(rows, logits.cols());
    let mut total = 0.0f32;
    for r in 0..rows {
        let x = logits.row(r);
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let p = &mut probs.data_mut()[r * x.len()..(r + 1) * x.len()];
        for (o, v) in p.iter_mut().zip(x) {
            *o = exp_approx(v - max);
        }
        let sum: f32 = p.iter().sum();
        for o in p.iter_mut() {
            *o /= sum;
        }
        total += max + sum.ln() - x[target.data()[r] as usize];
    }
    (Tensor::scalar(total / rows as f32), probs)
}

/// The cross-entropy gradient in place over `probs`: `(p − onehot(target)) · factor`.
pub(crate) fn cross_entropy_backward(probs: &mut Tensor, target: &Tensor, factor: f32) {
    let cols = probs.cols();
    for (r, row) in probs.data_mut().chunks_exact_mut(cols).enumerate() {
        row[target.data()[r] as usize] -= 1.0;
        for g in row.iter_mut() {
            *g *= factor;
        }
    }
}

/// Mean squared error: the mean over elements (`[1, 1]`) and `pred − target`.
pub(crate) fn mse(pred: &Tensor, target: &Tensor) -> (Tensor, Tensor) {
    let mut diff = pred.clone();
    for (d, t) in diff.data_mut().iter_mut().zip(target.data()) {
        *d -= t;
    }
    let total: f32 = diff.data().iter().map(|d| d * d).sum();
    let loss = total / diff.len() as f32;
    (Tensor::scalar(loss), diff)
}

/// `x ← factor · x`.
pub(crate) fn scale(x: &mut Tensor, factor: f32) {
    for d in x.data_mut() {
        *d *= factor;
    }
}

/// One SGD-momentum update, element by element: `v ← μ·v + g; p ← p − lr·v`.
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
