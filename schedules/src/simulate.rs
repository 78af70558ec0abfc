//! `simulate`: a deterministic simulation of a schedule under a cost model.
//!
//! Semantics (DESIGN.md): each rank runs its lane strictly in order; an action starts at the
//! later of the end of the previous action on its rank and the arrival of the message it needs;
//! a message between ranks arrives the latency `c` after its producer ends and occupies neither
//! device; between stages of one rank it is free. The times come from one linear walk of the
//! lanes ([`walk`](crate::walk)), so a run is a pure function of its inputs.
//!
//! Memory, by the [`Ledger`]'s rule (the executor's): `F` adds the bytes it keeps, `R` what it
//! re-creates; `I` sets its micro-batch to what `W` needs — growing at its start when that is
//! more (the output gradients a weight gradient needs are new), shrinking at its end when less —
//! and `W` or `B` frees it. Static bytes are live from time 0. Every (stage, micro-batch) lives on
//! one rank, so each rank's held bytes follow from its own lane alone, in one pass after the
//! walk; messages (sized by the producing stage's `fwd_msg_bytes` / `bwd_msg_bytes`) count on
//! their consumer from their producer's end to the consumer's start.

use crate::action::{Action, Op};
use crate::cost::{CostModel, StageCost};
use crate::deps::message_slots;
use crate::deps::{consumes, Flow};
use crate::error::Result;
use crate::ledger::Ledger;
use crate::schedule::Schedule;
use crate::trace::{RankTrace, Source, Trace, Transfers};
use crate::validate::{check_structure, validate};
use crate::walk::{walk, Times};

/// Simulates one step of `schedule` under `costs`.
///
/// Fails if the schedule does not validate (the error is `validate`'s, with the grid; rules 1–4
/// are checked first, a deadlock by the simulation's own walk), or if the cost model does not fit
/// it.
pub fn simulate(schedule: &Schedule, costs: &CostModel) -> Result<Trace> {
    check_structure(schedule)?;
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
    let mut post = Times::new(message_slots(schedule.stages(), schedule.m), costs.latency);
    let walked = walk(schedule, &mut post, duration, |r, _, start, end| {
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
    };
    let sent = if stage_costs.iter().any(|c| c.fwd_msg_bytes > 0 || c.bwd_msg_bytes > 0) {
        post.sent
    } else {
        Vec::new() // no message bytes to count: free the send times now
    };
    let m = schedule.m;
    // Without per-micro-batch bytes, held bytes stay at the static ones: no pass over the spans.
    let keeps = stage_costs.iter().any(|c| c.act_bytes > 0 || c.recompute_bytes > 0 || c.w_bytes > 0);
    let mut held = vec![0u64; if keeps { schedule.v * m } else { 0 }];
    for (rank, base) in ranks.iter_mut().zip(statics) {
        let mut ledger = Ledger::new(base);
        if keeps {
            held.fill(0);
            predict(
                rank,
                &stage_costs,
                |a| schedule.placement.chunk_of(a.stage(), schedule.p) * m + a.mb(),
                &mut held,
                &mut ledger,
            );
        }
        if !sent.is_empty() {
            messages(rank, &stage_costs, m, &sent, &mut ledger);
        }
        rank.memory = ledger.finish();
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

/// Feeds `ledger` the held bytes of a rank's spans under the cost model (see the module doc).
/// `held[slot(a)]` is what `a`'s (stage, micro-batch) holds, all zero on entry.
fn predict(
    rank: &RankTrace,
    costs: &[StageCost],
    slot: impl Fn(Action) -> usize,
    held: &mut [u64],
    ledger: &mut Ledger,
) {
    for span in rank.spans() {
        let a = span.action;
        let cost = &costs[a.stage()];
        let held = &mut held[slot(a)];
        let now = match a.op {
            Op::F => *held + cost.act_bytes,
            Op::R => *held + cost.recompute_bytes,
            // What W needs can exceed what F kept (a Linear keeps its output gradient for W).
            Op::I => cost.w_bytes,
            Op::W | Op::B => 0,
        };
        let before = ledger.held();
        // `I` grows at its start when W needs more, shrinks at its end when less; the ledger
        // takes one change per action, so a growing `I` is recorded as such.
        ledger.action(span.start, span.end, before - *held + now);
        *held = now;
    }
}

/// Feeds `ledger` every message the rank's spans consume: sent when its producer ended (`sent`,
/// by message index), taken when the consumer starts, sized by the producing stage's cost.
fn messages(rank: &RankTrace, costs: &[StageCost], m: usize, sent: &[f64], ledger: &mut Ledger) {
    let stages = costs.len();
    for span in rank.spans() {
        let Some(msg) = consumes(span.action, stages) else { continue };
        let from = &costs[msg.from];
        let bytes = match msg.flow {
            Flow::Activation => from.fwd_msg_bytes,
            Flow::Gradient => from.bwd_msg_bytes,
        };
        ledger.message(sent[msg.index(stages, m)], span.start, bytes);
    }
}
