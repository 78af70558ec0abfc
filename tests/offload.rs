//! Activation offload through the executor: gradients bitwise equal to the sequential reference
//! with offload planned in, device and host bytes measured equal to predicted, the device peak
//! falling by exactly what is offloaded, and bad input refused with a clear error.

mod common;

use std::num::NonZeroUsize;
use std::process::Command;

use common::{exec, model, schedule};
use pipesched::exec::Transport;
use pipesched::model::Model;
use pipesched_schedules::{simulate, with_offload, Kind, Offload, Schedule, StageCosts, Stats, Trace};

/// Runs one step of `s` on `model`: the measured trace, and the prediction from the stages' bytes.
fn step(model: &mut Model, s: &Schedule) -> (Trace, Trace) {
    let before = model.params();
    let run = model.run_step(s, 0, &exec()).unwrap();
    let v = model.verify(&before, 0, s.m, run.loss).unwrap();
    assert!(v.bitwise, "{}: {v:?}", s.name);
    let predicted = simulate(s, &model.predicted_bytes(s, &Transport::InProcess).unwrap()).unwrap();
    (run.trace, predicted)
}

fn host_peaks(t: &Trace) -> Vec<u64> {
    t.ranks.iter().map(|r| r.peak_host_bytes()).collect()
}

#[test]
fn offloaded_steps_match_the_reference_bit_for_bit_and_their_predicted_bytes() {
    let every2 = Offload::Every(NonZeroUsize::new(2).unwrap());
    let mut checked = 0;
    for kind in [Kind::OneFOneB, Kind::GPipe, Kind::ZbH1, Kind::Interleaved] {
        for policy in ["none", "full", "selective"] {
            for plan in [Offload::All, every2.clone(), Offload::Stages(vec![0])] {
                let p = 2;
                let mut model = model(p * kind.default_chunks(), policy);
                let s = with_offload(&schedule(kind, p, 4, &model), &plan).unwrap();
                let (measured, predicted) = step(&mut model, &s);
                let case = format!("{kind} {policy} --offload {plan}");
                assert_eq!(Stats::of(&measured).peak_held_bytes, Stats::of(&predicted).peak_held_bytes, "{case}");
                assert_eq!(host_peaks(&measured), host_peaks(&predicted), "{case}");
                assert!(host_peaks(&measured)[0] > 0, "{case}");
                // Everything came back: the host holds nothing after the step.
                for r in &measured.ranks {
                    assert_eq!(r.host.last().map_or(0, |s| s.bytes), 0, "{case}");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * 3 * 3);
}

/// Mixed precision keeps 16-bit activations: offload copies their bits to the host and back,
/// counted at two bytes each, and the step stays bitwise the reference's.
#[test]
fn offload_moves_sixteen_bit_activations_bit_for_bit() {
    for precision in [pipesched_stages::Precision::MixedBf16, pipesched_stages::Precision::MixedF16] {
        for kind in [Kind::OneFOneB, Kind::ZbH1] {
            let spec = pipesched_stages::ModelSpec { precision, ..common::deep_tiny() };
            let mut model = common::model_of(spec, 2, "none");
            let s = with_offload(&schedule(kind, 2, 4, &model), &Offload::All).unwrap();
            let (measured, predicted) = step(&mut model, &s);
            let case = format!("{precision} {kind}");
            assert_eq!(Stats::of(&measured).peak_held_bytes, Stats::of(&predicted).peak_held_bytes, "{case}");
            assert_eq!(host_peaks(&measured), host_peaks(&predicted), "{case}");
            assert!(host_peaks(&measured)[0] > 0, "{case}");
        }
    }
}

#[test]
fn the_device_peak_falls_by_exactly_the_offloaded_microbatches() {
    let (p, m) = (4, 8);
    // Under 1F1B rank r holds p − r micro-batches at its peak; GPipe holds all m.
    for (kind, held) in [(Kind::OneFOneB, [4u64, 3, 2, 1]), (Kind::GPipe, [m as u64; 4])] {
        let mut plain_model = model(p, "none");
        let plain = schedule(kind, p, m, &plain_model);
        let (plain_measured, _) = step(&mut plain_model, &plain);
        let mut model = model(p, "none");
        let s = with_offload(&plain, &Offload::All).unwrap();
        let (measured, predicted) = step(&mut model, &s);
        let costs = model.predicted_bytes(&s, &Transport::InProcess).unwrap();
        let StageCosts::Stages(stages) = &costs.costs else { unreachable!() };
        let (before, after) = (Stats::of(&plain_measured).peak_held_bytes, Stats::of(&measured).peak_held_bytes);
        for r in 0..p {
            let (statics, act) = (costs.static_bytes[r], stages[r].act_bytes);
            assert_eq!(before[r], statics + held[r] * act, "{kind} rank {r} without offload");
            // One micro-batch at a time is on the device: the rest waits on the host.
            assert_eq!(after[r], statics + act, "{kind} rank {r} with offload");
            assert_eq!(before[r] - after[r], (held[r] - 1) * act, "{kind} rank {r}");
            assert_eq!(host_peaks(&measured)[r], held[r] * act, "{kind} rank {r} host");
        }
        assert_eq!(after, Stats::of(&predicted).peak_held_bytes, "{kind}");
        assert_eq!(host_peaks(&measured), host_peaks(&predicted), "{kind}");
    }
}

fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pipesched")).args(args).output().expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked") && err.starts_with("error:"), "{args:?}: {err}");
    err
}

