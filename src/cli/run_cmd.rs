//! `pipesched run`: train a model (or drive synthetic stages) through a schedule on one worker
//! thread per rank, step after step. Prints each step's time (and loss), the peak bytes per rank
//! measured and predicted, and — unless `--no-compare` — the measured step next to a simulation
//! of the same schedule with costs profiled from the same stages.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use pipesched::args::{
    InitParamsArgs, LossScaleArgs, ModelArgs, OffloadArgs, OutArgs, RecomputeArgs, RunModeArgs, SaveParamsArgs,
    ScheduleArgs, StepArgs,
};
use pipesched::chrome::{self, write_chrome_trace};
use pipesched::exec::ExecOptions;
use pipesched::model::Verification;
use pipesched::plan::PlanFile;
use pipesched::plot::{render, render_stack};
use pipesched::report::{compare, median_index};
use pipesched::workload::{Demand, Layout, ModelChoice, RunPlan, Step, Update, Workload, WorkloadSpec};
use pipesched::{units, Error, Result};
use pipesched_schedules::{
    period, simulate, simulate_data_parallel, simulate_updates, step_ends, CostModel, DataParallel, Kind, Schedule,
    Simulation, StageCosts, Stats, Trace,
};
use pipesched_stages::{Partition, Policies};

/// Arguments of `pipesched run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    recompute: RecomputeArgs,
    #[command(flatten)]
    schedule: ScheduleArgs,
    #[command(flatten)]
    offload: OffloadArgs,
    #[command(flatten)]
    steps: StepArgs,
    #[command(flatten)]
    init: InitParamsArgs,
    #[command(flatten)]
    loss_scale: LossScaleArgs,
    #[command(flatten)]
    save: SaveParamsArgs,
    /// Also run every step on the sequential reference and report the largest gradient difference.
    #[arg(long)]
    verify: bool,
    /// Every N steps, and after the last, print the loss on 8 held-out micro-batches (forward
    /// only, dropout off), next to the text's entropy where it is known (0: never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    validate: usize,
    /// Skip profiling the stages and comparing the measured step with its simulation.
    #[arg(long)]
    no_compare: bool,
    #[command(flatten)]
    mode: RunModeArgs,
    /// Print one JSON object at the end instead of the text report.
    #[arg(long)]
    json: bool,
    /// Write the median step's measured trace into --out as a Chrome trace,
    /// `<schedule>.trace.json` (Perfetto, chrome://tracing).
    #[arg(long)]
    trace: bool,
    /// Draw the median step into --out: `<schedule>-measured` (timeline and memory) and
    /// `<schedule>-compare` (simulated above measured), each as SVG and PNG.
    #[arg(long)]
    plot: bool,
    #[command(flatten)]
    out: OutArgs,
    /// Run the plan `pipesched plan` wrote (plan.json): its model, partition, recompute
    /// policies, micro-batches and schedule; reports the measured peak held bytes and step time
    /// against the plan's prediction.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["schedule", "m", "p", "chunks", "partition", "recompute", "from_csv", "model", "batch", "memory_limit", "optimizer", "precision", "lora"])]
    plan: Option<PathBuf>,
    /// The plan read from `--plan`.
    #[arg(skip)]
    loaded: Option<Box<PlanFile>>,
}

/// Held-out micro-batches of each validation loss.
const VALIDATION_BATCHES: usize = 8;

