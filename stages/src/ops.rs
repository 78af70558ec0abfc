//! The ops of a [`Stage`] on one micro-batch: `F` ([`forward`](Stage::forward)), `R`
//! ([`recompute`](Stage::recompute)), `I` ([`backward_input`](Stage::backward_input)), `W`
//! ([`backward_weight`](Stage::backward_weight)) and `B = I + W` ([`backward`](Stage::backward)).
//!
//! Invariants: each op checks the micro-batch's phase and the shapes it is given before it
//! changes anything, so a misuse is an error and leaves the stage as it was; an op runs the same
//! arithmetic whatever the policy and whatever other micro-batches are in flight, so the bits of
//! every output and gradient depend only on (parameters, input, step, micro-batch).

use crate::checkpointing::Step;
use crate::error::{Error, Result};
use crate::layers::{Ctx, Saved, WNeeds};
use crate::loss::LossKind;
use crate::optimal::LayerKeep;
use crate::policy::Kept;
use crate::slot::{Phase, Slot};
use crate::stage::Stage;
use crate::tensor::Tensor;

impl Stage {
    /// `F`: runs micro-batch `mb` through the stage, keeping what the recompute policy says.
    ///
    /// On the last stage `target` is required (`[rows, 1]` class indices for cross-entropy,
    /// `[rows, output]` for MSE) and the result is the micro-batch's mean loss as a `[1, 1]`
    /// tensor on the stage's device; elsewhere `target` must be `None` and the result is the activation for the next
    /// stage.
    pub fn forward(&mut self, mb: usize, input: Tensor, target: Option<&Tensor>) -> Result<Tensor> {
        self.op_working = 0;
        let ctx = self.ctx("forward", mb)?;
        let _scope = self.enter();
        self.expect_phase("forward", mb, &[Phase::Idle], "each micro-batch runs forward once per step")?;
        self.check_io("forward", Some(mb), &input, target)?;
        let rows = input.rows();
        let input = input.into_device(self.device())?;
        let kept = self.spec.policy.kept(self.layers.len());
        if let Kept::Optimal(_) = kept {
            return self.forward_sweep(mb, &ctx, rows, input, target);
        }
        let (mut inputs, mut saved) = (Vec::new(), Vec::new());
        let mut x = input;
        for (i, layer) in self.layers.iter().enumerate() {
            let ctx = self.layer_ctx(ctx, i);
            x = match kept {
                Kept::Optimal(_) => unreachable!("optimal's forward is the sweep above"),
                Kept::Everything | Kept::Selective => {
                    let (y, s) = if kept == Kept::Selective {
                        layer.forward_selective(x, &ctx)?
                    } else {
                        layer.forward_saving(x, &ctx)?
                    };
                    saved.push(s);
                    y
                }
                Kept::Inputs(k) => {
                    if i % k == 0 {
                        inputs.push(x.try_clone()?);
                    }
                    layer.forward(x, &ctx)?
                }
            };
        }
        let (out, loss) = match (self.loss, target) {
            (Some(kind), Some(t)) => {
                let (loss, s) = kind.forward_tensor(&x, t)?;
                (loss, Some(s))
            }
            _ => (x, None),
        };
        self.slots[mb] = match kept {
            Kept::Everything => Slot::Saved { rows, layers: saved, loss },
            Kept::Selective => Slot::Partial { rows, layers: saved, loss },
            Kept::Inputs(_) => Slot::Checkpointed { rows, inputs, target: target.map(Tensor::try_clone).transpose()? },
            Kept::Optimal(_) => unreachable!("optimal's forward is the sweep above"),
        };
        Ok(out)
    }

    /// `F` under `optimal`: the first sweep of the stage's sequence, each layer keeping nothing,
    /// its input or everything as the plan says; the loss runs here on the last stage.
    fn forward_sweep(
        &mut self,
        mb: usize,
        ctx: &Ctx,
        rows: usize,
        input: Tensor,
        target: Option<&Tensor>,
    ) -> Result<Tensor> {
        let plan = self.optimal_plan(rows)?;
        let n = self.layers.len();
        let (mut inputs, mut saved) =
            ((0..n).map(|_| None).collect::<Vec<_>>(), (0..n).map(|_| None).collect::<Vec<_>>());
        let mut x = input;
        for (i, layer) in self.layers.iter().enumerate() {
            let ctx = self.layer_ctx(*ctx, i);
            x = match plan.keep[i] {
                LayerKeep::Nothing => layer.forward(x, &ctx)?,
                LayerKeep::Input => {
                    inputs[i] = Some(x.try_clone()?);
                    layer.forward(x, &ctx)?
                }
                LayerKeep::Everything => {
                    let (y, s) = layer.forward_saving(x, &ctx)?;
                    saved[i] = Some(s);
                    y
                }
            };
        }
        let (out, loss) = match (self.loss, target) {
            (Some(kind), Some(t)) => {
                let (loss, s) = kind.forward_tensor(&x, t)?;
                (loss, Some(s))
            }
            _ => (x, None),
        };
        self.slots[mb] = Slot::Interleaved { rows, inputs, saved, loss };
        Ok(out)
    }

