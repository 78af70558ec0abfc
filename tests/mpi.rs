//! Ranks as MPI processes: `mpirun -n P pipesched run --transport mpi`, real processes on
//! loopback (`--oversubscribe`: more processes than cores is fine). Needs the `mpi` feature and
//! an MPI installation with `mpirun` (Debian: `libopenmpi-dev openmpi-bin`); `.ci/run`
//! installs them and runs `cargo test --features mpi --test mpi`.
#![cfg(feature = "mpi")]

mod common;

use std::process::{Command, Output};

use common::cli::{pipesched, report_of};

/// `pipesched run ARGS --transport mpi` under `mpirun -n n`.
fn mpirun(n: usize, args: &[&str]) -> Output {
    Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "-n", &n.to_string(), env!("CARGO_BIN_EXE_pipesched"), "run", "--transport", "mpi"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mpirun ({e}); install MPI (Debian: apt-get install openmpi-bin)"))
}

/// The JSON report rank 0 printed, after checking that every process exited cleanly.
fn report(n: usize, args: &[&str]) -> serde_json::Value {
    report_of(&mpirun(n, args), &format!("mpirun -n {n} {args:?}"))
}

/// The JSON report of `pipesched run ARGS` with ranks as threads of one process.
fn in_threads(args: &[&str]) -> serde_json::Value {
    report_of(&pipesched(&[&["run"][..], args].concat()), &format!("run {args:?}"))
}

/// Every schedule × recompute {none, full} on `tiny` at p = 2 and p = 4 (the two-chunk schedules
/// at p = 2: tiny's 6 layers make 4 stages, not 8): the gradients of every step bitwise equal to the
/// sequential reference, and every rank's measured peak of held bytes equal to its prediction.
#[test]
fn every_schedule_across_processes_gives_the_sequential_gradients_and_the_predicted_bytes() {
    for n in [2usize, 4] {
        for schedule in [
            "gpipe",
            "1f1b",
            "interleaved",
            "zb-h1",
            "zb-h2",
            "zb-v",
            "looped-bfs",
            "interleaved-zb",
            "v-half",
            "v-min",
            "dualpipev",
        ] {
            if matches!(
                schedule,
                "interleaved" | "zb-v" | "looped-bfs" | "interleaved-zb" | "v-half" | "v-min" | "dualpipev"
            ) && n == 4
            {
                continue;
            }
            for policy in ["none", "full"] {
                let m = if matches!(schedule, "zb-h2" | "interleaved" | "dualpipev") { 2 * n } else { n + 1 };
                let (p, m) = (n.to_string(), m.to_string());
                let args = [
                    "--model",
                    "tiny",
                    "-s",
                    schedule,
                    "-p",
                    &p,
                    "-m",
                    &m,
                    "--recompute",
                    policy,
                    "--steps",
                    "2",
                    "--warmup",
                    "1",
                    "--verify",
                    "--no-compare",
                    "--json",
                    "--timeout",
                    "20",
                ];
                let r = report(n, &args);
                let case = format!("n={n} {schedule} {policy}");
                assert_eq!(r["bitwise"], true, "{case}: {r}");
                assert_eq!(r["max_grad_diff"], 0.0, "{case}");
                assert_eq!(r["peak_held_bytes"], r["predicted_peak_held_bytes"], "{case}");
                assert_eq!(r["peak_held_bytes"].as_array().map(Vec::len), Some(n), "{case}: one peak per rank");
                assert!(r["loss"].as_f64().is_some_and(f64::is_finite), "{case}: the loss reaches rank 0");
            }
        }
    }
}

/// A GPT across two processes: token ids, attention and the token loss, selective recompute.
#[test]
fn gpt_tiny_across_processes_matches_the_sequential_reference() {
    let args = [
        "--model",
        "gpt-tiny",
        "-s",
        "zb-h1",
        "-p",
        "2",
        "-m",
        "3",
        "--recompute",
        "selective",
        "--steps",
        "2",
        "--warmup",
        "0",
        "--verify",
        "--no-compare",
        "--json",
    ];
    let r = report(2, &args);
    assert_eq!(r["bitwise"], true, "{r}");
    assert_eq!(r["peak_held_bytes"], r["predicted_peak_held_bytes"]);
}

