//! `pipesched plan` and `run --plan` end to end: the plan's predicted peak held bytes are what
//! the run measures, to the byte, under a loose cap and under one that 1F1B without recompute
//! cannot meet; a cap below the static bytes, a cap no plan reaches, a batch with no divisor
//! m ≥ p and another model's cost file are clear errors; `--plan` refuses flags it would
//! contradict. Plans whose stages are then profiled (`--measure`) keep the composition's bytes to
//! the byte and are chosen by the step their own stages predict.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn pipesched(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipesched")).args(args).output().expect("the binary runs")
}

fn json(args: &[&str]) -> Value {
    let out = pipesched(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = pipesched(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(err.starts_with("error:") && !err.contains("panicked"), "{args:?}: {err}");
    err
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pipesched-plan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Profiles `model` at p = 2 into `dir`; the cost file's path.
fn profile(model: &str, dir: &Path) -> String {
    let out = pipesched(&["profile", "--model", model, "-p", "2", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir.join("costs.json").to_str().unwrap().to_string()
}

fn plan(model: &str, costs: &str, batch: &str, cap: &str, dir: &Path, more: &[&str]) -> Value {
    let d = dir.to_str().unwrap();
    let mut args = vec![
        "plan",
        "--model",
        model,
        "-p",
        "2",
        "--batch",
        batch,
        "--memory-cap",
        cap,
        "--costs-file",
        costs,
        "--out",
        d,
        "--json",
        "--show",
        "100000",
    ];
    args.extend_from_slice(more);
    json(&args)
}

/// Runs the plan in `dir` for one step; the run's JSON.
fn run_plan(dir: &Path) -> Value {
    let file = dir.join("plan.json");
    json(&["run", "--plan", file.to_str().unwrap(), "--steps", "1", "--warmup", "0", "--no-compare", "--json"])
}

fn is_1f1b_without_recompute(p: &Value) -> bool {
    p["schedule"] == "1f1b" && p["policies"].as_array().unwrap().iter().all(|x| x == "none")
}

#[test]
fn run_measures_the_held_bytes_the_plan_predicts_under_two_caps() {
    let dir = temp_dir("two-caps");
    let costs = profile("tiny", &dir.join("costs"));
    // A cap every plan fits.
    let loose = plan("tiny", &costs, "16", "1GiB", &dir.join("loose"), &[]);
    let chosen = &loose["plan"];
    let v = run_plan(&dir.join("loose"));
    assert_eq!(v["peak_held_bytes"], chosen["predicted_peak_held_bytes"], "{chosen}");
    assert_eq!(v["plan"]["predicted_peak_held_bytes"], chosen["predicted_peak_held_bytes"]);
    assert_eq!(v["m"], chosen["m"]);
    assert!(std::fs::metadata(dir.join("loose/plan-pareto.svg")).unwrap().len() > 0);
    assert!(std::fs::metadata(dir.join("loose/plan-pareto.png")).unwrap().len() > 0);
    // One byte under the least peak of 1F1B without recompute, over every m and split.
    let least_1f1b = loose["plans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| is_1f1b_without_recompute(p))
        .map(|p| p["predicted_peak_held_bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).max().unwrap())
        .min()
        .expect("1f1b without recompute fits a loose cap");
    let cap = least_1f1b - 1;
    let tight = plan("tiny", &costs, "16", &cap.to_string(), &dir.join("tight"), &[]);
    let chosen = &tight["plan"];
    assert!(!is_1f1b_without_recompute(&tight["plans"][0]), "{chosen}");
    for b in chosen["predicted_peak_held_bytes"].as_array().unwrap() {
        assert!(b.as_u64().unwrap() <= cap, "{chosen}");
    }
    let v = run_plan(&dir.join("tight"));
    assert_eq!(v["peak_held_bytes"], chosen["predicted_peak_held_bytes"], "{chosen}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_plan_profiled_on_the_spot_for_a_model_of_sequences_runs_as_predicted() {
    let dir = temp_dir("gpt");
    let d = dir.join("p");
    let loose = json(&[
        "plan",
        "--model",
        "gpt-tiny",
        "-p",
        "2",
        "--batch",
        "8",
        "--memory-cap",
        "1GiB",
        "--out",
        d.to_str().unwrap(),
        "--json",
        "--show",
        "100000",
    ]);
    let v = run_plan(&d);
    assert_eq!(v["peak_held_bytes"], loose["plan"]["predicted_peak_held_bytes"], "{}", loose["plan"]);
    // Profiled on the spot, the fastest plans' stages are measured (3 sets of stages by
    // default) and the plan is the fastest of those, its step theirs.
    let measured = loose["measured"].as_array().unwrap();
    assert!(!measured.is_empty(), "{loose}");
    let chosen = &loose["plan"];
    assert_eq!(chosen["predicted_step"], measured[0]["predicted_step"]);
    assert_eq!(chosen["composed_step"], measured[0]["composed_step"]);
    // After the chosen plan (whose step comes from rounds of its own), fastest first.
    let step = |m: &Value| m["predicted_step"].as_f64().expect("a step");
    assert!(measured[1..].windows(2).all(|w| step(&w[0]) <= step(&w[1])), "{loose}");
    // Profiled stages, not the composition: some step differs from its composed one.
    assert!(measured.iter().any(|m| step(m) != m["composed_step"].as_f64().unwrap()), "{loose}");
    let same = |a: &Value, b: &Value| ["schedule", "m", "partition", "policies"].iter().all(|k| a[k] == b[k]);
    for m in measured {
        // The stages' own accounting gives the bytes the composition gave, to the byte.
        let composed = loose["plans"].as_array().unwrap().iter().find(|c| same(c, m)).expect("a listed plan");
        assert_eq!(m["predicted_peak_held_bytes"], composed["predicted_peak_held_bytes"], "{m}");
        assert_eq!(m["composed_step"], composed["predicted_step"], "{m}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plans_from_a_cost_file_keep_its_steps_unless_asked_to_measure() {
    let dir = temp_dir("measure");
    let costs = profile("tiny", &dir.join("costs"));
    let kept = plan("tiny", &costs, "8", "1GiB", &dir.join("kept"), &[]);
    assert!(kept["measured"].as_array().unwrap().is_empty(), "{kept}");
    assert_eq!(kept["plan"]["predicted_step"], kept["plans"][0]["predicted_step"]);
    assert!(kept["plan"].get("composed_step").is_none(), "{}", kept["plan"]);
    let measured = plan("tiny", &costs, "8", "1GiB", &dir.join("measured"), &["--measure", "1"]);
    let list = measured["measured"].as_array().unwrap();
    // One set of stages: the plans among the fastest 20 that share the first one's stages.
    assert!(!list.is_empty(), "{measured}");
    let stages = |v: &Value| (v["partition"].clone(), v["m"].clone(), v["policies"].clone(), v["v"].clone());
    assert!(list.iter().all(|m| stages(m) == stages(&list[0])), "{measured}");
    assert_eq!(measured["plan"]["composed_step"], list[0]["composed_step"]);
    let v = run_plan(&dir.join("measured"));
    assert_eq!(v["peak_held_bytes"], measured["plan"]["predicted_peak_held_bytes"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A mixed-precision model (tiny in mixed-bf16, a model file): its own per-layer costs
/// compose (parameters counted at 2 bytes each, as it stores them), and `run --plan` holds the
/// plan's predicted peak, to the byte.
#[test]
fn a_mixed_precision_model_plans_and_runs_as_predicted() {
    let dir = temp_dir("mixed");
    std::fs::create_dir_all(&dir).unwrap();
    let tiny: Value = serde_json::from_str(&std::fs::read_to_string("models/tiny.json").unwrap()).unwrap();
    let mut mixed = tiny.clone();
    mixed["name"] = Value::from("tiny-mixed");
    mixed["precision"] = Value::from("mixed-bf16");
    let model = dir.join("tiny-mixed.json");
    std::fs::write(&model, mixed.to_string()).unwrap();
    let model = model.to_str().unwrap();
    let out = pipesched(&["profile", "--model", model, "-p", "2", "--out", dir.join("costs").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let costs = dir.join("costs/costs.json");
    let planned = plan(model, costs.to_str().unwrap(), "8", "1GiB", &dir.join("p"), &[]);
    let v = run_plan(&dir.join("p"));
    assert_eq!(v["peak_held_bytes"], planned["plan"]["predicted_peak_held_bytes"], "{planned}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn caps_no_plan_meets_are_clear_errors() {
    let dir = temp_dir("errors");
    let costs = profile("tiny", &dir.join("costs"));
    let out = dir.join("out");
    let d = out.to_str().unwrap();
    let args = |cap: &str| -> Vec<String> {
        ["plan", "--model", "tiny", "-p", "2", "--batch", "16", "--memory-cap", cap, "--costs-file", &costs, "--out", d]
            .map(String::from)
            .to_vec()
    };
    let e = fails(&args("1KiB").iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("below the static bytes") && e.contains("the least is"), "{e}");
    // The least static bytes over splits, plus one byte: above the static bytes, below any peak.
    let least: u64 = e
        .split("the least is ")
        .nth(1)
        .unwrap()
        .split(" (")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let e = fails(&args(&(least + 1).to_string()).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("no plan fits under the memory cap") && e.contains("the smallest peak any candidate reached"),
        "{e}"
    );
    assert!(!out.join("plan.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--dp 2 --zero 1`: the batch splits over the replicas, so the same plans as one pipeline's
/// of half the batch are tried; each keeps the same activations, while its static bytes gain
/// the sum's `f32` buffer (4 bytes a parameter) and keep half the Adam state (tiny, f32: 16·L
/// bytes for L parameters on a one-stage rank become 12·L + 8·⌈L/2⌉). `run --plan` refuses to
/// run such a plan without the replicas.
#[test]
fn plans_over_replicas_hold_the_replicas_bytes() {
    let dir = temp_dir("replicas");
    let costs = profile("tiny", &dir.join("costs"));
    let one = plan("tiny", &costs, "8", "1GiB", &dir.join("one"), &[]);
    let two = plan("tiny", &costs, "16", "1GiB", &dir.join("two"), &["--dp", "2", "--zero", "1"]);
    assert_eq!((two["plan"]["dp"].as_u64(), two["plan"]["zero"].as_u64()), (Some(2), Some(1)));
    let key = |v: &Value| (v["schedule"].clone(), v["m"].clone(), v["partition"].clone(), v["policies"].clone());
    let list = |v: &Value| v["plans"].as_array().unwrap().clone();
    let bytes =
        |v: &Value, k: &str| -> Vec<u64> { v[k].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect() };
    let mut compared = 0;
    for a in list(&one).iter().filter(|a| a["v"] == 1) {
        let Some(b) = list(&two).into_iter().find(|b| key(b) == key(a)) else { continue };
        assert_eq!(b["microbatch"], a["microbatch"], "{b}");
        for (((s1, s2), p1), p2) in bytes(a, "static_bytes")
            .into_iter()
            .zip(bytes(&b, "static_bytes"))
            .zip(bytes(a, "predicted_peak_held_bytes"))
            .zip(bytes(&b, "predicted_peak_held_bytes"))
        {
            assert_eq!(s1 % 16, 0, "{a}");
            let l = s1 / 16;
            assert_eq!(s2, 12 * l + 8 * l.div_ceil(2), "{a} vs {b}");
            assert_eq!(p2 - s2, p1 - s1, "the same activations: {a} vs {b}");
        }
        // The sums over the replicas end the step at or after the compute.
        assert!(b["predicted_step"].as_f64().unwrap() >= a["predicted_step"].as_f64().unwrap() - 1e-12, "{a} vs {b}");
        compared += 1;
    }
    assert!(compared > 0, "no plan of one pipeline matched one over replicas");
    let file = dir.join("two/plan.json");
    let e = fails(&["run", "--plan", file.to_str().unwrap(), "--steps", "1"]);
    assert!(e.contains("planned for --dp 2 --zero 1") && e.contains("mpirun -n 4"), "{e}");
    let file = dir.join("one/plan.json");
    let e = fails(&["run", "--plan", file.to_str().unwrap(), "--dp", "2", "--steps", "1"]);
    assert!(e.contains("planned for --dp 1") && e.contains("without --dp and --zero"), "{e}");
    let line = format!(
        "plan --model tiny -p 2 --batch 15 --memory-cap 1GiB --costs-file {costs} --dp 2 --out {}",
        dir.join("odd").display()
    );
    let e = fails(&line.split_whitespace().collect::<Vec<_>>());
    assert!(e.contains("--batch 15 does not split over --dp 2 replicas"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_batches_other_models_costs_and_contradicting_flags_are_refused() {
    let dir = temp_dir("refused");
    let costs = profile("tiny", &dir.join("costs"));
    let d = dir.join("out");
    let d = d.to_str().unwrap();
    let e = fails(&[
        "plan",
        "--model",
        "tiny",
        "-p",
        "4",
        "--batch",
        "3",
        "--memory-cap",
        "1GiB",
        "--costs-file",
        &costs,
        "--out",
        d,
    ]);
    assert!(e.contains("--batch 3 has no divisor m ≥ p = 4"), "{e}");
    let e = fails(&[
        "plan",
        "--model",
        "small",
        "-p",
        "2",
        "--batch",
        "8",
        "--memory-cap",
        "1GiB",
        "--costs-file",
        &costs,
        "--out",
        d,
    ]);
    assert!(e.contains("profiled for model \"tiny\""), "{e}");
    // A plan whose numbers disagree is refused before anything runs.
    let good = plan("tiny", &costs, "8", "1GiB", &dir.join("good"), &[]);
    let mut bad = good["plan"].clone();
    bad["m"] = Value::from(good["plan"]["m"].as_u64().unwrap() + 1);
    let path = dir.join("bad.json");
    std::fs::write(&path, bad.to_string()).unwrap();
    let e = fails(&["run", "--plan", path.to_str().unwrap(), "--steps", "1"]);
    assert!(e.contains("bad.json") && e.contains("do not make its batch"), "{e}");
    let e = fails(&["run", "--plan", "nosuch.json", "-s", "1f1b"]);
    assert!(e.contains("--plan") && e.contains("--schedule"), "{e}");
    for flag in
        [["-m", "4"], ["--partition", "even"], ["--recompute", "full"], ["--optimizer", "sgd"], ["--precision", "bf16"]]
    {
        let e = fails(&["run", "--plan", "nosuch.json", flag[0], flag[1]]);
        assert!(e.contains("cannot be used with"), "{flag:?}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
