//! `pipesched simulate`: one step of a schedule under a cost model — makespan, bubble rates,
//! steady period, busy/idle time and peak bytes per rank, as a table or one JSON object.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use pipesched::args::{read_text, CostArgs, OutArgs, RecomputeArgs, ScheduleArgs};
use pipesched::budget::{self, Available};
use pipesched::chrome::{self, write_chrome_trace};
use pipesched::cost_file::CostFile;
use pipesched::plot::render;
use pipesched::{Error, Result};
use pipesched_schedules::{simulate, simulate_stats, Footprint, Schedule, Simulation, Stats};

/// Arguments of `pipesched simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    schedule: ScheduleArgs,
    #[command(flatten)]
    recompute: RecomputeArgs,
    #[command(flatten)]
    costs: CostArgs,
    /// Read the cost model from a JSON file: per rank or per stage, as `profile` writes it (which
    /// also records the layout and recompute policies it was measured under; see the README).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["costs", "mem", "bandwidth"])]
    costs_file: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the simulated trace into --out as a Chrome trace, `<schedule>.trace.json`
    /// (Perfetto, chrome://tracing).
    #[arg(long)]
    trace: bool,
    /// Also draw the timeline and memory chart into --out, `<schedule>.svg` and `.png`.
    #[arg(long)]
    plot: bool,
    #[command(flatten)]
    out: OutArgs,
}

/// Runs the simulation and prints the result.
pub fn run(args: SimulateArgs) -> Result<()> {
    if args.trace || args.plot {
        args.out.prepare()?;
    }
    let costs = match &args.costs_file {
        Some(path) => {
            // Per-stage costs of the most stages a schedule can have fit in a few MiB.
            let text = read_text(path, 64 << 20, "cannot read the cost model")?;
            CostFile::from_json(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?
        }
        None => CostFile::from(args.costs.model()?),
    };
    let recompute = costs.recomputes(args.recompute.recompute.as_ref());
    // Without a chart or a Chrome trace nothing reads the spans: only the stats are kept.
    let sim = Simulation { trace: args.trace || args.plot, with_bytes: costs.model.has_bytes() };
    args.schedule.check_simulation_size(sim, recompute)?;
    if let (true, Some(actions)) = (args.trace, args.schedule.planned_actions(recompute)) {
        chrome::check_size(actions)?;
    }
    if recompute && args.schedule.is_auto() {
        return Err(Error::Usage(
            "-s auto keeps its memory limit without recompute; drop --recompute (or the recompute the costs were profiled under)".into(),
        ));
    }
    let base = args.schedule.schedule_to_simulate(Some(&costs.model))?;
    if args.schedule.from_csv.is_some() {
        // A file's size is known only once it is read: check its simulation now.
        let recomputed = if recompute { base.stages() * base.m } else { 0 };
        let size = Footprint {
            actions: (base.num_actions() + recomputed) as u64,
            stages: base.stages() as u64,
            m: base.m as u64,
            build: 0,
        };
        let subject = format!("{} with p={}, v={}, m={} ({} actions)", base.name, base.p, base.v, base.m, size.actions);
        let estimate = budget::schedule(subject, Some(size), Some(sim));
        budget::check(&estimate, Available::probe().as_ref())?;
        if args.trace {
            chrome::check_size(size.actions)?;
        }
    }
    let schedule = costs.plan(&base, args.recompute.recompute.as_ref())?;
    args.costs.check_used(&schedule)?;
    // The cost model refuses times whose step would overflow (`CostModel::resolve`), so every
    // number here is finite.
    let stats = if sim.trace {
        let trace = simulate(&schedule, &costs.model)?;
        if args.trace {
            write_chrome_trace(&trace, &args.out.file(&format!("{}.trace.json", schedule.name)))?;
        }
        if args.plot {
            for ext in ["svg", "png"] {
                render(&trace, &args.out.file(&format!("{}.{ext}", schedule.name)))?;
            }
        }
        Stats::of(&trace)
    } else {
        simulate_stats(&schedule, &costs.model)?
    };
    let unit = &costs.model.time_unit;
    if args.json {
        pipesched::sayln!("{}", summary_json(&schedule, unit, &stats))?;
    } else {
        pipesched::output::say(format_args!("{}", summary_table(&schedule, unit, &stats)))?;
    }
    Ok(())
}

/// The `--json` object. Key names are stable: scripts rely on them.
pub fn summary_json(s: &Schedule, time_unit: &str, st: &Stats) -> serde_json::Value {
    json!({
        "schedule": s.name,
        "p": s.p,
        "m": s.m,
        "v": s.v,
        "placement": s.placement,
        "time_unit": time_unit,
        "makespan": st.makespan,
        "ideal": st.ideal,
        "bubble_rate": st.bubble_rate,
        "steady_period": st.steady_period,
        "steady_bubble_rate": st.steady_bubble_rate,
        "peak_memory_bytes": st.peak_bytes,
        "peak_held_bytes": st.peak_held_bytes,
        "busy": st.busy,
        "idle": st.idle,
        "recompute": st.recompute,
    })
}

/// The human-readable summary.
pub fn summary_table(s: &Schedule, time_unit: &str, st: &Stats) -> String {
    let u = time_unit;
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