/// The same run in one process and across processes: the same losses and validation losses,
/// bit for bit, step after step (the optimizer steps of both stay equal), and the same bytes
/// per stage from profiling, which runs across the processes too.
#[test]
fn processes_train_exactly_as_threads() {
    let args: Vec<&str> =
        "--model tiny -s 1f1b -p 2 -m 4 --steps 4 --warmup 0 --validate 2 --json".split_whitespace().collect();
    let across = report(2, &args);
    let threads = in_threads(&args);
    assert_eq!(across["losses"], threads["losses"]);
    assert_eq!(across["validation"].as_array().map(Vec::len), Some(2), "{across}");
    assert_eq!(across["validation"], threads["validation"]);
    assert_eq!(across["predicted_peak_held_bytes"], threads["predicted_peak_held_bytes"]);
    let bytes = |r: &serde_json::Value| -> Vec<serde_json::Value> {
        let stages = r["profiled_costs"]["stages"].as_array().cloned().unwrap_or_default();
        let keys = ["act_bytes", "recompute_bytes", "w_bytes", "fwd_msg_bytes", "bwd_msg_bytes"];
        stages.iter().map(|c| keys.iter().map(|k| c[*k].clone()).collect()).collect()
    };
    assert_eq!(bytes(&across).len(), 2, "{across}");
    assert_eq!(bytes(&across), bytes(&threads));
    assert_eq!(across["profiled_costs"]["static_bytes"], threads["profiled_costs"]["static_bytes"]);
}

/// Runs of many steps across processes — without a barrier, and asynchronous (PipeDream, 2BW) —
/// train exactly as threads do: the same losses and parameters, and held bytes, stashed weight
/// versions included, equal to the prediction on every rank.
#[test]
fn runs_without_a_barrier_and_on_stale_weights_train_as_threads() {
    for mode in ["--no-barrier", "--async pipedream", "--async 2bw"] {
        let line = format!("--model tiny -s 1f1b -p 2 -m 4 --steps 3 --warmup 0 --no-compare --json {mode}");
        let args: Vec<&str> = line.split_whitespace().collect();
        let across = report(2, &args);
        let threads = in_threads(&args);
        assert_eq!(across["losses"], threads["losses"], "{mode}");
        assert!(across["parameter_digest"].is_string(), "{across}");
        assert_eq!(across["parameter_digest"], threads["parameter_digest"], "{mode}");
        assert_eq!(across["peak_held_bytes"], across["predicted_peak_held_bytes"], "{mode}");
    }
}