/// Runs the steps and prints the report.
pub fn run(mut args: RunArgs) -> Result<()> {
    if let Some(path) = args.plan.clone() {
        if args.mode.is_run() {
            return Err(Error::Usage(format!(
                "--plan runs the plan's steps with a barrier between them, as it was predicted; drop {}",
                args.mode.flag()
            )));
        }
        let plan = PlanFile::read(&path)?;
        let data = &args.steps.transport.data;
        if (data.dp, data.zero) != (plan.dp, plan.zero) {
            let zero = if plan.zero > 0 { format!(" --zero {}", plan.zero) } else { String::new() };
            let how = if plan.dp > 1 {
                format!(
                    "`mpirun -n {} pipesched run --plan {} --transport mpi --dp {}{zero}`",
                    plan.p * plan.dp,
                    path.display(),
                    plan.dp
                )
            } else {
                format!("without --dp and --zero, or plan again with `plan --dp {} …`", data.dp)
            };
            return Err(Error::Usage(format!(
                "{} was planned for --dp {}{zero}, and this run has --dp {} --zero {}; run it as planned: {how}",
                path.display(),
                plan.dp,
                data.dp,
                data.zero,
            )));
        }
        args.model.model = ModelChoice::of_spec(plan.model.clone(), plan.model_spec.clone());
        args.model.partition = Partition::Explicit(plan.counts());
        args.model.batch = Some(plan.microbatch);
        args.recompute.recompute = Some(Policies(plan.policies.clone()));
        args.schedule.csv_text = Some((plan.schedule.clone(), plan.csv.clone()));
        args.loaded = Some(Box::new(plan));
    }
    if args.verify && args.model.model.is_synthetic() {
        return Err(Error::Usage("--verify compares gradients; synthetic stages have none. Use a real model".into()));
    }
    if args.validate > 0 && args.model.model.is_synthetic() {
        return Err(Error::Usage("--validate computes a loss; synthetic stages have none. Use a real model".into()));
    }
    if args.verify && args.steps.transport.data.zero > 0 {
        return Err(Error::Usage(
            "--verify compares every stage's summed gradients, which --zero 1 leaves scattered over the replicas (each keeps its slice); drop one of them — compare the parameter_digest of --json runs with and without --zero instead".into(),
        ));
    }
    if args.mode.is_run() {
        check_no_barrier(&args)?;
    }
    args.save.check()?;
    let opts = args.steps.exec_options()?;
    let result = run_with(&args, &opts);
    opts.transport.conclude(result)
}

