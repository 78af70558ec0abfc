//! The search's best plans measured: each plan's own stages — its partition, micro-batch size
//! and recompute policies — built and profiled side by side as `run` profiles them, and its
//! schedule simulated again under those costs. Per-layer costs composed into stages leave out
//! what a stage costs beyond its layers (handing tensors between layers, a stage's own buffers,
//! the cache a whole stage shares), which weighs most at small micro-batches; a plan's stages
//! measured whole predict its step as `run` will see it.
//!
//! Stage costs depend on the partition, the micro-batch size, the policies and the layout, not
//! on the schedule, so plans that share them (say 1F1B and ZB-H1 on the same split) are
//! profiled once and simulated each. Every set is profiled in a few rounds, the sets taking
//! turns, and each op's cost is its median over the rounds ([`measure`]).
//!
//! Invariant: a measured candidate's held bytes are the stages' own accounting — the bytes the
//! executor's ledger measures; with replicas, the static bytes are the search's, as the stages
//! are built as one pipeline's — and it is kept only if they fit the cap.

use std::ops::Range;

use pipesched_schedules::{with_recompute, CostModel, StageCost, StageCosts};
use pipesched_stages::{OptimizerSpec, Partition, Policies, RecomputePolicy};

use super::candidate::{simulate_step, Candidate};
use crate::exec::Transport;
use crate::workload::{Demand, Devices, Layout, ModelChoice, Workload, WorkloadSpec};
use crate::{Error, Result};

/// A plan re-predicted from its own stages' profile.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The plan, with `makespan`, `bubble` and `peaks` from the measured stages.
    pub plan: Candidate,
    /// Its step time as composed from per-layer costs, before it was measured.
    pub composed: f64,
}

/// How much `measure` profiles.
#[derive(Debug, Clone, Copy)]
pub struct Effort {
    /// Distinct sets of stages profiled, at most.
    pub budget: usize,
    /// Rounds each set is profiled in.
    pub rounds: usize,
    /// Runs of each op a round (after 2 warm-up runs), of which the median is taken.
    pub reps: usize,
}

/// What determines a plan's stage costs.
type StagesKey = (Vec<Range<usize>>, usize, Vec<RecomputePolicy>, Layout);

