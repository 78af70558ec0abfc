//! A real model as a [`Workload`]: its stages train, verify against the sequential reference,
//! profile themselves and predict their bytes from their own accounting.
//!
//! Invariant: the model's stages are the layout's stages, in model order.

use pipesched_schedules::{CostModel, Schedule};
use pipesched_stages::RecomputePolicy;

use super::{Layout, StageProducts, Step, Validation, Workload};
use crate::exec::ExecOptions;
use crate::model::Model;
use crate::profile::{profile, ProfileOptions};
use crate::Result;

/// A model split into stages for a layout.
pub struct RealWorkload {
    model: Model,
    layout: Layout,
    policies: Vec<RecomputePolicy>,
}

impl RealWorkload {
    /// `model`, whose stages sit as `layout` says.
    pub fn new(model: Model, layout: Layout) -> RealWorkload {
        let policies = model.specs.iter().map(|s| s.policy).collect();
        RealWorkload { model, layout, policies }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }
}

/// Profiles a model's stages placed as `layout` says (each run a fresh one-micro-batch step):
/// 2 warm-up runs, then the median of `reps`.
pub fn profile_model(layout: impl Into<Layout>, model: &mut Model, reps: usize) -> Result<CostModel> {
    let opts = ProfileOptions { warmup: 2, reps, recompute: model.recompute_flags() };
    let (task, batch) = (model.task.clone(), model.batch);
    profile(layout, &mut model.stages, &opts, |stage, run| stage.begin_step(&task, 1 << 40 | run as u64, 1, batch))
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

    fn validation(&self, batches: usize) -> Result<Option<Validation>> {
        let corpus = self.model.task.corpus();
        Ok(Some(Validation {
            loss: self.model.validation_loss(batches)?,
            entropy: corpus.and_then(|c| c.entropy()),
            floor: corpus.and_then(|c| c.floor(self.model.spec.seq())),
        }))
    }

    fn run_step(&mut self, schedule: &Schedule, step: u64, opts: &ExecOptions, verify: bool) -> Result<Step> {
        let out = self.model.run_step(schedule, step, opts)?;
        let verification = if verify {
            // A step changes gradients, not parameters: after it, and after the copies of other
            // processes' stages are brought up to date, the parameters are the step's start.
            crate::replicas::sync(&mut self.model, self.layout, &opts.transport)?;
            let before = self.model.params();
            Some(self.model.verify(&before, step, schedule.m, out.loss)?)
        } else {
            None
        };
        Ok(Step { trace: out.trace, loss: Some(out.loss), verification })
    }

    fn optimizer_step(&mut self) -> Result<()> {
        self.model.optimizer_step()
    }

    fn profile(&mut self, reps: usize) -> Result<CostModel> {
        profile_model(self.layout, &mut self.model, reps)
    }

    fn predicted(&self) -> CostModel {
        self.model.predicted_bytes(self.layout)
    }

    fn products(&self) -> Vec<StageProducts> {
        let precision = self.model.spec.precision;
        self.model
            .stages
            .iter()
            .enumerate()
            .map(|(stage, rs)| StageProducts {
                stage,
                device: rs.stage().device(),
                precision,
                ops: rs.stage().products(self.model.batch),
            })
            .collect()
    }
}
