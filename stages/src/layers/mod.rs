//! [`Layer`]: what a model is made of — a forward, an input-gradient backward (`I`) and a
//! weight-gradient backward (`W`) — and the built-in layers that implement it.
//!
//! Invariant: each op of a layer consumes exactly what the previous op produced for the same
//! micro-batch — forward → [`Saved`] → `backward_input` → [`WNeeds`] → `weight_grads` — so a
//! stage can run `I` and `W` of a micro-batch at different times, and count the bytes it holds
//! in between by summing the tensors in these values. `Layer` is public and object safe: a
//! user's own layer (defined outside this crate) goes into a stage beside the built-in ones.

mod adapter;
mod attention;
mod block;
#[cfg(test)]
pub(crate) mod check;
mod dropout;
mod embedding;
mod linear;
mod mixed;
mod norm;

pub use adapter::Adapter;
pub use attention::Attention;
pub use block::Block;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use linear::Linear;
pub use mixed::MixedPrecision;
pub use norm::{LayerNorm, NormStats, NORM_EPS};

use std::fmt;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::matmul::GemmShape;
use crate::tensor::Tensor;

/// Where a micro-batch is in the step, and which layer runs it: the key of everything random a
/// layer does (dropout masks), so a forward, its recomputation and its backward draw the same
/// bits whatever the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ctx {
    /// The model's seed.
    pub seed: u64,
    /// The training step.
    pub step: u64,
    /// The micro-batch.
    pub mb: usize,
    /// The layer's global index in the model (the same whatever the partition).
    pub layer: usize,
    /// Whether the op trains (dropout on) or evaluates (dropout is the identity): a forward
    /// for a validation loss runs with `false`.
    pub training: bool,
}

impl Ctx {
    /// The key of micro-batch `mb` of step `step` at global layer `layer`, under `seed`, training.
    pub fn new(seed: u64, step: u64, mb: usize, layer: usize) -> Ctx {
        Ctx { seed, step, mb, layer, training: true }
    }

    /// This key for an evaluating forward (no dropout).
    pub fn evaluating(self) -> Ctx {
        Ctx { training: false, ..self }
    }
}

/// What a layer's backward needs from its forward, for one micro-batch: tensors in an order the
/// layer chooses. The stage counts their bytes, so a layer keeps nothing outside them.
#[derive(Debug, Default)]
pub struct Saved(pub Vec<Tensor>);

/// What a layer's `W` needs after its `I`, for one micro-batch: tensors in an order the layer
/// chooses, counted like [`Saved`].
#[derive(Debug, Default)]
pub struct WNeeds(pub Vec<Tensor>);