/// Profiles the stages of the fastest `plans` (in order), at most `effort.budget` distinct sets of
/// stages, on the CPU in this process, and simulates every plan whose stages were measured,
/// under the links of `network` (the latency, bandwidth, host link and time unit the search
/// used): those that still fit `cap`, the chosen one first (see below), then the others fastest
/// first. Each set is profiled `rounds` times, the
/// sets taking turns, each op `reps` times after warm-up a round; an op's cost is its median
/// over the rounds. Taking turns, the sets meet the same moments of a shared host, which
/// compares them fairly; the rounds widen the window a cost is measured over. The least of
/// several noisy predictions is biased low, so when more than one set was measured the chosen
/// plan's set is profiled again, `rounds` more times, and its step is predicted from those
/// rounds alone. `say` is told each set's plan and its seconds profiling.
pub fn measure(
    model: &ModelChoice,
    plans: &[Candidate],
    network: &CostModel,
    effort: Effort,
    cap: u64,
    mut say: impl FnMut(&Candidate, f64),
) -> Result<Vec<Measured>> {
    let Effort { budget, rounds, reps } = effort;
    // Each plan's set of stages, the first `budget` distinct ones.
    let mut keys: Vec<StagesKey> = Vec::new();
    let mut first: Vec<&Candidate> = Vec::new();
    let mut set_of: Vec<Option<usize>> = Vec::with_capacity(plans.len());
    for c in plans {
        let key = (c.ranges.clone(), c.microbatch, c.policies.clone(), c.layout());
        let at = match keys.iter().position(|k| *k == key) {
            Some(i) => Some(i),
            None if keys.len() < budget => {
                keys.push(key);
                first.push(c);
                Some(keys.len() - 1)
            }
            None => None,
        };
        set_of.push(at);
    }
    let mut workloads = first.iter().map(|c| build_stages(model, c)).collect::<Result<Vec<_>>>()?;
    let mut took = vec![0.0; workloads.len()];
    let profile_rounds = |k: usize, w: &mut Box<dyn Workload>, took: &mut [f64]| -> Result<CostModel> {
        let started = std::time::Instant::now();
        let mut got = w.profile(reps)?;
        (got.latency, got.bandwidth, got.host_link) = (network.latency, network.bandwidth, network.host_link);
        got.time_unit.clone_from(&network.time_unit);
        took[k] += started.elapsed().as_secs_f64();
        Ok(got)
    };
    let mut profiles: Vec<Vec<CostModel>> = vec![Vec::new(); workloads.len()];
    for _ in 0..rounds.max(1) {
        for (k, w) in workloads.iter_mut().enumerate() {
            profiles[k].push(profile_rounds(k, w, &mut took)?);
        }
    }
    let costs = profiles.into_iter().map(median).collect::<Result<Vec<_>>>()?;
    let mut out: Vec<(usize, Measured)> = Vec::new();
    for (c, at) in plans.iter().zip(set_of) {
        let Some(k) = at else { continue };
        if let Some(m) = simulated(c, &costs[k], cap)? {
            out.push((k, m));
        }
    }
    let order = |a: &Measured, b: &Measured| {
        a.plan.makespan.total_cmp(&b.plan.makespan).then(a.plan.peak().cmp(&b.plan.peak()))
    };
    out.sort_by(|a, b| order(&a.1, &b.1));
    // The chosen plan's step from rounds of its own (see above).
    if let (true, Some((k, chosen))) = (workloads.len() > 1, out.first_mut()) {
        let fresh = (0..rounds.max(1))
            .map(|_| profile_rounds(*k, &mut workloads[*k], &mut took))
            .collect::<Result<Vec<_>>>()?;
        let original = plans.iter().find(|c| c.same_plan(&chosen.plan)).expect("measured from the plans");
        if let Some(again) = simulated(original, &median(fresh)?, cap)? {
            *chosen = again;
        }
    }
    drop(workloads);
    first.iter().zip(&took).for_each(|(c, s)| say(c, *s));
    Ok(out.into_iter().map(|(_, m)| m).collect())
}

/// `c` simulated under `costs` (with `R` planned from its policies, and its sums over the
/// replicas), if it fits `cap`. The stages were built as one pipeline's, so with replicas the
/// static bytes are the search's (`ReplicaBytes`' rule).
fn simulated(c: &Candidate, costs: &CostModel, cap: u64) -> Result<Option<Measured>> {
    let flags: Vec<bool> = c.policies.iter().map(|p| p.drops()).collect();
    let mut costs = costs.clone();
    if c.dp.sums() {
        costs.static_bytes.clone_from(&c.static_bytes);
    }
    let (step, stats) = simulate_step(&with_recompute(&c.schedule, &flags)?, &costs, c.dp, &c.sum_bytes)?;
    if stats.peak_held_bytes.iter().any(|&b| b > cap) {
        return Ok(None);
    }
    let plan = Candidate {
        makespan: step,
        bubble: stats.bubble_rate,
        peaks: stats.peak_held_bytes,
        static_bytes: costs.static_bytes.clone(),
        ..c.clone()
    };
    Ok(Some(Measured { plan, composed: c.makespan }))
}