/// `--save-params` across processes: rank 0 gathers every stage's tensors and writes the same
/// file threads write; `--init-params`: each process loads its own stages from it, and trains
/// on as threads do from it.
#[test]
fn parameters_files_are_saved_and_loaded_across_processes() {
    let dir = std::env::temp_dir().join(format!("pipesched-mpi-params-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (across, threads, resumed) =
        (dir.join("across.safetensors"), dir.join("threads.safetensors"), dir.join("resumed.safetensors"));
    let line = "--model gpt-tiny -s 1f1b -m 4 --steps 2 --warmup 0 --no-compare --json";
    let args: Vec<&str> = line.split_whitespace().collect();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    report(2, &[&args[..], &["-p", "2", "--save-params", &path(&across)]].concat());
    in_threads(&[&args[..], &["-p", "2", "--save-params", &path(&threads)]].concat());
    let (a, t) = (std::fs::read(&across).unwrap(), std::fs::read(&threads).unwrap());
    let file = |bytes: &[u8]| pipesched_stages::ParamsFile::from_bytes("f", bytes).unwrap();
    let (fa, ft) = (file(&a), file(&t));
    assert_eq!(fa.len(), ft.len());
    for name in ft.names() {
        assert!(fa.get(name).unwrap().bit_eq(ft.get(name).unwrap()), "{name}");
    }
    // Loaded at p = 4, each process its own stages, and saved again.
    let four = report(
        4,
        &[&args[..], &["-p", "4", "--init-params", &path(&across), "--save-params", &path(&resumed)]].concat(),
    );
    let one = in_threads(&[&args[..], &["-p", "1", "--init-params", &path(&threads)]].concat());
    assert_eq!(four["losses"], one["losses"]);
    assert_eq!(file(&std::fs::read(&resumed).unwrap()).len(), ft.len());
}

/// `pipesched profile` across processes: every process profiles its own stages (a V placement,
/// so each holds two), and rank 0 writes the same bytes per stage as one process does.
#[test]
fn profiling_across_processes_measures_every_stage() {
    let dir = std::env::temp_dir().join(format!("pipesched-mpi-profile-{}", std::process::id()));
    let (one, many) = (dir.join("one"), dir.join("many"));
    let args = |out: &std::path::Path| -> Vec<String> {
        ["profile", "--model", "gpt-tiny", "-s", "zb-v", "-p", "2", "--recompute", "selective", "--out"]
            .iter()
            .map(|s| s.to_string())
            .chain([out.display().to_string()])
            .collect()
    };
    let out = Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "-n", "2", env!("CARGO_BIN_EXE_pipesched")])
        .args(args(&many))
        .args(["--transport", "mpi"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alone = Command::new(env!("CARGO_BIN_EXE_pipesched")).args(args(&one)).output().unwrap();
    assert!(alone.status.success(), "{}", String::from_utf8_lossy(&alone.stderr));
    let read = |d: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("costs.json")).unwrap()).unwrap()
    };
    let (a, b) = (read(&one), read(&many));
    let _ = std::fs::remove_dir_all(&dir);
    let stages = |v: &serde_json::Value| v["stages"].as_array().cloned().unwrap_or_default();
    assert_eq!(stages(&b).len(), 4, "{b}");
    for (x, y) in stages(&a).iter().zip(&stages(&b)) {
        for key in ["act_bytes", "recompute_bytes", "w_bytes", "fwd_msg_bytes", "bwd_msg_bytes"] {
            assert_eq!(x[key], y[key], "{key}: {x} vs {y}");
        }
        assert!(y["f"].as_f64().is_some_and(|t| t > 0.0), "{y}");
    }
    assert_eq!(a["static_bytes"], b["static_bytes"]);
    // Across processes the latency and the bandwidth are the link test's, through MPI; between
    // threads there is no bandwidth to charge.
    assert!(b["latency"].as_f64().is_some_and(|c| c > 0.0 && c.is_finite()), "{b}");
    assert!(b["bandwidth"].as_f64().is_some_and(|bw| bw > 0.0 && bw.is_finite()), "{b}");
    assert!(a.get("bandwidth").is_none_or(serde_json::Value::is_null), "{a}");
    assert_eq!(b["layout"]["placement"], "v");
}

/// Data parallelism: `-p 2 --dp 2` on 4 processes, each replica taking 3 of the step's 6
/// micro-batches. Every step's gradients are bitwise those of the sequential reference of the
/// whole step, each replica's share run from the same parameters and the shares' gradients added
/// in replica order — which is how the replicas add them — for a schedule with `B` and one with
/// split `I`/`W`, with recompute. The loss of the first step is the loss of one pipeline running
/// all 6 micro-batches, bit for bit (the same forwards), and two runs give the same bits.
#[test]
fn data_parallel_replicas_give_the_sequential_gradients_of_the_global_batch() {
    for (schedule, policy) in [("1f1b", "none"), ("zb-h1", "full")] {
        let line = format!(
            "--model tiny -s {schedule} -p 2 -m 3 --recompute {policy} --dp 2 --steps 3 --warmup 0 --verify --no-compare --json"
        );
        let args: Vec<&str> = line.split_whitespace().collect();
        let r = report(4, &args);
        let case = format!("{schedule} {policy}");
        assert_eq!(r["bitwise"], true, "{case}: {r}");
        assert_eq!(r["max_grad_diff"], 0.0, "{case}");
        assert_eq!(r["peak_held_bytes"], r["predicted_peak_held_bytes"], "{case}");
        let again = report(4, &args);
        assert_eq!(r["losses"], again["losses"], "{case}: two runs differ");
        let global = format!(
            "--model tiny -s {schedule} -p 2 -m 6 --recompute {policy} --steps 1 --warmup 0 --no-compare --json"
        );
        let one = in_threads(&global.split_whitespace().collect::<Vec<_>>());
        assert_eq!(r["losses"][0], one["losses"][0], "{case}: the global batch's loss");
    }
}

