//! DualPipeV: the V-shaped, one-copy variant of DualPipe (DeepSeek-AI, "DeepSeek-V3 Technical
//! Report", 2024, §3.2.1), in the order of PyTorch's `ScheduleDualPipeV`
//! (`torch.distributed.pipelining`, after DeepSeek's open `DualPipe` code). Two chunks per rank
//! placed as a V — rank `r` holds stages `r` and `2p−1−r`, as in ZB-V. Every backward is written
//! as `I` and `W`; where PyTorch runs a full backward the `W` follows its `I` at once, and where
//! it splits the backward (the first backwards of the second chunk, and the cool-down) the `W`
//! waits to fill a bubble.
//!
//! DualPipe's steady state runs the forward of one chunk and the backward of the other as one
//! overlapped pair, on two streams, so that each one's communication hides behind the other's
//! computation. Here a pair is two actions run back to back on the rank, the forward first, then
//! the backward as `I` immediately followed by its `W` (PyTorch's full backward). The executor and
//! the simulator run them one after the other, so the overlap of computation with communication
//! that DualPipe gets from its two streams is not modeled: the order is DualPipeV's, its timing
//! is that of a plain sequential rank.

use std::collections::VecDeque;

use super::{check_pm, finish_placed};
use crate::action::{Action, Op};
use crate::error::{Error, Result};
use crate::schedule::{Placement, Schedule};

/// DualPipeV for `p` ranks and `m ≥ 2p` micro-batches (PyTorch refuses fewer micro-batches than
/// stages).
///
/// With `s0 = r`, `s1 = 2p−1−r`, a full backward `B` = `I` then `W` of the same micro-batch, and
/// `F(a)B(b)` a pair (see the module), rank `r` runs: `2(p−1−r)` forwards of `s0`; `r+1` pairs
/// `F(s0) F(s1)`; `p−1−r` triples `I(s1) W(s1) F(s1)`; `m−2p+r+1` rounds `F(s0)B(s1) F(s1)B(s0)`;
/// `p−1−r` rounds `B(s1) F(s1)B(s0)`; then `2(r+1)` backwards alternating `s1`, `s0`, of which the
/// first `r+1` are full and the rest `I` alone, their `W` queued; then `p−1−r` times the oldest
/// queued `W` and an `I(s0)`; then the queued `W`s, oldest first. `dualpipe_v(2, 4)` (stages 0
/// and 3 on rank 0, 1 and 2 on rank 1):
///
/// ```text
///   step    0    1    2    3    4    5    6    7    8    9   10   11   12   13   14   15   16   17   18   19   20   21   22   23   24
/// rank 0  0F0  0F1  0F2  3F0  3I0  3W0  3F1  0F3  3I1  3W1  3F2  0I0  0W0  3I2  3W2  3F3  0I1  0W1  3I3  3W3  0I2  0W2    .  0I3  0W3
/// rank 1    .  1F0  2F0  1F1  2F1  1F2  2I0  2W0  2F2  1I0  1W0  1F3  2I1  2W1  2F3  1I1  1W1  2I2  2W2  1I2  1W2  2I3  1I3  2W3  1W3
/// ```
pub fn dualpipe_v(p: usize, m: usize) -> Result<Schedule> {
    check_pm("dualpipev", p, 2, m)?;
    if m < 2 * p {
        return Err(Error::BadArgs {
            schedule: "dualpipev".into(),
            reason: format!(
                "it needs at least as many micro-batches as stages, m ≥ 2p = {} (got p={p}, m={m}), as PyTorch's ScheduleDualPipeV does",
                2 * p
            ),
        });
    }
    let lanes = (0..p)
        .map(|r| {
            let (s0, s1) = (0, 1);
            let mut lane = Lane::new(r, p);
            for _ in 0..2 * (p - 1 - r) {
                lane.f(s0);
            }
            for _ in 0..=r {
                lane.f(s0);
                lane.f(s1);
            }
            for _ in 0..p - 1 - r {
                lane.i(s1);
                lane.oldest_w();
                lane.f(s1);
            }
            for _ in 0..m + r + 1 - 2 * p {
                lane.f(s0);
                lane.b(s1);
                lane.f(s1);
                lane.b(s0);
            }
            for _ in 0..p - 1 - r {
                lane.b(s1);
                lane.f(s1);
                lane.b(s0);
            }
            for k in 0..2 * (r + 1) {
                let chunk = if k % 2 == 0 { s1 } else { s0 };
                if k <= r {
                    lane.b(chunk);
                } else {
                    lane.i(chunk);
                }
            }
            for _ in 0..p - 1 - r {
                lane.oldest_w();
                lane.i(s0);
            }
            while !lane.queued.is_empty() {
                lane.oldest_w();
            }
            lane.actions
        })
        .collect();
    finish_placed("dualpipev", p, 2, m, Placement::V, lanes)
}