/// [`run`] once the transport is up.
fn run_with(args: &RunArgs, opts: &ExecOptions) -> Result<()> {
    if args.trace || args.plot {
        args.out.prepare()?;
    }
    let base = if args.schedule.is_auto() { auto_schedule(args, opts)? } else { args.schedule.schedule(None)? };
    if base.is_forward_only() {
        return Err(Error::Usage(format!(
            "{} runs forwards only, with nothing to train; run it with `pipesched infer`, or give a training schedule (1f1b, zb-h1, ...)",
            base.name
        )));
    }
    opts.transport.check_size(base.p)?;
    if opts.transport.is_root() {
        args.loss_scale.warnings(args.model.precision()).iter().for_each(pipesched::output::warn);
    }
    // A run is sized as one step of all its micro-batches, with the versions it stashes.
    let demand = if args.mode.is_run() {
        let sim = Simulation { trace: true, with_bytes: true };
        Demand::of_run(&args.mode.plan(&base, args.steps.total(), Some(sim), |n| args.schedule.stream(n))?, args.verify)
    } else {
        Demand::of(&base, args.verify, args.steps.total())
    };
    let spec = WorkloadSpec {
        init: args.init.init_params.clone(),
        loss_scale: args.loss_scale.scale(args.model.precision())?,
        ..args.model.spec()?
    };
    let mut workload = spec.build(&Layout::from(&base), &args.recompute.policies(), &demand, &opts.transport)?;
    let schedule = args.offload.plan(&workload.plan(&base)?)?;
    if args.trace {
        // Before any step: the trace would be refused at the end.
        chrome::check_size(schedule.num_actions() as u64)?;
    }
    if args.mode.is_run() && args.offload.given() {
        return Err(Error::Usage(format!(
            "--offload with {}: offload is planned for one step at a time for now; run with a barrier between steps",
            args.mode.flag()
        )));
    }
    if args.mode.is_run() {
        let steps = args.steps.total();
        let sim = Simulation { trace: true, with_bytes: true };
        let plan = args.mode.plan(&schedule, steps, Some(sim), |n| workload.plan(&args.schedule.stream(n)?))?;
        return run_plan(args, opts, workload.as_mut(), &schedule, &plan);
    }
    // With ranks as processes, rank 0 reports; the others run their lanes quietly.
    let root = opts.transport.is_root();
    let mut records = Vec::new();
    let mut validations = Vec::new();
    let mut updates = Vec::new();
    for step in 0..args.steps.total() {
        let rec = workload.run_step(&schedule, step as u64, opts, args.verify)?;
        let update = workload.optimizer_step()?;
        if root {
            print_step(args, step, &rec, update)?;
        }
        updates.push(update);
        records.push(rec);
        let last = step + 1 == args.steps.total();
        if args.validate > 0 && ((step + 1) % args.validate == 0 || last) {
            if let Some(v) = workload.validation(VALIDATION_BATCHES)? {
                validations.push(json!({ "step": step + 1, "validation": v }));
                if root && !args.json {
                    pipesched::sayln!("validation loss {v} after step {}", step + 1)?;
                }
            }
        }
    }
    // Every process takes part (with ranks as processes, these gather every stage's numbers).
    save_params(args, opts, workload.as_ref())?;
    let predicted = workload.predicted()?;
    let digest = if args.json { workload.parameter_digest()? } else { None };
    let profiled = if args.no_compare { None } else { Some(with_host_link(args, workload.profile(7)?, &predicted)?) };
    let dp = args.steps.transport.data.data_parallel()?;
    // With data parallelism the simulation adds each stage's sum over the replicas.
    let sums = if dp.sums() && profiled.is_some() { Some((dp, workload.sum_bytes()?)) } else { None };
    if !root {
        return Ok(());
    }
    let run = Finished {
        validations: &validations,
        updates: &updates,
        predicted: &predicted,
        profiled: profiled.as_ref(),
        digest,
        sums,
    };
    finish(args, &schedule, &records[args.steps.warmup..], run)
}

/// `--save-params`: the parameters after the last step, written (every process takes part; rank
/// 0 writes and, in the text report, says where).
fn save_params(args: &RunArgs, opts: &ExecOptions, workload: &dyn Workload) -> Result<()> {
    let Some(path) = &args.save.save_params else { return Ok(()) };
    workload.save_params(path)?;
    if opts.transport.is_root() && !args.json {
        pipesched::sayln!("parameters written to {}", path.display())?;
    }
    Ok(())
}

/// The profiled costs `model` with the host link offload copies take: `--host-bandwidth` when
/// given, else a memcpy of the largest per-micro-batch bytes an offloading stage keeps (from the
/// stages' own accounting, `predicted`), measured on this machine ([`host_copy::measure`]).
fn with_host_link(args: &RunArgs, model: CostModel, predicted: &CostModel) -> Result<CostModel> {
    let Some(plan) = &args.offload.offload else { return Ok(model) };
    if let Some(link) = args.offload.link(&model)? {
        return Ok(model.with_host_link(link));
    }
    let kept = match &predicted.costs {
        StageCosts::Stages(list) => {
            list.iter().enumerate().filter(|(s, _)| plan.covers_stage(*s)).map(|(_, c)| c.act_bytes).max().unwrap_or(0)
        }
        StageCosts::PerRank(c) => c.act_bytes,
    };
    Ok(model.with_host_link(pipesched::host_copy::measure(kept)?))
}

