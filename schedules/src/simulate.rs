//! `simulate`: a deterministic discrete-event simulation of a schedule under a cost model.
//!
//! Semantics (DESIGN.md): each rank runs its lane strictly in order; an action starts at the
//! later of the end of the previous action on its rank and the arrival of every input it needs;
//! a cross-rank edge adds the latency `c` and occupies neither device; a same-rank edge is free.
//! Events ("the action running on rank r ends") are ordered by (time, sequence number), so a run
//! is a pure function of its inputs.
//!
//! Memory, following the executor's ledger (bytes an action adds count from its start, bytes it
//! frees from its end): `F` adds the bytes it keeps, `R` what it re-creates; `I` sets its
//! micro-batch to what `W` needs — growing at its start when that is more (the output gradients a
//! weight gradient needs are new), shrinking at its end when less — and `W` or `B` frees it. Static
//! bytes are live from time 0.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::action::{Action, Op};
use crate::cost::{CostModel, StageCost};
use crate::error::Result;
use crate::schedule::Schedule;
use crate::trace::{MemSample, RankTrace, Source, Span, Trace, Transfer};
use crate::validate::{inputs, num_keys, outputs, split_table, validate};

/// An action ending on a rank.
#[derive(PartialEq)]
struct Event {
    time: f64,
    seq: u64,
    rank: usize,
}

impl Eq for Event {}