/// One rank's lane under construction.
struct Lane {
    /// The rank's two stages, `[r, 2p−1−r]`.
    stages: [usize; 2],
    /// Per chunk, the next micro-batch to run forward and to run backward (`I`).
    next_f: [usize; 2],
    next_i: [usize; 2],
    /// `W`s whose `I` has run, as (stage, micro-batch), oldest first.
    queued: VecDeque<(usize, usize)>,
    actions: Vec<Action>,
}

impl Lane {
    fn new(r: usize, p: usize) -> Lane {
        Lane {
            stages: [r, 2 * p - 1 - r],
            next_f: [0; 2],
            next_i: [0; 2],
            queued: VecDeque::new(),
            actions: Vec::new(),
        }
    }

    fn f(&mut self, chunk: usize) {
        self.actions.push(Action::new(self.stages[chunk], Op::F, self.next_f[chunk]));
        self.next_f[chunk] += 1;
    }

    /// `I` of the chunk's next micro-batch, its `W` queued.
    fn i(&mut self, chunk: usize) {
        let (stage, mb) = (self.stages[chunk], self.next_i[chunk]);
        self.actions.push(Action::new(stage, Op::I, mb));
        self.next_i[chunk] += 1;
        self.queued.push_back((stage, mb));
    }

    /// The full backward of the chunk's next micro-batch: `I` and at once its `W`.
    fn b(&mut self, chunk: usize) {
        let (stage, mb) = (self.stages[chunk], self.next_i[chunk]);
        self.actions.push(Action::new(stage, Op::I, mb));
        self.actions.push(Action::new(stage, Op::W, mb));
        self.next_i[chunk] += 1;
    }

