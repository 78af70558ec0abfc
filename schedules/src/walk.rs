//! Running a schedule on a clock: every rank runs its lane strictly in order, and an action
//! starts at the later of its rank becoming free and the arrival of the message it consumes
//! ([`deps`](crate::deps)): its send time plus the [`Post`]'s delay for the producing stage and
//! the flow. The validator walks to find deadlocks (times do not matter there), the unit clock
//! with one tick per action, the simulator with the cost model's durations and message delays.
//!
//! The walk needs no event queue: a rank runs until it needs a message that does not exist yet,
//! and the action that later produces that message wakes it. Start and end times are the same
//! whatever order the ranks are visited in (each is a maximum over the times it depends on), so
//! the walk is deterministic; ready ranks are visited in sweeps of increasing rank
//! ([`Ready`]), which keeps the message table's accesses of a large schedule together. Time:
//! linear in the number of actions, plus `ranks/4096` words read per sweep. Memory: what the
//! [`Post`] keeps per message slot (`2·stages·m`) — one bit to find deadlocks, one time to
//! simulate, with two delays per stage — and nothing per action.

use crate::action::Action;
#[cfg(doc)]
use crate::deps::message_slots;
use crate::deps::{consumes, produces, Message};
use crate::prefetch::prefetch;
use crate::ready::Ready;
use crate::schedule::Schedule;

/// Marks a rank that waits for no message.
const FREE: usize = usize::MAX;

/// How far ahead of a running rank its lane is prefetched, in actions: half a cache line (a rank
/// runs two or three actions per visit, so the next line is asked for about one visit before it
/// is read).
const LANE_AHEAD: usize = 4;

/// What a walk remembers of the messages sent so far.
pub(crate) trait Post {
    /// When message `slot` was sent, if it has been.
    fn sent(&self, slot: usize) -> Option<f64>;
    /// Message `slot` was sent at `time`.
    fn send(&mut self, slot: usize, time: f64);
    /// How long `msg` takes from its producer's end to its consumer (0 between stages of one
    /// rank).
    fn delay(&self, _msg: &Message) -> f64 {
        0.0
    }
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
    fn sent(&self, slot: usize) -> Option<f64> {
        (self.0[slot / 64] >> (slot % 64) & 1 == 1).then_some(0.0)
    }
    fn send(&mut self, slot: usize, _time: f64) {
        self.0[slot / 64] |= 1 << (slot % 64);
    }
}

/// When each message was sent, and how long each (stage, flow)'s messages take.
///
/// A send time `t` is stored as the bits of `t` inverted, so a zero word means "not sent" (the
/// inverse of zero's bits is a NaN, never a time): the table starts as zeroed memory, which the
/// system hands out without writing it.
pub(crate) struct Times<'a> {
    sent: Vec<u64>,
    /// By producing stage, how long its activation and its gradient take (`[Flow as usize]`),
    /// 0 where the neighbour sits on the same rank: one lookup per message, no branch on ranks.
    delays: &'a [[f64; 2]],
}

impl<'a> Times<'a> {
    /// Nothing sent yet, for `slots` messages whose delays by producing stage are `delays`
    /// (see [`CostModel::message_delays`](crate::CostModel::message_delays)).
    pub(crate) fn new(slots: usize, delays: &'a [[f64; 2]]) -> Times<'a> {
        Times { sent: vec![0; slots], delays }
    }
}

impl Post for Times<'_> {
    fn sent(&self, slot: usize) -> Option<f64> {
        let bits = self.sent[slot];
        (bits != 0).then(|| f64::from_bits(!bits))
    }
    fn send(&mut self, slot: usize, time: f64) {
        self.sent[slot] = !time.to_bits();
    }
    #[inline]
    fn delay(&self, msg: &Message) -> f64 {
        self.delays[msg.from][msg.flow as usize]
    }
}

/// Where a rank is in its lane: the next step, when it becomes free, and the message slot it
/// waits for ([`FREE`] if none).
#[derive(Clone, Copy)]
struct Cursor<'a> {
    lane: &'a [Action],
    next: usize,
    free_at: f64,
    waiting: usize,
}

