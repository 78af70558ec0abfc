//! The forward-only pass (inference and evaluation): every rank runs the forward of
//! micro-batches `0…m−1` through its stage, in order, and nothing else — no backward, so nothing
//! is kept for one. Micro-batches stream through the pipeline as in GPipe's fill phase; with
//! equal stages the makespan is `(m + p − 1)·t_F` (plus `(p − 1)·c` of latency).

use super::{check_pm, finish};
use crate::action::{Action, Op};
use crate::error::Result;
use crate::schedule::Schedule;

/// The forward-only schedule: rank `r` runs `F(r, 0…m−1)`. `forward_only(3, 4)`:
///
/// ```text
///   step    0    1    2    3    4    5
/// rank 0  0F0  0F1  0F2  0F3    .    .
/// rank 1    .  1F0  1F1  1F2  1F3    .
/// rank 2    .    .  2F0  2F1  2F2  2F3
/// ```
pub fn forward_only(p: usize, m: usize) -> Result<Schedule> {
    check_pm("forward", p, 1, m)?;
    let lanes = (0..p).map(|r| (0..m).map(|j| Action::new(r, Op::F, j)).collect()).collect();
    finish("forward", p, 1, m, lanes)
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