/// What a run with no barrier (`--no-barrier`, `--async`) cannot run with, refused before
/// anything starts.
fn check_no_barrier(args: &RunArgs) -> Result<()> {
    let flag = args.mode.flag();
    let refuse = |what: &str| Err(Error::Usage(format!("{flag} with {what}")));
    if args.steps.total() < 2 {
        return refuse("a single step: a period needs at least two steps back to back; give --steps 2 or more");
    }
    if args.verify && args.steps.transport.is_processes() {
        return refuse("--verify across processes: the run's reference needs every stage in one process; run with ranks as threads, or compare the parameter_digest of --json runs");
    }
    if args.validate > 0 {
        return refuse("--validate: a validation pass needs the pipeline stopped between steps; drop one of them");
    }
    if args.steps.transport.data.given() {
        return refuse(
            "data parallelism: each update waits for the replicas' sum of the step's gradients, a flush of its own; run with a barrier between steps",
        );
    }
    Ok(())
}

/// `--no-barrier` and `--async`: the warm-up and measured steps as one run (`schedule` is one
/// step's), then its report.
fn run_plan(
    args: &RunArgs,
    opts: &ExecOptions,
    workload: &mut dyn Workload,
    schedule: &Schedule,
    plan: &RunPlan,
) -> Result<()> {
    let steps = plan.steps;
    if args.trace {
        chrome::check_size(plan.schedule.num_actions() as u64)?;
    }
    let run = workload.run(plan, 0, opts, args.verify)?;
    save_params(args, opts, workload)?;
    let predicted_bytes = workload.predicted()?;
    let version_bytes = workload.version_bytes()?;
    let digest = if args.json { workload.parameter_digest()? } else { None };
    let profiled = if args.no_compare { None } else { Some(workload.profile(7)?) };
    if !opts.transport.is_root() {
        return Ok(());
    }
    let m = schedule.m;
    let ends = step_ends(&run.trace, m);
    let measured = period(&ends, args.steps.warmup);
    let run_sim = |c: &CostModel| simulate_updates(&plan.schedule, c, &plan.updates, &version_bytes);
    let simulated = profiled.as_ref().map(run_sim).transpose()?;
    let sim_period = simulated.as_ref().and_then(|t| period(&step_ends(t, m), args.steps.warmup));
    let one_step = profiled.as_ref().map(|c| simulate(schedule, c)).transpose()?.map(|t| Stats::of(&t));
    let m_stats = Stats::of(&run.trace);
    let from_bytes = Stats::of(&run_sim(&predicted_bytes)?);
    let predicted = simulated.as_ref().map_or(from_bytes.peak_bytes.clone(), |t| Stats::of(t).peak_bytes);
    if args.trace {
        write_chrome_trace(&run.trace, &args.out.file(&format!("{}.trace.json", schedule.name)))?;
    }
    if args.plot {
        write_charts(&args.out.out, &schedule.name, &run.trace, simulated.as_ref())?;
    }
    if args.json {
        let out = json!({
            "schedule": schedule.name, "p": schedule.p, "m": m, "v": schedule.v,
            "model": args.model.model.to_string(), "recompute": args.recompute.policies().to_string(),
            "no_barrier": true, "asynchrony": args.mode.asynchrony.map(|a| format!("{a:?}")),
            "steps": steps, "warmup": args.steps.warmup,
            "losses": run.losses, "loss": run.losses.last().copied().flatten(),
            "step_ends_s": ends.iter().map(|t| t / 1e3).collect::<Vec<_>>(),
            "period_s": measured.map(|t| t / 1e3),
            "simulated_period_s": sim_period.map(|t| t / 1e3),
            "simulated_steady_period_s": one_step.as_ref().map(|s| s.steady_period / 1e3),
            "simulated_step_s": one_step.as_ref().map(|s| s.makespan / 1e3),
            "peak_memory_bytes": m_stats.peak_bytes,
            "predicted_peak_memory_bytes": predicted,
            "peak_held_bytes": m_stats.peak_held_bytes,
            "predicted_peak_held_bytes": from_bytes.peak_held_bytes,
            "profiled_costs": profiled,
            "static_bytes": predicted_bytes.static_bytes,
            "parameter_digest": digest.map(|d| format!("{d:016x}")),
        });
        let mut out = out;
        if let Some(v) = &run.verification {
            out["max_param_diff"] = json!(v.max_param_diff);
            out["max_loss_diff"] = json!(v.max_loss_diff);
            out["bitwise"] = json!(v.bitwise);
        }
        return pipesched::sayln!("{out}");
    }
    for (k, end) in ends.iter().enumerate() {
        let mut line = format!("step {:>3}  ends at {:>10.3} ms", k + 1, end);
        if let Some(Some(loss)) = run.losses.get(k) {
            line.push_str(&format!("  loss {loss:.6}"));
        }
        if k < args.steps.warmup {
            line.push_str("  (warm-up)");
        }
        pipesched::sayln!("{line}")?;
    }
    if let Some(t) = measured {
        pipesched::sayln!("\nstep period without a barrier: {t:.3} ms measured (mean after the warm-up)")?;
        let stashed: Vec<u32> = (0..plan.schedule.stages()).map(|s| plan.updates.peak_stashed(s)).collect();
        if stashed.iter().any(|&n| n > 0) {
            pipesched::sayln!("weight versions stashed at most, by stage: {stashed:?}")?;
        }
    }
    if let Some(v) = &run.verification {
        pipesched::sayln!(
            "vs the sequential reference of the same run: max parameter diff {:e}, max loss diff {:e}{}",
            v.max_param_diff,
            v.max_loss_diff,
            if v.bitwise { " (bitwise identical)" } else { "" }
        )?;
    }
    if let (Some(t), Some(one)) = (sim_period, &one_step) {
        pipesched::sayln!(
            "simulated with profiled costs: {t:.3} ms back to back; one step's steady_period {:.3} ms, its makespan (with a barrier) {:.3} ms",
            one.steady_period,
            one.makespan
        )?;
    }
    print_peaks(&m_stats, &from_bytes.peak_held_bytes, &predicted)
}

