//! `pipesched plan`: the fastest plan for a model on p ranks, a step of `--batch` samples, that
//! fits `--memory-cap` bytes per rank — searched over micro-batch counts, schedules, partitions
//! and per-stage recompute, every candidate simulated with costs composed from per-layer costs
//! (read with `--costs-file`, or profiled now); then the fastest plans' own stages are profiled
//! and the plan is chosen by the step they predict (`--measure`). Prints the best plans and why
//! each rejected family does not fit, and writes `plan.json` and `plan-pareto.svg|png` into
//! `--out`.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use pipesched::args::{at_least_one, read_text, stage_count, ByteSize, OutArgs};
use pipesched::cost_file::CostFile;
use pipesched::exec::Transport;
use pipesched::plan::{
    measure, microbatch_counts, pareto, replica_batch, search, stages_spec, Candidate, Effort, Measured, PlanFile,
    Request,
};
use pipesched::workload::{Demand, Layout, ModelChoice, ModelSource};
use pipesched::{units, Error, Result};
use pipesched_schedules::DataParallel;
use pipesched_stages::{ModelSpec, Partition, Policies};

/// Arguments of `pipesched plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The model: a preset (tiny, small, medium, gpt-tiny, gpt-small, gpt-medium, gpt2-xl) or a TOML or
    /// JSON model file.
    #[arg(long, value_name = "MODEL", default_value = "gpt-small")]
    model: ModelChoice,
    /// Number of ranks (devices).
    #[arg(short = 'p', long = "ranks", value_name = "P", default_value_t = 2, value_parser = stage_count)]
    p: usize,
    /// Samples per step (rows, or sequences for a model of sequences); m micro-batches of
    /// batch/m samples each, m ≥ p dividing it.
    #[arg(long, value_name = "SAMPLES", value_parser = at_least_one)]
    batch: usize,
    /// The most bytes a rank may hold: parameters, gradients, optimizer state and what its
    /// stages keep (e.g. 40MiB).
    #[arg(long, value_name = "BYTES")]
    memory_cap: ByteSize,
    /// Data-parallel replicas of the pipeline (run on p·D MPI processes): the step's --batch is
    /// split over them, batch/D samples each; every stage keeps a buffer its gradients are
    /// summed over the replicas in, and the step ends when the last sum does (over the cost
    /// file's link; profiled here, in one process, the sums cost only latencies).
    #[arg(long, default_value_t = 1, value_parser = at_least_one, value_name = "D")]
    dp: usize,
    /// ZeRO stage of the replicas: 0, or 1 (each keeps its 1/D slice of the optimizer state).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1), value_name = "STAGE")]
    zero: u8,
    /// Per-layer costs written by `pipesched profile` for this model, at one micro-batch size
    /// (other sizes are scaled: bytes exactly with the rows, times linearly). Without it the
    /// model is profiled now, quickly, at every candidate micro-batch size.
    #[arg(long, value_name = "FILE")]
    costs_file: Option<PathBuf>,
    /// Profile the stages of the fastest plans on the CPU — at most N distinct sets of stages
    /// (partition, micro-batch size, policies, layout) — simulate those plans again under
    /// their stages' costs, and choose the fastest of them; 0 keeps the step composed from
    /// per-layer costs. Default: 3, or 0 with --costs-file (its costs may have been measured
    /// elsewhere).
    #[arg(long, value_name = "N")]
    measure: Option<usize>,
    /// Plans listed, fastest first.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = at_least_one)]
    show: usize,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    out: OutArgs,
}

/// Repetitions of each op when the model is profiled here (after 2 warm-up runs).
const PROFILE_REPS: usize = 7;

/// Rounds of profiling each set of stages `--measure` profiles (the sets taking turns).
const MEASURE_ROUNDS: usize = 3;

/// The fastest plans whose stages `--measure` may profile (as many distinct sets of stages as
/// it says, the first found first).
const MEASURED_PLANS: usize = 20;

