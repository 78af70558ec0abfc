//! Mixed-precision training (`mixed-bf16`, `mixed-f16`): the bitwise contract and the byte
//! ledger hold as in `f32` — pipelined gradients equal the sequential reference's bit for bit,
//! measured peaks equal predicted ones — with parameters, activations and gradients stored in 16
//! bits; the model states are counted by class; dynamic loss scaling skips an overflowing step
//! (leaving the parameters as they were) and halves the scale, and doubles it after its growth
//! interval of clean steps.

mod common;

use common::cli::{pipesched_line, report};
use common::{deep_tiny, exec, model_of, optimal_budgets, schedule};
use pipesched::exec::Transport;
use pipesched::model::Model;
use pipesched_schedules::Kind;
use pipesched_stages::{
    Device, Dtype, Format, LossScale, ModelSpec, ModelStates, Optimizer, OptimizerSpec, ParamCount, Precision,
    ScaleVerdict,
};

const MIXED: [Precision; 2] = [Precision::MixedBf16, Precision::MixedF16];

fn in_precision(spec: ModelSpec, precision: Precision) -> ModelSpec {
    ModelSpec { precision, ..spec }
}

/// One step through `kind` at `p`: the gradients are the reference's bits, the measured peaks
/// the predicted ones, and the parameters and gradients are stored in 16 bits.
fn check_step(model: &mut Model, kind: Kind, p: usize, m: usize, case: &str) {
    common::check_step(model, kind, p, m, case);
    let format = model.spec.precision.storage().unwrap();
    for st in &model.stages {
        for t in st.stage().params().into_iter().chain(st.stage().grads()) {
            assert_eq!((t.dtype(), t.bytes()), (Dtype::Stored(format), 2 * t.len() as u64), "{case}");
        }
    }
}