/// Repetitions of each op when the stages are profiled for `-s auto`.
const AUTO_PROFILE_REPS: usize = 3;

/// `-s auto` for these stages: profiles them one micro-batch at a time, then builds the schedule
/// for the measured times and bytes.
fn auto_schedule(args: &RunArgs, opts: &ExecOptions) -> Result<Schedule> {
    if opts.transport.is_processes() {
        return Err(Error::Usage(
            "-s auto profiles the stages in one process before it schedules them; with ranks as processes, profile first (`pipesched profile`), print the schedule (`pipesched schedule -s auto --costs-file FILE --format csv`) and run it with --from-csv".into(),
        ));
    }
    let policies = args.recompute.policies();
    if policies.0.iter().any(|p| p.drops()) {
        return Err(Error::Usage(
            "-s auto keeps its memory limit without recompute; drop --recompute or choose another schedule".into(),
        ));
    }
    let layout = args.schedule.shape.layout.layout(Some(Kind::Auto))?;
    let mut probe =
        args.model.spec()?.build(&layout, &policies, &Demand::profiling(layout.stages()), &opts.transport)?;
    let costs = probe.profile(AUTO_PROFILE_REPS)?;
    drop(probe);
    args.schedule.schedule(Some(&costs))
}

fn print_step(args: &RunArgs, step: usize, rec: &Step, update: Update) -> Result<()> {
    if args.json {
        return Ok(());
    }
    let mut line = format!("step {:>3}", step + 1);
    if let Some(loss) = rec.loss {
        line.push_str(&format!("  loss {loss:.6}"));
    }
    line.push_str(&format!("  time {:>9.3} ms", Stats::of(&rec.trace).makespan));
    if step < args.steps.warmup {
        line.push_str("  (warm-up)");
    }
    if let Update::Skipped { scale } = update {
        let scale = power_of_two(scale);
        line.push_str(&format!("  (update skipped: a gradient overflowed in f16; loss scale halved to {scale})"));
    }
    if let Some(v) = rec.verification {
        line.push_str(&format!(
            "  vs sequential: max grad diff {:e}, loss diff {:e}{}",
            v.max_grad_diff,
            v.loss_diff,
            if v.bitwise { " (bitwise identical)" } else { "" }
        ));
        if let Some(rel) = v.cpu_rel_diff {
            line.push_str(&format!("; vs the CPU: max relative grad diff {rel:.2e}"));
        }
    }
    pipesched::sayln!("{line}")
}

