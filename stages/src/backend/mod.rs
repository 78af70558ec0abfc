//! The backend seam: the tensor operations layers, losses and optimizers are made of, each
//! choosing its device once — here — from where its tensors live: the host backend (`host.rs`:
//! `f32` buffers in main memory, one thread) or the CUDA backend
//! ([`cuda::ops`](crate::cuda), kernels from `kernels/ops.cu`; everything that touches cudarc
//! stays under `cuda/`). Layers call these functions and never look at a device, so a layer made
//! of them — a user's own included — runs wherever its stage runs.
//!
//! Each function checks the shapes it is given, for both devices, and that its tensors share one
//! element type, before dispatching. Host tensors are `f32` or `f64` (gradient checks); each host
//! function is generic over the [`Element`](crate::Element) and instantiated for both here
//! (`on_host!`), so `f64` runs the very code `f32` does. GPU tensors are `f32` only: an `f64`
//! tensor beside a GPU tensor is an element-type error before anything launches. Adding an
//! operation: its host function in `host.rs` (or a file of its own, as GELU), its kernel in
//! `kernels/ops.cu` with a launcher in `cuda/ops.rs`, and a dispatching function here.
//!
//! Matrix products dispatch in `matmul`, elementwise tensor arithmetic (sums,
//! bias rows, column sums) in [`Tensor`]'s own methods.

mod gelu;
mod host;
pub(crate) mod lanes;
pub(crate) mod wide;

pub use gelu::exp_approx;

use crate::element::Dtype;
use crate::error::{Error, Result};
use crate::optim::AdamScalars;
use crate::rng::Stream;
use crate::tensor::{same_dtype, Tensor};

/// A host function generic over the element, called for `$dtype`'s type.
macro_rules! on_host {
    ($dtype:expr, $($f:ident)::+ ($($arg:expr),* $(,)?)) => {
        match $dtype {
            Dtype::F32 => $($f)::+::<f32>($($arg),*),
            Dtype::F64 => $($f)::+::<f64>($($arg),*),
            Dtype::Stored(format) => return Err($crate::tensor::stored_operand("a host kernel", format)),
        }
    };
}

/// The element type of an operation's tensors; an error naming `place` if they mix `f32` and
/// `f64` (which also refuses an `f64` tensor beside a GPU one).
fn dtype_of(place: &str, tensors: &[&Tensor]) -> Result<Dtype> {
    same_dtype(place, tensors)?;
    Ok(tensors.first().map_or(Dtype::F32, |t| t.dtype()))
}

/// GELU (tanh approximation, see `gelu.rs`) of every element.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.is_host() {
        Ok(on_host!(x.dtype(), gelu::forward(x)))
    } else {
        crate::cuda::ops::gelu_forward(x)
    }
}

/// The input gradient of GELU, `dx = gelu'(x) ⊙ dy`, written over `dy`'s buffer.
pub fn gelu_backward(x: &Tensor, mut dy: Tensor) -> Result<Tensor> {
    x.check_same(&dy, "GELU backward (x vs dy)")?;
    if x.is_host() {
        on_host!(x.dtype(), gelu::backward(x, &mut dy));
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
        on_host!(t.dtype(), host::dropout(t, stream, rate, scale));
        Ok(())
    } else {
        crate::cuda::ops::dropout(t, stream.key(), rate, scale)
    }
}

/// Softmax over the causal past of attention scores, in place: `s` is `[rows, heads·seq]`, row
/// `r` is token `r mod seq` of its sequence and head `h` its columns `h·seq..(h+1)·seq`; token
/// `i`'s first `i + 1` scores of each head, times `scale`, become probabilities and the rest 0.
pub fn causal_softmax(s: &mut Tensor, seq: usize, scale: f32) -> Result<()> {
    check_heads("causal softmax", s, seq)?;
    if s.is_host() {
        on_host!(s.dtype(), host::causal_softmax(s, seq, scale));
        Ok(())
    } else {
        crate::cuda::ops::causal_softmax(s, seq, scale)
    }
}

