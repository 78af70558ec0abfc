//! A real model as a [`Workload`]: its stages train, verify against the sequential reference,
//! profile themselves and predict their bytes from their own accounting.
//!
//! Invariant: the model's stages are the layout's stages this process holds
//! ([`Transport::held`]), in model order: every one in process, its own rank's with ranks as
//! processes — where every process makes every call, since the ones that cross stages (the
//! validation loss, profiling, predictions, `--verify`) are collective.

use pipesched_schedules::{forward_pass, CostModel, Schedule};
use pipesched_stages::{mean_loss, LayerCosts, RecomputePolicy, ScaleVerdict};

use super::{Layout, RunOutcome, RunPlan, StageProducts, Step, Update, Validation, Workload};
use crate::collect;
use crate::cost_file::CostFile;
use crate::exec::{ExecOptions, Transport};
use crate::inference::Inference;
use crate::model::Model;
use crate::profile::{profile, profile_layers, ProfileOptions};
use crate::{Error, Result};

/// A model split into stages for a layout.
pub struct RealWorkload {
    model: Model,
    layout: Layout,
    policies: Vec<RecomputePolicy>,
    transport: Transport,
}

impl RealWorkload {
    /// `model`, whose stages sit as `layout` says, holding the stages `transport` gives this
    /// process.
    pub fn new(model: Model, layout: Layout, transport: Transport) -> RealWorkload {
        let policies = model.specs.iter().map(|s| s.policy).collect();
        RealWorkload { model, layout, policies, transport }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Profiles a model's stages placed as `layout` says (each run a fresh one-micro-batch step):
/// 2 warm-up runs, then the median of `reps`. With ranks as processes, every process profiles
/// its own stages and gets the whole cost model.
pub fn profile_model(
    layout: impl Into<Layout>,
    model: &mut Model,
    reps: usize,
    transport: &Transport,
) -> Result<CostModel> {
    let opts = ProfileOptions { warmup: 2, reps, recompute: model.recompute_flags() };
    let (task, batch) = (model.task.clone(), model.batch);
    let prepare =
        |stage: &mut crate::model::RealStage, run: usize| stage.begin_step(&task, 1 << 40 | run as u64, 1, batch);
    model.alone(|stages| profile(layout, stages, &opts, prepare, transport))
}

/// [`profile_model`], then every layer of the model alone (each stage's layers on the inputs
/// the stage profile recorded; see [`profile_layers`]): the cost model and the per-layer costs,
/// for micro-batches of the model's rows.
pub fn profile_model_layers(
    layout: impl Into<Layout>,
    model: &mut Model,
    reps: usize,
    transport: &Transport,
) -> Result<(CostModel, Option<LayerCosts>)> {
    let opts = ProfileOptions { warmup: 2, reps, recompute: model.recompute_flags() };
    let (task, batch) = (model.task.clone(), model.batch);
    let prepare =
        |stage: &mut crate::model::RealStage, run: usize| stage.begin_step(&task, 1 << 40 | run as u64, 1, batch);
    let (costs, layers) = model.alone(|stages| profile_layers(layout, stages, &opts, prepare, transport))?;
    let layers =
        layers.map(|(layers, loss)| LayerCosts { model_name: model.spec.name.clone(), rows: batch, layers, loss });
    Ok((costs, layers))
}

impl Workload for RealWorkload {
    fn layout(&self) -> Layout {
        self.layout
    }

    fn policies(&self) -> &[RecomputePolicy] {
        &self.policies
    }

    fn rows(&self) -> Option<usize> {
        Some(self.model.batch)
    }

    fn infer(&mut self, schedule: &Schedule, opts: &ExecOptions) -> Result<(Inference, CostModel)> {
        let out = self.model.infer(schedule, opts)?;
        Ok((out, self.model.inference_bytes(&self.layout)?))
    }

    /// In process, the forward-only pass through the pipeline of the layout
    /// ([`forward_pass`]): the same losses as the sequential walk, bit for bit. With ranks as
    /// processes, the walk, handing each activation to the next stage's process.
    fn validation(&mut self, batches: usize) -> Result<Option<Validation>> {
        let whole = self.model.stages.len() == self.model.specs.len();
        let loss = if whole && matches!(self.transport, Transport::InProcess) {
            let Layout { p, v, placement } = self.layout;
            let pass = forward_pass(p, v, placement, batches)?;
            mean_loss(&self.model.infer(&pass, &ExecOptions::default())?.losses)
        } else {
            self.model.validation_loss(batches, &self.transport, |s| self.layout.rank_of(s))?
        };
        let corpus = self.model.task.corpus();
        Ok(Some(Validation {
            loss,
            entropy: corpus.and_then(|c| c.entropy()),
            floor: corpus.and_then(|c| c.floor(self.model.spec.seq())),
        }))
    }

    fn run_step(&mut self, schedule: &Schedule, step: u64, opts: &ExecOptions, verify: bool) -> Result<Step> {
        let out = self.model.run_step(schedule, step, opts)?;
        // A step changes gradients, not parameters: after it, the parameters are the step's
        // start, which the reference starts from.
        let verification = match (verify, self.transport.is_processes()) {
            (false, _) => None,
            (true, false) => {
                let before = self.model.params();
                Some(self.model.verify(&before, step, schedule.m, out.loss)?)
            }
            (true, true) => {
                let verified = match collect::to_root(&self.model, &self.transport)? {
                    Some(all) => {
                        Some(self.model.verify_grads(&all.params, &all.grad_refs(), step, schedule.m, out.loss)?)
                    }
                    None => None,
                };
                // The others wait for rank 0's check here, not in the next step, where their
                // waits for its inputs are bounded by the timeout.
                self.transport.all_gather(Vec::new())?;
                verified
            }
        };
        Ok(Step { trace: out.trace, loss: Some(out.loss), verification, sums_done_ms: out.sums_done_ms })
    }

    fn optimizer_step(&mut self) -> Result<Update> {
        self.model.optimizer_step(&self.transport)?;
        let scale = self.model.loss_scale();
        let dynamic = scale.is_dynamic().then(|| scale.scale());
        Ok(match (self.model.last_verdict(), dynamic) {
            (Some(ScaleVerdict::Skipped), Some(scale)) => Update::Skipped { scale },
            _ => Update::Applied { scale: dynamic },
        })
    }

    fn run(&mut self, plan: &RunPlan, first: u64, opts: &ExecOptions, verify: bool) -> Result<RunOutcome> {
        if verify && self.transport.is_processes() {
            return Err(Error::Usage(
                "--verify of a run compares every stage with the sequential reference in one process; run it with ranks as threads".into(),
            ));
        }
        // The reference starts where the run does: its parameters and its optimizers' state.
        let initial = if verify { Some((self.model.params(), self.model.optimizers()?)) } else { None };
        let out = self.model.run(plan, first, opts)?;
        let verification = match initial {
            Some((params, optimizers)) => {
                Some(self.model.verify_run((&params, optimizers), plan, first, &out.losses)?)
            }
            None => None,
        };
        Ok(RunOutcome { trace: out.trace, losses: out.losses.into_iter().map(Some).collect(), verification })
    }

    fn profile(&mut self, reps: usize) -> Result<CostModel> {
        profile_model(self.layout, &mut self.model, reps, &self.transport)
    }

    fn profile_file(&mut self, reps: usize) -> Result<CostFile> {
        let (model, layers) = profile_model_layers(self.layout, &mut self.model, reps, &self.transport)?;
        // What a stage's sum over replicas sends.
        let grad_bytes = Some(self.sum_bytes()?);
        Ok(CostFile { model, layout: Some(self.layout), recompute: Some(self.policies.clone()), layers, grad_bytes })
    }

    fn predicted(&self) -> Result<CostModel> {
        self.model.predicted_bytes(self.layout, &self.transport)
    }

    fn version_bytes(&self) -> Result<Vec<u64>> {
        self.model.version_bytes(self.layout.stages(), &self.transport)
    }

    fn sum_bytes(&self) -> Result<Vec<u64>> {
        self.model.sum_bytes(self.layout.stages(), &self.transport)
    }

    fn parameter_digest(&self) -> Result<Option<u64>> {
        let mut mine = Vec::with_capacity(self.model.stages.len());
        for rs in &self.model.stages {
            let mut h = Fnv::default();
            for p in rs.stage().params() {
                for v in p.values()? {
                    h.eat(&v.to_bits().to_le_bytes());
                }
            }
            mine.push((rs.stage().index(), h.0));
        }
        let per_stage: Vec<u64> = self.transport.by_stage(self.layout.stages(), mine)?;
        let mut h = Fnv::default();
        per_stage.iter().for_each(|d| h.eat(&d.to_le_bytes()));
        Ok(Some(h.0))
    }

    fn save_params(&self, path: &std::path::Path) -> Result<()> {
        self.model.save_params(path, &self.transport)
    }

    fn products(&self) -> Vec<StageProducts> {
        let precision = self.model.spec.precision;
        self.model
            .stages
            .iter()
            .map(|rs| StageProducts {
                stage: rs.stage().index(),
                device: rs.stage().device(),
                precision,
                ops: rs.stage().products(self.model.batch),
            })
            .collect()
    }
}
