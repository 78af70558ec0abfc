//! What stale weights do to training: the `small` preset trained for N steps three ways from the
//! same initial weights on the same data, at p = 2 and m = 8 —
//!
//! 1. synchronous 1F1B, the steps back to back with no barrier (every micro-batch of a step runs
//!    on the weights of all the steps before: the same training as steps with a flush);
//! 2. PipeDream: one 1F1B stream of all N·m micro-batches, an update after every micro-batch, each
//!    forward on the newest weights and its backward on the same version, stashed;
//! 3. PipeDream-2BW: the same stream, an update every step, each step's micro-batches on the
//!    weights of one update before the newest (two versions kept).
//!
//! The model, its batch, the optimizer and its learning rate are `pipesched run`'s defaults for
//! `--model small` (Adam, lr 3e-4, seed 0); every `pipesched run` model flag (`--lr`, `--seed`,
//! `--model`, …) is taken too. It prints the loss every 5 steps and the final losses, and writes
//! `stale-weights-loss.svg`, `.png` (the three curves) and `.json` (every step's loss of each)
//! into the output directory: `--out DIR`, which must exist and be writable, or by default
//! `stale-weights/` in the build's target directory, so a run never touches tracked files.
//!
//! Run: `cargo run --release --example stale_weights -- [--steps 50] [--out DIR]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{CommandFactory, FromArgMatches, Parser};
use pipesched::args::{ModelArgs, OptimizerKind};
use pipesched::exec::{ExecOptions, Transport};
use pipesched::plot::{render_lines, LineChart, Series};
use pipesched::schedules::{Kind, Schedule};
use pipesched::workload::{Asynchrony, Demand, Layout, RunPlan, WorkloadSpec};
use pipesched_stages::Policies;
use serde_json::json;

/// Ranks.
const P: usize = 2;
/// Micro-batches per step.
const M: usize = 8;
/// Steps between the rows of the printed table.
const EVERY: usize = 5;

