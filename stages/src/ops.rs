//! The ops of a [`Stage`] on one micro-batch: `F` ([`forward`](Stage::forward)), `R`
//! ([`recompute`](Stage::recompute)), `I` ([`backward_input`](Stage::backward_input)), `W`
//! ([`backward_weight`](Stage::backward_weight)) and `B = I + W` ([`backward`](Stage::backward)).
//!
//! Invariants: each op checks the micro-batch's phase and the shapes it is given before it
//! changes anything, so a misuse is an error and leaves the stage as it was; an op runs the same
//! arithmetic whatever the policy and whatever other micro-batches are in flight, so the bits of
//! every output and gradient depend only on (parameters, input, step, micro-batch).

use crate::error::{Error, Result};
use crate::layers::Ctx;
use crate::loss::LossKind;
use crate::slot::{Phase, Slot};
use crate::stage::Stage;
use crate::tensor::Tensor;

impl Stage {
    /// `F`: runs micro-batch `mb` through the stage, keeping what the recompute policy says.
    ///
    /// On the last stage `target` is required (`[rows, 1]` class indices for cross-entropy,
    /// `[rows, output]` for MSE) and the result is the micro-batch's mean loss as a `[1, 1]`
    /// tensor; elsewhere `target` must be `None` and the result is the activation for the next
    /// stage.
    pub fn forward(&mut self, mb: usize, input: Tensor, target: Option<&Tensor>) -> Result<Tensor> {
        let ctx = self.ctx("forward", mb)?;
        self.expect_phase("forward", mb, &[Phase::Idle], "each micro-batch runs forward once per step")?;
        if input.cols() != self.input_width() || input.rows() == 0 {
            return Err(Error::Shape {
                place: self.place("forward", Some(mb)),
                reason: format!("input is {:?}; this stage takes [rows ≥ 1, {}]", input.shape(), self.input_width()),
            });
        }
        let rows = input.rows();
        match (self.loss, target) {
            (Some(kind), Some(t)) => kind.check_target(rows, self.output_width(), t)?,
            (Some(_), None) => {
                return Err(self.order(
                    "forward",
                    mb,
                    "the last stage needs the micro-batch's target to compute the loss",
                ))
            }
            (None, Some(_)) => {
                return Err(self.order("forward", mb, "only the last stage takes a target; pass None"));
            }
            (None, None) => {}
        }
        let checkpoints = self.spec.policy.checkpoints(self.layers.len());
        let keep_all = !self.spec.policy.drops();
        let (mut inputs, mut saved) = (Vec::with_capacity(checkpoints.len()), Vec::new());
        let mut x = input;
        for (i, layer) in self.layers.iter().enumerate() {
            if keep_all {
                let (y, s) = layer.forward_saving(x, &ctx)?;
                saved.push(s);
                x = y;
            } else {
                if checkpoints.contains(&i) {
                    inputs.push(x.clone());
                }
                x = layer.forward(x, &ctx)?;
            }
        }
        let (out, loss) = match (self.loss, target) {
            (Some(kind), Some(t)) => {
                let (value, s) = kind.forward(&x, t)?;
                (Tensor::scalar(value), Some(s))
            }
            _ => (x, None),
        };
        self.slots[mb] = if keep_all {
            Slot::Saved { rows, layers: saved, loss }
        } else {
            Slot::Checkpointed { rows, inputs, target: target.cloned() }
        };
        Ok(out)
    }

    /// `R`: re-creates what the policy dropped for `mb`, from its checkpoints, so the micro-batch
    /// holds what policy `none` would. Does nothing if nothing was dropped (policy `none`, or `R`
    /// already ran). Optional: [`backward_input`](Stage::backward_input) recomputes inline when
    /// it was skipped.
    pub fn recompute(&mut self, mb: usize) -> Result<()> {
        let ctx = self.ctx("recompute", mb)?;
        match self.slots[mb].phase() {
            Phase::Checkpointed => self.rebuild(mb, &ctx),
            Phase::Saved => Ok(()),
            _ => self.expect_phase("recompute", mb, &[Phase::Checkpointed, Phase::Saved], "R goes between F and I"),
        }
    }

    fn rebuild(&mut self, mb: usize, ctx: &Ctx) -> Result<()> {
        let Slot::Checkpointed { rows, inputs, target } = std::mem::take(&mut self.slots[mb]) else {
            return Err(self.order("recompute", mb, "internal: no checkpoints held"));
        };
        let starts = self.spec.policy.checkpoints(self.layers.len());
        let mut saved = Vec::with_capacity(self.layers.len());
        let mut out = None;
        for (s, x0) in inputs.into_iter().enumerate() {
            let end = starts.get(s + 1).copied().unwrap_or(self.layers.len());
            let mut x = x0;
            for layer in &self.layers[starts[s]..end] {
                let (y, kept) = layer.forward_saving(x, ctx)?;
                saved.push(kept);
                x = y;
            }
            out = Some(x);
        }
        let loss = match (self.loss, target, out) {
            (Some(kind), Some(t), Some(x)) => Some(kind.forward(&x, &t)?.1),
            _ => None,
        };
        self.slots[mb] = Slot::Saved { rows, layers: saved, loss };
        Ok(())
    }

