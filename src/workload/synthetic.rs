//! Synthetic stages as a [`Workload`]: they run and profile like real ones, have no loss, no
//! gradients to verify and no optimizer.
//!
//! Invariant: every stage follows the same spec, the per-rank spec split over the layout's `v`
//! chunks.

use std::sync::Arc;

use pipesched_schedules::{CostModel, Schedule};
use pipesched_stages::RecomputePolicy;

use super::{Layout, RunOutcome, RunPlan, Step, Update, Workload};
use crate::exec::{execute, ExecOptions, Transport};
use crate::profile::{profile, ProfileOptions};
use crate::synthetic::{SyntheticSpec, SyntheticStage};
use crate::{Error, Result};

/// Synthetic stages for a layout.
pub struct SyntheticWorkload {
    spec: SyntheticSpec,
    /// The stages this process holds ([`Transport::held`]), in model order.
    stages: Vec<SyntheticStage>,
    layout: Layout,
    policies: Vec<RecomputePolicy>,
    transport: Transport,
}

impl SyntheticWorkload {
    /// One stage per model stage of `layout` that `transport` gives this process, each
    /// following `per_rank` split over its chunks; an error if its fault names a stage the
    /// layout does not have.
    pub fn new(
        per_rank: &SyntheticSpec,
        layout: Layout,
        policies: Vec<RecomputePolicy>,
        transport: Transport,
    ) -> Result<SyntheticWorkload> {
        if let Some(f) = per_rank.fault.filter(|f| f.stage >= layout.stages()) {
            return Err(Error::Usage(format!(
                "synthetic fault at stage {}: {layout} has stages 0..{}",
                f.stage,
                layout.stages()
            )));
        }
        let spec = per_rank.split(layout.v);
        let held = transport.held(layout.stages(), |s| layout.rank_of(s));
        let stages = held.into_iter().map(|k| SyntheticStage::new(spec.clone()).at(k)).collect();
        Ok(SyntheticWorkload { spec, stages, layout, policies, transport })
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
        Ok(Step { trace, loss: None, verification: None, sums_done_ms: None })
    }

    fn optimizer_step(&mut self) -> Result<Update> {
        Ok(Update::Applied { scale: None })
    }

    fn run(&mut self, plan: &RunPlan, _first: u64, opts: &ExecOptions, verify: bool) -> Result<RunOutcome> {
        if verify {
            return Err(Error::Usage(
                "--verify compares parameters and losses; synthetic stages have none. Use a real model".into(),
            ));
        }
        let opts = ExecOptions { updates: Some(Arc::clone(&plan.updates)), ..opts.clone() };
        let trace = execute(&plan.schedule, &mut self.stages, &opts)?;
        Ok(RunOutcome { trace, losses: vec![None; plan.steps], verification: None })
    }

    fn profile(&mut self, reps: usize) -> Result<CostModel> {
        let recompute = self.policies.iter().map(|p| p.drops()).collect();
        let opts = ProfileOptions { warmup: 2, reps, recompute };
        profile(self.layout, &mut self.stages, &opts, |_, _| Ok(()), &self.transport)
    }

    fn predicted(&self) -> Result<CostModel> {
        Ok(self.spec.cost_model(self.layout.stages()))
    }
}
