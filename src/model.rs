//! Real models in the executor: [`Model`] builds the stages of a model ([`RealStage`]s), trains
//! it through a schedule — step by step, or steps back to back — and checks a step against the
//! sequential reference.

use std::sync::Arc;

use crate::real_stage::{flatten, shaped};
pub use crate::real_stage::{RealStage, RunShape};
use pipesched_schedules::{CostModel, Schedule, StageCost, Trace};
use pipesched_stages::{
    mean_loss, sequential_step_in, stale_run, Corpus, Device, LossScale, ModelSpec, Optimizer, OptimizerSpec,
    ParamsFile, Partition, Policies, RecomputePolicy, ScaleVerdict, Shard, Stage, StageSpec, StaleRun, StepOutput,
    Task, Tensor,
};

use crate::exec::{add_replica, execute, ExecOptions, StageWork, Transport, Wire};
use crate::workload::{Layout, RunPlan};
use crate::{Error, Result};

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
    /// Parameters to start from, by name, instead of the seed's draws (`--init-params`): each
    /// held stage loads its own ([`Stage::load_named`]).
    pub init: Option<Arc<ParamsFile>>,
}

/// The result of one training step.
pub struct StepResult {
    /// The mean loss over the micro-batches.
    pub loss: f32,
    /// The measured trace.
    pub trace: Trace,
    /// With data parallelism: when the step ended, its sums over the replicas included
    /// ([`Trace::step_end`]), in the trace's ms.
    pub sums_done_ms: Option<f64>,
}

