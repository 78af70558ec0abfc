//! `Stage`: a contiguous range of a model's layers, its recompute policy, its gradient buffers,
//! and the state of every micro-batch in flight. The ops (`F`, `R`, `I`, `W`, `B`) are in
//! `ops.rs`.
//!
//! Lifecycle of one training step:
//!
//! ```text
//!  begin_step(step, m) ─▶ any interleaving of forward / recompute / backward_input /
//!                         backward_weight / backward over micro-batches 0..m
//!                       ─▶ grads_complete() ─▶ optimizer step ─▶ begin_step(step + 1, m) …
//! ```
//!
//! Invariants: the gradient buffers always hold the sum of the gradients of micro-batches
//! `0..k` for some `k`, added in that order (so any order of `W` calls gives the same bits);
//! `held_bytes` is the sum of the tensors held for micro-batches of the current step on the
//! stage's device; `host_bytes` what offload moved to host memory (`offload.rs`).

use std::ops::Range;
use std::sync::Arc;

use crate::bytes::{model_input_units, optimal_plan, stage_bytes, LossRows};
use crate::cuda::{Lane, LaneScope};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::layers::{Ctx, Layer};
use crate::loss::LossKind;
use crate::offload::HostStore;
use crate::optimal::OptimalPlan;
use crate::params_file::ParamsFile;
use crate::partition::StageSpec;
use crate::policy::RecomputePolicy;
use crate::shard::Shard;
use crate::slot::{Accumulator, Phase, Slot};
use crate::spec::ModelSpec;
use crate::tensor::Tensor;
use crate::{GemmShape, StageBytes};

/// One pipeline stage with real compute. `Send`: an executor moves it into its rank's thread.
#[derive(Debug)]
pub struct Stage {
    pub(crate) spec: StageSpec,
    /// The model's seed: the key of its dropout masks.
    pub(crate) seed: u64,
    pub(crate) layers: Vec<Box<dyn Layer>>,
    /// The loss, on the last stage.
    pub(crate) loss: Option<LossKind>,
    /// The current step, set by `begin_step`.
    pub(crate) step: Option<u64>,
    /// One slot per micro-batch of the current step.
    pub(crate) slots: Vec<Slot>,
    /// Which of the step's micro-batches the slots are.
    pub(crate) shard: Shard,
    /// Micro-batches per step: slot `k` is micro-batch `k mod per_step` of step
    /// `step + k div per_step` (a run of steps back to back has slots for all of them).
    pub(crate) per_step: usize,
    /// Accumulated gradients, one per parameter, in parameter order.
    pub(crate) grads: Vec<Tensor>,
    pub(crate) accum: Accumulator,
    /// The stage's own stream and cuBLAS handle, on a GPU.
    pub(crate) lane: Option<Arc<Lane>>,
    /// Under `optimal`: the plans made, by rows per micro-batch.
    pub(crate) plans: Vec<(usize, Arc<OptimalPlan>)>,
    /// Under `optimal`: the most the last `I` held for its micro-batch between its steps.
    pub(crate) backward_peak: u64,
    /// What the last op held for its micro-batch only while it ran, above the larger of what
    /// the micro-batch held before and after it (see [`Stage::working_bytes`]).
    pub(crate) op_working: u64,
    /// Offloaded micro-batches, in host memory.
    pub(crate) host: HostStore,
    /// What the last stage's loss is multiplied by before its backward (mixed-precision loss
    /// scaling; 1 otherwise): the gradients are this many times the loss's.
    pub(crate) loss_scale: f32,
}

impl Stage {
    /// Builds stage `spec` of `model` (its layers' parameters come from the model's seed and their
    /// global indices, so any partition builds the same model).
    pub fn new(model: &ModelSpec, spec: &StageSpec) -> Result<Stage> {
        model.validate()?;
        if let (true, Device::Cuda(_)) = (model.precision.is_mixed(), spec.device) {
            return Err(Error::Partition(format!(
                "stage {} of {}: {} stores tensors in 16 bits on the host, and runs on CPU stages only for now; put the stage on the CPU, or train in f32, bf16 or f16 on {}",
                spec.index, model.name, model.precision, spec.device
            )));
        }
        spec.device.check()?;
        let all = model.all_layers();
        if spec.layers.is_empty() || spec.layers.end > all.len() {
            return Err(Error::Partition(format!(
                "stage {} has layers {:?}, but {} has layers 0..{}; a stage needs a non-empty range inside it",
                spec.index,
                spec.layers,
                model.name,
                all.len()
            )));
        }
        let layers = spec.layers.clone().map(|i| all[i].build(i, model)).collect::<Result<Vec<_>>>()?;
        let loss = spec.is_last(model).then_some(model.loss);
        Stage::from_layers(spec, layers, loss, model.seed)
    }

