//! Losses at the end of the last stage: softmax cross-entropy over class indices, and mean
//! squared error.
//!
//! Invariant: a forward returns the micro-batch's mean loss (unscaled), and the backward returns
//! the gradient of `loss / m`, so gradients accumulated over the `m` micro-batches of a step are
//! the gradient of the step's mean loss. What the backward needs ([`LossSaved`]) is counted like
//! any layer's saved state.

use serde::{Deserialize, Serialize};

use crate::backend::{self, first_bad_index};
use crate::element::Dtype;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Which loss a model is trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Softmax cross-entropy; the target is `[batch, 1]` holding class indices as `f32`.
    CrossEntropy,
    /// Mean over all elements of `(prediction − target)²`; the target has the prediction's shape.
    Mse,
}

/// What a loss's backward needs from its forward.
#[derive(Debug)]
pub enum LossSaved {
    /// Softmax probabilities `[batch, classes]` and the class indices `[batch, 1]`.
    CrossEntropy {
        /// Softmax of the logits.
        probs: Tensor,
        /// Class indices.
        target: Tensor,
    },
    /// `prediction − target`.
    Mse {
        /// The difference.
        diff: Tensor,
    },
}

impl LossSaved {
    /// The tensors held.
    pub fn tensors(&self) -> Vec<&Tensor> {
        match self {
            LossSaved::CrossEntropy { probs, target } => vec![probs, target],
            LossSaved::Mse { diff } => vec![diff],
        }
    }

    /// The tensors held, mutable, in the order of [`tensors`](LossSaved::tensors).
    pub(crate) fn tensors_mut(&mut self) -> Vec<&mut Tensor> {
        match self {
            LossSaved::CrossEntropy { probs, target } => vec![probs, target],
            LossSaved::Mse { diff } => vec![diff],
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.tensors().iter().map(|t| t.bytes()).sum()
    }
}

impl LossKind {
    /// Columns of the target for a prediction of `output` columns.
    pub fn target_width(self, output: usize) -> usize {
        match self {
            LossKind::CrossEntropy => 1,
            LossKind::Mse => output,
        }
    }

    /// Floats the backward keeps for a batch of `batch` rows and `output` columns.
    pub fn saved_floats(self, batch: usize, output: usize) -> usize {
        match self {
            LossKind::CrossEntropy => batch * output + batch,
            LossKind::Mse => batch * output,
        }
    }

    /// An error unless `target` fits a prediction of `rows` rows and `output` columns (and holds
    /// valid class indices).
    pub fn check_target(self, rows: usize, output: usize, target: &Tensor) -> Result<()> {
        let want = [rows, self.target_width(output)];
        if target.shape() != want {
            return Err(Error::Shape {
                place: format!("{self:?} loss"),
                reason: format!(
                    "target is {:?}, prediction [{rows}, {output}], so the target must be {want:?}",
                    target.shape()
                ),
            });
        }
        // Class indices are checked where the host can read them; on a GPU the kernel reads only
        // indices inside the row, and an invalid one gives a NaN loss instead (a host prediction
        // with a GPU target is checked again once the target is copied to the host).
        if self == LossKind::CrossEntropy && target.is_host() {
            let bad = match target.dtype() {
                Dtype::F32 => first_bad_index::<f32>(target, output),
                Dtype::F64 => first_bad_index::<f64>(target, output),
                Dtype::Stored(_) => first_bad_index::<f32>(&target.widened()?, output),
            };
            if let Some((r, t)) = bad {
                return Err(Error::Shape {
                    place: "CrossEntropy loss".into(),
                    reason: format!("target row {r} is {t}, not a class index in 0..{output}"),
                });
            }
        }
        Ok(())
    }

    /// The mean loss of the micro-batch, and what the backward needs.
    pub fn forward(self, pred: &Tensor, target: &Tensor) -> Result<(f32, LossSaved)> {
        let (loss, saved) = self.forward_tensor(pred, target)?;
        Ok((loss.values()?[0], saved))
    }

