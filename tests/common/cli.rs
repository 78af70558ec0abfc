//! The `pipesched` binary as the tests run it.

use std::process::{Command, Output};

/// `pipesched ARGS`, run to its end.
pub fn pipesched(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipesched")).args(args).output().expect("the binary runs")
}

/// `pipesched` with the words of `line` then `extra`.
pub fn pipesched_line(line: &str, extra: &[&str]) -> Output {
    let args: Vec<&str> = line.split_whitespace().chain(extra.iter().copied()).collect();
    pipesched(&args)
}

/// The JSON report a successful run printed on its last line of stdout (`--json`).
pub fn report_of(out: &Output, what: &str) -> serde_json::Value {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what}: no JSON report ({e}):\n{stdout}\n{stderr}"))
}

/// [`report_of`] `pipesched` with the words of `line` then `extra`.
pub fn report(line: &str, extra: &[&str]) -> serde_json::Value {
    report_of(&pipesched_line(line, extra), line)
}
