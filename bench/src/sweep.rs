//! Running one configuration: build its stages, run warm-up and measured steps (or only
//! simulate), profile the stages, simulate the schedule with the profiled costs, and reduce it
//! all to one row of numbers.

use serde::Serialize;

use pipesched::exec::{ExecOptions, Transport};
use pipesched::report::median_index;
use pipesched::workload::{Demand, Workload};
use pipesched::Result;
use pipesched_schedules::{simulate, Op, Stats, Trace};

use crate::config::{Args, Config};

/// Everything measured for one configuration. Times in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `zb-h1 / full`.
    pub label: String,
    /// Schedule name.
    pub schedule: String,
    /// Recompute policy.
    pub recompute: String,
    /// Chunks per rank.
    pub v: usize,
    /// Samples per step.
    pub samples_per_step: usize,
    /// Step times of the measured steps (empty with --simulate-only).
    pub step_ms: Vec<f64>,
    /// Median step time (the simulated makespan with --simulate-only).
    pub step_ms_median: f64,
    /// Samples per second at the median step.
    pub throughput: f64,
    /// Samples per second at the slowest and fastest step.
    pub throughput_range: (f64, f64),
    /// Throughput / the best configuration's.
    pub relative_throughput: f64,
    /// Bubble rate of the median measured step.
    pub bubble_measured: Option<f64>,
    /// Bubble rate of the simulation with profiled costs.
    pub bubble_simulated: f64,
    /// Makespan of that simulation.
    pub simulated_ms: f64,
    /// Peak live bytes per rank, measured (ledger of the median step), messages in flight
    /// included.
    pub peak_bytes_measured: Option<Vec<u64>>,
    /// Peak live bytes per rank, simulated with the profiled costs, messages in flight included.
    pub peak_bytes_predicted: Vec<u64>,
    /// Peak held bytes per rank (static and kept by the stages), measured.
    pub peak_held_measured: Option<Vec<u64>>,
    /// Peak held bytes per rank, predicted from the stages' own accounting (exact).
    pub peak_held_predicted: Vec<u64>,
    /// Static bytes per rank (parameters, gradients, optimizer state): peak − static is the
    /// peak of what the micro-batches in flight hold.
    pub static_bytes: Vec<u64>,
    /// Share of busy time spent recomputing (measured; simulated with --simulate-only).
    pub recompute_share: f64,
    /// Loss of the last step (real models).
    pub loss: Option<f32>,
}

/// A configuration's row and the traces its charts are drawn from.
pub struct Outcome {
    /// The numbers.
    pub row: Row,
    /// The median measured step.
    pub measured: Option<Trace>,
    /// The simulation with profiled costs.
    pub simulated: Trace,
}

fn recompute_share(trace: &Trace) -> f64 {
    let st = Stats::of(trace);
    let busy: f64 = st.busy.iter().sum();
    if busy > 0.0 {
        st.recompute.iter().sum::<f64>() / busy
    } else {
        0.0
    }
}

/// Builds `cfg`'s stages (with ranks as processes, each process its own, and every process goes
/// on only if every one could build them: [`Transport::agree`]).
pub fn build(args: &Args, cfg: &Config, transport: &Transport) -> Result<Box<dyn Workload>> {
    let demand = Demand::of(&cfg.base, false, args.steps.total());
    transport.agree(args.model.spec().and_then(|s| s.build(&cfg.layout(), &cfg.policies, &demand, transport)))
}

/// Runs `cfg` on `workload` (from [`build`]). `progress(step)` is called after each step.
pub fn run(
    args: &Args,
    cfg: &Config,
    mut workload: Box<dyn Workload>,
    opts: &ExecOptions,
    mut progress: impl FnMut(&str),
) -> Result<Outcome> {
    let schedule = workload.plan(&cfg.base)?;
    let steps = if args.simulate_only { 0 } else { args.steps.total() };
    let mut traces = Vec::new();
    let mut loss = None;
    for k in 0..steps {
        let step = workload.run_step(&schedule, k as u64, opts, false)?;
        workload.optimizer_step()?;
        loss = step.loss;
        traces.push(step.trace);
        progress(&format!("step {}/{steps}", k + 1));
    }
    progress("profiling");
    // With --costs the times and bytes are the flags'; otherwise the stages' profile and their
    // own byte accounting.
    let (profiled, bytes) = if args.costs.given() {
        let flags = args.costs.model()?;
        (flags.clone(), flags)
    } else {
        (workload.profile(args.profile_reps())?, workload.predicted()?)
    };
    let simulated = simulate(&schedule, &profiled)?;
    let sim_stats = Stats::of(&simulated);
    // Held bytes follow from the byte accounting alone (exact); the peaks with messages in flight
    // also need the timing, so they come from the profiled simulation.
    let predicted_peaks = sim_stats.peak_bytes.clone();
    let predicted_held = Stats::of(&simulate(&schedule, &bytes)?).peak_held_bytes;
    let static_bytes = bytes.resolve(&schedule)?.1;
    let samples = args.shape.m * workload.rows().unwrap_or(1);
    let measured: Vec<Trace> = traces.split_off(args.steps.warmup.min(traces.len()));
    let step_ms: Vec<f64> = measured.iter().map(|t| Stats::of(t).makespan).collect();
    let (median_ms, median_trace) = if step_ms.is_empty() {
        (sim_stats.makespan, None)
    } else {
        let k = median_index(&step_ms);
        (step_ms[k], Some(measured[k].clone()))
    };
    let per_s = |ms: f64| if ms > 0.0 { samples as f64 / (ms / 1e3) } else { 0.0 };
    let slowest = step_ms.iter().copied().fold(median_ms, f64::max);
    let fastest = step_ms.iter().copied().fold(median_ms, f64::min);
    let m_stats = median_trace.as_ref().map(Stats::of);
    let has_r = schedule.actions().any(|a| a.op == Op::R);
    let row = Row {
        label: cfg.label(),
        schedule: cfg.kind.to_string(),
        recompute: cfg.policies.to_string(),
        v: schedule.v,
        samples_per_step: samples,
        step_ms: step_ms.clone(),
        step_ms_median: median_ms,
        throughput: per_s(median_ms),
        throughput_range: (per_s(slowest), per_s(fastest)),
        relative_throughput: 0.0,
        bubble_measured: m_stats.as_ref().map(|s| s.bubble_rate),
        bubble_simulated: sim_stats.bubble_rate,
        simulated_ms: sim_stats.makespan,
        peak_bytes_measured: m_stats.as_ref().map(|s| s.peak_bytes.clone()),
        peak_bytes_predicted: predicted_peaks,
        peak_held_measured: m_stats.as_ref().map(|s| s.peak_held_bytes.clone()),
        peak_held_predicted: predicted_held,
        static_bytes,
        recompute_share: if !has_r {
            0.0
        } else {
            median_trace.as_ref().map_or_else(|| recompute_share(&simulated), recompute_share)
        },
        loss,
    };
    Ok(Outcome { row, measured: median_trace, simulated })
}
