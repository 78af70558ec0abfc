//! `pipesched-bench`: which schedule should I use for my model, and at what memory cost? Runs
//! every schedule × recompute policy on real stages (or synthetic ones, or only the simulator),
//! then prints a Markdown table and writes `bench.json` and the charts.

mod config;
mod gpu;
mod progress;
mod report;
mod sweep;

use std::path::Path;

use clap::Parser;

use pipesched::{Error, Result};

use config::Args;

/// Fails early, before any configuration runs, if `dir` cannot hold the results.
fn check_output_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "cannot create the output folder",
        path: dir.to_path_buf(),
        source,
    })?;
    let probe = pipesched::output::temp_path(&dir.join("bench.json"));
    std::fs::write(&probe, b"").map_err(|source| Error::Io {
        action: "cannot write into the output folder",
        path: dir.to_path_buf(),
        source,
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn run(args: Args) -> Result<()> {
    let args = args.checked()?;
    let configs = args.configs()?;
    check_output_dir(&args.out)?;
    let unit = if args.synthetic.is_some() { "micro-batches" } else { "samples" };
    let mut bar = progress::Progress::new(configs.len());
    let mut outcomes = Vec::new();
    let mut skipped = Vec::new();
    for cfg in &configs {
        bar.start(&cfg.label());
        match sweep::run(&args, cfg, |what| bar.step(&cfg.label(), what)) {
            Ok(o) => {
                bar.done(&cfg.label(), &format!("{:.1} ms/step", o.row.step_ms_median));
                outcomes.push(o);
            }
            // A schedule that cannot take these p, m, v (or a model too shallow for p·v stages)
            // is skipped with its reason; anything else stops the benchmark.
            Err(e @ (Error::Schedule(_) | Error::Usage(_))) if is_config_error(&e) => {
                bar.done(&cfg.label(), "skipped");
                skipped.push((cfg.label(), e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    bar.finish();
    let mut rows: Vec<sweep::Row> = outcomes.iter().map(|o| o.row.clone()).collect();
    report::rank(&mut rows);
    for (o, r) in outcomes.iter_mut().zip(&rows) {
        o.row = r.clone();
    }
    let what = if args.simulate_only { "simulated only" } else { "measured" };
    let mut model = args.synthetic.as_ref().map_or(args.model.clone(), |s| format!("synthetic {s}"));
    if args.devices != "cpu" {
        model.push_str(&format!(" on {}", args.devices));
    }
    if let Some(p) = &args.precision {
        model.push_str(&format!(", {p} products"));
    }
    println!(
        "pipesched-bench: {model}, p={} m={} (interleaved v={}), {what}, {} measured steps after {} warm-up; {} · {}\n",
        args.p,
        args.m,
        args.chunks,
        args.steps,
        args.warmup,
        report::machine(),
        report::today()
    );
    print!("{}", report::table(&args, &rows, unit));
    for (c, why) in &skipped {
        println!("\nskipped {c}: {why}");
    }
    let products = gpu::products(&args)?;
    if let Some(p) = &products {
        let precision = args.precision.as_deref().unwrap_or("f32").parse().unwrap_or_default();
        print!("{}", gpu::table(p, precision));
    }
    let json = report::write_json(&args.out, &args, &rows, &skipped, products.as_deref())?;
    let charts = report::write_charts(&args.out, &args, &outcomes, unit)?;
    println!("\nwrote {} and {} charts in {}", json.display(), charts.len(), args.out.display());
    Ok(())
}

/// Whether `e` means "this configuration cannot exist" rather than "something broke".
fn is_config_error(e: &Error) -> bool {
    match e {
        Error::Schedule(pipesched_schedules::Error::BadArgs { .. }) => true,
        Error::Usage(msg) => msg.contains("--model") || msg.contains("layers") || msg.contains("stages"),
        _ => false,
    }
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
