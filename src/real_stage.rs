//! [`RealStage`]: one `pipesched-stages` [`Stage`] with its optimizer and its share of the
//! data, as the executor drives it ([`StageWork`]) — in single steps, where the caller updates
//! the weights between steps, and in runs (steps back to back, or one stream on stale weights),
//! where the stage updates them itself after its last backward of each update group
//! ([`StageWork::update`]) and runs each micro-batch on the weight version the run gives it,
//! stashing the others.
//!
//! Micro-batch indices are the run's: micro-batch `j` of the run's step `k` is `k·m + j` (a
//! single step is a run of one). The data (inputs for the first stage, targets for the last) of
//! every step of the step or run is generated when it begins, so the measured spans hold
//! pipeline work only.

use std::ops::Range;
use std::time::Instant;

use pipesched_stages::{
    cuda::{Lane, Mark},
    Format, Optimizer, OptimizerSpec, Shard, Stage, Task, Tensor,
};

use crate::exec::{DeviceClock, PendingSum, StageLayers, StageWork, SumRan, Transport, Wire};
use crate::weight_versions::WeightVersions;
use crate::{Error, Result};
/// One model stage, its optimizer, and the step's data it needs.
pub struct RealStage {
    stage: Stage,
    optimizer: Optimizer,
    optimizer_spec: OptimizerSpec,
    /// The first stage's inputs, per micro-batch, taken by its forwards.
    inputs: Vec<Option<Tensor>>,
    /// The last stage's targets, per micro-batch.
    targets: Vec<Option<Tensor>>,
    /// The last stage's losses, per micro-batch of the run, as `[1, 1]` tensors on its device
    /// (read after the run, so a GPU stage never waits for one mid-run).
    losses: Vec<Option<Tensor>>,
    /// In a run: the weight versions its micro-batches use and the ones it keeps.
    run: Option<WeightVersions>,
    /// CUDA events on the stage's stream, on a GPU.
    clock: Option<GpuClock>,
    /// With data parallelism: the replicas the gradients are summed over.
    pub(crate) replicas: Option<Transport>,
    /// Which of the step's micro-batches this replica runs.
    shard: Shard,
    /// The sum of the gradients over the replicas, started when the step's last backward ended:
    /// under way, when it started, and its bytes.
    sum: Option<(PendingSum, Instant, u64)>,
    /// With data parallelism, the buffer the gradients are flattened into for the sum, and the
    /// sum comes back in: made with the replicas, one `f32` a gradient value, and kept from step
    /// to step (a buffer of a whole stage's gradients is past the sizes the heap recycles, and a
    /// new one would cost a page fault per 4 KiB each time). Away in the communication thread
    /// while a sum is under way.
    sum_buffer: Vec<f32>,
    /// The values `sum_buffer` holds: counted in the static bytes, 4 bytes each, wherever the
    /// buffer is (0 without data parallelism).
    sum_len: usize,
    /// ZeRO stage 1: the slice of the stage's parameters (flattened in parameter order) whose
    /// optimizer state this replica keeps and which it updates; `optimizer` is built for it.
    zero: Option<Range<usize>>,
    /// ZeRO stage 1: this replica's slice of the gradients summed over the replicas.
    grad_slice: Option<Vec<f32>>,
}

/// Where a run starts and how big it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunShape {
    /// The run's first step.
    pub first: u64,
    /// Steps in the run.
    pub steps: usize,
    /// Micro-batches per step.
    pub m: usize,
    /// Rows per micro-batch.
    pub batch: usize,
}

/// A GPU stage's clock: CUDA events recorded on its stream.
struct GpuClock {
    lane: std::sync::Arc<Lane>,
    origin: Option<Mark>,
    marks: Vec<Mark>,
}

impl DeviceClock for GpuClock {
    fn start(&mut self) -> std::result::Result<(), String> {
        self.lane.synchronize().map_err(|e| e.to_string())?;
        self.marks.clear();
        self.origin = Some(self.lane.mark().map_err(|e| e.to_string())?);
        Ok(())
    }

