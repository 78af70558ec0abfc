//! `pipesched simulate`: one step of a schedule under a cost model — makespan, bubble rates,
//! steady period, busy/idle time and peak bytes per rank, as a table or one JSON object.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use pipesched::args::{
    at_least_one, read_text, CostArgs, DataParallelArgs, OffloadArgs, OutArgs, RecomputeArgs, RunModeArgs,
    ScheduleArgs, ShapeArgs,
};
use pipesched::budget::{self, Available};
use pipesched::chrome::{self, write_chrome_trace};
use pipesched::cost_file::CostFile;
use pipesched::plot::render;
use pipesched::{Error, Result};
use pipesched_schedules::{
    period, simulate_data_parallel, simulate_stats, simulate_updates, step_ends, DataParallel, Footprint, Schedule,
    Simulation, Stats, Trace,
};

/// Arguments of `pipesched simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    schedule: ScheduleArgs,
    #[command(flatten)]
    recompute: RecomputeArgs,
    #[command(flatten)]
    costs: CostArgs,
    #[command(flatten)]
    offload: OffloadArgs,
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
    #[command(flatten)]
    mode: RunModeArgs,
    #[command(flatten)]
    data: DataParallelArgs,
    /// With --no-barrier or --async: how many steps the run has (4); its period is the mean time
    /// between step ends after the first.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    steps: Option<usize>,
}