    /// `I` under `optimal`: the steps of the stage's sequence after `F`'s sweep, from the output
    /// gradient `g` — forwards from the kept inputs interleaved with the layers' backwards —
    /// recording the most the micro-batch holds between steps. Returns the input gradient and
    /// what each layer's `W` needs.
    fn backward_interleaved(
        &mut self,
        ctx: &Ctx,
        rows: usize,
        mut inputs: Vec<Option<Tensor>>,
        mut saved: Vec<Option<Saved>>,
        start_bytes: u64,
        mut g: Tensor,
    ) -> Result<(Tensor, Vec<WNeeds>)> {
        let plan = self.optimal_plan(rows)?;
        let n = self.layers.len();
        inputs.push(None);
        let mut needs: Vec<Option<WNeeds>> = (0..n).map(|_| None).collect();
        let mut frontier = n;
        let mut peak = start_bytes;
        let missing = |what: String| Error::Order {
            place: format!("stage {} backward_input", self.spec.index),
            reason: format!("internal: the optimal sequence {} needs {what}, which is not held", plan.describe()),
        };
        for step in &plan.backward {
            let layer = &self.layers[step.layer()];
            let i = step.layer();
            let lctx = self.layer_ctx(*ctx, i);
            match *step {
                Step::Backward(_) => {
                    let s = saved[i].take().ok_or_else(|| missing(format!("ā{i}")))?;
                    let (dx, w) = layer.backward_input(s, g, &lctx)?;
                    needs[i] = Some(w);
                    g = dx;
                    frontier = i;
                }
                _ => {
                    let x = match step {
                        Step::ForwardCheckpoint(_) => inputs[i].as_ref().map(Tensor::try_clone).transpose()?,
                        _ => inputs[i].take(),
                    }
                    .ok_or_else(|| missing(format!("a{i}")))?;
                    let y = if let Step::ForwardAll(_) = step {
                        let (y, s) = layer.forward_saving(x, &lctx)?;
                        saved[i] = Some(s);
                        y
                    } else {
                        layer.forward(x, &lctx)?
                    };
                    if i + 1 < frontier {
                        inputs[i + 1] = Some(y);
                    }
                }
            }
            let held: u64 = inputs.iter().flatten().map(Tensor::bytes).sum::<u64>()
                + saved.iter().flatten().map(Saved::bytes).sum::<u64>()
                + needs.iter().flatten().map(WNeeds::bytes).sum::<u64>();
            peak = peak.max(held);
        }
        self.backward_peak = peak;
        let needs: Result<Vec<WNeeds>> =
            needs.into_iter().enumerate().map(|(i, w)| w.ok_or_else(|| missing(format!("B{i}")))).collect();
        Ok((g, needs?))
    }

    /// `R`: re-creates what the policy dropped for `mb`, from its checkpoints, so the micro-batch
    /// holds what policy `none` would. Does nothing if nothing was dropped (policy `none`, or `R`
    /// already ran). Optional: [`backward_input`](Stage::backward_input) recomputes inline when
    /// it was skipped.
    pub fn recompute(&mut self, mb: usize) -> Result<()> {
        self.op_working = 0;
        let ctx = self.ctx("recompute", mb)?;
        let _scope = self.enter();
        match self.slots[mb].phase() {
            // `optimal` recomputes inside `I`: nothing to do before it.
            Phase::Checkpointed if matches!(self.slots[mb], Slot::Interleaved { .. }) => Ok(()),
            Phase::Checkpointed => self.rebuild(mb, &ctx),
            Phase::Saved => Ok(()),
            _ => self.expect_phase("recompute", mb, &[Phase::Checkpointed, Phase::Saved], "R goes between F and I"),
        }
    }

