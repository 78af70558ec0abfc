//! The backend seam: the tensor operations layers, losses and optimizers are made of, each
//! choosing its device once — here — from where its tensors live: the host backend (`host.rs`:
//! `f32` buffers in main memory, one thread) or the CUDA backend
//! ([`cuda::ops`](crate::cuda), kernels from `kernels/ops.cu`; everything that touches cudarc
//! stays under `cuda/`). Layers call these functions and never look at a device, so a layer made
//! of them — a user's own included — runs wherever its stage runs.
//!
//! Each function checks the shapes it is given, for both devices, before dispatching. Adding an
//! operation: its host function in `host.rs` (or a file of its own, as GELU), its kernel in
//! `kernels/ops.cu` with a launcher in `cuda/ops.rs`, and a dispatching function here.
//!
//! Matrix products dispatch in [`matmul`](crate::matmul), elementwise tensor arithmetic (sums,
//! bias rows, column sums) in [`Tensor`]'s own methods.

mod gelu;
mod host;
mod wide;

pub use gelu::exp_approx;

use crate::error::{Error, Result};
use crate::optim::AdamScalars;
use crate::rng::Stream;
use crate::tensor::Tensor;

/// GELU (tanh approximation, see `gelu.rs`) of every element.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.is_host() {
        Ok(gelu::forward(x))
    } else {
        crate::cuda::ops::gelu_forward(x)
    }
}

/// The input gradient of GELU, `dx = gelu'(x) ⊙ dy`, written over `dy`'s buffer.
pub fn gelu_backward(x: &Tensor, mut dy: Tensor) -> Result<Tensor> {
    x.check_same(&dy, "GELU backward (x vs dy)")?;
    if x.is_host() {
        gelu::backward(x, &mut dy);
    } else {
        crate::cuda::ops::gelu_backward(x, &mut dy)?;
    }
    Ok(dy)
}

/// Inverted dropout in place: element `k` of `t` is kept, and scaled by `1/(1 − rate)`, iff draw
/// `k` of `stream` is at least `rate`. The mask is a pure function of the stream and `k`.
pub fn dropout(t: &mut Tensor, stream: &Stream, rate: f32) -> Result<()> {
    if rate <= 0.0 {
        return Ok(());
    }
    let scale = 1.0 / (1.0 - rate);
    if t.is_host() {
        host::dropout(t, stream, rate, scale);
        Ok(())
    } else {
        crate::cuda::ops::dropout(t, stream.key(), rate, scale)
    }
}

/// Softmax over the causal past of attention scores, in place: `s` is `[rows, heads·seq]`, row
/// `r` is token `r mod seq` of its sequence and head `h` its columns `h·seq..(h+1)·seq`; token
/// `i`'s first `i + 1` scores of each head, times `scale`, become probabilities and the rest 0.
/// Host tensors only, for now (an error naming the device otherwise).
pub fn causal_softmax(s: &mut Tensor, seq: usize, scale: f32) -> Result<()> {
    check_heads("causal softmax", s, seq)?;
    host_only("causal softmax", s)?;
    host::causal_softmax(s, seq, scale);
    Ok(())
}

/// The causal softmax's backward, in place: `g`, the gradient with respect to the
/// probabilities `p`, becomes the gradient with respect to the scores,
/// `p ⊙ (g − Σ g·p)·scale` per head of each row. Host tensors only, for now.
pub fn causal_softmax_backward(p: &Tensor, g: &mut Tensor, seq: usize, scale: f32) -> Result<()> {
    check_heads("causal softmax backward", p, seq)?;
    if g.shape() != p.shape() {
        return Err(Error::Shape {
            place: "causal softmax backward".into(),
            reason: format!("gradient {:?} for probabilities {:?}", g.shape(), p.shape()),
        });
    }
    host_only("causal softmax backward", p)?;
    host_only("causal softmax backward", g)?;
    host::causal_softmax_backward(p, g, seq, scale);
    Ok(())
}

