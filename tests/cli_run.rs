//! `pipesched run` and `pipesched profile` end to end: a real model trains with bitwise-verified
//! gradients and exact memory predictions, synthetic stages run and profile, a profiled cost file
//! simulates what `run` measures (recompute included), and bad input is a clear error.

use std::process::{Command, Output};

fn pipesched(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipesched")).args(args).output().expect("the binary runs")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = pipesched(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pipesched-run-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn fails(args: &[&str]) -> String {
    let out = pipesched(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(err.starts_with("error:") && !err.contains("panicked"), "{args:?}: {err}");
    err
}

#[test]
fn a_real_model_trains_with_verified_gradients_and_predicted_memory() {
    let v =
        json(&["run", "--model", "tiny", "-s", "zb-h1", "-p", "2", "-m", "4", "--steps", "2", "--verify", "--json"]);
    assert_eq!(v["max_grad_diff"], 0.0);
    assert_eq!(v["bitwise"], true);
    assert_eq!(v["peak_held_bytes"], v["predicted_peak_held_bytes"]);
    for (all, held) in v["peak_memory_bytes"].as_array().unwrap().iter().zip(v["peak_held_bytes"].as_array().unwrap()) {
        assert!(all.as_u64() >= held.as_u64(), "messages in flight only add bytes");
    }
    assert!(v["loss"].as_f64().unwrap() > 0.0);
    assert_eq!(v["step_times_s"].as_array().unwrap().len(), 2);
    assert!(v["comparison"]["makespan"][1].as_f64().unwrap() > 0.0, "profiled simulation present");
}

#[test]
fn recompute_runs_r_actions() {
    let v = json(&[
        "run",
        "--model",
        "tiny",
        "-s",
        "1f1b",
        "-p",
        "2",
        "-m",
        "4",
        "--recompute",
        "full",
        "--steps",
        "1",
        "--verify",
        "--json",
        "--no-compare",
    ]);
    assert_eq!(v["schedule"], "1f1b+recompute");
    assert_eq!(v["bitwise"], true);
    assert_eq!(v["peak_held_bytes"], v["predicted_peak_held_bytes"]);
    for (all, held) in v["peak_memory_bytes"].as_array().unwrap().iter().zip(v["peak_held_bytes"].as_array().unwrap()) {
        assert!(all.as_u64() >= held.as_u64(), "messages in flight only add bytes");
    }
}

/// `-s auto` profiles the stages, then schedules them under `--memory-limit`: the measured held
/// peak stays within it (synthetic stages keep 64 KiB per micro-batch until `W`).
#[test]
fn auto_runs_under_its_memory_limit() {
    let v = json(&[
        "run",
        "--model",
        "synthetic:F=200us,I=200us,W=100us,mem=64KiB",
        "-s",
        "auto",
        "--memory-limit",
        "128KiB",
        "-p",
        "3",
        "-m",
        "6",
        "--steps",
        "1",
        "--json",
    ]);
    assert_eq!(v["schedule"], "auto");
    let held: Vec<u64> = v["peak_held_bytes"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert!(held.iter().all(|&b| b <= 128 << 10), "{held:?}");
}

#[test]
fn synthetic_stages_run_and_profile() {
    let v = json(&[
        "run",
        "--model",
        "synthetic:F=200us,I=200us,W=100us,mem=64KiB",
        "-s",
        "1f1b",
        "-p",
        "3",
        "-m",
        "6",
        "--steps",
        "2",
        "--json",
    ]);
    let peaks: Vec<u64> = v["peak_memory_bytes"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(peaks, [3 * 65536, 2 * 65536, 65536]);
    let dir = temp_dir("synthetic");
    let out = dir.to_str().unwrap();
    let costs =
        json(&["profile", "--model", "synthetic:F=1ms,I=1ms,W=500us,mem=1KiB", "-p", "2", "--json", "--out", out]);
    assert_eq!(costs["stages"].as_array().unwrap().len(), 2);
    assert_eq!(costs["stages"][0]["act_bytes"], 1024);
    assert_eq!(costs["time_unit"], "ms");
    assert_eq!(costs["layout"], serde_json::json!({"p": 2, "v": 1, "placement": "loop"}));
    assert_eq!(costs["recompute"], serde_json::json!(["none", "none"]));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("costs.json")).unwrap()).unwrap();
    assert_eq!(written, costs);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_profile_simulates_what_run_measures_with_recompute() {
    // The bytes the profiler records under `full`, with R planned from the policy the file
    // records, give the peaks the executor's ledger measures, to the byte.
    let dir = temp_dir("recompute");
    let out = dir.to_str().unwrap();
    let costs = dir.join("costs.json");
    let profiled = pipesched(&["profile", "--model", "tiny", "-p", "2", "--recompute", "full", "--out", out]);
    assert!(profiled.status.success(), "{}", String::from_utf8_lossy(&profiled.stderr));
    // Its table lists every layer, and each stage beside the sum of its layers.
    let table = String::from_utf8_lossy(&profiled.stdout);
    assert!(
        table.contains("per layer, 8 rows per micro-batch")
            && table.contains("per stage, measured / sum of its layers"),
        "{table}"
    );
    let sim =
        json(&["simulate", "-s", "zb-h1", "-p", "2", "-m", "4", "--costs-file", costs.to_str().unwrap(), "--json"]);
    let run = json(&[
        "run",
        "--model",
        "tiny",
        "-s",
        "zb-h1",
        "-p",
        "2",
        "-m",
        "4",
        "--recompute",
        "full",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--no-compare",
        "--json",
    ]);
    assert_eq!(sim["schedule"], "zb-h1+recompute");
    assert!(sim["recompute"][0].as_f64().unwrap() > 0.0);
    assert_eq!(sim["peak_held_bytes"], run["peak_held_bytes"]);
    // Other policies would need other bytes: refused, not simulated wrongly.
    let e = fails(&[
        "simulate",
        "-s",
        "zb-h1",
        "-p",
        "2",
        "-m",
        "4",
        "--costs-file",
        costs.to_str().unwrap(),
        "--recompute",
        "none",
    ]);
    assert!(e.contains("profiled under --recompute full"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_profile_for_interleaved_simulates_interleaved() {
    let dir = temp_dir("interleaved");
    let costs = dir.join("costs.json");
    let out =
        pipesched(&["profile", "--model", "tiny", "-s", "interleaved", "-p", "2", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&[
        "simulate",
        "-s",
        "interleaved",
        "-p",
        "2",
        "-m",
        "4",
        "--costs-file",
        costs.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["v"], 2);
    assert!(v["peak_memory_bytes"][0].as_u64().unwrap() > 0);
    let e = fails(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--costs-file", costs.to_str().unwrap()]);
    assert!(e.contains("profiled for p=2, v=2") && e.contains("-s, -p and -v"), "{e}");
    let e = fails(&["profile", "--model", "tiny", "-s", "1f1b", "-v", "2", "--out", dir.to_str().unwrap()]);
    assert!(e.contains("takes no -v"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn charts_and_traces_go_into_out() {
    let dir = temp_dir("charts");
    let out = pipesched(&[
        "run",
        "--model",
        "synthetic:F=200us,I=200us,W=100us,mem=4KiB",
        "-s",
        "1f1b",
        "-p",
        "2",
        "-m",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--plot",
        "--trace",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["1f1b.trace.json", "1f1b-measured.svg", "1f1b-measured.png", "1f1b-compare.svg", "1f1b-compare.png"] {
        assert!(dir.join(f).metadata().unwrap().len() > 0, "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_run_input_is_a_clear_error() {
    fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&["run", "-s", "1f1b", "-p", "2", "-m", "4", "--steps", "1"][..], extra].concat()
    }
    let e = fails(&with(&["--model", "huge"]));
    assert!(e.contains("'huge' for '--model <MODEL>'") && e.contains("tiny, small, medium"), "{e}");
    assert!(fails(&with(&["--model", "/nonexistent/model.toml"])).contains("/nonexistent/model.toml"));
    assert!(fails(&with(&["--model", "tiny", "--recompute", "most"])).contains("--recompute"));
    assert!(fails(&with(&["--model", "tiny", "--partition", "zigzag"])).contains("--partition"));
    assert!(fails(&with(&["--model", "synthetic:F=1ms", "--verify"])).contains("synthetic stages have none"));
    assert!(fails(&with(&["--model", "tiny", "--timeout", "0"])).contains("--timeout"));
    assert!(fails(&with(&["--model", "tiny", "--steps", "0"])).contains("--steps"));
    assert!(fails(&with(&["--model", "tiny", "--lr", "-1"])).contains("--lr"));
    assert!(fails(&with(&["--model", "synthetic:F=1", "--json"])).contains("give a unit"));
    // More stages than the model has layers.
    let e = fails(&["run", "--model", "tiny", "-s", "interleaved", "-p", "4", "-m", "4", "--steps", "1"]);
    assert!(e.contains("layers") || e.contains("stages"), "{e}");
}

#[test]
fn devices_are_listed_and_checked() {
    let out = pipesched(&["devices"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("cpu: ") && text.contains("cuBLAS: ") && text.contains("NVRTC: "), "{text}");
    let base = ["run", "--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "2", "--steps", "1"];
    let e = fails(&[&base[..], &["--devices", "cpu,cpu,cpu"]].concat());
    assert!(e.contains("3 devices but there are p=2 ranks"), "{e}");
    let e = fails(&[&base[..], &["--devices", "cpu,gpu"]].concat());
    assert!(e.contains("--devices") && e.contains("cuda:N"), "{e}");
    // On a machine without a usable GPU (or in this version, with one) CUDA is a clear error.
    let e = fails(&[&base[..], &["--devices", "cuda"]].concat());
    assert!(e.contains("cuda:0"), "{e}");
    let out = pipesched(&[&base[..], &["--devices", "cpu,cpu", "--no-compare"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn infer_reports_losses_makespans_and_exact_peak_bytes() {
    let dir = temp_dir("infer");
    let out = dir.to_str().unwrap();
    let v = json(&["infer", "--model", "gpt-tiny", "-p", "2", "-m", "5", "--json", "--trace", "--plot", "--out", out]);
    assert_eq!(v["schedule"], "forward");
    let losses = v["losses"].as_array().unwrap();
    assert_eq!(losses.len(), 5);
    let mean = losses.iter().map(|l| l.as_f64().unwrap()).sum::<f64>() / 5.0;
    assert!((mean - v["mean_loss"].as_f64().unwrap()).abs() < 1e-5);
    let held = &v["peak_held_bytes"];
    assert_eq!(held["measured"], held["predicted"]);
    for (inference, training) in
        held["predicted"].as_array().unwrap().iter().zip(held["training_1f1b_predicted"].as_array().unwrap())
    {
        assert!(inference.as_u64() < training.as_u64(), "a forward-only pass keeps less than a training step");
    }
    assert!(v["makespan_ms"]["measured"].as_f64().unwrap() > 0.0);
    assert!(v["makespan_ms"]["simulated"].as_f64().unwrap() > 0.0);
    assert!(v["rows_per_second"].as_f64().unwrap() > 0.0);
    for file in ["forward.trace.json", "forward-measured.svg", "forward-compare.png"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
}
