//! `pipesched schedule` and `pipesched simulate` end to end: the JSON keys scripts rely on, the
//! golden numbers through the CLI, and the CSV round trip through files.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pipesched")).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn json_has_the_stable_keys_and_golden_values() {
    let text = run(&["simulate", "-s", "zb-h2", "-p", "8", "-m", "24", "--costs", "F=5,I=6,W=4,C=1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "schedule",
        "p",
        "m",
        "v",
        "makespan",
        "ideal",
        "bubble_rate",
        "steady_period",
        "steady_bubble_rate",
        "peak_memory_bytes",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {text}");
    }
    assert_eq!(v["schedule"], "zb-h2");
    assert_eq!(v["makespan"], 402.0);
    assert_eq!(v["steady_period"], 395.0);
    assert_eq!(v["peak_memory_bytes"].as_array().unwrap().len(), 8);
}

#[test]
fn interleaved_defaults_to_two_chunks() {
    let text = run(&["simulate", "-s", "interleaved", "-p", "4", "-m", "8", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["v"], 2);
    assert_eq!(v["makespan"], 28.5);
}

#[test]
fn memory_flags_reach_the_simulator() {
    let text = run(&["simulate", "-s", "1f1b", "-p", "4", "-m", "8", "--mem", "A=1MiB,S=1KiB", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let peaks: Vec<u64> = v["peak_memory_bytes"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(peaks, (0..4u64).map(|r| (4 - r) * (1 << 20) + 1024).collect::<Vec<_>>());
}

/// `R=` bytes belong to the stages that recompute: under `--recompute none,full`, 1F1B's rank 0
/// keeps its p = 2 micro-batches (2 MiB) and re-creates nothing, rank 1 keeps one and holds the
/// 2 MiB its `R` re-creates on top of it.
#[test]
fn recompute_bytes_count_only_on_the_stages_that_recompute() {
    let text = run(&[
        "simulate",
        "-s",
        "1f1b",
        "-p",
        "2",
        "-m",
        "4",
        "--recompute",
        "none,full",
        "--mem",
        "A=1MiB,R=2MiB",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let peaks: Vec<u64> = v["peak_held_bytes"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(peaks, vec![2 << 20, 3 << 20]);
}

/// GPipe at p = 4, m = 8 with F = I = 1 ms, W = 0.5 ms: (m+p−1)(F+I+W) + (p−1)(d_a + d_g), each
/// message d = C + b/B = 0.05 ms + 16 MiB at 10 GB/s; the same from flags and from a cost file.
#[test]
fn bandwidth_lengthens_each_message_by_its_bytes() {
    let makespan = |args: &[&str]| {
        let mut all = vec!["simulate", "-s", "gpipe", "-p", "4", "-m", "8", "--json"];
        all.extend_from_slice(args);
        serde_json::from_str::<serde_json::Value>(&run(&all)).unwrap()["makespan"].as_f64().unwrap()
    };
    let flags = ["--costs", "F=1ms,I=1ms,W=0.5ms,C=50us", "--mem", "M=16MiB"];
    let d = 0.05 + (16u64 << 20) as f64 / 1e7;
    let with_bw = makespan(&[&flags[..], &["--bandwidth", "10GB/s"]].concat());
    assert!((with_bw - (11.0 * 2.5 + 3.0 * 2.0 * d)).abs() < 1e-9, "{with_bw}");
    assert!((makespan(&flags) - (11.0 * 2.5 + 3.0 * 2.0 * 0.05)).abs() < 1e-9);
    let dir = std::env::temp_dir().join(format!("pipesched-bw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("costs.json");
    std::fs::write(
        &path,
        r#"{"per_rank": {"f": 1, "i": 1, "w": 0.5, "fwd_msg_bytes": 16777216, "bwd_msg_bytes": 16777216},
            "latency": 0.05, "bandwidth": 1e7, "time_unit": "ms"}"#,
    )
    .unwrap();
    let from_file = makespan(&["--costs-file", path.to_str().unwrap()]);
    assert!((from_file - with_bw).abs() < 1e-9, "{from_file} vs {with_bw}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_out_and_back_in_gives_the_same_simulation() {
    let dir = std::env::temp_dir().join(format!("pipesched-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2"] {
        let csv = run(&["schedule", "-s", name, "-p", "4", "-m", "8", "--format", "csv"]);
        let path = dir.join(format!("{name}.csv"));
        std::fs::write(&path, &csv).unwrap();
        let from_csv = run(&["simulate", "--from-csv", path.to_str().unwrap(), "--costs", "F=1,I=2,W=1", "--json"]);
        let direct = run(&["simulate", "-s", name, "-p", "4", "-m", "8", "--costs", "F=1,I=2,W=1", "--json"]);
        let a: serde_json::Value = serde_json::from_str(&from_csv).unwrap();
        let b: serde_json::Value = serde_json::from_str(&direct).unwrap();
        assert_eq!(a["makespan"], b["makespan"], "{name}");
        assert_eq!(a["v"], b["v"], "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn grid_and_json_formats() {
    let grid = run(&["schedule", "-s", "1f1b", "-p", "2", "-m", "2"]);
    assert_eq!(grid, "  step    0    1    2    3    4    5\nrank 0  0F0  0F1    .  0B0    .  0B1\nrank 1    .  1F0  1B0  1F1  1B1    .\n");
    let json = run(&["schedule", "-s", "1f1b", "-p", "2", "-m", "2", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["lanes"][1], serde_json::json!(["1F0", "1B0", "1F1", "1B1"]));
}

#[test]
fn runs_without_a_barrier_reach_the_closed_form_periods() {
    // DESIGN: steps back to back repeat at steady_period − m(F+I+W) = (p−1)(F+I+W) for 1F1B,
    // (p−1)(F+I−W) for ZB-H1 and (p−1)(F+I−2W) for ZB-H2; at p = 8, m = 32, F = I = 2, W = 1:
    // 160 + 35, 160 + 21, 160 + 14.
    for (s, want) in [("1f1b", 195.0), ("zb-h1", 181.0), ("zb-h2", 174.0)] {
        let args = [
            "simulate",
            "-s",
            s,
            "-p",
            "8",
            "-m",
            "32",
            "--costs",
            "F=2,I=2,W=1",
            "--no-barrier",
            "--steps",
            "5",
            "--json",
        ];
        let v: serde_json::Value = serde_json::from_str(&run(&args)).unwrap();
        assert_eq!(v["run"]["period"], want, "{s}");
        assert_eq!(v["run"]["step_ends"].as_array().unwrap().len(), 5);
    }
    // PipeDream and 2BW stream 1F1B with no flush: no bubble in the steady state, and the first
    // stage stashes p − 1 versions under PipeDream, one under 2BW.
    for (kind, stashed) in [("pipedream", [3, 2, 1, 0]), ("2bw", [1, 1, 1, 1])] {
        let args = [
            "simulate",
            "-s",
            "1f1b",
            "-p",
            "4",
            "-m",
            "8",
            "--costs",
            "F=1,I=1,W=1",
            "--async",
            kind,
            "--steps",
            "6",
            "--json",
        ];
        let v: serde_json::Value = serde_json::from_str(&run(&args)).unwrap();
        assert_eq!(v["run"]["period"], 24.0, "{kind}");
        assert_eq!(v["run"]["period_bubble_rate"], 0.0, "{kind}");
        assert_eq!(v["run"]["peak_stashed_versions"], serde_json::json!(stashed), "{kind}");
    }
}

fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pipesched")).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(err.starts_with("error:") && !err.contains("panicked"), "{args:?}: {err}");
    err
}

/// `-s auto` under `--memory-limit`: the simulated peak stays within the limit (on top of the
/// static bytes), the step is no longer than 1F1B's, and `schedule` prints the same schedule.
#[test]
fn auto_schedules_under_the_memory_limit() {
    let costs = ["--costs", "F=2,I=2,W=1,C=0.25", "--mem", "A=2MiB,W=1MiB,S=1KiB"];
    let simulate = |kind: &str, extra: &[&str]| {
        let mut args = vec!["simulate", "-s", kind, "-p", "4", "-m", "12", "--json"];
        args.extend_from_slice(&costs);
        args.extend_from_slice(extra);
        serde_json::from_str::<serde_json::Value>(&run(&args)).unwrap()
    };
    let auto = simulate("auto", &["--memory-limit", "8MiB"]);
    assert_eq!(auto["schedule"], "auto");
    for peak in auto["peak_held_bytes"].as_array().unwrap() {
        assert!(peak.as_u64().unwrap() <= (8 << 20) + 1024, "{auto}");
    }
    assert!(auto["makespan"].as_f64().unwrap() <= simulate("1f1b", &[])["makespan"].as_f64().unwrap());
    let steady = simulate("auto", &["--memory-limit", "16MiB", "--objective", "steady"]);
    assert!(steady["steady_period"].as_f64().unwrap() <= simulate("zb-h2", &[])["steady_period"].as_f64().unwrap());
    let mut args = vec!["schedule", "-s", "auto", "-p", "4", "-m", "12", "--memory-limit", "8MiB", "--format", "csv"];
    args.extend_from_slice(&costs);
    let csv = run(&args);
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.starts_with("0F0,"), "{csv}");
}

#[test]
fn auto_without_a_limit_or_below_one_microbatch_is_a_clear_error() {
    let e = fails(&["simulate", "-s", "auto", "-p", "4", "-m", "8", "--mem", "A=2MiB,W=1MiB"]);
    assert!(e.contains("--memory-limit BYTES"), "{e}");
    let e =
        fails(&["simulate", "-s", "auto", "-p", "4", "-m", "8", "--mem", "A=2MiB,W=1MiB", "--memory-limit", "1MiB"]);
    assert!(e.contains("at least 2097152 bytes"), "{e}");
    let e = fails(&["schedule", "-s", "1f1b", "--memory-limit", "1MiB"]);
    assert!(e.contains("--memory-limit is the limit -s auto schedules under"), "{e}");
    let e = fails(&["schedule", "-s", "1f1b", "--costs", "F=1"]);
    assert!(e.contains("are what -s auto is built for"), "{e}");
}

#[test]
fn data_parallel_sums_follow_each_stages_last_backward() {
    // 1F1B p = 4, m = 8, F = I = W = 1 (B = 2), no latency: the compute ends at 33 on rank 0.
    // D = 2 replicas, 100 gradient bytes per rank over 50 bytes per unit: a sum sends a slice of
    // 50 bytes and then the summed slice, 2 units; rank r's last B ends at 33 − 2r, so its sum
    // ends 2 later.
    let args = ["simulate", "-s", "1f1b", "-p", "4", "-m", "8", "--mem", "G=100B", "--bandwidth", "50B", "--json"];
    let v: serde_json::Value = serde_json::from_str(&run(&[&args[..], &["--dp", "2"]].concat())).unwrap();
    assert_eq!(v["makespan"], 33.0);
    let dp = &v["data_parallel"];
    assert_eq!((dp["replicas"].as_u64(), dp["zero"].as_u64()), (Some(2), Some(0)));
    for r in 0..4 {
        let sum = &dp["sums"][r][0];
        let start = 33.0 - 2.0 * r as f64;
        assert_eq!((sum["stage"].as_u64(), sum["bytes"].as_u64()), (Some(r as u64), Some(100)));
        assert_eq!((sum["start"].as_f64(), sum["end"].as_f64()), (Some(start), Some(start + 2.0)));
    }
    assert_eq!((dp["step_end"].as_f64(), dp["exposed"].as_f64()), (Some(35.0), Some(2.0)));
    // ZeRO-1, D = 4: one phase of 3 slices of 25 bytes: 1.5 units.
    let v: serde_json::Value =
        serde_json::from_str(&run(&[&args[..], &["--dp", "4", "--zero", "1"]].concat())).unwrap();
    assert_eq!(v["data_parallel"]["exposed"].as_f64(), Some(1.5));
    // Without --dp there is nothing to sum, and the JSON says nothing of it.
    let v: serde_json::Value = serde_json::from_str(&run(&args)).unwrap();
    assert!(v.get("data_parallel").is_none());
}