/// An error unless `t` is whole sequences of `seq` rows with whole heads of `seq` columns.
fn check_heads(place: &str, t: &Tensor, seq: usize) -> Result<()> {
    if seq == 0 || t.cols() == 0 || t.rows() % seq != 0 || t.cols() % seq != 0 {
        return Err(Error::Shape {
            place: place.into(),
            reason: format!("{:?} is not whole sequences and heads of {seq}", t.shape()),
        });
    }
    Ok(())
}

/// An error naming `place` and the device unless `t` is on the host.
fn host_only(place: &str, t: &Tensor) -> Result<()> {
    if t.is_host() {
        return Ok(());
    }
    Err(Error::Device {
        device: t.device().to_string(),
        reason: format!("{place} runs on the host only, for now; keep attention on a CPU stage"),
    })
}

/// [`dropout`] where only the leading part of each segment can be nonzero: `t` is cut into
/// segments of `segment` elements; segment `s` gets the mask on its first `len(s)` elements
/// (element `k` of `t` kept, and scaled, iff draw `k` is at least `rate`, as in [`dropout`]) and
/// zeros after them. For attention's probabilities, whose causally masked part is zero anyway:
/// it draws for the past only, about half. With `rate` 0 it does nothing, like [`dropout`].
/// Host tensors only (an error naming the device otherwise).
pub fn dropout_prefixes(
    t: &mut Tensor,
    stream: &Stream,
    rate: f32,
    segment: usize,
    len: impl Fn(usize) -> usize,
) -> Result<()> {
    host_only("dropout on the leading part of segments", t)?;
    if segment == 0 || t.len() % segment != 0 {
        return Err(Error::Shape {
            place: "dropout on the leading part of segments".into(),
            reason: format!("{:?} is not whole segments of {segment} elements", t.shape()),
        });
    }
    if rate <= 0.0 {
        return Ok(());
    }
    host::dropout_prefixes(t, stream, rate, 1.0 / (1.0 - rate), segment, len);
    Ok(())
}

/// Layer normalisation of each row of `x` with scale `gamma` and shift `beta` (`[1, width]`):
/// `[y, x̂, rstd]`, `x̂ = (x − mean)·rstd`, `rstd = 1/√(var + eps)` (`[rows, 1]`).
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<[Tensor; 3]> {
    check_row("LayerNorm forward (γ)", gamma, x.cols())?;
    check_row("LayerNorm forward (β)", beta, x.cols())?;
    if x.is_host() {
        Ok(host::layer_norm(x, gamma, beta, eps))
    } else {
        crate::cuda::ops::layer_norm_forward(x, gamma, beta, eps)
    }
}

/// The input gradient of [`layer_norm`]: `dx = rstd · (d − mean(d) − x̂ · mean(d ⊙ x̂))` with
/// `d = dy ⊙ γ`.
pub fn layer_norm_backward_input(xhat: &Tensor, rstd: &Tensor, gamma: &Tensor, dy: &Tensor) -> Result<Tensor> {
    xhat.check_same(dy, "LayerNorm backward_input (x̂ vs dy)")?;
    check_row("LayerNorm backward_input (γ)", gamma, dy.cols())?;
    if rstd.shape() != [dy.rows(), 1] {
        return Err(Error::Shape {
            place: "LayerNorm backward_input (rstd)".into(),
            reason: format!("rstd is {:?}, dy {:?}", rstd.shape(), dy.shape()),
        });
    }
    if dy.is_host() {
        Ok(host::layer_norm_backward_input(xhat, rstd, gamma, dy))
    } else {
        crate::cuda::ops::layer_norm_backward_input(xhat, rstd, gamma, dy)
    }
}

/// The scale's gradient of [`layer_norm`]: `dγ = Σ_rows dy ⊙ x̂` (`[1, width]`).
pub fn layer_norm_gamma_grad(xhat: &Tensor, dy: &Tensor) -> Result<Tensor> {
    xhat.check_same(dy, "LayerNorm weight_grads (x̂ vs dy)")?;
    if dy.is_host() {
        Ok(host::layer_norm_gamma_grad(xhat, dy))
    } else {
        crate::cuda::ops::layer_norm_gamma_grad(xhat, dy)
    }
}

