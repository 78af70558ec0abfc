//! Running a schedule on a clock: every rank runs its lane strictly in order, and an action
//! starts at the later of its rank becoming free and the arrival of the message it consumes
//! ([`deps`](crate::deps)). The validator walks to find deadlocks (times do not matter there), the
//! unit clock with one tick per action, the simulator with the cost model's durations.
//!
//! The walk is linear in the number of actions and needs no event queue: a rank runs until it
//! needs a message that does not exist yet, and the action that later produces that message
//! wakes it. Start and end times are the same whatever order the ranks are visited in (each is
//! a maximum over the times it depends on), so the walk is deterministic. Memory: what the
//! [`Post`] keeps per message slot (`2·stages·m`) — one bit to find deadlocks, one time to
//! simulate — and nothing per action.

use crate::action::Action;
#[cfg(doc)]
use crate::deps::message_slots;
use crate::deps::{consumes, produces};
use crate::schedule::Schedule;

/// Marks a rank that waits for no message.
const FREE: usize = usize::MAX;

/// What a walk remembers of the messages sent so far.
pub(crate) trait Post {
    /// When message `slot` is available to its consumer (`remote`: on another rank than its
    /// producer), if it has been sent.
    fn arrival(&self, slot: usize, remote: bool) -> Option<f64>;
    /// Message `slot` was sent at `time`.
    fn send(&mut self, slot: usize, time: f64);
}

/// Whether each message was sent, one bit each: enough to find deadlocks, where times do not
/// matter.
pub(crate) struct Sent(Vec<u64>);

impl Sent {
    /// Nothing sent yet, for `slots` messages.
    pub(crate) fn new(slots: usize) -> Sent {
        Sent(vec![0; slots.div_ceil(64)])
    }
}

impl Post for Sent {
    fn arrival(&self, slot: usize, _remote: bool) -> Option<f64> {
        (self.0[slot / 64] >> (slot % 64) & 1 == 1).then_some(0.0)
    }
    fn send(&mut self, slot: usize, _time: f64) {
        self.0[slot / 64] |= 1 << (slot % 64);
    }
}

/// When each message was sent (NaN: not yet), and the latency of a message between ranks.
pub(crate) struct Times {
    /// Send times by message index.
    pub(crate) sent: Vec<f64>,
    latency: f64,
}

impl Times {
    /// Nothing sent yet, for `slots` messages that take `latency` between ranks.
    pub(crate) fn new(slots: usize, latency: f64) -> Times {
        Times { sent: vec![f64::NAN; slots], latency }
    }
}

impl Post for Times {
    fn arrival(&self, slot: usize, remote: bool) -> Option<f64> {
        let t = self.sent[slot];
        if t.is_nan() {
            None
        } else if remote {
            Some(t + self.latency)
        } else {
            Some(t)
        }
    }
    fn send(&mut self, slot: usize, time: f64) {
        self.sent[slot] = time;
    }
}

/// Runs `s` to completion, remembering sent messages in `post` (sized for
/// [`message_slots`]`(stages, m)`). `duration(a)` is how long `a` takes. `ran(rank, step, start,
/// end)` is called for every action, in lane order within each rank.
///
/// Returns `Err(next)` — the step each rank stopped at — when some rank cannot finish: it waits
/// for a message that never comes (a deadlock), or an action names a stage or micro-batch out of
/// range (which [`validate`](crate::validate) reports properly).
pub(crate) fn walk<P: Post>(
    s: &Schedule,
    post: &mut P,
    mut duration: impl FnMut(Action) -> f64,
    mut ran: impl FnMut(usize, usize, f64, f64),
) -> Result<(), Vec<usize>> {
    let (p, stages, m) = (s.p, s.stages(), s.m);
    // Where each stage sits, looked up rather than computed (a division) twice per action.
    let rank_of: Vec<usize> = (0..stages).map(|st| s.rank_of(st)).collect();
    let mut waiting = vec![FREE; p];
    let mut next = vec![0usize; p];
    let mut free_at = vec![0.0f64; p];
    // The lanes as plain slices side by side: switching ranks then reads one cached (pointer,
    // length) pair rather than each lane's shared header.
    let lanes: Vec<&[Action]> = s.lanes.iter().map(|l| l.as_slice()).collect();
    let mut ready: Vec<usize> = (0..p.min(lanes.len())).rev().collect();
    while let Some(r) = ready.pop() {
        let lane = lanes[r];
        let mut k = next[r];
        let mut now = free_at[r];
        while let Some(&a) = lane.get(k) {
            if a.stage() >= stages || a.mb() >= m {
                break;
            }
            let mut start = now;
            if let Some(msg) = consumes(a, stages) {
                let slot = msg.index(stages, m);
                match post.arrival(slot, rank_of[msg.from] != r) {
                    Some(t) => start = start.max(t),
                    None => {
                        waiting[r] = slot;
                        break;
                    }
                }
            }
            let end = start + duration(a);
            ran(r, k, start, end);
            now = end;
            k += 1;
            if let Some(msg) = produces(a, stages) {
                let slot = msg.index(stages, m);
                post.send(slot, end);
                let to = rank_of[msg.to];
                if to < p && waiting[to] == slot {
                    waiting[to] = FREE;
                    ready.push(to);
                }
            }
        }
        next[r] = k;
        free_at[r] = now;
    }
    if s.lanes.len() == p && next.iter().zip(&s.lanes).all(|(&k, lane)| k == lane.len()) {
        Ok(())
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
        let mut post = Times::new(crate::deps::message_slots(4, 8), 0.0);
        walk(&s, &mut post, |a| if a.op == Op::B { 2.0 } else { 1.0 }, |_, _, _, end| last = last.max(end)).unwrap();
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
        assert!(walk(&s, &mut Sent::new(4), |_| 1.0, |_, _, _, _| {}).is_ok());
        let lanes = vec![
            vec![Action::new(0, Op::B, 0), Action::new(0, Op::F, 0)],
            vec![Action::new(1, Op::F, 0), Action::new(1, Op::B, 0)],
        ];
        let s = Schedule::new("stuck", 2, 1, 1, crate::schedule::Placement::Loop, lanes);
        assert_eq!(walk(&s, &mut Sent::new(4), |_| 1.0, |_, _, _, _| {}), Err(vec![0, 0]));
    }
}
