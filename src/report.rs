//! "Where did my bubble go": a measured trace next to the simulated one — per-rank busy, idle
//! and recompute time, makespans and bubble rates side by side, and the largest drift of any
//! action's start time between the two.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use pipesched_schedules::{Action, Stats, Trace};

/// One rank's times, measured and simulated.
#[derive(Debug, Clone, Serialize)]
pub struct RankComparison {
    /// The rank.
    pub rank: usize,
    /// Busy time, measured / simulated.
    pub busy: (f64, f64),
    /// Idle time, measured / simulated.
    pub idle: (f64, f64),
    /// Recompute time, measured / simulated.
    pub recompute: (f64, f64),
    /// Peak bytes, measured / simulated.
    pub peak_bytes: (u64, u64),
}

/// A measured trace compared with a simulation of the same schedule.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Time unit of both traces.
    pub time_unit: String,
    /// Makespan, measured / simulated.
    pub makespan: (f64, f64),
    /// Bubble rate, measured / simulated.
    pub bubble_rate: (f64, f64),
    /// measured makespan / simulated makespan − 1.
    pub makespan_excess: f64,
    /// (measured − simulated makespan) / number of actions on the busiest lane: the cost the
    /// executor adds per action on the critical path.
    pub overhead_per_action: f64,
    /// Of that, per action: how much longer the busiest lane's actions ran than profiled, and
    /// how much longer it waited.
    pub overhead_split: (f64, f64),
    /// Per-rank numbers.
    pub ranks: Vec<RankComparison>,
    /// The action whose start time differs most between the traces, and by how much (measured − simulated).
    pub max_start_drift: Option<(Action, f64)>,
}

/// The median of `xs` (the mean of the two middle values for an even count); `None` for none.
pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(xs[n / 2]),
        _ => Some((xs[n / 2 - 1] + xs[n / 2]) / 2.0),
    }
}

/// Index of the median of `xs` (the lower middle for an even count; 0 for none): which of
/// several measured steps stands for them all.
pub fn median_index(xs: &[f64]) -> usize {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    idx.get(xs.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// Compares `measured` with `simulated` (same schedule, same time unit).
pub fn compare(measured: &Trace, simulated: &Trace) -> Comparison {
    let (a, b) = (Stats::of(measured), Stats::of(simulated));
    let starts: HashMap<Action, f64> =
        simulated.ranks.iter().flat_map(|r| r.spans().map(|s| (s.action, s.start))).collect();
    let mut max_start_drift: Option<(Action, f64)> = None;
    for span in measured.ranks.iter().flat_map(|r| r.spans()) {
        if let Some(&sim) = starts.get(&span.action) {
            let d = span.start - sim;
            if max_start_drift.is_none_or(|(_, best)| d.abs() > best.abs()) {
                max_start_drift = Some((span.action, d));
            }
        }
    }
    let longest_lane = measured.ranks.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let busiest = (0..a.busy.len().min(b.busy.len())).max_by(|&x, &y| a.busy[x].total_cmp(&a.busy[y]));
    let overhead_split = busiest.map_or((0.0, 0.0), |r| {
        let n = measured.ranks[r].len().max(1) as f64;
        ((a.busy[r] - b.busy[r]) / n, (a.idle[r] - b.idle[r]) / n)
    });
    let ranks = (0..measured.ranks.len().min(simulated.ranks.len()))
        .map(|r| RankComparison {
            rank: r,
            busy: (a.busy[r], b.busy[r]),
            idle: (a.idle[r], b.idle[r]),
            recompute: (a.recompute[r], b.recompute[r]),
            peak_bytes: (a.peak_bytes[r], b.peak_bytes[r]),
        })
        .collect();
    Comparison {
        time_unit: measured.time_unit.clone(),
        makespan: (a.makespan, b.makespan),
        bubble_rate: (a.bubble_rate, b.bubble_rate),
        makespan_excess: if b.makespan > 0.0 { a.makespan / b.makespan - 1.0 } else { 0.0 },
        overhead_per_action: (a.makespan - b.makespan) / longest_lane as f64,
        overhead_split,
        ranks,
        max_start_drift,
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = &self.time_unit;
        writeln!(f, "{:<22} {:>12} {:>12} {:>10}", "", "measured", "simulated", "diff")?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, (m, s): (f64, f64)| {
            writeln!(
                f,
                "{:<22} {:>12.3} {:>12.3} {:>+9.1}%",
                name,
                m,
                s,
                if s != 0.0 { 100.0 * (m / s - 1.0) } else { 0.0 }
            )
        };
        row(f, &format!("makespan ({u})"), self.makespan)?;
        writeln!(
            f,
            "{:<22} {:>11.2}% {:>11.2}% {:>+9.2} pp",
            "bubble rate",
            100.0 * self.bubble_rate.0,
            100.0 * self.bubble_rate.1,
            100.0 * (self.bubble_rate.0 - self.bubble_rate.1)
        )?;
        for r in &self.ranks {
            row(f, &format!("rank {} busy", r.rank), r.busy)?;
            row(f, &format!("rank {} idle", r.rank), r.idle)?;
            if r.recompute.0 > 0.0 || r.recompute.1 > 0.0 {
                row(f, &format!("rank {} recompute", r.rank), r.recompute)?;
            }
        }
        let us = scale_to_us(u);
        writeln!(
            f,
            "makespan difference per action on the busiest lane: {:.1} µs ({:+.1} µs computing, {:+.1} µs waiting)",
            self.overhead_per_action * us,
            self.overhead_split.0 * us,
            self.overhead_split.1 * us
        )?;
        if let Some((a, d)) = self.max_start_drift {
            writeln!(f, "largest start-time drift: {a} started {:+.3} {u} from its simulated start", d)?;
        }
        Ok(())
    }
}

/// Microseconds per unit, for the overhead line (abstract units are shown as if milliseconds).
fn scale_to_us(unit: &str) -> f64 {
    match unit {
        "s" => 1e6,
        "us" => 1.0,
        _ => 1e3,
    }
}
