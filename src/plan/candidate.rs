//! One plan the search tried: a schedule kind and its micro-batches, a partition of the layers,
//! a recompute policy per stage, and what the simulator predicts for it — and the record of a
//! family (kind × m × partition) the search could not fit, with the reason.
//!
//! Invariant: a [`Candidate`]'s numbers are those of one simulation of its schedule (with `R`
//! planned from its policies) under the cost model composed for its partition, policies and
//! micro-batch size; `peaks` are held bytes (static plus what the stages keep), the quantity
//! the executor's ledger measures.

use std::ops::Range;

use pipesched_schedules::{simulate_data_parallel, simulate_stats, CostModel, DataParallel, Kind, Schedule, Stats};
use pipesched_stages::{Policies, RecomputePolicy};

use crate::units;
use crate::workload::Layout;

/// A simulated plan.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The schedule's kind.
    pub kind: Kind,
    /// Chunks per rank.
    pub v: usize,
    /// Micro-batches per step.
    pub m: usize,
    /// Samples per micro-batch (rows, or sequences for a model of sequences).
    pub microbatch: usize,
    /// How the partition was found: `balanced` (by time) or `even`.
    pub split: &'static str,
    /// Each stage's layers.
    pub ranges: Vec<Range<usize>>,
    /// Each stage's recompute policy.
    pub policies: Vec<RecomputePolicy>,
    /// Predicted step time (the simulated makespan), in the costs' time unit.
    pub makespan: f64,
    /// Predicted bubble rate.
    pub bubble: f64,
    /// Predicted peak held bytes per rank.
    pub peaks: Vec<u64>,
    /// Static bytes per rank.
    pub static_bytes: Vec<u64>,
    /// The schedule without `R` (the run plans `R` from the policies).
    pub schedule: Schedule,
    /// The data-parallel replicas it was planned for (each running `m` micro-batches of the
    /// step's batch/D samples).
    pub dp: DataParallel,
    /// With replicas, each stage's gradient bytes summed over them (`f32`); else empty.
    pub sum_bytes: Vec<u64>,
}

/// `planned` (a candidate's schedule, `R` planned in) simulated under `costs`, and with `dp`'s
/// replicas each stage's sum of `sum_bytes` after its last backward: the step — to the end of
/// the last sum — and the stats (bubble and held peaks).
pub(crate) fn simulate_step(
    planned: &Schedule,
    costs: &CostModel,
    dp: DataParallel,
    sum_bytes: &[u64],
) -> pipesched_schedules::Result<(f64, Stats)> {
    if !dp.sums() {
        let stats = simulate_stats(planned, costs)?;
        return Ok((stats.makespan, stats));
    }
    let trace = simulate_data_parallel(planned, costs, dp, sum_bytes)?;
    Ok((trace.step_end(), Stats::of(&trace)))
}

impl Candidate {
    /// The largest peak over ranks.
    pub fn peak(&self) -> u64 {
        self.peaks.iter().copied().max().unwrap_or(0)
    }

    /// Its ranks and chunks: p, v and the schedule's placement.
    pub fn layout(&self) -> Layout {
        Layout::from(&self.schedule)
    }

    /// Layers per stage, comma-separated (`3,3`).
    pub fn counts(&self) -> String {
        let c: Vec<String> = self.ranges.iter().map(|r| r.len().to_string()).collect();
        c.join(",")
    }

    /// The policies, one for all when they agree.
    pub fn policy_text(&self) -> String {
        Candidate::policy_list(&self.policies)
    }

    /// `policies` as one policy when they agree, else the per-stage list.
    pub fn policy_list(policies: &[RecomputePolicy]) -> String {
        match policies {
            [first, rest @ ..] if rest.iter().all(|p| p == first) => first.to_string(),
            all => Policies(all.to_vec()).to_string(),
        }
    }

    /// Whether two candidates are the same plan.
    pub fn same_plan(&self, other: &Candidate) -> bool {
        self.kind == other.kind && self.m == other.m && self.ranges == other.ranges && self.policies == other.policies
    }

    /// The header of a table of [`Candidate::row`]s; `composed`: with the composed step's column.
    pub fn header(composed: bool) -> String {
        let extra = if composed { format!("  {:>13}", "composed") } else { String::new() };
        format!(
            "{:>13}{extra}  {:>8}  {:>11}  {:<14}  {:>4}  {:>5}  {:<9} {:<10}  policies",
            "step", "bubble", "peak (max)", "schedule", "m", "micro", "split", "layers"
        )
    }

    /// One line for a table of plans; `composed`: the step composed from per-layer costs, for
    /// a plan whose stages were measured.
    pub fn row(&self, unit: &str, composed: Option<f64>) -> String {
        let extra = composed.map_or(String::new(), |t| format!("  {t:>10.3} {unit:<2}"));
        format!(
            "{:>10.3} {unit:<2}{extra}  {:>6.1} %  {:>11}  {:<14}  {:>4}  {:>5}  {:<9} {:<10}  {}",
            self.makespan,
            100.0 * self.bubble,
            units::bytes(self.peak()),
            self.kind.name(),
            self.m,
            self.microbatch,
            self.split,
            self.counts(),
            self.policy_text()
        )
    }
}

/// A family of candidates the search could not fit, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The family: `kind m=M` and the split, or `m=M` for a whole micro-batch count.
    pub family: String,
    /// Why nothing of it fits.
    pub reason: String,
}

/// A simulated point, for the Pareto front: step time against the largest peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Predicted step time.
    pub makespan: f64,
    /// Largest peak held bytes over ranks.
    pub peak: u64,
}
