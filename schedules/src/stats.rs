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
        let tallies: Vec<Tally> = trace
            .ranks
            .iter()
            .map(|rank| {
                let mut t = Tally::default();
                for span in rank.spans() {
                    t.span(span.action.op, span.start, span.end);
                }
                t
            })
            .collect();
        let peaks: Vec<(u64, u64)> = trace.ranks.iter().map(|r| (r.peak_bytes(), r.peak_held_bytes())).collect();
        Stats::from_tallies(&tallies, &peaks)
    }

    /// The stats from each rank's tally of its spans and its peaks: (live bytes, held bytes).
    pub(crate) fn from_tallies(tallies: &[Tally], peaks: &[(u64, u64)]) -> Stats {
        let p = tallies.len();
        let makespan = tallies.iter().fold(0.0f64, |t, r| t.max(r.latest));
        let steady_period = tallies.iter().fold(0.0f64, |t, r| t.max(r.period()));
        let busy: Vec<f64> = tallies.iter().map(|t| t.busy).collect();
        let idle: Vec<f64> = busy.iter().map(|b| makespan - b).collect();
        let total: f64 = busy.iter().fold(0.0, |a, b| a + b);
        let rate = |period: f64| if period > 0.0 && p > 0 { 1.0 - (total / p as f64) / period } else { 0.0 };
        Stats {
            makespan,
            ideal: if p > 0 { total / p as f64 } else { 0.0 },
            bubble_rate: rate(makespan),
            steady_period,
            steady_bubble_rate: rate(steady_period),
            busy,
            idle,
            recompute: tallies.iter().map(|t| t.recompute).collect(),
            peak_bytes: peaks.iter().map(|p| p.0).collect(),
            peak_held_bytes: peaks.iter().map(|p| p.1).collect(),
        }
    }
}

/// What the stats need of one rank's spans, taken one span at a time in lane order — from a
/// trace, or from the simulator as it runs, which then keeps no spans.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tally {
    /// Σ (end − start), folded from +0.0 (an empty float `sum()` is −0.0).
    busy: f64,
    /// The same over `R` spans.
    recompute: f64,
    /// The first span's start (NaN before it) and the last one's end.
    first_start: f64,
    last_end: f64,
    /// The latest end.
    latest: f64,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally { busy: 0.0, recompute: 0.0, first_start: f64::NAN, last_end: 0.0, latest: 0.0 }
    }
}

impl Tally {
    /// The next span of the rank: `op` ran from `start` to `end`.
    #[inline]
    pub(crate) fn span(&mut self, op: Op, start: f64, end: f64) {
        self.latest = self.latest.max(end);
        self.busy += end - start;
        if op == Op::R {
            self.recompute += end - start;
        }
        if self.first_start.is_nan() {
            self.first_start = start;
        }
        self.last_end = end;
    }

    /// End of the last span − start of the first (0 without spans).
    fn period(&self) -> f64 {
        if self.first_start.is_nan() {
            0.0
        } else {
            self.last_end - self.first_start
        }
    }
}
