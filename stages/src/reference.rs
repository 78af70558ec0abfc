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
use crate::shard::Shard;
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
    sequential_step_in(stages, task, step, m, batch, Shard::whole(m))
}

/// [`sequential_step`] of the `m` micro-batches that are `shard` of a larger step (one replica's
/// share under data parallelism): micro-batch `mb` reads the data of the step's
/// `shard.global(mb)`, and the gradients are of the mean loss over the whole step.
pub fn sequential_step_in(
    stages: &mut [Stage],
    task: &Task,
    step: u64,
    m: usize,
    batch: usize,
    shard: Shard,
) -> Result<StepOutput> {
    check_chain(stages)?;
    for s in stages.iter_mut() {
        s.begin_shard(step, m, shard)?;
    }
    let mut losses = Vec::with_capacity(m);
    for mb in 0..m {
        let (mut x, target) = task.batch(step, shard.global(mb), batch);
        let last = stages.len() - 1;
        for (k, s) in stages.iter_mut().enumerate() {
            x = s.forward(mb, x, (k == last).then_some(&target))?;
        }
        losses.push(x.values()?[0]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LossKind, OptimizerSpec, Partition, Policies};

    fn specs(model: &ModelSpec, n: usize, partition: &str, policies: &str) -> Vec<StageSpec> {
        model.stage_specs(n, &partition.parse::<Partition>().unwrap(), &policies.parse::<Policies>().unwrap()).unwrap()
    }

    #[test]
    fn the_partition_does_not_change_the_bits() {
        let model = ModelSpec::tiny();
        let task = Task::new(&model, 11);
        let (want_out, want) = reference_step(&model, &specs(&model, 1, "even", "none"), &task, 0, 3, 8).unwrap();
        let want: Vec<Tensor> = want.into_iter().flatten().collect();
        for (n, partition, policies) in
            [(3, "even", "full"), (2, "balanced", "sqrt,none"), (6, "even", "every:2"), (3, "1,4,1", "none")]
        {
            let (out, got) = reference_step(&model, &specs(&model, n, partition, policies), &task, 0, 3, 8).unwrap();
            assert_eq!(out, want_out);
            let got: Vec<Tensor> = got.into_iter().flatten().collect();
            assert_eq!(got.len(), want.len());
            assert!(got.iter().zip(&want).all(|(g, w)| g.bit_eq(w)), "{n} stages, {partition}, {policies}");
        }
    }

    #[test]
    fn model_gradients_match_finite_differences() {
        for loss in [LossKind::CrossEntropy, LossKind::Mse] {
            let model = ModelSpec { loss, ..ModelSpec::tiny().with_mlp(|s| s.output = 4).unwrap() };
            let task = Task::new(&model, 12);
            let mut stages = Stage::build_all(&model, &specs(&model, 2, "even", "full,none")).unwrap();
            sequential_step(&mut stages, &task, 0, 2, 6).unwrap();
            let grads: Vec<Vec<Tensor>> = stages.iter().map(|s| s.grads().into_iter().cloned().collect()).collect();
            let names: Vec<Vec<String>> = stages.iter().map(Stage::param_names).collect();
            // A few elements of every parameter tensor of every stage.
            for s in 0..stages.len() {
                for p in 0..grads[s].len() {
                    for e in [0, grads[s][p].len() / 2, grads[s][p].len() - 1] {
                        let mut at = |delta: f32| {
                            stages[s].params_and_grads_mut()[p].0.data_mut()[e] += delta;
                            let l = sequential_step(&mut stages, &task, 0, 2, 6).unwrap().loss as f64;
                            stages[s].params_and_grads_mut()[p].0.data_mut()[e] -= delta;
                            l
                        };
                        let eps = 1e-2;
                        let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                        let analytic = grads[s][p].data()[e] as f64;
                        let what = format!("{loss:?} {} element {e}", names[s][p]);
                        assert!(
                            (analytic - numeric).abs() <= 2e-3 + 2e-2 * numeric.abs(),
                            "{what}: {analytic} vs {numeric}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn small_preset_loss_falls_with_adam() {
        // The `small` architecture on its task, with fewer rows per micro-batch so a debug build
        // stays fast: 2 stages, m = 2, 32 rows, 20 steps.
        let model = ModelSpec::small();
        let task = Task::new(&model, 13);
        let mut stages = Stage::build_all(&model, &specs(&model, 2, "balanced", "sqrt,none")).unwrap();
        let mut opts: Vec<Optimizer> =
            stages.iter().map(|s| Optimizer::new(OptimizerSpec::adam(5e-4), s).unwrap()).collect();
        let losses: Vec<f32> =
            (0..20).map(|step| train_step(&mut stages, &mut opts, &task, step, 2, 32).unwrap().loss).collect();
        let first = mean_loss(&losses[..5]);
        let last = mean_loss(&losses[15..]);
        // Regression onto the teacher: the error halves within 20 small steps.
        assert!(last < 0.5 * first, "loss went from {first} to {last}: {losses:?}");
    }

    #[test]
    fn sgd_lowers_the_loss_and_optimizers_check_their_inputs() {
        let model = ModelSpec { dropout: 0.0, ..ModelSpec::tiny() };
        let task = Task::new(&model, 14);
        let mut stages = Stage::build_all(&model, &specs(&model, 2, "even", "none")).unwrap();
        let spec = OptimizerSpec::sgd(0.1, 0.9);
        let mut opts: Vec<Optimizer> = stages.iter().map(|s| Optimizer::new(spec, s).unwrap()).collect();
        assert_eq!(opts[0].state_bytes(), stages[0].param_bytes());
        assert_eq!(stages[1].static_bytes(&OptimizerSpec::adam(1.0)), 4 * stages[1].param_bytes());
        let l0 = sequential_step(&mut stages, &task, 0, 4, 16).unwrap().loss;
        for step in 0..30 {
            train_step(&mut stages, &mut opts, &task, step % 4, 4, 16).unwrap();
        }
        let l1 = sequential_step(&mut stages, &task, 0, 4, 16).unwrap().loss;
        assert!(l1 < 0.8 * l0, "{l0} → {l1}");
        stages[0].begin_step(9, 2).unwrap();
        let e = opts[0].step(&mut stages[0]).unwrap_err().to_string();
        assert!(e.contains("not complete (micro-batches 0..0 of 2"), "{e}");
        assert!(Optimizer::new(OptimizerSpec::sgd(-1.0, 0.0), &stages[0]).is_err());
        assert!(opts[1].step(&mut stages[0]).is_err() || stages[0].param_count() == stages[1].param_count());
        assert!(train_step(&mut stages, &mut opts[..1], &task, 0, 1, 4).is_err());
        let e = sequential_step(&mut stages[1..], &task, 0, 1, 4).unwrap_err().to_string();
        assert!(e.contains("not a whole model"), "{e}");
    }
}
