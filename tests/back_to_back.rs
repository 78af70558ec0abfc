//! Steps back to back (`run --no-barrier`): with no barrier between steps, each stage updating
//! its weights after its own last backward of a step, a run trains exactly as the same steps
//! with a barrier do — parameters bitwise equal and the same losses — for every schedule and
//! recompute policy; its measured held bytes equal the prediction; and what cannot run without
//! a barrier is refused before anything starts.

mod common;

use std::process::Command;

use common::{deep_tiny, exec, microbatches, model_of, schedule};
use pipesched::exec::{execute, Transport};
use pipesched::model::Model;
use pipesched::schedules::{back_to_back, simulate, Kind, Schedule, Stats};
use pipesched::workload::{Asynchrony, RunPlan};

const STEPS: usize = 3;

/// Every parameter of every stage, in model order.
fn params(model: &Model) -> Vec<Vec<u32>> {
    model.params().iter().flatten().map(|t| t.values().unwrap().iter().map(|v| v.to_bits()).collect()).collect()
}

/// `STEPS` steps with a barrier: step, then every stage's update.
fn with_barrier(model: &mut Model, step: &Schedule) -> Vec<f32> {
    (0..STEPS)
        .map(|k| {
            let out = model.run_step(step, k as u64, &exec()).unwrap();
            model.optimizer_step(&Transport::InProcess).unwrap();
            out.loss
        })
        .collect()
}

#[test]
fn a_run_without_barriers_trains_as_steps_with_them_bitwise() {
    let mut cases = 0;
    for kind in Kind::ALL {
        for policy in ["none", "full"] {
            let p = 2;
            let m = *microbatches(kind, p).last().unwrap_or_else(|| panic!("{} runs at p={p}", kind.name()));
            let stages = p * kind.default_chunks();
            let mut a = model_of(deep_tiny(), stages, policy);
            let mut b = model_of(deep_tiny(), stages, policy);
            let step = schedule(kind, p, m, &a);
            let losses = with_barrier(&mut a, &step);
            let plan = RunPlan::back_to_back(&step, STEPS).unwrap();
            let run = &plan.schedule;
            let out = b.run(&plan, 0, &exec()).unwrap();
            let case = format!("{} {policy} p={p} m={m}", kind.name());
            cases += 1;
            assert_eq!(out.losses, losses, "{case}: losses");
            assert!(params(&a) == params(&b), "{case}: parameters differ after {STEPS} steps");
            // Held bytes over the whole run: measured = predicted from the stages' accounting.
            let predicted = Stats::of(&simulate(run, &b.predicted_bytes(run, &exec().transport).unwrap()).unwrap());
            assert_eq!(Stats::of(&out.trace).peak_held_bytes, predicted.peak_held_bytes, "{case}: held bytes");
        }
    }
    assert_eq!(cases, 2 * Kind::ALL.len());
}

#[test]
fn the_stages_refuse_a_step_before_their_update_of_the_one_before() {
    // Rank 0 runs step 1's first forward before its last backward of step 0: the stage's weights
    // are not yet updated, and the stage says so instead of training on stale ones.
    let mut model = model_of(deep_tiny(), 1, "none");
    let step = schedule(Kind::GPipe, 1, 2, &model);
    let run = back_to_back(&step, 2).unwrap();
    let mut lanes: Vec<Vec<_>> = run.lanes.iter().map(|l| l.to_vec()).collect();
    let early = lanes[0].iter().position(|a| a.mb() == 2).unwrap();
    let a = lanes[0].remove(early);
    lanes[0].insert(1, a);
    let bad = Schedule::new(&run.name, 1, 1, run.m, run.placement, lanes);
    let e = RunPlan::stream(bad, 2, 2, Asynchrony::None).unwrap_err().to_string();
    assert!(e.contains("needs a barrier between steps"), "{e}");
    // Stages begun for single steps refuse the run's later micro-batches.
    for s in &mut model.stages {
        s.begin_step(&model.task, 0, 2, model.batch).unwrap();
    }
    let e = execute(&run, &mut model.stages, &exec()).unwrap_err().to_string();
    assert!(e.contains("micro-batches 0..2 were begun"), "{e}");
}

fn pipesched(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pipesched")).args(args).output().expect("the binary runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn what_needs_a_barrier_is_refused_before_anything_runs() {
    let base = ["run", "--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "4", "--no-barrier", "--no-compare"];
    for (extra, says) in [
        (&["--steps", "1", "--warmup", "0"][..], "a period needs at least two steps"),
        (&["--validate", "2"][..], "needs the pipeline stopped between steps"),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (ok, out, err) = pipesched(&args);
        assert!(!ok && out.is_empty(), "{args:?} succeeded: {out}");
        assert!(err.starts_with("error:") && err.contains("--no-barrier") && err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn the_cli_reports_the_period_next_to_the_simulated_one() {
    let (ok, out, err) = pipesched(&[
        "run",
        "--model",
        "synthetic:F=1ms,I=1ms,W=0.5ms",
        "-s",
        "zb-h2",
        "-p",
        "2",
        "-m",
        "4",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--no-barrier",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["step_ends_s"].as_array().unwrap().len(), 4);
    assert!(v["period_s"].as_f64().unwrap() > 0.0);
    assert!(v["simulated_period_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["peak_held_bytes"], v["predicted_peak_held_bytes"]);
}

#[test]
fn verify_checks_a_run_against_its_sequential_reference() {
    for mode in [&["--no-barrier"][..], &["--async", "pipedream"][..], &["--async", "2bw"][..]] {
        let mut args =
            vec!["run", "--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "4", "--steps", "3", "--warmup", "0"];
        args.extend(["--recompute", "full", "--no-compare", "--verify", "--json"]);
        args.extend(mode);
        let (ok, out, err) = pipesched(&args);
        assert!(ok, "{mode:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["bitwise"], true, "{mode:?}: {out}");
        assert_eq!(v["max_param_diff"], 0.0, "{mode:?}");
    }
}
