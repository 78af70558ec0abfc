//! Steps back to back, with no barrier between them: `n` steps of one schedule as one schedule
//! of `n·m` micro-batches; [`Updates`](crate::Updates) says where each stage applies its optimizer.
//!
//! Micro-batch `j` of step `k` is micro-batch `k·m + j` of the run; each rank's lane is its
//! lanes of the steps, in order. A stage updates its weights right after its own last backward
//! of a step (the `W`, or the `B`, that completes the last micro-batch's gradients), so a rank
//! starts the next step's forwards as soon as its own part of the step is done — the period
//! DESIGN's `steady_period` describes. Without a barrier, each stage's update needs only its own
//! gradients, so every synchronous schedule runs this way with the gradients and weights of
//! `n` separate steps: the forwards of step `k+1` on a stage all come after its update of step
//! `k` in its rank's lane.
//!
//! Invariant: micro-batch `k·m + j` of the run is micro-batch `j` of step `k`, and each rank's
//! lane runs step `k`'s actions before step `k+1`'s, so [`Updates`](crate::Updates) with
//! current weights accepts every run this makes.

use crate::action::{Action, MAX_MICROBATCHES};
use crate::error::{Error, Result};
use crate::schedule::Schedule;
use crate::trace::Trace;

/// `n` steps of `step` back to back: one schedule of `n·m` micro-batches (see the module doc).
pub fn back_to_back(step: &Schedule, n: usize) -> Result<Schedule> {
    let bad = |reason: String| Error::BadArgs { schedule: format!("{} without a barrier", step.name), reason };
    if n == 0 {
        return Err(bad("it needs at least one step".into()));
    }
    let total = step.m.checked_mul(n).filter(|&t| t <= MAX_MICROBATCHES).ok_or_else(|| {
        bad(format!("{n} steps of {} micro-batches exceed {MAX_MICROBATCHES} micro-batches; run fewer steps", step.m))
    })?;
    let lanes = step
        .lanes
        .iter()
        .map(|lane| {
            (0..n).flat_map(|k| lane.iter().map(move |a| Action::new(a.stage(), a.op, k * step.m + a.mb()))).collect()
        })
        .collect();
    Ok(Schedule::new(&step.name, step.p, step.v, total, step.placement, lanes))
}

/// When each of `n = trace.m / m` back-to-back steps ended: the latest end over the ranks of
/// its actions.
pub fn step_ends(trace: &Trace, m: usize) -> Vec<f64> {
    let n = trace.m.checked_div(m).unwrap_or(0);
    let mut ends = vec![0.0f64; n];
    for rank in &trace.ranks {
        for span in rank.spans() {
            if let Some(e) = ends.get_mut(span.action.mb() / m) {
                *e = e.max(span.end);
            }
        }
    }
    ends
}

/// The period of steps run back to back: the mean time between step ends after the first
/// `skip` steps, `(end of the last − end of step skip−1) / (n − skip)`; with `skip = 0`, from
/// the end of the first. `None` with fewer than two steps.
pub fn period(ends: &[f64], skip: usize) -> Option<f64> {
    let n = ends.len();
    if n < 2 {
        return None;
    }
    let from = skip.clamp(1, n - 1) - 1;
    Some((ends[n - 1] - ends[from]) / (n - 1 - from) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{one_f_one_b, simulate, validate, zb_h1, zb_h2, CostModel, Op, Stats};

    fn unit() -> CostModel {
        CostModel::per_rank(1.0, 1.0, 1.0)
    }

    #[test]
    fn steps_back_to_back_validate_and_number_micro_batches_by_step() {
        let s = one_f_one_b(3, 4).unwrap();
        let run = back_to_back(&s, 3).unwrap();
        validate(&run).unwrap();
        assert_eq!(run.m, 12);
        assert_eq!(run.lanes[0].len(), 3 * s.lanes[0].len());
        assert_eq!(run.lanes[2][s.lanes[2].len()], Action::new(2, Op::F, 4));
    }

    #[test]
    fn one_f_one_b_back_to_back_repeats_its_makespan() {
        // Rank 0 starts and ends every 1F1B step, so nothing of a step overlaps the next.
        let s = one_f_one_b(4, 8).unwrap();
        let run = simulate(&back_to_back(&s, 5).unwrap(), &unit()).unwrap();
        let ends = step_ends(&run, 8);
        assert_eq!(ends, vec![33.0, 66.0, 99.0, 132.0, 165.0]);
        assert_eq!(period(&ends, 0), Some(33.0));
    }

    #[test]
    fn zb_h2_back_to_back_reaches_its_steady_period() {
        // DESIGN: ZB-H2's steady_period − m(F+I+W) = (p−1)(F+I−2W); with W = 0.5: 4·3 + 3·1 = 15.
        let costs = CostModel::per_rank(1.0, 1.0, 0.5);
        let s = zb_h2(4, 8).unwrap();
        let one = Stats::of(&simulate(&s, &costs).unwrap());
        assert_eq!(one.steady_period, 8.0 * 2.5 + 3.0 * 1.0);
        let ends = step_ends(&simulate(&back_to_back(&s, 6).unwrap(), &costs).unwrap(), 8);
        assert_eq!(period(&ends, 2), Some(one.steady_period));
        // ZB-H1 back to back is no faster than its makespan.
        let h1 = zb_h1(4, 8).unwrap();
        let h1_ends = step_ends(&simulate(&back_to_back(&h1, 6).unwrap(), &costs).unwrap(), 8);
        assert!(period(&h1_ends, 2).unwrap() > one.steady_period);
    }

    #[test]
    fn too_many_steps_are_refused() {
        let s = one_f_one_b(2, 4).unwrap();
        assert!(back_to_back(&s, 0).is_err());
        assert!(back_to_back(&s, usize::MAX / 2).unwrap_err().to_string().contains("run fewer steps"));
    }

    #[test]
    fn the_period_needs_two_steps() {
        assert_eq!(period(&[5.0], 0), None);
        assert_eq!(period(&[5.0, 9.0, 13.0], 0), Some(4.0));
        assert_eq!(period(&[5.0, 9.0, 15.0], 2), Some(6.0));
        assert_eq!(period(&[5.0, 9.0, 15.0], 9), Some(6.0));
    }
}
