//! The list scheduler behind [`auto`](super::auto): one pass of simulated time that decides,
//! each time a rank is free, which of its next `F`, `I` or `W` it runs, under a memory limit.
//!
//! Invariant: every plan it returns runs each rank's actions in micro-batch order per op, has
//! `F(j)` before `I(j)` before `W(j)` on every rank, and never holds more activation bytes on a
//! rank than the limit under the ledger's rule (`F` adds what it keeps at its start, `I` changes
//! its micro-batch to what `W` needs — at its start when that is more — and `W` frees it). Its
//! start and end times are those the simulator gives the same lanes: an action starts at the
//! later of its rank being free and its input's arrival.
//!
//! The rules, in order, for a rank free at time `t`:
//! 1. an `I` whose gradient has arrived runs (first a `W` if the `I` would not fit in memory);
//! 2. else an `F` whose activation has arrived runs, if fewer than `cap` micro-batches wait for
//!    their `I` (and, before the rank's first `I`, fewer than `warm` forwards ran) and memory
//!    holds it (with room for the `I` that follows);
//! 3. else a `W` runs if the `F` is held back by memory alone, or — filling a bubble — if more than
//!    `reserve` of them are pending (and, with `fit`, the next input is not due before it ends);
//! 4. else the rank idles until the next input it knows of arrives, or, knowing of none, until a
//!    neighbour sends one.
//!
//! Ranks are served in order of the time they are free, so each decision sees every input that
//! arrives by then. `warm`, `cap`, `reserve` and `fit` are the knobs [`auto`](super::auto)
//! searches.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::action::{Action, Op};

/// What is scheduled: per rank (one stage each) its times, bytes and message delays.
#[derive(Debug, Clone)]
pub(super) struct Problem {
    pub p: usize,
    pub m: usize,
    pub f: Vec<f64>,
    pub i: Vec<f64>,
    pub w: Vec<f64>,
    /// Bytes `F` keeps per micro-batch.
    pub act: Vec<u64>,
    /// Bytes kept from `I` until `W`.
    pub keep: Vec<u64>,
    /// Delay of the activation rank `r` sends to `r+1`.
    pub fwd: Vec<f64>,
    /// Delay of the gradient rank `r` sends to `r−1`.
    pub bwd: Vec<f64>,
    /// Activation bytes a rank may hold at once.
    pub limit: u64,
}

impl Problem {
    /// What an `I` adds on rank `r` beyond the `F` it follows: room an `F` must leave.
    fn growth(&self, r: usize) -> u64 {
        self.keep[r].saturating_sub(self.act[r])
    }

    /// Whether an `F` fits on rank `r` holding `mem`, leaving room for its `I`.
    fn f_fits(&self, r: usize, mem: u64) -> bool {
        mem.saturating_add(self.act[r]).saturating_add(self.growth(r)) <= self.limit
    }

    /// The most micro-batches rank `r` can hold between `F` and `I` (at least 1; `m` when `F`
    /// keeps nothing).
    pub fn memory_cap(&self, r: usize) -> usize {
        match self.limit.saturating_sub(self.growth(r)).checked_div(self.act[r]) {
            Some(n) => (n.min(self.m as u64) as usize).max(1),
            None => self.m,
        }
    }
}

/// The knobs of one pass: per rank, how many forwards run before its first `I` (at least 1), how
/// many micro-batches may wait for their `I` (at least 1) and how many `W` are kept back from
/// filling bubbles; and whether a `W` fills only a bubble it fits in.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Knobs {
    pub warm: Vec<usize>,
    pub cap: Vec<usize>,
    pub reserve: Vec<usize>,
    pub fit: bool,
}

/// The lanes of one pass and their times.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub lanes: Vec<Vec<Action>>,
    /// The latest end over all ranks.
    pub makespan: f64,
    /// The longest span of a rank, from its first start to its last end.
    pub steady: f64,
}

