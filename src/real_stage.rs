//! [`RealStage`]: one `pipesched-stages` [`Stage`] with its optimizer and its share of the
//! step's data, as the executor drives it ([`StageWork`]) — in single steps, where the caller
//! updates the weights between steps, and in runs of steps back to back, where the stage updates
//! them itself after its last backward of each step ([`StageWork::update`]) and loads the next
//! step's data.
//!
//! Micro-batch indices are the run's: micro-batch `j` of the run's step `k` is `k·m + j` (a
//! single step is a run of one). Data for a step (inputs for the first stage, targets for the
//! last) is generated when the step begins, so the measured spans hold pipeline work only.

use std::ops::Range;

use pipesched_stages::{
    cuda::{Lane, Mark},
    Optimizer, OptimizerSpec, Shard, Stage, Task, Tensor,
};

use crate::exec::{DeviceClock, PendingSum, StageWork, Transport, Wire};
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
    /// The run's micro-batch that is micro-batch 0 of the step in progress.
    offset: usize,
    /// In a run of steps back to back: what begins each next step.
    run: Option<Run>,
    /// CUDA events on the stage's stream, on a GPU.
    clock: Option<GpuClock>,
    /// With data parallelism: the replicas the gradients are summed over.
    pub(crate) replicas: Option<Transport>,
    /// Which of the step's micro-batches this replica runs.
    shard: Shard,
    /// The sum of the gradients over the replicas, started when the step's last backward ended.
    sum: Option<PendingSum>,
    /// ZeRO stage 1: the slice of the stage's parameters (flattened in parameter order) whose
    /// optimizer state this replica keeps and which it updates; `optimizer` is built for it.
    zero: Option<Range<usize>>,
    /// ZeRO stage 1: this replica's slice of the gradients summed over the replicas.
    grad_slice: Option<Vec<f32>>,
}

