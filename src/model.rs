//! Real models in the executor: [`RealStage`] wraps a `pipesched-stages` [`Stage`] (with its
//! optimizer and its share of the step's data) as a [`StageWork`], and [`Model`] builds the
//! stages of a model, trains it step by step through a schedule, and checks a step against the
//! sequential reference.
//!
//! Data for a step (inputs for the first stage, targets for the last) is generated before the
//! step starts, so the measured trace holds pipeline work only.

use std::ops::Range;
use std::sync::Arc;

use pipesched_schedules::{CostModel, Schedule, StageCost, StageCosts, Trace};
use pipesched_stages::{
    cuda::{Lane, Mark},
    mean_loss, sequential_step_in, Corpus, Device, ModelSpec, Optimizer, OptimizerSpec, Partition, Policies, Shard,
    Stage, StageSpec, StepOutput, Task, Tensor,
};

use crate::exec::{execute, DeviceClock, ExecOptions, PendingSum, StageLayers, StageWork, Transport, Wire};
use crate::workload::Layout;
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
    /// The last stage's losses, per micro-batch, as `[1, 1]` tensors on its device (read after
    /// the step, so a GPU stage never waits for one mid-step).
    losses: Vec<Option<Tensor>>,
    /// CUDA events on the stage's stream, on a GPU.
    clock: Option<GpuClock>,
    /// With data parallelism: the replicas the gradients are summed over.
    replicas: Option<Transport>,
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
        self.shard = match &self.replicas {
            Some(t) => Shard::of(t.replica(), t.replicas(), m)?,
            None => Shard::whole(m),
        };
        self.sum = None;
        self.stage.begin_shard(step, m, self.shard)?;
        let (first, last) = (self.stage.is_first(), self.stage.is_last());
        self.inputs = (0..m).map(|_| None).collect();
        self.targets = (0..m).map(|_| None).collect();
        self.losses = (0..m).map(|_| None).collect();
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
    fn shard_optimizer(&mut self, replicas: usize, replica: usize) -> Result<()> {
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

    fn forward(&mut self, mb: usize, input: Option<Tensor>) -> std::result::Result<Option<Tensor>, Self::Error> {
        let x = match input {
            Some(x) => x,
            None => self.inputs.get_mut(mb).and_then(Option::take).ok_or_else(|| pipesched_stages::Error::Order {
                place: format!("stage {} forward of micro-batch {mb}", self.stage.index()),
                reason: "the first stage has no input for it: its forward ran twice, or the step was not begun".into(),
            })?,
        };
        let target = if self.stage.is_last() { self.targets.get(mb).and_then(Option::as_ref) } else { None };
        let out = self.stage.forward(mb, x, target)?;
        if self.stage.is_last() {
            self.losses[mb] = Some(out);
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn recompute(&mut self, mb: usize) -> std::result::Result<(), Self::Error> {
        self.stage.recompute(mb)
    }

    fn backward_input(&mut self, mb: usize, grad: Option<Tensor>) -> std::result::Result<Option<Tensor>, Self::Error> {
        let g = self.stage.backward_input(mb, grad)?;
        Ok((!self.stage.is_first()).then_some(g))
    }

    fn backward_weight(&mut self, mb: usize) -> std::result::Result<(), Self::Error> {
        self.stage.backward_weight(mb)?;
        self.start_sum()
    }

    fn backward(&mut self, mb: usize, grad: Option<Tensor>) -> std::result::Result<Option<Tensor>, Self::Error> {
        let g = self.stage.backward(mb, grad)?;
        self.start_sum()?;
        Ok((!self.stage.is_first()).then_some(g))
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

/// How to build a model.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// Number of stages (p·v).
    pub stages: usize,
    /// How layers are split into stages.
    pub partition: Partition,
    /// Recompute policy per stage.
    pub policies: Policies,
    /// Optimizer.
    pub optimizer: OptimizerSpec,
    /// Samples per micro-batch: rows, or sequences for a model of sequences.
    pub batch: usize,
    /// Seed of the task's data.
    pub data_seed: u64,
    /// The text a model of tokens trains on (`None`: the corpus generated from `data_seed`).
    pub corpus: Option<Arc<Corpus>>,
    /// The device of every stage (empty: all on the CPU).
    pub devices: Vec<Device>,
    /// The stages to build, in model order (`None`: every one). With ranks as processes, each
    /// process builds only its own rank's ([`Transport::held`](crate::exec::Transport::held)).
    pub held: Option<Vec<usize>>,
}

/// The result of one training step.
pub struct StepResult {
    /// The mean loss over the micro-batches.
    pub loss: f32,
    /// The measured trace.
    pub trace: Trace,
}

/// A model split into stages, with its task.
///
/// Invariant: `specs` describe every stage of the model; `stages` are the ones this process
/// holds (every one, unless it was built with [`ModelOptions::held`]), in model order, each at
/// `specs[stage.index()]`. Parameters are drawn from the seed per layer, so a stage built alone
/// starts from the same bits as the same stage built with all the others.
pub struct Model {
    /// The model's description.
    pub spec: ModelSpec,
    /// Every stage's description.
    pub specs: Vec<StageSpec>,
    /// The task it learns (text, or a teacher network).
    pub task: Task,
    /// The stages this process holds, in model order.
    pub stages: Vec<RealStage>,
    /// With data parallelism: the replicas this one trains beside.
    replicas: Option<Transport>,
    /// Rows per micro-batch.
    pub batch: usize,
}

impl Model {
    /// Builds `spec` split as `opts` says.
    pub fn build(spec: ModelSpec, opts: &ModelOptions) -> Result<Model> {
        let mut specs = spec.stage_specs(opts.stages, &opts.partition, &opts.policies)?;
        if !opts.devices.is_empty() {
            if opts.devices.len() != specs.len() {
                return Err(Error::Config(format!(
                    "{} devices given for {} stages; give one per stage",
                    opts.devices.len(),
                    specs.len()
                )));
            }
            for (s, d) in specs.iter_mut().zip(&opts.devices) {
                s.device = *d;
            }
        }
        let task = match &opts.corpus {
            Some(corpus) if spec.reads_tokens() => Task::text(Arc::clone(corpus), spec.seq(), opts.data_seed),
            Some(corpus) => {
                return Err(Error::Config(format!(
                    "text {:?} given for model {}, which reads rows, not tokens; give a model that starts with an embedding (gpt-tiny, gpt-small, gpt-medium)",
                    corpus.name(),
                    spec.name
                )))
            }
            None => Task::new(&spec, opts.data_seed),
        };
        if let Some(corpus) = task.corpus() {
            corpus.check_seq(spec.seq())?;
        }
        let batch = spec.rows(opts.batch).ok_or_else(|| {
            Error::Config(format!(
                "{} sequences of {} tokens overflow a row count; use a smaller --batch",
                opts.batch,
                spec.seq()
            ))
        })?;
        let held = opts.held.clone().unwrap_or_else(|| (0..specs.len()).collect());
        if held.iter().any(|&k| k >= specs.len()) || held.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::Config(format!(
                "stages {held:?} asked for out of {} stages; give stage indices in increasing order, each below {}",
                specs.len(),
                specs.len()
            )));
        }
        let stages = held
            .iter()
            .map(|&k| RealStage::new(Stage::new(&spec, &specs[k])?, opts.optimizer))
            .collect::<Result<Vec<_>>>()?;
        Ok(Model { spec, specs, task, stages, batch, replicas: None })
    }

    /// This model as one of `transport`'s data-parallel replicas (nothing changes with one): each
    /// step it runs its replica's share of the micro-batches ([`Shard`]), and each stage's
    /// gradients are summed over the replicas, in replica order, as soon as its last backward of
    /// the step ends. Where the transport shards the optimizer (ZeRO stage 1), each stage keeps
    /// the optimizer state of its replica's slice of the parameters only.
    pub fn in_replicas(mut self, transport: &Transport) -> Result<Model> {
        if transport.replicas() > 1 {
            for s in &mut self.stages {
                s.replicas = Some(transport.clone());
                if transport.shards_optimizer() {
                    s.shard_optimizer(transport.replicas(), transport.replica())?;
                }
            }
            self.replicas = Some(transport.clone());
        }
        Ok(self)
    }

    /// Runs `f` on the stages as if this replica trained alone (no sums over replicas): for
    /// profiling, whose runs are not training steps.
    pub fn alone<T>(&mut self, f: impl FnOnce(&mut [RealStage]) -> T) -> T {
        let saved: Vec<Option<Transport>> = self.stages.iter_mut().map(|s| s.replicas.take()).collect();
        let out = f(&mut self.stages);
        for (s, r) in self.stages.iter_mut().zip(saved) {
            s.replicas = r;
        }
        out
    }

    /// How many data-parallel replicas train this model (1 without data parallelism).
    pub fn replicas(&self) -> usize {
        self.replicas.as_ref().map_or(1, Transport::replicas)
    }

    /// The mean loss of `batches` held-out micro-batches (the task's validation data), each run
    /// forward through the stages in model order, keeping nothing and with dropout off. Leaves
    /// the parameters, the accumulated gradients and any step in flight as they were.
    ///
    /// With ranks as processes (every one calls this), each runs its own stages and hands the
    /// activation on where the next stage is another rank's (`rank_of`); every process gets
    /// the loss.
    pub fn validation_loss(
        &self,
        batches: usize,
        transport: &Transport,
        rank_of: impl Fn(usize) -> usize,
    ) -> Result<f32> {
        let n = self.specs.len();
        let mut losses = Vec::with_capacity(batches);
        for k in 0..batches {
            let (x0, target) = self.task.validation(k, self.batch);
            let mut x = Some(x0);
            let mut held = self.stages.iter().peekable();
            for s in 0..n {
                if let Some(rs) = held.next_if(|rs| rs.stage().index() == s) {
                    let input = x.take().ok_or_else(|| {
                        Error::Config(format!("validation: stage {s}'s input did not reach this process"))
                    })?;
                    x = Some(rs.stage().evaluate(input, (s + 1 == n).then_some(&target))?);
                }
                if s + 1 == n || rank_of(s) != rank_of(s + 1) {
                    x = transport.share(rank_of(s), x)?;
                }
            }
            let loss = x.ok_or_else(|| Error::Config("validation: the last stage gave no loss".into()))?;
            losses.push(loss.values()?[0]);
        }
        Ok(mean_loss(&losses))
    }

    /// Which stages drop activations under their policy, and so need `R` before their backward.
    pub fn recompute_flags(&self) -> Vec<bool> {
        self.specs.iter().map(|s| s.policy.drops()).collect()
    }

    /// The bytes every stage keeps, predicted from shapes alone, and the static bytes of every
    /// rank of `layout`, as a cost model (times all 1: for memory predictions). With ranks as
    /// processes, every process calls this and gets every stage's prediction.
    pub fn predicted_bytes(&self, layout: impl Into<Layout>, transport: &Transport) -> Result<CostModel> {
        let layout = layout.into();
        let mine = self
            .stages
            .iter()
            .map(|s| (s.stage.index(), (s.stage.predicted_bytes(self.batch).cost(1.0, 1.0, 1.0), s.static_bytes())))
            .collect();
        let all: Vec<(StageCost, u64)> = transport.by_stage(layout.stages(), mine)?;
        let mut statics = vec![0u64; layout.p];
        for (k, (_, bytes)) in all.iter().enumerate() {
            statics[layout.rank_of(k)] += bytes;
        }
        let costs = all.into_iter().map(|(c, _)| c).collect();
        Ok(CostModel {
            costs: StageCosts::Stages(costs),
            latency: 0.0,
            bandwidth: None,
            static_bytes: statics,
            time_unit: "ms".into(),
        })
    }

    /// Runs step `step` through `schedule`, leaving the gradients accumulated (no optimizer step).
    pub fn run_step(&mut self, schedule: &Schedule, step: u64, opts: &ExecOptions) -> Result<StepResult> {
        let m = schedule.m;
        for s in self.stages.iter_mut() {
            s.begin_step(&self.task, step, m, self.batch)?;
        }
        let trace = execute(schedule, &mut self.stages, opts)?;
        for s in &mut self.stages {
            s.finish_sum()?;
        }
        // The last stage's process has the losses; with ranks as processes, every one gets them,
        // and with data parallelism every replica's, in replica order.
        let mut mine = Vec::new();
        if let Some(s) = self.stages.last().filter(|s| s.stage.is_last()) {
            let losses: Vec<f32> = s.losses()?.into_iter().map(|l| l.unwrap_or(f32::NAN)).collect();
            losses.encode(&mut mine).map_err(Error::Config)?;
        }
        let all = opts.transport.all_gather(mine)?;
        let ours = all.into_iter().find(|b| !b.is_empty()).unwrap_or_default();
        let bytes = if self.replicas() > 1 { opts.transport.all_gather_replicas(ours)?.concat() } else { ours };
        let losses = Vec::<f32>::decode(&bytes).map_err(|e| Error::Config(format!("the step's losses: {e}")))?;
        Ok(StepResult { loss: mean_loss(&losses), trace })
    }

    /// Applies the optimizer of every stage this process holds.
    pub fn optimizer_step(&mut self) -> Result<()> {
        self.stages.iter_mut().try_for_each(RealStage::optimizer_step)
    }

    /// Compares the gradients and loss now in the stages (after [`Model::run_step`] of `step`)
    /// with the sequential reference run on copies of the same parameters. `params` are the
    /// parameters the step started from. The model must hold every stage.
    pub fn verify(&self, params: &[Vec<Tensor>], step: u64, m: usize, loss: f32) -> Result<Verification> {
        self.verify_grads(params, &self.grads(), step, m, loss)
    }

    /// Compares the gradients `grads` and the loss of a pipelined step `step` (every model
    /// stage's, in model order) with the sequential reference run on copies of the same
    /// parameters. `params` are every stage's parameters the step started from.
    ///
    /// The reference runs on the stages' own devices, so the pipelined step must match it bit for
    /// bit there too. When some stage is on a GPU, a second reference on the CPU gives
    /// [`Verification::cpu_rel_diff`].
    pub fn verify_grads(
        &self,
        params: &[Vec<Tensor>],
        grads: &[Vec<&Tensor>],
        step: u64,
        m: usize,
        loss: f32,
    ) -> Result<Verification> {
        if params.len() != self.specs.len() || grads.len() != self.specs.len() {
            return Err(Error::Config(format!(
                "verifying a step needs every stage's parameters and gradients: {} stages, given {} and {}",
                self.specs.len(),
                params.len(),
                grads.len()
            )));
        }
        let (out, reference) = self.reference(params, step, m, None)?;
        let mut v =
            Verification { max_grad_diff: 0.0, bitwise: true, loss_diff: (out.loss - loss).abs(), cpu_rel_diff: None };
        v.bitwise &= out.loss.to_bits() == loss.to_bits();
        for (mine, theirs) in grads.iter().zip(&reference) {
            for (a, b) in mine.iter().zip(theirs.grads()) {
                v.bitwise &= a.bit_eq(b);
                v.max_grad_diff = v.max_grad_diff.max(a.max_abs_diff(b).unwrap_or(f32::INFINITY));
            }
        }
        if self.specs.iter().any(|s| s.device != Device::Cpu) {
            let (_, host) = self.reference(params, step, m, Some(Device::Cpu))?;
            let mut worst = 0.0f32;
            for (mine, theirs) in grads.iter().zip(&host) {
                for (a, b) in mine.iter().zip(theirs.grads()) {
                    worst = worst.max(relative_diff(a, b)?);
                }
            }
            v.cpu_rel_diff = Some(worst);
        }
        Ok(v)
    }

    /// The sequential reference of step `step` from `params`, on the stages' devices or all on
    /// `device`.
    fn reference(
        &self,
        params: &[Vec<Tensor>],
        step: u64,
        m: usize,
        device: Option<Device>,
    ) -> Result<(StepOutput, Vec<Stage>)> {
        let mut specs = self.specs.clone();
        if let Some(d) = device {
            specs.iter_mut().for_each(|s| s.device = d);
        }
        // With data parallelism, each replica's share from the same parameters, and their
        // gradients added in replica order, as the replicas add them.
        let replicas = self.replicas();
        let mut losses = Vec::with_capacity(replicas * m);
        let mut total: Option<Vec<Stage>> = None;
        for d in 0..replicas {
            let mut stages = Stage::build_all(&self.spec, &specs)?;
            for (stage, saved) in stages.iter_mut().zip(params) {
                let dev = stage.device();
                for ((p, _), v) in stage.params_and_grads_mut().into_iter().zip(saved) {
                    *p = v.to_device(dev)?;
                }
            }
            let out = sequential_step_in(&mut stages, &self.task, step, m, self.batch, Shard::of(d, replicas, m)?)?;
            losses.extend(out.losses);
            total = Some(match total {
                None => stages,
                Some(mut acc) => {
                    for (a, b) in acc.iter_mut().zip(&stages) {
                        add_grads(a, b)?;
                    }
                    acc
                }
            });
        }
        let total = total.ok_or_else(|| Error::Config("a step needs at least one replica".into()))?;
        Ok((StepOutput { loss: mean_loss(&losses), losses }, total))
    }

    /// Copies of the parameters of every stage this process holds.
    pub fn params(&self) -> Vec<Vec<Tensor>> {
        self.stages.iter().map(|s| s.stage.params().into_iter().cloned().collect()).collect()
    }

    /// The gradients of every stage this process holds.
    pub fn grads(&self) -> Vec<Vec<&Tensor>> {
        self.stages.iter().map(|s| s.stage.grads()).collect()
    }
}

/// How a pipelined step compares with the sequential reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verification {
    /// Largest absolute difference over all gradients.
    pub max_grad_diff: f32,
    /// Whether every gradient and the loss are equal bit for bit.
    pub bitwise: bool,
    /// |pipelined loss − reference loss|.
    pub loss_diff: f32,
    /// With stages on a GPU: the largest relative difference of a gradient from the CPU's,
    /// `max|a − b| / max|b|` per parameter tensor (`b` the CPU's), over all tensors.
    pub cpu_rel_diff: Option<f32>,
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

/// Adds `b`'s gradients to `a`'s, element by element (`a + b`, in that order).
fn add_grads(a: &mut Stage, b: &Stage) -> Result<()> {
    let mut sums = Vec::with_capacity(a.grads().len());
    for (x, y) in a.grads().into_iter().zip(b.grads()) {
        let values = x.values()?.iter().zip(y.values()?).map(|(p, q)| p + q).collect();
        sums.push(Tensor::new(x.rows(), x.cols(), values)?);
    }
    Ok(a.replace_grads(sums)?)
}

/// `max|a − b| / max|b|` (the absolute difference where `b` is all zeros).
fn relative_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let (x, y) = (a.values()?, b.values()?);
    if x.len() != y.len() {
        return Ok(f32::INFINITY);
    }
    let diff = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    let scale = y.iter().map(|q| q.abs()).fold(0.0f32, f32::max);
    Ok(if scale > 0.0 { diff / scale } else { diff })
}
