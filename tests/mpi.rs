//! Ranks as MPI processes: `mpirun -n P pipesched run --transport mpi`, real processes on
//! loopback (`--oversubscribe`: more processes than cores is fine). Needs the `mpi` feature and
//! an MPI installation with `mpirun` (Debian: `libopenmpi-dev openmpi-bin`); `.ci/run`
//! installs them and runs `cargo test --features mpi --test mpi`.
#![cfg(feature = "mpi")]

use std::process::{Command, Output};

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
    let out = mpirun(n, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mpirun -n {n} {args:?} failed:\n{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{args:?}: no JSON report ({e}):\n{stdout}\n{stderr}"))
}

/// Every schedule × recompute {none, full} on `tiny` at p = 2 and p = 4 (the two-chunk schedules
/// at p = 2: tiny's 6 layers make 4 stages, not 8): the gradients of every step bitwise equal to the
/// sequential reference, and every rank's measured peak of held bytes equal to its prediction.
#[test]
fn every_schedule_across_processes_gives_the_sequential_gradients_and_the_predicted_bytes() {
    for n in [2usize, 4] {
        for schedule in ["gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "looped-bfs", "interleaved-zb"] {
            if matches!(schedule, "interleaved" | "zb-v" | "looped-bfs" | "interleaved-zb") && n == 4 {
                continue;
            }
            for policy in ["none", "full"] {
                let m = if matches!(schedule, "zb-h2" | "interleaved") { 2 * n } else { n + 1 };
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

/// The same run in one process and across processes: the same losses, bit for bit, step after
/// step (the optimizer steps of both stay equal).
#[test]
fn processes_train_exactly_as_threads() {
    let args = [
        "--model",
        "tiny",
        "-s",
        "1f1b",
        "-p",
        "2",
        "-m",
        "4",
        "--steps",
        "4",
        "--warmup",
        "0",
        "--no-compare",
        "--json",
    ];
    let across = report(2, &args);
    let threads = Command::new(env!("CARGO_BIN_EXE_pipesched")).arg("run").args(args).output().unwrap();
    assert!(threads.status.success());
    let threads: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&threads.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(across["losses"], threads["losses"]);
}

/// More or fewer processes than ranks: a clear error, not a hang.
#[test]
fn a_world_size_other_than_p_is_refused() {
    let out = mpirun(3, &["--model", "tiny", "-s", "1f1b", "-p", "2", "-m", "4", "--steps", "1", "--no-compare"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 MPI processes for a schedule of p=2 ranks; launch with `mpirun -n 2`"), "{stderr}");
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