    /// A stage of `layers` — any [`Layer`]s, a user's own included — placed as `spec` says: its
    /// position, the global indices of its layers (`spec.layers`, one per layer), its recompute
    /// policy and device. The last stage of a model takes its `loss`; `seed` keys the dropout
    /// masks (the model's, the same on every stage). The parameters are moved to the device.
    pub fn from_layers(
        spec: &StageSpec,
        mut layers: Vec<Box<dyn Layer>>,
        loss: Option<LossKind>,
        seed: u64,
    ) -> Result<Stage> {
        if layers.is_empty() || layers.len() != spec.layers.len() {
            return Err(Error::Partition(format!(
                "stage {} is given {} layers for the layer range {:?}; give one layer per index, and at least one",
                spec.index,
                layers.len(),
                spec.layers
            )));
        }
        for (k, pair) in layers.windows(2).enumerate() {
            if pair[0].output_width() != pair[1].input_width() {
                return Err(Error::Shape {
                    place: format!("stage {} layers {} and {}", spec.index, spec.layers.start + k, spec.layers.start + k + 1),
                    reason: format!(
                        "the {} layer puts out rows of width {}, but the {} layer after it takes width {}; make the widths chain",
                        pair[0].kind(),
                        pair[0].output_width(),
                        pair[1].kind(),
                        pair[1].input_width()
                    ),
                });
            }
        }
        for (k, l) in layers.iter().enumerate() {
            let place = || format!("stage {} layer {} ({})", spec.index, spec.layers.start + k, l.kind());
            if !l.runs_on(spec.device) {
                return Err(Error::Partition(format!(
                    "{} does not run on {}; put its stage on the CPU, or use a model whose layers all run there (every built-in layer does), or give the layer a {} implementation",
                    place(),
                    spec.device,
                    spec.device
                )));
            }
            let (names, params) = (l.param_names().len(), l.params().len());
            if names != params {
                return Err(Error::Shape {
                    place: place(),
                    reason: format!("{params} parameters but {names} parameter names; give one name per parameter"),
                });
            }
        }
        spec.device.check()?;
        if let (Some(format), Device::Cuda(_)) = (layers[0].storage(), spec.device) {
            return Err(Error::Partition(format!(
                "stage {} stores its tensors in {format} (mixed precision), which runs on CPU stages only for now; put the stage on the CPU, or train in f32, bf16 or f16 on {}",
                spec.index, spec.device
            )));
        }
        // Parameters are drawn on the host (so every device starts from the same bits), then
        // moved to the stage's device on its own stream.
        let lane = match spec.device {
            Device::Cpu => None,
            Device::Cuda(ordinal) => Some(Lane::new(ordinal)?),
        };
        let _scope = lane.as_ref().map(Lane::enter);
        for l in layers.iter_mut() {
            for p in l.params_mut() {
                if p.device() != spec.device {
                    *p = p.to_device(spec.device)?;
                }
            }
            for p in l.frozen_mut() {
                if p.device() != spec.device {
                    *p = p.to_device(spec.device)?;
                }
            }
        }
        let mut grads = Vec::new();
        for p in layers.iter().flat_map(|l| l.params()) {
            grads.push(p.zeros_like(p.rows(), p.cols())?);
        }
        Ok(Stage {
            spec: spec.clone(),
            seed,
            layers,
            loss,
            step: None,
            slots: vec![],
            shard: Shard::whole(0),
            per_step: 0,
            grads,
            accum: Accumulator::default(),
            lane,
            plans: Vec::new(),
            backward_peak: 0,
            op_working: 0,
            host: HostStore::default(),
            loss_scale: 1.0,
        })
    }

    /// Builds every stage of `specs`.
    pub fn build_all(model: &ModelSpec, specs: &[StageSpec]) -> Result<Vec<Stage>> {
        specs.iter().map(|s| Stage::new(model, s)).collect()
    }

    /// Position in the pipeline.
    pub fn index(&self) -> usize {
        self.spec.index
    }

