//! The Pareto front of the plans simulated: the step composed from per-layer costs (what the
//! search predicts for every candidate) against the largest peak held bytes over ranks — the
//! points no other point beats on both — and its chart, with the memory cap and the chosen plan
//! marked.
//!
//! Invariant: the front is ordered by increasing peak with strictly decreasing time, so each
//! point on it is the fastest plan within its own peak.

use std::path::Path;

use pipesched_charts::{render_lines, LineChart, Series};

use super::candidate::{Candidate, Point};
use crate::Result;

/// The points of `all` no other point beats in both time and peak, by increasing peak.
pub fn front(all: &[Point]) -> Vec<Point> {
    let mut sorted = all.to_vec();
    sorted.sort_by(|a, b| a.peak.cmp(&b.peak).then(a.makespan.total_cmp(&b.makespan)));
    let mut out: Vec<Point> = Vec::new();
    for p in sorted {
        if out.last().is_none_or(|last| p.makespan < last.makespan) {
            out.push(p);
        }
    }
    out
}

const MIB: f64 = 1024.0 * 1024.0;

/// Draws the front of `all`, the cap and `chosen` to `dir/plan-pareto.svg` and `.png`.
pub fn write_front(dir: &Path, all: &[Point], cap: u64, chosen: &Candidate, unit: &str) -> Result<()> {
    let f = front(all);
    let (lo, hi) =
        f.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.makespan), hi.max(p.makespan)));
    let mib = |b: u64| b as f64 / MIB;
    let chart = LineChart {
        title: format!(
            "plans: step composed from per-layer costs against peak held bytes ({} simulated, {} on the front)",
            all.len(),
            f.len()
        ),
        x_name: "largest peak held bytes over ranks (MiB)".into(),
        y_name: format!("composed step time ({unit})"),
        series: vec![
            Series {
                label: "Pareto front".into(),
                x: f.iter().map(|p| mib(p.peak)).collect(),
                y: f.iter().map(|p| p.makespan).collect(),
            },
            Series { label: "memory cap".into(), x: vec![mib(cap), mib(cap)], y: vec![lo, hi] },
            Series {
                label: format!("chosen: {} m={}", chosen.kind, chosen.m),
                x: vec![mib(chosen.peak())],
                y: vec![chosen.makespan],
            },
        ],
    };
    for ext in ["svg", "png"] {
        render_lines(&chart, &dir.join(format!("plan-pareto.{ext}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_keeps_what_nothing_beats() {
        let pt = |makespan: f64, peak: u64| Point { makespan, peak };
        let all = [pt(10.0, 5), pt(8.0, 7), pt(9.0, 8), pt(12.0, 3), pt(8.0, 9), pt(7.0, 20)];
        assert_eq!(front(&all), vec![pt(12.0, 3), pt(10.0, 5), pt(8.0, 7), pt(7.0, 20)]);
        assert!(front(&[]).is_empty());
    }
}