/// A run of steps back to back, as a stage sees it.
struct Run {
    task: Task,
    /// The run's first step.
    first: u64,
    /// Steps in the run, and how many of them this stage has updated after.
    steps: usize,
    done: usize,
    m: usize,
    batch: usize,
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
            offset: 0,
            run: None,
            replicas: None,
            shard: Shard::whole(0),
            sum: None,
            zero: None,
            grad_slice: None,
        })
    }

    /// The wrapped stage.
    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    /// The wrapped stage, mutable.
    pub fn stage_mut(&mut self) -> &mut Stage {
        &mut self.stage
    }

    /// Prepares step `step` of `m` micro-batches of `batch` rows: resets the stage and loads the
    /// data this stage reads.
    pub fn begin_step(&mut self, task: &Task, step: u64, m: usize, batch: usize) -> Result<()> {
        self.run = None;
        self.offset = 0;
        self.losses = (0..m).map(|_| None).collect();
        self.load_step(task, step, m, batch)
    }

    /// Prepares a run of `steps` steps back to back from step `first` (see the module doc):
    /// begins the first; each update begins the next.
    pub fn begin_run(&mut self, task: &Task, first: u64, steps: usize, m: usize, batch: usize) -> Result<()> {
        if self.replicas.is_some() {
            return Err(Error::Usage(
                "steps back to back with data parallelism: each update would wait for the replicas' sum; run with a barrier between steps".into(),
            ));
        }
        let total =
            steps.checked_mul(m).ok_or_else(|| Error::Usage(format!("{steps} steps of {m} micro-batches overflow")))?;
        self.begin_step(task, first, m, batch)?;
        self.losses = (0..total).map(|_| None).collect();
        self.run = Some(Run { task: task.clone(), first, steps, done: 0, m, batch });
        Ok(())
    }

    /// The step's micro-batch of the run's micro-batch `mb`; an error if it is not in the step
    /// in progress.
    fn local(&self, mb: usize, op: &str) -> std::result::Result<usize, pipesched_stages::Error> {
        // `inputs` has a slot per micro-batch of the step on every stage.
        let m = self.inputs.len();
        mb.checked_sub(self.offset).filter(|&k| k < m).ok_or_else(|| pipesched_stages::Error::Order {
            place: format!("stage {} {op} of micro-batch {mb}", self.stage.index()),
            reason: format!(
                "the step in progress holds micro-batches {}..{}; a stage runs a step's actions only after its update of the step before",
                self.offset,
                self.offset + m
            ),
        })
    }

    /// [`begin_step`](RealStage::begin_step) but the losses: loads step `step`'s data and resets
    /// the stage.
    fn load_step(&mut self, task: &Task, step: u64, m: usize, batch: usize) -> Result<()> {
        self.shard = match &self.replicas {
            Some(t) => Shard::of(t.replica(), t.replicas(), m)?,
            None => Shard::whole(m),
        };
        self.sum = None;
        self.stage.begin_shard(step, m, self.shard)?;
        let (first, last) = (self.stage.is_first(), self.stage.is_last());
        self.inputs = (0..m).map(|_| None).collect();
        self.targets = (0..m).map(|_| None).collect();
        if first || last {
            // On a GPU the step's data is moved there now, before the step is timed.
            let device = self.stage.device();
            let _scope = self.stage.lane().map(|l| l.enter());
            for mb in 0..m {
                let (x, t) = task.batch(step, self.shard.global(mb), batch);
                if first {
                    self.inputs[mb] = Some(x.into_device(device)?);
                }
                if let Some(kind) = self.stage.loss_kind() {
                    // Checked here, on the host: a GPU cannot check class indices cheaply.
                    kind.check_target(batch, self.stage.output_width(), &t)?;
                    self.targets[mb] = Some(t.into_device(device)?);
                }
            }
        }
        Ok(())
    }

    /// The per-micro-batch losses of the last step (last stage only; `None` where missing), read
    /// from the stage's device.
    pub fn losses(&self) -> Result<Vec<Option<f32>>> {
        self.losses
            .iter()
            .map(|l| l.as_ref().map(|t| Ok(t.values()?.first().copied().unwrap_or(f32::NAN))).transpose())
            .collect()
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
        if !range.is_empty() {
            let device = self.stage.device();
            let _scope = self.stage.lane().map(|l| l.enter());
            let mut p = Tensor::new(1, range.len(), mine)?.into_device(device)?;
            let g = Tensor::new(1, range.len(), grads)?.into_device(device)?;
            self.optimizer.update(vec![(&mut p, &g)])?;
            mine = p.values()?;
        }
        let mut bytes = Vec::new();
        mine.encode(&mut bytes).map_err(Error::Config)?;
        let all = Vec::<f32>::decode(&replicas.all_gather_replicas(bytes)?.concat()).map_err(Error::Config)?;
        let device = self.stage.device();
        let params = shaped(index, "the replicas' updated slices", self.stage.params(), all)?;
        for ((p, _), v) in self.stage.params_and_grads_mut().into_iter().zip(params) {
            *p = v.into_device(device)?;
        }
        Ok(())
    }

    /// Keeps the optimizer state of only this replica's slice of the parameters (ZeRO stage 1).
    pub(crate) fn shard_optimizer(&mut self, replicas: usize, replica: usize) -> Result<()> {
        let len: usize = self.stage.params().iter().map(|p| p.len()).sum();
        let range = crate::exec::slice_of(len, replicas, replica);
        self.optimizer = Optimizer::for_shapes(self.optimizer_spec, &[[1, range.len()]], self.stage.device())?;
        self.zero = Some(range);
        Ok(())
    }

    /// With data parallelism, once this replica's gradients of the step are complete: starts
    /// summing them over the replicas. The worker copies them to the communication thread and
    /// goes on; the thread sends them (and, on replica 0, adds the parts and sends the sums),
    /// sending the pipeline's messages between its polls while a part or a sum is on its way;
    /// replica 0's additions themselves hold the thread for their length.
    fn start_sum(&mut self) -> std::result::Result<(), pipesched_stages::Error> {
        let Some(replicas) = self.replicas.as_ref().filter(|_| self.stage.grads_complete()) else { return Ok(()) };
        let values = flatten(self.stage.grads())?;
        let key = self.stage.index() as u32;
        let pending = replicas
            .start_sum(key, values, self.zero.is_some())
            .map_err(|e| pipesched_stages::Error::Optimizer(format!("stage {key}: {e}")))?;
        self.sum = Some(pending);
        Ok(())
    }

    /// Waits for the sum [`start_sum`](RealStage::start_sum) started and puts it in place of
    /// the gradients (nothing to do without data parallelism).
    pub fn finish_sum(&mut self) -> Result<()> {
        let Some(pending) = self.sum.take() else { return Ok(()) };
        let total = pending.wait()?;
        if self.zero.is_some() {
            self.grad_slice = Some(total);
            return Ok(());
        }
        let grads = shaped(self.stage.index(), "the sum over replicas", self.stage.grads(), total)?;
        Ok(self.stage.replace_grads(grads)?)
    }
}

impl StageWork for RealStage {
    type Payload = Tensor;
    type Error = pipesched_stages::Error;