    /// Global indices of the layers.
    pub fn layer_range(&self) -> Range<usize> {
        self.spec.layers.clone()
    }

    /// The spec the stage was built from.
    pub fn spec(&self) -> &StageSpec {
        &self.spec
    }

    /// The recompute policy.
    pub fn policy(&self) -> RecomputePolicy {
        self.spec.policy
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.spec.device
    }

    /// Whether this stage ends the model: its forward takes a target and returns the loss, its
    /// backward starts from the loss.
    pub fn is_last(&self) -> bool {
        self.loss.is_some()
    }

    /// The loss, on the last stage.
    pub fn loss_kind(&self) -> Option<LossKind> {
        self.loss
    }

    /// Whether this stage begins the model (its input is the model input).
    pub fn is_first(&self) -> bool {
        self.spec.layers.start == 0
    }

    /// Width of the stage input.
    pub fn input_width(&self) -> usize {
        self.layers[0].input_width()
    }

    /// Width of the stage output (before the loss on the last stage).
    pub fn output_width(&self) -> usize {
        self.layers[self.layers.len() - 1].output_width()
    }

    /// The layers.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// Micro-batches of the current step, or of the whole run after
    /// [`begin_run`](Stage::begin_run) (0 before either).
    pub fn microbatches(&self) -> usize {
        self.slots.len()
    }

    /// The current step, if one has begun.
    pub fn step(&self) -> Option<u64> {
        self.step
    }

    /// Starts step `step` of `m` micro-batches: zeroes the gradients and the per-micro-batch
    /// state. An error if a micro-batch of the previous step is still in flight (call
    /// [`reset`](Stage::reset) to abandon it).
    pub fn begin_step(&mut self, step: u64, m: usize) -> Result<()> {
        self.begin_shard(step, m, Shard::whole(m))
    }

    /// [`begin_step`](Stage::begin_step) for `m` micro-batches that are `shard` of a larger
    /// step (data parallelism): micro-batch `mb` is the step's `shard.global(mb)`.
    pub fn begin_shard(&mut self, step: u64, m: usize, shard: Shard) -> Result<()> {
        if m == 0 {
            return Err(Error::Order { place: self.place("begin_step", None), reason: "m must be at least 1".into() });
        }
        if !shard.holds(m) {
            return Err(Error::Order {
                place: self.place("begin_step", None),
                reason: format!(
                    "{m} micro-batches from {} do not fit a step of {}; give a shard that holds them",
                    shard.first, shard.total
                ),
            });
        }
        if let Some(mb) =
            self.slots.iter().position(|s| matches!(s.phase(), Phase::Checkpointed | Phase::Saved | Phase::AwaitingW))
        {
            return Err(Error::Order {
                place: self.place("begin_step", None),
                reason: format!(
                    "micro-batch {mb} of step {:?} is still in flight ({:?}); finish its backward, or call reset() to abandon the step",
                    self.step,
                    self.slots[mb].phase()
                ),
            });
        }
        self.reset()?;
        self.step = Some(step);
        self.slots = (0..m).map(|_| Slot::Idle).collect();
        self.shard = shard;
        self.per_step = m;
        Ok(())
    }

    /// Starts a run of `steps` steps of `m` micro-batches from step `first`, back to back or
    /// streamed with no flush: one slot per micro-batch of the run, micro-batch `k·m + j` being
    /// micro-batch `j` of step `first + k` (its data and dropout keyed so, its loss gradient of
    /// the mean over its step's `m`). Gradients add up in micro-batch order across the run; the
    /// caller takes them and zeroes them ([`zero_grad`](Stage::zero_grad)) at each update.
    pub fn begin_run(&mut self, first: u64, steps: usize, m: usize) -> Result<()> {
        let total = steps.checked_mul(m).filter(|&t| t > 0).ok_or_else(|| Error::Order {
            place: self.place("begin_run", None),
            reason: format!("a run of {steps} steps of {m} micro-batches: give at least one of each, and fewer"),
        })?;
        self.begin_shard(first, m, Shard::whole(m))?;
        self.slots = (0..total).map(|_| Slot::Idle).collect();
        Ok(())
    }

    /// Drops every micro-batch's state and parked gradients and zeroes the gradients; the next op
    /// must be `begin_step`.
    pub fn reset(&mut self) -> Result<()> {
        self.slots.clear();
        self.host.clear();
        self.step = None;
        self.accum = Accumulator::default();
        self.zero_grad()
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) -> Result<()> {
        let _scope = self.enter();
        for g in &mut self.grads {
            g.fill_zero()?;
        }
        Ok(())
    }

