//! Recompute planning: inserting `R` actions into a schedule for the stages that checkpoint.
//!
//! `R(s, j)` re-creates what stage `s`'s recompute policy dropped after `F(s, j)`; it must run
//! after that forward and before the backward (`I` or `B`) of the same micro-batch. Placed right
//! before the backward, it holds the re-created bytes for the shortest time.

use crate::action::{Action, Op};
use crate::error::{Error, Result};
use crate::schedule::Schedule;
use crate::validate::validate;

/// `schedule` with `R(s, j)` inserted right before the backward of every micro-batch `j` on every
/// stage `s` with `recompute[s]` set, validated. Existing `R` actions are kept where they are.
/// With no stage set, `schedule` itself comes back (its lanes shared, not copied or checked).
pub fn with_recompute(schedule: &Schedule, recompute: &[bool]) -> Result<Schedule> {
    if recompute.len() != schedule.stages() {
        return Err(Error::Cost(format!(
            "recompute flags for {} stages, but the schedule has {} (p={}, v={})",
            recompute.len(),
            schedule.stages(),
            schedule.p,
            schedule.v
        )));
    }
    if !recompute.iter().any(|&r| r) {
        // Nothing to plan: the same schedule, sharing its lanes.
        return Ok(schedule.clone());
    }
    let has_r: std::collections::HashSet<(u16, u32)> = schedule
        .lanes
        .iter()
        .flat_map(|l| l.iter())
        .filter(|a| a.op == Op::R)
        .map(|a| (a.stage, a.microbatch))
        .collect();
    let mut out = schedule.clone();
    for lane in &mut out.lanes {
        let mut planned = Vec::with_capacity(lane.len() * 4 / 3);
        for &a in lane.iter() {
            if a.op.is_input_backward() && recompute[a.stage()] && !has_r.contains(&(a.stage, a.microbatch)) {
                planned.push(Action::new(a.stage(), Op::R, a.mb()));
            }
            planned.push(a);
        }
        *lane = planned.into();
    }
    if recompute.iter().any(|&r| r) && !out.name.ends_with("+recompute") {
        out.name = format!("{}+recompute", out.name);
    }
    validate(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::Kind;

    #[test]
    fn inserts_r_before_each_backward_of_flagged_stages() {
        let s = Kind::ZbH1.generate(2, 1, 2).unwrap();
        let r = with_recompute(&s, &[true, false]).unwrap();
        let lane0: Vec<String> = r.lanes[0].iter().map(|a| a.to_string()).collect();
        assert_eq!(lane0, ["0F0", "0F1", "0R0", "0I0", "0W0", "0R1", "0I1", "0W1"]);
        assert_eq!(r.lanes[1], s.lanes[1]);
        assert_eq!(r.name, "zb-h1+recompute");
        // Idempotent.
        assert_eq!(with_recompute(&r, &[true, false]).unwrap(), r);
    }

    #[test]
    fn needs_one_flag_per_stage() {
        let s = Kind::OneFOneB.generate(2, 1, 2).unwrap();
        assert!(with_recompute(&s, &[true]).is_err());
    }
}
