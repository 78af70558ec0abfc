//! `pipesched infer`: the forward-only pass of held-out micro-batches through the pipeline, one
//! worker thread per rank. Prints each micro-batch's loss and their mean, the measured makespan
//! next to the simulated one (the same schedule under each stage's median measured forward),
//! the throughput, and the peak bytes per rank measured and predicted from shapes — with, for
//! scale, what a 1F1B training step of the same micro-batches is predicted to hold.

use clap::Args;
use serde_json::json;

use pipesched::args::{InitParamsArgs, ModelArgs, OutArgs, ScheduleArgs};
use pipesched::chrome::write_chrome_trace;
use pipesched::exec::{ExecOptions, DEFAULT_TIMEOUT};
use pipesched::plot::{render, render_stack};
use pipesched::workload::{Demand, Layout, WorkloadSpec};
use pipesched::{units, Error, Result};
use pipesched_schedules::{one_f_one_b, simulate, validate, CostModel, Kind, Op, Schedule, StageCosts, Stats, Trace};
use pipesched_stages::{mean_loss, Policies};

/// Arguments of `pipesched infer`.
#[derive(Debug, Args)]
pub struct InferArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    schedule: ScheduleArgs,
    #[command(flatten)]
    init: InitParamsArgs,
    /// Unmeasured passes before the measured one.
    #[arg(long, default_value_t = 1, value_name = "N")]
    warmup: usize,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
    /// Write the measured pass into --out as a Chrome trace, `<schedule>.trace.json`.
    #[arg(long)]
    trace: bool,
    /// Draw the measured pass into --out: `<schedule>-measured` (timeline and memory) and
    /// `<schedule>-compare` (simulated above measured), each as SVG and PNG.
    #[arg(long)]
    plot: bool,
    #[command(flatten)]
    out: OutArgs,
}

/// Runs the passes and prints the report.
pub fn run(args: InferArgs) -> Result<()> {
    if args.model.model.is_synthetic() {
        return Err(Error::Usage("infer computes losses; synthetic stages have none. Use a real model".into()));
    }
    let schedule = forward_schedule(&args.schedule)?;
    if args.trace || args.plot {
        args.out.prepare()?;
    }
    let layout = Layout::from(&schedule);
    let opts = ExecOptions { timeout: DEFAULT_TIMEOUT, ..Default::default() };
    let demand = Demand::of(&schedule, false, 1);
    let spec = WorkloadSpec { init: args.init.init_params.clone(), ..args.model.spec()? };
    let mut workload = spec.build(&layout, &Policies::all(Default::default()), &demand, &opts.transport)?;
    for _ in 0..args.warmup {
        workload.infer(&schedule, &opts)?;
    }
    let (pass, bytes) = workload.infer(&schedule, &opts)?;
    // A 1F1B step of the same stages, for comparison: one stage per rank only (a pass of a
    // CSV with v > 1 has no 1F1B of its layout).
    let trained = match schedule.v {
        1 => Some(simulate(&one_f_one_b(schedule.p, schedule.m)?, &workload.predicted()?)?),
        _ => None,
    };
    let simulated = simulate(&schedule, &with_forward_times(bytes, &pass.trace)?)?;
    let rows = workload.rows().unwrap_or(0) * schedule.m;
    report(&args, &schedule, &pass.losses, &pass.trace, &simulated, trained.as_ref(), rows)
}

/// The schedule to run: `-s forward` (the default) or a CSV file, refused unless it runs
/// forwards only.
fn forward_schedule(args: &ScheduleArgs) -> Result<Schedule> {
    let schedule = match (args.schedule, &args.from_csv) {
        (None, None) => {
            let s = args.shape.generate(Kind::Forward)?;
            validate(&s)?;
            s
        }
        _ => args.schedule(None)?,
    };
    if !schedule.is_forward_only() {
        return Err(Error::Usage(format!(
            "infer runs a forward-only schedule, and {} trains (it has backward actions); use -s forward, or `pipesched run` to train",
            schedule.name
        )));
    }
    Ok(schedule)
}