    /// Makes the stage's stream current on this thread while the scope lives (GPU stages).
    pub(crate) fn enter(&self) -> Option<LaneScope> {
        self.lane.as_ref().map(Lane::enter)
    }

    /// The stage's stream and cuBLAS handle, on a GPU.
    pub fn lane(&self) -> Option<&Arc<Lane>> {
        self.lane.as_ref()
    }

    /// Waits until the stage's queued GPU work has run (nothing to wait for on the CPU).
    pub fn synchronize(&self) -> Result<()> {
        self.lane.as_ref().map_or(Ok(()), |l| l.synchronize())
    }

    /// How many micro-batches' gradients are in the buffers (micro-batches `0..k`, in order,
    /// since the step or run began; a run's updates zero the buffers, not the count).
    pub fn accumulated(&self) -> usize {
        self.accum.next
    }

    /// Whether the gradients of all `m` micro-batches of the step are accumulated.
    pub fn grads_complete(&self) -> bool {
        !self.slots.is_empty() && self.accum.next == self.slots.len()
    }

    /// Where micro-batch `mb` is (`Idle` for an index outside the step).
    pub fn phase(&self, mb: usize) -> Phase {
        self.slots.get(mb).map_or(Phase::Idle, Slot::phase)
    }

    /// What the stage stores its parameters, activations and gradients in: a mixed precision
    /// when its layers store in 16 bits, else `f32` (the products' rounding aside).
    pub fn storage(&self) -> crate::Precision {
        crate::Precision::of_storage(self.layers[0].storage())
    }

    /// The loss scale the stage's backward runs with (1 unless set).
    pub fn loss_scale(&self) -> f32 {
        self.loss_scale
    }

    /// Sets the loss scale: the last stage's loss gradient is multiplied by `scale` (a power of
    /// two) from the next backward on, so the gradients are `scale` times the loss's until the
    /// optimizer divides it out. An error for a scale that is not a positive finite power of two.
    pub fn set_loss_scale(&mut self, scale: f32) -> Result<()> {
        if !(scale.is_finite() && scale > 0.0 && scale.to_bits() & 0x007f_ffff == 0) {
            return Err(Error::Optimizer(format!(
                "stage {}: loss scale {scale} must be a positive power of two, so that scaling is exact",
                self.spec.index
            )));
        }
        self.loss_scale = scale;
        Ok(())
    }

    /// Bytes held for micro-batch `mb`: what its last op kept, plus its gradients if they wait for
    /// an earlier micro-batch's `W` (only when `W`s come out of order).
    pub fn held_bytes_of(&self, mb: usize) -> u64 {
        self.slots.get(mb).map_or(0, Slot::bytes) + self.accum.parked_bytes(mb)
    }

    /// Bytes held for all micro-batches of the step.
    pub fn held_bytes(&self) -> u64 {
        (0..self.slots.len()).map(|mb| self.held_bytes_of(mb)).sum()
    }

    /// What one micro-batch of `batch` rows holds per phase, from its layers' counts of what they
    /// keep (saturating at `u64::MAX`).
    pub fn predicted_bytes(&self, batch: usize) -> StageBytes {
        let loss = self.loss.map(|kind| (kind, self.output_width()));
        stage_bytes(self.layers.as_slice(), self.spec.policy, self.is_first(), loss, batch, self.storage())
            .unwrap_or(StageBytes::SATURATED)
    }

    /// Under `optimal:BYTES`, the plan for micro-batches of `rows` rows: what `F` keeps, the steps
    /// `I` runs and what the micro-batch holds after each. An error naming the least budget when
    /// BYTES is below it, or under another policy.
    pub fn optimal_plan(&mut self, rows: usize) -> Result<Arc<OptimalPlan>> {
        if let Some((_, plan)) = self.plans.iter().find(|(r, _)| *r == rows) {
            return Ok(plan.clone());
        }
        let RecomputePolicy::Optimal(budget) = self.spec.policy else {
            return Err(Error::Policy(format!(
                "stage {} runs policy {}; only optimal:BYTES has a plan",
                self.spec.index, self.spec.policy
            )));
        };
        let precision = self.storage();
        let loss = self.loss.map(|kind| LossRows::of(kind, self.output_width(), precision));
        let scale =
            (rows as u64).checked_mul(precision.stored_bytes()).ok_or_else(|| Error::Policy("rows overflow".into()))?;
        let input = model_input_units(self.is_first(), precision);
        let plan = optimal_plan(self.layers.as_slice(), budget, loss, scale, rows, input)
            .map_err(|e| Error::Policy(format!("stage {} (layers {:?}): {e}", self.spec.index, self.spec.layers)))?;
        let plan = Arc::new(plan);
        self.plans.push((rows, plan.clone()));
        Ok(plan)
    }

