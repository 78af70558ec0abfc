//! The layer, loss and optimizer ops on GPU tensors: each launches the kernel of `ops.cu` that
//! repeats the CPU code's arithmetic in the CPU code's order (one thread per element, row or
//! column), so everything except the matrix products gives the CPU's bits.
//!
//! Invariant: every function checks that its tensors are on one GPU and have the shapes the
//! kernel indexes before launching, so a kernel never reads or writes past a buffer.

use super::runtime::{launch, DeviceBuffer, KArg};
use crate::error::{Error, Result};
use crate::tensor::{mixed, Store, Tensor};

fn buf<'a>(t: &'a Tensor, place: &str) -> Result<&'a DeviceBuffer> {
    t.device_buffer().ok_or_else(|| Error::Device {
        device: t.device().to_string(),
        reason: format!("{place} runs on a GPU; this tensor is on the host (move it with Tensor::to_device)"),
    })
}

fn buf_mut<'a>(t: &'a mut Tensor, place: &str) -> Result<&'a mut DeviceBuffer> {
    let dev = t.device();
    match t.store_mut() {
        Store::Cuda(b) => Ok(b),
        Store::Host(_) | Store::HostF64(_) | Store::Stored(..) => Err(Error::Device {
            device: dev.to_string(),
            reason: format!("{place} runs on a GPU; this tensor is on the host (move it with Tensor::to_device)"),
        }),
    }
}

fn same_gpu(place: &str, ts: &[&Tensor]) -> Result<()> {
    match ts.iter().find(|t| t.device() != ts[0].device()) {
        Some(t) => Err(mixed(place, ts[0].device(), t.device())),
        None => Ok(()),
    }
}

fn shape(place: &str, reason: String) -> Error {
    Error::Shape { place: place.into(), reason }
}

/// A size as the kernels' `unsigned int`; an error past 2³² − 1.
fn n32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        shape("a GPU kernel", format!("size {n} exceeds the kernels' 32-bit sizes; use smaller micro-batches"))
    })
}

/// `a += b`, element by element (`Tensor::add_assign`; shapes checked there).
pub(crate) fn add_assign(a: &mut DeviceBuffer, b: &DeviceBuffer) -> Result<()> {
    let (n, gpu) = (a.len(), a.gpu.clone());
    if b.len() != n {
        return Err(shape("add_assign on cuda", format!("{n} and {} values", b.len())));
    }
    launch(&gpu, "k_add_assign", n, &mut [KArg::Out(a), KArg::In(b), KArg::U32(n32(n)?)])
}

/// Column sums of a `[rows, cols]` buffer, as `cols` values.
pub(crate) fn column_sums(x: &DeviceBuffer, rows: usize, cols: usize) -> Result<DeviceBuffer> {
    if x.len() != rows * cols {
        return Err(shape("column sums on cuda", format!("{} values for [{rows}, {cols}]", x.len())));
    }
    let mut out = x.scratch(cols)?;
    let gpu = x.gpu.clone();
    launch(
        &gpu,
        "k_column_sums",
        cols,
        &mut [KArg::In(x), KArg::Out(&mut out), KArg::U32(n32(rows)?), KArg::U32(n32(cols)?)],
    )?;
    Ok(out)
}

/// `y[r, :] += bias` for every row (`Linear::forward`).
pub(crate) fn add_bias(y: &mut Tensor, bias: &Tensor) -> Result<()> {
    same_gpu("bias add", &[y, bias])?;
    let (rows, cols) = (y.rows(), y.cols());
    if bias.shape() != [1, cols] {
        return Err(shape("bias add on cuda", format!("bias {:?} for output {:?}", bias.shape(), y.shape())));
    }
    let b = buf(bias, "bias add")?;
    let out = buf_mut(y, "bias add")?;
    let gpu = out.gpu.clone();
    launch(
        &gpu,
        "k_add_bias",
        rows * cols,
        &mut [KArg::Out(out), KArg::In(b), KArg::U32(n32(rows)?), KArg::U32(n32(cols)?)],
    )
}