/// One layer of a model: the unit a model is partitioned and checkpointed by, and what a user
/// implements to put their own computation in a pipeline.
///
/// Contract (what the stage relies on; the gradient checks and the bitwise tests hold a layer to
/// it):
/// - the ops are pure functions of the parameters, their inputs and `ctx`: a recomputed forward
///   gives the same bits, whatever else ran in between; a forward with `ctx.training` false
///   (a validation loss) applies no dropout and draws nothing;
/// - `forward_saving` keeps in [`Saved`] exactly [`saved_per_row`](Layer::saved_per_row) floats
///   per input row, `forward_selective` exactly [`selective_per_row`](Layer::selective_per_row)
///   (and `restore` brings them back to what `forward_saving` keeps), and `backward_input` keeps
///   in [`WNeeds`] exactly [`w_per_row`](Layer::w_per_row): the stage's byte predictions are made
///   from these counts and compared with what it holds;
/// - `weight_grads` returns one micro-batch's gradients, one per parameter in
///   [`params`](Layer::params) order, with their shapes; accumulating them is the stage's job.
///   The stage checks their number and shapes.
///
/// The built-in layers also have typed methods of some of the same names for composing them
/// inside a layer (`Linear::forward(&x)` takes a reference and no `Ctx`); a method call on a
/// concrete `Linear` picks those, so call the trait's as `Layer::forward(&linear, x, &ctx)`.
pub trait Layer: fmt::Debug + Send {
    /// A short name for reports and errors (`linear`, `block`, `rms_norm`).
    fn kind(&self) -> &str;
    /// Width of the input rows.
    fn input_width(&self) -> usize;
    /// Width of the output rows.
    fn output_width(&self) -> usize;
    /// The parameters it trains, in gradient order.
    fn params(&self) -> Vec<&Tensor>;
    /// The parameters it trains, mutable, in gradient order.
    fn params_mut(&mut self) -> Vec<&mut Tensor>;
    /// Names of the parameters it trains, in gradient order (`weight`, `norm.gamma`, ...).
    fn param_names(&self) -> Vec<String>;
    /// The parameters it holds and does not train (a base frozen under LoRA): used by the ops,
    /// counted as parameter bytes, with no gradient and no optimizer state. None by default.
    fn frozen(&self) -> Vec<&Tensor> {
        Vec::new()
    }
    /// The frozen parameters, mutable, in [`frozen`](Layer::frozen) order.
    fn frozen_mut(&mut self) -> Vec<&mut Tensor> {
        Vec::new()
    }
    /// Names of the frozen parameters, in [`frozen`](Layer::frozen) order.
    fn frozen_names(&self) -> Vec<String> {
        Vec::new()
    }
    /// The output and what the backward needs. Consumes `x`, so a layer may reuse its buffer.
    fn forward_saving(&self, x: Tensor, ctx: &Ctx) -> Result<(Tensor, Saved)>;
    /// The output, keeping nothing (under a recompute policy that drops this layer's state).
    fn forward(&self, x: Tensor, ctx: &Ctx) -> Result<Tensor> {
        Ok(self.forward_saving(x, ctx)?.0)
    }
    /// The output and what the backward needs under selective recompute: everything but what
    /// is large and cheap to re-create, which [`restore`](Layer::restore) re-creates in `R`;
    /// exactly [`selective_per_row`](Layer::selective_per_row) floats per row. The default
    /// drops nothing.
    fn forward_selective(&self, x: Tensor, ctx: &Ctx) -> Result<(Tensor, Saved)> {
        self.forward_saving(x, ctx)
    }
    /// `R` under selective recompute: what [`forward_saving`](Layer::forward_saving) keeps, from
    /// what [`forward_selective`](Layer::forward_selective) kept, bit for bit. The default returns
    /// `kept` as it is.
    fn restore(&self, kept: Saved, _ctx: &Ctx) -> Result<Saved> {
        Ok(kept)
    }
    /// `I`: the input gradient from the output gradient `dy`, and what `W` needs.
    fn backward_input(&self, saved: Saved, dy: Tensor, ctx: &Ctx) -> Result<(Tensor, WNeeds)>;
    /// `W`: this micro-batch's parameter gradients, in gradient order.
    fn weight_grads(&self, needs: &WNeeds) -> Result<Vec<Tensor>>;
    /// Floats [`forward_saving`](Layer::forward_saving) keeps per input row.
    fn saved_per_row(&self) -> usize;
    /// Floats [`backward_input`](Layer::backward_input) keeps per row for `W`.
    fn w_per_row(&self) -> usize;
    /// Floats [`forward_selective`](Layer::forward_selective) keeps per input row (the default:
    /// all of [`saved_per_row`](Layer::saved_per_row)).
    fn selective_per_row(&self) -> usize {
        self.saved_per_row()
    }
    /// The `(in, out)` widths of each matrix product `[rows, in]·[in, out]` the forward runs, in
    /// order (the backward runs each twice more, as `I` and `W`): what FLOP counts are made of.
    fn linear_maps(&self) -> Vec<(usize, usize)> {
        Vec::new()
    }
    /// The matrix products `W` runs for `rows` rows: by default `xᵀ·dy` for each of the
    /// [`linear_maps`](Layer::linear_maps) (none for a frozen weight; an adapter's own).
    fn weight_products(&self, rows: usize) -> Vec<GemmShape> {
        self.linear_maps().into_iter().map(|(i, o)| weight_product(i, rows, o)).collect()
    }
    /// The products of activations by activations (no weight) that the forward and `I` run for
    /// `rows` rows, as `[forward, I]` — attention's `QKᵀ` and `P·V` and their gradients — which
    /// FLOP counts add to the [`linear_maps`](Layer::linear_maps). None by default.
    fn activation_products(&self, _rows: usize) -> [Vec<GemmShape>; 2] {
        [Vec::new(), Vec::new()]
    }
    /// Whether the layer runs on `device`. The default is the host only — right for a layer that
    /// reads its tensors' values directly; a layer made of [`backend`](crate::backend) operations
    /// and matrix products runs everywhere and says so. A stage refuses a layer that cannot run
    /// on its device.
    fn runs_on(&self, device: Device) -> bool {
        device == Device::Cpu
    }
    /// Floats per row, among the leading tensors of what the layer keeps ([`Saved`], the
    /// selective state and [`WNeeds`]), that are exact values — token ids — which 16-bit storage
    /// must keep as they are (0 by default: everything kept is an activation).
    fn exact_per_row(&self) -> usize {
        0
    }
    /// The 16-bit format the layer stores its parameters and state in, under mixed precision
    /// ([`MixedPrecision`]); `None` (the default) for `f32`.
    fn storage(&self) -> Option<crate::precision::Format> {
        None
    }
}