    /// The least BYTES `optimal:BYTES` takes on this stage for micro-batches of `rows` rows
    /// (whatever the stage's own policy).
    pub fn optimal_least_budget(&self, rows: usize) -> Result<u64> {
        let precision = self.storage();
        let loss = self.loss.map(|kind| LossRows::of(kind, self.output_width(), precision));
        let mut each: Vec<_> = self.layers.iter().map(|l| crate::bytes::rows(l.as_ref())).collect();
        each[0].input *= model_input_units(self.is_first(), precision);
        let scale =
            (rows as u64).checked_mul(precision.stored_bytes()).ok_or_else(|| Error::Policy("rows overflow".into()))?;
        OptimalPlan::least(&each, loss.map(|l| l.saved), scale, rows)
    }

    /// Under `optimal`, the most bytes the last `I` (or `B`) held for its micro-batch between the
    /// steps it interleaves, its start included: what [`OptimalPlan::peak`] predicts. 0 before
    /// any such `I`.
    pub fn backward_peak_bytes(&self) -> u64 {
        self.backward_peak
    }

    /// What the last op held for its micro-batch only while it ran, above the larger of what the
    /// micro-batch held before and after it (the ledger's working bytes): under `optimal`, an
    /// `I` or `B` that recomputes between its steps holds up to [`OptimalPlan::peak`] —
    /// `act_bytes + recompute_bytes` of its prediction; an `I` or `B` that rebuilds what `R`
    /// would have (when a schedule skipped it) holds what `none` keeps. 0 after every other op.
    /// The simulator counts the same: `act_bytes + recompute_bytes` less the larger of the
    /// micro-batch's bytes before and after its `I`/`B`.
    pub fn working_bytes(&self) -> u64 {
        self.op_working
    }