    fn mark(&mut self) -> std::result::Result<usize, String> {
        self.marks.push(self.lane.mark().map_err(|e| e.to_string())?);
        Ok(self.marks.len() - 1)
    }

    fn read(&mut self) -> std::result::Result<Vec<f64>, String> {
        let origin = self.origin.as_ref().ok_or("the clock was read before it was started")?;
        self.marks.iter().map(|m| m.ms_since(origin).map_err(|e| e.to_string())).collect()
    }
}

impl RealStage {
    /// `stage` with a fresh `optimizer`, ready for [`begin_step`](RealStage::begin_step).
    pub fn new(stage: Stage, optimizer: OptimizerSpec) -> Result<RealStage> {
        let optimizer_state = Optimizer::new(optimizer, &stage)?;
        let clock = stage.lane().map(|lane| GpuClock { lane: lane.clone(), origin: None, marks: vec![] });
        Ok(RealStage {
            clock,
            stage,
            optimizer: optimizer_state,
            optimizer_spec: optimizer,
            inputs: vec![],
            targets: vec![],
            losses: vec![],
            run: None,
            replicas: None,
            shard: Shard::whole(0),
            sum: None,
            sum_buffer: Vec::new(),
            sum_len: 0,
            zero: None,
            grad_slice: None,
        })
    }

    /// The wrapped stage.
    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    /// What the stage's optimizer is.
    pub fn optimizer_spec(&self) -> OptimizerSpec {
        self.optimizer_spec
    }

    /// A copy of the stage's optimizer and its state.
    pub fn optimizer_copy(&self) -> Result<Optimizer> {
        Ok(self.optimizer.try_clone()?)
    }

    /// The wrapped stage, mutable.
    pub fn stage_mut(&mut self) -> &mut Stage {
        &mut self.stage
    }

    /// Prepares step `step` of `m` micro-batches of `batch` rows: resets the stage and loads the
    /// data this stage reads.
    pub fn begin_step(&mut self, task: &Task, step: u64, m: usize, batch: usize) -> Result<()> {
        self.run = None;
        self.shard = match &self.replicas {
            Some(t) => Shard::of(t.replica(), t.replicas(), m)?,
            None => Shard::whole(m),
        };
        self.sum = None;
        self.stage.begin_shard(step, m, self.shard)?;
        self.load(task, &[step], m, batch)
    }

    /// Prepares a run of `steps` steps of `m` micro-batches from step `first` (see the module
    /// doc), micro-batch `j` of the run on weight version `versions[j]`
    /// ([`Updates::versions_of`](pipesched_schedules::Updates::versions_of)), an update every
    /// `every` micro-batches: resets the stage and loads every step's data.
    pub fn begin_run(&mut self, task: &Task, run: RunShape, versions: &[u32], every: usize) -> Result<()> {
        let RunShape { first, steps, m, batch } = run;
        if self.replicas.is_some() {
            return Err(Error::Usage(
                "a run with updates inside it, with data parallelism: each update would wait for the replicas' sum; run with a barrier between steps".into(),
            ));
        }
        if steps.checked_mul(m) != Some(versions.len()) || every == 0 {
            return Err(Error::Usage(format!(
                "stage {}: {} weight versions for a run of {steps} steps of {m} micro-batches",
                self.stage.index(),
                versions.len()
            )));
        }
        self.shard = Shard::whole(m);
        self.sum = None;
        self.stage.begin_run(first, steps, m)?;
        let step_numbers: Vec<u64> = (0..steps as u64).map(|k| first + k).collect();
        self.load(task, &step_numbers, m, batch)?;
        self.run = Some(WeightVersions::new(versions, every));
        Ok(())
    }