    fn rebuild(&mut self, mb: usize, ctx: &Ctx) -> Result<()> {
        let (rows, inputs, target) = match std::mem::take(&mut self.slots[mb]) {
            Slot::Checkpointed { rows, inputs, target } => (rows, inputs, target),
            Slot::Partial { rows, layers, loss } => {
                let restored = self
                    .layers
                    .iter()
                    .zip(layers)
                    .enumerate()
                    .map(|(i, (layer, kept))| layer.restore(kept, &self.layer_ctx(*ctx, i)))
                    .collect::<Result<Vec<_>>>()?;
                self.slots[mb] = Slot::Saved { rows, layers: restored, loss };
                return Ok(());
            }
            _ => return Err(self.order("recompute", mb, "internal: no checkpoints held")),
        };
        let starts = self.spec.policy.checkpoints(self.layers.len());
        let mut saved = Vec::with_capacity(self.layers.len());
        let mut out = None;
        for (s, x0) in inputs.into_iter().enumerate() {
            let end = starts.get(s + 1).copied().unwrap_or(self.layers.len());
            let mut x = x0;
            for i in starts[s]..end {
                let (y, kept) = self.layers[i].forward_saving(x, &self.layer_ctx(*ctx, i))?;
                saved.push(kept);
                x = y;
            }
            out = Some(x);
        }
        let loss = match (self.loss, target, out) {
            (Some(kind), Some(t), Some(x)) => Some(kind.forward_tensor(&x, &t)?.1),
            _ => None,
        };
        self.slots[mb] = Slot::Saved { rows, layers: saved, loss };
        Ok(())
    }

    /// `I`: the gradient with respect to the stage input, from `grad_out`, the gradient with
    /// respect to the stage output (`None` on the last stage, which starts from its loss, scaled
    /// by `1/m`). Runs `R` inline if it was skipped. Keeps only what `W` needs.
    pub fn backward_input(&mut self, mb: usize, grad_out: Option<Tensor>) -> Result<Tensor> {
        self.op_working = 0;
        let (dx, start, most) = self.backward_input_held(mb, grad_out)?;
        self.op_working = most.saturating_sub(start.max(self.slots[mb].bytes()));
        Ok(dx)
    }

    /// [`backward_input`](Stage::backward_input), with what the micro-batch held at its start and
    /// the most it held inside it: what `optimal`'s steps or a skipped `R`'s rebuild re-create
    /// (what `W` needs, which only grows to its end, counts at the end).
    fn backward_input_held(&mut self, mb: usize, grad_out: Option<Tensor>) -> Result<(Tensor, u64, u64)> {
        let ctx = self.ctx("backward_input", mb)?;
        let _scope = self.enter();
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
        if let Slot::Interleaved { .. } = self.slots[mb] {
            let start_bytes = self.slots[mb].bytes();
            let Slot::Interleaved { inputs, saved, loss, .. } = std::mem::take(&mut self.slots[mb]) else {
                return Err(self.order("backward_input", mb, "internal: forward state missing"));
            };
            let g = match (loss, grad_out) {
                (Some(l), _) => LossKind::backward_scaled(l, self.shard.total, self.loss_scale)?,
                (None, Some(g)) => g.into_device(self.device())?,
                (None, None) => return Err(self.order("backward_input", mb, "internal: no gradient to start from")),
            };
            let (dx, needs) = self.backward_interleaved(&ctx, rows, inputs, saved, start_bytes, g)?;
            self.slots[mb] = Slot::AwaitingW { needs };
            return Ok((dx, start_bytes, self.backward_peak));
        }
        let start_bytes = self.slots[mb].bytes();
        let mut most = start_bytes;
        if self.slots[mb].phase() == Phase::Checkpointed {
            // `R` was skipped: rebuilt here, what it re-creates is held only inside this op.
            self.rebuild(mb, &ctx)?;
            most = most.max(self.slots[mb].bytes());
        }
        let Slot::Saved { layers: saved, loss, .. } = std::mem::take(&mut self.slots[mb]) else {
            return Err(self.order("backward_input", mb, "internal: forward state missing"));
        };
        let mut g = match (loss, grad_out) {
            (Some(l), _) => LossKind::backward_scaled(l, self.shard.total, self.loss_scale)?,
            (None, Some(g)) => g.into_device(self.device())?,
            (None, None) => return Err(self.order("backward_input", mb, "internal: no gradient to start from")),
        };
        let mut needs = Vec::with_capacity(saved.len());
        for (i, (layer, s)) in self.layers.iter().zip(saved).enumerate().rev() {
            let (dx, n) = layer.backward_input(s, g, &self.layer_ctx(ctx, i))?;
            needs.push(n);
            g = dx;
        }
        needs.reverse();
        self.slots[mb] = Slot::AwaitingW { needs };
        Ok((g, start_bytes, most))
    }