    /// The oldest queued `W`, if any.
    fn oldest_w(&mut self) {
        if let Some((stage, mb)) = self.queued.pop_front() {
            self.actions.push(Action::new(stage, Op::W, mb));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{simulate, validate, CostModel, StageCost, StageCosts, Stats};

    /// Rank lanes as text, one string of space-separated actions per rank.
    fn lanes(s: &Schedule) -> Vec<String> {
        s.lanes.iter().map(|l| l.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ")).collect()
    }

    #[test]
    fn doc_picture_is_the_output() {
        let src = include_str!("dualpipe_v.rs");
        assert_eq!(dualpipe_v(2, 4).unwrap().grid(), super::super::doc_picture(src, 0));
    }

    /// PyTorch's `ScheduleDualPipeV` order, its full backwards written as `I` then `W`.
    #[test]
    fn order_is_pytorchs() {
        assert_eq!(
            lanes(&dualpipe_v(4, 8).unwrap()),
            [
                "0F0 0F1 0F2 0F3 0F4 0F5 0F6 7F0 7I0 7W0 7F1 7I1 7W1 7F2 7I2 7W2 7F3 0F7 7I3 7W3 7F4 0I0 0W0 7I4 7W4 7F5 0I1 0W1 7I5 7W5 7F6 0I2 0W2 7I6 7W6 7F7 0I3 0W3 7I7 7W7 0I4 0W4 0I5 0W5 0I6 0W6 0I7 0W7",
                "1F0 1F1 1F2 1F3 1F4 6F0 1F5 6F1 6I0 6W0 6F2 6I1 6W1 6F3 1F6 6I2 6W2 6F4 1I0 1W0 1F7 6I3 6W3 6F5 1I1 1W1 6I4 6W4 6F6 1I2 1W2 6I5 6W5 6F7 1I3 1W3 6I6 6W6 1I4 1W4 6I7 1I5 6W7 1I6 1W5 1I7 1W6 1W7",
                "2F0 2F1 2F2 5F0 2F3 5F1 2F4 5F2 5I0 5W0 5F3 2F5 5I1 5W1 5F4 2I0 2W0 2F6 5I2 5W2 5F5 2I1 2W1 2F7 5I3 5W3 5F6 2I2 2W2 5I4 5W4 5F7 2I3 2W3 5I5 5W5 2I4 2W4 5I6 5W6 2I5 5I7 2I6 2W5 2I7 5W7 2W6 2W7",
                "3F0 4F0 3F1 4F1 3F2 4F2 3F3 4F3 3F4 4I0 4W0 4F4 3I0 3W0 3F5 4I1 4W1 4F5 3I1 3W1 3F6 4I2 4W2 4F6 3I2 3W2 3F7 4I3 4W3 4F7 3I3 3W3 4I4 4W4 3I4 3W4 4I5 4W5 3I5 3W5 4I6 3I6 4I7 3I7 4W6 3W6 4W7 3W7",
            ]
        );
        assert_eq!(
            lanes(&dualpipe_v(2, 4).unwrap()),
            [
                "0F0 0F1 0F2 3F0 3I0 3W0 3F1 0F3 3I1 3W1 3F2 0I0 0W0 3I2 3W2 3F3 0I1 0W1 3I3 3W3 0I2 0W2 0I3 0W3",
                "1F0 2F0 1F1 2F1 1F2 2I0 2W0 2F2 1I0 1W0 1F3 2I1 2W1 2F3 1I1 1W1 2I2 2W2 1I2 1W2 2I3 1I3 2W3 1W3",
            ]
        );
        assert_eq!(lanes(&dualpipe_v(1, 2).unwrap()), ["0F0 1F0 0F1 1I0 1W0 1F1 0I0 0W0 1I1 1W1 0I1 0W1"]);
    }

    #[test]
    fn every_accepted_size_validates_and_fewer_than_2p_is_refused() {
        for p in 1..=6 {
            for m in 1..=16 {
                match dualpipe_v(p, m) {
                    Ok(s) => {
                        assert!(m >= 2 * p, "p={p} m={m} accepted");
                        assert_eq!(s.stages_of(0), [0, 2 * p - 1]);
                        assert_eq!(s.num_actions(), 3 * 2 * p * m, "p={p} m={m}");
                        validate(&s).unwrap_or_else(|e| panic!("p={p} m={m}: {e}"));
                    }
                    Err(Error::BadArgs { reason, .. }) => {
                        assert!(m < 2 * p, "p={p} m={m} refused: {reason}");
                        assert!(reason.contains("m ≥ 2p"), "{reason}");
                    }
                    Err(e) => panic!("p={p} m={m}: {e}"),
                }
            }
        }
    }

    /// Per-chunk costs `F = I = W = 1`, no latency: (end-to-end makespan, peak held chunk
    /// activations per rank).
    fn unit(s: &Schedule) -> (f64, Vec<u64>) {
        costed(s, [1.0; 3])
    }

    /// Per-chunk costs `f`, `i`, `w`, no latency: (end-to-end makespan, peak held chunk
    /// activations per rank).
    fn costed(s: &Schedule, [f, i, w]: [f64; 3]) -> (f64, Vec<u64>) {
        let cost = StageCost { act_bytes: 1, ..StageCost::times(f, i, w) };
        let model = CostModel {
            costs: StageCosts::Stages(vec![cost; s.stages()]),
            latency: 0.0,
            bandwidth: None,
            static_bytes: vec![],
            host_link: None,
            time_unit: "ms".into(),
        };
        let stats = Stats::of(&simulate(s, &model).unwrap());
        (stats.makespan, stats.peak_held_bytes)
    }

    /// With `F = I = W` and each pair run one action after the other, DualPipeV ends when ZB-V
    /// does, `6m + p − 1`, and holds one chunk activation more on every rank: `2p + 1` where
    /// ZB-V holds `2p` (1F1B's `p` micro-batches' worth).
    #[test]
    fn unit_costs_against_zb_v() {
        for (p, m) in [(2, 4), (3, 6), (4, 8), (4, 16), (6, 12), (8, 24)] {
            let (dpv, dpv_peak) = unit(&dualpipe_v(p, m).unwrap());
            let (zbv, zbv_peak) = unit(&crate::zb_v(p, m).unwrap());
            assert_eq!((dpv, zbv), ((6 * m + p - 1) as f64, (6 * m + p - 1) as f64), "p={p} m={m}");
            assert_eq!(zbv_peak, vec![2 * p as u64; p], "p={p} m={m}");
            assert_eq!(dpv_peak, vec![2 * p as u64 + 1; p], "p={p} m={m}");
        }
    }

    /// With F = 5, I = 6, W = 4 the run-in-sequence pairs leave DualPipeV 9 behind ZB-V's fixed
    /// order end to end (p = 8, m = 24).
    #[test]
    fn unequal_costs_against_zb_v() {
        let c = [5.0, 6.0, 4.0];
        assert_eq!(costed(&dualpipe_v(8, 24).unwrap(), c).0, 771.0);
        assert_eq!(costed(&crate::zb_v(8, 24).unwrap(), c).0, 762.0);
    }
}
