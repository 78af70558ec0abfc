//! `pipesched memory` end to end: its per-rank numbers are the ones `run` measures (held bytes
//! at the peak, static bytes), exactly; ZeRO-1's sharded state is the MPI run's; GPT-2 XL's
//! model states are 16Ψ; and what it refuses.

use std::process::Command;

use serde_json::Value;

fn pipesched(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pipesched")).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

fn per_rank(report: &Value, key: &str) -> Vec<u64> {
    report["ranks"].as_array().unwrap().iter().map(|r| r[key].as_u64().unwrap()).collect()
}

#[test]
fn the_report_is_what_run_measures() {
    for (model, schedule, p, m, recompute) in [
        ("tiny", "1f1b", "2", "4", "none"),
        ("tiny", "zb-h1", "3", "5", "full"),
        ("tiny", "interleaved", "2", "4", "every:2"),
        ("gpt-tiny", "gpipe", "2", "3", "none"),
        ("gpt-tiny", "1f1b", "2", "4", "selective"),
        ("gpt-tiny", "zb-h2", "3", "6", "full"),
    ] {
        let shape = ["--model", model, "-s", schedule, "-p", p, "-m", m, "--recompute", recompute];
        let report = pipesched(&[&["memory"][..], &shape, &["--json"]].concat());
        let run =
            pipesched(&[&["run"][..], &shape, &["--steps", "1", "--warmup", "0", "--no-compare", "--json"]].concat());
        let case = format!("{model} {schedule} p={p} m={m} {recompute}");
        assert_eq!(per_rank(&report, "peak_held_bytes"), numbers(&run["peak_held_bytes"]), "{case}");
        assert_eq!(per_rank(&report, "model_state_bytes"), numbers(&run["static_bytes"]), "{case}");
        for r in report["ranks"].as_array().unwrap() {
            let [params, grads, opt, states] =
                ["parameter_bytes", "gradient_bytes", "optimizer_bytes", "model_state_bytes"]
                    .map(|k| r[k].as_u64().unwrap());
            // Adam: two state tensors per parameter, all f32.
            assert_eq!((params, grads, opt, states), (params, params, 2 * params, 4 * params), "{case}");
            assert_eq!(params, 4 * r["parameter_count"].as_u64().unwrap(), "{case}");
            let peak = r["peak_held_bytes"].as_u64().unwrap();
            assert_eq!(peak, states + r["activation_peak_bytes"].as_u64().unwrap(), "{case}");
        }
    }
}

#[test]
fn zero_1_keeps_a_slice_of_the_optimizer_state() {
    // As the MPI run measures it (tests/mpi.rs, README): tiny, p = 2, D = 2.
    let shape = ["--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "4", "--json"];
    let whole = pipesched(&[&["memory"][..], &shape].concat());
    let sharded = pipesched(&[&["memory"][..], &shape, &["--dp", "2", "--zero", "1"]].concat());
    assert_eq!(per_rank(&whole, "model_state_bytes"), vec![84096, 41552]);
    assert_eq!(per_rank(&sharded, "model_state_bytes"), vec![63072, 31168]);
    // The whole model's states on replica 0.
    assert_eq!(sharded["model_state_bytes"].as_u64(), Some(63072 + 31168));
    assert_eq!(whole["model_state_bytes"].as_u64(), Some(84096 + 41552));
    // With replicas each stage keeps its sum's buffer, one f32 a parameter, in its held bytes;
    // with one replica there is none.
    assert_eq!(per_rank(&whole, "sum_buffer_bytes"), vec![0, 0]);
    assert_eq!(per_rank(&sharded, "sum_buffer_bytes"), vec![84096 / 4, 41552 / 4]);
    for r in sharded["ranks"].as_array().unwrap() {
        let [states, sums, activations, held] =
            ["model_state_bytes", "sum_buffer_bytes", "activation_peak_bytes", "peak_held_bytes"]
                .map(|k| r[k].as_u64().unwrap());
        assert_eq!(held, states + sums + activations, "{r}");
    }
}

#[test]
fn gpt2_xl_has_sixteen_bytes_of_model_states_per_parameter() {
    let r =
        pipesched(&["memory", "--model", "gpt2-xl", "-s", "1f1b", "-p", "8", "-m", "16", "--batch", "32", "--json"]);
    let psi = 1_638_072_657u64;
    assert_eq!(r["parameter_count"].as_u64(), Some(psi));
    // f32 with Adam: 4Ψ parameters, 4Ψ gradients, 8Ψ moments.
    assert_eq!(r["model_state_bytes"].as_u64(), Some(16 * psi));
    assert_eq!(per_rank(&r, "parameter_count").iter().sum::<u64>(), psi);
    // One transformer layer at s = 1024, b = 32, h = 1600, a = 25: s·b·h·34 + 5·a·s²·b bytes.
    let t = &r["transformer_layer"];
    assert_eq!(t["korthikanti_bytes"].as_u64(), Some(1024 * 32 * 1600 * 34 + 5 * 25 * 1024 * 1024 * 32));
    // Here, per token (f32): attention keeps x̂, y, o, q, k, v (6h), rstd and the a·s
    // probabilities; the block x̂, y (2h), rstd and the MLP's pre- and post-GELU (2f).
    let floats = 6 * 1600 + 1 + 25 * 1024 + 2 * 1600 + 1 + 2 * 6400;
    assert_eq!(t["pipesched_bytes"].as_u64(), Some(4 * 32 * 1024 * floats));
}

#[test]
fn refuses_what_it_cannot_report() {
    for (args, says) in [
        (vec!["memory", "--model", "synthetic:F=1ms", "-s", "1f1b", "-p", "2", "-m", "2"], "synthetic"),
        (vec!["memory", "--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "2", "--zero", "1"], "--dp D with D ≥ 2"),
        (vec!["memory", "--model", "tiny", "-s", "forward", "-p", "2", "-m", "2"], "pipesched infer"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pipesched")).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn gpt2_xl_model_states_by_class_in_f32_and_mixed_precision() {
    let psi = 1_638_072_657u64;
    // f32: 4Ψ + 4Ψ + 8Ψ; mixed: 2Ψ + 2Ψ of 16-bit parameters and gradients, 4Ψ of f32 master
    // weights, 8Ψ of f32 moments — 16Ψ either way.
    for (precision, classes) in
        [("f32", [4, 4, 0, 8]), ("bf16", [4, 4, 0, 8]), ("mixed-bf16", [2, 2, 4, 8]), ("mixed-f16", [2, 2, 4, 8])]
    {
        let r = pipesched(&[
            "memory",
            "--model",
            "gpt2-xl",
            "-s",
            "1f1b",
            "-p",
            "8",
            "-m",
            "16",
            "--batch",
            "32",
            "--precision",
            precision,
            "--json",
        ]);
        assert_eq!(r["precision"].as_str(), Some(precision));
        let sum = |k: &str| per_rank(&r, k).iter().sum::<u64>();
        let got = ["parameter_bytes", "gradient_bytes", "master_bytes", "optimizer_bytes"].map(sum);
        assert_eq!(got, classes.map(|c| c * psi), "{precision}");
        assert_eq!(r["model_state_bytes"].as_u64(), Some(16 * psi), "{precision}");
    }
}

#[test]
fn mixed_precision_reports_what_a_run_measures() {
    for (model, precision) in [("tiny", "mixed-bf16"), ("gpt-tiny", "mixed-f16")] {
        let shape = ["--model", model, "-s", "1f1b", "-p", "2", "-m", "4", "--precision", precision];
        let report = pipesched(&[&["memory"][..], &shape, &["--json"]].concat());
        let run =
            pipesched(&[&["run"][..], &shape, &["--steps", "1", "--warmup", "0", "--no-compare", "--json"]].concat());
        assert_eq!(per_rank(&report, "peak_held_bytes"), numbers(&run["peak_held_bytes"]), "{model} {precision}");
        assert_eq!(per_rank(&report, "model_state_bytes"), numbers(&run["static_bytes"]), "{model} {precision}");
    }
}