/// The rounds' profiles as one: each stage's op times the median over the rounds (the upper
/// middle of an even count), the bytes the first's (every round counts the same bytes).
fn median(rounds: Vec<CostModel>) -> Result<CostModel> {
    let mut rounds = rounds.into_iter();
    let Some(mut out) = rounds.next() else {
        return Err(Error::Config("no profile to take the median of".into()));
    };
    let rest: Vec<CostModel> = rounds.collect();
    let StageCosts::Stages(stages) = &mut out.costs else { return Ok(out) };
    let middle = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    for (s, stage) in stages.iter_mut().enumerate() {
        let at = |pick: &dyn Fn(&StageCost) -> f64| {
            let mut xs = vec![pick(stage)];
            for r in &rest {
                if let StageCosts::Stages(other) = &r.costs {
                    xs.extend(other.get(s).map(pick));
                }
            }
            middle(xs)
        };
        let (f, i, w) = (at(&|c| c.f), at(&|c| c.i), at(&|c| c.w));
        let r = stage.r.map(|_| at(&|c| c.r.unwrap_or(0.0)));
        (stage.f, stage.i, stage.w, stage.r) = (f, i, w, r);
    }
    Ok(out)
}

/// The optimizer `plan` counts the static bytes of: Adam, as `run --plan` trains.
pub fn optimizer() -> OptimizerSpec {
    OptimizerSpec::adam(3e-4)
}

/// How `plan` builds stages to profile: `model` split by `partition`, micro-batches of
/// `microbatch` samples, on the CPU, with [`optimizer`], from seed 0.
pub fn stages_spec(model: &ModelChoice, partition: Partition, microbatch: usize) -> WorkloadSpec {
    WorkloadSpec {
        model: model.clone(),
        partition,
        batch: Some(microbatch),
        data: None,
        optimizer: optimizer(),
        seed: 0,
        devices: Devices::Cpu,
        init: None,
        loss_scale: None,
    }
}

/// `c`'s stages, built on the CPU in this process to be profiled side by side, rank by rank.
fn build_stages(model: &ModelChoice, c: &Candidate) -> Result<Box<dyn Workload>> {
    if model.is_synthetic() {
        return Err(Error::Usage("synthetic stages have no layers to plan with; give a real model".into()));
    }
    let spec = stages_spec(model, Partition::Explicit(c.ranges.iter().map(|r| r.len()).collect()), c.microbatch);
    let layout = c.layout();
    spec.build(&layout, &Policies(c.policies.clone()), &Demand::profiling(layout.stages()), &Transport::InProcess)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(times: &[(f64, f64, f64, Option<f64>)]) -> CostModel {
        let stages =
            times.iter().map(|&(f, i, w, r)| StageCost { r, act_bytes: 100, ..StageCost::times(f, i, w) }).collect();
        CostModel { costs: StageCosts::Stages(stages), ..CostModel::per_rank(1.0, 1.0, 1.0) }
    }

    #[test]
    fn each_op_costs_its_median_over_the_rounds() {
        let rounds = vec![
            profile(&[(3.0, 1.0, 9.0, Some(2.0)), (5.0, 5.0, 5.0, None)]),
            profile(&[(1.0, 2.0, 7.0, Some(6.0)), (4.0, 6.0, 5.0, None)]),
            profile(&[(2.0, 3.0, 8.0, Some(4.0)), (6.0, 4.0, 5.0, None)]),
        ];
        let StageCosts::Stages(m) = median(rounds).unwrap().costs else { panic!("per stage") };
        assert_eq!((m[0].f, m[0].i, m[0].w, m[0].r), (2.0, 2.0, 8.0, Some(4.0)));
        assert_eq!((m[1].f, m[1].i, m[1].w, m[1].r), (5.0, 5.0, 5.0, None));
        assert_eq!(m[0].act_bytes, 100);
        // An even count takes the upper middle; one round is itself.
        let two = vec![profile(&[(1.0, 1.0, 1.0, None)]), profile(&[(3.0, 2.0, 1.0, None)])];
        let StageCosts::Stages(m) = median(two).unwrap().costs else { panic!("per stage") };
        assert_eq!((m[0].f, m[0].i), (3.0, 2.0));
        assert!(median(vec![]).is_err());
    }
}