/// Trains the `small` preset synchronously and on stale weights, and charts the losses.
#[derive(Debug, Parser)]
#[command(name = "stale_weights")]
struct Cli {
    /// Training steps of each run.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    steps: u64,
    /// An existing, writable directory for the chart and the losses (default: `stale-weights/`
    /// in the target directory).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

/// One way of training.
struct Run {
    /// What the chart and the table call it.
    name: &'static str,
    asynchrony: Asynchrony,
}

const RUNS: [Run; 3] = [
    Run { name: "synchronous 1F1B", asynchrony: Asynchrony::None },
    Run { name: "PipeDream", asynchrony: Asynchrony::PipeDream },
    Run { name: "PipeDream-2BW", asynchrony: Asynchrony::TwoBuffered },
];

/// The losses of one run.
struct Curve {
    name: &'static str,
    asynchrony: Asynchrony,
    losses: Vec<f32>,
    seconds: f64,
}

/// The directory to write into: `--out`, checked to exist and take a file, or `stale-weights/` in
/// the target directory this example was built into, created.
fn out_dir(given: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match given {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(format!(
                    "--out {}: no such directory; create it first or give another --out",
                    dir.display()
                ));
            }
            dir.to_path_buf()
        }
        None => {
            // The binary sits in <target>/<profile>/examples/.
            let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
            let target = exe.ancestors().nth(3).map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
            let dir = target.join("stale-weights");
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}; give --out DIR", dir.display()))?;
            dir
        }
    };
    // Minutes of training must not end in a directory that refuses the files.
    let probe = dir.join(format!(".stale-weights-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|e| format!("--out {}: cannot write there ({e}); give a writable directory", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(dir)
}

/// Trains a fresh copy of `spec`'s model `steps` steps the way `run` says: every copy starts
/// from the same weights and reads the same micro-batches.
fn train(spec: &WorkloadSpec, base: &Schedule, steps: usize, run: &Run) -> pipesched::Result<Curve> {
    let demand = Demand::of(base, false, steps);
    let none = Policies::all(Default::default());
    let mut workload = spec.build(&Layout::from(base), &none, &demand, &Transport::InProcess)?;
    let step = workload.plan(base)?;
    let plan = match run.asynchrony {
        Asynchrony::None => RunPlan::back_to_back(&step, steps)?,
        kind => {
            let stream = Kind::OneFOneB.generate(P, 1, steps * M)?;
            RunPlan::stream(workload.plan(&stream)?, steps, M, kind)?
        }
    };
    let started = Instant::now();
    let out = workload.run(&plan, 0, &ExecOptions::default(), false)?;
    let seconds = started.elapsed().as_secs_f64();
    let losses = out.losses.iter().map(|l| l.unwrap_or(f32::NAN)).collect();
    Ok(Curve { name: run.name, asynchrony: run.asynchrony, losses, seconds })
}

/// The printed table: a row at step 1, every `EVERY` steps, and at the last step.
fn table(curves: &[Curve], steps: usize) {
    let header: Vec<String> = curves.iter().map(|c| format!("{:>18}", c.name)).collect();
    println!("{:>6}{}", "step", header.concat());
    for k in (1..=steps).filter(|&k| k == 1 || k % EVERY == 0 || k == steps) {
        let row: Vec<String> = curves.iter().map(|c| format!("{:>18.6}", c.losses[k - 1])).collect();
        println!("{k:>6}{}", row.concat());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let matches = Cli::command().mut_arg("model", |a| a.default_value("small")).get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let steps = cli.steps as usize;
    let dir = out_dir(cli.out.as_deref())?;
    let spec = cli.model.spec()?;
    let base = Kind::OneFOneB.generate(P, 1, M)?;
    let optimizer = match cli.model.optimizer {
        OptimizerKind::Adam => format!("Adam lr {:e}", cli.model.lr),
        OptimizerKind::Sgd => format!("SGD (momentum 0.9) lr {:e}", cli.model.lr),
    };
    println!("{} · p={P} m={M} · {steps} steps · {optimizer} · seed {}", cli.model.model, cli.model.seed);

    let started = Instant::now();
    let mut curves = Vec::new();
    for run in &RUNS {
        let curve = train(&spec, &base, steps, run)?;
        println!("{}: {steps} steps in {:.1} s", curve.name, curve.seconds);
        curves.push(curve);
    }
    println!();
    table(&curves, steps);
    println!();
    for c in &curves {
        let (first, last) = (c.losses[0], c.losses[steps - 1]);
        let change = 100.0 * (last as f64 - first as f64) / first as f64;
        println!("final loss {:<18} {last:.6}  (step 1: {first:.6}, {change:+.1} %)", c.name);
    }

    let series = curves
        .iter()
        .map(|c| {
            let losses: Vec<f64> = c.losses.iter().map(|&l| l as f64).collect();
            Series::per_step(format!("{} · final {:.4}", c.name, c.losses[steps - 1]), &losses)
        })
        .collect();
    let chart = LineChart {
        title: format!(
            "Stale weights: {} at p={P}, m={M}, {optimizer}, same initial weights and data",
            cli.model.model
        ),
        x_name: "step".into(),
        y_name: "mean loss of the step's micro-batches".into(),
        series,
    };
    let svg = dir.join("stale-weights-loss.svg");
    let png = dir.join("stale-weights-loss.png");
    render_lines(&chart, &svg)?;
    render_lines(&chart, &png)?;
    let record = json!({
        "model": cli.model.model.to_string(), "p": P, "m": M, "steps": steps,
        "optimizer": format!("{:?}", cli.model.optimizer).to_lowercase(), "lr": cli.model.lr,
        "seed": cli.model.seed,
        "series": curves.iter().map(|c| json!({
            "name": c.name, "asynchrony": format!("{:?}", c.asynchrony), "seconds": c.seconds, "losses": c.losses,
        })).collect::<Vec<_>>(),
    });
    let json_path = dir.join("stale-weights-loss.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&record)? + "\n")
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    println!();
    println!("wrote {}, {} and {}", svg.display(), png.display(), json_path.display());
    println!("{:.1} s in all", started.elapsed().as_secs_f64());
    Ok(())
}
