//! Bad input on the command line exits non-zero with one clear paragraph on stderr — never a
//! panic. One test per case.

use std::process::{Command, Output};

fn pipesched(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipesched")).args(args).output().expect("the binary runs")
}

/// Runs `args`, expects failure, and returns stderr after checking it is a clean error.
fn fails(args: &[&str]) -> String {
    let out = pipesched(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded; stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(err.starts_with("error:"), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout on failure");
    err
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pipesched-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn p_zero() {
    let e = fails(&["simulate", "-s", "1f1b", "-p", "0", "-m", "8"]);
    assert!(e.contains("must be at least 1") && e.contains("p=0"), "{e}");
}

#[test]
fn m_zero() {
    let e = fails(&["schedule", "-s", "gpipe", "-p", "4", "-m", "0"]);
    assert!(e.contains("must be at least 1") && e.contains("m=0"), "{e}");
}

#[test]
fn v_zero() {
    let e = fails(&["simulate", "-s", "interleaved", "-p", "4", "-m", "8", "--chunks", "0"]);
    assert!(e.contains("chunks=0"), "{e}");
}

#[test]
fn chunks_on_a_schedule_without_chunks() {
    let e = fails(&["simulate", "-s", "1f1b", "-p", "4", "-m", "8", "--chunks", "2"]);
    assert!(e.contains("only interleaved takes --chunks"), "{e}");
}

#[test]
fn zb_h2_with_too_few_microbatches() {
    let e = fails(&["simulate", "-s", "zb-h2", "-p", "4", "-m", "7"]);
    assert!(e.contains("m ≥ 2p") && e.contains("m=7, p=4"), "{e}");
}

#[test]
fn interleaved_with_m_not_a_multiple_of_p() {
    let e = fails(&["simulate", "-s", "interleaved", "-p", "4", "-m", "6"]);
    assert!(e.contains("multiple of p"), "{e}");
}

#[test]
fn unknown_schedule_name() {
    let e = fails(&["simulate", "-s", "zb-h3", "-p", "4", "-m", "8"]);
    assert!(e.contains("unknown schedule name") && e.contains("gpipe, 1f1b, interleaved, zb-h1, zb-h2"), "{e}");
}

#[test]
fn malformed_costs() {
    for (costs, needle) in [("F=1;I=2", "not a time"), ("F", "not KEY=VALUE"), ("X=1", "unknown key"), ("F=-2", "≥ 0")]
    {
        let e = fails(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--costs", costs]);
        assert!(e.contains("--costs") && e.contains(needle), "{costs}: {e}");
    }
}

#[test]
fn malformed_mem() {
    let e = fails(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--mem", "A=3 furlongs"]);
    assert!(e.contains("--mem A") && e.contains("unknown unit"), "{e}");
}

#[test]
fn unreadable_csv() {
    let e = fails(&["simulate", "--from-csv", "/nonexistent/schedule.csv"]);
    assert!(e.contains("cannot read the CSV schedule /nonexistent/schedule.csv"), "{e}");
}

#[test]
fn invalid_csv_action() {
    let path = temp_file("bad-action.csv", "0F0,0Q1\n");
    let e = fails(&["simulate", "--from-csv", path.to_str().unwrap()]);
    assert!(e.contains("line 1, cell 2") && e.contains("0Q1"), "{e}");
}

#[test]
fn invalid_csv_schedule() {
    // Two ranks waiting for each other.
    let path = temp_file("deadlock.csv", "0F0,0B0,0F1,0B1\n1F0,1F1,1B0,1B1\n");
    let e = fails(&["simulate", "--from-csv", path.to_str().unwrap()]);
    assert!(e.contains("deadlock") && e.contains("[0B0]") && e.contains("[1F1]"), "{e}");
}

#[test]
fn csv_and_generator_flags_together() {
    let path = temp_file("ok.csv", "0F0,0B0\n");
    let e = fails(&["schedule", "--from-csv", path.to_str().unwrap(), "-p", "2"]);
    assert!(e.contains("drop --schedule, -p, -m and --chunks"), "{e}");
}

#[test]
fn missing_schedule() {
    let e = fails(&["simulate", "-p", "4", "-m", "8"]);
    assert!(e.contains("no schedule given"), "{e}");
    let e = fails(&["simulate", "-s", "1f1b"]);
    assert!(e.contains("add -p P -m M"), "{e}");
}

#[test]
fn bad_costs_file() {
    let path = temp_file("costs.json", r#"{"per_rank": {"f": 1, "i": "slow", "w": 1}}"#);
    let e = fails(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--costs-file", path.to_str().unwrap()]);
    assert!(e.contains("costs.json") && e.contains("cost model"), "{e}");
    let e = fails(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--costs-file", "/nonexistent.json"]);
    assert!(e.contains("cannot read the cost model"), "{e}");
}

#[test]
fn non_numeric_p_is_a_parser_error() {
    let out = pipesched(&["simulate", "-s", "1f1b", "-p", "four", "-m", "8"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'four'"), "{err}");
}