/// `bytes` (a cost model of times 1) with each stage's forward taking the median of its
/// measured forwards in `trace`.
fn with_forward_times(mut bytes: CostModel, trace: &Trace) -> Result<CostModel> {
    let StageCosts::Stages(stages) = &mut bytes.costs else {
        return Err(Error::Config("the pass's predicted bytes are not per stage".into()));
    };
    for (k, cost) in stages.iter_mut().enumerate() {
        let mut times: Vec<f64> = trace
            .ranks
            .iter()
            .flat_map(|r| r.actions.iter().zip(r.start.iter().zip(&r.end)))
            .filter(|(a, _)| a.stage() == k && a.op == Op::F)
            .map(|(_, (s, e))| e - s)
            .collect();
        times.sort_by(f64::total_cmp);
        cost.f = times.get(times.len() / 2).copied().unwrap_or(0.0);
    }
    bytes.time_unit = "ms".into();
    Ok(bytes)
}

fn report(
    args: &InferArgs,
    schedule: &Schedule,
    losses: &[f32],
    measured: &Trace,
    simulated: &Trace,
    trained: Option<&Trace>,
    rows: usize,
) -> Result<()> {
    let (got, sim, train) = (Stats::of(measured), Stats::of(simulated), trained.map(Stats::of));
    let train_peaks = train.map(|t| t.peak_held_bytes);
    let mean = mean_loss(losses);
    let per_second = if got.makespan > 0.0 { rows as f64 / (got.makespan / 1e3) } else { 0.0 };
    if args.trace {
        write_chrome_trace(measured, &args.out.file(&format!("{}.trace.json", schedule.name)))?;
    }
    if args.plot {
        let dir = args.out.prepare()?;
        for ext in ["svg", "png"] {
            render(measured, &dir.join(format!("{}-measured.{ext}", schedule.name)))?;
            render_stack(
                &[("simulated", simulated), ("measured", measured)],
                &dir.join(format!("{}-compare.{ext}", schedule.name)),
            )?;
        }
    }
    if args.json {
        let out = json!({
            "schedule": schedule.name, "p": schedule.p, "m": schedule.m,
            "losses": losses, "mean_loss": mean,
            "makespan_ms": { "measured": got.makespan, "simulated": sim.makespan },
            "rows_per_second": per_second,
            "peak_held_bytes": { "measured": got.peak_held_bytes, "predicted": sim.peak_held_bytes,
                                 "training_1f1b_predicted": train_peaks },
            "peak_bytes": { "measured": got.peak_bytes, "predicted": sim.peak_bytes },
        });
        return pipesched::sayln!("{out}");
    }
    pipesched::sayln!("{} p={} m={}: forward only, dropout off", schedule.name, schedule.p, schedule.m)?;
    let each: Vec<String> = losses.iter().map(|l| format!("{l:.4}")).collect();
    pipesched::sayln!("losses {}", each.join(" "))?;
    pipesched::sayln!("mean loss {mean}")?;
    pipesched::sayln!(
        "makespan {:.2} ms measured, {:.2} ms simulated (each stage's median forward); {:.0} rows/s",
        got.makespan,
        sim.makespan,
        per_second
    )?;
    pipesched::sayln!("rank  peak held measured  predicted  in-flight incl.  1f1b step (predicted)")?;
    for r in 0..schedule.p {
        pipesched::sayln!(
            "{r:>4}  {:>18}  {:>9}  {:>15}  {:>21}",
            units::bytes(got.peak_held_bytes[r]),
            units::bytes(sim.peak_held_bytes[r]),
            units::bytes(got.peak_bytes[r]),
            train_peaks.as_ref().map_or("—".to_string(), |t| units::bytes(t[r]))
        )?;
    }
    Ok(())
}