/// Where one rank stands.
#[derive(Debug, Clone, Copy)]
struct Rank {
    /// When it is free.
    t: f64,
    /// Next micro-batch of each op.
    nf: usize,
    ni: usize,
    nw: usize,
    /// Activation bytes held.
    mem: u64,
    /// Start of its first action.
    first: f64,
    /// Whether it waits in the queue (else it waits for a neighbour's message).
    queued: bool,
}

/// A rank in the queue, earliest first (ties by rank).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Due(f64, usize);

impl Eq for Due {}

impl Ord for Due {
    fn cmp(&self, other: &Due) -> Ordering {
        other.0.total_cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One pass of the list scheduler; `None` if it gets stuck (it does not for `cap ≥ 1` and a
/// limit of at least one micro-batch: the caller keeps a fallback anyway).
pub(super) fn greedy(pb: &Problem, k: &Knobs) -> Option<Plan> {
    let (p, m) = (pb.p, pb.m);
    let unknown = f64::INFINITY;
    let mut end_f = vec![unknown; p * m];
    let mut end_i = vec![unknown; p * m];
    let mut ranks = vec![Rank { t: 0.0, nf: 0, ni: 0, nw: 0, mem: 0, first: unknown, queued: true }; p];
    let mut lanes: Vec<Vec<Action>> = (0..p).map(|_| Vec::with_capacity(3 * m)).collect();
    let mut queue: BinaryHeap<Due> = (0..p).map(|r| Due(0.0, r)).collect();
    let (mut makespan, mut steady) = (0.0f64, 0.0f64);
    while let Some(Due(_, r)) = queue.pop() {
        let st = ranks[r];
        let t = st.t;
        let f_ready = |j: usize| if r == 0 { 0.0 } else { end_f[(r - 1) * m + j] + pb.fwd[r - 1] };
        let i_ready = |j: usize| if r + 1 == p { end_f[r * m + j] } else { end_i[(r + 1) * m + j] + pb.bwd[r + 1] };
        let i_due = if st.ni < st.nf { i_ready(st.ni) } else { unknown };
        let f_room = st.nf < m && st.nf - st.ni < k.cap[r] && (st.ni > 0 || st.nf < k.warm[r]);
        let f_fits = pb.f_fits(r, st.mem);
        let f_due = if f_room && f_fits { f_ready(st.nf) } else { unknown };
        let pending = st.ni - st.nw;
        let op = if i_due <= t {
            if st.mem - pb.act[r] + pb.keep[r] <= pb.limit {
                Some(Op::I)
            } else if pending > 0 {
                Some(Op::W)
            } else {
                return None;
            }
        } else if f_due <= t {
            Some(Op::F)
        } else if pending > 0 && fill(pb, k, &ranks, r, pending, i_due, f_due, f_room && !f_fits) {
            Some(Op::W)
        } else {
            None
        };
        let Some(op) = op else {
            // Idle until the next known arrival, or until a neighbour sends.
            let wake = i_due.min(f_due);
            ranks[r].queued = wake.is_finite();
            if wake.is_finite() {
                ranks[r].t = wake;
                queue.push(Due(wake, r));
            }
            continue;
        };
        let rk = &mut ranks[r];
        let (j, d, start) = match op {
            Op::F => (rk.nf, pb.f[r], t.max(f_due)),
            Op::I => (rk.ni, pb.i[r], t.max(i_due)),
            _ => (rk.nw, pb.w[r], t),
        };
        let end = start + d;
        lanes[r].push(Action::new(r, op, j));
        rk.first = rk.first.min(start);
        rk.t = end;
        match op {
            Op::F => {
                rk.nf += 1;
                rk.mem += pb.act[r];
                end_f[r * m + j] = end;
            }
            Op::I => {
                rk.ni += 1;
                rk.mem = rk.mem - pb.act[r] + pb.keep[r];
                end_i[r * m + j] = end;
            }
            _ => {
                rk.nw += 1;
                rk.mem -= pb.keep[r];
            }
        }
        let done = rk.nw == m;
        if done {
            makespan = makespan.max(end);
            steady = steady.max(end - rk.first);
            rk.queued = false;
        } else {
            queue.push(Due(end, r));
        }
        // A message wakes a neighbour that waits for one.
        let woken = match op {
            Op::F if r + 1 < p => Some(r + 1),
            Op::I if r > 0 => Some(r - 1),
            _ => None,
        };
        if let Some(n) = woken.filter(|&n| !ranks[n].queued && ranks[n].nw < m) {
            ranks[n].queued = true;
            queue.push(Due(ranks[n].t, n));
        }
    }
    ranks.iter().all(|s| s.nw == m).then_some(Plan { lanes, makespan, steady })
}

/// Rule 3: whether rank `r`, free at its time with `pending` weight gradients, runs one now.
/// `i_due` and `f_due` are its inputs' known arrivals (infinite when not yet known);
/// `held_back` says its `F` waits for memory alone.
#[allow(clippy::too_many_arguments)]
fn fill(
    pb: &Problem,
    k: &Knobs,
    ranks: &[Rank],
    r: usize,
    pending: usize,
    i_due: f64,
    f_due: f64,
    held_back: bool,
) -> bool {
    let st = &ranks[r];
    if held_back || st.ni == pb.m || pending > k.reserve[r] && !k.fit {
        return true;
    }
    if pending <= k.reserve[r] {
        return false;
    }
    // The earliest an input not yet known can arrive: its producer's free time and duration.
    let soon_i = if st.ni >= st.nf {
        f64::INFINITY
    } else if i_due.is_finite() || r + 1 == pb.p {
        i_due
    } else {
        ranks[r + 1].t + pb.i[r + 1] + pb.bwd[r + 1]
    };
    let soon_f = if st.nf == pb.m || st.nf - st.ni >= k.cap[r] || st.ni == 0 && st.nf >= k.warm[r] {
        f64::INFINITY
    } else if f_due.is_finite() || r == 0 {
        f_due
    } else {
        ranks[r - 1].t + pb.f[r - 1] + pb.fwd[r - 1]
    };
    soon_i.min(soon_f) >= st.t + pb.w[r]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{CostModel, StageCost, StageCosts};
    use crate::schedule::{Placement, Schedule};
    use crate::simulate::simulate_stats;

    #[test]
    fn its_times_and_bytes_are_the_simulators() {
        let (f, i, w) = ([1.0, 2.0, 1.5, 1.0], [1.0, 2.5, 1.0, 1.5], [0.5, 1.0, 0.5, 1.0]);
        let pb = Problem {
            p: 4,
            m: 8,
            f: f.to_vec(),
            i: i.to_vec(),
            w: w.to_vec(),
            act: vec![2, 3, 2, 2],
            keep: vec![1, 4, 1, 1],
            fwd: vec![0.25; 4],
            bwd: vec![0.25; 4],
            limit: 9,
        };
        let stages = (0..4)
            .map(|r| StageCost { act_bytes: pb.act[r], w_bytes: pb.keep[r], ..StageCost::times(f[r], i[r], w[r]) })
            .collect();
        let mut costs = CostModel::per_rank(1.0, 1.0, 1.0).with_latency(0.25);
        costs.costs = StageCosts::Stages(stages);
        for cap in [1, 2, 4] {
            for reserve in [0, 1, 3] {
                for fit in [false, true] {
                    let k = Knobs { warm: vec![3, 2, 2, 1], cap: vec![cap; 4], reserve: vec![reserve; 4], fit };
                    let plan = greedy(&pb, &k).unwrap();
                    let s = Schedule::new("auto", 4, 1, 8, Placement::Loop, plan.lanes.clone());
                    let st = simulate_stats(&s, &costs).unwrap();
                    assert_eq!((plan.makespan, plan.steady), (st.makespan, st.steady_period), "{k:?}");
                    assert!(st.peak_held_bytes.iter().all(|&b| b <= 9), "{k:?}: {:?}", st.peak_held_bytes);
                }
            }
        }
    }
}