/// The product `xᵀ·dy` of a map `[input, output]`'s weight gradient over `rows` rows.
pub(crate) fn weight_product(input: usize, rows: usize, output: usize) -> GemmShape {
    GemmShape { m: input, k: rows, n: output, trans_a: true, trans_b: false }
}

/// The tensors of `own` that train: all of them, or none when `frozen`.
pub(crate) fn trained<T, const N: usize>(frozen: bool, own: [T; N]) -> Vec<T> {
    if frozen {
        Vec::new()
    } else {
        own.into()
    }
}

/// The tensors of `own` that are frozen: none, or all of them when `frozen`.
pub(crate) fn held_frozen<T, const N: usize>(frozen: bool, own: [T; N]) -> Vec<T> {
    trained(!frozen, own)
}

/// `t` if the sub-layer that needs it trains, else an empty tensor: a frozen sub-layer's `W`
/// computes nothing, so what only its `W` would read is not kept (the per-row counts say the
/// same).
pub(crate) fn keep_if(trains: bool, t: Tensor) -> Tensor {
    if trains {
        t
    } else {
        Tensor::zeros(0, 0)
    }
}

/// `names` of a sub-layer, each prefixed with `part.` (`fc1.weight`).
pub(crate) fn prefixed(part: &str, names: Vec<String>) -> Vec<String> {
    names.into_iter().map(|n| format!("{part}.{n}")).collect()
}

impl Saved {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(Tensor::bytes).sum()
    }

    /// The `N` tensors a layer saved, in its order; an error naming `layer` if there are not
    /// `N` of them (a layer given state of another length: another kind's, or its own from
    /// another op). Shapes are the layer's to check.
    pub fn take<const N: usize>(self, layer: &str) -> Result<[Tensor; N]> {
        let n = self.0.len();
        self.0.try_into().map_err(|_| mismatch(layer, "saved forward state", N, n))
    }
}

impl WNeeds {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(Tensor::bytes).sum()
    }

    /// The `N` tensors a layer's `I` kept, in its order; an error naming `layer` if there are not
    /// `N` of them. Shapes are the layer's to check.
    pub fn get<const N: usize>(&self, layer: &str) -> Result<[&Tensor; N]> {
        <&[Tensor; N]>::try_from(self.0.as_slice())
            .map(|a| a.each_ref())
            .map_err(|_| mismatch(layer, "weight-gradient inputs", N, self.0.len()))
    }
}

fn mismatch(layer: &str, what: &str, want: usize, got: usize) -> Error {
    Error::Order {
        place: format!("{layer} layer"),
        reason: format!(
            "was given {what} of {got} tensors where it keeps {want}: another layer's, or its own from another op"
        ),
    }
}