/// A loss scale (a power of two) as `2^k`.
fn power_of_two(scale: f32) -> String {
    format!("2^{}", pipesched_stages::LossScale::exponent(scale))
}

/// What the end-of-run report reads beside the steps.
struct Finished<'a> {
    validations: &'a [serde_json::Value],
    /// What each step's optimizer did, warm-up included.
    updates: &'a [Update],
    /// The bytes the stages' own accounting predicts.
    predicted: &'a CostModel,
    profiled: Option<&'a CostModel>,
    /// The digest of the parameters after the last step (with `--json`).
    digest: Option<u64>,
    /// With data parallelism and profiled costs: the replicas and every stage's gradient bytes.
    sums: Option<(DataParallel, Vec<u64>)>,
}

/// The end-of-run report over the measured steps.
fn finish(args: &RunArgs, schedule: &Schedule, records: &[Step], run: Finished) -> Result<()> {
    let Finished { validations, updates, predicted: predicted_bytes, profiled, digest, sums } = run;
    // Under dynamic loss scaling: the steps (1-based) whose update was skipped, and the scale at
    // the end.
    let skipped: Vec<usize> =
        updates.iter().enumerate().filter(|(_, u)| matches!(u, Update::Skipped { .. })).map(|(k, _)| k + 1).collect();
    let final_scale = updates.last().and_then(Update::scale);
    let times: Vec<f64> = records.iter().map(|r| Stats::of(&r.trace).makespan).collect();
    let median = median_index(&times);
    let measured = &records[median].trace;
    let m_stats = Stats::of(measured);
    let simulated = match (profiled, &sums) {
        (Some(c), Some((dp, grad_bytes))) => Some(simulate_data_parallel(schedule, c, *dp, grad_bytes)?),
        (Some(c), None) => Some(simulate(schedule, c)?),
        (None, _) => None,
    };
    // When the pipeline's last sum over the replicas ended: measured (median over the steps, on
    // the trace's clock) and simulated.
    let done: Vec<f64> = records.iter().filter_map(|r| r.sums_done_ms).collect();
    let with_sums = match (&simulated, done.is_empty()) {
        (Some(s), false) if !s.sums.is_empty() => Some((done[median_index(&done)], s.step_end())),
        _ => None,
    };
    // Held bytes follow from the stages' accounting alone; messages in flight also need the
    // timing, so their prediction is the simulation with profiled costs when there is one.
    let from_bytes_trace = simulate(schedule, predicted_bytes)?;
    let from_bytes = Stats::of(&from_bytes_trace);
    // Host bytes (offload), measured and predicted, by rank.
    let host_measured: Vec<u64> = measured.ranks.iter().map(|r| r.peak_host_bytes()).collect();
    let host_predicted: Vec<u64> = from_bytes_trace.ranks.iter().map(|r| r.peak_host_bytes()).collect();
    let predicted_held = from_bytes.peak_held_bytes;
    let predicted = simulated.as_ref().map_or(from_bytes.peak_bytes, |s| Stats::of(s).peak_bytes);
    let comparison = simulated.as_ref().map(|s| compare(measured, s));
    if args.trace {
        write_chrome_trace(measured, &args.out.file(&format!("{}.trace.json", schedule.name)))?;
    }
    if args.plot {
        write_charts(&args.out.out, &schedule.name, measured, simulated.as_ref())?;
    }
    let loss = records.last().and_then(|r| r.loss);
    let verified: Vec<Verification> = records.iter().filter_map(|r| r.verification).collect();
    let samples = records.len();
    if args.json {
        let mut out = json!({
            "schedule": schedule.name, "p": schedule.p, "m": schedule.m, "v": schedule.v,
            "model": args.model.model.to_string(), "recompute": args.recompute.policies().to_string(),
            "steps": samples,
            "loss": loss, "losses": records.iter().map(|r| r.loss).collect::<Vec<_>>(),
            "validation": validations,
            "step_time_s": times[median] / 1e3,
            "step_times_s": times.iter().map(|t| t / 1e3).collect::<Vec<_>>(),
            "bubble_rate": m_stats.bubble_rate,
            "peak_memory_bytes": m_stats.peak_bytes,
            "predicted_peak_memory_bytes": predicted,
            "peak_held_bytes": m_stats.peak_held_bytes,
            "predicted_peak_held_bytes": predicted_held,
            "peak_host_bytes": host_measured,
            "predicted_peak_host_bytes": host_predicted,
            "host_link": profiled.and_then(|c| c.host_link),
            "comparison": comparison,
            "profiled_costs": profiled,
            "static_bytes": predicted_bytes.static_bytes,
            "parameter_digest": digest.map(|d| format!("{d:016x}")),
        });
        if let Some(scale) = final_scale {
            out["loss_scale"] = json!(f64::from(scale));
            out["skipped_steps"] = json!(skipped);
        }
        if let Some((measured, simulated)) = with_sums {
            out["sums_done_s"] = json!(measured / 1e3);
            out["simulated_step_with_sums_s"] = json!(simulated / 1e3);
        }
        if let Some(plan) = &args.loaded {
            out["plan"] = json!({
                "predicted_step": plan.predicted_step, "time_unit": plan.time_unit,
                "predicted_peak_held_bytes": plan.predicted_peak_held_bytes,
                "memory_cap": plan.memory_cap,
            });
        }
        if !verified.is_empty() {
            out["max_grad_diff"] = json!(verified.iter().map(|v| v.max_grad_diff).fold(0.0f32, f32::max));
            out["max_loss_diff"] = json!(verified.iter().map(|v| v.loss_diff).fold(0.0f32, f32::max));
            out["bitwise"] = json!(verified.iter().all(|v| v.bitwise));
            let rel: Vec<f32> = verified.iter().filter_map(|v| v.cpu_rel_diff).collect();
            if !rel.is_empty() {
                out["max_cpu_rel_grad_diff"] = json!(rel.iter().copied().fold(0.0f32, f32::max));
            }
        }
        pipesched::sayln!("{out}")?;
        return Ok(());
    }
    pipesched::sayln!(
        "\nmedian step {:.3} ms over {} measured steps (bubble {:.1} %)",
        times[median],
        times.len(),
        100.0 * m_stats.bubble_rate
    )?;
    if let Some(scale) = final_scale {
        let which = if skipped.is_empty() {
            String::new()
        } else {
            format!(" (steps {})", skipped.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
        };
        pipesched::sayln!(
            "dynamic loss scaling: {} of {} updates skipped for an overflowing gradient{which}; loss scale at the end {}",
            skipped.len(),
            updates.len(),
            power_of_two(scale)
        )?;
    }
    print_peaks(&m_stats, &predicted_held, &predicted)?;
    if args.offload.given() {
        pipesched::sayln!("\n{:>4}  {:>14}  {:>14}", "rank", "host measured", "host predicted")?;
        for (r, (m, p)) in host_measured.iter().zip(&host_predicted).enumerate() {
            pipesched::sayln!("{r:>4}  {:>14}  {:>14}", m, p)?;
        }
        if let Some(link) = profiled.and_then(|c| c.host_link) {
            pipesched::sayln!(
                "offload copies simulated at {:.3} GB/s (--host-bandwidth, or a measured memcpy of the largest micro-batch's kept bytes)",
                link.bandwidth * 1e3 / 1e9
            )?;
        }
    }
    if let Some(plan) = &args.loaded {
        print_against_plan(plan, &m_stats, times[median])?;
    }
    if let Some(c) = comparison {
        pipesched::sayln!("\nmeasured vs simulated with profiled costs:\n{c}")?;
    }
    if let Some((measured, simulated)) = with_sums {
        pipesched::sayln!(
            "with the gradient sums over the replicas, the step ends {measured:.3} ms measured (median), {simulated:.3} ms simulated ({:+.1} %)",
            100.0 * (measured / simulated - 1.0)
        )?;
    }
    Ok(())
}

/// The peak bytes per rank, measured and predicted: held, and with messages in flight.
fn print_peaks(measured: &Stats, predicted_held: &[u64], predicted: &[u64]) -> Result<()> {
    pipesched::sayln!(
        "\n{:>4}  {:>14}  {:>14}     {:>14}  {:>14}",
        "rank",
        "held measured",
        "held predicted",
        "with messages",
        "predicted"
    )?;
    for r in 0..measured.peak_bytes.len() {
        let (held, held_p) = (measured.peak_held_bytes[r], predicted_held.get(r).copied().unwrap_or(0));
        let (all, all_p) = (measured.peak_bytes[r], predicted.get(r).copied().unwrap_or(0));
        let same = if held == held_p { "=" } else { "≠" };
        pipesched::sayln!(
            "{r:>4}  {:>14}  {:>14}  {same}  {:>14}  {:>14}   ({held} B held)",
            units::bytes(held),
            units::bytes(held_p),
            units::bytes(all),
            units::bytes(all_p)
        )?;
    }
    pipesched::sayln!(
        "(held: static bytes and what the stages keep, predicted exactly; with messages: plus activations and gradients sent and not yet consumed, which depend on timing)"
    )?;
    Ok(())
}

/// The measured peak held bytes and median step time against what the plan predicted.
fn print_against_plan(plan: &PlanFile, measured: &Stats, step: f64) -> Result<()> {
    pipesched::sayln!(
        "\nagainst the plan ({} m={}, cap {}):\n{:>4}  {:>14}  {:>14}",
        plan.schedule,
        plan.m,
        units::bytes(plan.memory_cap),
        "rank",
        "held measured",
        "plan predicted"
    )?;
    for (r, &held) in measured.peak_held_bytes.iter().enumerate() {
        let predicted = plan.predicted_peak_held_bytes.get(r).copied().unwrap_or(0);
        let same = if held == predicted { "=" } else { "≠" };
        let fits = if held <= plan.memory_cap { "within the cap" } else { "OVER the cap" };
        pipesched::sayln!(
            "{r:>4}  {:>14}  {:>14}  {same}  ({held} B measured, {predicted} B predicted; {fits})",
            units::bytes(held),
            units::bytes(predicted)
        )?;
    }
    let off = if plan.predicted_step > 0.0 { 100.0 * (step / plan.predicted_step - 1.0) } else { 0.0 };
    pipesched::sayln!(
        "step time: {step:.3} ms measured (median), {:.3} {} predicted ({off:+.1} %)",
        plan.predicted_step,
        plan.time_unit
    )
}

/// Writes the measured chart and, when there is a simulation, the simulated-above-measured one.
fn write_charts(dir: &Path, name: &str, measured: &Trace, simulated: Option<&Trace>) -> Result<()> {
    for ext in ["svg", "png"] {
        render(measured, &dir.join(format!("{name}-measured.{ext}")))?;
        if let Some(sim) = simulated {
            render_stack(&[("simulated", sim), ("measured", measured)], &dir.join(format!("{name}-compare.{ext}")))?;
        }
    }
    Ok(())
}