    /// `W`: computes `mb`'s parameter gradients from what `I` kept, frees it, and accumulates the
    /// gradients in increasing micro-batch order: if an earlier micro-batch's `W` has not run,
    /// these gradients are parked (and counted in `held_bytes_of(mb)`) until it has.
    pub fn backward_weight(&mut self, mb: usize) -> Result<()> {
        self.op_working = 0;
        self.ctx("backward_weight", mb)?;
        let _scope = self.enter();
        self.expect_phase("backward_weight", mb, &[Phase::AwaitingW], "W comes after I, once")?;
        let Slot::AwaitingW { needs } = std::mem::replace(&mut self.slots[mb], Slot::Done) else {
            return Err(self.order("backward_weight", mb, "internal: weight-gradient inputs missing"));
        };
        let mut grads = Vec::with_capacity(self.grads.len());
        for (layer, n) in self.layers.iter().zip(&needs) {
            let g = layer.weight_grads(n)?;
            let params = layer.params();
            if g.len() != params.len() || g.iter().zip(&params).any(|(g, p)| g.shape() != p.shape()) {
                let shapes = |v: &mut dyn Iterator<Item = [usize; 2]>| {
                    v.map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
                };
                return Err(Error::Shape {
                    place: self.place("backward_weight", Some(mb)),
                    reason: format!(
                        "the {} layer's weight_grads returned [{}] for parameters [{}]; return one gradient per parameter, of its shape",
                        layer.kind(),
                        shapes(&mut g.iter().map(Tensor::shape)),
                        shapes(&mut params.iter().map(|p| p.shape()))
                    ),
                });
            }
            grads.extend(g);
        }
        drop(needs);
        self.accum.offer(mb, grads, &mut self.grads)
    }

    /// `B`: [`backward_input`](Stage::backward_input) then
    /// [`backward_weight`](Stage::backward_weight); returns the input gradient.
    pub fn backward(&mut self, mb: usize, grad_out: Option<Tensor>) -> Result<Tensor> {
        self.op_working = 0;
        let (dx, start, most) = self.backward_input_held(mb, grad_out)?;
        self.backward_weight(mb)?;
        self.op_working = most.saturating_sub(start.max(self.slots[mb].bytes()));
        Ok(dx)
    }

    /// An error unless `input` fits the stage and `target` is given exactly on the last stage
    /// and fits its prediction.
    fn check_io(&self, op: &str, mb: Option<usize>, input: &Tensor, target: Option<&Tensor>) -> Result<()> {
        if input.cols() != self.input_width() || input.rows() == 0 {
            return Err(Error::Shape {
                place: self.place(op, mb),
                reason: format!("input is {:?}; this stage takes [rows ≥ 1, {}]", input.shape(), self.input_width()),
            });
        }
        let order = |reason: &str| Error::Order { place: self.place(op, mb), reason: reason.into() };
        match (self.loss, target) {
            (Some(kind), Some(t)) => kind.check_target(input.rows(), self.output_width(), t),
            (Some(_), None) => Err(order("the last stage needs the micro-batch's target to compute the loss")),
            (None, Some(_)) => Err(order("only the last stage takes a target; pass None")),
            (None, None) => Ok(()),
        }
    }

