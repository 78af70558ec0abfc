//! The benchmark binary end to end: a reduced sweep writes the table, the JSON and the charts;
//! bad flags are clear errors, given once, before anything runs; a configuration that cannot
//! exist is skipped with its reason; one that fails makes the exit status non-zero; nothing is
//! written when nothing ran; an interrupted run leaves no half-written JSON.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipesched-bench")).args(args).output().expect("the binary runs")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pipesched-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn fails(args: &[&str]) -> String {
    let out = bench(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(err.contains("error:") && !err.contains("panicked"), "{args:?}: {err}");
    err
}

#[test]
fn a_quick_synthetic_sweep_writes_table_json_and_charts() {
    let dir = temp_dir("quick");
    let out = bench(&[
        "--quick",
        "--model",
        "synthetic:F=300us,I=300us,W=150us,mem=256KiB,wmem=64KiB",
        "-p",
        "3",
        "-m",
        "6",
        "-s",
        "1f1b,zb-h1,interleaved",
        "--recompute",
        "none",
        "--recompute",
        "full",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| configuration")).count(), 6);
    let doc = bench_json(&dir);
    let configs = doc["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 6);
    for c in configs {
        // Held bytes are deterministic: the ledger's held peaks are the simulator's.
        assert_eq!(c["peak_held_measured"], c["peak_held_predicted"], "{}", c["label"]);
        assert!(c["throughput"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(configs.iter().filter(|c| c["relative_throughput"] == 1.0).count(), 1);
    for f in ["bench-throughput.svg", "bench-throughput.png", "bench-tradeoff.svg", "bench-zb-h1-full.png"] {
        assert!(dir.join(f).metadata().unwrap().len() > 0, "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn simulate_only_needs_no_execution_and_takes_any_p() {
    let dir = temp_dir("sim");
    let out = bench(&[
        "--simulate-only",
        "--costs",
        "F=1,I=1,W=0.5,C=0.05",
        "--mem",
        "A=64MiB,W=16MiB",
        "--model",
        "synthetic:F=1ms,I=1ms,W=1ms",
        "-p",
        "16",
        "-m",
        "64",
        "--recompute",
        "none",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = bench_json(&dir);
    let zb2 = doc["configs"].as_array().unwrap().iter().find(|c| c["schedule"] == "zb-h2").unwrap();
    assert!(zb2["peak_bytes_measured"].is_null());
    assert!(zb2["bubble_measured"].is_null());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_flags_are_clear_errors() {
    assert!(fails(&["-s", "1f1b,zb-h9"]).contains("unknown schedule name"));
    assert!(fails(&["-p", "0"]).contains("at least 1"));
    let e = fails(&["--recompute", "most"]);
    assert!(e.contains("'most' for '--recompute") && e.contains("none, full, every:K"), "{e}");
    assert!(fails(&["-s", "1f1b,1f1b"]).contains("-s 1f1b is given twice"));
    assert!(fails(&["-s", "1f1b,forward"]).contains("-s forward runs forwards only"));
    assert!(fails(&["--quick", "--steps", "3"]).contains("cannot be used with"));
    let e = fails(&["--out", "/proc/pipesched-cannot-write-here"]);
    assert!(e.contains("output folder"), "{e}");
}

/// Runs a sweep that must fail into a fresh folder; returns stderr, checking that the error is
/// given once and that nothing was written.
fn fails_once_writing_nothing(name: &str, args: &[&str]) -> String {
    let dir = temp_dir(name);
    let e = fails(&[args, &["--out", dir.to_str().unwrap()]].concat());
    assert_eq!(e.matches("error:").count(), 1, "{e}");
    assert!(!dir.join("bench.json").exists(), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    e
}

#[test]
fn an_unknown_model_fails_once_up_front() {
    let e = fails_once_writing_nothing("nosuch", &["--model", "nosuch"]);
    assert!(e.contains("'nosuch' for '--model <MODEL>'") && e.contains("tiny, small, medium"), "{e}");
}

#[test]
fn a_sweep_where_nothing_can_run_fails_once_up_front() {
    let e = fails_once_writing_nothing("p50", &["-p", "50"]);
    assert!(e.contains("none of the 33 configurations can run with gpt-small at p=50, m=8"), "{e}");
    assert!(!e.contains("[1/"), "nothing started: {e}");
}

#[test]
fn impossible_configurations_are_skipped_with_their_reason() {
    let dir = temp_dir("skip");
    let out = bench(&[
        "--quick",
        "--model",
        "synthetic:F=200us,I=200us,W=100us",
        "-p",
        "4",
        "-m",
        "6",
        "-s",
        "1f1b,zb-h2",
        "--recompute",
        "none",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = bench_json(&dir);
    assert_eq!(doc["configs"].as_array().unwrap().len(), 1);
    assert_eq!(doc["skipped"][0]["config"], "zb-h2 / none");
    assert!(doc["skipped"][0]["reason"].as_str().unwrap().contains("m ≥ 2p"), "{doc}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("skipped zb-h2 / none"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_configuration_fails_the_benchmark() {
    // Rank 1 waits 50 ms for rank 0's first forward, ten times the timeout: the step hangs.
    let e = fails_once_writing_nothing(
        "hang",
        &[
            "--model",
            "synthetic:F=50ms,I=1ms,W=1ms",
            "-m",
            "2",
            "-s",
            "1f1b",
            "--recompute",
            "none",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--timeout",
            "5ms",
        ],
    );
    assert!(e.contains("no configuration ran") && e.contains("1f1b / none: pipeline hang"), "{e}");
}

#[test]
fn an_interrupted_run_leaves_no_json() {
    let dir = temp_dir("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipesched-bench"))
        .args(["--model", "synthetic:F=20ms,I=20ms,W=10ms", "--steps", "20", "--out", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first configuration has finished, then kill the run mid-sweep.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let finished_one = lines.any(|l| l.map(|l| l.starts_with("[1/") && l.contains("ms/step")).unwrap_or(false));
    assert!(finished_one);
    child.kill().unwrap();
    child.wait().unwrap();
    let left: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(left.iter().all(|f| !f.contains("bench.json")), "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `bench.json` a run wrote into `dir`.
fn bench_json(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("bench.json")).unwrap()).unwrap()
}