    fn forward(&mut self, run_mb: usize, input: Option<Tensor>) -> std::result::Result<Option<Tensor>, Self::Error> {
        let mb = self.local(run_mb, "forward")?;
        let x = match input {
            Some(x) => x,
            None => self.inputs.get_mut(mb).and_then(Option::take).ok_or_else(|| pipesched_stages::Error::Order {
                place: format!("stage {} forward of micro-batch {run_mb}", self.stage.index()),
                reason: "the first stage has no input for it: its forward ran twice, or the step was not begun".into(),
            })?,
        };
        let target = if self.stage.is_last() { self.targets.get(mb).and_then(Option::as_ref) } else { None };
        let out = self.stage.forward(mb, x, target)?;
        if self.stage.is_last() {
            self.losses[run_mb] = Some(out);
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn recompute(&mut self, run_mb: usize) -> std::result::Result<(), Self::Error> {
        let mb = self.local(run_mb, "recompute")?;
        self.stage.recompute(mb)
    }

    fn backward_input(
        &mut self,
        run_mb: usize,
        grad: Option<Tensor>,
    ) -> std::result::Result<Option<Tensor>, Self::Error> {
        let mb = self.local(run_mb, "input-gradient backward")?;
        let g = self.stage.backward_input(mb, grad)?;
        Ok((!self.stage.is_first()).then_some(g))
    }

    fn backward_weight(&mut self, run_mb: usize) -> std::result::Result<(), Self::Error> {
        let mb = self.local(run_mb, "weight-gradient backward")?;
        self.stage.backward_weight(mb)?;
        self.start_sum()
    }

    fn backward(&mut self, run_mb: usize, grad: Option<Tensor>) -> std::result::Result<Option<Tensor>, Self::Error> {
        let mb = self.local(run_mb, "backward")?;
        let g = self.stage.backward(mb, grad)?;
        self.start_sum()?;
        Ok((!self.stage.is_first()).then_some(g))
    }

    /// Steps the optimizer on the step's gradients and, unless the run is over, begins its next
    /// step (loads its data; the gradients start again from zero).
    fn update(&mut self) -> std::result::Result<(), Self::Error> {
        let index = self.stage.index();
        let place = |e: Error| pipesched_stages::Error::Optimizer(format!("stage {index}: {e}"));
        self.optimizer_step().map_err(place)?;
        let Some(run) = self.run.take() else {
            return Err(pipesched_stages::Error::Optimizer(format!(
                "stage {index}: an update outside a run of steps back to back; begin the run first"
            )));
        };
        let done = run.done + 1;
        if done < run.steps {
            self.load_step(&run.task, run.first + done as u64, run.m, run.batch).map_err(place)?;
            self.offset = done * run.m;
        }
        self.run = Some(Run { done, ..run });
        Ok(())
    }

    fn held_bytes(&self) -> u64 {
        self.stage.held_bytes()
    }

    fn static_bytes(&self) -> u64 {
        let all = self.stage.static_bytes(&self.optimizer_spec);
        if self.zero.is_none() {
            return all;
        }
        // Under ZeRO stage 1, the state of this replica's slice only.
        let params: u64 = self.stage.params().iter().map(|p| p.bytes()).sum();
        all - self.optimizer_spec.state_bytes(params) + self.optimizer.state_bytes()
    }

    fn payload_bytes(payload: &Tensor) -> u64 {
        payload.bytes()
    }

    fn clock(&mut self) -> Option<&mut dyn DeviceClock> {
        self.clock.as_mut().map(|c| c as &mut dyn DeviceClock)
    }
}

/// The values of `tensors`, one after another: what crosses processes for a whole stage.
fn flatten(tensors: Vec<&Tensor>) -> pipesched_stages::Result<Vec<f32>> {
    let mut values = Vec::with_capacity(tensors.iter().map(|t| t.len()).sum());
    for t in tensors {
        values.extend(t.values()?);
    }
    Ok(values)
}

/// `values` ([`flatten`]ed) cut back into tensors shaped like `like`, on the host; an error
/// naming stage `stage` and `what` when the count differs.
fn shaped(stage: usize, what: &str, like: Vec<&Tensor>, values: Vec<f32>) -> Result<Vec<Tensor>> {
    let want: usize = like.iter().map(|t| t.len()).sum();
    if values.len() != want {
        return Err(Error::Config(format!("stage {stage}: {what} hold {} values for {want}", values.len())));
    }
    let mut rest = values.into_iter();
    like.iter().map(|t| Ok(Tensor::new(t.rows(), t.cols(), rest.by_ref().take(t.len()).collect())?)).collect()
}