    /// A forward that keeps nothing and drops nothing (dropout is the identity): on the last
    /// stage, the mean loss of `input` against `target` as a `[1, 1]` tensor; elsewhere the
    /// activation for the next stage. Independent of any step: it needs no `begin_step` and
    /// leaves every micro-batch of the step in flight as it was. What a validation loss is made of.
    pub fn evaluate(&self, input: Tensor, target: Option<&Tensor>) -> Result<Tensor> {
        self.check_io("evaluate", None, &input, target)?;
        let ctx = Ctx::new(self.seed, 0, 0, self.spec.layers.start).evaluating();
        let mut x = input.into_device(self.device())?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, &self.layer_ctx(ctx, i))?;
        }
        match (self.loss, target) {
            (Some(kind), Some(t)) => Ok(kind.forward_tensor(&x, t)?.0),
            _ => Ok(x),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{reference_step, LossKind, ModelSpec, Partition, Policies, RecomputePolicy, StageBytes, Task};

    const POLICIES: [&str; 6] = ["none", "full", "every:1", "every:2", "sqrt", "selective"];

    fn stages(model: &ModelSpec, n: usize, policy: &str) -> Vec<Stage> {
        let specs = model.stage_specs(n, &Partition::Even, &policy.parse::<Policies>().unwrap()).unwrap();
        Stage::build_all(model, &specs).unwrap()
    }

    fn begin(stages: &mut [Stage], m: usize) {
        for s in stages.iter_mut() {
            s.begin_step(4, m).unwrap();
        }
    }

    fn mse_model() -> ModelSpec {
        ModelSpec { loss: LossKind::Mse, ..ModelSpec::tiny().with_mlp(|s| s.output = 3).unwrap() }
    }

    /// Forward of `mb` through all stages; returns each stage's output (the loss last).
    fn forward_all(stages: &mut [Stage], task: &Task, mb: usize, rows: usize) -> Vec<Tensor> {
        let (mut x, t) = task.batch(4, mb, rows);
        let last = stages.len() - 1;
        let mut outs = vec![];
        for (k, s) in stages.iter_mut().enumerate() {
            x = s.forward(mb, x, (k == last).then_some(&t)).unwrap();
            outs.push(x.clone());
        }
        outs
    }

    #[test]
    fn held_bytes_match_predictions_after_every_op() {
        for model in [ModelSpec::tiny(), mse_model(), ModelSpec::gpt_tiny()] {
            let task = Task::new(&model, 1);
            for n in [1, 3] {
                for policy in POLICIES {
                    let mut st = stages(&model, n, policy);
                    let rows = if model.seq() > 1 { model.seq() } else { 5 };
                    let p: Vec<StageBytes> = st.iter().map(|s| s.predicted_bytes(rows)).collect();
                    let ctx = format!("{:?} in {n} stages, {policy}", model.loss);
                    begin(&mut st, 2);
                    for mb in 0..2 {
                        forward_all(&mut st, &task, mb, rows);
                        for (s, b) in st.iter().zip(&p) {
                            assert_eq!(s.held_bytes_of(mb), b.act_bytes, "after F, {ctx}");
                        }
                    }
                    for (s, b) in st.iter().zip(&p) {
                        assert_eq!(s.held_bytes(), 2 * b.act_bytes, "two micro-batches in flight, {ctx}");
                    }
                    for mb in 0..2 {
                        let mut g = None;
                        for k in (0..n).rev() {
                            st[k].recompute(mb).unwrap();
                            assert_eq!(
                                st[k].held_bytes_of(mb),
                                p[k].act_bytes + p[k].recompute_bytes,
                                "after R, {ctx}"
                            );
                            g = Some(st[k].backward_input(mb, g).unwrap());
                            assert_eq!(st[k].held_bytes_of(mb), p[k].w_bytes, "after I, {ctx}");
                        }
                    }
                    for mb in 0..2 {
                        for (s, b) in st.iter_mut().zip(&p) {
                            s.backward_weight(mb).unwrap();
                            assert_eq!(s.held_bytes_of(mb), 0, "after W, {ctx}");
                            assert_eq!(s.held_bytes(), if mb == 0 { b.w_bytes } else { 0 });
                        }
                    }
                    assert!(st.iter().all(Stage::grads_complete));
                }
            }
        }
    }

    /// `optimal` at budgets from the least to one that keeps everything: after `F` the stage
    /// holds what the plan keeps, inside `I` at most the plan's peak (measured exactly), after
    /// `I` what `W` needs; the gradients are the reference's bits.
    #[test]
    fn optimal_holds_what_its_plan_says_and_keeps_the_bits() {
        for model in [ModelSpec::tiny(), mse_model(), ModelSpec::gpt_tiny()] {
            let task = Task::new(&model, 9);
            let rows = if model.seq() > 1 { 2 * model.seq() } else { 6 };
            let m = 2;
            for n in [1, 2] {
                let plain = model.stage_specs(n, &Partition::Even, &Policies::all(RecomputePolicy::None)).unwrap();
                let (want_out, want) = reference_step(&model, &plain, &task, 4, m, rows).unwrap();
                let none: Vec<StageBytes> =
                    Stage::build_all(&model, &plain).unwrap().iter().map(|s| s.predicted_bytes(rows)).collect();
                let probe = Stage::build_all(&model, &plain).unwrap();
                let least: Vec<u64> = probe.iter().map(|s| s.optimal_least_budget(rows).unwrap()).collect();
                let most = *least.iter().max().unwrap();
                let mut seen = std::collections::BTreeSet::new();
                for budget in [most, most + most / 4, most + most / 2, 2 * most, 4 * most, 1 << 40] {
                    let specs = model
                        .stage_specs(n, &Partition::Even, &Policies::all(RecomputePolicy::Optimal(budget)))
                        .unwrap();
                    let mut st = Stage::build_all(&model, &specs).unwrap();
                    let plans: Vec<_> = st.iter_mut().map(|s| s.optimal_plan(rows).unwrap()).collect();
                    let p: Vec<StageBytes> = st.iter().map(|s| s.predicted_bytes(rows)).collect();
                    let ctx = format!("{} in {n} stages, optimal:{budget}", model.name);
                    for (k, plan) in plans.iter().enumerate() {
                        seen.insert(plan.describe());
                        assert!(plan.chain_peak() <= budget, "{ctx}");
                        assert_eq!(p[k].act_bytes, plan.kept(), "{ctx}");
                        assert_eq!(p[k].act_bytes + p[k].recompute_bytes, plan.peak(), "{ctx}");
                        assert_eq!(p[k].w_bytes, none[k].w_bytes, "{ctx}");
                    }
                    begin(&mut st, m);
                    let mut losses = vec![];
                    for mb in 0..m {
                        losses.push(forward_all(&mut st, &task, mb, rows)[n - 1].data()[0]);
                        for (s, b) in st.iter().zip(&p) {
                            assert_eq!(s.held_bytes_of(mb), b.act_bytes, "after F, {ctx}");
                        }
                    }
                    assert_eq!(losses, want_out.losses, "{ctx}");
                    for mb in (0..m).rev() {
                        let mut g = None;
                        for k in (0..n).rev() {
                            st[k].recompute(mb).unwrap(); // nothing to do: I recomputes
                            assert_eq!(st[k].held_bytes_of(mb), p[k].act_bytes, "R does nothing, {ctx}");
                            g = Some(st[k].backward_input(mb, g).unwrap());
                            assert_eq!(st[k].held_bytes_of(mb), p[k].w_bytes, "after I, {ctx}");
                            assert_eq!(st[k].backward_peak_bytes(), plans[k].peak(), "inside I, {ctx}");
                        }
                    }
                    for mb in 0..m {
                        for s in st.iter_mut() {
                            s.backward_weight(mb).unwrap();
                        }
                    }
                    for (s, w) in st.iter().zip(&want) {
                        assert!(s.grads().iter().zip(w).all(|(g, w)| g.bit_eq(w)), "{ctx}");
                        assert_eq!(s.held_bytes(), 0);
                    }
                }
                assert!(seen.len() >= 3, "the budgets make different sequences: {seen:?}");
                let specs =
                    model.stage_specs(n, &Partition::Even, &Policies::all(RecomputePolicy::Optimal(most - 1))).unwrap();
                let mut st = Stage::build_all(&model, &specs).unwrap();
                let worst = least.iter().position(|&l| l == most).unwrap();
                let e = st[worst].optimal_plan(rows).unwrap_err().to_string();
                assert!(e.contains(&format!("give at least optimal:{most}B")), "{e}");
            }
        }
    }

    /// The bytes of one plan, worked out by hand: tiny in one stage, 4 rows.
    #[test]
    fn optimal_bytes_of_tiny_by_hand() {
        // tiny: Linear(16→24), 3 blocks (h 24, f 48), norm(24), Linear(24→5), cross-entropy.
        let model = ModelSpec::tiny();
        let rows = 4;
        let specs = model.stage_specs(1, &Partition::Even, &Policies::all(RecomputePolicy::Optimal(1 << 40))).unwrap();
        let mut st = Stage::build_all(&model, &specs).unwrap();
        let plan = st[0].optimal_plan(rows).unwrap();
        let none = model.stage_specs(1, &Partition::Even, &Policies::all(RecomputePolicy::None)).unwrap();
        assert_eq!(plan.kept(), none[0].predicted_bytes(&model, rows).act_bytes, "a huge budget keeps everything");
        assert!(plan.recomputed().is_empty());
        let least = st[0].optimal_least_budget(rows).unwrap();
        let specs = model.stage_specs(1, &Partition::Even, &Policies::all(RecomputePolicy::Optimal(least))).unwrap();
        let mut st = Stage::build_all(&model, &specs).unwrap();
        let plan = st[0].optimal_plan(rows).unwrap();
        // At the least budget one block's backward holds the stage input (16 floats per row),
        // the block's input (24) and ā (h + 1 + 2f − h... = 2·24 + 1 + 2·48 − 24 = 121), and the
        // gradients of its output and its input (24 each): 209 floats per row.
        assert_eq!(least, 4 * 4 * (16 + 24 + 121 + 24 + 24));
        assert_eq!(plan.chain_peak(), least);
        assert_eq!(
            plan.describe(),
            "Fck0 F∅1 F∅2 Fck3 Fall4 Fall5 | B5 B4 Fall3 B3 Fck0 F∅1 Fall2 B2 Fall0 Fall1 B1 B0"
        );
        // F keeps the inputs of layers 0 and 3 (16 + 24), the norm's state (25), the head's input
        // (24) and the loss's state (5 probabilities and the target: 6).
        assert_eq!(plan.kept(), 4 * 4 * (16 + 24 + 25 + 24 + 6));
        assert_eq!(plan.recomputed(), vec![(3, true), (0, false), (1, false), (2, true), (0, true), (1, true)]);
    }

    #[test]
    fn recompute_reproduces_the_forward_bits() {
        for model in [ModelSpec::tiny(), mse_model(), ModelSpec::gpt_tiny()] {
            let task = Task::new(&model, 2);
            let rows = if model.seq() > 1 { 2 * model.seq() } else { 6 };
            let mut plain = stages(&model, 2, "none");
            begin(&mut plain, 2);
            let want: Vec<Vec<Tensor>> = (0..2).map(|mb| forward_all(&mut plain, &task, mb, rows)).collect();
            for policy in POLICIES {
                let mut st = stages(&model, 2, policy);
                begin(&mut st, 2);
                for (mb, want) in want.iter().enumerate() {
                    let outs = forward_all(&mut st, &task, mb, rows);
                    assert!(outs.iter().zip(want).all(|(a, b)| a.bit_eq(b)), "outputs, {policy}");
                    for (s, p) in st.iter_mut().zip(&plain) {
                        s.recompute(mb).unwrap();
                        s.recompute(mb).unwrap(); // a second R is a no-op
                        let (got, exp) = (s.slots[mb].tensors(), p.slots[mb].tensors());
                        assert_eq!(got.len(), exp.len());
                        assert!(got.iter().zip(&exp).all(|(a, b)| a.bit_eq(b)), "recomputed state, {policy}, mb {mb}");
                    }
                }
            }
        }
    }

    #[test]
    fn gradients_are_bitwise_equal_under_every_policy_and_order() {
        let model = ModelSpec::tiny();
        let task = Task::new(&model, 3);
        let m = 3;
        let specs = model.stage_specs(3, &Partition::Even, &Policies::all(RecomputePolicy::None)).unwrap();
        let (want_out, want) = reference_step(&model, &specs, &task, 4, m, 7).unwrap();
        for policy in POLICIES.iter().chain(&["full,none,sqrt", "none,every:2,full"]) {
            let specs = model.stage_specs(3, &Partition::Even, &policy.parse().unwrap()).unwrap();
            let (out, got) = reference_step(&model, &specs, &task, 4, m, 7).unwrap();
            assert_eq!(out, want_out);
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!(g.bit_eq(w), "{policy}");
            }
            // A pipelined order: all forwards, then I in reverse micro-batch order, W last, in a
            // scrambled order; R skipped on purpose (I recomputes inline).
            let mut st = Stage::build_all(&model, &specs).unwrap();
            begin(&mut st, m);
            let mut losses = vec![];
            for mb in 0..m {
                losses.push(forward_all(&mut st, &task, mb, 7)[2].data()[0]);
            }
            assert_eq!(losses, want_out.losses);
            for mb in (0..m).rev() {
                let mut g = None;
                for k in (0..3).rev() {
                    g = Some(st[k].backward_input(mb, g).unwrap());
                }
            }
            for (k, mb) in [(2, 2), (0, 1), (2, 0), (1, 2), (0, 0), (1, 0), (2, 1), (0, 2), (1, 1)] {
                st[k].backward_weight(mb).unwrap();
            }
            for (s, w) in st.iter().zip(&want) {
                assert!(s.grads().iter().zip(w).all(|(g, w)| g.bit_eq(w)), "pipelined order, {policy}");
                assert_eq!(s.held_bytes(), 0);
            }
        }
    }

    #[test]
    fn i_then_w_equals_b_bitwise() {
        let model = ModelSpec::tiny();
        let task = Task::new(&model, 4);
        let (mut a, mut b) = (stages(&model, 2, "sqrt"), stages(&model, 2, "sqrt"));
        begin(&mut a, 2);
        begin(&mut b, 2);
        for mb in 0..2 {
            forward_all(&mut a, &task, mb, 4);
            forward_all(&mut b, &task, mb, 4);
            let ga = a[1].backward(mb, None).unwrap();
            let gb = b[1].backward_input(mb, None).unwrap();
            assert!(ga.bit_eq(&gb));
            let da = a[0].backward(mb, Some(ga)).unwrap();
            let db = b[0].backward_input(mb, Some(gb)).unwrap();
            assert!(da.bit_eq(&db));
        }
        for mb in 0..2 {
            b[0].backward_weight(mb).unwrap();
            b[1].backward_weight(mb).unwrap();
        }
        for (x, y) in a.iter().zip(&b) {
            assert!(x.grads().iter().zip(y.grads()).all(|(g, h)| g.bit_eq(h)));
        }
    }

    #[test]
    fn weight_gradients_out_of_order_are_parked_and_give_in_order_bits() {
        let model = ModelSpec::tiny();
        let task = Task::new(&model, 5);
        let run = |order: &[usize]| {
            let mut st = stages(&model, 1, "none");
            begin(&mut st, 3);
            for mb in 0..3 {
                forward_all(&mut st, &task, mb, 8);
                st[0].backward_input(mb, None).unwrap();
            }
            let grad_bytes = st[0].grad_bytes();
            for (k, &mb) in order.iter().enumerate() {
                st[0].backward_weight(mb).unwrap();
                let parked = order[..=k].iter().filter(|&&j| j >= st[0].accum.next).count() as u64;
                assert_eq!(st[0].held_bytes_of(mb), if mb >= st[0].accum.next { grad_bytes } else { 0 });
                let waiting: u64 = order[k + 1..].iter().map(|&j| st[0].held_bytes_of(j)).sum();
                assert_eq!(st[0].held_bytes(), parked * grad_bytes + waiting);
            }
            assert!(st[0].grads_complete() && st[0].held_bytes() == 0);
            st.remove(0).grads.into_iter().collect::<Vec<_>>()
        };
        let want = run(&[0, 1, 2]);
        for order in [[1, 0, 2], [2, 1, 0], [2, 0, 1], [1, 2, 0]] {
            assert!(run(&order).iter().zip(&want).all(|(g, w)| g.bit_eq(w)), "{order:?}");
        }
    }

    #[test]
    fn misuse_is_an_error_not_a_panic() {
        let model = ModelSpec::tiny();
        let task = Task::new(&model, 6);
        let mut st = stages(&model, 2, "full");
        let (x, t) = task.batch(0, 0, 4);
        let err = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(err(st[0].forward(0, x.clone(), None)).contains("call begin_step"));
        begin(&mut st, 2);
        assert!(err(st[0].forward(2, x.clone(), None)).contains("micro-batch 2 is not part of this step (m = 2)"));
        assert!(err(st[0].forward(0, Tensor::zeros(4, 3), None)).contains("takes [rows ≥ 1, 16]"));
        assert!(err(st[0].forward(0, x.clone(), Some(&t))).contains("only the last stage takes a target"));
        assert!(err(st[0].backward_input(0, Some(Tensor::zeros(4, 24)))).contains("Idle"));
        assert!(st[0].backward_weight(0).unwrap_err().to_string().contains("run forward first"));
        assert!(st[0].recompute(1).unwrap_err().to_string().contains("R goes between F and I"));
        let a = st[0].forward(0, x.clone(), None).unwrap();
        assert!(err(st[0].forward(0, x.clone(), None)).contains("once per step"));
        assert!(st[0].backward_weight(0).unwrap_err().to_string().contains("W comes after I"));
        assert!(err(st[1].forward(0, a.clone(), None)).contains("needs the micro-batch's target"));
        assert!(err(st[1].forward(0, a.clone(), Some(&Tensor::zeros(4, 2)))).contains("must be [4, 1]"));
        st[1].forward(0, a, Some(&t)).unwrap();
        assert!(err(st[1].backward_input(0, Some(Tensor::zeros(4, 5)))).contains("starts from its loss"));
        assert!(err(st[0].backward_input(0, None)).contains("needs grad_out, the gradient from stage 1"));
        assert!(err(st[0].backward_input(0, Some(Tensor::zeros(3, 24)))).contains("the forward output was [4, 24]"));
        assert_eq!(st[0].phase(0), Phase::Checkpointed, "a rejected op changes nothing");
        let g = st[1].backward(0, None).unwrap();
        assert!(err(st[1].backward(0, None)).contains("Done"));
        assert!(st[1].begin_step(1, 2).is_ok(), "nothing in flight on stage 1");
        assert!(st[0].begin_step(1, 2).unwrap_err().to_string().contains("still in flight"));
        st[0].backward(0, Some(g)).unwrap();
        assert!(st[0].begin_step(1, 0).is_err());
        fn send<T: Send>(_: &T) {}
        send(&st[0]);
    }

    /// `evaluate` through every stage in order.
    fn evaluate_all(stages: &[Stage], x: Tensor, t: &Tensor) -> Tensor {
        let last = stages.len() - 1;
        stages.iter().enumerate().fold(x, |x, (k, s)| s.evaluate(x, (k == last).then_some(t)).unwrap())
    }

    #[test]
    fn evaluate_is_a_forward_without_dropout_that_keeps_nothing() {
        for model in [ModelSpec::tiny(), ModelSpec::gpt_tiny()] {
            let rows = model.rows(model.batch).unwrap();
            let task = Task::new(&model, 3);
            let (x, t) = task.batch(4, 0, rows);
            let whole = evaluate_all(&stages(&model, 1, "none"), x.clone(), &t);
            // The same bits whatever the partition, and while a step is in flight.
            let mut split = stages(&model, 3, "full");
            begin(&mut split, 2);
            forward_all(&mut split, &task, 1, rows);
            let held: Vec<u64> = split.iter().map(|s| s.held_bytes_of(1)).collect();
            assert!(evaluate_all(&split, x.clone(), &t).bit_eq(&whole), "{}", model.name);
            assert_eq!(held, split.iter().map(|s| s.held_bytes_of(1)).collect::<Vec<_>>());
            // Dropout is off: the model without dropout evaluates to the same bits, and a
            // training forward of the model with dropout differs.
            let plain = ModelSpec { dropout: 0.0, ..model.clone() };
            assert!(evaluate_all(&stages(&plain, 1, "none"), x.clone(), &t).bit_eq(&whole));
            let mut trained = stages(&model, 1, "none");
            begin(&mut trained, 1);
            let loss = forward_all(&mut trained, &task, 0, rows).pop().unwrap();
            assert!(!loss.bit_eq(&whole), "{}", model.name);
        }
        let s = &stages(&ModelSpec::tiny(), 2, "none")[1];
        let e = s.evaluate(Tensor::zeros(8, 24), None).unwrap_err().to_string();
        assert!(e.contains("evaluate") && e.contains("needs the micro-batch's target"), "{e}");
    }
}
