//! `Stats` of a trace: makespan, ideal time, bubble rates, steady period, per-rank busy, idle,
//! recompute time and peak bytes — DESIGN.md's definitions, for simulated and measured traces alike.

use serde::{Deserialize, Serialize};

use crate::action::Op;
use crate::trace::Trace;

/// Summary numbers of one trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Latest end time over all ranks (time starts at 0).
    pub makespan: f64,
    /// Σ busy / p: the makespan if the work were perfectly spread with no idle time.
    pub ideal: f64,
    /// Idle device-time / (p · makespan).
    pub bubble_rate: f64,
    /// Max over ranks of (end of its last action − start of its first): the step period when
    /// consecutive steps overlap with no barrier between them.
    pub steady_period: f64,
    /// 1 − Σ busy / (p · steady_period).
    pub steady_bubble_rate: f64,
    /// Time each rank spent running actions.
    pub busy: Vec<f64>,
    /// makespan − busy, per rank.
    pub idle: Vec<f64>,
    /// Time each rank spent in `R` actions.
    pub recompute: Vec<f64>,
    /// Peak live bytes per rank, messages in flight included.
    pub peak_bytes: Vec<u64>,
    /// Peak held bytes per rank: static bytes and what the rank's stages keep, messages in
    /// flight left out (the part a prediction matches to the byte; see [`Ledger`](crate::Ledger)).
    #[serde(default)]
    pub peak_held_bytes: Vec<u64>,
}

impl Stats {
    /// Computes the stats of `trace`, in one pass over each rank's spans.
    pub fn of(trace: &Trace) -> Stats {
        let p = trace.ranks.len();
        let mut makespan = 0.0f64;
        let mut busy = Vec::with_capacity(p);
        let mut recompute = Vec::with_capacity(p);
        let mut steady_period = 0.0f64;
        for rank in &trace.ranks {
            // Folded from +0.0: an empty float `sum()` is −0.0.
            let (mut b, mut r) = (0.0f64, 0.0f64);
            for (k, (&start, &end)) in rank.start.iter().zip(&rank.end).enumerate() {
                makespan = makespan.max(end);
                b += end - start;
                if rank.actions[k].op == Op::R {
                    r += end - start;
                }
            }
            if let (Some(first), Some(last)) = (rank.start.first(), rank.end.last()) {
                steady_period = steady_period.max(last - first);
            }
            busy.push(b);
            recompute.push(r);
        }
        let idle: Vec<f64> = busy.iter().map(|b| makespan - b).collect();
        let total: f64 = busy.iter().fold(0.0, |a, b| a + b);
        // Σ busy / p first: p · period can overflow where the mean busy time does not.
        let rate = |period: f64| if period > 0.0 && p > 0 { 1.0 - (total / p as f64) / period } else { 0.0 };
        Stats {
            makespan,
            ideal: if p > 0 { total / p as f64 } else { 0.0 },
            bubble_rate: rate(makespan),
            steady_period,
            steady_bubble_rate: rate(steady_period),
            busy,
            idle,
            recompute,
            peak_bytes: trace.ranks.iter().map(|r| r.peak_bytes()).collect(),
            peak_held_bytes: trace.ranks.iter().map(|r| r.peak_held_bytes()).collect(),
        }
    }
}