/// One action as the walk ran it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ran {
    /// The rank it ran on.
    pub(crate) rank: usize,
    /// Its position in the rank's lane.
    pub(crate) step: usize,
    /// What ran.
    pub(crate) action: Action,
    /// When it started and ended.
    pub(crate) start: f64,
    pub(crate) end: f64,
    /// When the message it consumed was sent (its producer's end), if it consumed one.
    pub(crate) received: Option<f64>,
}

/// Runs `s` to completion, remembering sent messages in `post` (sized for
/// [`message_slots`]`(stages, m)`). `duration(a)` is how long `a` takes. `ran` is called for every
/// action, in lane order within each rank.
///
/// Returns `Err(next)` — the step each rank stopped at — when some rank cannot finish: it waits
/// for a message that never comes (a deadlock), or an action names a stage or micro-batch out of
/// range (which [`validate`](crate::validate) reports properly).
pub(crate) fn walk<P: Post>(
    s: &Schedule,
    post: &mut P,
    mut duration: impl FnMut(Action) -> f64,
    mut ran: impl FnMut(Ran),
) -> Result<(), Vec<usize>> {
    let (p, stages, m) = (s.p, s.stages(), s.m);
    // Where each stage sits, looked up rather than computed (a division) twice per action.
    let rank_of: Vec<usize> = (0..stages).map(|st| s.rank_of(st)).collect();
    // Each rank's place in one small record, so switching ranks touches one cache line.
    let mut at: Vec<Cursor> =
        s.lanes.iter().map(|l| Cursor { lane: l.as_slice(), next: 0, free_at: 0.0, waiting: FREE }).collect();
    let mut ready = Ready::all(p.min(at.len()));
    while let Some(r) = ready.take() {
        let Cursor { lane, next: mut k, free_at: mut now, .. } = at[r];
        prefetch(lane.as_ptr().wrapping_add(k + LANE_AHEAD));
        while let Some(&a) = lane.get(k) {
            if a.stage() >= stages || a.mb() >= m {
                break;
            }
            let mut start = now;
            let mut received = None;
            if let Some(msg) = consumes(a, stages) {
                let slot = msg.index(stages, m);
                match post.sent(slot) {
                    Some(t) => {
                        start = start.max(t + post.delay(&msg));
                        received = Some(t);
                    }
                    None => {
                        at[r].waiting = slot;
                        break;
                    }
                }
            }
            let end = start + duration(a);
            ran(Ran { rank: r, step: k, action: a, start, end, received });
            now = end;
            k += 1;
            if let Some(msg) = produces(a, stages) {
                let slot = msg.index(stages, m);
                post.send(slot, end);
                let to = rank_of[msg.to];
                if at.get(to).is_some_and(|c| c.waiting == slot) {
                    at[to].waiting = FREE;
                    ready.insert(to);
                }
            }
        }
        at[r].next = k;
        at[r].free_at = now;
    }
    let next: Vec<usize> = at.iter().map(|c| c.next).collect();
    if at.len() == p && at.iter().all(|c| c.next == c.lane.len()) {
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
        let mut post = Times::new(crate::deps::message_slots(4, 8), &[[0.0; 2]; 4]);
        walk(&s, &mut post, |a| if a.op == Op::B { 2.0 } else { 1.0 }, |ran| last = last.max(ran.end)).unwrap();
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
        assert!(walk(&s, &mut Sent::new(4), |_| 1.0, |_| {}).is_ok());
        let lanes = vec![
            vec![Action::new(0, Op::B, 0), Action::new(0, Op::F, 0)],
            vec![Action::new(1, Op::F, 0), Action::new(1, Op::B, 0)],
        ];
        let s = Schedule::new("stuck", 2, 1, 1, crate::schedule::Placement::Loop, lanes);
        assert_eq!(walk(&s, &mut Sent::new(4), |_| 1.0, |_| {}), Err(vec![0, 0]));
    }
}
