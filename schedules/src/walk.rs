//! Running a schedule on a clock: every rank runs its lane strictly in order, and an action
//! starts at the later of its rank becoming free and the arrival of the message it consumes
//! ([`deps`](crate::deps)). The validator walks with unit durations to find deadlocks and the
//! unit clock; the simulator walks with the cost model's durations.
//!
//! The walk is linear in the number of actions and needs no event queue: a rank runs until it
//! needs a message that does not exist yet, and the action that later produces that message
//! wakes it. Start and end times are the same whatever order the ranks are visited in (each is
//! a maximum over the times it depends on), so the walk is deterministic. Memory: one time per
//! message slot (`2·stages·m`), nothing per action.

use crate::action::Action;
use crate::deps::{consumes, message_slots, produces};
use crate::schedule::Schedule;

/// Marks a rank that waits for no message.
const FREE: usize = usize::MAX;

/// Runs `s` to completion. `duration(a)` is how long `a` takes; a message between two ranks
/// arrives `latency` after its producer ends (between stages of one rank, at once). `ran(rank,
/// step, start, end)` is called for every action, in lane order within each rank.
///
/// Returns when every message was sent, by [`Message::index`](crate::deps::Message::index)
/// (NaN for messages the schedule has none of), or `Err(next)` — the step each rank stopped at —
/// when some rank cannot finish: it waits for a message that never comes (a deadlock), or an
/// action names a stage or micro-batch out of range (which [`validate`](crate::validate)
/// reports properly).
pub(crate) fn walk(
    s: &Schedule,
    mut duration: impl FnMut(Action) -> f64,
    latency: f64,
    mut ran: impl FnMut(usize, usize, f64, f64),
) -> Result<Vec<f64>, Vec<usize>> {
    let (p, stages, m) = (s.p, s.stages(), s.m);
    let mut done = vec![f64::NAN; message_slots(stages, m)];
    let mut waiting = vec![FREE; p];
    let mut next = vec![0usize; p];
    let mut free_at = vec![0.0f64; p];
    let mut ready: Vec<usize> = (0..p.min(s.lanes.len())).rev().collect();
    while let Some(r) = ready.pop() {
        let lane = &s.lanes[r];
        let mut k = next[r];
        while let Some(&a) = lane.get(k) {
            if a.stage() >= stages || a.mb() >= m {
                break;
            }
            let mut start = free_at[r];
            if let Some(msg) = consumes(a, stages) {
                let slot = msg.index(stages, m);
                let sent = done[slot];
                if sent.is_nan() {
                    waiting[r] = slot;
                    break;
                }
                let remote = s.rank_of(msg.from) != r;
                start = start.max(if remote { sent + latency } else { sent });
            }
            let end = start + duration(a);
            ran(r, k, start, end);
            free_at[r] = end;
            k += 1;
            if let Some(msg) = produces(a, stages) {
                let slot = msg.index(stages, m);
                done[slot] = end;
                let to = s.rank_of(msg.to);
                if to < p && waiting[to] == slot {
                    waiting[to] = FREE;
                    ready.push(to);
                }
            }
        }
        next[r] = k;
    }
    if s.lanes.len() == p && next.iter().zip(&s.lanes).all(|(&k, lane)| k == lane.len()) {
        Ok(done)
    } else {
        Err(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Op;
    use crate::generate::Kind;

    #[test]
    fn unit_walk_of_1f1b_ends_at_the_closed_form() {
        let s = Kind::OneFOneB.generate(4, 1, 8).unwrap();
        let mut last = 0.0f64;
        walk(&s, |a| if a.op == Op::B { 2.0 } else { 1.0 }, 0.0, |_, _, _, end| last = last.max(end)).unwrap();
        // m(F+B) + (p−1)(F+B) with F = 1, B = 2.
        assert_eq!(last, 33.0);
    }

    #[test]
    fn a_deadlock_returns_where_each_rank_stopped() {
        let lanes = vec![
            vec![Action::new(0, Op::F, 0), Action::new(0, Op::B, 0)],
            vec![Action::new(1, Op::B, 0), Action::new(1, Op::F, 0)],
        ];
        let s = Schedule::new("stuck", 2, 1, 1, crate::schedule::Placement::Loop, lanes);
        // Rank 1 runs 1B0 before 1F0: the last stage's B needs no message, so it runs; then 1F0
        // runs after 0F0. Rank 0's 0B0 gets 1B0's gradient: this one finishes.
        assert!(walk(&s, |_| 1.0, 0.0, |_, _, _, _| {}).is_ok());
        let lanes = vec![
            vec![Action::new(0, Op::B, 0), Action::new(0, Op::F, 0)],
            vec![Action::new(1, Op::F, 0), Action::new(1, Op::B, 0)],
        ];
        let s = Schedule::new("stuck", 2, 1, 1, crate::schedule::Placement::Loop, lanes);
        assert_eq!(walk(&s, |_| 1.0, 0.0, |_, _, _, _| {}), Err(vec![0, 0]));
    }
}
