//! How steps follow each other: with a barrier (the default), back to back with none
//! (`--no-barrier`), or as one asynchronous stream (`--async pipedream|2bw`) — the same flags in
//! `pipesched run` and `pipesched simulate`.
//!
//! Invariant: `--no-barrier` and `--async` are not both given.

use clap::Args;

use crate::workload::{Asynchrony, RunPlan};
use crate::Result;
use pipesched_schedules::Schedule;

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
    /// `--async`.
    pub fn plan(
        &self,
        step: &Schedule,
        steps: usize,
        stream: impl FnOnce(usize) -> Result<Schedule>,
    ) -> Result<RunPlan> {
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
