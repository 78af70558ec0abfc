//! The correctness contract: for every schedule and recompute policy, one pipelined step gives
//! gradients and a loss bitwise identical to the sequential reference — dropout on, p = 1…4,
//! m ∈ {p, 2p+1} where the schedule allows it — and whole training runs give identical loss
//! curves across schedules.

mod common;

use common::{cases, exec, model, model_of, schedule, Case};
use pipesched_schedules::Kind;

#[test]
fn every_schedule_and_policy_matches_the_sequential_reference_bit_for_bit() {
    let mut checked = 0;
    for Case { kind, policy, p, m, mut model, schedule } in cases() {
        let before = model.params();
        let step = model.run_step(&schedule, 0, &exec()).unwrap();
        let v = model.verify(&before, 0, m, step.loss).unwrap();
        assert!(v.bitwise, "{kind} {policy} p={p} m={m}: {v:?}");
        assert_eq!(v.max_grad_diff, 0.0, "{kind} {policy} p={p} m={m}");
        checked += 1;
    }
    // 5 schedules × 4 policies × 4 values of p, minus what interleaved and ZB-H2 refuse.
    assert_eq!(checked, 4 * (8 + 8 + 5 + 8 + 4));
}

#[test]
fn loss_curves_of_the_tiny_preset_are_identical_across_schedules_over_20_adam_steps() {
    let (p, m) = (2, 4);
    let mut curves: Vec<(String, Vec<u32>)> = Vec::new();
    for kind in Kind::ALL {
        for policy in ["none", "full"] {
            let mut model = model_of(pipesched_stages::ModelSpec::tiny(), p * kind.default_chunks(), policy);
            let s = schedule(kind, p, m, &model);
            let mut curve = Vec::new();
            for step in 0..20 {
                let out = model.run_step(&s, step, &exec()).unwrap();
                model.optimizer_step().unwrap();
                curve.push(out.loss.to_bits());
            }
            curves.push((format!("{kind}/{policy}"), curve));
        }
    }
    let first = f32::from_bits(curves[0].1[0]);
    let last = f32::from_bits(*curves[0].1.last().unwrap());
    assert!(last < first, "training lowers the loss: {first} → {last}");
    for (name, curve) in &curves[1..] {
        assert_eq!(curve, &curves[0].1, "{name} differs from {}", curves[0].0);
    }
}

#[test]
fn the_check_notices_a_different_gradient() {
    // Guard against a comparison that cannot fail: start the reference from other parameters.
    let mut model = model(2, "none");
    let s = schedule(Kind::OneFOneB, 2, 3, &model);
    let mut before = model.params();
    let step = model.run_step(&s, 0, &exec()).unwrap();
    before[1][0].data_mut()[0] += 1e-3;
    let v = model.verify(&before, 0, 3, step.loss).unwrap();
    assert!(!v.bitwise && v.max_grad_diff > 0.0, "{v:?}");
}
