//! Asynchronous training (`run --async pipedream|2bw`): one stream of every step's
//! micro-batches with no flush, each stage updating inside it, each micro-batch's backward on
//! the weight version its forward used. The pipelined run ends with the parameters and losses
//! of the sequential stale-weight reference, bit for bit (`stale_run`, the semantics in
//! `stages/src/stale_reference.rs`), and its held bytes — stashed weight versions included —
//! equal the prediction.

mod common;

use common::{deep_tiny, exec, model_of};
use pipesched::exec::Transport;
use pipesched::model::Model;
use pipesched::schedules::{simulate_updates, with_recompute, Kind, Stats};
use pipesched::workload::{Asynchrony, RunPlan};
use pipesched_stages::{stale_run, Optimizer, OptimizerSpec, Stage, StaleRun};

const STEPS: usize = 3;

fn bits(tensors: Vec<Vec<pipesched_stages::Tensor>>) -> Vec<Vec<u32>> {
    tensors.iter().flatten().map(|t| t.values().unwrap().iter().map(|v| v.to_bits()).collect()).collect()
}

/// The plan of `kind` streamed over `STEPS` steps of `m`, with recompute planned for `model`.
fn plan(kind: Kind, p: usize, m: usize, model: &Model, asynchrony: Asynchrony) -> pipesched::Result<RunPlan> {
    let stream = kind.generate(p, kind.default_chunks(), STEPS * m)?;
    let stream = with_recompute(&stream, &model.recompute_flags())?;
    RunPlan::stream(stream, STEPS, m, asynchrony)
}

/// The reference on a fresh copy of the model: its losses and final parameters.
fn reference(model: &Model, plan: &RunPlan) -> (Vec<f32>, Vec<Vec<u32>>) {
    let mut stages = Stage::build_all(&model.spec, &model.specs).unwrap();
    let mut optimizers: Vec<Optimizer> =
        stages.iter().map(|s| Optimizer::new(OptimizerSpec::adam(1e-2), s).unwrap()).collect();
    let tables: Vec<&[u32]> = (0..stages.len()).map(|s| plan.updates.versions_of(s)).collect();
    let run = StaleRun {
        first: 0,
        steps: plan.steps,
        m: plan.m,
        batch: model.batch,
        every: plan.updates.every,
        versions: &tables,
    };
    let losses = stale_run(&mut stages, &mut optimizers, &model.task, run).unwrap();
    (losses, bits(stages.iter().map(|s| s.params().into_iter().cloned().collect()).collect()))
}

#[test]
fn pipedream_and_2bw_give_the_stale_weight_references_bits() {
    let mut cases = 0;
    for asynchrony in [Asynchrony::PipeDream, Asynchrony::TwoBuffered] {
        for kind in [Kind::OneFOneB, Kind::ZbH1] {
            for policy in ["none", "full"] {
                for p in [2, 4] {
                    let m = p;
                    let mut model = model_of(deep_tiny(), p, policy);
                    let plan = plan(kind, p, m, &model, asynchrony).unwrap();
                    let case = format!("{asynchrony:?} {} {policy} p={p} m={m}", kind.name());
                    let (want_losses, want_params) = reference(&model, &plan);
                    let out = model.run(&plan, 0, &exec()).unwrap();
                    let per_step: Vec<f32> = want_losses.chunks(m).map(pipesched_stages::mean_loss).collect();
                    assert_eq!(out.losses, per_step, "{case}: losses");
                    assert!(bits(model.params()) == want_params, "{case}: parameters differ from the reference");
                    // Held bytes, stashed versions included: measured = predicted.
                    let costs = model.predicted_bytes(&plan.schedule, &exec().transport).unwrap();
                    let versions = model.version_bytes(plan.schedule.stages(), &exec().transport).unwrap();
                    let predicted = simulate_updates(&plan.schedule, &costs, &plan.updates, &versions).unwrap();
                    let measured = Stats::of(&out.trace).peak_held_bytes;
                    assert_eq!(measured, Stats::of(&predicted).peak_held_bytes, "{case}: held bytes");
                    // The first stage stashes p−1 versions under PipeDream's 1F1B, one under 2BW.
                    if kind == Kind::OneFOneB {
                        let want = if asynchrony == Asynchrony::PipeDream { p as u32 - 1 } else { 1 };
                        assert_eq!(plan.updates.peak_stashed(0), want, "{case}");
                    }
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 16);
}

#[test]
fn stale_weights_train_differently_from_synchronous_steps() {
    // The same data and initial weights: PipeDream's stale forwards give other losses than
    // synchronous steps from the second step on (a test that could not tell them apart would
    // pass a run that ignored the versions).
    let p = 2;
    let mut a = model_of(deep_tiny(), p, "none");
    let mut b = model_of(deep_tiny(), p, "none");
    let step = with_recompute(&Kind::OneFOneB.generate(p, 1, 4).unwrap(), &a.recompute_flags()).unwrap();
    let sync = a.run(&RunPlan::back_to_back(&step, STEPS).unwrap(), 0, &exec()).unwrap();
    let two_bw = b.run(&plan(Kind::OneFOneB, p, 4, &b, Asynchrony::TwoBuffered).unwrap(), 0, &exec()).unwrap();
    // 2BW's first two steps both run on the initial weights; the second differs from synchronous.
    assert_eq!(sync.losses[0], two_bw.losses[0]);
    assert_ne!(sync.losses[1], two_bw.losses[1]);
}

#[test]
fn a_stream_whose_forwards_outrun_the_updates_is_refused() {
    // GPipe streams every forward before any backward: 2BW's second group would need the
    // weights of an update that comes after it.
    let model = model_of(deep_tiny(), 2, "none");
    let e = plan(Kind::GPipe, 2, 2, &model, Asynchrony::TwoBuffered).unwrap_err().to_string();
    assert!(e.contains("needs a barrier between steps"), "{e}");
}

#[test]
fn a_run_after_trained_steps_verifies_from_the_same_optimizer_state() {
    // A run that starts from a trained model (Adam's moments and step count not zero) is checked
    // against a reference that starts from the same optimizer state, not a fresh one.
    let p = 2;
    let mut model = model_of(deep_tiny(), p, "none");
    let step = with_recompute(&Kind::OneFOneB.generate(p, 1, 4).unwrap(), &model.recompute_flags()).unwrap();
    model.run_step(&step, 0, &exec()).unwrap();
    model.optimizer_step(&Transport::InProcess).unwrap();
    let plan = plan(Kind::OneFOneB, p, 4, &model, Asynchrony::PipeDream).unwrap();
    let (params, optimizers) = (model.params(), model.optimizers().unwrap());
    let out = model.run(&plan, 1, &exec()).unwrap();
    let v = model.verify_run((&params, optimizers), &plan, 1, &out.losses).unwrap();
    assert!(v.bitwise, "{v:?}");
}
