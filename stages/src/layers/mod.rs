//! Layers with an explicit forward, input-gradient backward (`I`) and weight-gradient backward
//! (`W`), and [`Layer`]: the closed set of layers a model is partitioned over.
//!
//! Invariant: each op of a [`Layer`] consumes exactly what the previous op produced for the same
//! micro-batch — forward → [`Saved`] → `backward_input` → [`WNeeds`] → `weight_grads` — so a
//! stage can run `I` and `W` of a micro-batch at different times, and count the bytes it holds
//! in between by summing the tensors in these values. `weight_grads` returns one micro-batch's
//! gradients; accumulating them is the stage's job (in micro-batch order).

mod block;
#[cfg(test)]
pub(crate) mod check;
mod dropout;
mod gelu;
mod linear;
mod norm;

pub use block::{Block, BlockSaved, BlockWNeeds};
pub use dropout::Dropout;
pub use gelu::{exp_approx, gelu, gelu_backward};
pub use linear::Linear;
pub use norm::{LayerNorm, NormStats, NORM_EPS};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Where a micro-batch is in the step: the key of its dropout masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// The model's dropout seed.
    pub seed: u64,
    /// The training step.
    pub step: u64,
    /// The micro-batch.
    pub mb: usize,
}

/// One layer of a model: the unit a model is partitioned and checkpointed by.
#[derive(Debug, Clone)]
pub enum Layer {
    /// A fully connected layer (the input projection and the output head).
    Linear(Linear),
    /// The final layer normalisation.
    Norm(LayerNorm),
    /// A residual MLP block.
    Block(Block),
}

/// What a layer's backward needs from its forward, for one micro-batch.
#[derive(Debug)]
pub enum Saved {
    /// A linear layer's input.
    Linear(Tensor),
    /// A layer norm's `x̂` and `rstd`.
    Norm(NormStats),
    /// A block's intermediates.
    Block(BlockSaved),
}

/// What a layer's `W` needs after its `I`, for one micro-batch.
#[derive(Debug)]
pub enum WNeeds {
    /// A linear layer's input and output gradient.
    Linear {
        /// The layer input.
        x: Tensor,
        /// The output gradient.
        dy: Tensor,
    },
    /// A layer norm's `x̂` and output gradient.
    Norm {
        /// The normalised input.
        xhat: Tensor,
        /// The output gradient.
        dy: Tensor,
    },
    /// A block's sub-layer inputs and gradients.
    Block(BlockWNeeds),
}

impl Saved {
    /// The tensors held.
    pub fn tensors(&self) -> Vec<&Tensor> {
        match self {
            Saved::Linear(x) => vec![x],
            Saved::Norm(s) => vec![&s.xhat, &s.rstd],
            Saved::Block(b) => b.tensors(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.tensors().iter().map(|t| t.bytes()).sum()
    }
}

impl WNeeds {
    /// The tensors held.
    pub fn tensors(&self) -> Vec<&Tensor> {
        match self {
            WNeeds::Linear { x, dy } => vec![x, dy],
            WNeeds::Norm { xhat, dy } => vec![xhat, dy],
            WNeeds::Block(b) => b.tensors(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.tensors().iter().map(|t| t.bytes()).sum()
    }
}

fn mismatch(layer: &Layer, what: &str) -> Error {
    Error::Order {
        place: format!("{} layer", layer.kind()),
        reason: format!("was given the {what} of another kind of layer"),
    }
}

impl Layer {
    /// `linear`, `norm` or `block`.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Linear(_) => "linear",
            Layer::Norm(_) => "norm",
            Layer::Block(_) => "block",
        }
    }

    /// Width of the input.
    pub fn input_width(&self) -> usize {
        match self {
            Layer::Linear(l) => l.input_width(),
            Layer::Norm(n) => n.width(),
            Layer::Block(b) => b.width(),
        }
    }

    /// Width of the output.
    pub fn output_width(&self) -> usize {
        match self {
            Layer::Linear(l) => l.output_width(),
            Layer::Norm(n) => n.width(),
            Layer::Block(b) => b.width(),
        }
    }

    /// The parameters, in gradient order.
    pub fn params(&self) -> Vec<&Tensor> {
        match self {
            Layer::Linear(l) => l.params().into(),
            Layer::Norm(n) => n.params().into(),
            Layer::Block(b) => b.params(),
        }
    }

    /// The parameters, mutable, in gradient order.
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        match self {
            Layer::Linear(l) => l.params_mut().into(),
            Layer::Norm(n) => n.params_mut().into(),
            Layer::Block(b) => b.params_mut(),
        }
    }

    /// Names of the parameters, in gradient order (`weight`, `norm.gamma`, `fc1.bias`, ...).
    pub fn param_names(&self) -> Vec<&'static str> {
        match self {
            Layer::Linear(_) => vec!["weight", "bias"],
            Layer::Norm(_) => vec!["gamma", "beta"],
            Layer::Block(_) => vec!["norm.gamma", "norm.beta", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"],
        }
    }

    /// The output, keeping nothing.
    pub fn forward(&self, x: Tensor, ctx: &Ctx) -> Result<Tensor> {
        match self {
            Layer::Linear(l) => l.forward(&x),
            Layer::Norm(n) => Ok(n.forward(&x)?.0),
            Layer::Block(b) => b.forward(x, ctx),
        }
    }

    /// The output and what the backward needs.
    pub fn forward_saving(&self, x: Tensor, ctx: &Ctx) -> Result<(Tensor, Saved)> {
        Ok(match self {
            Layer::Linear(l) => (l.forward(&x)?, Saved::Linear(x)),
            Layer::Norm(n) => {
                let (y, stats) = n.forward(&x)?;
                (y, Saved::Norm(stats))
            }
            Layer::Block(b) => {
                let (y, saved) = b.forward_saving(x, ctx)?;
                (y, Saved::Block(saved))
            }
        })
    }

    /// `I`: the input gradient from the output gradient `dy`, and what `W` needs.
    pub fn backward_input(&self, saved: Saved, dy: Tensor, ctx: &Ctx) -> Result<(Tensor, WNeeds)> {
        Ok(match (self, saved) {
            (Layer::Linear(l), Saved::Linear(x)) => (l.backward_input(&dy)?, WNeeds::Linear { x, dy }),
            (Layer::Norm(n), Saved::Norm(stats)) => {
                let dx = n.backward_input(&stats, &dy)?;
                (dx, WNeeds::Norm { xhat: stats.xhat, dy })
            }
            (Layer::Block(b), Saved::Block(s)) => {
                let (dx, needs) = b.backward_input(s, dy, ctx)?;
                (dx, WNeeds::Block(needs))
            }
            _ => return Err(mismatch(self, "saved forward state")),
        })
    }

    /// `W`: this micro-batch's parameter gradients, in gradient order.
    pub fn weight_grads(&self, needs: &WNeeds) -> Result<Vec<Tensor>> {
        Ok(match (self, needs) {
            (Layer::Linear(l), WNeeds::Linear { x, dy }) => l.weight_grads(x, dy)?.into(),
            (Layer::Norm(n), WNeeds::Norm { xhat, dy }) => n.weight_grads(xhat, dy)?.into(),
            (Layer::Block(b), WNeeds::Block(w)) => b.weight_grads(w)?,
            _ => return Err(mismatch(self, "weight-gradient inputs")),
        })
    }
}