/// Three replicas (`-p 2 --dp 3`, 6 processes): each replica owns a third of every stage's
/// gradients — thirds of unequal length, tiny's parameter counts not dividing by 3 — adds the
/// three parts of its third in replica order and sends it to the others; the sum is bitwise the
/// sequential reference's over the global batch, and with ZeRO-1 (each keeping its third) the
/// parameters after 3 steps are bitwise those without it.
#[test]
fn three_replicas_sum_their_slices_as_the_reference_sums_the_whole() {
    let line = "--model tiny -s zb-h1 -p 2 -m 2 --dp 3 --steps 3 --warmup 0 --no-compare --json";
    let args: Vec<&str> = line.split_whitespace().collect();
    let verified = report(6, &[&args[..], &["--verify"]].concat());
    assert_eq!(verified["bitwise"], true, "{verified}");
    assert_eq!(verified["max_grad_diff"], 0.0);
    assert_eq!(verified["peak_held_bytes"], verified["predicted_peak_held_bytes"]);
    let (whole, sharded) = (report(6, &args), report(6, &[&args[..], &["--zero", "1"]].concat()));
    assert!(whole["parameter_digest"].is_string(), "{whole}");
    assert_eq!(whole["parameter_digest"], sharded["parameter_digest"]);
    assert_eq!(whole["losses"], verified["losses"]);
    assert_eq!(sharded["peak_held_bytes"], sharded["predicted_peak_held_bytes"]);
}