/// The causal softmax's backward, in place: `g`, the gradient with respect to the
/// probabilities `p`, becomes the gradient with respect to the scores,
/// `p ⊙ (g − Σ g·p)·scale` per head of each row.
pub fn causal_softmax_backward(p: &Tensor, g: &mut Tensor, seq: usize, scale: f32) -> Result<()> {
    check_heads("causal softmax backward", p, seq)?;
    if g.shape() != p.shape() {
        return Err(Error::Shape {
            place: "causal softmax backward".into(),
            reason: format!("gradient {:?} for probabilities {:?}", g.shape(), p.shape()),
        });
    }
    let dtype = dtype_of("causal softmax backward", &[p, g])?;
    if p.is_host() && g.is_host() {
        on_host!(dtype, host::causal_softmax_backward(p, g, seq, scale));
        Ok(())
    } else {
        crate::cuda::ops::causal_softmax_backward(p, g, seq, scale)
    }
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

/// [`dropout`] on the causal past of attention probabilities (or their gradient), laid out as
/// for [`causal_softmax`]: element `k` of the past is kept, and scaled by `1/(1 − rate)`, iff
/// draw `k` of `stream` is at least `rate` (the mask [`dropout`] gives element `k`); the future,
/// zero in the probabilities anyway, becomes 0 — so it draws for about half the elements. With
/// `rate` 0 it does nothing, like [`dropout`].
pub fn causal_dropout(t: &mut Tensor, stream: &Stream, rate: f32, seq: usize) -> Result<()> {
    check_heads("causal dropout", t, seq)?;
    if rate <= 0.0 {
        return Ok(());
    }
    let scale = 1.0 / (1.0 - rate);
    if t.is_host() {
        on_host!(t.dtype(), host::causal_dropout(t, stream, rate, scale, seq));
        Ok(())
    } else {
        crate::cuda::ops::causal_dropout(t, stream.key(), rate, scale, seq)
    }
}

/// Token plus position embeddings: row `r` of the result is `tokens[ids[r]] + positions[r mod
/// seq]`, `seq` being `positions`' rows. `ids` is `[rows, 1]` of whole numbers in
/// `0..tokens.rows()`, in whole sequences — checked here for host ids; on a GPU the kernel
/// cannot report, so an invalid id gives a row of NaN. All three tensors on one device.
pub fn embedding(ids: &Tensor, tokens: &Tensor, positions: &Tensor) -> Result<Tensor> {
    check_ids("embedding", ids, tokens, positions)?;
    if ids.is_host() {
        Ok(on_host!(ids.dtype(), host::embedding(ids, tokens, positions)))
    } else {
        crate::cuda::ops::embedding(ids, tokens, positions)
    }
}

/// The gradients of [`embedding`]'s tables from the output gradient `dy` (`[rows, width]`):
/// each row of `dy` added into its token's row and its position's row, in row order from zero
/// (`[tokens, positions]`, shaped as the tables).
pub fn embedding_grads(ids: &Tensor, dy: &Tensor, tokens: &Tensor, positions: &Tensor) -> Result<[Tensor; 2]> {
    check_ids("embedding gradients", ids, tokens, positions)?;
    if dy.shape() != [ids.rows(), tokens.cols()] {
        return Err(Error::Shape {
            place: "embedding gradients".into(),
            reason: format!("dy {:?} for {} tokens of width {}", dy.shape(), ids.rows(), tokens.cols()),
        });
    }
    let dtype = dtype_of("embedding gradients", &[ids, dy])?;
    if dy.device() != ids.device() {
        return Err(crate::tensor::mixed("embedding gradients", ids.device(), dy.device()));
    }
    if ids.is_host() {
        Ok(on_host!(dtype, host::embedding_grads(ids, dy, tokens.rows(), positions.rows())))
    } else {
        crate::cuda::ops::embedding_grads(ids, dy, tokens.rows(), positions.rows())
    }
}

/// An error unless the tensors share a device and an element type, `ids` is one id per row in
/// whole sequences of the position table, the tables have one width, and (on the host) every id
/// is a whole number below the vocabulary.
fn check_ids(place: &str, ids: &Tensor, tokens: &Tensor, positions: &Tensor) -> Result<()> {
    let dtype = dtype_of(place, &[ids, tokens, positions])?;
    if let Some(t) = [tokens, positions].into_iter().find(|t| t.device() != ids.device()) {
        return Err(crate::tensor::mixed(place, ids.device(), t.device()));
    }
    let (vocab, seq) = (tokens.rows(), positions.rows());
    let shape = |reason: String| Err(Error::Shape { place: place.into(), reason });
    if tokens.cols() != positions.cols() || vocab == 0 || seq == 0 {
        return shape(format!("token table {:?} and position table {:?}", tokens.shape(), positions.shape()));
    }
    if ids.cols() != 1 || ids.rows() % seq != 0 {
        return shape(format!("ids {:?}: one token id per row, in whole sequences of {seq} rows", ids.shape()));
    }
    if !ids.is_host() {
        return Ok(());
    }
    match on_host!(dtype, first_bad_index(ids, vocab)) {
        Some((r, t)) => shape(format!("row {r} holds {t}, not a token id in 0..{vocab}")),
        None => Ok(()),
    }
}

/// The first row of a host `[rows, 1]` tensor of `E` that is not a whole number in `0..n`, with
/// its value as written.
pub(crate) fn first_bad_index<E: crate::Element>(t: &Tensor, n: usize) -> Option<(usize, String)> {
    let bad = |v: E| !(v.is_whole() && v >= E::ZERO && (v.to_f64() as usize) < n);
    t.host_of::<E>().iter().enumerate().find(|(_, v)| bad(**v)).map(|(r, v)| (r, v.to_string()))
}

/// Layer normalisation of each row of `x` with scale `gamma` and shift `beta` (`[1, width]`):
/// `[y, x̂, rstd]`, `x̂ = (x − mean)·rstd`, `rstd = 1/√(var + eps)` (`[rows, 1]`).
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<[Tensor; 3]> {
    check_row("LayerNorm forward (γ)", gamma, x.cols())?;
    check_row("LayerNorm forward (β)", beta, x.cols())?;
    let dtype = dtype_of("LayerNorm forward", &[x, gamma, beta])?;
    if x.is_host() {
        Ok(on_host!(dtype, host::layer_norm(x, gamma, beta, eps)))
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
    let dtype = dtype_of("LayerNorm backward_input", &[dy, rstd, gamma])?;
    if dy.is_host() {
        Ok(on_host!(dtype, host::layer_norm_backward_input(xhat, rstd, gamma, dy)))
    } else {
        crate::cuda::ops::layer_norm_backward_input(xhat, rstd, gamma, dy)
    }
}

/// The scale's gradient of [`layer_norm`]: `dγ = Σ_rows dy ⊙ x̂` (`[1, width]`).
pub fn layer_norm_gamma_grad(xhat: &Tensor, dy: &Tensor) -> Result<Tensor> {
    xhat.check_same(dy, "LayerNorm weight_grads (x̂ vs dy)")?;
    if dy.is_host() {
        Ok(on_host!(dy.dtype(), host::layer_norm_gamma_grad(xhat, dy)))
    } else {
        crate::cuda::ops::layer_norm_gamma_grad(xhat, dy)
    }
}

/// Softmax cross-entropy of each row of `logits` against the class index in `target` (`[rows,
/// 1]`, checked by the caller): the mean loss over rows as a `[1, 1]` tensor on the logits'
/// device, and the probabilities its backward needs.
pub fn cross_entropy(logits: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor)> {
    let dtype = dtype_of("cross-entropy", &[logits, target])?;
    if logits.is_host() {
        Ok(on_host!(dtype, host::cross_entropy(logits, target)))
    } else {
        crate::cuda::ops::cross_entropy_forward(logits, target)
    }
}

/// The gradient of [`cross_entropy`] scaled by `factor`, written over `probs`:
/// `(p − onehot(target)) · factor`.
pub fn cross_entropy_backward(probs: &mut Tensor, target: &Tensor, factor: f32) -> Result<()> {
    let dtype = dtype_of("cross-entropy backward", &[probs, target])?;
    if probs.is_host() {
        on_host!(dtype, host::cross_entropy_backward(probs, target, factor));
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
        Ok(on_host!(pred.dtype(), host::mse(pred, target)))
    } else {
        crate::cuda::ops::mse_forward(pred, target)
    }
}

/// `x ← factor · x`.
pub fn scale(x: &mut Tensor, factor: f32) -> Result<()> {
    if x.is_host() {
        on_host!(x.dtype(), host::scale(x, factor));
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
    trains_in_f32("SGD", p)?;
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
    trains_in_f32("Adam", p)?;
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

/// An error unless `p` is `f32`: optimizers update the parameters a model trains, never the
/// `f64` copies of a gradient check.
fn trains_in_f32(place: &str, p: &Tensor) -> Result<()> {
    if p.dtype() == Dtype::F32 {
        return Ok(());
    }
    Err(Error::Dtype {
        place: format!("{place} step"),
        reason: "optimizers update f32 parameters; convert with to_f32() to train".into(),
    })
}

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
    fn causal_dropout_is_dropout_on_the_past_and_zero_in_the_future() {
        let stream = Stream::new(&[3, 4]);
        // 2 sequences of 3 tokens, 2 heads of 3 columns.
        let x = Tensor::from_fn(6, 6, |r, c| 1.0 + (r * 6 + c) as f32);
        let mut whole = x.clone();
        dropout(&mut whole, &stream, 0.3).unwrap();
        let mut causal = x.clone();
        causal_dropout(&mut causal, &stream, 0.3, 3).unwrap();
        for (k, (p, w)) in causal.data().iter().zip(whole.data()).enumerate() {
            let (r, j) = (k / 6, k % 3);
            let want = if j <= r % 3 { *w } else { 0.0 };
            assert_eq!(p.to_bits(), want.to_bits(), "element {k}");
        }
        assert!(whole.data().contains(&0.0) && whole.data().iter().any(|v| *v != 0.0));
        let mut same = x.clone();
        causal_dropout(&mut same, &stream, 0.0, 3).unwrap();
        assert!(same.bit_eq(&x), "rate 0 leaves even the future alone");
        assert!(causal_dropout(&mut Tensor::zeros(2, 3), &stream, 0.5, 0).is_err());
        assert!(causal_dropout(&mut Tensor::zeros(3, 4), &stream, 0.5, 2).is_err());
    }

    #[test]
    fn embeddings_add_token_and_position_rows_and_refuse_bad_ids() {
        let tokens = Tensor::from_fn(5, 3, |r, c| (10 * r + c) as f32);
        let positions = Tensor::from_fn(2, 3, |r, c| 0.5 * (r + c) as f32);
        let ids = Tensor::new(4, 1, vec![4.0, 0.0, 4.0, 2.0]).unwrap();
        let y = embedding(&ids, &tokens, &positions).unwrap();
        assert_eq!(y.row(2), &[40.0, 41.5, 43.0][..]);
        assert_eq!(y.row(3), &[20.5, 22.0, 23.5][..]);
        let dy = Tensor::from_fn(4, 3, |r, c| (1 + r * 3 + c) as f32);
        let [dt, dp] = embedding_grads(&ids, &dy, &tokens, &positions).unwrap();
        assert_eq!(dt.row(4), &[1.0 + 7.0, 2.0 + 8.0, 3.0 + 9.0][..], "token 4 at rows 0 and 2");
        assert!(dt.row(1).iter().chain(dt.row(3)).all(|v| *v == 0.0));
        assert_eq!(dp.row(1), &[4.0 + 10.0, 5.0 + 11.0, 6.0 + 12.0][..], "position 1 at rows 1 and 3");
        fn e<T>(r: Result<T>) -> String {
            r.map(drop).unwrap_err().to_string()
        }
        for (bad, why) in [(5.0, "holds 5"), (-1.0, "holds -1"), (1.5, "holds 1.5"), (f32::NAN, "holds NaN")] {
            let ids = Tensor::new(2, 1, vec![0.0, bad]).unwrap();
            assert!(e(embedding(&ids, &tokens, &positions)).contains(why), "{bad}");
        }
        assert!(e(embedding(&Tensor::zeros(3, 1), &tokens, &positions)).contains("whole sequences of 2"));
        assert!(e(embedding_grads(&ids, &Tensor::zeros(4, 2), &tokens, &positions)).contains("dy [4, 2]"));
        assert!(e(embedding(&ids, &tokens, &Tensor::zeros(2, 4))).contains("position table [2, 4]"));
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
    }
}