/// Runs the simulation and prints the result.
pub fn run(args: SimulateArgs) -> Result<()> {
    if args.trace || args.plot {
        args.out.prepare()?;
    }
    let mut costs = match &args.costs_file {
        Some(path) => {
            // Per-stage costs of the most stages a schedule can have fit in a few MiB.
            let text = read_text(path, 64 << 20, "cannot read the cost model")?;
            CostFile::from_json(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?
        }
        None => CostFile::from(args.costs.model()?),
    };
    let recompute = costs.recomputes(args.recompute.recompute.as_ref());
    // Actions planning adds per (stage, micro-batch), for the size estimates: R, and O and L.
    let planned = usize::from(recompute) + 2 * usize::from(args.offload.given());
    let dp = args.data.data_parallel()?;
    if dp.sums() && args.mode.is_run() {
        return Err(Error::Usage(format!(
            "--dp {}: each update waits for the replicas' sum of the step's gradients, a flush of its own; simulate one step, without {}",
            dp.replicas,
            args.mode.flag()
        )));
    }
    let grad_bytes = match (&costs.grad_bytes, args.costs.grad_bytes()) {
        (Some(file), _) => file.clone(),
        (None, given) => given,
    };
    // Without a chart, a Chrome trace or sums over replicas nothing reads the spans: only the
    // stats are kept.
    // Host bytes are read from the trace's host curves.
    let sim = Simulation {
        trace: args.trace || args.plot || dp.sums() || args.offload.given(),
        with_bytes: costs.model.has_bytes(),
    };
    args.schedule.check_simulation_size(sim, planned)?;
    if let (true, Some(actions)) = (args.trace, args.schedule.planned_actions(planned)) {
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
        let recomputed = planned * base.stages() * base.m;
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
    let schedule = args.offload.plan(&costs.plan(&base, args.recompute.recompute.as_ref())?)?;
    costs.model = args.offload.apply(costs.model)?;
    args.costs.check_used(&schedule)?;
    if args.mode.is_run() && args.offload.given() {
        return Err(Error::Usage(format!(
            "--offload with {}: offload is planned for one step at a time for now; simulate one step",
            args.mode.flag()
        )));
    }
    if args.mode.is_run() {
        return simulate_run(&args, &costs, &schedule, sim, recompute);
    }
    if args.steps.is_some() {
        return Err(Error::Usage(
            "--steps simulates several steps run as one: give --no-barrier or --async with it (with a barrier, each step is the one simulated)".into(),
        ));
    }
    // The cost model refuses times whose step would overflow (`CostModel::resolve`), so every
    // number here is finite.
    let mut sums = None;
    let mut host_peaks = None;
    let stats = if sim.trace {
        let trace = simulate_data_parallel(&schedule, &costs.model, dp, &grad_bytes)?;
        if args.trace {
            write_chrome_trace(&trace, &args.out.file(&format!("{}.trace.json", schedule.name)))?;
        }
        if args.plot {
            for ext in ["svg", "png"] {
                render(&trace, &args.out.file(&format!("{}.{ext}", schedule.name)))?;
            }
        }
        let stats = Stats::of(&trace);
        if args.offload.given() {
            host_peaks = Some(trace.ranks.iter().map(|r| r.peak_host_bytes()).collect::<Vec<u64>>());
        }
        if dp.sums() {
            sums = Some(trace);
        }
        stats
    } else {
        simulate_stats(&schedule, &costs.model)?
    };
    let unit = &costs.model.time_unit;
    if args.json {
        let mut out = summary_json(&schedule, unit, &stats);
        if let Some(trace) = &sums {
            out["data_parallel"] = sums_json(dp, trace, &stats);
        }
        if let Some(host) = &host_peaks {
            out["peak_host_bytes"] = json!(host);
        }
        pipesched::sayln!("{out}")?;
    } else {
        pipesched::output::say(format_args!("{}", summary_table(&schedule, unit, &stats)))?;
        if let Some(host) = &host_peaks {
            let each: Vec<String> = host.iter().map(|&b| pipesched::units::bytes(b)).collect();
            pipesched::sayln!("peak host bytes (offloaded), by rank: {}", each.join(", "))?;
        }
        if let Some(trace) = &sums {
            pipesched::output::say(format_args!("{}", sums_table(dp, trace, &stats)))?;
        }
    }
    Ok(())
}

/// The gradient sums over replicas, as the `data_parallel` object of `--json`.
fn sums_json(dp: DataParallel, trace: &Trace, stats: &Stats) -> serde_json::Value {
    json!({
        "replicas": dp.replicas,
        "zero": u8::from(dp.sharded),
        "sums": trace.sums,
        "step_end": trace.step_end(),
        "exposed": trace.step_end() - stats.makespan,
    })
}

/// The gradient sums over replicas, after the summary table.
fn sums_table(dp: DataParallel, trace: &Trace, stats: &Stats) -> String {
    let u = &trace.time_unit;
    let zero = if dp.sharded { "; ZeRO-1: each keeps its slice" } else { ", all-gather" };
    let mut out = format!(
        "\ngradients summed over {} replicas (reduce-scatter{zero}), on each rank's communication thread:\n",
        dp.replicas
    );
    out.push_str(&format!("{:>4}  {:>5}  {:>14}  {:>12}  {:>12}\n", "rank", "stage", "bytes", "start", "end"));
    for (r, sums) in trace.sums.iter().enumerate() {
        for s in sums {
            out.push_str(&format!(
                "{:>4}  {:>5}  {:>14}  {:>12.4}  {:>12.4}\n",
                r,
                s.stage,
                pipesched::units::bytes(s.bytes),
                s.start,
                s.end
            ));
        }
    }
    let end = trace.step_end();
    out.push_str(&format!(
        "step with the sums  {end:>12.4} {u}   ({:.4} {u} after the last backward: the sums the cool-down does not hide)\n",
        end - stats.makespan
    ));
    out
}

/// `--no-barrier` and `--async`: the steps as one run (`step` is one step, with `R` planned).
fn simulate_run(
    args: &SimulateArgs,
    costs: &CostFile,
    step: &Schedule,
    sim: Simulation,
    recompute: bool,
) -> Result<()> {
    let steps = args.steps.unwrap_or(4);
    if steps < 2 {
        return Err(Error::Usage(format!(
            "{} with --steps {steps}: a period needs at least two steps",
            args.mode.flag()
        )));
    }
    if let (Some(kind), None) = (args.schedule.schedule, &args.schedule.from_csv) {
        let m = args
            .schedule
            .shape
            .m
            .checked_mul(steps)
            .ok_or_else(|| Error::Usage("--steps: too many micro-batches".into()))?;
        ShapeArgs { m, ..args.schedule.shape.clone() }.check_size(kind, Some(sim), usize::from(recompute))?;
    }
    let plan = args
        .mode
        .plan(step, steps, Some(sim), |n| costs.plan(&args.schedule.stream(n)?, args.recompute.recompute.as_ref()))?;
    // A cost model has no parameter bytes: stashed versions are counted, not sized.
    let zero = vec![0; step.stages()];
    let trace = simulate_updates(&plan.schedule, &costs.model, &plan.updates, &zero)?;
    if args.trace {
        write_chrome_trace(&trace, &args.out.file(&format!("{}.trace.json", step.name)))?;
    }
    if args.plot {
        for ext in ["svg", "png"] {
            render(&trace, &args.out.file(&format!("{}.{ext}", step.name)))?;
        }
    }
    let stats = Stats::of(&trace);
    let one = simulate_stats(step, &costs.model)?;
    let ends = step_ends(&trace, step.m);
    let period = period(&ends, 1).unwrap_or(f64::NAN);
    let busy_per_step = stats.busy.iter().sum::<f64>() / steps as f64;
    let bubble = 1.0 - busy_per_step / (step.p as f64 * period);
    let stashed: Vec<u32> = (0..step.stages()).map(|s| plan.updates.peak_stashed(s)).collect();
    let unit = &costs.model.time_unit;
    if args.json {
        let mut out = summary_json(step, unit, &one);
        out["run"] = json!({
            "mode": args.mode.asynchrony.map_or("no-barrier".to_string(), |a| format!("{a:?}")),
            "steps": steps, "step_ends": ends, "period": period, "period_bubble_rate": bubble,
            "makespan": stats.makespan, "peak_held_bytes": stats.peak_held_bytes,
            "peak_stashed_versions": stashed,
        });
        return pipesched::sayln!("{out}");
    }
    pipesched::output::say(format_args!("{}", summary_table(step, unit, &one)))?;
    pipesched::sayln!(
        "\n{steps} steps as one run ({}): {:.4} {unit} in all, a step every {period:.4} {unit} after the first ({:.2} % bubble)",
        args.mode.flag(),
        stats.makespan,
        100.0 * bubble
    )?;
    if stashed.iter().any(|&n| n > 0) {
        pipesched::sayln!("weight versions stashed at most, by stage: {stashed:?}")?;
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
