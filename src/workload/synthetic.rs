//! Synthetic stages as a [`Workload`]: they run and profile like real ones, have no loss, no
//! gradients to verify and no optimizer.
//!
//! Invariant: every stage follows the same spec, the per-rank spec split over the layout's `v`
//! chunks.

use pipesched_schedules::{CostModel, Schedule};
use pipesched_stages::RecomputePolicy;

use super::{Layout, Step, Workload};
use crate::exec::{execute, ExecOptions};
use crate::profile::{profile, ProfileOptions};
use crate::synthetic::{SyntheticSpec, SyntheticStage};
use crate::{Error, Result};

/// Synthetic stages for a layout.
pub struct SyntheticWorkload {
    spec: SyntheticSpec,
    stages: Vec<SyntheticStage>,
    layout: Layout,
    policies: Vec<RecomputePolicy>,
}

impl SyntheticWorkload {
    /// One stage per model stage of `layout`, each following `per_rank` split over its chunks;
    /// an error if its fault names a stage the layout does not have.
    pub fn new(per_rank: &SyntheticSpec, layout: Layout, policies: Vec<RecomputePolicy>) -> Result<SyntheticWorkload> {
        if let Some(f) = per_rank.fault.filter(|f| f.stage >= layout.stages()) {
            return Err(Error::Usage(format!(
                "synthetic fault at stage {}: {layout} has stages 0..{}",
                f.stage,
                layout.stages()
            )));
        }
        let spec = per_rank.split(layout.v);
        let stages = (0..layout.stages()).map(|k| SyntheticStage::new(spec.clone()).at(k)).collect();
        Ok(SyntheticWorkload { spec, stages, layout, policies })
    }
}

impl Workload for SyntheticWorkload {
    fn layout(&self) -> Layout {
        self.layout
    }

    fn policies(&self) -> &[RecomputePolicy] {
        &self.policies
    }

    fn rows(&self) -> Option<usize> {
        None
    }

    fn run_step(&mut self, schedule: &Schedule, _step: u64, opts: &ExecOptions, verify: bool) -> Result<Step> {
        if verify {
            return Err(Error::Usage(
                "--verify compares gradients; synthetic stages have none. Use a real model".into(),
            ));
        }
        let trace = execute(schedule, &mut self.stages, opts)?;
        Ok(Step { trace, loss: None, verification: None })
    }

    fn optimizer_step(&mut self) -> Result<()> {
        Ok(())
    }

    fn profile(&mut self, reps: usize) -> Result<CostModel> {
        let recompute = self.policies.iter().map(|p| p.drops()).collect();
        profile(self.layout, &mut self.stages, &ProfileOptions { warmup: 2, reps, recompute }, |_, _| Ok(()))
    }

    fn predicted(&self) -> CostModel {
        self.spec.cost_model(self.layout.stages())
    }
}
