//! Bad input on the command line exits non-zero with one clear paragraph on stderr — never a
//! panic, never a result that looks like success. One test per case. A value the parser refuses
//! exits with status 2, anything found later with status 1.

use std::process::{Command, Output};

fn pipesched(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipesched")).args(args).output().expect("the binary runs")
}

/// Runs `args`, expects failure, and returns stderr after checking it is a clean error.
fn fails(args: &[&str]) -> String {
    fails_with(args, None)
}

/// As [`fails`], also checking the exit status when `code` is given.
fn fails_with(args: &[&str], code: Option<i32>) -> String {
    let out = pipesched(args);
    if let Some(code) = code {
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
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
    let e = fails_with(&["simulate", "-s", "1f1b", "-p", "0", "-m", "8"], Some(2));
    assert!(e.contains("'--ranks <P>': must be at least 1, got 0"), "{e}");
}

#[test]
fn m_zero() {
    let e = fails_with(&["schedule", "-s", "gpipe", "-p", "4", "-m", "0"], Some(2));
    assert!(e.contains("'--microbatches <M>': must be at least 1"), "{e}");
}

#[test]
fn v_zero() {
    let e = fails_with(&["simulate", "-s", "interleaved", "-p", "4", "-m", "8", "--chunks", "0"], Some(2));
    assert!(e.contains("'--chunks <V>': must be at least 1"), "{e}");
}

#[test]
fn chunks_on_a_schedule_without_chunks() {
    let e = fails(&["simulate", "-s", "1f1b", "-p", "4", "-m", "8", "--chunks", "2"]);
    assert!(e.contains("take --chunks: interleaved"), "{e}");
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
fn interleaved_zb_with_m_not_in_equal_rounds() {
    let e = fails(&["simulate", "-s", "interleaved-zb", "-p", "4", "-m", "9"]);
    assert!(e.contains("2 rounds") && e.contains("try m=8 or m=10"), "{e}");
}

#[test]
fn unknown_schedule_name() {
    let e = fails(&["simulate", "-s", "zb-h3", "-p", "4", "-m", "8"]);
    assert!(e.contains("unknown schedule name") && e.contains("gpipe, 1f1b, interleaved, zb-h1, zb-h2"), "{e}");
}

#[test]
fn malformed_costs() {
    for (costs, needle) in [
        ("F=1;I=2", "F: `1;I=2` is not a time"),
        ("F", "not KEY=VALUE"),
        ("X=1", "unknown key"),
        ("F=-2", "F: `-2` is negative; a time is ≥ 0"),
        ("F=2ms,I=1", "mixes times with and without a unit"),
        ("F=2min", "unknown time unit `min`"),
    ] {
        let e = fails_with(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--costs", costs], Some(2));
        assert!(e.contains("--costs") && e.contains(needle), "{costs}: {e}");
    }
}

#[test]
fn costs_take_the_units_synthetic_stages_take() {
    let out =
        pipesched(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--costs", "F=2ms,I=1500us,W=0.5ms", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["time_unit"], "ms");
    // 1F1B: (m + p − 1)(F + I + W) = 5 · 4 ms.
    assert_eq!(v["makespan"], 20.0);
}

#[test]
fn costs_that_overflow_are_an_error_not_inf() {
    let e =
        fails_with(&["simulate", "-s", "1f1b", "-p", "4", "-m", "8", "--costs", "F=1e308,I=1e308,W=1e308"], Some(1));
    assert!(!e.contains("NaN"), "{e}");
}

#[test]
fn malformed_mem() {
    for (mem, needle) in [
        ("A=3 furlongs", "A: `3 furlongs`: unknown unit `furlongs`"),
        ("A=-64MiB", "A: `-64MiB` is negative"),
        ("A=99999999999GiB", "A: `99999999999GiB` is too large"),
        ("A=1.5", "A: `1.5` is not a whole number of bytes"),
    ] {
        let e = fails_with(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--mem", mem], Some(2));
        assert!(e.contains("--mem") && e.contains(needle), "{mem}: {e}");
    }
}

#[test]
fn recompute_bytes_without_recompute() {
    let e = fails_with(&["simulate", "-s", "1f1b", "--mem", "A=1MiB,R=3MiB"], Some(1));
    assert!(e.contains("no stage of 1f1b recomputes") && e.contains("--recompute full"), "{e}");
    let e = fails(&["simulate", "-s", "1f1b", "--costs", "F=1,R=2"]);
    assert!(e.contains("R= in --costs or --mem"), "{e}");
}

#[test]
fn output_folder_checked_before_any_work() {
    let file = temp_file("not-a-folder", "");
    let out = file.join("charts");
    let e = fails(&["simulate", "-s", "1f1b", "--plot", "--out", out.to_str().unwrap()]);
    assert!(e.contains("cannot create the output folder"), "{e}");
    let e = fails(&["run", "--model", "tiny", "-s", "1f1b", "--trace", "--out", out.to_str().unwrap()]);
    assert!(e.contains("cannot create the output folder"), "{e}");
    let e = fails(&["profile", "--model", "tiny", "--out", out.to_str().unwrap()]);
    assert!(e.contains("cannot create the output folder"), "{e}");
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
    let e = fails_with(&["schedule", "--from-csv", path.to_str().unwrap(), "-p", "2"], Some(2));
    assert!(e.contains("'--from-csv <FILE>' cannot be used with '--ranks <P>'"), "{e}");
}

#[test]
fn missing_schedule() {
    let e = fails(&["simulate", "-p", "4", "-m", "8"]);
    assert!(e.contains("no schedule given"), "{e}");
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
fn bandwidth_without_its_times_unit_or_bytes() {
    fn run(extra: &[&str], code: Option<i32>) -> String {
        let mut args = vec!["simulate", "-s", "1f1b", "-p", "2", "-m", "4"];
        args.extend_from_slice(extra);
        fails_with(&args, code)
    }
    let e = run(&["--costs", "F=1,I=1,W=1", "--mem", "M=1MiB", "--bandwidth", "2GiB/s"], Some(1));
    assert!(e.contains("--bandwidth 2GiB/s is per unit of time, but the times of --costs have no unit"), "{e}");
    let e = run(&["--costs", "F=1ms,I=1ms,W=1ms", "--mem", "M=1MiB", "--bandwidth", "2GiB"], Some(1));
    assert!(e.contains("give bytes per second, ms or us, e.g. --bandwidth 2GiB/s"), "{e}");
    let e = run(&["--costs", "F=1ms", "--bandwidth", "2GiB/s"], Some(1));
    assert!(e.contains("but --mem gives none; add M="), "{e}");
    let e = run(&["--bandwidth", "0GiB/s"], Some(2));
    assert!(e.contains("no bandwidth at all"), "{e}");
    let e = run(&["--bandwidth", "2GiB/min"], Some(2));
    assert!(e.contains("unknown time unit `min`"), "{e}");
    let path = temp_file("zero-bandwidth.json", r#"{"per_rank": {"f": 1, "i": 1, "w": 1}, "bandwidth": 0}"#);
    let e = run(&["--costs-file", path.to_str().unwrap()], Some(1));
    assert!(e.contains("bandwidth must be a finite number > 0"), "{e}");
    let e = run(&["--costs-file", path.to_str().unwrap(), "--bandwidth", "1GB/s"], Some(2));
    assert!(e.contains("cannot be used with"), "{e}");
}

#[test]
fn non_numeric_p_is_a_parser_error() {
    let out = pipesched(&["simulate", "-s", "1f1b", "-p", "four", "-m", "8"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'four'"), "{err}");
}

#[test]
fn data_that_is_missing_empty_or_too_short_for_a_sequence() {
    let run = |data: &str| {
        fails(&["run", "--model", "gpt-tiny", "-s", "1f1b", "-p", "2", "-m", "2", "--data", data, "--no-compare"])
    };
    let e = run("/nonexistent/text.txt");
    assert!(e.contains("cannot read /nonexistent/text.txt") && e.contains("existing text file"), "{e}");
    let empty = temp_file("empty.txt", "");
    assert!(run(empty.to_str().unwrap()).contains("is empty"));
    // gpt-tiny reads sequences of 16 tokens: the validation tenth of 100 bytes holds 10.
    let short = temp_file("short.txt", &"x".repeat(100));
    let e = run(short.to_str().unwrap());
    assert!(e.contains("has 100 bytes") && e.contains("shorter than one sequence of seq+1 = 17 bytes"), "{e}");
}

#[test]
fn data_for_a_model_that_reads_rows() {
    let text = temp_file("text.txt", &"some text. ".repeat(100));
    let e = fails(&["run", "--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "2", "--data", text.to_str().unwrap()]);
    assert!(e.contains("model tiny reads rows, not text"), "{e}");
}

#[test]
fn a_model_file_with_heads_that_do_not_divide_the_width() {
    let file = temp_file(
        "heads.toml",
        "loss = \"cross_entropy\"\nbatch = 2\n[[layers]]\nkind = \"embedding\"\nvocab = 256\nwidth = 30\nseq = 8\n\
         [[layers]]\nkind = \"attention\"\nwidth = 30\nheads = 4\nseq = 8\n[[layers]]\nkind = \"linear\"\ninput = 30\noutput = 256\n",
    );
    let e = fails_with(&["run", "--model", file.to_str().unwrap(), "-s", "1f1b", "-p", "1", "-m", "1"], Some(2));
    assert!(e.contains("layer 1 (attention) has 4 heads, which do not divide its width 30"), "{e}");
}

#[test]
fn validate_on_synthetic_stages() {
    let e = fails(&["run", "--model", "synthetic:F=1ms", "-s", "1f1b", "-p", "2", "-m", "2", "--validate", "1"]);
    assert!(e.contains("--validate computes a loss; synthetic stages have none"), "{e}");
}

/// Without the `mpi` feature, `--transport mpi` says how to get it.
#[cfg(not(feature = "mpi"))]
#[test]
fn mpi_without_the_feature_says_how_to_build_it() {
    let e =
        fails(&["run", "--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "4", "--transport", "mpi", "--no-compare"]);
    assert!(e.contains("--features mpi") && e.contains("libopenmpi-dev"), "{e}");
    let e = fails(&["run", "--model", "tiny", "--transport", "tcp"]);
    assert!(e.contains("threads") && e.contains("mpi"), "{e}");
}

/// Injected faults of synthetic stages, on threads: the error names the rank and the action;
/// a fault placed where no stage is, or written wrong, is refused before anything runs.
#[test]
fn injected_faults_name_their_rank_and_bad_ones_are_refused() {
    let run = |model: &str| fails(&["run", "--model", model, "-s", "1f1b", "-p", "2", "-m", "4", "--no-compare"]);
    let e = run("synthetic:F=1ms,I=1ms,W=1ms,fail=1/2");
    assert!(e.contains("rank 1, step") && e.contains("1F2") && e.contains("injected fault"), "{e}");
    // A panic on purpose: the panic hook prints it, then the run ends with an error.
    let out =
        pipesched(&["run", "--model", "synthetic:F=1ms,I=1ms,W=1ms,panic=0/1", "-s", "1f1b", "-p", "2", "-m", "4"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("error: rank 0: the worker panicked: the injected fault"), "{e}");
    let e = run("synthetic:F=1ms,I=1ms,W=1ms,fail=5/0");
    assert!(e.contains("synthetic fault at stage 5") && e.contains("stages 0..2"), "{e}");
    let e = run("synthetic:F=1ms,I=1ms,W=1ms,fail=1");
    assert!(e.contains("give a stage and a micro-batch as S/J"), "{e}");
}

#[test]
fn steps_without_a_run_mode_or_both_modes() {
    let e = fails(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--steps", "3"]);
    assert!(e.contains("give --no-barrier or --async"), "{e}");
    let e = fails_with(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--no-barrier", "--async", "2bw"], Some(2));
    assert!(e.contains("cannot be used with"), "{e}");
    let e = fails_with(&["run", "--model", "tiny", "-s", "1f1b", "--async", "pipe"], Some(2));
    assert!(e.contains("choose pipedream or 2bw"), "{e}");
    // A CSV schedule has its micro-batches fixed: it cannot be streamed over steps.
    let csv = temp_file("stream.csv", "0F0,0B0\n");
    let e = fails(&["simulate", "--from-csv", csv.to_str().unwrap(), "--async", "pipedream", "--steps", "2"]);
    assert!(e.contains("not --from-csv"), "{e}");
    // 2BW over GPipe: the second step's forwards would need an update that comes after them.
    let e = fails(&["simulate", "-s", "gpipe", "-p", "2", "-m", "2", "--async", "2bw", "--steps", "3"]);
    assert!(e.contains("needs a barrier between steps"), "{e}");
    // auto builds one step for a limit, not a stream.
    let e = fails(&[
        "simulate",
        "-s",
        "auto",
        "--memory-limit",
        "40MiB",
        "--costs",
        "F=1,I=1,W=1",
        "--mem",
        "A=1MiB",
        "--async",
        "2bw",
    ]);
    assert!(e.contains("--async with -s auto"), "{e}");
    // A run too large for memory is refused before it is built.
    let e = fails(&["simulate", "-s", "1f1b", "-p", "2", "-m", "1000", "--no-barrier", "--steps", "3000000000"]);
    assert!(e.contains("needs an estimated"), "{e}");
}

#[test]
fn data_parallel_simulation_without_gradient_bytes_or_replicas() {
    let e = fails(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--dp", "2"]);
    assert!(e.contains("gradient bytes") && e.contains("--mem G="), "{e}");
    let e = fails(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--zero", "1", "--mem", "G=1MiB"]);
    assert!(e.contains("--zero 1") && e.contains("--dp D with D ≥ 2"), "{e}");
    let e = fails(&["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--dp", "2", "--mem", "G=1MiB", "--no-barrier"]);
    assert!(e.contains("--dp 2") && e.contains("--no-barrier"), "{e}");
}

#[test]
fn infer_m_zero() {
    let e = fails_with(&["infer", "--model", "tiny", "-p", "2", "-m", "0"], Some(2));
    assert!(e.contains("'--microbatches <M>': must be at least 1, got 0"), "{e}");
}

#[test]
fn infer_more_ranks_than_layers() {
    let e = fails_with(&["infer", "--model", "tiny", "-p", "9", "-m", "2"], Some(1));
    assert!(e.contains("9 stages for a model of 6 layers (tiny); use 1 to 6 stages"), "{e}");
}

#[test]
fn infer_a_training_schedule() {
    let e = fails_with(&["infer", "--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "2"], Some(1));
    assert!(e.contains("infer runs a forward-only schedule, and 1f1b trains"), "{e}");
}

#[test]
fn infer_synthetic_stages() {
    let e = fails_with(&["infer", "--model", "synthetic:F=1ms,I=1ms,W=1ms", "-p", "2"], Some(1));
    assert!(e.contains("synthetic stages have none"), "{e}");
}

#[test]
fn train_a_forward_only_schedule() {
    let e = fails_with(&["run", "--model", "tiny", "-s", "forward", "-p", "2", "-m", "2", "--steps", "1"], Some(1));
    assert!(e.contains("forward runs forwards only") && e.contains("pipesched infer"), "{e}");
}

#[test]
fn optimal_budget_below_the_least() {
    // tiny in one stage, 8 rows: the least budget is 209 floats per row (see ops.rs), 6688 B.
    let e = fails_with(
        &["run", "--model", "tiny", "-s", "1f1b", "-p", "1", "-m", "1", "--recompute", "optimal:6687"],
        Some(1),
    );
    assert!(e.contains("below the least budget") && e.contains("give at least optimal:6688B"), "{e}");
    let e = fails_with(
        &["run", "--model", "tiny", "-s", "1f1b", "-p", "1", "-m", "1", "--recompute", "optimal:4 parsecs"],
        Some(2),
    );
    assert!(e.contains("optimal:BYTES") && e.contains("unknown unit"), "{e}");
}