    /// Loads the data this stage reads for `m` micro-batches of each of `steps`, one after
    /// another; the losses start empty.
    fn load(&mut self, task: &Task, steps: &[u64], m: usize, batch: usize) -> Result<()> {
        let total = steps.len() * m;
        let (first, last) = (self.stage.is_first(), self.stage.is_last());
        self.inputs = (0..total).map(|_| None).collect();
        self.targets = (0..total).map(|_| None).collect();
        self.losses = (0..total).map(|_| None).collect();
        if first || last {
            // On a GPU the data is moved there now, before anything is timed.
            let device = self.stage.device();
            let _scope = self.stage.lane().map(|l| l.enter());
            for (k, &step) in steps.iter().enumerate() {
                for mb in 0..m {
                    let (x, t) = task.batch(step, self.shard.global(mb), batch);
                    if first {
                        self.inputs[k * m + mb] = Some(x.into_device(device)?);
                    }
                    if let Some(kind) = self.stage.loss_kind() {
                        // Checked here, on the host: a GPU cannot check class indices cheaply.
                        kind.check_target(batch, self.stage.output_width(), &t)?;
                        self.targets[k * m + mb] = Some(t.into_device(device)?);
                    }
                }
            }
        }
        Ok(())
    }

    /// In a run: makes the stage's parameters the version micro-batch `mb` uses.
    fn use_version_of(&mut self, mb: usize) -> std::result::Result<(), pipesched_stages::Error> {
        match self.run.as_mut() {
            Some(run) => run.load_for(&mut self.stage, mb),
            None => Ok(()),
        }
    }

    /// In a run, after micro-batch `mb`'s backward finished: drops its version if nothing uses
    /// it any more and it is not the newest.
    fn finished(&mut self, mb: usize) -> std::result::Result<(), pipesched_stages::Error> {
        match self.run.as_mut() {
            Some(run) => run.finished(&mut self.stage, mb),
            None => Ok(()),
        }
    }

    /// Bytes of the weight versions stashed besides the parameters.
    fn stashed_bytes(&self) -> u64 {
        self.run.as_ref().map_or(0, WeightVersions::stashed_bytes)
    }

    /// The per-micro-batch losses of the last step (last stage only; `None` where missing), read
    /// from the stage's device.
    pub fn losses(&self) -> Result<Vec<Option<f32>>> {
        self.losses
            .iter()
            .map(|l| l.as_ref().map(|t| Ok(t.values()?.first().copied().unwrap_or(f32::NAN))).transpose())
            .collect()
    }

    /// The bytes this stage's gradients send when summed over the replicas: their values as
    /// `f32`, 4 bytes each whatever the stage stores (16-bit gradients widen exactly; the sum is
    /// added in `f32`).
    pub fn sum_bytes(&self) -> u64 {
        4 * self.stage.grads().iter().map(|g| g.len() as u64).sum::<u64>()
    }

    /// Whether this step's gradients hold an infinity or a NaN: under ZeRO stage 1 this
    /// replica's slice of their sum over the replicas (what it updates with), else the stage's
    /// (with data parallelism, already the sum).
    pub fn grads_overflowed(&self) -> Result<bool> {
        match &self.grad_slice {
            Some(g) => Ok(g.iter().any(|v| !v.is_finite())),
            None => Ok(self.stage.grads_overflowed()?),
        }
    }

    /// Applies the optimizer to the accumulated gradients. Under ZeRO stage 1, to this
    /// replica's slice of the parameters and of the summed gradients, after which the replicas
    /// gather each other's updated slices (an all-gather, in replica order).
    pub fn optimizer_step(&mut self) -> Result<()> {
        let (Some(range), Some(replicas)) = (self.zero.clone(), self.replicas.as_ref()) else {
            return Ok(self.optimizer.step(&mut self.stage)?);
        };
        let index = self.stage.index();
        let grads = self.grad_slice.take().ok_or_else(|| {
            Error::Config(format!("stage {index}: no summed gradients to step on; run a whole step first"))
        })?;
        let flat = flatten(self.stage.params())?;
        if grads.len() != range.len() || range.end > flat.len() {
            return Err(Error::Config(format!(
                "stage {index}: {} summed gradients for a slice {range:?} of {} parameters",
                grads.len(),
                flat.len()
            )));
        }
        let mut mine = flat[range.clone()].to_vec();
        let format = self.stage.storage().storage();
        if !range.is_empty() {
            let device = self.stage.device();
            let _scope = self.stage.lane().map(|l| l.enter());
            let mut p = stored(Tensor::new(1, range.len(), mine)?, format)?.into_device(device)?;
            let g = Tensor::new(1, range.len(), grads)?.into_device(device)?;
            self.optimizer.update_scaled(vec![(&mut p, &g)], 1.0 / self.stage.loss_scale())?;
            mine = p.values()?;
        }
        let mut bytes = Vec::new();
        mine.encode(&mut bytes).map_err(Error::Config)?;
        let all = Vec::<f32>::decode(&replicas.all_gather_replicas(bytes)?.concat()).map_err(Error::Config)?;
        let device = self.stage.device();
        let params = shaped(index, "the replicas' updated slices", self.stage.params(), &all, format)?;
        for ((p, _), v) in self.stage.params_and_grads_mut().into_iter().zip(params) {
            *p = v.into_device(device)?;
        }
        Ok(())
    }

