//! Shared set-up of the end-to-end tests that train real models: a `tiny`-sized model deep
//! enough to split into 8 stages, with dropout on, and the schedules with recompute planned.

#![allow(dead_code)]

pub mod cli;

use std::time::Duration;

use pipesched::exec::{ExecOptions, Transport};
use pipesched::model::{Model, ModelOptions};
use pipesched_schedules::{simulate, with_recompute, Kind, Schedule, Stats};
use pipesched_stages::{Device, ModelSpec, OptimizerSpec, Partition, Policies};

/// The `tiny` preset with 6 residual blocks (9 layers), dropout on.
pub fn deep_tiny() -> ModelSpec {
    let spec = ModelSpec::tiny().with_mlp(|s| s.blocks = 6).unwrap();
    assert!(spec.dropout > 0.0);
    spec
}

/// `deep_tiny` split into `stages` stages under `policy`, trained with Adam.
pub fn model(stages: usize, policy: &str) -> Model {
    model_of(deep_tiny(), stages, policy)
}

/// `spec` split into `stages` stages under `policy`, trained with Adam.
pub fn model_of(spec: ModelSpec, stages: usize, policy: &str) -> Model {
    model_on(spec, stages, policy, Device::Cpu)
}

/// `model_of` with every stage on `device`.
pub fn model_on(spec: ModelSpec, stages: usize, policy: &str, device: Device) -> Model {
    let opts = ModelOptions {
        stages,
        partition: Partition::Even,
        policies: policy.parse::<Policies>().unwrap(),
        optimizer: OptimizerSpec::adam(1e-2),
        batch: spec.batch,
        data_seed: 11,
        corpus: None,
        devices: vec![device; stages],
        held: None,
        init: None,
    };
    Model::build(spec, &opts).unwrap()
}

/// The schedule, with `R` before the backward of every stage whose policy drops activations.
pub fn schedule(kind: Kind, p: usize, m: usize, model: &Model) -> Schedule {
    let s = kind.generate(p, kind.default_chunks(), m).unwrap();
    with_recompute(&s, &model.recompute_flags()).unwrap()
}

/// Options with a generous timeout: tests never wait on the clock.
pub fn exec() -> ExecOptions {
    ExecOptions { timeout: Duration::from_secs(120), ..Default::default() }
}

/// The m values tested at p: p and 2p+1, where the schedule allows them.
pub fn microbatches(kind: Kind, p: usize) -> Vec<usize> {
    [p, 2 * p + 1].into_iter().filter(|&m| kind.generate(p, kind.default_chunks(), m).is_ok()).collect()
}

pub const POLICIES: [&str; 5] = ["none", "full", "every:2", "sqrt", "selective"];

/// One case of the contract's grid: a model split for the schedule, and the schedule with
/// recompute planned in.
pub struct Case {
    pub kind: Kind,
    pub policy: &'static str,
    pub p: usize,
    pub m: usize,
    pub model: Model,
    pub schedule: Schedule,
}

/// Every schedule × policy × p in 1..=4 × m in {p, 2p+1} that the schedule allows, on
/// `deep_tiny`.
pub fn cases() -> impl Iterator<Item = Case> {
    cases_of(deep_tiny())
}

/// [`cases`] on `spec`.
pub fn cases_of(spec: ModelSpec) -> impl Iterator<Item = Case> {
    Kind::ALL.into_iter().flat_map(move |kind| {
        let spec = spec.clone();
        POLICIES.into_iter().flat_map(move |policy| {
            let spec = spec.clone();
            (1..=4).flat_map(move |p| {
                let spec = spec.clone();
                microbatches(kind, p).into_iter().map(move |m| {
                    let model = model_of(spec.clone(), p * kind.default_chunks(), policy);
                    let schedule = schedule(kind, p, m, &model);
                    Case { kind, policy, p, m, model, schedule }
                })
            })
        })
    })
}

/// `optimal:BYTES` at three budgets for `spec` in `stages` stages: the least every stage
/// takes (the largest of the stages' least budgets), 1.5 times it, and 4 times it.
pub fn optimal_budgets(spec: &ModelSpec, stages: usize) -> Vec<u64> {
    let probe = model_of(spec.clone(), stages, "none");
    let least = probe.stages.iter().map(|s| s.stage().optimal_least_budget(probe.batch).unwrap()).max().unwrap();
    vec![least, least + least / 2, 4 * least]
}

/// One `optimal` case: every schedule at p ∈ {1, 2} (m ∈ {p, 2p+1}), `tiny` with 6 blocks and
/// `gpt-tiny` (dropout on in both), at the budgets of [`optimal_budgets`].
pub struct OptimalCase {
    pub kind: Kind,
    pub policy: String,
    pub p: usize,
    pub m: usize,
    pub model: Model,
    pub schedule: Schedule,
}

/// Every [`OptimalCase`].
pub fn optimal_cases() -> impl Iterator<Item = OptimalCase> {
    [deep_tiny(), ModelSpec::gpt_tiny()].into_iter().flat_map(|spec| {
        assert!(spec.dropout > 0.0);
        Kind::ALL.into_iter().flat_map(move |kind| {
            let spec = spec.clone();
            (1..=2).flat_map(move |p| {
                let spec = spec.clone();
                let stages = p * kind.default_chunks();
                optimal_budgets(&spec, stages).into_iter().flat_map(move |budget| {
                    let spec = spec.clone();
                    microbatches(kind, p).into_iter().map(move |m| {
                        let policy = format!("optimal:{budget}B");
                        let model = model_of(spec.clone(), stages, &policy);
                        let schedule = schedule(kind, p, m, &model);
                        OptimalCase { kind, policy, p, m, model, schedule }
                    })
                })
            })
        })
    })
}

/// One step of `model` through `kind` at `p` with `m` micro-batches: the gradients are the
/// sequential reference's bits, and every rank's measured peak of held bytes the predicted one.
pub fn check_step(model: &mut Model, kind: Kind, p: usize, m: usize, case: &str) {
    let s = schedule(kind, p, m, model);
    let before = model.params();
    let step = model.run_step(&s, 0, &exec()).unwrap();
    let v = model.verify(&before, 0, m, step.loss).unwrap();
    assert!(v.bitwise && v.max_grad_diff == 0.0, "{case}: {v:?}");
    let predicted = simulate(&s, &model.predicted_bytes(&s, &Transport::InProcess).unwrap()).unwrap();
    assert_eq!(Stats::of(&step.trace).peak_held_bytes, Stats::of(&predicted).peak_held_bytes, "{case}");
}