/// GELU of every element (`backend::gelu`).
pub(crate) fn gelu_forward(x: &Tensor) -> Result<Tensor> {
    let mut y = x.scratch_like(x.rows(), x.cols())?;
    let n = x.len();
    let xb = buf(x, "GELU")?;
    let gpu = xb.gpu.clone();
    launch(&gpu, "k_gelu_forward", n, &mut [KArg::In(xb), KArg::Out(buf_mut(&mut y, "GELU")?), KArg::U32(n32(n)?)])?;
    Ok(y)
}

/// `dy *= GELU'(x)` in place (`backend::gelu_backward`; shapes checked there).
pub(crate) fn gelu_backward(x: &Tensor, dy: &mut Tensor) -> Result<()> {
    same_gpu("GELU backward", &[x, dy])?;
    let n = x.len();
    let xb = buf(x, "GELU backward")?;
    let gpu = xb.gpu.clone();
    launch(
        &gpu,
        "k_gelu_backward",
        n,
        &mut [KArg::In(xb), KArg::Out(buf_mut(dy, "GELU backward")?), KArg::U32(n32(n)?)],
    )
}

/// Dropout with the counter-based stream keyed `key` (`backend::dropout`).
pub(crate) fn dropout(t: &mut Tensor, key: u64, rate: f32, scale: f32) -> Result<()> {
    let n = t.len();
    let b = buf_mut(t, "dropout")?;
    let gpu = b.gpu.clone();
    launch(
        &gpu,
        "k_dropout",
        n,
        &mut [KArg::Out(b), KArg::U32(n32(n)?), KArg::U64(key), KArg::F32(rate), KArg::F32(scale)],
    )
}

/// The causal softmax in place over `[rows, heads·seq]` scores (`backend::causal_softmax`;
/// shapes checked there).
pub(crate) fn causal_softmax(s: &mut Tensor, seq: usize, scale: f32) -> Result<()> {
    let (segments, heads) = (s.len() / seq, s.cols() / seq);
    let b = buf_mut(s, "causal softmax")?;
    let gpu = b.gpu.clone();
    launch(
        &gpu,
        "k_causal_softmax",
        segments,
        &mut [KArg::Out(b), KArg::U32(n32(segments)?), KArg::U32(n32(heads)?), KArg::U32(n32(seq)?), KArg::F32(scale)],
    )
}

/// The causal softmax's backward over `g` in place (`backend::causal_softmax_backward`).
pub(crate) fn causal_softmax_backward(p: &Tensor, g: &mut Tensor, seq: usize, scale: f32) -> Result<()> {
    same_gpu("causal softmax backward", &[p, g])?;
    let segments = p.len() / seq;
    let pb = buf(p, "causal softmax backward")?;
    let gpu = pb.gpu.clone();
    launch(
        &gpu,
        "k_causal_softmax_backward",
        segments,
        &mut [
            KArg::In(pb),
            KArg::Out(buf_mut(g, "causal softmax backward")?),
            KArg::U32(n32(segments)?),
            KArg::U32(n32(seq)?),
            KArg::F32(scale),
        ],
    )
}

/// Dropout on the causal past, zero in the future (`backend::causal_dropout`).
pub(crate) fn causal_dropout(t: &mut Tensor, key: u64, rate: f32, scale: f32, seq: usize) -> Result<()> {
    let (rows, cols) = (t.rows(), t.cols());
    let n = n32(t.len())?;
    let b = buf_mut(t, "causal dropout")?;
    let gpu = b.gpu.clone();
    launch(
        &gpu,
        "k_causal_dropout",
        n as usize,
        &mut [
            KArg::Out(b),
            KArg::U32(n32(rows)?),
            KArg::U32(n32(cols)?),
            KArg::U32(n32(seq)?),
            KArg::U64(key),
            KArg::F32(rate),
            KArg::F32(scale),
        ],
    )
}