#[test]
fn mixed_precision_keeps_the_contract_and_the_ledger_under_every_schedule() {
    let mut checked = 0;
    for precision in MIXED {
        for spec in [deep_tiny(), ModelSpec::gpt_tiny()] {
            let spec = in_precision(spec, precision);
            for kind in Kind::ALL {
                for policy in ["none", "full", "every:2", "selective"] {
                    let p = 2;
                    for m in common::microbatches(kind, p) {
                        let mut model = model_of(spec.clone(), p * kind.default_chunks(), policy);
                        check_step(&mut model, kind, p, m, &format!("{precision} {} {kind} {policy} m={m}", spec.name));
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked >= 2 * 2 * 4 * 11, "{checked}");
}

#[test]
fn mixed_precision_optimal_checkpointing_keeps_the_contract_and_the_ledger() {
    for precision in MIXED {
        for spec in [deep_tiny(), ModelSpec::gpt_tiny()] {
            let spec = in_precision(spec, precision);
            for kind in [Kind::OneFOneB, Kind::ZbH1] {
                let stages = 2 * kind.default_chunks();
                for budget in optimal_budgets(&spec, stages) {
                    let policy = format!("optimal:{budget}B");
                    let mut model = model_of(spec.clone(), stages, &policy);
                    check_step(&mut model, kind, 2, 5, &format!("{precision} {} {kind} {policy}", spec.name));
                }
            }
        }
    }
}

#[test]
fn model_states_are_counted_by_class_in_every_precision() {
    for precision in [Precision::F32, Precision::Bf16, Precision::MixedBf16, Precision::MixedF16] {
        let spec = in_precision(ModelSpec::tiny(), precision);
        let model = model_of(spec.clone(), 2, "none");
        let adam = OptimizerSpec::adam(1e-2);
        for (st, opt) in model.stages.iter().zip(model.optimizers().unwrap()) {
            let stage = st.stage();
            let n = stage.param_count() as u64;
            let stored = if precision.is_mixed() { 2 } else { 4 };
            let master = if precision.is_mixed() { 4 * n } else { 0 };
            assert_eq!((stage.param_bytes(), stage.grad_bytes()), (stored * n, stored * n), "{precision}");
            assert_eq!((opt.master_bytes(), opt.state_bytes()), (master, master + 8 * n), "{precision}");
            assert_eq!(stage.static_bytes(&adam), 16 * n, "{precision}: Adam is 16 bytes a parameter");
            let classes = ModelStates::of(ParamCount::trained(n), &adam, precision).unwrap();
            assert_eq!(classes, ModelStates { params: stored * n, grads: stored * n, master, optimizer: 8 * n });
        }
    }
    // tiny, p = 2 (the stages of 2 and 2 layers): 16 bytes of model states a parameter.
    let whole = model_of(in_precision(ModelSpec::tiny(), Precision::MixedBf16), 1, "none");
    let n = whole.stages[0].stage().param_count() as u64;
    assert_eq!(whole.stages[0].stage().param_bytes(), 2 * n);
}

#[test]
fn activations_are_stored_in_16_bits_and_the_loss_state_in_f32() {
    // An MLP keeps no exact values but the loss's: per micro-batch, mixed precision keeps half
    // of f32's layer bytes and all of the loss's (probabilities and targets stay f32).
    for policy in ["none", "full"] {
        let spec = ModelSpec::tiny();
        let (rows, out) = (spec.batch, spec.output_width());
        let specs32 = spec.stage_specs(1, &pipesched_stages::Partition::Even, &policy.parse().unwrap()).unwrap();
        let f32_ = specs32[0].predicted_bytes(&spec, rows);
        let mixed = in_precision(spec.clone(), Precision::MixedBf16);
        let b = specs32[0].predicted_bytes(&mixed, rows);
        let loss = spec.loss.saved_floats(rows, out) as u64 * 4;
        let target = spec.loss.target_width(out) as u64 * rows as u64 * 4;
        // What `none` keeps: half of f32's layer bytes, all of the loss's.
        let everything = f32_.act_bytes + f32_.recompute_bytes;
        assert_eq!(b.act_bytes + b.recompute_bytes, (everything - loss) / 2 + loss, "{policy}");
        if policy == "full" {
            // full keeps the model input and the target: f32 data, as in f32.
            assert_eq!(b.act_bytes, f32_.act_bytes);
            assert_eq!(b.act_bytes, (spec.input_width() * rows) as u64 * 4 + target);
        }
        assert_eq!(b.w_bytes, f32_.w_bytes / 2);
    }
}

/// Largest `|a − b| / max|b|` over the gradient tensors of two models.
fn relative_grad_diff(a: &Model, b: &Model) -> f32 {
    let mut worst = 0.0f32;
    for (x, y) in a.stages.iter().zip(&b.stages) {
        for (g, h) in x.stage().grads().into_iter().zip(y.stage().grads()) {
            let (g, h) = (g.values().unwrap(), h.values().unwrap());
            let scale = h.iter().fold(0.0f32, |s, v| s.max(v.abs())).max(f32::MIN_POSITIVE);
            let d = g.iter().zip(&h).fold(0.0f32, |s, (p, q)| s.max((p - q).abs()));
            worst = worst.max(d / scale);
        }
    }
    worst
}

#[test]
fn one_mixed_precision_step_stays_near_f32() {
    let (kind, p, m) = (Kind::OneFOneB, 2, 4);
    for spec in [deep_tiny(), ModelSpec::gpt_tiny()] {
        let mut exact = model_of(spec.clone(), p, "none");
        exact.run_step(&schedule(kind, p, m, &exact), 0, &exec()).unwrap();
        for (precision, bound) in [(Precision::MixedBf16, 0.2), (Precision::MixedF16, 0.05)] {
            let mut model = model_of(in_precision(spec.clone(), precision), p, "none");
            model.run_step(&schedule(kind, p, m, &model), 0, &exec()).unwrap();
            // Gradients of the scaled loss, divided back for the comparison.
            let scale = model.loss_scale().scale();
            let mut worst = relative_grad_diff(&model, &exact);
            if scale != 1.0 {
                let unscaled = |t: &pipesched_stages::Tensor| t.values().unwrap().iter().map(|v| v / scale).collect();
                worst = 0.0;
                for (x, y) in model.stages.iter().zip(&exact.stages) {
                    for (g, h) in x.stage().grads().into_iter().zip(y.stage().grads()) {
                        let g: Vec<f32> = unscaled(g);
                        let h = h.values().unwrap();
                        let top = h.iter().fold(0.0f32, |s, v| s.max(v.abs())).max(f32::MIN_POSITIVE);
                        worst = worst.max(g.iter().zip(&h).fold(0.0f32, |s, (a, b)| s.max((a - b).abs())) / top);
                    }
                }
            }
            assert!(worst > 0.0 && worst < bound, "{precision} {}: {worst}", spec.name);
            eprintln!("{precision} {}: max relative gradient difference from f32 {worst:.2e}", spec.name);
        }
    }
}

fn params_bits(model: &Model) -> Vec<Vec<f32>> {
    model.params().iter().flatten().map(|t| t.values().unwrap()).collect()
}

#[test]
fn an_overflowing_f16_step_is_skipped_and_the_scale_halved() {
    let spec = in_precision(deep_tiny(), Precision::MixedF16);
    let (kind, p, m) = (Kind::OneFOneB, 2, 4);
    let mut model = model_of(spec, p, "none");
    let s = schedule(kind, p, m, &model);
    // 2¹²⁰ times the loss's gradients is far past f16's 65504.
    let huge = 2f32.powi(120);
    model.set_loss_scale(LossScale::dynamic(huge, 2000).unwrap()).unwrap();
    let before = params_bits(&model);
    let opt_before: Vec<Optimizer> = model.optimizers().unwrap();
    model.run_step(&s, 0, &exec()).unwrap();
    assert!(model.stages.iter().any(|st| st.stage().grads_overflowed().unwrap()));
    model.optimizer_step(&Transport::InProcess).unwrap();
    assert_eq!(model.last_verdict(), Some(ScaleVerdict::Skipped));
    let after = params_bits(&model);
    assert!(before.iter().flatten().zip(after.iter().flatten()).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!((model.loss_scale().scale(), model.loss_scale().skipped()), (huge / 2.0, 1));
    assert!(model.stages.iter().all(|st| st.stage().loss_scale() == huge / 2.0));
    // The optimizer state did not move either: the next clean step equals a first step.
    let states: Vec<u64> = model.optimizers().unwrap().iter().map(Optimizer::state_bytes).collect();
    assert_eq!(states, opt_before.iter().map(Optimizer::state_bytes).collect::<Vec<_>>());
    model.set_loss_scale(LossScale::dynamic(1024.0, 2000).unwrap()).unwrap();
    model.run_step(&s, 1, &exec()).unwrap();
    assert!(!model.stages.iter().any(|st| st.stage().grads_overflowed().unwrap()));
    model.optimizer_step(&Transport::InProcess).unwrap();
    assert_eq!(model.last_verdict(), Some(ScaleVerdict::Applied));
    assert_ne!(params_bits(&model), before);
}

#[test]
fn the_scale_doubles_after_its_growth_interval_of_clean_steps() {
    let spec = in_precision(deep_tiny(), Precision::MixedF16);
    let (kind, p, m) = (Kind::OneFOneB, 2, 4);
    let mut model = model_of(spec, p, "none");
    let s = schedule(kind, p, m, &model);
    model.set_loss_scale(LossScale::dynamic(256.0, 3).unwrap()).unwrap();
    let mut scales = vec![];
    for step in 0..7 {
        model.run_step(&s, step, &exec()).unwrap();
        model.optimizer_step(&Transport::InProcess).unwrap();
        assert_eq!(model.last_verdict(), Some(ScaleVerdict::Applied));
        scales.push(model.loss_scale().scale());
    }
    assert_eq!(scales, [256.0, 256.0, 512.0, 512.0, 512.0, 1024.0, 1024.0]);
}

#[test]
fn scaling_is_exact_so_the_step_does_not_depend_on_the_scale() {
    // The same step at scales 2⁴ and 2¹⁰ updates the parameters to the same bits (no gradient
    // overflows or underflows at either on this model).
    let spec = in_precision(deep_tiny(), Precision::MixedF16);
    let (kind, p, m) = (Kind::OneFOneB, 2, 4);
    let mut out = vec![];
    for scale in [16.0, 1024.0] {
        let mut model = model_of(spec.clone(), p, "none");
        let s = schedule(kind, p, m, &model);
        model.set_loss_scale(LossScale::dynamic(scale, 2000).unwrap()).unwrap();
        model.run_step(&s, 0, &exec()).unwrap();
        model.optimizer_step(&Transport::InProcess).unwrap();
        out.push(params_bits(&model));
    }
    let same = out[0].iter().flatten().zip(out[1].iter().flatten()).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
    let all = out[0].iter().map(Vec::len).sum::<usize>();
    // f16 gradients round relative to their magnitude, so most, not all, agree.
    assert!(same * 10 >= all * 9, "{same} of {all}");
}

#[test]
fn what_mixed_precision_cannot_do_is_an_error() {
    let spec = in_precision(ModelSpec::tiny(), Precision::MixedBf16);
    let specs = spec.stage_specs(1, &pipesched_stages::Partition::Even, &"none".parse().unwrap()).unwrap();
    let gpu = pipesched_stages::StageSpec { device: Device::Cuda(0), ..specs[0].clone() };
    let e = pipesched_stages::Stage::new(&spec, &gpu).unwrap_err().to_string();
    assert!(e.contains("CPU stages only"), "{e}");
    assert!("mixed-f8".parse::<Precision>().unwrap_err().to_string().contains("mixed-bf16 or mixed-f16"));
    assert_eq!(Precision::MixedF16.storage(), Some(Format::F16));
}

/// `run` says which updates dynamic loss scaling skipped and the scale it ended at: from 2²⁰ a
/// gradient overflows f16, so steps are skipped, each halving the scale (the 2,000-step growth
/// interval is never reached, so the scale ends at exactly 2²⁰ over 2 per skip); from 2³⁰ the
/// first two steps are both skipped.
#[test]
fn run_reports_the_skipped_updates_and_the_final_scale() {
    let run = "run --model tiny -s 1f1b -p 2 -m 4 --warmup 0 --precision mixed-f16 --no-compare";
    let r = report(run, &["--steps", "12", "--loss-scale", "1048576", "--json"]);
    let skipped = r["skipped_steps"].as_array().unwrap().len();
    assert!((1..12).contains(&skipped), "{r}");
    assert_eq!(r["loss_scale"].as_f64(), Some(2f64.powi(20 - skipped as i32)), "{r}");
    // The text report says the same.
    let text = pipesched_line(run, &["--steps", "2", "--loss-scale", "1073741824"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("(update skipped: a gradient overflowed in f16; loss scale halved to 2^29)"), "{stdout}");
    assert!(stdout.contains("dynamic loss scaling: 2 of 2 updates skipped"), "{stdout}");
}

#[test]
fn f16_without_loss_scaling_is_warned_and_bad_scales_are_errors() {
    let with =
        |extra: &[&str]| pipesched_line("run --model tiny -s 1f1b -p 2 -m 2 --steps 1 --warmup 0 --no-compare", extra);
    for extra in [&["--precision", "f16"][..], &["--precision", "mixed-f16", "--loss-scale", "none"]] {
        let out = with(extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.starts_with("warning:") && err.contains("65504"), "{extra:?}: {err}");
    }
    let quiet = with(&["--precision", "mixed-f16"]);
    assert!(quiet.status.success() && quiet.stderr.is_empty(), "{}", String::from_utf8_lossy(&quiet.stderr));
    let bad = with(&["--precision", "mixed-f16", "--loss-scale", "3"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a positive power of two"));
    let bad = with(&["--loss-scale", "4"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("trains in f32, which needs none"), "{err}");
}