/// A plan made for two replicas with ZeRO-1 (`plan --dp 2 --zero 1`) runs on 4 processes
/// with every rank holding, to the byte, the peak the plan predicted — the sum's buffer and the
/// optimizer slice included.
#[test]
fn a_plan_over_replicas_holds_its_predicted_bytes() {
    let dir = std::env::temp_dir().join(format!("pipesched-plan-dp-{}", std::process::id()));
    let d = dir.to_str().unwrap();
    let line = format!("plan --model tiny -p 2 --batch 16 --memory-cap 1GiB --dp 2 --zero 1 --out {d} --json");
    let planned = report_of(&pipesched(&line.split_whitespace().collect::<Vec<_>>()), "plan --dp 2 --zero 1");
    let file = dir.join("plan.json");
    let r = report(
        4,
        &[
            "--plan",
            file.to_str().unwrap(),
            "--dp",
            "2",
            "--zero",
            "1",
            "--steps",
            "2",
            "--warmup",
            "0",
            "--no-compare",
            "--json",
        ],
    );
    assert_eq!(r["peak_held_bytes"], planned["plan"]["predicted_peak_held_bytes"], "{r}");
    assert_eq!(r["static_bytes"], planned["plan"]["static_bytes"], "{r}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// ZeRO stage 1 (`--zero 1`): after 5 Adam steps the parameters are bitwise those of the same
/// run without it (equal digests, equal losses), and every rank's static bytes hold only its
/// replica's slice of the optimizer state: with L parameters on a rank's one stage, parameters,
/// gradients, Adam's two moments and the sum's `f32` buffer are 20·L bytes, and 12·L + 8·⌈L/2⌉
/// with the state sharded over 2 replicas (replica 0's slice is the longer one) — what
/// `pipesched memory --dp 2 --zero 1` reports (`tests/memory_report.rs`). The ledger and its
/// prediction agree.
#[test]
fn zero_one_shards_the_optimizer_state_and_keeps_the_parameters() {
    let run = |zero: &str| {
        let line =
            format!("--model tiny -s zb-h1 -p 2 -m 3 --dp 2 --zero {zero} --steps 5 --warmup 0 --no-compare --json");
        report(4, &line.split_whitespace().collect::<Vec<_>>())
    };
    let (whole, sharded) = (run("0"), run("1"));
    assert!(whole["parameter_digest"].is_string(), "{whole}");
    assert_eq!(whole["parameter_digest"], sharded["parameter_digest"]);
    assert_eq!(whole["losses"], sharded["losses"]);
    let statics = |r: &serde_json::Value| -> Vec<u64> {
        r["static_bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect()
    };
    for (full, shard) in statics(&whole).into_iter().zip(statics(&sharded)) {
        assert_eq!(full % 20, 0);
        let l = full / 20;
        assert_eq!(shard, 12 * l + 8 * l.div_ceil(2), "{full} B → {shard} B");
    }
    let memory = pipesched(&[
        "memory", "--model", "tiny", "-s", "zb-h1", "-p", "2", "-m", "3", "--dp", "2", "--zero", "1", "--json",
    ]);
    let memory = report_of(&memory, "memory --dp 2 --zero 1");
    let held: Vec<u64> = memory["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["model_state_bytes"].as_u64().unwrap() + r["sum_buffer_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(held, statics(&sharded), "the memory report's static bytes are the run's");
    assert_eq!(sharded["peak_held_bytes"], sharded["predicted_peak_held_bytes"]);
}

/// LoRA across processes and replicas: gpt-tiny's adapters train on 4 processes (p = 2, two
/// replicas) with the gradients of the sequential reference over the global batch, bit for bit,
/// and the predicted peaks; sharding their optimizer state (`--zero 1`) leaves the parameters
/// as they were without it.
#[test]
fn lora_across_processes_and_replicas_trains_the_adapters_as_the_reference() {
    let run = |zero: &str, verify: &str| {
        let line = format!(
            "--model gpt-tiny -s 1f1b -p 2 -m 2 --dp 2 --zero {zero} --lora 2 --steps 3 --warmup 0 {verify} --no-compare --json"
        );
        report(4, &line.split_whitespace().collect::<Vec<_>>())
    };
    let r = run("0", "--verify");
    assert_eq!(r["bitwise"], true, "{r}");
    assert_eq!(r["max_grad_diff"], 0.0);
    assert_eq!(r["peak_held_bytes"], r["predicted_peak_held_bytes"]);
    let (whole, sharded) = (run("0", ""), run("1", ""));
    assert_eq!(whole["parameter_digest"], sharded["parameter_digest"]);
    assert_eq!(whole["losses"], r["losses"]);
    assert_eq!(sharded["peak_held_bytes"], sharded["predicted_peak_held_bytes"]);
}

/// Mixed precision across processes and replicas. On 2 processes, `mixed-bf16` and `mixed-f16`
/// (from a loss scale of 2²⁰, so dynamic scaling skips steps) train exactly as threads: the same
/// losses, skipped steps, final scale and parameters. With 2 replicas the gradients are the
/// sequential reference's over the global batch bit for bit (16-bit activations and gradients
/// cross as they are kept; the replicas' sum, added in f32, is rounded once to the stored
/// format, as the reference rounds it), every rank skips the same steps, and ZeRO stage 1
/// leaves the parameters as they were while each rank keeps its slice of the f32 master
/// weights and Adam moments: 2 + 2 bytes per parameter and 4 for the sum's f32 buffer, 12 per
/// parameter of the slice.
#[test]
fn mixed_precision_across_processes_and_replicas_trains_as_the_reference() {
    let scaled = |precision: &str| if precision == "mixed-f16" { " --loss-scale 1048576" } else { "" };
    for precision in ["mixed-bf16", "mixed-f16"] {
        let line = format!(
            "--model tiny -s 1f1b -p 2 -m 4 --steps 10 --warmup 0 --precision {precision}{} --no-compare --json",
            scaled(precision)
        );
        let args: Vec<&str> = line.split_whitespace().collect();
        let across = report(2, &args);
        let threads = in_threads(&args);
        for key in ["losses", "skipped_steps", "loss_scale", "parameter_digest", "predicted_peak_held_bytes"] {
            assert_eq!(across[key], threads[key], "{precision}: {key}");
        }
        if precision == "mixed-f16" {
            assert!(!across["skipped_steps"].as_array().unwrap().is_empty(), "{across}");
        }
        let run = |zero: &str, verify: &str| {
            let line = format!(
                "--model tiny -s zb-h1 -p 2 -m 3 --dp 2 --zero {zero} --steps 6 --warmup 0 --precision {precision}{} {verify} --no-compare --json",
                scaled(precision)
            );
            report(4, &line.split_whitespace().collect::<Vec<_>>())
        };
        let r = run("0", "--verify");
        assert_eq!(r["bitwise"], true, "{precision}: {r}");
        assert_eq!(r["max_grad_diff"], 0.0, "{precision}");
        assert_eq!(r["peak_held_bytes"], r["predicted_peak_held_bytes"], "{precision}");
        let (whole, sharded) = (run("0", ""), run("1", ""));
        for key in ["losses", "skipped_steps", "loss_scale", "parameter_digest"] {
            assert_eq!(whole[key], sharded[key], "{precision}: {key} with and without ZeRO-1");
        }
        assert_eq!(whole["losses"], r["losses"], "{precision}");
        let statics = |r: &serde_json::Value| -> Vec<u64> {
            r["static_bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect()
        };
        for (full, shard) in statics(&whole).into_iter().zip(statics(&sharded)) {
            // 2 + 2 + 4 + 8 bytes per parameter, and the sum's f32 buffer: 4 more.
            assert_eq!(full % 20, 0, "{precision}: 20 bytes per parameter");
            let l = full / 20;
            assert_eq!(shard, 8 * l + 12 * l.div_ceil(2), "{precision}: {full} B → {shard} B");
        }
        assert_eq!(sharded["peak_held_bytes"], sharded["predicted_peak_held_bytes"], "{precision}");
    }
}

/// With profiled costs, a data-parallel run's report adds each stage's sum over the replicas to
/// the simulation: rank 0's step then ends after the simulated makespan (its last backward), by
/// one sum of its stage's gradients; and the measured end of its sums is reported beside it.
#[test]
fn data_parallel_reports_the_sums_measured_and_simulated() {
    let r = report(4, &["--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "3", "--dp", "2", "--steps", "2", "--json"]);
    let measured = r["sums_done_s"].as_f64().expect("sums_done_s");
    let simulated = r["simulated_step_with_sums_s"].as_f64().expect("simulated_step_with_sums_s");
    let makespan_ms = r["comparison"]["makespan"][1].as_f64().unwrap();
    assert!(measured > 0.0 && measured.is_finite(), "{r}");
    assert!(simulated * 1e3 > makespan_ms, "the sums end after the last backward: {simulated} s vs {makespan_ms} ms");
    let single = report(2, &["--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "3", "--steps", "2", "--json"]);
    assert!(single.get("sums_done_s").is_none() && single.get("simulated_step_with_sums_s").is_none());
    // A pipeline of one rank has no link of its own: the replicas' link is timed for the sums.
    let one =
        report(2, &["--model", "tiny", "-s", "1f1b", "-p", "1", "-m", "3", "--dp", "2", "--steps", "2", "--json"]);
    let costs = &one["profiled_costs"];
    assert!(costs["latency"].as_f64().is_some_and(|c| c > 0.0 && c.is_finite()), "{costs}");
    assert!(costs["bandwidth"].as_f64().is_some_and(|b| b > 0.0 && b.is_finite()), "{costs}");
}

/// The measured trace of a data-parallel step holds each stage's sum over the replicas as a
/// span of its own: from the end of the stage's last backward to when the process had the sum,
/// over the stage's gradient bytes.
#[test]
fn data_parallel_sums_are_spans_of_the_measured_trace() {
    let dir = std::env::temp_dir().join(format!("pipesched-dp-trace-{}", std::process::id()));
    let out = dir.to_str().unwrap();
    let r = report(
        4,
        &[
            "--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "3", "--dp", "2", "--steps", "2", "--json", "--trace",
            "--out", out,
        ],
    );
    let text = std::fs::read_to_string(dir.join("1f1b.trace.json")).expect("the Chrome trace");
    let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let sums: Vec<&serde_json::Value> = events.iter().filter(|e| e["cat"] == "sum").collect();
    assert_eq!(sums.len(), 2, "one sum per stage: {sums:?}");
    let mut total = 0;
    for sum in &sums {
        let stage = sum["args"]["stage"].as_u64().unwrap() as usize;
        let last_backward = events
            .iter()
            .filter(|e| e["cat"] != "sum" && e["ph"] == "X" && e["args"]["stage"].as_u64() == Some(stage as u64))
            .filter(|e| e["args"]["op"] == "B")
            .map(|e| e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap())
            .fold(0.0, f64::max);
        let (ts, dur) = (sum["ts"].as_f64().unwrap(), sum["dur"].as_f64().unwrap());
        assert!(
            ts >= last_backward - 1e-6 && dur >= 0.0,
            "stage {stage}: sum at {ts} for {dur}, last B ended {last_backward}"
        );
        total += sum["args"]["bytes"].as_u64().unwrap();
    }
    // Both stages' gradients: tiny's 7,853 parameters, in f32.
    assert_eq!(total, 4 * 7_853, "{sums:?}");
    assert!(r["sums_done_s"].as_f64().unwrap() > 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--dp` where it cannot run: a world that does not split into equal pipelines, and threads.
#[test]
fn data_parallelism_needs_p_times_d_processes() {
    let out = mpirun(3, &["--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "4", "--dp", "2", "--no-compare"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 MPI processes cannot make 2 pipeline replicas of equal size"), "{stderr}");
    let out = mpirun(6, &["--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "4", "--dp", "2", "--no-compare"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("6 MPI processes for 2 pipelines (--dp 2) of p=2 ranks; launch one process per rank of every pipeline: `mpirun -n 4 …`"),
        "{stderr}"
    );
    let threads = Command::new(env!("CARGO_BIN_EXE_pipesched"))
        .args(["run", "--model", "tiny", "-p", "2", "-m", "4", "--dp", "2"])
        .output()
        .unwrap();
    assert!(!threads.status.success());
    assert!(String::from_utf8_lossy(&threads.stderr).contains("--dp 2 runs pipeline replicas as MPI processes"));
    let out =
        mpirun(4, &["--model", "synthetic:F=1ms", "-s", "1f1b", "-p", "2", "-m", "4", "--dp", "2", "--no-compare"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dp: synthetic stages have no gradients to sum"));
    let out = mpirun(2, &["--model", "tiny", "-p", "2", "-m", "4", "--zero", "1", "--no-compare"]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--zero 1 shards the optimizer state across data-parallel replicas; add --dp D with D ≥ 2"));
    let out = mpirun(4, &["--model", "tiny", "-p", "2", "-m", "4", "--dp", "2", "--zero", "1", "--verify"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--verify compares every stage's summed gradients"));
}

/// More or fewer processes than ranks: a clear error, not a hang.
#[test]
fn a_world_size_other_than_p_is_refused() {
    let out = mpirun(3, &["--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "4", "--steps", "1", "--no-compare"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("3 MPI processes for a pipeline of p=2 ranks; launch one process per rank: `mpirun -n 2 …`"),
        "{stderr}"
    );
    // Outside mpirun the process is a world of one.
    let alone = Command::new(env!("CARGO_BIN_EXE_pipesched"))
        .args(["run", "--transport", "mpi", "--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "4", "--no-compare"])
        .output()
        .unwrap();
    assert!(!alone.status.success());
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(stderr.contains("1 MPI processes for a pipeline of p=2 ranks"), "{stderr}");
}

/// An injected error, then an injected panic, on rank 2 of 4 mid-step: every process exits
/// within the bound, rank 0 and the others name the failed rank and its action, and `mpirun`
/// exits non-zero.
#[test]
fn a_failing_rank_ends_every_process_naming_it() {
    for (fault, says) in
        [("fail", "rank 2, step 5 (2F3): the injected fault"), ("panic", "rank 2: the worker panicked")]
    {
        let model = format!("synthetic:F=2ms,I=2ms,W=2ms,{fault}=2/3");
        let started = std::time::Instant::now();
        let out = mpirun(4, &["--model", &model, "-s", "1f1b", "-p", "4", "-m", "8", "--steps", "3", "--no-compare"]);
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{fault}: mpirun must fail");
        assert!(stderr.contains(says), "{fault}: {stderr}");
        let others = stderr.matches(&format!("stopped because {says}")).count();
        assert_eq!(others, 3, "{fault}: each of the other ranks names rank 2: {stderr}");
        // Start-up included; the stop itself takes well under a second here.
        assert!(took < std::time::Duration::from_secs(15), "{fault}: {took:?}");
    }
}

/// The processes of one `mpirun` job running `pipesched`, by MPI rank (Linux: read from each
/// process's environment).
fn ranks_of_job(marker: &str) -> Vec<(usize, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let has = |hay: &[u8], needle: &str| hay.split(|b| *b == 0).any(|w| w == needle.as_bytes());
        if !has(&cmdline, marker) || !String::from_utf8_lossy(&cmdline).contains("pipesched") {
            continue;
        }
        let rank = environ
            .split(|b| *b == 0)
            .find_map(|w| String::from_utf8_lossy(w).strip_prefix("OMPI_COMM_WORLD_RANK=").map(|r| r.parse().ok()))
            .flatten();
        if let Some(rank) = rank {
            found.push((rank, pid));
        }
    }
    found
}

/// A rank killed with SIGKILL mid-run: `mpirun` ends the others and exits non-zero, naming the
/// lost rank, and no process of the job is left.
#[test]
fn a_killed_rank_ends_the_job() {
    // A model spec no other test uses marks this job's processes.
    let model = "synthetic:F=3ms,I=3ms,W=3ms,msg=1031B";
    let child = Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args([
            "--oversubscribe",
            "-n",
            "3",
            env!("CARGO_BIN_EXE_pipesched"),
            "run",
            "--transport",
            "mpi",
            "--model",
            model,
        ])
        .args(["-s", "1f1b", "-p", "3", "-m", "6", "--steps", "2000", "--no-compare"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mpirun starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let victim = loop {
        let ranks = ranks_of_job(model);
        if ranks.len() == 3 {
            // Let the ranks get into their steps.
            std::thread::sleep(std::time::Duration::from_millis(500));
            break ranks.into_iter().find(|(r, _)| *r == 1).expect("rank 1").1;
        }
        assert!(std::time::Instant::now() < deadline, "the job's 3 processes never appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let killed = std::time::Instant::now();
    assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let took = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("rank 1") && stderr.contains("signal 9"), "{stderr}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    assert!(ranks_of_job(model).is_empty(), "a process of the job is left");
}

/// A wait that times out across processes: the waiting rank's report places it on the grid and
/// says the rank it waits for is another process; every process exits non-zero.
#[test]
fn a_hang_across_processes_is_reported_by_the_waiting_rank() {
    let args = ["--model", "synthetic:F=300ms,I=1ms,W=1ms", "-s", "1f1b", "-p", "2", "-m", "2", "--steps", "1"];
    let out = mpirun(2, &[&args[..], &["--warmup", "0", "--no-compare", "--timeout", "100ms"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("pipeline hang: rank 1 waited 100ms"), "{stderr}");
    assert!(stderr.contains("needs 0F0 from rank 0 (its step 0; rank 0 is another process)"), "{stderr}");
}
