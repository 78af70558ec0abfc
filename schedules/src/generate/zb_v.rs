//! ZB-V (Qi, Wan, Huang, Lin, "Zero Bubble Pipeline Parallelism", ICLR 2024): two chunks per
//! rank placed as a V — rank `r` holds stages `r` and `2p−1−r`, so the first and the last stage
//! share rank 0 and the turn of the V (stages `p−1`, `p`) is on rank `p−1` — with the backward
//! split into `I` and `W`. With `F = I = W` per chunk it reaches zero bubble inside each rank's
//! span at 1F1B's peak activation memory (`2p` chunk activations, `p` stages' worth).
//!
//! The order is the fixed pattern PyTorch's `ScheduleZBVZeroBubble` uses, written from its
//! description: it does not look at the costs, so with unequal `F`, `I`, `W` the authors'
//! cost-aware greedy scheduler can do a little better.

use super::{check_pm, finish_placed};
use crate::action::{Action, Op};
use crate::error::Result;
use crate::schedule::{Placement, Schedule};

/// ZB-V for `p` ranks and `m` micro-batches (any `m ≥ 1`).
///
/// Each rank's lane is built for `n = max(2p−1, m)` micro-batches and the actions of
/// micro-batches `≥ m` are then dropped. With `s0 = r`, `s1 = 2p−1−r`, rank `r` runs:
/// `2(p−r)−1` forwards of `s0`; `r` pairs `F(s1) F(s0)`; `p−r` triples `F(s1) I(s1) W(s1)`; then,
/// until every forward is done, `[F(s0) while any remain] I(s0) W(s0) F(s1) I(s1) W(s1)`; then
/// `r` pairs `I(s0) I(s1)`; `p−r` pairs `I(s0) W(s0)`; then the remaining `W(s1)` and `W(s0)`,
/// oldest first. `zb_v(2, 4)` (stages 0 and 3 on rank 0, 1 and 2 on rank 1):
///
/// ```text
///   step    0    1    2    3    4    5    6    7    8    9   10   11   12   13   14   15   16   17   18   19   20   21   22   23   24
/// rank 0  0F0  0F1  0F2  3F0  3I0  3W0  3F1  3I1  3W1  0F3  0I0  0W0  3F2  3I2  3W2  0I1  0W1  3F3  3I3  3W3  0I2  0W2  0I3  0W3    .
/// rank 1    .  1F0  2F0  1F1  2F1  2I0  2W0  1F2  1I0  1W0  2F2  2I1  2W1  1F3  1I1  1W1  2F3  2I2  2W2  1I2  2I3  1I3  1W2  2W3  1W3
/// ```
pub fn zb_v(p: usize, m: usize) -> Result<Schedule> {
    check_pm("zb-v", p, 2, m)?;
    let n = m.max(2 * p - 1);
    let lanes = (0..p)
        .map(|r| {
            let mut lane = Lane::new(r, p);
            for _ in 0..2 * (p - r) - 1 {
                lane.f(0);
            }
            for _ in 0..r {
                lane.f(1);
                lane.f(0);
            }
            for _ in 0..p - r {
                lane.f(1);
                lane.backward(1);
            }
            while lane.next[0][F] < n || lane.next[1][F] < lane.next[0][F] {
                if lane.next[0][F] < n {
                    lane.f(0);
                }
                lane.backward(0);
                lane.f(1);
                lane.backward(1);
            }
            for _ in 0..r {
                lane.i(0);
                lane.i(1);
            }
            for _ in 0..p - r {
                lane.backward(0);
            }
            while lane.next[1][W] < n {
                lane.w(1);
            }
            while lane.next[0][W] < n {
                lane.w(0);
            }
            lane.actions.into_iter().filter(|a| a.mb() < m).collect()
        })
        .collect();
    finish_placed("zb-v", p, 2, m, Placement::V, lanes)
}

/// Indices into [`Lane::next`].
const F: usize = 0;
const I: usize = 1;
const W: usize = 2;

/// One rank's lane under construction: its two stages and, per chunk and op, the next
/// micro-batch.
struct Lane {
    stages: [usize; 2],
    next: [[usize; 3]; 2],
    actions: Vec<Action>,
}