    /// `I`: the gradient with respect to the stage input, from `grad_out`, the gradient with
    /// respect to the stage output (`None` on the last stage, which starts from its loss, scaled
    /// by `1/m`). Runs `R` inline if it was skipped. Keeps only what `W` needs.
    pub fn backward_input(&mut self, mb: usize, grad_out: Option<Tensor>) -> Result<Tensor> {
        let ctx = self.ctx("backward_input", mb)?;
        self.expect_phase("backward_input", mb, &[Phase::Checkpointed, Phase::Saved], "I comes after F, once")?;
        let rows = self.slots[mb].rows().unwrap_or(0);
        let grad_out = match (self.loss, grad_out) {
            (Some(_), Some(_)) => {
                return Err(self.order(
                    "backward_input",
                    mb,
                    "the last stage starts from its loss; pass None as grad_out",
                ))
            }
            (None, None) => {
                return Err(self.order(
                    "backward_input",
                    mb,
                    &format!("needs grad_out, the gradient from stage {}", self.spec.index + 1),
                ))
            }
            (None, Some(g)) if g.shape() != [rows, self.output_width()] => {
                return Err(Error::Shape {
                    place: self.place("backward_input", Some(mb)),
                    reason: format!(
                        "grad_out is {:?}; the forward output was [{rows}, {}]",
                        g.shape(),
                        self.output_width()
                    ),
                })
            }
            (_, g) => g,
        };
        if self.slots[mb].phase() == Phase::Checkpointed {
            self.rebuild(mb, &ctx)?;
        }
        let Slot::Saved { layers: saved, loss, .. } = std::mem::take(&mut self.slots[mb]) else {
            return Err(self.order("backward_input", mb, "internal: forward state missing"));
        };
        let mut g = match (loss, grad_out) {
            (Some(l), _) => LossKind::backward(l, self.slots.len()),
            (None, Some(g)) => g,
            (None, None) => return Err(self.order("backward_input", mb, "internal: no gradient to start from")),
        };
        let mut needs = Vec::with_capacity(saved.len());
        for (layer, s) in self.layers.iter().zip(saved).rev() {
            let (dx, n) = layer.backward_input(s, g, &ctx)?;
            needs.push(n);
            g = dx;
        }
        needs.reverse();
        self.slots[mb] = Slot::AwaitingW { needs };
        Ok(g)
    }

    /// `W`: computes `mb`'s parameter gradients from what `I` kept, frees it, and accumulates the
    /// gradients in increasing micro-batch order: if an earlier micro-batch's `W` has not run,
    /// these gradients are parked (and counted in `held_bytes_of(mb)`) until it has.
    pub fn backward_weight(&mut self, mb: usize) -> Result<()> {
        self.ctx("backward_weight", mb)?;
        self.expect_phase("backward_weight", mb, &[Phase::AwaitingW], "W comes after I, once")?;
        let Slot::AwaitingW { needs } = std::mem::replace(&mut self.slots[mb], Slot::Done) else {
            return Err(self.order("backward_weight", mb, "internal: weight-gradient inputs missing"));
        };
        let mut grads = Vec::with_capacity(self.grads.len());
        for (layer, n) in self.layers.iter().zip(&needs) {
            grads.extend(layer.weight_grads(n)?);
        }
        drop(needs);
        self.accum.offer(mb, grads, &mut self.grads)
    }

    /// `B`: [`backward_input`](Stage::backward_input) then
    /// [`backward_weight`](Stage::backward_weight); returns the input gradient.
    pub fn backward(&mut self, mb: usize, grad_out: Option<Tensor>) -> Result<Tensor> {
        let dx = self.backward_input(mb, grad_out)?;
        self.backward_weight(mb)?;
        Ok(dx)
    }

    fn order(&self, op: &str, mb: usize, reason: &str) -> Error {
        Error::Order { place: self.place(op, Some(mb)), reason: reason.into() }
    }

    fn expect_phase(&self, op: &str, mb: usize, allowed: &[Phase], rule: &str) -> Result<()> {
        let phase = self.slots[mb].phase();
        if allowed.contains(&phase) {
            return Ok(());
        }
        let next = match phase {
            Phase::Idle => "run forward first",
            Phase::Checkpointed | Phase::Saved => "run backward_input (or backward) next",
            Phase::AwaitingW => "run backward_weight next",
            Phase::Done => "it is finished for this step; begin_step starts the next",
        };
        Err(self.order(op, mb, &format!("micro-batch is {phase:?} ({rule}); {next}")))
    }
}