/// Token plus position embeddings (`backend::embedding`; shapes checked there).
pub(crate) fn embedding(ids: &Tensor, tokens: &Tensor, positions: &Tensor) -> Result<Tensor> {
    same_gpu("embedding", &[ids, tokens, positions])?;
    let (rows, width, vocab, seq) = (ids.rows(), tokens.cols(), tokens.rows(), positions.rows());
    let n = n32(rows * width)?;
    let mut out = tokens.scratch_like(rows, width)?;
    let place = "embedding";
    let (ib, tb, pb) = (buf(ids, place)?, buf(tokens, place)?, buf(positions, place)?);
    let gpu = ib.gpu.clone();
    launch(
        &gpu,
        "k_embedding",
        n as usize,
        &mut [
            KArg::In(ib),
            KArg::In(tb),
            KArg::In(pb),
            KArg::Out(buf_mut(&mut out, place)?),
            KArg::U32(n32(rows)?),
            KArg::U32(n32(width)?),
            KArg::U32(n32(vocab)?),
            KArg::U32(n32(seq)?),
        ],
    )?;
    Ok(out)
}

/// The two tables' gradients, `[vocab, width]` and `[seq, width]` (`backend::embedding_grads`).
pub(crate) fn embedding_grads(ids: &Tensor, dy: &Tensor, vocab: usize, seq: usize) -> Result<[Tensor; 2]> {
    same_gpu("embedding gradients", &[ids, dy])?;
    let (rows, width) = (dy.rows(), dy.cols());
    n32(vocab * width)?;
    n32(seq * width)?;
    let place = "embedding gradients";
    let mut tokens = dy.scratch_like(vocab, width)?;
    let mut positions = dy.scratch_like(seq, width)?;
    let (ib, db) = (buf(ids, place)?, buf(dy, place)?);
    let gpu = ib.gpu.clone();
    launch(
        &gpu,
        "k_embedding_token_grad",
        width,
        &mut [
            KArg::In(ib),
            KArg::In(db),
            KArg::Out(buf_mut(&mut tokens, place)?),
            KArg::U32(n32(rows)?),
            KArg::U32(n32(width)?),
            KArg::U32(n32(vocab)?),
        ],
    )?;
    launch(
        &gpu,
        "k_embedding_position_grad",
        seq * width,
        &mut [
            KArg::In(db),
            KArg::Out(buf_mut(&mut positions, place)?),
            KArg::U32(n32(rows)?),
            KArg::U32(n32(width)?),
            KArg::U32(n32(seq)?),
        ],
    )?;
    Ok([tokens, positions])
}