    /// [`forward`](LossKind::forward) with the loss as a `[1, 1]` tensor on the prediction's
    /// device: on a GPU nothing waits for the loss to be computed.
    ///
    /// A prediction in 16-bit storage (mixed precision) is widened first: the loss and its state
    /// are `f32`, as reductions and the softmax are in mixed-precision training.
    pub fn forward_tensor(self, pred: &Tensor, target: &Tensor) -> Result<(Tensor, LossSaved)> {
        let wide;
        let pred = if matches!(pred.dtype(), crate::element::Dtype::Stored(_)) {
            wide = pred.widened()?;
            &wide
        } else {
            pred
        };
        self.check_target(pred.rows(), pred.cols(), target)?;
        // The target goes where the prediction is; a class index read back to the host is
        // checked there again.
        let moved;
        let target = if target.device() == pred.device() {
            target
        } else {
            moved = target.to_device(pred.device())?;
            if moved.is_host() {
                self.check_target(pred.rows(), pred.cols(), &moved)?;
            }
            &moved
        };
        Ok(match self {
            LossKind::CrossEntropy => {
                let (loss, probs) = backend::cross_entropy(pred, target)?;
                (loss, LossSaved::CrossEntropy { probs, target: target.try_clone()? })
            }
            LossKind::Mse => {
                let (loss, diff) = backend::mse(pred, target)?;
                (loss, LossSaved::Mse { diff })
            }
        })
    }

    /// The gradient of `loss / m` with respect to the prediction.
    pub fn backward(saved: LossSaved, m: usize) -> Result<Tensor> {
        LossKind::backward_scaled(saved, m, 1.0)
    }

    /// The gradient of `scale · loss / m` with respect to the prediction: the backward of a
    /// scaled loss (mixed-precision loss scaling; `scale` a power of two, so that scaling is
    /// exact, and `1` gives [`backward`](LossKind::backward)'s bits).
    pub fn backward_scaled(saved: LossSaved, m: usize, scale: f32) -> Result<Tensor> {
        match saved {
            LossSaved::CrossEntropy { mut probs, target } => {
                let factor = 1.0 / (probs.rows() * m) as f32 * scale;
                backend::cross_entropy_backward(&mut probs, &target, factor)?;
                Ok(probs)
            }
            LossSaved::Mse { mut diff } => {
                let factor = 2.0 / (diff.len() * m) as f32 * scale;
                backend::scale(&mut diff, factor)?;
                Ok(diff)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::check::{assert_close, numeric_grad, probe};

    fn check(kind: LossKind, target: Tensor) {
        let x = probe(4, 5, 40);
        let x = Tensor::from_fn(4, 5, |r, c| 2.0 * x.get(r, c).unwrap());
        let m = 3;
        let (_, saved) = kind.forward(&x, &target).unwrap();
        let g = LossKind::backward(saved, m).unwrap();
        let numeric = numeric_grad(&x, |x| kind.forward(x, &target).unwrap().0 as f64 / m as f64);
        assert_close(&g, &numeric);
    }

    #[test]
    fn cross_entropy_gradient_and_value() {
        check(LossKind::CrossEntropy, Tensor::new(4, 1, vec![0.0, 4.0, 2.0, 2.0]).unwrap());
        let (loss, _) =
            LossKind::CrossEntropy.forward(&Tensor::zeros(2, 4), &Tensor::new(2, 1, vec![1.0, 3.0]).unwrap()).unwrap();
        assert!((loss - 4f32.ln()).abs() < 1e-6, "uniform logits give ln(classes): {loss}");
    }

    #[test]
    fn mse_gradient_and_value() {
        check(LossKind::Mse, probe(4, 5, 41));
        let (loss, _) = LossKind::Mse.forward(&Tensor::full(1, 2, 3.0), &Tensor::full(1, 2, 1.0)).unwrap();
        assert_eq!(loss, 4.0);
    }

    #[test]
    fn bad_targets_are_errors() {
        let e = LossKind::CrossEntropy.check_target(2, 3, &Tensor::new(2, 1, vec![0.0, 3.0]).unwrap()).unwrap_err();
        assert!(e.to_string().contains("not a class index in 0..3"), "{e}");
        let e = LossKind::Mse.check_target(2, 3, &Tensor::zeros(2, 1)).unwrap_err();
        assert!(e.to_string().contains("must be [2, 3]"), "{e}");
    }
}