/// Softmax cross-entropy of each row of `logits` against the class index in `target` (`[rows,
/// 1]`, checked by the caller): the mean loss over rows as a `[1, 1]` tensor on the logits'
/// device, and the probabilities its backward needs.
pub fn cross_entropy(logits: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor)> {
    if logits.is_host() {
        Ok(host::cross_entropy(logits, target))
    } else {
        crate::cuda::ops::cross_entropy_forward(logits, target)
    }
}

/// The gradient of [`cross_entropy`] scaled by `factor`, written over `probs`:
/// `(p − onehot(target)) · factor`.
pub fn cross_entropy_backward(probs: &mut Tensor, target: &Tensor, factor: f32) -> Result<()> {
    if probs.is_host() {
        host::cross_entropy_backward(probs, target, factor);
        Ok(())
    } else {
        crate::cuda::ops::cross_entropy_backward(probs, target, factor)
    }
}

/// Mean squared error over every element: the loss as a `[1, 1]` tensor on `pred`'s device, and
/// `pred − target`, which its backward needs.
pub fn mse(pred: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor)> {
    pred.check_same(target, "MSE (prediction vs target)")?;
    if pred.is_host() {
        Ok(host::mse(pred, target))
    } else {
        crate::cuda::ops::mse_forward(pred, target)
    }
}

/// `x ← factor · x`.
pub fn scale(x: &mut Tensor, factor: f32) -> Result<()> {
    if x.is_host() {
        host::scale(x, factor);
        Ok(())
    } else {
        crate::cuda::ops::scale(x, factor)
    }
}

/// One SGD-momentum update of parameter `p` from gradient `g` with velocity `v`:
/// `v ← μ·v + g; p ← p − lr·v`.
pub(crate) fn sgd_step(p: &mut Tensor, g: &Tensor, v: &mut Tensor, lr: f32, momentum: f32) -> Result<()> {
    p.check_same(g, "SGD (parameter vs gradient)")?;
    p.check_same(v, "SGD (parameter vs velocity)")?;
    if p.is_host() {
        host::sgd_step(p.data_mut(), g.data(), v.data_mut(), lr, momentum);
        Ok(())
    } else {
        crate::cuda::ops::sgd_step(p, g, v, lr, momentum)
    }
}

/// One Adam update of parameter `p` from gradient `g` with moments `m`, `v`.
pub(crate) fn adam_step(p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, s: AdamScalars) -> Result<()> {
    p.check_same(g, "Adam (parameter vs gradient)")?;
    p.check_same(m, "Adam (parameter vs first moment)")?;
    p.check_same(v, "Adam (parameter vs second moment)")?;
    if p.is_host() {
        host::adam_step(p.data_mut(), g.data(), m.data_mut(), v.data_mut(), s);
        Ok(())
    } else {
        crate::cuda::ops::adam_step(p, g, m, v, s)
    }
}

/// The host's SGD and Adam updates on plain slices, for the CUDA emulation's tests.
#[cfg(test)]
pub(crate) use host::{adam_step as host_adam_step, sgd_step as host_sgd_step};

