//! The benchmark with its ranks as MPI processes: `mpirun -n 2 pipesched-bench --transport mpi`.
//! Needs the `mpi` feature and `mpirun` (`.ci/run` installs OpenMPI and runs this file).
#![cfg(feature = "mpi")]

use std::process::Command;

/// A reduced sweep across two processes: every configuration runs, rank 0 alone reports and
/// writes `bench.json`, and each configuration's measured peak of held bytes per rank equals its
/// prediction, as in one process.
#[test]
fn a_sweep_across_processes_reports_once_with_exact_bytes() {
    let dir = std::env::temp_dir().join(format!("pipesched-bench-mpi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "-n", "2", env!("CARGO_BIN_EXE_pipesched-bench"), "--transport", "mpi"])
        .args(["--model", "tiny", "--quick", "-s", "1f1b,zb-h1,zb-v", "--recompute", "none", "--recompute", "full"])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mpirun ({e}); install MPI (Debian: apt-get install openmpi-bin)"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("wrote ").count(), 1, "rank 0 alone reports: {stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bench.json")).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let configs = json["configs"].as_array().cloned().unwrap_or_default();
    assert_eq!(configs.len(), 6, "{json}");
    for c in &configs {
        assert_eq!(c["peak_held_measured"], c["peak_held_predicted"], "{c}");
        assert_eq!(c["peak_held_predicted"].as_array().map(Vec::len), Some(2), "{c}");
    }
}

/// Data parallelism is `pipesched run`'s, not the benchmark's.
#[test]
fn the_benchmark_refuses_replicas() {
    let out = Command::new(env!("CARGO_BIN_EXE_pipesched-bench"))
        .args(["--model", "tiny", "--quick", "--transport", "mpi", "--dp", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the benchmark compares schedules on one pipeline"));
}
