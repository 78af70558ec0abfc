//! `pipesched simulate`: one step of a schedule under a cost model — makespan, bubble rates,
//! steady period, busy/idle time and peak bytes per rank, as a table or one JSON object.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use pipesched::chrome::write_chrome_trace;
use pipesched::plot::render;
use pipesched::{Error, Result};
use pipesched_schedules::{simulate, CostModel, Schedule, Stats, Trace};

use super::pick::Pick;
use pipesched::flags;

/// Arguments of `pipesched simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pick: Pick,
    /// Per-rank op times and cross-rank latency, e.g. F=1,I=1,W=0.5,C=0.05 (R defaults to F;
    /// missing keys default to F=I=W=1, C=0). A schedule with v chunks gives each chunk t/v.
    #[arg(long, value_name = "F=..,I=..,W=..,C=..")]
    costs: Option<String>,
    /// Per-rank bytes: A kept by F per micro-batch, W kept from I until W, R re-created by
    /// recompute, S static; units B, KB, MB, GB, KiB, MiB, GiB, e.g. A=64MiB,W=16MiB,S=1GiB.
    #[arg(long, value_name = "A=..,W=..,R=..,S=..")]
    mem: Option<String>,
    /// Read the cost model from a JSON file (per-rank or per-stage; see the README).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["costs", "mem"])]
    costs_file: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the simulated trace as a Chrome trace (Perfetto, chrome://tracing).
    #[arg(long, value_name = "FILE.json")]
    trace: Option<PathBuf>,
    /// Also draw the timeline and memory chart (.svg or .png).
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    plot: Option<PathBuf>,
}

/// Runs the simulation and prints the result.
pub fn run(args: SimulateArgs) -> Result<()> {
    let schedule = args.pick.schedule()?;
    let costs = match &args.costs_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                action: "cannot read the cost model",
                path: path.clone(),
                source,
            })?;
            CostModel::from_json(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?
        }
        None => flags::cost_model(args.costs.as_deref(), args.mem.as_deref())?,
    };
    let trace = simulate(&schedule, &costs)?;
    let stats = Stats::of(&trace);
    if let Some(path) = &args.trace {
        write_chrome_trace(&trace, path)?;
    }
    if let Some(path) = &args.plot {
        render(&trace, path)?;
    }
    if args.json {
        println!("{}", summary_json(&schedule, &trace, &stats));
    } else {
        print!("{}", summary_table(&schedule, &trace, &stats));
    }
    Ok(())
}

/// The `--json` object. Key names are stable: scripts rely on them.
pub fn summary_json(s: &Schedule, trace: &Trace, st: &Stats) -> serde_json::Value {
    json!({
        "schedule": s.name,
        "p": s.p,
        "m": s.m,
        "v": s.v,
        "placement": s.placement,
        "time_unit": trace.time_unit,
        "makespan": st.makespan,
        "ideal": st.ideal,
        "bubble_rate": st.bubble_rate,
        "steady_period": st.steady_period,
        "steady_bubble_rate": st.steady_bubble_rate,
        "peak_memory_bytes": st.peak_bytes,
        "busy": st.busy,
        "idle": st.idle,
        "recompute": st.recompute,
    })
}

/// The human-readable summary.
pub fn summary_table(s: &Schedule, trace: &Trace, st: &Stats) -> String {
    let u = &trace.time_unit;
    let mut out = format!(
        "{} p={} m={} v={} ({} actions, {} placement)\n\n",
        s.name,
        s.p,
        s.m,
        s.v,
        s.num_actions(),
        s.placement
    );
    out.push_str(&format!("makespan            {:>12.4} {u}\n", st.makespan));
    out.push_str(&format!("ideal (Σ busy / p)  {:>12.4} {u}\n", st.ideal));
    out.push_str(&format!("bubble rate         {:>11.2} %\n", 100.0 * st.bubble_rate));
    out.push_str(&format!("steady period       {:>12.4} {u}   (consecutive steps overlapping)\n", st.steady_period));
    out.push_str(&format!("steady bubble rate  {:>11.2} %\n\n", 100.0 * st.steady_bubble_rate));
    out.push_str(&format!(
        "{:>4}  {:>12}  {:>12}  {:>12}  {:>12}  {:>14}\n",
        "rank", "busy", "idle", "recompute", "peak", "peak bytes"
    ));
    for r in 0..s.p {
        out.push_str(&format!(
            "{:>4}  {:>12.4}  {:>12.4}  {:>12.4}  {:>12}  {:>14}\n",
            r,
            st.busy[r],
            st.idle[r],
            st.recompute[r],
            pipesched::units::bytes(st.peak_bytes[r]),
            st.peak_bytes[r]
        ));
    }
    out
}