impl Lane {
    fn new(r: usize, p: usize) -> Lane {
        Lane { stages: [r, 2 * p - 1 - r], next: [[0; 3]; 2], actions: Vec::new() }
    }

    fn push(&mut self, chunk: usize, op: Op, k: usize) {
        let mb = self.next[chunk][k];
        self.next[chunk][k] += 1;
        self.actions.push(Action::new(self.stages[chunk], op, mb));
    }

    fn f(&mut self, chunk: usize) {
        self.push(chunk, Op::F, F);
    }

    fn i(&mut self, chunk: usize) {
        self.push(chunk, Op::I, I);
    }

    fn w(&mut self, chunk: usize) {
        self.push(chunk, Op::W, W);
    }

    /// `I` then `W` of the chunk's next micro-batches.
    fn backward(&mut self, chunk: usize) {
        self.i(chunk);
        self.w(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{simulate, CostModel, StageCost, StageCosts, Stats};

    #[test]
    fn doc_picture_is_the_output() {
        let src = include_str!("zb_v.rs");
        assert_eq!(zb_v(2, 4).unwrap().grid(), super::super::doc_picture(src, 0));
    }

    #[test]
    fn stages_sit_as_a_v() {
        let s = zb_v(4, 8).unwrap();
        assert_eq!(s.placement, Placement::V);
        assert_eq!(s.stages_of(0), [0, 7]);
        assert_eq!(s.stages_of(3), [3, 4]);
    }

    /// Per-chunk costs `f`, `i`, `w`, latency `c`: (end-to-end makespan, longest rank span).
    fn times(p: usize, m: usize, [f, i, w]: [f64; 3], c: f64) -> (f64, f64) {
        let cost = StageCost::times(f, i, w);
        let model = CostModel {
            costs: StageCosts::Stages(vec![cost; 2 * p]),
            latency: c,
            bandwidth: None,
            static_bytes: vec![],
            host_link: None,
            time_unit: "ms".into(),
        };
        let trace = simulate(&zb_v(p, m).unwrap(), &model).unwrap();
        let span = trace
            .ranks
            .iter()
            .map(|r| r.end.iter().copied().fold(0.0, f64::max) - r.start.first().copied().unwrap_or(0.0))
            .fold(0.0, f64::max);
        (Stats::of(&trace).makespan, span)
    }

    /// ZB-V keeps what 1F1B keeps at its peak, on every rank: `2p` chunk activations of half a
    /// rank's bytes each, `p` micro-batches' worth (per-rank costs, split over the two chunks).
    #[test]
    fn peak_activations_are_1f1bs() {
        let mut model = CostModel::per_rank(1.0, 1.0, 1.0);
        if let StageCosts::PerRank(c) = &mut model.costs {
            c.act_bytes = 1 << 20;
        }
        for (p, m) in [(2, 4), (4, 8), (4, 16), (8, 24)] {
            let v = Stats::of(&simulate(&zb_v(p, m).unwrap(), &model).unwrap()).peak_held_bytes;
            let one = Stats::of(&simulate(&crate::one_f_one_b(p, m).unwrap(), &model).unwrap()).peak_held_bytes;
            assert_eq!(v[0], one[0], "p={p} m={m}: rank 0");
            assert!(v.iter().all(|b| *b == (p as u64) << 20), "p={p} m={m}: {v:?}");
        }
    }

    /// The Zero Bubble authors' figures for ZB-V are the longest span of one rank (from its first
    /// action to its last), which leaves out the `p−1` forwards before the last rank starts:
    /// with unit costs every rank's span is its work, `6m` — zero bubble — and end to end it is
    /// `6m + p − 1`. With F = 5, I = 6, W = 4 this fixed order is 4 behind their cost-aware
    /// greedy order (744 and 784).
    #[test]
    fn unit_costs_give_zero_bubble_within_each_rank() {
        assert_eq!(times(4, 8, [1.0; 3], 0.0), (51.0, 48.0));
        assert_eq!(times(8, 24, [1.0; 3], 0.0), (151.0, 144.0));
        assert_eq!(times(8, 24, [5.0, 6.0, 4.0], 0.0).1, 748.0);
        assert_eq!(times(8, 24, [5.0, 6.0, 4.0], 1.0).1, 788.0);
    }
}
