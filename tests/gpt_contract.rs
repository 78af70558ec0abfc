//! The correctness contract on a GPT over bytes — embedding, causal multi-head attention with
//! dropout on its probabilities and output, MLP blocks, LM head, token cross-entropy — for every
//! schedule and recompute policy (selective included), p = 1…4, m ∈ {p, 2p+1} where the schedule allows it: one
//! pipelined step gives gradients and a loss bitwise identical to the sequential reference, and
//! each rank's measured peak of held bytes equals the prediction from shapes alone.

mod common;

use common::{cases_of, exec, Case};
use pipesched::exec::Transport;
use pipesched_schedules::{simulate, Stats};
use pipesched_stages::ModelSpec;

/// `gpt-tiny` with three transformer layers (9 layers: enough for interleaved at p = 4).
fn gpt() -> ModelSpec {
    let mut spec = ModelSpec::gpt_tiny();
    let (attention, block) = (spec.layers[1], spec.layers[2]);
    spec.layers.splice(3..3, [attention, block]);
    assert_eq!(spec.num_layers(), 9);
    assert!(spec.dropout > 0.0);
    spec.validate().unwrap();
    spec
}

#[test]
fn every_schedule_and_policy_matches_the_reference_bit_for_bit_with_predicted_peaks() {
    let mut checked = 0;
    for Case { kind, policy, p, m, mut model, schedule } in cases_of(gpt()) {
        let before = model.params();
        let step = model.run_step(&schedule, 0, &exec()).unwrap();
        let v = model.verify(&before, 0, m, step.loss).unwrap();
        assert!(v.bitwise && v.max_grad_diff == 0.0, "{kind} {policy} p={p} m={m}: {v:?}");
        let predicted = simulate(&schedule, &model.predicted_bytes(&schedule, &Transport::InProcess).unwrap()).unwrap();
        assert_eq!(
            Stats::of(&step.trace).peak_held_bytes,
            Stats::of(&predicted).peak_held_bytes,
            "{kind} {policy} p={p} m={m}"
        );
        checked += 1;
    }
    // 11 schedules × 5 policies × 4 values of p, minus what interleaved, ZB-H2, interleaved-zb
    // and DualPipeV refuse.
    assert_eq!(checked, 5 * (8 + 8 + 5 + 8 + 4 + 8 + 8 + 5 + 8 + 8 + 4));
}

#[test]
fn a_gpt_learns_the_generated_text() {
    // 30 Adam steps of gpt-tiny on the generated corpus take the loss well below ln 256.
    let mut model = common::model_of(ModelSpec::gpt_tiny(), 2, "none");
    let s = common::schedule(pipesched_schedules::Kind::OneFOneB, 2, 2, &model);
    let mut losses = Vec::new();
    for step in 0..30 {
        losses.push(model.run_step(&s, step, &exec()).unwrap().loss);
        model.optimizer_step(&Transport::InProcess).unwrap();
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!((first - 256f32.ln()).abs() < 0.3, "starts near ln 256: {first}");
    assert!(last < first - 1.0, "{losses:?}");
}