impl Ord for Event {
    fn cmp(&self, other: &Self) -> Ordering {
        self.time.total_cmp(&other.time).then(self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The simulator's state while it runs.
struct Sim<'a> {
    schedule: &'a Schedule,
    costs: Vec<StageCost>,
    splits: Vec<bool>,
    latency: f64,
    /// `done[key]`: when the producing action ended.
    done: Vec<f64>,
    waiters: Vec<Vec<usize>>,
    next: Vec<usize>,
    free_at: Vec<f64>,
    running: Vec<bool>,
    /// Bytes held per (stage, micro-batch).
    held: Vec<u64>,
    live: Vec<u64>,
    ranks: Vec<RankTrace>,
    transfers: Vec<Transfer>,
    events: BinaryHeap<Reverse<Event>>,
    seq: u64,
}

/// Simulates one step of `schedule` under `costs`.
///
/// Fails if the cost model does not fit the schedule, or if the schedule deadlocks (the error
/// is `validate`'s, with the grid).
pub fn simulate(schedule: &Schedule, costs: &CostModel) -> Result<Trace> {
    let (stage_costs, statics) = costs.resolve(schedule)?;
    let (p, stages, m) = (schedule.p, schedule.stages(), schedule.m);
    let mut sim = Sim {
        schedule,
        costs: stage_costs,
        splits: split_table(schedule),
        latency: costs.latency,
        done: vec![f64::NAN; num_keys(stages, m)],
        waiters: vec![Vec::new(); num_keys(stages, m)],
        next: vec![0; p],
        free_at: vec![0.0; p],
        running: vec![false; p],
        held: vec![0; stages * m],
        live: statics.clone(),
        ranks: (0..p)
            .map(|r| RankTrace {
                spans: Vec::with_capacity(schedule.lanes[r].len()),
                memory: vec![MemSample { time: 0.0, bytes: statics[r] }],
            })
            .collect(),
        transfers: Vec::new(),
        events: BinaryHeap::with_capacity(p),
        seq: 0,
    };
    for r in 0..p {
        sim.try_start(r);
    }
    while let Some(Reverse(ev)) = sim.events.pop() {
        sim.finish(ev.rank, ev.time);
    }
    if (0..p).any(|r| sim.next[r] < schedule.lanes[r].len()) {
        // Only an invalid schedule gets stuck; validate explains where.
        validate(schedule)?;
        return Err(crate::Error::Deadlock {
            reason: "the simulator stopped before every action ran, though the schedule validates; please report this schedule".into(),
            grid: schedule.grid(),
        });
    }
    Ok(Trace {
        source: Source::Simulated,
        schedule: schedule.name.clone(),
        p,
        v: schedule.v,
        m,
        placement: schedule.placement,
        time_unit: costs.time_unit.clone(),
        ranks: sim.ranks,
        transfers: sim.transfers,
    })
}

impl Sim<'_> {
    fn duration(&self, a: Action) -> f64 {
        let c = &self.costs[a.stage()];
        match a.op {
            Op::F => c.f,
            Op::B => c.i + c.w,
            Op::I => c.i,
            Op::W => c.w,
            Op::R => c.t_r(),
        }
    }

    fn record(&mut self, rank: usize, time: f64) {
        self.ranks[rank].memory.push(MemSample { time, bytes: self.live[rank] });
    }

    /// Starts rank `r`'s next action if it is idle and every input has arrived; otherwise
    /// registers `r` as a waiter on the first missing input.
    fn try_start(&mut self, r: usize) {
        if self.running[r] {
            return;
        }
        let lane = &self.schedule.lanes[r];
        let Some(&a) = lane.get(self.next[r]) else { return };
        let (stages, m) = (self.schedule.stages(), self.schedule.m);
        let mut start = self.free_at[r];
        let mut crossing: [Option<(Action, f64)>; 2] = [None, None];
        for (n, (key, from)) in inputs(a, stages, m, &self.splits).enumerate() {
            let end = self.done[key];
            if end.is_nan() {
                self.waiters[key].push(r);
                return;
            }
            let remote = self.schedule.rank_of(from.stage()) != r;
            let arrival = if remote { end + self.latency } else { end };
            if remote {
                crossing[n] = Some((from, end));
            }
            start = start.max(arrival);
        }
        for (from, sent) in crossing.into_iter().flatten() {
            self.transfers.push(Transfer {
                from,
                to: a,
                from_rank: self.schedule.rank_of(from.stage()),
                to_rank: r,
                sent,
                received: sent + self.latency,
            });
        }
        let end = start + self.duration(a);
        let slot = a.stage() * m + a.mb();
        let cost = &self.costs[a.stage()];
        let grow = match a.op {
            Op::F => cost.act_bytes,
            Op::R => cost.recompute_bytes,
            Op::I => cost.w_bytes.saturating_sub(self.held[slot]),
            _ => 0,
        };
        if grow > 0 {
            self.held[slot] += grow;
            self.live[r] += grow;
            self.record(r, start);
        }
        self.ranks[r].spans.push(Span { action: a, start, end });
        self.running[r] = true;
        self.seq += 1;
        self.events.push(Reverse(Event { time: end, seq: self.seq, rank: r }));
    }

    /// Ends the action running on rank `r` at `time`: frees its bytes, publishes its outputs,
    /// wakes whoever waited for them, and starts `r`'s next action.
    fn finish(&mut self, r: usize, time: f64) {
        let a = self.schedule.lanes[r][self.next[r]];
        let (stages, m) = (self.schedule.stages(), self.schedule.m);
        self.running[r] = false;
        self.next[r] += 1;
        self.free_at[r] = time;
        let slot = a.stage() * m + a.mb();
        let keep = match a.op {
            // What W needs can exceed what F kept (a Linear keeps its output gradient for W).
            Op::I => Some(self.costs[a.stage()].w_bytes),
            Op::W | Op::B => Some(0),
            Op::F | Op::R => None,
        };
        if let Some(keep) = keep {
            if keep != self.held[slot] {
                self.live[r] = self.live[r] - self.held[slot] + keep;
                self.held[slot] = keep;
                self.record(r, time);
            }
        }
        for key in outputs(a, stages, m) {
            self.done[key] = time;
            let woken = std::mem::take(&mut self.waiters[key]);
            for w in woken {
                self.try_start(w);
            }
        }
        self.try_start(r);
    }
}