    /// Sums this stage's gradients over `replicas` after each step's last backward: makes the
    /// sum's buffer (see `sum_buffer`).
    pub(crate) fn sum_over(&mut self, replicas: Transport) {
        self.sum_len = (self.sum_bytes() / 4) as usize;
        self.sum_buffer = Vec::with_capacity(self.sum_len);
        self.replicas = Some(replicas);
    }

    /// Keeps the optimizer state of only this replica's slice of the parameters (ZeRO stage 1).
    pub(crate) fn shard_optimizer(&mut self, replicas: usize, replica: usize) -> Result<()> {
        let len: usize = self.stage.params().iter().map(|p| p.len()).sum();
        let range = crate::exec::slice_of(len, replicas, replica);
        let optimizer = Optimizer::for_shapes(self.optimizer_spec, &[[1, range.len()]], self.stage.device())?;
        // Under mixed precision the slice's f32 master weights too: the parameters, widened.
        self.optimizer = match self.stage.storage().storage() {
            Some(_) => {
                let master = flatten(self.stage.params())?[range.clone()].to_vec();
                optimizer.with_master(vec![Tensor::new(1, range.len(), master)?])?
            }
            None => optimizer,
        };
        self.zero = Some(range);
        Ok(())
    }

    /// With data parallelism, once this replica's gradients of the step are complete: starts
    /// summing them over the replicas. The worker copies them to the communication thread and
    /// goes on; the thread sends each replica its slice of them, adds the parts of its own slice
    /// and sends that summed slice to every replica, sending the pipeline's messages between its
    /// polls while a slice is on its way; the additions themselves hold the thread for their
    /// length.
    fn start_sum(&mut self) -> std::result::Result<(), pipesched_stages::Error> {
        let Some(replicas) = self.replicas.as_ref().filter(|_| self.stage.grads_complete()) else { return Ok(()) };
        let start = Instant::now();
        let mut values = std::mem::take(&mut self.sum_buffer);
        flatten_into(self.stage.grads(), &mut values)?;
        let bytes = self.sum_bytes();
        let key = self.stage.index() as u32;
        let pending = replicas
            .start_sum(key, values, self.zero.is_some())
            .map_err(|e| pipesched_stages::Error::Optimizer(format!("stage {key}: {e}")))?;
        self.sum = Some((pending, start, bytes));
        Ok(())
    }

    /// Waits for the sum [`start_sum`](RealStage::start_sum) started and puts it in place of
    /// the gradients; when it ran (`None` without data parallelism).
    fn settle_sum(&mut self) -> Result<Option<SumRan>> {
        let Some((pending, start, bytes)) = self.sum.take() else { return Ok(None) };
        let (total, end) = pending.wait()?;
        // Stored as the stage stores its gradients, the slice as the whole sum.
        let format = self.stage.storage().storage();
        if self.zero.is_some() {
            self.grad_slice = Some(stored(Tensor::new(1, total.len(), total.clone())?, format)?.values()?);
        } else {
            let grads = shaped(self.stage.index(), "the sum over replicas", self.stage.grads(), &total, format)?;
            self.stage.replace_grads(grads)?;
        }
        self.sum_buffer = total;
        Ok(Some(SumRan { start, end, bytes }))
    }
}