/// Layer norm of each row: `(y, x̂, rstd)` (`backend::layer_norm`; widths checked there).
pub(crate) fn layer_norm_forward(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<[Tensor; 3]> {
    same_gpu("LayerNorm forward", &[x, gamma, beta])?;
    let (rows, cols) = (x.rows(), x.cols());
    if gamma.len() != cols || beta.len() != cols {
        return Err(shape(
            "LayerNorm forward on cuda",
            format!("gain {:?} and shift {:?} for rows of {cols}", gamma.shape(), beta.shape()),
        ));
    }
    let mut y = x.scratch_like(rows, cols)?;
    let mut xhat = x.scratch_like(rows, cols)?;
    let mut rstd = x.scratch_like(rows, 1)?;
    let (xb, gb, bb) = (buf(x, "LayerNorm")?, buf(gamma, "LayerNorm")?, buf(beta, "LayerNorm")?);
    let gpu = xb.gpu.clone();
    launch(
        &gpu,
        "k_layer_norm_forward",
        rows,
        &mut [
            KArg::In(xb),
            KArg::In(gb),
            KArg::In(bb),
            KArg::Out(buf_mut(&mut y, "LayerNorm")?),
            KArg::Out(buf_mut(&mut xhat, "LayerNorm")?),
            KArg::Out(buf_mut(&mut rstd, "LayerNorm")?),
            KArg::U32(n32(rows)?),
            KArg::U32(n32(cols)?),
            KArg::F32(eps),
        ],
    )?;
    Ok([y, xhat, rstd])
}

/// The input gradient of a layer norm (`backend::layer_norm_backward_input`; shapes checked there).
pub(crate) fn layer_norm_backward_input(xhat: &Tensor, rstd: &Tensor, gamma: &Tensor, dy: &Tensor) -> Result<Tensor> {
    same_gpu("LayerNorm backward", &[xhat, rstd, gamma, dy])?;
    let (rows, cols) = (dy.rows(), dy.cols());
    if rstd.len() != rows || gamma.len() != cols || xhat.shape() != dy.shape() {
        return Err(shape(
            "LayerNorm backward on cuda",
            format!("x̂ {:?}, rstd {:?}, gain {:?} for dy {:?}", xhat.shape(), rstd.shape(), gamma.shape(), dy.shape()),
        ));
    }
    let mut dx = dy.scratch_like(rows, cols)?;
    let place = "LayerNorm backward";
    let (xb, rb, gb, db) = (buf(xhat, place)?, buf(rstd, place)?, buf(gamma, place)?, buf(dy, place)?);
    let gpu = xb.gpu.clone();
    launch(
        &gpu,
        "k_layer_norm_backward_input",
        rows,
        &mut [
            KArg::In(xb),
            KArg::In(rb),
            KArg::In(gb),
            KArg::In(db),
            KArg::Out(buf_mut(&mut dx, place)?),
            KArg::U32(n32(rows)?),
            KArg::U32(n32(cols)?),
        ],
    )?;
    Ok(dx)
}

/// `Σ_rows dy ⊙ x̂`, the gradient of a layer norm's gain (`backend::layer_norm_gamma_grad`).
pub(crate) fn layer_norm_gamma_grad(xhat: &Tensor, dy: &Tensor) -> Result<Tensor> {
    same_gpu("LayerNorm gain gradient", &[xhat, dy])?;
    let (rows, cols) = (dy.rows(), dy.cols());
    if xhat.shape() != dy.shape() {
        return Err(shape("LayerNorm gain gradient on cuda", format!("x̂ {:?}, dy {:?}", xhat.shape(), dy.shape())));
    }
    let mut dg = dy.scratch_like(1, cols)?;
    let (xb, db) = (buf(xhat, "LayerNorm")?, buf(dy, "LayerNorm")?);
    let gpu = xb.gpu.clone();
    launch(
        &gpu,
        "k_layer_norm_gamma_grad",
        cols,
        &mut [
            KArg::In(xb),
            KArg::In(db),
            KArg::Out(buf_mut(&mut dg, "LayerNorm")?),
            KArg::U32(n32(rows)?),
            KArg::U32(n32(cols)?),
        ],
    )?;
    Ok(dg)
}

/// Softmax cross-entropy: the mean loss over rows (a `[1, 1]` tensor on the GPU: reading it is
/// left to the caller, so nothing waits here) and the probabilities (`LossKind::forward`; the
/// target, class indices checked on the host, is on the logits' GPU).
pub(crate) fn cross_entropy_forward(logits: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor)> {
    same_gpu("cross-entropy", &[logits, target])?;
    let (rows, cols) = (logits.rows(), logits.cols());
    let mut probs = logits.scratch_like(rows, cols)?;
    let mut row_loss = logits.scratch_like(rows, 1)?;
    let (lb, tb) = (buf(logits, "cross-entropy")?, buf(target, "cross-entropy")?);
    let gpu = lb.gpu.clone();
    launch(
        &gpu,
        "k_cross_entropy_forward",
        rows,
        &mut [
            KArg::In(lb),
            KArg::In(tb),
            KArg::Out(buf_mut(&mut probs, "cross-entropy")?),
            KArg::Out(buf_mut(&mut row_loss, "cross-entropy")?),
            KArg::U32(n32(rows)?),
            KArg::U32(n32(cols)?),
        ],
    )?;
    // Summed in row order from 0 and divided by the rows, as the CPU loss does.
    let mut loss = logits.scratch_like(1, 1)?;
    launch(
        &gpu,
        "k_mean",
        1,
        &mut [
            KArg::In(buf(&row_loss, "cross-entropy")?),
            KArg::Out(buf_mut(&mut loss, "cross-entropy")?),
            KArg::U32(n32(rows)?),
        ],
    )?;
    Ok((loss, probs))
}

/// The cross-entropy gradient in place: `(probs − onehot(target))·factor`.
pub(crate) fn cross_entropy_backward(probs: &mut Tensor, target: &Tensor, factor: f32) -> Result<()> {
    same_gpu("cross-entropy backward", &[probs, target])?;
    let (rows, cols) = (probs.rows(), probs.cols());
    let tb = buf(target, "cross-entropy backward")?;
    let pb = buf_mut(probs, "cross-entropy backward")?;
    let gpu = pb.gpu.clone();
    launch(
        &gpu,
        "k_cross_entropy_backward",
        rows * cols,
        &mut [KArg::Out(pb), KArg::In(tb), KArg::U32(n32(rows)?), KArg::U32(n32(cols)?), KArg::F32(factor)],
    )
}

/// Mean squared error: the loss (a `[1, 1]` tensor on the GPU) and `prediction − target`.
pub(crate) fn mse_forward(pred: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor)> {
    same_gpu("MSE", &[pred, target])?;
    let n = pred.len();
    let mut diff = pred.scratch_like(pred.rows(), pred.cols())?;
    let mut total = pred.scratch_like(1, 1)?;
    let (pb, tb) = (buf(pred, "MSE")?, buf(target, "MSE")?);
    let gpu = pb.gpu.clone();
    launch(
        &gpu,
        "k_sub",
        n,
        &mut [KArg::In(pb), KArg::In(tb), KArg::Out(buf_mut(&mut diff, "MSE")?), KArg::U32(n32(n)?)],
    )?;
    // One thread sums in element order, as the CPU loss does.
    launch(
        &gpu,
        "k_sum_squares",
        1,
        &mut [KArg::In(buf(&diff, "MSE")?), KArg::Out(buf_mut(&mut total, "MSE")?), KArg::U32(n32(n)?)],
    )?;
    launch(&gpu, "k_divide", 1, &mut [KArg::Out(buf_mut(&mut total, "MSE")?), KArg::U32(1), KArg::F32(n as f32)])?;
    Ok((total, diff))
}

/// `x *= factor`.
pub(crate) fn scale(x: &mut Tensor, factor: f32) -> Result<()> {
    let n = x.len();
    let b = buf_mut(x, "scale")?;
    let gpu = b.gpu.clone();
    launch(&gpu, "k_scale", n, &mut [KArg::Out(b), KArg::U32(n32(n)?), KArg::F32(factor)])
}

/// One SGD-momentum update of `p` (`backend::sgd_step`).
pub(crate) fn sgd_step(p: &mut Tensor, g: &Tensor, v: &mut Tensor, lr: f32, momentum: f32) -> Result<()> {
    same_gpu("SGD", &[p, g, v])?;
    let n = p.len();
    if g.len() != n || v.len() != n {
        return Err(shape("SGD on cuda", format!("parameter {:?}, gradient {:?}", p.shape(), g.shape())));
    }
    let gb = buf(g, "SGD")?;
    let vb = buf_mut(v, "SGD")?;
    let pb = buf_mut(p, "SGD")?;
    let gpu = pb.gpu.clone();
    launch(
        &gpu,
        "k_sgd_step",
        n,
        &mut [KArg::Out(pb), KArg::In(gb), KArg::Out(vb), KArg::U32(n32(n)?), KArg::F32(lr), KArg::F32(momentum)],
    )
}

/// One Adam update of `p` (`backend::adam_step`).
pub(crate) fn adam_step(
    p: &mut Tensor,
    g: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    s: crate::optim::AdamScalars,
) -> Result<()> {
    same_gpu("Adam", &[p, g, m, v])?;
    let n = p.len();
    if g.len() != n || m.len() != n || v.len() != n {
        return Err(shape("Adam on cuda", format!("parameter {:?}, gradient {:?}", p.shape(), g.shape())));
    }
    let gb = buf(g, "Adam")?;
    let mb = buf_mut(m, "Adam")?;
    let vb = buf_mut(v, "Adam")?;
    let pb = buf_mut(p, "Adam")?;
    let gpu = pb.gpu.clone();
    launch(
        &gpu,
        "k_adam_step",
        n,
        &mut [
            KArg::Out(pb),
            KArg::In(gb),
            KArg::Out(mb),
            KArg::Out(vb),
            KArg::U32(n32(n)?),
            KArg::F32(s.lr),
            KArg::F32(s.beta1),
            KArg::F32(s.beta2),
            KArg::F32(s.eps),
            KArg::F32(s.c1),
            KArg::F32(s.c2),
        ],
    )
}
