//! `pipesched-bench`: which schedule should I use for my model, and at what memory cost? Runs
//! every schedule × recompute policy on real stages (or synthetic ones, or only the simulator),
//! then prints a Markdown table and writes `bench.json` and the charts into `--out`.
//!
//! Honest by construction: flags and configurations are checked before anything runs (a
//! configuration that cannot exist is skipped with its reason; if none can run, that is one
//! error); a configuration that fails while running is reported and makes the exit status
//! non-zero; nothing is written when nothing ran.

mod charts;
mod config;
mod gpu;
mod progress;
mod ranking;
mod report;
mod sweep;

use clap::Parser;

use pipesched::exec::ExecOptions;
use pipesched::{Error, Result};

use config::Args;

/// The sweep over every configuration. With ranks as processes (`mpirun -n P pipesched-bench
/// --transport mpi`), every process runs every configuration's own rank and rank 0 reports; a
/// configuration that cannot be built anywhere is skipped everywhere, and one that fails while
/// running ends the sweep (the processes stop together).
/// `args` are [`Args::checked`].
fn run(args: Args, opts: &ExecOptions) -> Result<()> {
    let plan = args.plan()?;
    opts.transport.check_size(args.shape.layout.p)?;
    let root = opts.transport.is_root();
    if root {
        args.out.prepare()?;
    }
    let unit = args.unit();
    let mut bar = progress::Progress::new(plan.runnable.len(), root);
    let mut outcomes = Vec::new();
    let mut skipped = plan.skipped;
    let mut failed = Vec::new();
    for cfg in &plan.runnable {
        bar.start(&cfg.label());
        let result = match sweep::build(&args, cfg, &opts.transport) {
            Ok(workload) => sweep::run(&args, cfg, workload, opts, |what| bar.step(&cfg.label(), what)),
            Err(e) if e.rules_out_configuration() => {
                bar.done(&cfg.label(), "skipped");
                skipped.push((cfg.label(), e.to_string()));
                continue;
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(o) => {
                bar.done(&cfg.label(), &format!("{:.1} ms/step", o.row.step_ms_median));
                outcomes.push(o);
            }
            Err(e) if opts.transport.is_processes() => {
                bar.finish();
                return Err(e);
            }
            Err(e) => {
                bar.done(&cfg.label(), "FAILED");
                failed.push((cfg.label(), e.to_string()));
            }
        }
    }
    bar.finish();
    if !root {
        return Ok(());
    }
    if outcomes.is_empty() {
        return Err(Error::Config(format!(
            "no configuration ran, nothing was written:\n{}",
            config::grouped(&[failed, skipped].concat())
        )));
    }
    let mut rows: Vec<sweep::Row> = outcomes.iter().map(|o| o.row.clone()).collect();
    report::rank(&mut rows);
    for (o, r) in outcomes.iter_mut().zip(&rows) {
        o.row = r.clone();
    }
    let what = match (args.simulate_only, opts.transport.is_processes()) {
        (true, _) => "simulated only",
        (false, true) => "measured with ranks as MPI processes",
        (false, false) => "measured",
    };
    pipesched::sayln!(
        "pipesched-bench: {}, p={} m={} (interleaved v={}), {what}, {} measured steps after {} warm-up; {} · {}\n",
        args.model_label(),
        args.shape.layout.p,
        args.shape.m,
        args.shape.layout.chunks_of(pipesched_schedules::Kind::Interleaved),
        args.steps.steps,
        args.steps.warmup,
        report::machine(),
        report::today()
    )?;
    pipesched::output::say(format_args!("{}", report::table(&args, &rows, unit)))?;
    for (c, why) in &skipped {
        pipesched::sayln!("\nskipped {c}: {why}")?;
    }
    for (c, why) in &failed {
        pipesched::sayln!("\nFAILED {c}: {why}")?;
    }
    // The GPU table builds every stage in this process: not with ranks as processes.
    let products = if opts.transport.is_processes() { None } else { gpu::products(&args)? };
    if let Some(p) = &products {
        pipesched::output::say(format_args!("{}", gpu::table(p)))?;
    }
    let json = report::write_json(&args, &rows, &skipped, &failed, products.as_deref())?;
    let charts = report::write_charts(&args.out.out, &args, &outcomes, unit)?;
    pipesched::sayln!("\nwrote {} and {} charts in {}", json.display(), charts.len(), args.out.out.display())?;
    if !failed.is_empty() {
        return Err(Error::Config(format!(
            "{} of {} configurations failed:\n{}",
            failed.len(),
            plan.runnable.len(),
            config::grouped(&failed)
        )));
    }
    Ok(())
}

fn main() {
    pipesched::heap::keep_freed_memory();
    let result = Args::parse().checked().and_then(|args| {
        let opts = args.steps.exec_options()?;
        let result = run(args, &opts);
        opts.transport.conclude(result)
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
