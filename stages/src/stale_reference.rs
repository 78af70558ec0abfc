//! The sequential reference of training on stale weights (PipeDream, PipeDream-2BW, and steps
//! back to back as the case with no staleness): a run's micro-batches one after another on one
//! thread — forward through every stage, then backward — each on the weight version a table
//! gives it per stage, every stage updating after each group of `every` micro-batches.
//!
//! Semantics (the contract a pipelined run on stale weights is checked against): micro-batch `j`
//! of the run (micro-batch `j mod m` of step `first + j div m`) runs its forward and backward on
//! stage `s` with version `versions[s][j]` of the stage's weights — version `u` being what `u`
//! updates made of the initial weights; its gradients add up, in micro-batch order, into the
//! stage's buffers; after the backward of every `every`-th micro-batch, the stage's optimizer
//! steps its newest version on the buffers (making the next version) and the buffers are
//! zeroed. A micro-batch's loss gradient is of its step's mean loss (`1/m`), whatever `every`.
//!
//! Invariant: a version is made before any micro-batch uses it (`versions[s][j] ≤ ⌊j / every⌋`);
//! the function refuses a table that breaks it.

use crate::error::{Error, Result};
use crate::optim::Optimizer;
use crate::reference::check_chain;
use crate::stage::Stage;
use crate::task::Task;
use crate::tensor::Tensor;

/// Where a run starts, how long it is, and how its weights are updated.
#[derive(Debug, Clone, Copy)]
pub struct StaleRun<'a> {
    /// The run's first step.
    pub first: u64,
    /// Steps in the run.
    pub steps: usize,
    /// Micro-batches per step.
    pub m: usize,
    /// Rows per micro-batch.
    pub batch: usize,
    /// Micro-batches per update.
    pub every: usize,
    /// `versions[s][j]`: the version micro-batch `j` uses on stage `s`.
    pub versions: &'a [&'a [u32]],
}

/// Trains `stages` (a whole model, each with its optimizer) through `run` sequentially (see the
/// module doc) and returns every micro-batch's loss, in order. The stages end with their newest
/// weights.
pub fn stale_run(stages: &mut [Stage], optimizers: &mut [Optimizer], task: &Task, run: StaleRun) -> Result<Vec<f32>> {
    check_chain(stages)?;
    let total = run.steps.checked_mul(run.m).filter(|&t| t > 0 && run.every > 0 && t % run.every == 0);
    let total = total.ok_or_else(|| {
        Error::Optimizer(format!(
            "a run of {} steps of {} micro-batches with an update every {}: give whole groups",
            run.steps, run.m, run.every
        ))
    })?;
    if optimizers.len() != stages.len() || run.versions.len() != stages.len() {
        return Err(Error::Optimizer(format!(
            "{} stages, {} optimizers and {} version tables: give one of each per stage",
            stages.len(),
            optimizers.len(),
            run.versions.len()
        )));
    }
    for (s, table) in run.versions.iter().enumerate() {
        if let Some(j) = (0..total).find(|&j| table.get(j).is_none_or(|&v| v as usize > j / run.every)) {
            return Err(Error::Optimizer(format!(
                "stage {s}, micro-batch {j}: version {:?} is not made by then (updates come every {} micro-batches)",
                table.get(j),
                run.every
            )));
        }
    }
    for s in stages.iter_mut() {
        s.begin_run(run.first, run.steps, run.m)?;
    }
    // The last micro-batch to use each version of each stage: older versions are dropped then.
    let last_use: Vec<Vec<usize>> = run
        .versions
        .iter()
        .map(|table| {
            let mut at = vec![0; total / run.every + 1];
            for (j, &v) in table[..total].iter().enumerate() {
                at[v as usize] = j;
            }
            at
        })
        .collect();
    // Every version of every stage made so far, emptied once nothing uses it and it is not the
    // newest (the newest is also the stage's parameters).
    let mut made: Vec<Vec<Vec<Tensor>>> =
        stages.iter().map(|s| vec![s.params().into_iter().cloned().collect()]).collect();
    let mut losses = Vec::with_capacity(total);
    let last = stages.len() - 1;
    for j in 0..total {
        let step = run.first + (j / run.m) as u64;
        let (mut x, target) = task.batch(step, j % run.m, run.batch);
        for (k, s) in stages.iter_mut().enumerate() {
            load(s, &made[k][run.versions[k][j] as usize]);
            x = s.forward(j, x, (k == last).then_some(&target))?;
        }
        losses.push(x.values()?[0]);
        let mut g = None;
        for (k, s) in stages.iter_mut().enumerate().rev() {
            load(s, &made[k][run.versions[k][j] as usize]);
            g = Some(s.backward(j, g)?);
        }
        for (k, versions) in made.iter_mut().enumerate() {
            let v = run.versions[k][j] as usize;
            if last_use[k][v] == j && v + 1 < versions.len() {
                versions[v] = Vec::new();
            }
        }
        if (j + 1) % run.every == 0 {
            for (k, (s, o)) in stages.iter_mut().zip(optimizers.iter_mut()).enumerate() {
                let versions = &mut made[k];
                load(s, versions.last().expect("version 0 is made first"));
                o.update(s.params_and_grads_mut())?;
                s.zero_grad()?;
                // The version before stays only while a micro-batch still to come uses it.
                let before = versions.len() - 1;
                if last_use[k][before] <= j {
                    versions[before] = Vec::new();
                }
                versions.push(s.params().into_iter().cloned().collect());
            }
        }
    }
    for (s, versions) in stages.iter_mut().zip(&made) {
        load(s, versions.last().expect("version 0 is made first"));
    }
    Ok(losses)
}

/// Makes `stage`'s parameters `version`.
fn load(stage: &mut Stage, version: &[Tensor]) {
    for ((p, _), v) in stage.params_and_grads_mut().into_iter().zip(version) {
        *p = v.clone();
    }
}
