//! `simulate`: a deterministic simulation of a schedule under a cost model.
//!
//! Semantics (DESIGN.md): each rank runs its lane strictly in order; an action starts at the
//! later of the end of the previous action on its rank and the arrival of the message it needs;
//! a message between ranks arrives the latency `c` after its producer ends and occupies neither
//! device; between stages of one rank it is free. The times come from one linear walk of the
//! lanes ([`walk`](crate::walk)), so a run is a pure function of its inputs.
//!
//! Memory, following the executor's ledger (bytes an action adds count from its start, bytes it
//! frees from its end): `F` adds the bytes it keeps, `R` what it re-creates; `I` sets its
//! micro-batch to what `W` needs — growing at its start when that is more (the output gradients a
//! weight gradient needs are new), shrinking at its end when less — and `W` or `B` frees it. Static
//! bytes are live from time 0. Every (stage, micro-batch) lives on one rank, so each rank's bytes
//! follow from its own lane alone, in one pass after the walk.

use crate::action::{Action, Op};
use crate::cost::{CostModel, StageCost};
use crate::error::Result;
use crate::schedule::Schedule;
use crate::trace::{MemSample, RankTrace, Source, Trace, Transfers};
use crate::validate::validate;
use crate::walk::walk;

/// Simulates one step of `schedule` under `costs`.
///
/// Fails if the cost model does not fit the schedule, or if the schedule does not validate (the
/// error is `validate`'s, with the grid).
pub fn simulate(schedule: &Schedule, costs: &CostModel) -> Result<Trace> {
    let (stage_costs, statics) = costs.resolve(schedule)?;
    let mut ranks: Vec<RankTrace> = schedule
        .lanes
        .iter()
        .map(|lane| RankTrace {
            actions: lane.clone(),
            start: Vec::with_capacity(lane.len()),
            end: Vec::with_capacity(lane.len()),
            memory: Vec::new(),
        })
        .collect();
    let duration = |a: Action| stage_costs.get(a.stage()).map_or(0.0, |c| c.duration(a.op));
    let walked = walk(schedule, duration, costs.latency, |r, _, start, end| {
        ranks[r].start.push(start);
        ranks[r].end.push(end);
    });
    if walked.is_err() {
        // Only a schedule that breaks a rule gets stuck; validate explains which.
        validate(schedule)?;
        return Err(crate::Error::Deadlock {
            reason: "the simulator stopped before every action ran, though the schedule validates; please report this schedule".into(),
            grid: schedule.grid(),
        });
    }
    let m = schedule.m;
    // Each rank holds v stages; `chunk[s]` numbers stage s among its rank's.
    let mut chunk = vec![0usize; schedule.stages()];
    let mut count = vec![0usize; schedule.p];
    for (s, c) in chunk.iter_mut().enumerate() {
        let r = schedule.rank_of(s);
        *c = count[r];
        count[r] += 1;
    }
    let mut held = vec![0u64; schedule.v * m];
    for (rank, base) in ranks.iter_mut().zip(statics) {
        held.fill(0);
        rank.memory = memory(rank, base, &stage_costs, |a| chunk[a.stage()] * m + a.mb(), &mut held);
    }
    Ok(Trace {
        source: Source::Simulated,
        schedule: schedule.name.clone(),
        p: schedule.p,
        v: schedule.v,
        m,
        placement: schedule.placement,
        time_unit: costs.time_unit.clone(),
        ranks,
        transfers: Transfers::Latency(costs.latency),
    })
}

impl StageCost {
    /// How long `op` takes on this stage (`B = I + W`, `R` defaults to `F`).
    pub fn duration(&self, op: Op) -> f64 {
        match op {
            Op::F => self.f,
            Op::B => self.i + self.w,
            Op::I => self.i,
            Op::W => self.w,
            Op::R => self.t_r(),
        }
    }
}

/// A rank's live bytes over the step, from its spans: `base` static bytes, then what each action
/// keeps or frees (see the module doc). `held[slot(a)]` is what `a`'s (stage, micro-batch) holds,
/// all zero on entry.
fn memory(
    rank: &RankTrace,
    base: u64,
    costs: &[StageCost],
    slot: impl Fn(Action) -> usize,
    held: &mut [u64],
) -> Vec<MemSample> {
    let mut samples = vec![MemSample { time: 0.0, bytes: base }];
    let mut live = base;
    for span in rank.spans() {
        let a = span.action;
        let cost = &costs[a.stage()];
        let held = &mut held[slot(a)];
        let grow = match a.op {
            Op::F => cost.act_bytes,
            Op::R => cost.recompute_bytes,
            Op::I => cost.w_bytes.saturating_sub(*held),
            Op::W | Op::B => 0,
        };
        if grow > 0 {
            *held += grow;
            live += grow;
            samples.push(MemSample { time: span.start, bytes: live });
        }
        let keep = match a.op {
            // What W needs can exceed what F kept (a Linear keeps its output gradient for W).
            Op::I => Some(cost.w_bytes),
            Op::W | Op::B => Some(0),
            Op::F | Op::R => None,
        };
        if let Some(keep) = keep {
            if keep != *held {
                live = live - *held + keep;
                *held = keep;
                samples.push(MemSample { time: span.end, bytes: live });
            }
        }
    }
    samples
}