    /// The parameters, in parameter order (layer by layer).
    pub fn params(&self) -> Vec<&Tensor> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }

    /// The parameters, mutable, with their gradients, in parameter order.
    pub fn params_and_grads_mut(&mut self) -> Vec<(&mut Tensor, &Tensor)> {
        self.layers.iter_mut().flat_map(|l| l.params_mut()).zip(&self.grads).collect()
    }

    /// Replaces the accumulated gradients with `grads` (in parameter order, on any device: moved
    /// to the stage's) — their sum over data-parallel replicas. An error, changing nothing,
    /// unless every shape matches.
    pub fn replace_grads(&mut self, grads: Vec<Tensor>) -> Result<()> {
        let shapes: Vec<[usize; 2]> = self.grads.iter().map(Tensor::shape).collect();
        let given: Vec<[usize; 2]> = grads.iter().map(Tensor::shape).collect();
        if given != shapes {
            return Err(Error::Shape {
                place: format!("stage {} replace_grads", self.spec.index),
                reason: format!("gradients {given:?} for parameters {shapes:?}"),
            });
        }
        let device = self.device();
        self.grads = grads.into_iter().map(|t| t.into_device(device)).collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    /// The accumulated gradients, in parameter order: what a pipelined step is compared with,
    /// bit for bit.
    pub fn grads(&self) -> Vec<&Tensor> {
        self.grads.iter().collect()
    }

    /// Names of the parameters, in parameter order (`layer3.fc1.weight`).
    pub fn param_names(&self) -> Vec<String> {
        self.global_names(|l| l.param_names())
    }

    /// `names(layer)` of every layer, each prefixed with its global index (`layer3.`).
    fn global_names(&self, names: impl Fn(&dyn Layer) -> Vec<String>) -> Vec<String> {
        let layers = self.spec.layers.clone().zip(&self.layers);
        layers.flat_map(|(i, l)| names(l.as_ref()).into_iter().map(move |n| format!("layer{i}.{n}"))).collect()
    }

    /// Every tensor a parameters file keeps of this stage, by its global name
    /// (`layer{i}.{name}`, `i` the layer's index in the model): the trained parameters
    /// ([`param_names`](Stage::param_names)), then the frozen ones ([`frozen`](Stage::frozen)),
    /// layer by layer. What [`ParamsFile::write`] writes and [`load_named`](Stage::load_named)
    /// reads back.
    pub fn named_tensors(&self) -> Vec<(String, &Tensor)> {
        let frozen = self.global_names(|l| l.frozen_names()).into_iter().zip(self.frozen());
        self.param_names().into_iter().zip(self.params()).chain(frozen).collect()
    }

    /// Replaces every tensor [`named_tensors`](Stage::named_tensors) lists with the one `file`
    /// holds under its name, in the dtype the stage stores (rounded to nearest even into 16
    /// bits, or widened from them), on the stage's device. A trained tensor of a layer that also
    /// holds frozen ones (a LoRA adapter) keeps its draw when the file lacks it: a file of the
    /// model trained without adapters starts their fine-tuning. An error, changing nothing, if
    /// any other is missing or one is of another shape. Call it before an optimizer takes the
    /// parameters (its state and `f32` master weights start from them).
    pub fn load_named(&mut self, file: &ParamsFile) -> Result<()> {
        let place = format!("stage {} (layers {:?})", self.spec.index, self.spec.layers);
        // In `named_tensors` order: every trained tensor (optional in a layer with frozen ones),
        // then every frozen one.
        let adapted = self.layers.iter().flat_map(|l| vec![!l.frozen().is_empty(); l.params().len()]);
        let adapted: Vec<bool> = adapted.chain(self.frozen().into_iter().map(|_| false)).collect();
        let mut loaded = Vec::new();
        for ((name, p), optional) in self.named_tensors().into_iter().zip(adapted) {
            if optional && file.get(&name).is_none() {
                loaded.push(None);
                continue;
            }
            loaded.push(Some(file.tensor_for(&name, p.shape(), p.dtype(), &place)?));
        }
        let device = self.device();
        let _scope = self.enter();
        let loaded =
            loaded.into_iter().map(|t| t.map(|t| t.into_device(device)).transpose()).collect::<Result<Vec<_>>>()?;
        let (trained, frozen): (Vec<_>, Vec<_>) = {
            let mut all = loaded.into_iter();
            let trained: Vec<_> = all.by_ref().take(self.params().len()).collect();
            (trained, all.collect())
        };
        for (p, t) in self.layers.iter_mut().flat_map(|l| l.params_mut()).zip(trained) {
            if let Some(t) = t {
                *p = t;
            }
        }
        for (p, t) in self.layers.iter_mut().flat_map(|l| l.frozen_mut()).zip(frozen) {
            if let Some(t) = t {
                *p = t;
            }
        }
        Ok(())
    }

    /// The matrix products one micro-batch of `batch` rows runs, per op: `[F, I, W]` (`I` of the
    /// first stage included: it computes its input gradient too) — the linear maps' and the
    /// products of activations by activations (attention's).
    pub fn products(&self, batch: usize) -> [Vec<GemmShape>; 3] {
        let linears: Vec<(usize, usize)> = self.layers.iter().flat_map(|l| l.linear_maps()).collect();
        let shape = |m, k, n, trans_a, trans_b| GemmShape { m, k, n, trans_a, trans_b };
        let mut f: Vec<GemmShape> = linears.iter().map(|&(i, o)| shape(batch, i, o, false, false)).collect();
        let mut b: Vec<GemmShape> = linears.iter().rev().map(|&(i, o)| shape(batch, o, i, false, true)).collect();
        let w = self.layers.iter().flat_map(|l| l.weight_products(batch)).collect();
        for l in &self.layers {
            let [lf, lb] = l.activation_products(batch);
            f.extend(lf);
            b.extend(lb);
        }
        [f, b, w]
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }

    /// The parameters held and not trained (a base frozen under LoRA), in layer order.
    pub fn frozen(&self) -> Vec<&Tensor> {
        self.layers.iter().flat_map(|l| l.frozen()).collect()
    }

    /// Bytes of the parameters, trained and frozen.
    pub fn param_bytes(&self) -> u64 {
        self.params().iter().chain(&self.frozen()).map(|p| p.bytes()).sum()
    }

    /// Bytes of the gradient buffers.
    pub fn grad_bytes(&self) -> u64 {
        self.grads.iter().map(Tensor::bytes).sum()
    }

    /// `ctx` for the stage's `i`-th layer.
    pub(crate) fn layer_ctx(&self, ctx: Ctx, i: usize) -> Ctx {
        Ctx { layer: self.spec.layers.start + i, ..ctx }
    }

    /// `"stage 1 (layers 3..6) forward mb 2"`: where an error happened.
    pub(crate) fn place(&self, op: &str, mb: Option<usize>) -> String {
        let mb = mb.map(|j| format!(" micro-batch {j}")).unwrap_or_default();
        format!("stage {} (layers {:?}) {op}{mb}", self.spec.index, self.spec.layers)
    }

    /// The dropout key of micro-batch `mb`, after checking `mb` belongs to the step.
    pub(crate) fn ctx(&self, op: &str, mb: usize) -> Result<Ctx> {
        let m = self.slots.len();
        if self.host.holds(mb) {
            return Err(Error::Order {
                place: self.place(op, Some(mb)),
                reason: "the micro-batch is offloaded to host memory; reload it (L) before its recompute or backward"
                    .into(),
            });
        }
        match self.step {
            Some(step) if mb < m => {
                let per = self.per_step.max(1);
                Ok(Ctx::new(self.seed, step + (mb / per) as u64, self.shard.global(mb % per), self.spec.layers.start))
            }
            Some(_) => Err(Error::UnknownMicrobatch {
                place: self.place(op, Some(mb)),
                mb,
                m,
                hint: format!("micro-batches are numbered 0..{m}"),
            }),
            None => Err(Error::UnknownMicrobatch {
                place: self.place(op, Some(mb)),
                mb,
                m,
                hint: "no step has begun; call begin_step(step, m) first".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Partition, Policies};

    #[test]
    fn built_stages_predict_the_bytes_their_spec_does() {
        for model in [ModelSpec::tiny(), ModelSpec::small(), ModelSpec::gpt_tiny()] {
            for policy in ["none", "full", "every:2", "sqrt", "selective"] {
                for n in [1, 2, 3, 5] {
                    let specs = model.stage_specs(n, &Partition::Even, &policy.parse::<Policies>().unwrap()).unwrap();
                    for spec in &specs {
                        let stage = Stage::new(&model, spec).unwrap();
                        for batch in [1, 7] {
                            assert_eq!(
                                stage.predicted_bytes(batch),
                                spec.predicted_bytes(&model, batch),
                                "{policy} {n}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn layers_whose_widths_do_not_chain_are_refused() {
        use crate::layers::{LayerNorm, Linear};
        use crate::rng::Stream;
        let spec = StageSpec { index: 0, layers: 0..2, policy: RecomputePolicy::None, device: Device::Cpu };
        let layers: Vec<Box<dyn Layer>> =
            vec![Box::new(Linear::new(4, 6, Stream::new(&[1]), 1.0)), Box::new(LayerNorm::new(5))];
        let e = Stage::from_layers(&spec, layers, None, 0).unwrap_err().to_string();
        assert!(e.contains("width 6") && e.contains("width 5") && e.contains("chain"), "{e}");
        let one: Vec<Box<dyn Layer>> = vec![Box::new(LayerNorm::new(5))];
        let e = Stage::from_layers(&spec, one, None, 0).unwrap_err().to_string();
        assert!(e.contains("1 layers for the layer range 0..2"), "{e}");
    }

    /// A layer that breaks the contract: `W` returns only its first gradient, and it names one
    /// parameter of two.
    #[derive(Debug)]
    struct Broken(crate::layers::Linear);

    impl Layer for Broken {
        fn kind(&self) -> &str {
            "broken"
        }
        fn input_width(&self) -> usize {
            self.0.input_width()
        }
        fn output_width(&self) -> usize {
            self.0.output_width()
        }
        fn params(&self) -> Vec<&Tensor> {
            Layer::params(&self.0)
        }
        fn params_mut(&mut self) -> Vec<&mut Tensor> {
            Layer::params_mut(&mut self.0)
        }
        fn param_names(&self) -> Vec<String> {
            Layer::param_names(&self.0)
        }
        fn forward_saving(&self, x: Tensor, ctx: &Ctx) -> Result<(Tensor, crate::layers::Saved)> {
            self.0.forward_saving(x, ctx)
        }
        fn backward_input(
            &self,
            s: crate::layers::Saved,
            dy: Tensor,
            ctx: &Ctx,
        ) -> Result<(Tensor, crate::layers::WNeeds)> {
            Layer::backward_input(&self.0, s, dy, ctx)
        }
        fn weight_grads(&self, needs: &crate::layers::WNeeds) -> Result<Vec<Tensor>> {
            Ok(Layer::weight_grads(&self.0, needs)?.into_iter().take(1).collect())
        }
        fn saved_per_row(&self) -> usize {
            self.0.saved_per_row()
        }
        fn w_per_row(&self) -> usize {
            self.0.w_per_row()
        }
    }

    #[test]
    fn a_layer_that_breaks_the_contract_is_an_error_not_a_wrong_step() {
        use crate::rng::Stream;
        let spec = StageSpec { index: 0, layers: 0..1, policy: RecomputePolicy::None, device: Device::Cpu };
        let broken = || -> Vec<Box<dyn Layer>> {
            vec![Box::new(Broken(crate::layers::Linear::new(3, 2, Stream::new(&[1]), 1.0)))]
        };
        let mut stage = Stage::from_layers(&spec, broken(), Some(LossKind::Mse), 0).unwrap();
        stage.begin_step(0, 1).unwrap();
        stage.forward(0, Tensor::zeros(2, 3), Some(&Tensor::zeros(2, 2))).unwrap();
        stage.backward_input(0, None).unwrap();
        let e = stage.backward_weight(0).unwrap_err().to_string();
        assert!(e.contains("broken layer's weight_grads returned [[3, 2]] for parameters [[3, 2], [1, 2]]"), "{e}");
        // A host-only layer on a GPU stage is refused before any device is touched.
        let gpu = StageSpec { device: Device::Cuda(0), ..spec };
        let e = Stage::from_layers(&gpu, broken(), None, 0).unwrap_err().to_string();
        assert!(e.contains("stage 0 layer 0 (broken) does not run on cuda"), "{e}");
    }

    #[test]
    fn products_list_every_linear_map_in_op_order() {
        let model = ModelSpec::tiny();
        let specs = model.stage_specs(1, &Partition::Even, &Policies::all(RecomputePolicy::None)).unwrap();
        let stage = Stage::new(&model, &specs[0]).unwrap();
        let [f, i, w] = stage.products(5);
        let model = model.mlp_shape().unwrap();
        let maps = 2 + 2 * model.blocks;
        assert!(f.len() == maps && i.len() == maps && w.len() == maps);
        assert_eq!(f[0], GemmShape { m: 5, k: model.input, n: model.hidden, trans_a: false, trans_b: false });
        assert_eq!(i[0], GemmShape { m: 5, k: model.output, n: model.hidden, trans_a: false, trans_b: true });
        assert_eq!(w[1], GemmShape { m: model.hidden, k: 5, n: model.ffn, trans_a: true, trans_b: false });
        let per_row =
            model.input * model.hidden + 2 * model.blocks * model.hidden * model.ffn + model.hidden * model.output;
        for op in [&f, &i, &w] {
            assert_eq!(op.iter().map(GemmShape::flops).sum::<f64>(), 2.0 * 5.0 * per_row as f64);
        }
    }

    #[test]
    fn products_count_attention_by_sequence_and_head() {
        let model = ModelSpec::gpt_tiny(); // width 32, 4 heads, MLP 64, 2 layers, seq 16
        let specs = model.stage_specs(1, &Partition::Even, &Policies::all(RecomputePolicy::None)).unwrap();
        let stage = Stage::new(&model, &specs[0]).unwrap();
        let rows = 2 * 16;
        let [f, i, w] = stage.products(rows);
        let flops = |op: &[GemmShape]| op.iter().map(GemmShape::flops).sum::<f64>();
        // Per row: 2 layers of qkv 32·96, out 32·32, MLP 32·64 twice; the head 32·256.
        let linear = 2.0 * rows as f64 * (2 * (32 * 96 + 32 * 32 + 2 * 32 * 64) + 32 * 256) as f64;
        // Attention: QKᵀ and P·V over the full square, 2·seq·width each per row and layer.
        let core = 2.0 * (2 * 16 * 32 * rows) as f64 * 2.0;
        assert_eq!((flops(&f), flops(&i), flops(&w)), (linear + core, linear + 2.0 * core, linear));
        // 4 linear maps per transformer layer and the head; 2 core products per head of each
        // of the 2 sequences, per layer.
        assert_eq!(f.len(), 2 * 4 + 1 + 2 * (2 * 4) * 2, "a product per head of each sequence");
    }
}