impl StageWork for RealStage {
    type Payload = Tensor;
    type Error = pipesched_stages::Error;

    fn forward(&mut self, mb: usize, input: Option<Tensor>) -> std::result::Result<Option<Tensor>, Self::Error> {
        let x = match input {
            Some(x) => x,
            None => {
                let begun = self.inputs.len();
                self.inputs.get_mut(mb).and_then(Option::take).ok_or_else(|| pipesched_stages::Error::Order {
                    place: format!("stage {} forward of micro-batch {mb}", self.stage.index()),
                    reason: if mb < begun {
                        "the first stage has no input for it: its forward ran twice".into()
                    } else {
                        format!("micro-batches 0..{begun} were begun; begin the step or run that holds it")
                    },
                })?
            }
        };
        self.use_version_of(mb)?;
        let target = if self.stage.is_last() { self.targets.get(mb).and_then(Option::as_ref) } else { None };
        let out = self.stage.forward(mb, x, target)?;
        if self.stage.is_last() {
            self.losses[mb] = Some(out);
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn recompute(&mut self, mb: usize) -> std::result::Result<(), Self::Error> {
        self.use_version_of(mb)?;
        self.stage.recompute(mb)
    }

    fn backward_input(&mut self, mb: usize, grad: Option<Tensor>) -> std::result::Result<Option<Tensor>, Self::Error> {
        self.use_version_of(mb)?;
        let g = self.stage.backward_input(mb, grad)?;
        Ok((!self.stage.is_first()).then_some(g))
    }

    fn backward_weight(&mut self, mb: usize) -> std::result::Result<(), Self::Error> {
        // A user's layer may read its weights here too: the micro-batch's version, as in `B`.
        self.use_version_of(mb)?;
        self.stage.backward_weight(mb)?;
        self.finished(mb)?;
        self.start_sum()
    }

    fn backward(&mut self, mb: usize, grad: Option<Tensor>) -> std::result::Result<Option<Tensor>, Self::Error> {
        self.use_version_of(mb)?;
        let g = self.stage.backward(mb, grad)?;
        self.finished(mb)?;
        self.start_sum()?;
        Ok((!self.stage.is_first()).then_some(g))
    }

    fn working_bytes(&self) -> u64 {
        self.stage.working_bytes()
    }

    fn finish_sum(&mut self) -> std::result::Result<Option<SumRan>, Self::Error> {
        self.settle_sum().map_err(|e| pipesched_stages::Error::Optimizer(e.to_string()))
    }

    /// Makes the next version from the newest and the group's gradients (keeping the newest
    /// where a micro-batch still to finish uses it), then zeroes the gradients.
    fn update(&mut self) -> std::result::Result<(), Self::Error> {
        let index = self.stage.index();
        let Some(run) = self.run.as_mut() else {
            return Err(pipesched_stages::Error::Optimizer(format!(
                "stage {index}: an update outside a run; begin the run first"
            )));
        };
        let (newest, every) = (run.newest(), run.every());
        let want = (newest as usize + 1) * every;
        if self.stage.accumulated() != want {
            return Err(pipesched_stages::Error::Optimizer(format!(
                "stage {index}: update {} needs the gradients of micro-batches 0..{want}, but 0..{} are in",
                newest + 1,
                self.stage.accumulated()
            )));
        }
        let keep = run.before_update(&mut self.stage)?;
        let kept = {
            let _scope = self.stage.lane().map(|l| l.enter());
            let kept = match keep {
                true => Some(
                    self.stage
                        .params()
                        .into_iter()
                        .map(Tensor::try_clone)
                        .collect::<pipesched_stages::Result<Vec<_>>>()?,
                ),
                false => None,
            };
            self.optimizer.update(self.stage.params_and_grads_mut())?;
            kept
        };
        self.stage.zero_grad()?;
        run.updated(kept);
        Ok(())
    }

    fn offload(&mut self, mb: usize) -> std::result::Result<(), Self::Error> {
        self.stage.offload(mb)
    }

    fn reload(&mut self, mb: usize) -> std::result::Result<(), Self::Error> {
        self.stage.reload(mb)
    }

    fn host_bytes(&self) -> u64 {
        self.stage.host_bytes()
    }

    fn held_bytes(&self) -> u64 {
        self.stage.held_bytes() + self.stashed_bytes()
    }

    fn static_bytes(&self) -> u64 {
        // With data parallelism, the sum's buffer (held from the start: see `sum_buffer`; in
        // host memory, counted with the stage's bytes wherever the stage runs).
        let all = self.stage.static_bytes(&self.optimizer_spec) + 4 * self.sum_len as u64;
        if self.zero.is_none() {
            return all;
        }
        // Under ZeRO stage 1, the state of this replica's slice only.
        let count = self.stage.param_count() as u64;
        all - self.optimizer_spec.state_bytes(count, self.stage.storage()) + self.optimizer.state_bytes()
    }

    fn payload_bytes(payload: &Tensor) -> u64 {
        payload.bytes()
    }

    fn clock(&mut self) -> Option<&mut dyn DeviceClock> {
        self.clock.as_mut().map(|c| c as &mut dyn DeviceClock)
    }

    fn layer_costs(
        &mut self,
        input: Option<&Tensor>,
        grad: Option<&Tensor>,
        warmup: usize,
        reps: usize,
    ) -> std::result::Result<Option<StageLayers>, Self::Error> {
        let input = match input {
            Some(x) => x,
            None => self.inputs.first().and_then(Option::as_ref).ok_or_else(|| pipesched_stages::Error::Order {
                place: format!("stage {} per-layer profile", self.stage.index()),
                reason: "the first stage has no input for micro-batch 0: the step was not begun".into(),
            })?,
        };
        let target = if self.stage.is_last() { self.targets.first().and_then(Option::as_ref) } else { None };
        let spec = &self.optimizer_spec;
        crate::layer_profile::time_layers(&self.stage, spec, input, target, grad, warmup, reps).map(Some)
    }
}

/// `t` stored in `format` (rounded to it), or as it is for `None`: how values added or updated
/// in `f32` go back into a stage that stores its parameters and gradients in `format`
/// ([`Precision::storage`](pipesched_stages::Precision::storage) of its storage).
pub(crate) fn stored(t: Tensor, format: Option<Format>) -> pipesched_stages::Result<Tensor> {
    match format {
        Some(f) => t.into_stored(f),
        None => Ok(t),
    }
}

/// The values of `tensors`, one after another: what crosses processes for a whole stage.
pub(crate) fn flatten(tensors: Vec<&Tensor>) -> pipesched_stages::Result<Vec<f32>> {
    let mut values = Vec::new();
    flatten_into(tensors, &mut values)?;
    Ok(values)
}

/// [`flatten`] into `values`, which is emptied first (its memory kept).
pub(crate) fn flatten_into(tensors: Vec<&Tensor>, values: &mut Vec<f32>) -> pipesched_stages::Result<()> {
    values.clear();
    values.reserve(tensors.iter().map(|t| t.len()).sum());
    for t in tensors {
        values.extend(t.values()?);
    }
    Ok(())
}

/// `values` ([`flatten`]ed) cut back into tensors shaped like `like`, on the host, and stored
/// in `format` ([`stored`]: a sum over replicas, added in `f32`, is rounded once to a 16-bit
/// stage's format); an error naming stage `stage` and `what` when the count differs.
pub(crate) fn shaped(
    stage: usize,
    what: &str,
    like: Vec<&Tensor>,
    values: &[f32],
    format: Option<Format>,
) -> Result<Vec<Tensor>> {
    let want: usize = like.iter().map(|t| t.len()).sum();
    if values.len() != want {
        return Err(Error::Config(format!("stage {stage}: {what} hold {} values for {want}", values.len())));
    }
    let mut rest = values;
    like.iter()
        .map(|t| {
            let (mine, after) = rest.split_at(t.len());
            rest = after;
            Ok(stored(Tensor::new(t.rows(), t.cols(), mine.to_vec())?, format)?)
        })
        .collect()
}
