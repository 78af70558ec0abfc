//! The forward-only pass through the pipeline: its per-micro-batch losses equal the sequential
//! validation walk's bit for bit, its measured peak held bytes per rank equal the prediction
//! from shapes exactly (parameters, plus the input and output of one forward), and a training
//! schedule is refused.

mod common;

use common::{exec, model_of};
use pipesched::exec::Transport;
use pipesched::model::Model;
use pipesched::workload::Layout;
use pipesched_schedules::{forward_only, one_f_one_b, simulate, StageCosts, Stats};
use pipesched_stages::{mean_loss, ModelSpec};

/// The sequential walk of held-out micro-batch `j` through every stage.
fn walk(model: &Model, j: usize) -> f32 {
    let (mut x, target) = model.task.validation(j, model.batch);
    let n = model.stages.len();
    for (k, rs) in model.stages.iter().enumerate() {
        x = rs.stage().evaluate(x, (k + 1 == n).then_some(&target)).unwrap();
    }
    x.values().unwrap()[0]
}

#[test]
fn losses_equal_the_sequential_walk_bit_for_bit() {
    for spec in [ModelSpec::tiny(), ModelSpec::gpt_tiny()] {
        for p in 1..=3 {
            for m in [1, 2, 5] {
                let mut model = model_of(spec.clone(), p, "none");
                let out = model.infer(&forward_only(p, m).unwrap(), &exec()).unwrap();
                let walked: Vec<f32> = (0..m).map(|j| walk(&model, j)).collect();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&out.losses), bits(&walked), "{} p={p} m={m}", spec.name);
                let validation = model.validation_loss(m, &Transport::InProcess, |s| s).unwrap();
                assert_eq!(mean_loss(&out.losses).to_bits(), validation.to_bits(), "{} p={p} m={m}", spec.name);
                assert!(out.losses.iter().all(|l| l.is_finite() && *l > 0.0));
            }
        }
    }
}

#[test]
fn measured_peak_held_bytes_equal_the_prediction_per_rank() {
    for spec in [ModelSpec::tiny(), ModelSpec::gpt_tiny()] {
        for p in 1..=3 {
            let m = 4;
            let mut model = model_of(spec.clone(), p, "none");
            let s = forward_only(p, m).unwrap();
            let measured = model.infer(&s, &exec()).unwrap().trace;
            let costs = model.inference_bytes(&Layout::looped(p, 1)).unwrap();
            let predicted = simulate(&s, &costs).unwrap();
            let (got, want) = (Stats::of(&measured).peak_held_bytes, Stats::of(&predicted).peak_held_bytes);
            assert_eq!(got, want, "{} p={p}", spec.name);
            // By the rule: parameters plus the input and output of one forward, from shapes.
            let StageCosts::Stages(stages) = &costs.costs else { unreachable!() };
            let rows = model.batch as u64;
            for (r, rs) in model.stages.iter().enumerate() {
                let st = rs.stage();
                let out = if r + 1 == p { 4 } else { rows * st.output_width() as u64 * 4 };
                assert_eq!(stages[r].act_bytes, rows * st.input_width() as u64 * 4 + out);
                assert_eq!(got[r], st.param_bytes() + stages[r].act_bytes, "{} p={p} rank {r}", spec.name);
                // Nothing outlives the pass.
                assert_eq!(measured.ranks[r].memory.last().unwrap().held(), st.param_bytes());
            }
        }
    }
}

#[test]
fn a_training_schedule_is_refused() {
    let mut model = model_of(ModelSpec::tiny(), 2, "none");
    let e = model.infer(&one_f_one_b(2, 4).unwrap(), &exec()).err().unwrap().to_string();
    assert!(e.contains("1f1b trains") && e.contains("-s forward"), "{e}");
}

/// `run --validate` runs the pass over the training layout: every placement gives the walk's
/// loss, bit for bit.
#[test]
fn the_pass_over_any_layout_gives_the_validation_loss() {
    use pipesched_schedules::{forward_pass, Placement};
    for (p, v, placement) in [(2, 2, Placement::Loop), (2, 2, Placement::V), (3, 1, Placement::Loop)] {
        let mut model = model_of(ModelSpec::gpt_tiny(), p * v, "none");
        let out = model.infer(&forward_pass(p, v, placement, 8).unwrap(), &exec()).unwrap();
        let walk = model.validation_loss(8, &Transport::InProcess, |s| placement.rank_of(s, p)).unwrap();
        assert_eq!(mean_loss(&out.losses).to_bits(), walk.to_bits(), "p={p} v={v} {placement}");
    }
}