/// The result of steps run back to back.
pub struct RunResult {
    /// Each step's mean loss over its micro-batches.
    pub losses: Vec<f32>,
    /// The measured trace of the whole run.
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
    /// The loss scale of the model's precision: dynamic under `mixed-f16`, a fixed 1 otherwise.
    loss_scale: LossScale,
    /// What the last optimizer step did (`None` before the first).
    last_verdict: Option<ScaleVerdict>,
    /// The parameters file the model started from: the sequential references start from it too
    /// (its frozen tensors, which the trained parameters copied into them do not include).
    init: Option<Arc<ParamsFile>>,
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
        let mut stages =
            held.iter().map(|&k| Stage::new(&spec, &specs[k])).collect::<std::result::Result<Vec<_>, _>>()?;
        if let Some(file) = &opts.init {
            // Before the optimizers take the parameters: their state starts from the file's.
            for stage in &mut stages {
                stage.load_named(file)?;
            }
            file.check_belongs(&spec, &stages.iter().collect::<Vec<_>>())?;
        }
        let stages = stages
            .into_iter()
            .map(|mut stage| {
                // An `optimal:BYTES` budget below the stage's least is refused here, naming it.
                if let RecomputePolicy::Optimal(_) = stage.policy() {
                    stage.optimal_plan(batch)?;
                }
                RealStage::new(stage, opts.optimizer)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut model = Model {
            spec,
            specs,
            task,
            stages,
            batch,
            replicas: None,
            loss_scale: LossScale::fixed(),
            last_verdict: None,
            init: opts.init.clone(),
        };
        model.set_loss_scale(LossScale::for_precision(model.spec.precision, LossScale::GROWTH_INTERVAL)?)?;
        Ok(model)
    }

    /// Trains with `scale` from now on (every stage's backward runs with its scale). Dynamic
    /// scaling decides to skip a step over every stage's gradients at once — with ranks as
    /// processes and with data-parallel replicas, over every process's
    /// ([`optimizer_step`](Model::optimizer_step)).
    pub fn set_loss_scale(&mut self, scale: LossScale) -> Result<()> {
        for s in &mut self.stages {
            s.stage_mut().set_loss_scale(scale.scale())?;
        }
        self.loss_scale = scale;
        Ok(())
    }

    /// The loss scale and its state.
    pub fn loss_scale(&self) -> &LossScale {
        &self.loss_scale
    }

    /// What the last [`optimizer_step`](Model::optimizer_step) did: applied, or skipped for a
    /// gradient that overflowed (dynamic loss scaling only).
    pub fn last_verdict(&self) -> Option<ScaleVerdict> {
        self.last_verdict
    }

    /// This model as one of `transport`'s data-parallel replicas (nothing changes with one): each
    /// step it runs its replica's share of the micro-batches ([`Shard`]), and each stage's
    /// gradients are summed over the replicas, in replica order, as soon as its last backward of
    /// the step ends. Where the transport shards the optimizer (ZeRO stage 1), each stage keeps
    /// the optimizer state of its replica's slice of the parameters only.
    pub fn in_replicas(mut self, transport: &Transport) -> Result<Model> {
        if transport.replicas() > 1 {
            for s in &mut self.stages {
                s.sum_over(transport.clone());
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
            .map(|s| (s.stage().index(), (s.stage().predicted_bytes(self.batch).cost(1.0, 1.0, 1.0), s.static_bytes())))
            .collect();
        let all: Vec<(StageCost, u64)> = transport.by_stage(layout.stages(), mine)?;
        Ok(CostModel::of_bytes(all, layout.p, |s| layout.rank_of(s)))
    }

    /// The bytes of one version of every stage's weights (its parameters), in model order: what
    /// a stashed version holds. With ranks as processes, every process calls this and gets all.
    pub fn version_bytes(&self, stages: usize, transport: &Transport) -> Result<Vec<u64>> {
        let mine = self.stages.iter().map(|s| (s.stage().index(), s.stage().param_bytes())).collect();
        transport.by_stage(stages, mine)
    }

    /// The bytes each model stage's gradients send when summed over the replicas
    /// ([`RealStage::sum_bytes`]), gathered from every process.
    pub fn sum_bytes(&self, stages: usize, transport: &Transport) -> Result<Vec<u64>> {
        let mine = self.stages.iter().map(|s| (s.stage().index(), s.sum_bytes())).collect();
        transport.by_stage(stages, mine)
    }

    /// Runs step `step` through `schedule`, leaving the gradients accumulated (no optimizer step).
    pub fn run_step(&mut self, schedule: &Schedule, step: u64, opts: &ExecOptions) -> Result<StepResult> {
        let m = schedule.m;
        for s in self.stages.iter_mut() {
            s.begin_step(&self.task, step, m, self.batch)?;
        }
        // The executor waits for the sums over replicas and puts them in the trace.
        let trace = execute(schedule, &mut self.stages, opts)?;
        let sums_done_ms = (!trace.sums.is_empty()).then(|| trace.step_end());
        let losses = self.losses(opts)?;
        Ok(StepResult { loss: mean_loss(&losses), trace, sums_done_ms })
    }

    /// Runs `plan` from step `first`: every micro-batch of its steps through its schedule, each
    /// stage updating its weights where the plan's updates say and running each micro-batch on
    /// the weight version they give it. Returns the run's trace and each step's mean loss; the
    /// weights end updated by every update of the run.
    pub fn run(&mut self, plan: &RunPlan, first: u64, opts: &ExecOptions) -> Result<RunResult> {
        if self.loss_scale.is_dynamic() {
            return Err(Error::Config(format!(
                "{} scales the loss dynamically, skipping steps whose gradients overflow, which streamed runs (updates inside the run) cannot do yet; train step by step, or use mixed-bf16",
                self.spec.precision
            )));
        }
        let shape = RunShape { first, steps: plan.steps, m: plan.m, batch: self.batch };
        for s in self.stages.iter_mut() {
            let k = s.stage().index();
            s.begin_run(&self.task, shape, plan.updates.versions_of(k), plan.updates.every)?;
        }
        let opts = ExecOptions { updates: Some(Arc::clone(&plan.updates)), ..opts.clone() };
        let trace = execute(&plan.schedule, &mut self.stages, &opts)?;
        let losses = self.losses(&opts)?;
        Ok(RunResult { losses: losses.chunks(plan.m.max(1)).map(mean_loss).collect(), trace })
    }

    /// The losses of every micro-batch of the last step or run, from the last stage's process;
    /// with ranks as processes, every one gets them, and with data parallelism every replica's,
    /// in replica order.
    fn losses(&self, opts: &ExecOptions) -> Result<Vec<f32>> {
        let mut mine = Vec::new();
        if let Some(s) = self.stages.last().filter(|s| s.stage().is_last()) {
            let losses: Vec<f32> = s.losses()?.into_iter().map(|l| l.unwrap_or(f32::NAN)).collect();
            losses.encode(&mut mine).map_err(Error::Config)?;
        }
        let all = opts.transport.all_gather(mine)?;
        let ours = all.into_iter().find(|b| !b.is_empty()).unwrap_or_default();
        let bytes = if self.replicas() > 1 { opts.transport.all_gather_replicas(ours)?.concat() } else { ours };
        Vec::<f32>::decode(&bytes).map_err(|e| Error::Config(format!("the step's losses: {e}")))
    }

    /// Applies the optimizer of every stage this process holds. Under dynamic loss scaling, a
    /// step whose gradients overflowed on any stage is skipped on all of them (parameters and
    /// optimizer state unchanged) and the scale halved; clean steps grow it
    /// ([`LossScale::after_step`]). The stages' next backward runs with the new scale. With
    /// ranks as processes (`transport`), every process calls it after every step: the verdicts
    /// of every pipeline rank and every replica are gathered, so all skip or apply the same
    /// steps and keep the same scale.
    pub fn optimizer_step(&mut self, transport: &Transport) -> Result<()> {
        let split = self.stages.len() != self.specs.len() || self.replicas() > 1;
        if split && (!transport.is_processes() || transport.replicas() != self.replicas()) {
            return Err(Error::Config(format!(
                "an optimizer step of a model split over processes or replicas needs the transport it runs on ({} of {} stages here, {} replicas): pass that transport, not another",
                self.stages.len(),
                self.specs.len(),
                self.replicas()
            )));
        }
        let mut overflowed = false;
        if self.loss_scale.is_dynamic() {
            for s in &self.stages {
                overflowed |= s.grads_overflowed()?;
            }
            overflowed = anywhere(transport, overflowed)?;
        }
        let verdict = self.loss_scale.after_step(overflowed);
        if verdict == ScaleVerdict::Applied {
            self.stages.iter_mut().try_for_each(RealStage::optimizer_step)?;
        }
        for s in &mut self.stages {
            s.stage_mut().set_loss_scale(self.loss_scale.scale())?;
        }
        self.last_verdict = Some(verdict);
        Ok(())
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
        let mut total: Option<(Vec<Vec<f32>>, Vec<Stage>)> = None;
        for d in 0..replicas {
            let mut stages = self.fresh_stages(&specs)?;
            let scale = self.stages.first().map_or(1.0, |s| s.stage().loss_scale());
            for (stage, saved) in stages.iter_mut().zip(params) {
                stage.set_loss_scale(scale)?;
                let dev = stage.device();
                for ((p, _), v) in stage.params_and_grads_mut().into_iter().zip(saved) {
                    *p = v.to_device(dev)?;
                }
            }
            let out = sequential_step_in(&mut stages, &self.task, step, m, self.batch, Shard::of(d, replicas, m)?)?;
            losses.extend(out.losses);
            total = Some(match total {
                // (One replica's gradients are the sum as they are.)
                None if replicas == 1 => (Vec::new(), stages),
                None => (stages.iter().map(|s| flatten(s.grads())).collect::<std::result::Result<_, _>>()?, stages),
                Some((mut sums, first)) => {
                    for (sum, stage) in sums.iter_mut().zip(&stages) {
                        add_replica(sum, &flatten(stage.grads())?);
                    }
                    (sums, first)
                }
            });
        }
        let (sums, mut total) = total.ok_or_else(|| Error::Config("a step needs at least one replica".into()))?;
        if replicas > 1 {
            for (stage, sum) in total.iter_mut().zip(sums) {
                let format = stage.storage().storage();
                let grads = shaped(stage.index(), "the reference's sum over replicas", stage.grads(), &sum, format)?;
                stage.replace_grads(grads)?;
            }
        }
        Ok((StepOutput { loss: mean_loss(&losses), losses }, total))
    }

    /// Every stage of `specs` built anew, as [`Model::build`] built them: from the seed's draws,
    /// or from the parameters file the model started from.
    fn fresh_stages(&self, specs: &[StageSpec]) -> Result<Vec<Stage>> {
        let mut stages = Stage::build_all(&self.spec, specs)?;
        if let Some(file) = &self.init {
            for stage in &mut stages {
                stage.load_named(file)?;
            }
        }
        Ok(stages)
    }

    /// Copies of every held stage's optimizer and its state.
    pub fn optimizers(&self) -> Result<Vec<Optimizer>> {
        self.stages.iter().map(RealStage::optimizer_copy).collect()
    }

    /// Compares the run `plan` that just ran from step `first` — the parameters and optimizers
    /// it started from (`initial`), the per-step losses it gave — with the stale-weight
    /// sequential reference ([`stale_run`]) on copies of the same: the parameters the stages
    /// hold now and the losses, bit for bit. The model must hold every stage.
    pub fn verify_run(
        &self,
        initial: (&[Vec<Tensor>], Vec<Optimizer>),
        plan: &RunPlan,
        first: u64,
        losses: &[f32],
    ) -> Result<RunVerification> {
        let (params, mut optimizers) = initial;
        let n = self.specs.len();
        if self.stages.len() != n || params.len() != n || optimizers.len() != n {
            return Err(Error::Config("verifying a run needs every stage in this process".into()));
        }
        let mut stages = self.fresh_stages(&self.specs)?;
        for (stage, saved) in stages.iter_mut().zip(params) {
            let dev = stage.device();
            for ((p, _), v) in stage.params_and_grads_mut().into_iter().zip(saved) {
                *p = v.to_device(dev)?;
            }
        }
        let tables: Vec<&[u32]> = (0..stages.len()).map(|s| plan.updates.versions_of(s)).collect();
        let run = StaleRun {
            first,
            steps: plan.steps,
            m: plan.m,
            batch: self.batch,
            every: plan.updates.every,
            versions: &tables,
        };
        let reference = stale_run(&mut stages, &mut optimizers, &self.task, run)?;
        let reference: Vec<f32> = reference.chunks(plan.m.max(1)).map(mean_loss).collect();
        let max_loss_diff = losses.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let mut max_param_diff = 0.0f32;
        let mut bitwise =
            losses.len() == reference.len() && losses.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits());
        for (mine, theirs) in self.stages.iter().zip(&stages) {
            for (a, b) in mine.stage().params().into_iter().zip(theirs.params()) {
                let (x, y) = (a.values()?, b.values()?);
                bitwise &= x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits());
                max_param_diff = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(max_param_diff, f32::max);
            }
        }
        Ok(RunVerification { max_param_diff, max_loss_diff, bitwise })
    }

    /// Writes every stage's parameters to `path` as a parameters file ([`ParamsFile`]), named
    /// by their global names, so any partition loads it. With ranks as processes, each process
    /// encodes its stages' tensors (the first replica's: the replicas hold equal parameters),
    /// rank 0 gathers them and writes the file, and the others wait for it; every process must
    /// call it.
    pub fn save_params(&self, path: &std::path::Path, transport: &Transport) -> Result<()> {
        let stages = if transport.replica() == 0 { &self.stages[..] } else { &[] };
        let named: Vec<(String, &Tensor)> = stages.iter().flat_map(|s| s.stage().named_tensors()).collect();
        if !transport.is_processes() {
            return Ok(ParamsFile::write(path, &self.spec, &named)?);
        }
        let part = if named.is_empty() { Vec::new() } else { ParamsFile::encode(&self.spec, &named)? };
        // One message per process: MPI counts its bytes in an `i32`.
        if part.len() > i32::MAX as usize {
            return Err(Error::Config(format!(
                "--save-params {}: this process's stages hold {} bytes of parameters, more than one MPI message carries ({} bytes); run with more ranks, or with ranks as threads",
                path.display(),
                part.len(),
                i32::MAX
            )));
        }
        let parts = transport.gather(part)?;
        if transport.is_root() {
            let bytes = ParamsFile::merge(&self.spec, &parts, |rank| format!("rank {rank}'s parameters"))?;
            ParamsFile::write_bytes(path, &bytes)?;
        }
        // The others wait for rank 0's write here (its failure ends the run for all).
        transport.all_gather(Vec::new())?;
        Ok(())
    }

    /// Copies of the parameters of every stage this process holds.
    pub fn params(&self) -> Vec<Vec<Tensor>> {
        self.stages.iter().map(|s| s.stage().params().into_iter().cloned().collect()).collect()
    }

    /// The gradients of every stage this process holds.
    pub fn grads(&self) -> Vec<Vec<&Tensor>> {
        self.stages.iter().map(|s| s.stage().grads()).collect()
    }
}

/// How a run compares with the stale-weight sequential reference.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RunVerification {
    /// Largest absolute difference over all parameters at the end of the run.
    pub max_param_diff: f32,
    /// Largest |pipelined − reference| step loss.
    pub max_loss_diff: f32,
    /// Whether every parameter and every loss are equal bit for bit.
    pub bitwise: bool,
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

/// Whether `mine` holds on any process: each pipeline rank's, gathered over the pipeline, then
/// over the replicas (a collective: every process calls it). In process, `mine`.
fn anywhere(transport: &Transport, mine: bool) -> Result<bool> {
    if !transport.is_processes() {
        return Ok(mine);
    }
    let any = |answers: Vec<Vec<u8>>| answers.iter().any(|b| b.first() == Some(&1));
    let pipeline = any(transport.all_gather(vec![u8::from(mine)])?);
    Ok(any(transport.all_gather_replicas(vec![u8::from(pipeline)])?))
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