fn check_row(place: &str, t: &Tensor, width: usize) -> Result<()> {
    if t.shape() == [1, width] {
        return Ok(());
    }
    Err(Error::Shape { place: place.into(), reason: format!("{:?} for rows of width {width}", t.shape()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked_before_any_backend_runs() {
        let x = Tensor::zeros(3, 4);
        fn e<T>(r: Result<T>) -> String {
            r.map(drop).unwrap_err().to_string()
        }
        assert!(
            e(layer_norm(&x, &Tensor::zeros(1, 5), &Tensor::zeros(1, 4), 1e-5)).contains("[1, 5] for rows of width 4")
        );
        assert!(e(layer_norm_backward_input(&x, &Tensor::zeros(2, 1), &Tensor::zeros(1, 4), &x)).contains("rstd"));
        assert!(e(gelu_backward(&x, Tensor::zeros(4, 3))).contains("GELU backward"));
        assert!(e(mse(&x, &Tensor::zeros(3, 1))).contains("MSE"));
        let (mut p, mut m, mut v) = (x.clone(), x.clone(), Tensor::zeros(1, 1));
        let s = AdamScalars { lr: 1.0, beta1: 0.9, beta2: 0.99, eps: 1e-8, c1: 0.1, c2: 0.01 };
        assert!(e(adam_step(&mut p, &x, &mut m, &mut v, s)).contains("second moment"));
        assert!(e(sgd_step(&mut p, &Tensor::zeros(3, 3), &mut m, 0.1, 0.9)).contains("SGD"));
        // Zero-rate dropout is the identity, whatever the stream.
        let mut y = Tensor::full(2, 2, 3.0);
        dropout(&mut y, &Stream::new(&[1]), 0.0).unwrap();
        assert!(y.bit_eq(&Tensor::full(2, 2, 3.0)));
    }

    #[test]
    fn dropout_on_prefixes_is_dropout_on_them_and_zero_after() {
        let stream = Stream::new(&[3, 4]);
        let x = Tensor::from_fn(6, 8, |r, c| 1.0 + (r * 8 + c) as f32);
        let mut whole = x.clone();
        dropout(&mut whole, &stream, 0.3).unwrap();
        let mut parts = x.clone();
        // Segments of 4: segment s keeps its first s % 4 + 1 elements.
        dropout_prefixes(&mut parts, &stream, 0.3, 4, |s| s % 4 + 1).unwrap();
        for (k, (p, w)) in parts.data().iter().zip(whole.data()).enumerate() {
            let (s, j) = (k / 4, k % 4);
            let want = if j <= s % 4 { *w } else { 0.0 };
            assert_eq!(p.to_bits(), want.to_bits(), "element {k}");
        }
        assert!(whole.data().contains(&0.0) && whole.data().iter().any(|v| *v != 0.0));
    }

    #[test]
    fn causal_softmax_normalises_the_past_and_zeroes_the_future() {
        // 2 sequences of 3 tokens, 2 heads.
        let scores = Tensor::from_fn(6, 6, |r, c| ((r * 5 + c * 3) % 7) as f32 - 3.0);
        let mut p = scores.clone();
        causal_softmax(&mut p, 3, 0.5).unwrap();
        for r in 0..6 {
            let i = r % 3;
            for h in 0..2 {
                let row = &p.row(r)[h * 3..(h + 1) * 3];
                let raw = &scores.row(r)[h * 3..(h + 1) * 3];
                let z: f64 = raw[..=i].iter().map(|v| (0.5 * *v as f64).exp()).sum();
                for j in 0..3 {
                    let want = if j <= i { (0.5 * raw[j] as f64).exp() / z } else { 0.0 };
                    assert!((row[j] as f64 - want).abs() < 1e-6, "row {r} head {h} column {j}: {} vs {want}", row[j]);
                }
            }
        }
        let mut g = Tensor::zeros(6, 6);
        assert!(causal_softmax_backward(&p, &mut g, 3, 0.5).is_ok());
        let e = causal_softmax_backward(&p, &mut Tensor::zeros(6, 3), 3, 0.5).unwrap_err().to_string();
        assert!(e.contains("gradient [6, 3] for probabilities [6, 6]"), "{e}");
        let e = causal_softmax(&mut Tensor::zeros(4, 6), 3, 1.0).unwrap_err().to_string();
        assert!(e.contains("not whole sequences and heads of 3"), "{e}");
        assert!(causal_softmax(&mut Tensor::zeros(3, 0), 3, 1.0).is_err(), "no heads is an error, not a panic");
        let stream = Stream::new(&[1]);
        assert!(dropout_prefixes(&mut Tensor::zeros(2, 3), &stream, 0.5, 0, |_| 1).is_err());
        assert!(dropout_prefixes(&mut Tensor::zeros(2, 3), &stream, 0.5, 4, |_| 1).is_err());
    }
}