/// Plans and writes the plan.
pub fn run(args: PlanArgs) -> Result<()> {
    let ModelSource::Model(model) = &args.model.source else {
        return Err(Error::Usage(
            "plan composes stages from a model's per-layer costs; synthetic stages have no layers. Give a preset or a model file".into(),
        ));
    };
    let dp = DataParallel::new(args.dp, args.zero == 1).map_err(|e| Error::Usage(e.to_string()))?;
    let per_replica = replica_batch(args.batch, dp)?;
    let ms = microbatch_counts(args.p, per_replica)?;
    let dir = args.out.prepare()?;
    let (costs, measured) = match &args.costs_file {
        Some(path) => {
            let text = read_text(path, 64 << 20, "cannot read the cost file")?;
            (CostFile::from_json(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?, vec![])
        }
        // Every candidate micro-batch size, so no time is scaled; the first is the largest.
        None => {
            let mut files = ms.iter().map(|m| profile(&args, model, per_replica / m)).collect::<Result<Vec<_>>>()?;
            let first = files.remove(0);
            (first, files.into_iter().filter_map(|f| f.layers).collect())
        }
    };
    let started = Instant::now();
    let req =
        Request { model, costs: &costs, p: args.p, batch: args.batch, cap: args.memory_cap.0, measured: &measured, dp };
    let outcome = search(req)?;
    let took = started.elapsed().as_secs_f64();
    let budget = args.measure.unwrap_or(if args.costs_file.is_some() { 0 } else { 3 });
    let fastest = &outcome.plans[..outcome.plans.len().min(MEASURED_PLANS)];
    let effort = Effort { budget, rounds: MEASURE_ROUNDS, reps: PROFILE_REPS };
    let measured = measure(&args.model, fastest, &costs.model, effort, args.memory_cap.0, |c, s| {
        eprintln!(
            "profiled the stages of {} m={} (layers {}, {}) in {s:.2} s",
            c.kind,
            c.m,
            c.counts(),
            c.policy_text()
        )
    })?;
    if budget > 0 && measured.is_empty() {
        // Their stages' own bytes are the composition's (tested), so this is a disagreement
        // between the two accountings: no plan is offered on it.
        return Err(Error::Config(format!(
            "every plan whose stages were profiled holds more than {} by its stages' own accounting, though the per-layer costs said it fits; plan without measuring (--measure 0) and check the bytes with `pipesched memory`",
            units::bytes(args.memory_cap.0)
        )));
    }
    let unit = &outcome.time_unit;
    let (best, composed) = match measured.first() {
        Some(m) => (&m.plan, Some(m.composed)),
        None => (&outcome.plans[0], None),
    };
    let plan = PlanFile::of(best, composed, &args.model.to_string(), model, args.batch, args.memory_cap.0, unit)?;
    let path = dir.join("plan.json");
    plan.write(&path)?;
    // The front is of composed steps: the chosen plan is marked at its composed step too.
    let on_front = outcome.plans.iter().find(|c| c.same_plan(best)).unwrap_or(best);
    pareto::write_front(dir, &outcome.points, args.memory_cap.0, on_front, unit)?;
    if args.json {
        let plans: Vec<_> = outcome.plans.iter().take(args.show).map(|c| plan_json(c, unit)).collect();
        let rejected: Vec<_> =
            outcome.rejected.iter().map(|r| json!({"family": r.family, "reason": r.reason})).collect();
        let measured: Vec<_> = measured
            .iter()
            .map(|m| {
                let mut j = plan_json(&m.plan, unit);
                j["composed_step"] = json!(m.composed);
                j
            })
            .collect();
        let out = json!({
            "plan": plan, "plans": plans, "measured": measured,
            "measured_order": "the chosen plan first (its step from profiling rounds of its own), then the rest fastest first",
            "rejected": rejected, "fitting": outcome.plans.len(),
            "simulations": outcome.simulations, "search_s": took,
        });
        pipesched::sayln!("{out}")?;
    } else {
        print(&args, &outcome, &measured, took)?;
    }
    eprintln!("wrote {} and {}", path.display(), dir.join("plan-pareto.svg|png").display());
    Ok(())
}

/// The model's per-layer costs, profiled for micro-batches of `microbatch` samples.
fn profile(args: &PlanArgs, model: &ModelSpec, microbatch: usize) -> Result<CostFile> {
    let p = args.p.min(model.num_layers()).max(1);
    let layout = Layout::looped(p, 1);
    let spec = stages_spec(&args.model, Partition::Even, microbatch);
    let none = Policies::all(Default::default());
    let mut workload = spec.build(&layout, &none, &Demand::profiling(p), &Transport::InProcess)?;
    let started = Instant::now();
    let file = workload.profile_file(PROFILE_REPS)?;
    eprintln!(
        "profiled {} per layer at {microbatch} samples per micro-batch in {:.2} s",
        model.name,
        started.elapsed().as_secs_f64()
    );
    Ok(file)
}

fn plan_json(c: &Candidate, unit: &str) -> serde_json::Value {
    json!({
        "schedule": c.kind.name(), "v": c.v, "m": c.m, "microbatch": c.microbatch,
        "partition": c.ranges, "split": c.split, "policies": c.policies,
        "predicted_step": c.makespan, "time_unit": unit, "predicted_bubble": c.bubble,
        "predicted_peak_held_bytes": c.peaks, "static_bytes": c.static_bytes,
    })
}

/// The tables: the best plans, the chosen one's bytes per rank, the rejected families.
fn print(args: &PlanArgs, outcome: &pipesched::plan::Outcome, measured: &[Measured], took: f64) -> Result<()> {
    let unit = &outcome.time_unit;
    pipesched::sayln!(
        "{} plans fit {} per rank ({} of p = {}, batch {}{}); {} simulations in {took:.2} s. Fastest first:\n",
        outcome.plans.len(),
        units::bytes(args.memory_cap.0),
        args.model,
        args.p,
        args.batch,
        if args.dp > 1 {
            let zero = if args.zero > 0 { ", ZeRO-1" } else { "" };
            format!(
                " over {} replicas of {} samples{zero}; steps to the last sum over the replicas",
                args.dp,
                args.batch / args.dp
            )
        } else {
            String::new()
        },
        outcome.simulations
    )?;
    pipesched::sayln!("{}", Candidate::header(false))?;
    for c in outcome.plans.iter().take(args.show) {
        pipesched::sayln!("{}", c.row(unit, None))?;
    }
    if !measured.is_empty() {
        pipesched::sayln!(
            "\nthe fastest plans' stages profiled and their steps simulated again: the chosen plan first (its step from rounds of its own), then the rest, fastest first:\n"
        )?;
        pipesched::sayln!("{}", Candidate::header(true))?;
        for m in measured {
            pipesched::sayln!("{}", m.plan.row(unit, Some(m.composed)))?;
        }
    }
    let best = measured.first().map_or(&outcome.plans[0], |m| &m.plan);
    pipesched::sayln!(
        "\nchosen: {} m={} (micro-batches of {}), peak held bytes per rank:",
        best.kind,
        best.m,
        best.microbatch
    )?;
    for (r, (peak, stat)) in best.peaks.iter().zip(&best.static_bytes).enumerate() {
        pipesched::sayln!(
            "  rank {r}: {:>11} ({peak} B; static {}, {} under the cap)",
            units::bytes(*peak),
            units::bytes(*stat),
            units::bytes(args.memory_cap.0 - peak)
        )?;
    }
    if !outcome.rejected.is_empty() {
        pipesched::sayln!("\nrejected families:")?;
        for r in &outcome.rejected {
            pipesched::sayln!("  {}: {}", r.family, r.reason)?;
        }
    }
    Ok(())
}
