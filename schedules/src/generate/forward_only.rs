//! The forward-only pass (inference and evaluation): every rank runs the forward of
//! micro-batches `0…m−1` through its stage, in order, and nothing else — no backward, so nothing
//! is kept for one. Micro-batches stream through the pipeline as in GPipe's fill phase; with
//! equal stages the makespan is `(m + p − 1)·t_F` (plus `(p − 1)·c` of latency).

use super::{check_pm, finish_placed};
use crate::action::{Action, Op};
use crate::error::{Error, Result};
use crate::schedule::{Placement, Schedule};

/// The forward-only schedule: rank `r` runs `F(r, 0…m−1)`. `forward_only(3, 4)`:
///
/// ```text
///   step    0    1    2    3    4    5
/// rank 0  0F0  0F1  0F2  0F3    .    .
/// rank 1    .  1F0  1F1  1F2  1F3    .
/// rank 2    .    .  2F0  2F1  2F2  2F3
/// ```
pub fn forward_only(p: usize, m: usize) -> Result<Schedule> {
    forward_pass(p, 1, Placement::Loop, m)
}

/// The forward-only pass of a model of `p·v` stages placed as `placement` says (the stages of a
/// training schedule's layout): each rank runs its stages in increasing order, every stage
/// micro-batches `0…m−1` in order. It never deadlocks: by induction over the stages, a stage's
/// forwards wait only for the previous stage's, which come earlier in their own rank's lane.
/// With `v = 1` it is [`forward_only`]. `forward_pass(2, 2, Placement::V, 2)`:
///
/// ```text
///   step    0    1    2    3    4    5
/// rank 0  0F0  0F1    .    .  3F0  3F1
/// rank 1    .  1F0  1F1  2F0  2F1    .
/// ```
pub fn forward_pass(p: usize, v: usize, placement: Placement, m: usize) -> Result<Schedule> {
    check_pm("forward", p, v, m)?;
    if placement.among(p) == Placement::V && v != 2 {
        return Err(Error::BadArgs {
            schedule: "forward".into(),
            reason: format!("V placement holds exactly 2 chunks per rank, but v={v}"),
        });
    }
    let mut lanes = vec![Vec::with_capacity(v * m); p];
    for stage in 0..p * v {
        let lane = &mut lanes[placement.rank_of(stage, p)];
        lane.extend((0..m).map(|j| Action::new(stage, Op::F, j)));
    }
    finish_placed("forward", p, v, m, placement, lanes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{simulate, validate, CostModel, Stats};

    #[test]
    fn doc_picture_is_the_output() {
        assert_eq!(forward_only(3, 4).unwrap().grid(), super::super::doc_picture(include_str!("forward_only.rs"), 0));
    }

    #[test]
    fn doc_picture_of_a_v_is_the_output() {
        let s = forward_pass(2, 2, Placement::V, 2).unwrap();
        assert_eq!(s.grid(), super::super::doc_picture(include_str!("forward_only.rs"), 1));
    }

    #[test]
    fn every_placement_validates_with_each_stage_forward_once() {
        for p in 1..5 {
            for m in 1..6 {
                for (v, placement) in
                    [(1, Placement::Loop), (2, Placement::Loop), (3, Placement::Loop), (2, Placement::V)]
                {
                    let s = forward_pass(p, v, placement, m).unwrap();
                    validate(&s).unwrap();
                    assert!(s.is_forward_only());
                    assert_eq!(s.num_actions(), p * v * m);
                }
            }
        }
        assert!(forward_pass(2, 3, Placement::V, 2).unwrap_err().to_string().contains("exactly 2 chunks"));
    }

    #[test]
    fn validates_and_is_forward_only_for_small_shapes() {
        for p in 1..6 {
            for m in 1..9 {
                let s = forward_only(p, m).unwrap();
                validate(&s).unwrap();
                assert!(s.is_forward_only());
                assert_eq!(s.num_actions(), p * m);
                let stats = Stats::of(&simulate(&s, &CostModel::per_rank(1.0, 1.0, 1.0)).unwrap());
                assert_eq!(stats.makespan, (m + p - 1) as f64, "p={p} m={m}");
            }
        }
    }

    #[test]
    fn refuses_empty_shapes() {
        for (p, m) in [(0, 4), (2, 0)] {
            let e = forward_only(p, m).unwrap_err().to_string();
            assert!(e.contains("must be at least 1") && e.contains("forward"), "{e}");
        }
    }
}
