//! The sequential reference: one training step of a whole model on one thread, micro-batch after
//! micro-batch — forward through every stage, then backward through every stage — accumulating
//! gradients in increasing micro-batch order.
//!
//! Invariant (the bitwise-gradient contract, DESIGN.md): a pipelined executor that runs the same
//! stages on the same task, step and `m`, in any valid schedule and under any recompute
//! policies, must end with gradients whose bits equal the ones this leaves in the stages, and a
//! loss equal to [`mean_loss`] of the same per-micro-batch losses.

use crate::error::{Error, Result};
use crate::optim::Optimizer;
use crate::partition::StageSpec;
use crate::spec::ModelSpec;
use crate::stage::Stage;
use crate::task::Task;
use crate::tensor::Tensor;

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// The step's loss: [`mean_loss`] of `losses`.
    pub loss: f32,
    /// Each micro-batch's mean loss, in micro-batch order.
    pub losses: Vec<f32>,
}

/// The step loss from per-micro-batch losses: summed in micro-batch order, divided by `m`.
pub fn mean_loss(losses: &[f32]) -> f32 {
    losses.iter().sum::<f32>() / losses.len().max(1) as f32
}

/// An error unless `stages` are a whole model in order (first stage first, each range starting
/// where the previous ended, last stage last).
pub fn check_chain(stages: &[Stage]) -> Result<()> {
    let ok = !stages.is_empty()
        && stages[0].is_first()
        && stages.windows(2).all(|w| w[0].layer_range().end == w[1].layer_range().start)
        && stages[stages.len() - 1].is_last();
    if ok {
        return Ok(());
    }
    let ranges: Vec<_> = stages.iter().map(Stage::layer_range).collect();
    Err(Error::Partition(format!(
        "stages with layers {ranges:?} are not a whole model in order; build them from one stage_specs(..)"
    )))
}

/// Runs step `step` of `m` micro-batches of `batch` rows of `task` through `stages` (a whole
/// model), sequentially. Leaves the accumulated gradients in the stages.
pub fn sequential_step(stages: &mut [Stage], task: &Task, step: u64, m: usize, batch: usize) -> Result<StepOutput> {
    check_chain(stages)?;
    for s in stages.iter_mut() {
        s.begin_step(step, m)?;
    }
    let mut losses = Vec::with_capacity(m);
    for mb in 0..m {
        let (mut x, target) = task.batch(step, mb, batch);
        let last = stages.len() - 1;
        for (k, s) in stages.iter_mut().enumerate() {
            x = s.forward(mb, x, (k == last).then_some(&target))?;
        }
        losses.push(x.data()[0]);
        let mut g = None;
        for s in stages.iter_mut().rev() {
            g = Some(s.backward(mb, g)?);
        }
    }
    Ok(StepOutput { loss: mean_loss(&losses), losses })
}

/// Builds `specs` of `model` afresh, runs [`sequential_step`], and returns the step output and
/// each stage's gradients (cloned, in parameter order): what an executor's result is compared
/// with.
pub fn reference_step(
    model: &ModelSpec,
    specs: &[StageSpec],
    task: &Task,
    step: u64,
    m: usize,
    batch: usize,
) -> Result<(StepOutput, Vec<Vec<Tensor>>)> {
    let mut stages = Stage::build_all(model, specs)?;
    let out = sequential_step(&mut stages, task, step, m, batch)?;
    Ok((out, stages.iter().map(|s| s.grads().into_iter().cloned().collect()).collect()))
}

/// One sequential training step: [`sequential_step`], then each stage's optimizer.
pub fn train_step(
    stages: &mut [Stage],
    optimizers: &mut [Optimizer],
    task: &Task,
    step: u64,
    m: usize,
    batch: usize,
) -> Result<StepOutput> {
    if optimizers.len() != stages.len() {
        return Err(Error::Optimizer(format!(
            "{} optimizers for {} stages; give one per stage",
            optimizers.len(),
            stages.len()
        )));
    }
    let out = sequential_step(stages, task, step, m, batch)?;
    for (o, s) in optimizers.iter_mut().zip(stages.iter_mut()) {
        o.step(s)?;
    }
    Ok(out)
}
