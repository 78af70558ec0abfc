//! How steps follow each other: with a barrier (the default), back to back with none
//! (`--no-barrier`), or as one asynchronous stream (`--async pipedream|2bw`) — the same flags in
//! `pipesched run` and `pipesched simulate`.
//!
//! Invariant: `--no-barrier` and `--async` are not both given.

use clap::Args;

use crate::budget::{self, Available};
use crate::workload::{Asynchrony, RunPlan};
use crate::Result;
use pipesched_schedules::{Footprint, Schedule, Simulation};

/// `--no-barrier`, `--async`.
#[derive(Debug, Clone, Args)]
pub struct RunModeArgs {
    /// Run the steps back to back as one run, with no barrier between them: each stage updates
    /// its weights right after its own last backward of a step and its rank goes on to the next
    /// step. Reports the step period (the time between step ends).
    #[arg(long, conflicts_with = "asynchrony")]
    pub no_barrier: bool,
    /// Train asynchronously, as one stream of every step's micro-batches through the schedule
    /// generated for steps·m of them, with no flush: `pipedream` (an update after every
    /// micro-batch; each backward on the weights its forward used, stashed) or `2bw`
    /// (PipeDream-2BW: an update every step; a step's micro-batches on the weights of one update
    /// before the newest).
    #[arg(long = "async", value_name = "KIND", value_parser = parse_asynchrony)]
    pub asynchrony: Option<Asynchrony>,
}

impl RunModeArgs {
    /// Whether the steps run as one run (`--no-barrier` or `--async`).
    pub fn is_run(&self) -> bool {
        self.no_barrier || self.asynchrony.is_some()
    }

    /// The flag that asked for a run, for messages.
    pub fn flag(&self) -> &'static str {
        if self.asynchrony.is_some() {
            "--async"
        } else {
            "--no-barrier"
        }
    }

    /// The run of `steps` steps: `step` back to back, or the stream `stream(steps)` gives with
    /// `--async` — refused up front, before anything is built, if `steps` copies of `step`
    /// (and the simulation `simulated` says, if any) would not fit in memory.
    pub fn plan(
        &self,
        step: &Schedule,
        steps: usize,
        simulated: Option<Simulation>,
        stream: impl FnOnce(usize) -> Result<Schedule>,
    ) -> Result<RunPlan> {
        let times = |n: usize| n.checked_mul(steps).map(|t| t as u64);
        let size = match (times(step.num_actions()), times(step.m)) {
            (Some(actions), Some(m)) => Some(Footprint { actions, stages: step.stages() as u64, m, build: 0 }),
            _ => None,
        };
        let subject = format!("{steps} steps of {} ({} actions each) as one run", step.name, step.num_actions());
        let mut estimate = budget::schedule(subject, size, simulated);
        for part in &mut estimate.parts {
            part.remedies = &["fewer steps (--steps, --warmup)", "fewer micro-batches (-m)"];
        }
        budget::check(&estimate, Available::probe().as_ref())?;
        match self.asynchrony {
            None => RunPlan::back_to_back(step, steps),
            Some(kind) => RunPlan::stream(stream(steps)?, steps, step.m, kind),
        }
    }
}

/// `--async`'s values.
fn parse_asynchrony(text: &str) -> std::result::Result<Asynchrony, String> {
    match text {
        "pipedream" => Ok(Asynchrony::PipeDream),
        "2bw" => Ok(Asynchrony::TwoBuffered),
        _ => Err(format!("unknown asynchronous training {text:?}; choose pipedream or 2bw")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_takes_pipedream_and_2bw_only() {
        assert_eq!(parse_asynchrony("pipedream"), Ok(Asynchrony::PipeDream));
        assert_eq!(parse_asynchrony("2bw"), Ok(Asynchrony::TwoBuffered));
        assert!(parse_asynchrony("async").unwrap_err().contains("pipedream or 2bw"));
    }
}
