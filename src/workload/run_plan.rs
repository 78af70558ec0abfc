//! [`RunPlan`]: many steps as one schedule, with the stages' weight updates inside it — steps
//! back to back with no barrier (synchronous: each stage updates after its own last backward of
//! a step), or one stream of micro-batches with no flush at all, on stale weights (PipeDream,
//! PipeDream-2BW). See [`Updates`] for which weights each micro-batch uses and what a stage
//! keeps.
//!
//! Invariant: `schedule.m = steps · m`, and `updates` were worked out for `schedule`.

use std::sync::Arc;

use pipesched_schedules::{back_to_back, Schedule, Trace, Updates, Versioning};

use crate::model::RunVerification;
use crate::{Error, Result};

/// A run's schedule and updates.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Every micro-batch of the run: micro-batch `k·m + j` is micro-batch `j` of step `k`.
    pub schedule: Schedule,
    /// Where each stage updates, and the versions micro-batches use.
    pub updates: Arc<Updates>,
    /// Steps in the run.
    pub steps: usize,
    /// Micro-batches per step.
    pub m: usize,
}

/// How the weights are updated inside a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asynchrony {
    /// Steps back to back: each stage updates once per step on the step's gradients, and every
    /// micro-batch of a step uses the weights of all the steps before (synchronous training).
    None,
    /// PipeDream: an update after every micro-batch; a forward uses the newest weights, its
    /// backward the same (stashed).
    PipeDream,
    /// PipeDream-2BW: an update every step; a step's micro-batches use the weights of one update
    /// before the newest.
    TwoBuffered,
}

impl RunPlan {
    /// `steps` steps of `step` back to back, with no barrier between them.
    pub fn back_to_back(step: &Schedule, steps: usize) -> Result<RunPlan> {
        let schedule = back_to_back(step, steps)?;
        let updates = Updates::new(&schedule, step.m, Versioning::Current)?;
        Ok(RunPlan { schedule, updates: Arc::new(updates), steps, m: step.m })
    }

    /// `stream`, a schedule of `steps · m` micro-batches run as one with no flush, with the
    /// updates `asynchrony` makes.
    pub fn stream(stream: Schedule, steps: usize, m: usize, asynchrony: Asynchrony) -> Result<RunPlan> {
        if steps.checked_mul(m) != Some(stream.m) {
            return Err(Error::Usage(format!(
                "a stream of {} micro-batches is not {steps} steps of {m}; generate it for steps·m micro-batches",
                stream.m
            )));
        }
        let (every, versioning) = match asynchrony {
            Asynchrony::None => (m, Versioning::Current),
            Asynchrony::PipeDream => (1, Versioning::Stashed),
            Asynchrony::TwoBuffered => (m, Versioning::DoubleBuffered),
        };
        let updates = Updates::new(&stream, every, versioning)?;
        Ok(RunPlan { schedule: stream, updates: Arc::new(updates), steps, m })
    }
}

/// What a run gives.
pub struct RunOutcome {
    /// What the executor measured.
    pub trace: Trace,
    /// Each step's mean loss (real models).
    pub losses: Vec<Option<f32>>,
    /// How it compares with the stale-weight sequential reference, when asked for.
    pub verification: Option<RunVerification>,
}