#[test]
fn offload_without_a_host_bandwidth_is_refused_by_simulate() {
    let e = fails(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--mem", "A=1MiB", "--offload", "all"]);
    assert!(e.contains("no host link") && e.contains("--host-bandwidth"), "{e}");
}

#[test]
fn a_host_bandwidth_of_zero_or_less_is_refused() {
    for bw in ["0", "0B/s", "-1GiB/s"] {
        let e = fails(&[
            "simulate",
            "-s",
            "1f1b",
            "-p",
            "2",
            "-m",
            "4",
            "--mem",
            "A=1MiB",
            "--offload",
            "all",
            &format!("--host-bandwidth={bw}"),
        ]);
        assert!(e.contains("--host-bandwidth") && (e.contains("never finish") || e.contains("negative")), "{bw}: {e}");
    }
}

#[test]
fn offload_on_a_stage_that_keeps_nothing_is_refused() {
    // Simulated: no act bytes.
    let e = fails(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--offload", "1", "--host-bandwidth", "1MiB"]);
    assert!(e.contains("stage 1 offloads, but keeps nothing"), "{e}");
    // Run: synthetic stages keeping nothing.
    let e = fails(&[
        "run",
        "--model",
        "synthetic:F=100us,I=100us,W=100us,mem=0",
        "-s",
        "1f1b",
        "-p",
        "2",
        "-m",
        "2",
        "--offload",
        "all",
        "--no-compare",
    ]);
    assert!(e.contains("keeps nothing"), "{e}");
}

#[test]
fn offload_names_only_stages_that_exist() {
    let e = fails(&[
        "simulate",
        "-s",
        "1f1b",
        "-p",
        "2",
        "-m",
        "4",
        "--mem",
        "A=1MiB",
        "--offload",
        "5",
        "--host-bandwidth",
        "1MiB",
    ]);
    assert!(e.contains("names stage 5, but the schedule has 2 stages"), "{e}");
}

#[test]
fn run_reports_host_bytes_measured_equal_to_predicted() {
    let out = Command::new(env!("CARGO_BIN_EXE_pipesched"))
        .args(["run", "--model", "tiny", "-s", "zb-h1", "-p", "2", "-m", "4", "--steps", "1"])
        .args(["--offload", "all", "--host-bandwidth", "4GiB/s", "--verify", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bitwise"], true);
    assert_eq!(v["peak_host_bytes"], v["predicted_peak_host_bytes"]);
    assert_eq!(v["peak_held_bytes"], v["predicted_peak_held_bytes"]);
    assert!(v["peak_host_bytes"][0].as_u64().unwrap() > 0);
    // 4 GiB/s in the profiled model's unit, bytes per ms.
    assert_eq!(v["host_link"]["bandwidth"], serde_json::json!(4.0 * 1073741824.0 / 1e3));
}
