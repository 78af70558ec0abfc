//! `pipesched run`: execute a schedule on stages pinned to worker threads, step after step;
//! print each step's time (and loss, for real models), the peak bytes per rank measured and
//! predicted, and the measured-vs-simulated report.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use pipesched::chrome::write_chrome_trace;
use pipesched::exec::{execute, ExecOptions};
use pipesched::plot::{render, render_stack};
use pipesched::report::compare;
use pipesched::synthetic::{SyntheticSpec, SyntheticStage};
use pipesched::{Error, Result};
use pipesched_schedules::{simulate, Stats, Trace};

use super::pick::Pick;

/// Arguments of `pipesched run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model: `synthetic:F=2ms,I=2ms,W=1ms[,R=..][,mem=..][,wmem=..][,msg=..]`.
    #[arg(long, value_name = "MODEL")]
    model: String,
    #[command(flatten)]
    pick: Pick,
    /// Measured steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Unmeasured warm-up steps before them.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Seconds any wait for an input may last before the step fails as a hang.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    timeout: f64,
    /// Print one JSON object at the end instead of the text report.
    #[arg(long)]
    json: bool,
    /// Write the median step's measured trace as a Chrome trace (Perfetto, chrome://tracing).
    #[arg(long, value_name = "FILE.json")]
    trace: Option<PathBuf>,
    /// Write charts of the median step into this folder: `<schedule>-measured` (timeline and
    /// memory) and `<schedule>-compare` (simulated above measured), each as SVG and PNG.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
}

/// Runs the steps and prints the report.
pub fn run(args: RunArgs) -> Result<()> {
    if args.steps == 0 {
        return Err(Error::Usage("--steps must be at least 1".into()));
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(Error::Usage(format!("--timeout must be a positive number of seconds, got {}", args.timeout)));
    }
    let schedule = args.pick.schedule()?;
    let Some(spec) = args.model.strip_prefix("synthetic:") else {
        return Err(Error::Usage(format!(
            "--model {}: unknown model; give synthetic:F=2ms,I=2ms,W=1ms (see --help)",
            args.model
        )));
    };
    let spec = SyntheticSpec::parse(spec)?;
    let mut stages: Vec<SyntheticStage> = (0..schedule.stages()).map(|_| SyntheticStage::new(spec.clone())).collect();
    let opts = ExecOptions { timeout: Duration::from_secs_f64(args.timeout) };
    for _ in 0..args.warmup {
        execute(&schedule, &mut stages, &opts)?;
    }
    let mut traces: Vec<Trace> = Vec::with_capacity(args.steps);
    for step in 0..args.steps {
        let trace = execute(&schedule, &mut stages, &opts)?;
        if !args.json {
            println!("step {:>3}: {:>10.3} ms", step + 1, Stats::of(&trace).makespan);
        }
        traces.push(trace);
    }
    let simulated = simulate(&schedule, &spec.cost_model(schedule.stages()))?;
    let times: Vec<f64> = traces.iter().map(|t| Stats::of(t).makespan).collect();
    let median = median_index(&times);
    let measured = &traces[median];
    if let Some(path) = &args.trace {
        write_chrome_trace(measured, path)?;
    }
    if let Some(dir) = &args.plot {
        write_charts(dir, &schedule.name, measured, &simulated)?;
    }
    let report = compare(measured, &simulated);
    let (m_stats, s_stats) = (Stats::of(measured), Stats::of(&simulated));
    if args.json {
        let out = json!({
            "schedule": schedule.name, "p": schedule.p, "m": schedule.m, "v": schedule.v,
            "step_time_s": times[median] / 1e3,
            "step_times_s": times.iter().map(|t| t / 1e3).collect::<Vec<_>>(),
            "peak_memory_bytes": m_stats.peak_bytes,
            "predicted_peak_memory_bytes": s_stats.peak_bytes,
            "comparison": report,
        });
        println!("{out}");
    } else {
        println!("median step {:.3} ms over {} steps\n", times[median], times.len());
        println!("{report}");
        for r in 0..schedule.p {
            println!("rank {r} peak bytes: measured {} predicted {}", m_stats.peak_bytes[r], s_stats.peak_bytes[r]);
        }
    }
    Ok(())
}

/// Writes the measured chart and the simulated-above-measured comparison into `dir`.
fn write_charts(dir: &std::path::Path, name: &str, measured: &Trace, simulated: &Trace) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "cannot create the chart folder",
        path: dir.to_path_buf(),
        source,
    })?;
    for ext in ["svg", "png"] {
        render(measured, &dir.join(format!("{name}-measured.{ext}")))?;
        render_stack(&[("simulated", simulated), ("measured", measured)], &dir.join(format!("{name}-compare.{ext}")))?;
    }
    Ok(())
}

/// Index of the median value (the lower middle for an even count).
fn median_index(xs: &[f64]) -> usize {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    idx[(xs.len() - 1) / 2]
}
